//! Field masking of NDJSON and CSV through the real binary, over HTTP/1.1
//! and HTTP/2: each line of an NDJSON body is masked as the same record in
//! JSON is; a CSV body's columns are masked by its header row (a pseudonym
//! is the same as in JSON); what cannot be masked is never sent whole.

mod common;

use common::fields::{get, masked, masked_in, pseudonym, KEY, RECORD};
use common::json_upstream::FixedUpstream;
use common::reply::fetch;
use common::trail::events_of_path;
use common::*;

const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2"];

const CSV: &str = "id,amount,customer_email,customer_phone,customer_since,note\r\nSO-1,12.50,ana@example.com,+49 170 1234567,2019-04-01,\"hi, \"\"there\"\"\"\r\nSO-2,3,\"bo@example.com\",,2021-12-31,\r\n";

fn bodies() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("/orders/SO-1", "application/json", RECORD.to_string()),
        (
            "/orders/ndjson",
            "application/x-ndjson",
            format!("{RECORD}\n{RECORD}\n"),
        ),
        (
            "/orders/jsonl",
            "application/jsonl; charset=utf-8",
            format!("{RECORD}\r\n\r\n{RECORD}"),
        ),
        (
            "/orders/csv",
            "text/csv; charset=utf-8; header=present",
            CSV.to_string(),
        ),
        (
            "/orders/headless",
            "text/csv; header=absent",
            "SO-1,ana@example.com\n".into(),
        ),
        // The visible `shipping` column declares a hidden street: a cell
        // cannot be masked inside.
        (
            "/orders/nested",
            "text/csv",
            "id,shipping\nSO-1,\"{\"\"street\"\": \"\"Ring 1\"\"}\"\n".into(),
        ),
        (
            "/orders/ndjson-broken",
            "application/x-ndjson",
            format!("{RECORD}\n{{\"id\": tru}}\n"),
        ),
        ("/orders/chunked", "application/json", RECORD.to_string()),
        ("/orders/semicolons", "text/csv", CSV.replace(',', ";")),
        (
            "/orders/quoted-absent",
            "text/csv; header=\"absent\"",
            CSV.lines().skip(1).collect::<Vec<_>>().join("\n"),
        ),
        (
            "/orders/utf16",
            "application/json; charset=utf-16",
            RECORD.to_string(),
        ),
        (
            "/orders/csv-broken",
            "text/csv",
            format!("{}SO-3,1,x@example.com\n", &CSV[..CSV.len() - 2]),
        ),
    ]
}

#[test]
fn ndjson_lines_are_masked_as_json_records_are_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        let (_, status, one) = get(&pki, "reporting", &[proto], &mg.url("/orders/SO-1"));
        assert_eq!(status, "200", "{proto}: {one}");
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/ndjson"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert_eq!(body, format!("{one}\n{one}\n"), "{proto}");
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/jsonl"));
        assert_eq!(status, "200", "{proto}: {body}");
        assert_eq!(body, format!("{one}\r\n\r\n{one}"), "{proto}");
        assert!(!body.contains("ana@example.com") && !body.contains("Ring 1"));
    }
}

#[test]
fn csv_columns_are_masked_by_the_header_row_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up).start();
    let want = format!(
        "id,amount,customer_email,customer_phone,customer_since,note\r\nSO-1,12.50,{},***********4567,2019,\"hi, \"\"there\"\"\"\r\nSO-2,3,{},,2021,\r\n",
        pseudonym(KEY, "ana@example.com"),
        pseudonym(KEY, "bo@example.com"),
    );
    for proto in PROTOCOLS {
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/csv"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert_eq!(body, want, "{proto}");
        // The owning domain sees the personal columns as sent.
        let (_, _, body) = get(&pki, "orders", &[proto], &mg.url("/orders/csv"));
        assert_eq!(body, CSV, "{proto}");
    }
}

#[test]
fn what_cannot_be_masked_in_ndjson_or_csv_is_never_sent_whole() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    for proto in PROTOCOLS {
        // Columns without names: refused before the head.
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/headless"));
        assert_eq!(status, "502", "{proto}: {body}");
        assert!(body.contains("unmaskable_response"), "{proto}: {body}");
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
        for path in [
            "/orders/nested",
            "/orders/ndjson-broken",
            "/orders/csv-broken",
        ] {
            let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url(path));
            assert_ne!(
                code, 0,
                "{proto} {path}: a cut body looked complete: {status} {body}"
            );
            for secret in ["ana@example.com", "Ring 1", "x@example.com"] {
                assert!(!body.contains(secret), "{proto} {path}: {body}");
            }
        }
    }
    for path in [
        "/orders/nested",
        "/orders/ndjson-broken",
        "/orders/csv-broken",
    ] {
        for event in events_of_path(&mg, &trail, path, 2) {
            assert_eq!(event["error"], "unmaskable_response", "{event}");
            assert_eq!(event["complete"], false, "{event}");
        }
    }
}

