//! Contract conformance through the real binary and curl, over HTTP/1.1
//! and HTTP/2: responses of the orders dataset checked against its
//! contract (a required id, typed values, a status of declared valid
//! values, no undeclared member) on the masker's own parse. `observe`
//! counts each kind and changes no byte; `enforce` answers 502
//! `contract_violation` when the first record violates and cuts the
//! transfer when a later one does; `sample: 0` checks nothing; a
//! contract reload changes the mode; bad settings are refused where they
//! are written. A compressed body on a watched route is checked on its
//! decoded records and passed as it came.

mod common;

use std::path::Path;

use common::coded::{encode, CODINGS};
use common::fields::{declare, get, masked_in, FIELDS, KEY, RECORD};
use common::json_upstream::FixedUpstream;
use common::stream_upstream::StreamUpstream;
use common::trail::{event_of, events_of_path};
use common::*;

const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2"];

/// The test fields, with a required id and a status of two valid values
/// (ODCS: a zero-tolerance `invalidValues` rule).
fn fields() -> String {
    FIELDS
        .replace(
            "{ name: id, logicalType: string, primaryKey: true }",
            "{ name: id, logicalType: string, primaryKey: true, required: true }",
        )
        .replace(
            "      - { name: status, logicalType: string }\n",
            "      - name: status\n        logicalType: string\n        quality:\n          - { metric: invalidValues, arguments: { validValues: [new, paid] }, mustBe: 0 }\n",
        )
}

