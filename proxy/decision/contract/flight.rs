//! `customProperties.meshgateFlight`: the product is served by an Apache
//! Arrow Flight server. Its RPCs (the gRPC service
//! `arrow.flight.protocol.FlightService`) become routes with an action each:
//! by default `ListFlights` and `GetSchema` are `describe`, `GetFlightInfo`
//! and `PollFlightInfo` `query` (a command descriptor asks the server to
//! plan or run a query: Flight SQL executes its statement there), `DoGet`
//! is `read`, `DoPut` `write` and `DoExchange` `query`; `Handshake`, `DoAction` and `ListActions` are not
//! routed (a call is `UNIMPLEMENTED`, never forwarded) unless the contract
//! maps them. A contract may map any RPC to another action, or to `none`
//! to leave it unrouted.
//!
//! ```yaml
//! - property: meshgateFlight
//!   value:
//!     dataset: orders          # the dataset the data RPCs decide on
//!     userToken: optional
//!     methods: { DoAction: write, DoExchange: none }
//! ```

use http::Method;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::grpc::without_unknown;
use super::keys;
use super::{Action, Reader, RouteSpec, UserToken};
use crate::base::locate::Step;

/// The custom property.
pub(super) const PROPERTY: &str = "meshgateFlight";
const FIELD: &str = "customProperties.meshgateFlight";

/// The Flight service's full name (Flight's `Flight.proto`).
pub const SERVICE: &str = "arrow.flight.protocol.FlightService";

/// Every RPC of the Flight service, with its action by default (`None`:
/// not routed unless the contract maps it).
pub const RPCS: [(&str, Option<Action>); 10] = [
    ("Handshake", None),
    ("ListFlights", Some(Action::Describe)),
    ("GetFlightInfo", Some(Action::Query)),
    ("PollFlightInfo", Some(Action::Query)),
    ("GetSchema", Some(Action::Describe)),
    ("DoGet", Some(Action::Read)),
    ("DoPut", Some(Action::Write)),
    ("DoExchange", Some(Action::Query)),
    ("DoAction", None),
    ("ListActions", None),
];

const KEYS: [&str; 3] = ["dataset", "userToken", "methods"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFlight {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    user_token: Option<UserToken>,
    #[serde(default)]
    methods: serde_yaml_ng::Mapping,
}

/// An RPC's action as a contract maps it: an action, or `none`.
fn mapped(v: &Value) -> Result<Option<Action>, String> {
    match v.as_str() {
        Some("none") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|e: String| format!("{e}, or none (not routed)")),
        None => Err("an action (read, query, describe, subscribe, write) or none".into()),
    }
}

