//! `customProperties.meshgateGrpc`: the gRPC services a product's server
//! exposes, each method mapped to an action (and a dataset). A method is a
//! route like any other, `POST /package.Service/Method`, in the same route
//! table, decided by the same policies and metered by the same quotas.
//!
//! ```yaml
//! - property: meshgateGrpc
//!   value:
//!     - service: sales.orders.v1.OrderService
//!       methods:
//!         - { name: GetOrder, action: read, dataset: orders }
//!         - { name: WatchOrders, action: subscribe, dataset: orders }
//! ```

use http::Method;
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::keys;
use super::{Action, Reader, RouteSpec, UserToken};
use crate::base::locate::Step;

/// The custom property.
pub(super) const PROPERTY: &str = "meshgateGrpc";
const FIELD: &str = "customProperties.meshgateGrpc";

/// The keys of a service, and of a method.
const SERVICE_KEYS: [&str; 3] = ["service", "methods", "userToken"];
const METHOD_KEYS: [&str; 4] = ["name", "action", "dataset", "userToken"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawService {
    service: String,
    methods: Vec<Value>,
    #[serde(default)]
    user_token: Option<UserToken>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMethod {
    name: String,
    action: Action,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    user_token: Option<UserToken>,
}

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// The routes of the services declared at `path` (the property's value),
/// each service and each method read on its own: the wrong ones are
/// reported where they are and left out.
pub(super) fn routes(
    r: &mut Reader,
    v: &Value,
    path: &[Step],
    datasets: &[(String, String)],
) -> Vec<RouteSpec> {
    let Some(seq) = v.as_sequence() else {
        r.error(path.to_vec(), FIELD, "must be a list of services");
        return Vec::new();
    };
    let mut routes = Vec::new();
    let mut services: Vec<String> = Vec::new();
    for (i, item) in seq.iter().enumerate() {
        let mut at = path.to_vec();
        at.push(Step::Index(i));
        let field = format!("{FIELD}[{i}]");
        let item = without_unknown(r, item, &at, &field, &SERVICE_KEYS);
        let Some(raw) = r.value::<RawService>(&item, &at, &field) else {
            continue;
        };
        let here = |k: &str| {
            let mut p = at.clone();
            p.push(key(k));
            p
        };
        if let Err(e) = check_service(&raw.service) {
            let m = format!("`{}`: {e}", raw.service);
            r.error(here("service"), format!("{field}.service"), m);
            continue;
        }
        if services.contains(&raw.service) {
            let m = format!("`{}` is declared twice", raw.service);
            r.error(here("service"), format!("{field}.service"), m);
            continue;
        }
        services.push(raw.service.clone());
        let service = Service {
            name: &raw.service,
            user_token: raw.user_token,
            at: here("methods"),
            field: format!("{field}.methods"),
        };
        routes.extend(service.methods(r, &raw.methods, datasets));
    }
    routes
}

/// One service as read, for its methods.
struct Service<'a> {
    name: &'a str,
    user_token: Option<UserToken>,
    /// The path and name of its `methods`.
    at: Vec<Step>,
    field: String,
}

impl Service<'_> {
    fn methods(
        &self,
        r: &mut Reader,
        methods: &[Value],
        datasets: &[(String, String)],
    ) -> Vec<RouteSpec> {
        if methods.is_empty() {
            r.error(self.at.clone(), self.field.clone(), "lists no method");
        }
        let mut names: Vec<String> = Vec::new();
        let mut routes = Vec::with_capacity(methods.len());
        for (j, item) in methods.iter().enumerate() {
            let mut at = self.at.clone();
            at.push(Step::Index(j));
            let field = format!("{}[{j}]", self.field);
            let item = without_unknown(r, item, &at, &field, &METHOD_KEYS);
            let Some(raw) = r.value::<RawMethod>(&item, &at, &field) else {
                continue;
            };
            let here = |k: &str| {
                let mut p = at.clone();
                p.push(key(k));
                p
            };
            let mut ok = true;
            if !is_identifier(&raw.name) {
                let m = format!(
                    "`{}` is not a method name: letters, digits and _, not starting with a digit",
                    raw.name
                );
                r.error(here("name"), format!("{field}.name"), m);
                ok = false;
            } else if names.contains(&raw.name) {
                let m = format!("`{}` is declared twice in `{}`", raw.name, self.name);
                r.error(here("name"), format!("{field}.name"), m);
                ok = false;
            }
            if let Some(d) = raw
                .dataset
                .as_ref()
                .filter(|d| !datasets.iter().any(|(n, _)| n == *d))
            {
                let m = format!("`{d}` is not a schema object of this contract");
                r.error(here("dataset"), format!("{field}.dataset"), m);
                ok = false;
            }
            if !ok {
                continue;
            }
            names.push(raw.name.clone());
            routes.push(RouteSpec {
                method: Method::POST,
                path: format!("/{}/{}", self.name, raw.name),
                action: raw.action,
                dataset: raw.dataset,
                user_token: raw.user_token.or(self.user_token),
                at: here("name"),
                field: format!("{field}.name"),
            });
        }
        routes
    }
}