/// Four records, each breaking the contract one way: no id, an amount
/// that is a string, a status not declared, an undeclared member.
fn kinds_body() -> String {
    let no_id = RECORD.replace(r#""id": "SO-1", "#, "");
    let text_amount = RECORD.replace("12.50", r#""12.50""#);
    let lost = RECORD.replace(r#""amount""#, r#""status": "lost", "amount""#);
    let extra = RECORD.replace(r#""amount""#, r#""note": "n", "amount""#);
    format!("[{no_id},\n{text_amount},\n{lost},\n{extra}]")
}

fn bodies() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("/orders/good", "application/json", format!("[{RECORD}]")),
        ("/orders/kinds", "application/json", kinds_body()),
        (
            "/orders/broken",
            "application/json",
            format!("[{RECORD}, {{\"id\": tru}}]"),
        ),
        (
            "/orders/utf16",
            "application/json; charset=utf-16",
            format!("[{RECORD}]"),
        ),
    ]
}

/// A sidecar in `dir` on the orders contract with [`fields`], the mesh's
/// `conformance` set to `mesh` and the product's `meshgateConformance` to
/// `product` (when given).
fn conformed(
    pki: &Pki,
    up: &(impl Target + ?Sized),
    dir: &str,
    mesh: &str,
    product: Option<&str>,
) -> (Sidecar, std::path::PathBuf) {
    let dir = pki.path(dir);
    let sidecar = masked_in(pki, up, &dir, KEY);
    let contract = dir.join("policies/domains/sales/orders.odcs.yaml");
    declare(&contract, &fields());
    if let Some(value) = product {
        set_product(&contract, value);
    }
    let trail = dir.join("audit.log");
    let sidecar = sidecar
        .extra(&format!("conformance: {mesh}\n"))
        .audit_file(&trail);
    (sidecar, contract)
}

/// Sets the contract's `meshgateConformance` (its custom properties are
/// the file's last list).
fn set_product(contract: &Path, value: &str) {
    let text = std::fs::read_to_string(contract).expect("read");
    let text = match text.find("  - property: meshgateConformance\n") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    let text = format!("{text}  - property: meshgateConformance\n    value: {value}\n");
    std::fs::write(contract, text).expect("write");
}

fn violations(mg: &Meshgate, kind: &str) -> f64 {
    mg.counter(&format!(
        "meshgate_contract_violations_total{{product=\"sales.orders\",dataset=\"orders\",kind=\"{kind}\"}}"
    ))
}

fn checks(mg: &Meshgate) -> f64 {
    mg.counter("meshgate_contract_checks_total{product=\"sales.orders\",dataset=\"orders\"}")
}

/// Sales with a purpose the product allows sees every field (nothing is
/// masked: the body is only watched); finance gets personal fields masked.
const SEES_ALL: [&str; 2] = ["-H", "x-data-purpose: reporting"];

#[test]
fn observe_counts_each_kind_and_changes_no_byte_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let (sidecar, _) = conformed(&pki, &up, "observe", "{ sample: 1, mode: observe }", None);
    let trail = pki.path("observe/audit.log");
    let mg = sidecar.start();
    let kinds = kinds_body();
    for proto in PROTOCOLS {
        let args = [proto, SEES_ALL[0], SEES_ALL[1]];
        let r = common::reply::fetch(&pki, "orders", &args, &mg.url("/orders/kinds"));
        assert_eq!(r.status, "200", "{proto}: {}", r.body);
        assert_eq!(r.body, kinds, "{proto}: watched, not rewritten");
        assert_eq!(
            r.header("content-length"),
            Some(kinds.len().to_string().as_str()),
            "{proto}: the upstream's length stands"
        );
        let event = event_of(&mg, &trail, r.request_id());
        assert_eq!(
            event["violations"],
            serde_json::json!(["required", "type", "enum", "undeclared"]),
            "{proto}: {event}"
        );
        assert_eq!(event["complete"], true, "{proto}: {event}");
        // Masked for finance, and checked on the same parse.
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/kinds"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
        // A conforming body shows nothing; a malformed one is passed whole
        // when nothing of it must be hidden.
        let (code, _, _) = get(&pki, "orders", &args, &mg.url("/orders/good"));
        assert_eq!(code, 0, "{proto}");
        let (code, status, body) = get(&pki, "orders", &args, &mg.url("/orders/broken"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert!(body.ends_with("tru}]"), "{proto}: {body}");
    }
    for kind in ["required", "enum", "undeclared"] {
        assert_eq!(violations(&mg, kind), 4.0, "{kind}:\n{}", mg.metrics());
    }
    // The broken body's `"id": tru` is no string before it is no JSON.
    assert_eq!(violations(&mg, "type"), 6.0, "{}", mg.metrics());
    assert_eq!(violations(&mg, "malformed"), 2.0, "{}", mg.metrics());
    assert_eq!(checks(&mg), 8.0, "{}", mg.metrics());
    let (ok, out) = audit_verify(&[&trail]);
    assert!(ok, "{out}");
}

#[test]
fn enforce_refuses_a_violating_first_record_before_the_head_and_cuts_a_later_one() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    // The product's mode wins over the mesh's.
    let (sidecar, _) = conformed(
        &pki,
        &up,
        "enforce",
        "{ sample: 1, mode: observe }",
        Some("{ mode: enforce }"),
    );
    let trail = pki.path("enforce/audit.log");
    let mg = sidecar.start();
    for proto in PROTOCOLS {
        for (who, extra) in [("orders", &SEES_ALL[..]), ("reporting", &[][..])] {
            let mut args = vec![proto];
            args.extend(extra);
            let (_, status, body) = get(&pki, who, &args, &mg.url("/orders/kinds"));
            assert_eq!(status, "502", "{proto} {who}: {body}");
            assert!(body.contains("contract_violation"), "{proto} {who}: {body}");
            assert!(!body.contains("ana@example.com"), "{proto} {who}: {body}");
            let (code, status, _) = get(&pki, who, &args, &mg.url("/orders/good"));
            assert_eq!((code, status.as_str()), (0, "200"), "{proto} {who}");
            // A body it cannot read (another charset) is not passed unchecked.
            let (_, status, body) = get(&pki, who, &args, &mg.url("/orders/utf16"));
            assert_eq!(status, "502", "{proto} {who}: {body}");
        }
    }
    for event in events_of_path(&mg, &trail, "/orders/kinds", 4) {
        assert_eq!(event["status"], 502, "{event}");
        assert_eq!(event["error"], "contract_violation", "{event}");
        assert_eq!(
            event["violations"],
            serde_json::json!(["required"]),
            "{event}"
        );
    }
    assert_eq!(violations(&mg, "required"), 4.0, "{}", mg.metrics());

    // A large array whose 15000th record violates: the head and the first
    // records are sent, then the transfer fails, never a whole body.
    let stream = StreamUpstream::start();
    let (sidecar, _) = conformed(
        &pki,
        &stream,
        "enforce-stream",
        "{ sample: 1, mode: enforce }",
        None,
    );
    let trail = pki.path("enforce-stream/audit.log");
    let mg = sidecar.start();
    let path = "/orders/big.json?n=20000&bad=15000";
    for proto in PROTOCOLS {
        for (who, extra) in [("orders", &SEES_ALL[..]), ("reporting", &[][..])] {
            let mut args = vec![proto, "-o", "/dev/null"];
            args.extend(extra);
            let (code, status, _) = get(&pki, who, &args, &mg.url(path));
            assert_eq!(status, "200", "{proto} {who}: the head was sent");
            assert_ne!(code, 0, "{proto} {who}: a cut body looked complete");
        }
    }
    for event in events_of_path(&mg, &trail, "/orders/big.json", 4) {
        assert_eq!(event["error"], "contract_violation", "{event}");
        assert_eq!(event["complete"], false, "{event}");
        assert_eq!(event["violations"], serde_json::json!(["type"]), "{event}");
    }
    // An HTTP/1.0 client reads a body without a length to the connection's
    // end and would take a cut one for all of it: refused before the head,
    // even where the plan hides nothing and the bytes pass as they came.
    let mut args = vec!["--http1.0", "--no-alpn"];
    args.extend(SEES_ALL);
    let (_, status, body) = get(&pki, "orders", &args, &mg.url(path));
    assert_eq!(status, "502", "{body}");
}

#[test]
fn sample_zero_checks_nothing_and_a_contract_reload_changes_the_mode() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let (sidecar, contract) = conformed(
        &pki,
        &up,
        "reload",
        "{ mode: enforce }",
        Some("{ sample: 0 }"),
    );
    let mg = sidecar.start();
    let url = mg.url("/orders/kinds");
    for proto in PROTOCOLS {
        let (code, status, body) = get(&pki, "orders", &[proto, SEES_ALL[0], SEES_ALL[1]], &url);
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert_eq!(body, kinds_body(), "{proto}");
    }
    assert_eq!(checks(&mg), 0.0, "{}", mg.metrics());
    assert_eq!(violations(&mg, "required"), 0.0);

    // Every response checked, in observe: passed, counted.
    set_product(&contract, "{ sample: 1, mode: observe }");
    mg.wait_metric("meshgate_policy_reloads_total{result=\"ok\"}", 1.0);
    let (_, status, _) = get(&pki, "reporting", &[], &url);
    assert_eq!(status, "200");
    assert_eq!(violations(&mg, "required"), 1.0, "{}", mg.metrics());

    // Then enforced: the next response is refused.
    set_product(&contract, "{ sample: 1 }");
    mg.wait_metric("meshgate_policy_reloads_total{result=\"ok\"}", 2.0);
    let (_, status, body) = get(&pki, "reporting", &[], &url);
    assert_eq!(status, "502", "{body}");
    assert!(body.contains("contract_violation"), "{body}");
}

#[test]
fn bad_conformance_settings_are_refused_where_they_are_written() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let validate = |config: &Path| {
        let out = output_within(
            std::process::Command::new(bin())
                .args(["validate", "--config"])
                .arg(config),
        );
        assert!(!out.status.success(), "accepted: {}", config.display());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let (sidecar, _) = conformed(&pki, &up, "mesh", "{ sample: 1.5 }", None);
    let config = pki.path("mesh/meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("config");
    let err = validate(&config);
    let line = sidecar
        .yaml()
        .lines()
        .position(|l| l.starts_with("conformance:"))
        .expect("the line")
        + 1;
    assert!(err.contains(&format!("meshgate.yaml:{line}:")), "{err}");
    assert!(
        err.contains("conformance.sample") && err.contains("between 0 and 1"),
        "{err}"
    );

    for (i, (value, field, why)) in [
        ("{ mode: loud }", "meshgateConformance.mode", "loud"),
        ("{ sample: 1, every: 2 }", "meshgateConformance", "every"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = format!("product{i}");
        let (sidecar, _) = conformed(&pki, &up, &dir, "{}", Some(value));
        let config = pki.path(&format!("{dir}/meshgate.yaml"));
        std::fs::write(&config, sidecar.yaml()).expect("config");
        let err = validate(&config);
        assert!(err.contains("orders.odcs.yaml:"), "{value}: {err}");
        assert!(err.contains(field) && err.contains(why), "{value}: {err}");
    }
    let (sidecar, contract) = conformed(&pki, &up, "typed", "{}", None);
    let text = std::fs::read_to_string(&contract).expect("read");
    std::fs::write(
        &contract,
        text.replace(
            "{ name: amount, logicalType: number }",
            "{ name: amount, logicalType: numbr }",
        ),
    )
    .expect("write");
    let config = pki.path("typed/meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("config");
    let err = validate(&config);
    assert!(
        err.contains("logicalType") && err.contains("numbr"),
        "{err}"
    );
}

/// Each coding's `kinds` and `good` bodies, a gzip body corrupt in its
/// first record, and one in stacked codings.
fn coded_bodies() -> Vec<(String, String, Vec<u8>)> {
    let mut all = Vec::new();
    for coding in CODINGS {
        for (name, body) in [("kinds", kinds_body()), ("good", format!("[{RECORD}]"))] {
            let path = format!("/orders/{name}-{coding}");
            all.push((path, coding.to_string(), encode(coding, body.as_bytes())));
        }
    }
    let mut corrupt = encode("gzip", kinds_body().as_bytes());
    for b in &mut corrupt[12..20] {
        *b ^= 0x5a;
    }
    all.push(("/orders/corrupt".into(), "gzip".into(), corrupt));
    let stacked = encode("br", &encode("gzip", kinds_body().as_bytes()));
    all.push(("/orders/stacked".into(), "gzip, br".into(), stacked));
    all
}

/// (curl's exit code, the head lower-cased, the body's bytes as sent).
fn fetch_raw(pki: &Pki, proto: &str, url: &str) -> (i32, String, Vec<u8>) {
    let out = curl(
        pki,
        Some("orders"),
        &[proto, SEES_ALL[0], SEES_ALL[1], "-D", "-", url],
    );
    let text = &out.stdout;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(text.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&text[..split]).to_ascii_lowercase();
    (
        out.status.code().unwrap_or(-1),
        head,
        text[split..].to_vec(),
    )
}

#[test]
fn a_compressed_body_on_a_watched_route_is_checked_decoded_and_passed_as_it_came() {
    let pki = Pki::new();
    let bodies = coded_bodies();
    let up = FixedUpstream::start_encoded(
        bodies
            .iter()
            .map(|(p, c, b)| (p.as_str(), "application/json", c.as_str(), b.clone()))
            .collect(),
    );
    let body_of = |path: &str| {
        let found = bodies.iter().find(|(p, _, _)| p == path);
        found.map(|(_, _, b)| b.clone()).expect("a body")
    };

    // observe: each coding's violations found, every byte passed coded.
    let (sidecar, _) = conformed(
        &pki,
        &up,
        "coded-observe",
        "{ sample: 1, mode: observe }",
        None,
    );
    let trail = pki.path("coded-observe/audit.log");
    let mg = sidecar.start();
    for proto in PROTOCOLS {
        for coding in CODINGS {
            let path = format!("/orders/kinds-{coding}");
            let (code, head, body) = fetch_raw(&pki, proto, &mg.url(&path));
            assert_eq!(code, 0, "{proto} {coding}: {head}");
            assert!(
                head.contains(&format!("content-encoding: {coding}\r\n")),
                "{proto}: {head}"
            );
            assert!(
                body == body_of(&path),
                "{proto} {coding}: the bytes changed"
            );
        }
        // Corrupt: a malformed body, passed; stacked: passed unchecked.
        for path in ["/orders/corrupt", "/orders/stacked"] {
            let (code, _, body) = fetch_raw(&pki, proto, &mg.url(path));
            assert_eq!(code, 0, "{proto} {path}");
            assert!(body == body_of(path), "{proto} {path}: the bytes changed");
        }
    }
    for event in events_of_path(&mg, &trail, "/orders/kinds-gzip", 2) {
        assert_eq!(
            event["violations"],
            serde_json::json!(["required", "type", "enum", "undeclared"]),
            "{event}"
        );
        assert_eq!(event["complete"], true, "{event}");
    }
    assert_eq!(violations(&mg, "required"), 8.0, "{}", mg.metrics());
    assert_eq!(violations(&mg, "malformed"), 2.0, "{}", mg.metrics());

    // enforce: a violating first record, a corrupt stream and stacked
    // codings are refused before the head; a conforming body passes coded.
    let (sidecar, _) = conformed(
        &pki,
        &up,
        "coded-enforce",
        "{ sample: 1, mode: enforce }",
        None,
    );
    let mg = sidecar.start();
    for proto in PROTOCOLS {
        for coding in CODINGS {
            let good = format!("/orders/good-{coding}");
            let (code, head, body) = fetch_raw(&pki, proto, &mg.url(&good));
            assert_eq!(code, 0, "{proto} {coding}: {head}");
            assert!(head.contains(" 200"), "{proto} {coding}: {head}");
            assert!(
                body == body_of(&good),
                "{proto} {coding}: the bytes changed"
            );
            let kinds = format!("/orders/kinds-{coding}");
            let (_, head, body) = fetch_raw(&pki, proto, &mg.url(&kinds));
            let text = String::from_utf8_lossy(&body);
            assert!(head.contains(" 502"), "{proto} {coding}: {head}");
            assert!(
                text.contains("contract_violation"),
                "{proto} {coding}: {text}"
            );
        }
        for path in ["/orders/corrupt", "/orders/stacked"] {
            let (_, head, body) = fetch_raw(&pki, proto, &mg.url(path));
            let text = String::from_utf8_lossy(&body);
            assert!(head.contains(" 502"), "{proto} {path}: {head}");
            assert!(
                text.contains("contract_violation"),
                "{proto} {path}: {text}"
            );
        }
    }
}
