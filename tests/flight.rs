//! Arrow Flight with real clients and a real server: `pyarrow.flight` calls
//! the sidecar over mTLS with client certificates; behind it a pyarrow
//! Flight server speaks h2c and serves the risk domain's exposures, the
//! example Flight product of policies/domains/risk (its contract's
//! `meshgateFlight` makes each Flight RPC a route). A refusal must reach
//! the client as the error pyarrow itself raises for the gRPC status.

mod common;

use common::flight::{flight_calls, require_pyarrow, FlightServer};
use common::trail::event_where;
use common::*;
use serde_json::{json, Value};

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const ENGINE: &str = "spiffe://mesh.local/ns/risk/sa/engine";
const RPC: &str = "/arrow.flight.protocol.FlightService/";

/// About 100 MiB of record batches (33 bytes a row).
const BIG: u64 = 3_200_000;

/// The sidecar in front of `server` with the example tree and its risk
/// domain, audited to `audit.jsonl`.
fn sidecar(pki: &Pki, server: &FlightServer) -> Meshgate {
    Meshgate::builder(pki, &server.url())
        .policies()
        .domain("risk")
        .audit_file(&pki.path("audit.jsonl"))
        .extra("upstream_protocol: h2c\n")
        .start()
}

/// The audit event of the `n`th call (from 0) of `rpc`, once written.
fn event(pki: &Pki, mg: &Meshgate, rpc: &str, n: usize) -> Value {
    let path = format!("{RPC}{rpc}");
    event_where(
        mg,
        &pki.path("audit.jsonl"),
        &format!("of {path} #{n}"),
        |events| {
            events
                .into_iter()
                .filter(|e| e["path"] == path.as_str())
                .nth(n)
        },
    )
}

fn ok(result: &Value) -> &Value {
    assert!(result.get("error").is_none(), "{result}");
    &result["ok"]
}

#[test]
fn an_allowed_client_lists_describes_and_fetches_a_100_mib_table_whole() {
    if !require_pyarrow() {
        return;
    }
    let server = FlightServer::start(BIG);
    let pki = Pki::new();
    let mg = sidecar(&pki, &server);
    let results = flight_calls(
        &pki,
        "reporting",
        &mg,
        json!([
            { "rpc": "list_flights" },
            { "rpc": "get_flight_info", "path": "exposures" },
            { "rpc": "get_schema", "path": "exposures" },
            { "rpc": "do_get" },
        ]),
    );
    let table = &server.table;
    assert!(table.bytes >= 100 << 20, "{table:?}");
    let flights = ok(&results[0]);
    assert_eq!(flights.as_array().map(Vec::len), Some(1), "{flights}");
    // No location: the data is fetched through the sidecar too.
    assert_eq!(
        flights[0]["endpoints"],
        json!([{ "ticket": "exposures", "locations": [] }])
    );
    let info = ok(&results[1]);
    assert_eq!(info["records"], table.rows);
    assert_eq!(info["bytes"], table.bytes);
    assert_eq!(
        ok(&results[2]),
        &json!(["id", "counterparty", "book", "notional", "currency"])
    );
    let got = ok(&results[3]);
    assert_eq!(got["rows"], table.rows, "{got}");
    assert_eq!(got["bytes"], table.bytes, "{got}");
    assert_eq!(
        got["sha256"],
        table.sha256.as_str(),
        "the bytes differ: {got}"
    );
    eprintln!(
        "do_get of {} bytes through the sidecar: {} s",
        table.bytes, got["seconds"]
    );
    // The server saw the verified caller, once per call (do_get lists
    // the flights first).
    for (rpc, n) in [
        ("ListFlights", 2),
        ("GetFlightInfo", 1),
        ("GetSchema", 1),
        ("DoGet", 1),
    ] {
        assert_eq!(server.arrivals(rpc), vec![REPORTING; n], "{rpc}");
    }
    let get = event(&pki, &mg, "DoGet", 0);
    assert_eq!(get["product"], "risk.exposures", "{get}");
    assert_eq!(get["action"], "read", "{get}");
    assert_eq!(get["resource"], "risk.exposures/exposures", "{get}");
    assert_eq!(get["policies"], json!(["risk.exposures.finance-may-read"]));
    assert_eq!(
        (get["status"].as_u64(), get["grpc_status"].as_u64()),
        (Some(200), Some(0))
    );
    assert_eq!(get["complete"], true, "{get}");
    assert!(get["bytes_out"].as_u64() >= Some(table.bytes), "{get}");
}

