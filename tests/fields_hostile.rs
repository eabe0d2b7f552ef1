//! Field masking against a product server that is compromised or buggy,
//! through the real binary and curl over HTTP/1.1 and HTTP/2: a hidden
//! field under a name written otherwise (` customer_email` after a `, `
//! CSV separator, `Customer_Email`, `customerEmail`), an unsolicited 304
//! with the unmasked body's validator, and the cache headers of an answer
//! that is one caller's own. Nothing hidden reaches a caller it is hidden
//! from, and no shared cache may keep one caller's answer for another.

mod common;

use common::fields::{get, masked, pseudonym, KEY, RECORD};
use common::json_upstream::FixedUpstream;
use common::reply::fetch;
use common::trail::events_of_path;
use common::*;

const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2"];

const SECRETS: [&str; 3] = ["ana@example.com", "1234567", "Ring 1"];

/// The caller args that make the orders plan hide nothing (sales, with a
/// purpose the product allows).
const SEES_ALL: [&str; 2] = ["-H", "x-data-purpose: reporting"];

/// Bodies that name a hidden field otherwise than the contract does.
fn written_otherwise() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "/orders/spaced.csv",
            "text/csv",
            "id, customer_email, customer_phone\r\nSO-1, ana@example.com, +49 170 1234567\r\n".into(),
        ),
        (
            "/orders/cased.csv",
            "text/csv",
            "id,Customer_Email\nSO-1,ana@example.com\n".into(),
        ),
        (
            "/orders/near",
            "application/json",
            r#"{"id":"SO-1","customer_email ":"ana@example.com","Customer_Email":"ana@example.com"}"#.into(),
        ),
        (
            "/orders/camel",
            "application/json",
            r#"[{"id": "SO-1", "customerEmail": "ana@example.com"}]"#.into(),
        ),
        (
            "/orders/nested",
            "application/json",
            r#"{"id": "SO-1", "shipping": {"city": "Köln", "Street": "Ring 1"}}"#.into(),
        ),
        (
            "/orders/lines",
            "application/x-ndjson",
            format!("{RECORD}\n{{\"id\": \"SO-2\", \"CUSTOMER_PHONE\": \"+49 170 1234567\"}}\n"),
        ),
        // A JSON escape is decoded before the name is matched: this is
        // the declared name, masked.
        (
            "/orders/escaped",
            "application/json",
            r#"{"id": "SO-1", "customer\u005femail": "ana@example.com"}"#.into(),
        ),
    ]
}

#[test]
fn a_hidden_field_under_a_name_written_otherwise_cuts_the_response_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(written_otherwise());
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    let cut = [
        "/orders/spaced.csv",
        "/orders/cased.csv",
        "/orders/near",
        "/orders/camel",
        "/orders/nested",
        "/orders/lines",
    ];
    for proto in PROTOCOLS {
        for path in cut {
            let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url(path));
            assert_ne!(
                code, 0,
                "{proto} {path}: a cut body looked complete: {status} {body}"
            );
            for secret in SECRETS {
                assert!(!body.contains(secret), "{proto} {path}: {body}");
            }
        }
        let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/escaped"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
        let pseudonym = pseudonym(KEY, "ana@example.com");
        assert!(body.contains(&pseudonym), "{proto}: {body}");
        // A caller the plan hides nothing from reads them as sent.
        let mut args = vec![proto];
        args.extend(SEES_ALL);
        for (path, _, sent) in written_otherwise() {
            let (code, status, body) = get(&pki, "orders", &args, &mg.url(path));
            assert_eq!((code, status.as_str()), (0, "200"), "{proto} {path}");
            assert_eq!(body, sent, "{proto} {path}");
        }
    }
    for path in cut {
        let events = events_of_path(&mg, &trail, path, 4);
        let (sales, others): (Vec<_>, Vec<_>) = events
            .iter()
            .partition(|e| e["principal"]["id"] == common::fields::ORDERS);
        assert_eq!((sales.len(), others.len()), (2, 2), "{path}: {events:?}");
        for event in others {
            assert_eq!(event["error"], "unmaskable_response", "{event}");
            assert_eq!(event["complete"], false, "{event}");
        }
    }
}