/// The routes of the Flight service declared at `path` (the property's
/// value); what is wrong is reported where it is.
pub(super) fn routes(
    r: &mut Reader,
    v: &Value,
    path: &[Step],
    datasets: &[(String, String)],
) -> Vec<RouteSpec> {
    let here = |k: &str| {
        let mut p = path.to_vec();
        p.push(Step::Key(k.to_string()));
        p
    };
    let item = without_unknown(r, v, path, FIELD, &KEYS);
    let Some(raw) = r.value::<RawFlight>(&item, path, FIELD) else {
        return Vec::new();
    };
    let mut ok = true;
    if let Some(d) = raw
        .dataset
        .as_ref()
        .filter(|d| !datasets.iter().any(|(n, _)| n == *d))
    {
        let m = format!("`{d}` is not a schema object of this contract");
        r.error(here("dataset"), format!("{FIELD}.dataset"), m);
        ok = false;
    }
    let names: Vec<&str> = RPCS.iter().map(|(n, _)| *n).collect();
    let mut actions: Vec<Option<Action>> = RPCS.iter().map(|(_, a)| *a).collect();
    for (k, v) in &raw.methods {
        let name = k.as_str().unwrap_or("");
        let mut at = here("methods");
        let field = format!("{FIELD}.methods.{name}");
        let Some(i) = names.iter().position(|n| *n == name) else {
            at.push(Step::KeyName(name.to_string()));
            let m = match keys::near(name, &names) {
                Some(n) => format!("`{name}` is not a Flight RPC: did you mean `{n}`?"),
                None => format!("`{name}` is not a Flight RPC; one of {}", names.join(", ")),
            };
            r.error(at, field, m);
            ok = false;
            continue;
        };
        at.push(Step::Key(name.to_string()));
        match mapped(v) {
            Ok(action) => actions[i] = action,
            Err(m) => {
                r.error(at, field, m);
                ok = false;
            }
        }
    }
    if !ok {
        return Vec::new();
    }
    names
        .iter()
        .zip(actions)
        .filter_map(|(name, action)| {
            Some(RouteSpec {
                method: Method::POST,
                path: format!("/{SERVICE}/{name}"),
                action: action?,
                dataset: raw.dataset.clone(),
                user_token: raw.user_token,
                at: path.to_vec(),
                field: FIELD.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::super::tests::assert_errors_at;

    fn contract(flight: &str) -> String {
        format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: sales.flight\nversion: 1.0.0\ndomain: sales\nschema:\n  - name: orders\n    classification: internal\nteam:\n  - {{ username: sales@acme.example, role: owner }}\nslaProperties:\n  - {{ property: latency, value: 100, unit: ms }}\ncustomProperties:\n  - property: meshgateFlight\n    value:\n{flight}"
        )
    }

    fn routes(text: &str) -> Vec<(String, &'static str)> {
        let c = read(text, "flight.odcs.yaml").expect("reads");
        c.product
            .routes
            .iter()
            .map(|r| {
                assert_eq!(r.method, http::Method::POST);
                let rpc = r
                    .path
                    .strip_prefix("/arrow.flight.protocol.FlightService/")
                    .expect("a Flight RPC");
                (rpc.to_string(), r.action.as_str())
            })
            .collect()
    }

    #[test]
    fn flight_rpcs_map_to_actions_by_default_and_actions_are_not_routed() {
        let text = contract("      dataset: orders\n");
        let got = routes(&text);
        let want = [
            ("ListFlights", "describe"),
            ("GetFlightInfo", "query"),
            ("PollFlightInfo", "query"),
            ("GetSchema", "describe"),
            ("DoGet", "read"),
            ("DoPut", "write"),
            ("DoExchange", "query"),
        ];
        let want: Vec<(String, &str)> = want.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        assert_eq!(got, want);
        let c = read(&text, "flight.odcs.yaml").expect("reads");
        assert!(c
            .product
            .routes
            .iter()
            .all(|r| r.dataset.as_deref() == Some("orders")));
    }

    #[test]
    fn a_contract_maps_an_rpc_to_another_action_or_to_none() {
        let text = contract(
            "      methods:\n        DoAction: write\n        ListActions: describe\n        DoExchange: none\n        DoGet: query\n",
        );
        let got = routes(&text);
        let find = |n: &str| got.iter().find(|(r, _)| r == n).map(|(_, a)| *a);
        assert_eq!(find("DoAction"), Some("write"));
        assert_eq!(find("ListActions"), Some("describe"));
        assert_eq!(find("DoExchange"), None);
        assert_eq!(find("DoGet"), Some("query"));
        assert_eq!(find("Handshake"), None);
        assert_eq!(got.len(), 8);
    }

    #[test]
    fn a_bad_flight_declaration_is_an_error_at_its_line_and_column() {
        let text = contract(
            "      dataset: order\n      user: x\n      methods:\n        DoGett: read\n        DoPut: wrte\n        DoGet: read_field\n",
        );
        let expect = [
            ("flight.odcs.yaml:16:16", "`order` is not a schema object"),
            ("flight.odcs.yaml:17:7", "user: unknown field"),
            (
                "flight.odcs.yaml:19:9",
                "`DoGett` is not a Flight RPC: did you mean `DoGet`?",
            ),
            ("flight.odcs.yaml:20:16", "unknown action `wrte`"),
            // Decided only by field plans: a route naming it would be
            // allowed for every caller by the baseline's field permit.
            ("flight.odcs.yaml:21:16", "unknown action `read_field`"),
        ];
        assert_errors_at(&text, "flight.odcs.yaml", &expect);
    }
}