#[test]
fn refusals_are_pyarrow_errors_and_never_reach_the_server() {
    if !require_pyarrow() {
        return;
    }
    let server = FlightServer::start(1000);
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS), ("engine", ENGINE)]);
    let mg = sidecar(&pki, &server);

    // Marketing may discover the product, not fetch its rows, nor ask for
    // a FlightInfo (a command descriptor there runs a query on the server).
    let marketing = flight_calls(
        &pki,
        "campaigns",
        &mg,
        json!([
            { "rpc": "list_flights" },
            { "rpc": "do_get" },
            { "rpc": "get_flight_info", "path": "exposures" },
        ]),
    );
    ok(&marketing[0]);
    assert_eq!(
        marketing[2]["error"], "FlightUnauthorizedError",
        "{marketing:?}"
    );
    let denied = &marketing[1];
    assert_eq!(denied["error"], "FlightUnauthorizedError", "{denied}");
    let message = denied["message"].as_str().unwrap_or("");
    assert!(
        message.contains("meshgate: forbidden (request id "),
        "{denied}"
    );
    assert!(
        !message.contains("risk.") && !message.contains("mesh."),
        "{denied}"
    );

    // Finance reads the exposures but may not load them: the mesh
    // baseline's write rule; the risk domain's own engine may. Refused at
    // once, what the client sent of its 8 MB upload meanwhile is read and
    // discarded (limits.linger): pyarrow raises the status.
    let put = json!({ "rpc": "do_put", "path": "exposures", "rows": 3 });
    let big_put = json!({ "rpc": "do_put", "path": "exposures", "rows": 1_000_000 });
    let finance = flight_calls(&pki, "reporting", &mg, json!([big_put]));
    let refused = &finance[0];
    assert_eq!(refused["error"], "FlightUnauthorizedError", "{refused}");
    let refused = event(&pki, &mg, "DoPut", 0);
    assert_eq!(
        refused["policies"],
        json!(["mesh.write-only-from-owning-domain"])
    );
    assert_eq!(
        (refused["status"].as_u64(), refused["grpc_status"].as_u64()),
        (Some(403), Some(7))
    );

    // DoAction is not routed: refused by the sidecar, whoever asks.
    let engine = flight_calls(
        &pki,
        "engine",
        &mg,
        json!([put, { "rpc": "list_actions" }, { "rpc": "do_action", "action": "refresh" }]),
    );
    let sent = ok(&engine[0])["sha256"].as_str().unwrap_or("").to_string();
    assert_eq!(
        server.server.wait_line(0, "STORED "),
        format!("STORED rows=3 sha256={sent}")
    );
    assert_eq!(ok(&engine[1]), &json!(["refresh"]));
    let action = &engine[2];
    assert_eq!(action["error"], "ArrowNotImplementedError", "{action}");
    assert!(
        action["message"]
            .as_str()
            .is_some_and(|m| m.contains("meshgate: no_route")),
        "{action}"
    );
    let unrouted = event(&pki, &mg, "DoAction", 0);
    assert_eq!(
        (
            unrouted["status"].as_u64(),
            unrouted["grpc_status"].as_u64()
        ),
        (Some(404), Some(12))
    );

    // Only what was allowed reached the server, as its caller.
    assert_eq!(server.arrivals("ListFlights"), [CAMPAIGNS, CAMPAIGNS]);
    assert_eq!(server.arrivals("DoGet"), Vec::<String>::new());
    assert_eq!(server.arrivals("GetFlightInfo"), Vec::<String>::new());
    assert_eq!(server.arrivals("DoPut"), [ENGINE]);
    assert_eq!(server.arrivals("DoAction"), Vec::<String>::new());
}

