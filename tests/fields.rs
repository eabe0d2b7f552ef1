//! Field-level access on the wire, through the real binary and curl: the
//! orders contract declares personal fields (an e-mail hashed, a phone cut
//! to its last four digits, a customer-since date cut to its year, a
//! nested street removed) and a restricted one in an array (redacted); a
//! sales-domain `read_field` forbid hides the personal ones from callers
//! outside sales. The product's server answers fixed bodies; every
//! response is checked over HTTP/1.1 and HTTP/2.

mod common;

use common::fields::{get, masked, MASKED, RECORD};
use common::json_upstream::FixedUpstream;
use common::reply::fetch;
use common::trail::{event_of, events_of_path};
use common::*;
use serde_json::json;

const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2"];

fn bodies() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("/orders/SO-1", "application/json", RECORD.to_string()),
        (
            "/orders/list",
            "application/json; charset=utf-8",
            format!("[{RECORD},\n {RECORD}]"),
        ),
        ("/orders/text", "text/plain", "id,customer_email\n".into()),
        (
            "/orders/broken",
            "application/json",
            format!("[{RECORD}, {{\"id\": tru}}]"),
        ),
    ]
}

/// What a caller outside sales is shown of the record, and the hidden
/// fields its audit event names (path, method, the policies that hid it).
fn hidden_from_finance() -> serde_json::Value {
    let pii = ["sales.orders.pii-for-sales-only"];
    json!([
        { "field": "customer_email", "mask": "hash", "policies": pii },
        { "field": "customer_phone", "mask": "last4", "policies": pii },
        { "field": "customer_since", "mask": "year", "policies": pii },
        { "field": "shipping/street", "mask": "omit", "policies": pii },
        { "field": "lines/unit_cost", "mask": "redact", "policies": ["mesh.restricted-requires-allowed-purpose"] },
    ])
}