/// A record with members the contract does not declare, at every level.
const EXTRA: &str = r#"{"id": "SO-1", "note": "n", "shipping": {"city": "K", "zip": "5"}, "lines": [{"sku": "X", "qty": 2}]}"#;
const EXTRA_CSV: &str = "id,note,amount\nSO-1,n,3\n";

/// A masked sidecar in `dir` whose orders contract sets
/// `meshgateUndeclared: mode`.
fn undeclared(pki: &Pki, up: &FixedUpstream, dir: &str, mode: &str) -> Meshgate {
    let dir = pki.path(dir);
    let sidecar = masked_in(pki, up, &dir, KEY);
    let contract = dir.join("policies/domains/sales/orders.odcs.yaml");
    let mut text = std::fs::read_to_string(&contract).expect("read");
    text.push_str(&format!(
        "  - property: meshgateUndeclared\n    value: {mode}\n"
    ));
    std::fs::write(&contract, text).expect("write");
    sidecar.start()
}

#[test]
fn undeclared_fields_pass_are_removed_or_refuse_the_response() {
    let pki = Pki::new();
    let up = FixedUpstream::start(vec![
        ("/orders/extra", "application/json", EXTRA.into()),
        ("/orders/extra.csv", "text/csv", EXTRA_CSV.into()),
    ]);
    let omit = undeclared(&pki, &up, "omit", "omit");
    let refuse = undeclared(&pki, &up, "refuse", "refuse");
    let pass = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        // This record holds nothing sales may not see: only the mode changes
        // it (the plan still rewrites it, without the spaces between members).
        let (_, _, body) = get(&pki, "orders", &[proto], &pass.url("/orders/extra"));
        let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("JSON");
        assert_eq!(json(&body), json(EXTRA), "{proto}: passed");
        let (_, _, body) = get(&pki, "orders", &[proto], &omit.url("/orders/extra"));
        assert_eq!(
            body, r#"{"id":"SO-1","shipping":{"city":"K"},"lines":[{"sku":"X"}]}"#,
            "{proto}"
        );
        let (_, _, body) = get(&pki, "orders", &[proto], &omit.url("/orders/extra.csv"));
        assert_eq!(body, "id,amount\nSO-1,3\n", "{proto}");
        for path in ["/orders/extra", "/orders/extra.csv"] {
            let (code, status, body) = get(&pki, "orders", &[proto], &refuse.url(path));
            assert_ne!(code, 0, "{proto} {path}: {status} {body}");
            assert!(!body.contains("\"n\"") && !body.contains(",n,"), "{body}");
        }
    }
}

/// What an upstream sends around a body that is masked: a wrong
/// `Content-Length: 0` beside a chunked body is not taken for an empty
/// body (the records are masked), the upstream's trailers (a digest of the
/// unmasked bytes) are not sent after a rewritten body, and a shared
/// cache is told the body is this caller's own. Bodies whose columns or
/// charset are not what the scanner reads are refused, whatever their
/// type's parameters say.
#[test]
fn around_a_masked_body_nothing_of_the_upstreams_bytes_passes() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up).start();
    let (_, _, want) = get(&pki, "reporting", &["--http1.1"], &mg.url("/orders/SO-1"));
    assert!(!want.contains("ana@example.com"), "{want}");
    for proto in PROTOCOLS {
        let reply = fetch(&pki, "reporting", &[proto], &mg.url("/orders/chunked"));
        assert_eq!(reply.status, "200", "{proto}: {reply:?}");
        assert_eq!(reply.body, want, "{proto}");
        for name in ["content-length", "content-digest", "x-secret"] {
            assert_eq!(reply.header(name), None, "{proto}: {reply:?}");
        }
        // (curl's -D writes trailers as a last block: `header` reads it.)
        assert!(!reply.body.contains("trailer-secret"), "{proto}");
        assert_eq!(
            reply.header("cache-control"),
            Some("max-age=600, private"),
            "{proto}"
        );
        // Known from the head: 502.
        for path in ["/orders/quoted-absent", "/orders/utf16"] {
            let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url(path));
            assert_eq!(status, "502", "{proto} {path}: {body}");
            assert!(!body.contains("ana@example.com"), "{proto} {path}: {body}");
        }
        // Known from the header row, after the head: the transfer fails.
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/semicolons"));
        assert_ne!(
            code, 0,
            "{proto}: a cut body looked complete: {status} {body}"
        );
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
    }
}