/// The response timeout is for an upstream late to answer, not for an
/// upload it is reading: a DoPut that streams for 3 s, three times the
/// timeout, is answered (the server sends its response headers only once
/// it has read the whole stream). The client paces its batches, 20 ms
/// apart: the shape of a slow uploader, not a synchronisation.
#[test]
fn an_upload_the_server_is_reading_outlasts_the_response_timeout() {
    if !require_pyarrow() {
        return;
    }
    let server = FlightServer::start(1000);
    let pki = Pki::with_clients(&[("engine", ENGINE)]);
    let mg = Meshgate::builder(&pki, &server.url())
        .policies()
        .domain("risk")
        .audit_file(&pki.path("audit.jsonl"))
        .timeout("upstream_response: 1s")
        .extra("upstream_protocol: h2c\n")
        .start();
    let put = json!({ "rpc": "do_put", "rows": 1000, "batches": 150, "pace": 0.02 });
    let results = flight_calls(&pki, "engine", &mg, json!([put]));
    let put = ok(&results[0]);
    assert_eq!(
        server.server.wait_line(0, "STORED "),
        format!(
            "STORED rows=150000 sha256={}",
            put["sha256"].as_str().unwrap_or("")
        )
    );
    let e = event(&pki, &mg, "DoPut", 0);
    assert_eq!(
        (e["status"].as_u64(), e["grpc_status"].as_u64()),
        (Some(200), Some(0)),
        "{e}"
    );
    assert!(
        e["upstream_us"].as_u64() > Some(2_000_000),
        "answered after the whole upload: {e}"
    );
}

/// A call whose answer a field plan must mask is refused before it is
/// forwarded: meshgate reads no gRPC message, so the answer would be
/// refused whatever it held, and a write forwarded first would be done
/// while its caller is told it failed (and retries it). The risk domain
/// hides `notional` from everyone here; the engine's upload never reaches
/// the server, and the audit names the hidden field.
#[test]
fn a_call_a_field_plan_applies_to_is_refused_before_it_runs() {
    if !require_pyarrow() {
        return;
    }
    let server = FlightServer::start(1000);
    let pki = Pki::with_clients(&[("engine", ENGINE)]);
    let builder = Meshgate::builder(&pki, &server.url())
        .policies()
        .domain("risk")
        .audit_file(&pki.path("audit.jsonl"))
        .extra("upstream_protocol: h2c\n");
    pki.write(
        "policies/domains/risk/hide.cedar",
        "@id(\"risk.notional-hidden\")\n\
         forbid (principal, action == Mesh::Action::\"read_field\", resource in Mesh::Domain::\"risk\")\n\
         when { resource.name == \"notional\" };\n",
    );
    let mg = builder.start();
    let put = json!({ "rpc": "do_put", "path": "exposures", "rows": 3 });
    let results = flight_calls(&pki, "engine", &mg, json!([put, { "rpc": "do_get" }]));
    for r in &results {
        assert_eq!(r["error"], "FlightInternalError", "{results:?}");
        let message = r["message"].as_str().unwrap_or("");
        assert!(message.contains("unmaskable_response"), "{r}");
    }
    assert_eq!(server.arrivals("DoPut"), Vec::<String>::new());
    assert_eq!(server.arrivals("DoGet"), Vec::<String>::new());
    let refused = event(&pki, &mg, "DoPut", 0);
    assert_eq!(refused["error"], "unmaskable_response", "{refused}");
    assert_eq!(
        (refused["status"].as_u64(), refused["grpc_status"].as_u64()),
        (Some(502), Some(13))
    );
    assert_eq!(
        refused["hidden"],
        json!([{ "field": "notional", "mask": "omit", "policies": ["risk.notional-hidden"] }]),
        "{refused}"
    );
}