#[test]
fn personal_fields_are_masked_for_callers_outside_the_domain_and_audited_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    let mut seen_hash = None;
    for proto in PROTOCOLS {
        let r = fetch(&pki, "reporting", &[proto], &mg.url("/orders/SO-1"));
        assert_eq!(r.status, "200", "{proto}: {}", r.body);
        assert!(r.body.starts_with(MASKED), "{proto}: {}", r.body);
        // A rewritten body has no length or strong validator of the upstream's.
        assert_eq!(r.header("content-length"), None, "{proto}");
        assert_eq!(r.header("etag"), None, "{proto}");
        let v = r.json();
        assert_eq!(v["customer_phone"], "***********4567", "{proto}");
        assert_eq!(v["customer_since"], "2019", "{proto}");
        assert_eq!(v["shipping"], json!({"city": "Köln"}), "{proto}");
        // Restricted without a declared purpose: redacted to a number.
        assert_eq!(v["lines"], json!([{"sku": "X-1", "unit_cost": 0}]));
        // The same value pseudonymises the same way on every request.
        let hash = v["customer_email"].as_str().map(str::to_string);
        assert!(seen_hash.is_none() || seen_hash == hash);
        seen_hash = hash;
        let event = event_of(&mg, &trail, r.request_id());
        assert_eq!(event["hidden"], hidden_from_finance(), "{proto}: {event}");
        assert_eq!(event["complete"], true, "{proto}: {event}");

        // An array of records: each is masked; visible values byte for byte.
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/list"));
        assert_eq!(status, "200", "{proto}: {body}");
        assert_eq!(body.matches(MASKED).count(), 2, "{proto}: {body}");
        assert!(!body.contains("ana@example.com") && !body.contains("Ring 1"));
        assert!(!body.contains("2019-04-01") && !body.contains("1234567"));

        // The owning domain sees personal fields; a purpose the product
        // allows unlocks the restricted cost, and nothing is hidden then.
        let r = fetch(&pki, "orders", &[proto], &mg.url("/orders/SO-1"));
        assert!(
            r.body.contains("ana@example.com") && r.body.contains("Ring 1"),
            "{proto}: {}",
            r.body
        );
        assert!(r.body.contains(r#""unit_cost":0"#), "{proto}: {}", r.body);
        let event = event_of(&mg, &trail, r.request_id());
        assert_eq!(
            event["hidden"],
            json!([{ "field": "lines/unit_cost", "mask": "redact", "policies": ["mesh.restricted-requires-allowed-purpose"] }]),
            "{proto}: {event}"
        );
        let args = [proto, "-H", "x-data-purpose: reporting"];
        let r = fetch(&pki, "orders", &args, &mg.url("/orders/SO-1"));
        assert_eq!(r.body, RECORD, "{proto}: nothing hidden, nothing rewritten");
        let event = event_of(&mg, &trail, r.request_id());
        assert!(event.get("hidden").is_none(), "{proto}: {event}");
    }
    let (ok, out) = audit_verify(&[&trail]);
    assert!(ok, "{out}");
    // Each masked response adds the fields its plan hid, by mask: per
    // protocol, two responses to finance (one record, a list) and one to
    // sales hiding the cost; the response with nothing hidden adds none.
    let hidden = |mask: &str| {
        mg.metric(&format!(
            "meshgate_fields_hidden_total{{product=\"sales.orders\",dataset=\"orders\",mask=\"{mask}\"}}"
        ))
    };
    for (mask, n) in [
        ("hash", 4.0),
        ("last4", 4.0),
        ("year", 4.0),
        ("omit", 4.0),
        ("redact", 6.0),
    ] {
        assert_eq!(hidden(mask), n, "{mask}:\n{}", mg.metrics());
    }
}

#[test]
fn what_cannot_be_masked_is_never_sent() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    for proto in PROTOCOLS {
        // Not JSON on a masked route: 502 before any of it is sent.
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/text"));
        assert_eq!(status, "502", "{proto}: {body}");
        assert!(body.contains("unmaskable_response"), "{proto}: {body}");
        assert!(!body.contains("customer_email"), "{proto}: {body}");
        // Invalid JSON after the head: the transfer fails, never a whole body.
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/broken"));
        assert_ne!(
            code, 0,
            "{proto}: a cut body looked complete: {status} {body}"
        );
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
    }
    // The cut responses' audit events: incomplete, and why.
    for event in events_of_path(&mg, &trail, "/orders/broken", 2) {
        assert_eq!(event["error"], "unmaskable_response", "{event}");
        assert_eq!(event["complete"], false, "{event}");
        assert_eq!(event["status"], 200, "{event}");
    }
}

/// A masked response says nothing of the unmasked bytes and the request
/// asks nothing of them: a HEAD carries no length or validator of the
/// upstream's body; ranges, conditions on its validators and compression
/// are not forwarded (a 304 to a guessed ETag would tell the guess right).
#[test]
fn a_masked_response_neither_tells_nor_asks_of_the_unmasked_bytes() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up).start();
    let url = mg.url("/orders/SO-1");
    for proto in ["--http1.1", "--http2"] {
        let out = curl(&pki, Some("reporting"), &[proto, "-I", &url]);
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(head.starts_with("http/"), "{head}");
        assert!(head.contains(" 200"), "{head}");
        assert!(!head.contains("etag:"), "{proto}: {head}");
        assert!(
            !head.contains(&format!("content-length: {}", RECORD.len())),
            "{proto}: {head}"
        );
    }

    // What the product's server is asked, recorded by the plain upstream
    // (its text answer on a masked route is then refused, 502).
    let recording = Upstream::start();
    let pki = Pki::new();
    let mg = masked(&pki, &recording).start();
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "If-None-Match: \"v1\"",
            "-H",
            "If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT",
            "-H",
            "Range: bytes=0-10",
            "-H",
            "Accept-Encoding: gzip, br",
            &mg.url("/orders/SO-1"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    let seen = recording.seen();
    let asked = seen.last().expect("the request reached the upstream");
    for name in ["if-none-match", "if-modified-since", "range"] {
        assert!(
            asked.header(name).is_empty(),
            "{name} forwarded: {:?}",
            asked.headers
        );
    }
    assert_eq!(
        asked.header("accept-encoding"),
        vec!["identity".to_string()]
    );
}