/// `item` without the keys not in `known`, each reported by name.
pub(super) fn without_unknown(
    r: &mut Reader,
    item: &Value,
    at: &[Step],
    field: &str,
    known: &[&str],
) -> Value {
    let mut item = item.clone();
    if let Some(m) = item.as_mapping_mut() {
        let unknown: Vec<String> = m
            .keys()
            .filter_map(Value::as_str)
            .filter(|k| !known.contains(k))
            .map(str::to_string)
            .collect();
        for k in unknown {
            m.remove(k.as_str());
            let mut p = at.to_vec();
            p.push(Step::KeyName(k.clone()));
            r.error(
                p,
                format!("{field}.{}", k.escape_debug()),
                keys::unknown_field(&k, known),
            );
        }
    }
    item
}

/// A protobuf identifier: letters, digits and `_`, not starting with a digit.
fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A fully qualified service name: its package's identifiers and its own,
/// joined by dots (`sales.orders.v1.OrderService`).
fn check_service(name: &str) -> Result<(), &'static str> {
    if name.split('.').all(is_identifier) {
        Ok(())
    } else {
        Err("not a service name: the package and the service, identifiers joined by `.` (sales.orders.v1.OrderService)")
    }
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::super::tests::assert_errors_at;

    fn contract(grpc: &str) -> String {
        format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: sales.rpc\nversion: 1.0.0\ndomain: sales\nschema:\n  - name: orders\n    classification: internal\nteam:\n  - {{ username: sales@acme.example, role: owner }}\nslaProperties:\n  - {{ property: latency, value: 100, unit: ms }}\ncustomProperties:\n  - property: meshgateGrpc\n    value:\n{grpc}"
        )
    }

    #[test]
    fn grpc_methods_become_post_routes_of_their_full_method_names() {
        let text = contract(
            "      - service: sales.orders.v1.OrderService\n        userToken: optional\n        methods:\n          - { name: GetOrder, action: read, dataset: orders }\n          - { name: WatchOrders, action: subscribe, userToken: required }\n      - service: Health\n        methods:\n          - { name: Check, action: describe }\n",
        );
        let c = read(&text, "rpc.odcs.yaml").expect("reads");
        let routes: Vec<(String, String, &str, Option<String>, _)> = c
            .product
            .routes
            .iter()
            .map(|r| {
                (
                    r.method.to_string(),
                    r.path.clone(),
                    r.action.as_str(),
                    r.dataset.clone(),
                    r.user_token,
                )
            })
            .collect();
        use super::UserToken::{Optional, Required};
        assert_eq!(
            routes,
            [
                (
                    "POST".into(),
                    "/sales.orders.v1.OrderService/GetOrder".into(),
                    "read",
                    Some("orders".into()),
                    Some(Optional)
                ),
                (
                    "POST".into(),
                    "/sales.orders.v1.OrderService/WatchOrders".into(),
                    "subscribe",
                    None,
                    Some(Required)
                ),
                (
                    "POST".into(),
                    "/Health/Check".into(),
                    "describe",
                    None,
                    None
                ),
            ]
        );
        assert!(
            !c.warnings.iter().any(|w| w.message.contains("no routes")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn every_bad_declaration_is_an_error_at_its_line_and_column() {
        let text = contract(
            "      - service: sales..Orders\n        methods:\n          - { name: Get, action: read }\n      - service: sales.Orders\n        method: []\n      - service: sales.Rpc\n        methods:\n          - { name: 1Get, action: read }\n          - { name: Get, action: raed }\n          - { name: Put, action: write, dataset: order }\n          - { name: Del, action: write, verb: DELETE }\n          - { name: List, action: read }\n          - { name: List, action: read }\n",
        );
        let expect = [
            ("rpc.odcs.yaml:16:18", "`sales..Orders`: not a service name"),
            ("rpc.odcs.yaml:19:9", "missing field `methods`"),
            ("rpc.odcs.yaml:20:9", "did you mean `methods`?"),
            ("rpc.odcs.yaml:23:21", "`1Get` is not a method name"),
            ("rpc.odcs.yaml:24:34", "unknown variant `raed`"),
            ("rpc.odcs.yaml:25:50", "`order` is not a schema object"),
            ("rpc.odcs.yaml:26:41", "verb: unknown field; one of name"),
            (
                "rpc.odcs.yaml:28:21",
                "`List` is declared twice in `sales.Rpc`",
            ),
        ];
        assert_errors_at(&text, "rpc.odcs.yaml", &expect);
    }
}
