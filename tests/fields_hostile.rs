//! Field masking against a product server that is compromised or buggy,
//! through the real binary and curl over HTTP/1.1 and HTTP/2: a hidden
//! field under a name written otherwise (` customer_email` after a `, `
//! CSV separator, `Customer_Email`, `customerEmail`), an error or redirect
//! page echoing a record, an unsolicited 304 with the unmasked body's
//! validator, and the cache headers of an answer that is one caller's
//! own. Nothing hidden reaches a caller it is hidden from, and no shared
//! cache may keep one caller's answer for another.

mod common;

use common::fields::{get, masked, pseudonym, KEY, RECORD};
use common::json_upstream::FixedUpstream;
use common::reply::fetch;
use common::trail::{event_of, events_of_path};
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

/// Error and redirect answers holding a record, as a framework's debug
/// page or a careless handler sends them.
fn error_pages() -> Vec<(&'static str, &'static str, String)> {
    let json_404 = r#"{"error": "gone", "customer_email": "ana@example.com"}"#.to_string();
    vec![
        (
            "/orders/crash",
            "500 Internal Server Error\r\ncontent-type: text/plain\r\ncache-control: public, max-age=60\r\n",
            RECORD.to_string(),
        ),
        (
            "/orders/moved",
            "302 Found\r\ncontent-type: text/plain\r\nlocation: /orders/SO-2\r\n",
            RECORD.to_string(),
        ),
        (
            "/orders/debug",
            "500 Internal Server Error\r\ncontent-type: text/html; charset=iso-8859-1\r\ncontent-language: en\r\n",
            format!("<html><pre>{RECORD}</pre></html>"),
        ),
        (
            "/orders/utf16",
            "404 Not Found\r\ncontent-type: application/json; charset=utf-16\r\n",
            RECORD.to_string(),
        ),
        (
            "/orders/missing",
            "404 Not Found\r\ncontent-type: application/json\r\n",
            json_404,
        ),
    ]
}

#[test]
fn an_error_or_redirect_whose_body_cannot_be_masked_keeps_its_status_not_its_body() {
    let pki = Pki::new();
    let up = FixedUpstream::start_raw(error_pages());
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    for proto in PROTOCOLS {
        for (path, status) in [
            ("/orders/crash", "500"),
            ("/orders/moved", "302"),
            ("/orders/debug", "500"),
        ] {
            let r = fetch(&pki, "reporting", &[proto], &mg.url(path));
            assert_eq!(r.status, status, "{proto} {path}: {r:?}");
            for secret in SECRETS {
                assert!(!r.body.contains(secret), "{proto} {path}: {r:?}");
            }
            let body = r.json();
            assert_eq!(body["error"], "body_withheld", "{proto} {path}: {r:?}");
            assert_eq!(body["request_id"], r.request_id(), "{proto} {path}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("content-language"), None, "{proto} {path}");
            let cache = match path {
                "/orders/crash" => "max-age=60, private",
                _ => "private",
            };
            assert_eq!(r.header("cache-control"), Some(cache), "{proto} {path}");
            let event = event_of(&mg, &trail, r.request_id());
            assert_eq!(event["error"], "body_withheld", "{event}");
            assert_eq!(event["decision"], "allow", "{event}");
            assert_eq!(event["status"].to_string(), status, "{event}");
        }
        let r = fetch(&pki, "reporting", &[proto], &mg.url("/orders/moved"));
        assert_eq!(r.header("location"), Some("/orders/SO-2"), "{proto}: {r:?}");
        // A JSON error is masked as a record is.
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/missing"));
        assert_eq!(status, "404", "{proto}: {body}");
        assert!(
            body.contains(&pseudonym(KEY, "ana@example.com")),
            "{proto}: {body}"
        );
        // Nothing is hidden from this caller: the page passes as sent.
        let mut args = vec![proto];
        args.extend(SEES_ALL);
        let (_, status, body) = get(&pki, "orders", &args, &mg.url("/orders/crash"));
        assert_eq!((status.as_str(), body.as_str()), ("500", RECORD), "{proto}");
    }
    let withheld =
        "meshgate_fields_withheld_bodies_total{product=\"sales.orders\",dataset=\"orders\"}";
    // Three per protocol, and the redirect's second look.
    assert_eq!(mg.metric(withheld), 8.0, "{}", mg.metrics());
}

#[test]
fn a_record_type_in_a_charset_it_cannot_read_is_refused_whatever_the_status() {
    let pki = Pki::new();
    let up = FixedUpstream::start_raw(error_pages());
    let mg = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        let (_, status, body) = get(&pki, "reporting", &[proto], &mg.url("/orders/utf16"));
        assert_eq!(status, "502", "{proto}: {body}");
        assert!(body.contains("unmaskable_response"), "{proto}: {body}");
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
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