/// Upstream answers with the cache headers of a public, shared answer.
fn cacheable() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "/orders/SO-1",
            "200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=600\r\netag: \"unmasked-v1\"\r\nvary: Accept-Encoding\r\ncdn-cache-control: max-age=600\r\n",
            RECORD.to_string(),
        ),
        (
            "/orders/not-modified",
            "304 Not Modified\r\netag: \"unmasked-v1\"\r\ncache-control: public, max-age=999\r\n",
            String::new(),
        ),
        (
            "/orders/no-content",
            "204 No Content\r\netag: \"unmasked-v1\"\r\ncache-control: public, s-maxage=999\r\nvary: *\r\n",
            String::new(),
        ),
    ]
}

const VARY: &str = "Accept-Encoding, Authorization, X-Data-Purpose";

#[test]
fn an_answer_the_plan_hides_nothing_from_is_kept_from_shared_caches_too() {
    let pki = Pki::new();
    let up = FixedUpstream::start_raw(cacheable());
    let mg = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        // Nothing hidden from this caller: the body and its validator are
        // the upstream's, but the answer is this caller's own.
        let mut args = vec![proto];
        args.extend(SEES_ALL);
        let r = fetch(&pki, "orders", &args, &mg.url("/orders/SO-1"));
        assert_eq!(r.status, "200", "{proto}: {r:?}");
        assert_eq!(r.body, RECORD, "{proto}");
        let cache = r.header("cache-control");
        assert_eq!(cache, Some("max-age=600, private"), "{proto}: {r:?}");
        assert_eq!(r.header("etag"), Some("\"unmasked-v1\""), "{proto}: {r:?}");
        assert_eq!(r.header("vary"), Some(VARY), "{proto}: {r:?}");
        assert_eq!(r.header("cdn-cache-control"), None, "{proto}: {r:?}");
        // Masked: neither the validator of the unmasked bytes.
        let r = fetch(&pki, "reporting", &[proto], &mg.url("/orders/SO-1"));
        assert!(!r.body.contains("ana@example.com"), "{proto}: {r:?}");
        let cache = r.header("cache-control");
        assert_eq!(cache, Some("max-age=600, private"), "{proto}: {r:?}");
        assert_eq!(r.header("etag"), None, "{proto}: {r:?}");
        assert_eq!(r.header("vary"), Some(VARY), "{proto}: {r:?}");
    }
}

#[test]
fn an_unsolicited_304_or_204_on_a_masked_route_loses_the_unmasked_bodys_validator() {
    let pki = Pki::new();
    let up = FixedUpstream::start_raw(cacheable());
    let mg = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        let r = fetch(&pki, "reporting", &[proto], &mg.url("/orders/not-modified"));
        assert_eq!(r.status, "304", "{proto}: {r:?}");
        assert_eq!(r.header("etag"), None, "{proto}: {r:?}");
        let cache = r.header("cache-control");
        assert_eq!(cache, Some("max-age=999, private"), "{proto}: {r:?}");
        let vary = r.header("vary");
        assert_eq!(
            vary,
            Some("Authorization, X-Data-Purpose"),
            "{proto}: {r:?}"
        );
        let r = fetch(&pki, "reporting", &[proto], &mg.url("/orders/no-content"));
        assert_eq!(r.status, "204", "{proto}: {r:?}");
        assert_eq!(r.header("etag"), None, "{proto}: {r:?}");
        assert_eq!(r.header("cache-control"), Some("private"), "{proto}: {r:?}");
        assert_eq!(r.header("vary"), Some("*"), "{proto}: {r:?}");
    }
}
