//! Field-level access on the wire, through the real binary and curl: the
//! orders contract declares personal fields (an e-mail hashed, a phone cut
//! to its last four digits, a nested street removed) and a restricted one
//! in an array (redacted); a sales-domain `read_field` forbid hides the
//! personal ones from callers outside sales. The product's server answers
//! fixed JSON bodies.

mod common;

use common::json_upstream::FixedUpstream;
use common::*;

const FIELDS: &str = "      - { name: placed_at, logicalType: date }
      - name: customer_email
        logicalType: string
        tags: [pii]
        customProperties:
          - { property: meshgateMask, value: hash }
      - name: customer_phone
        logicalType: string
        customProperties:
          - { property: pii, value: true }
          - { property: meshgateMask, value: last4 }
      - name: shipping
        logicalType: object
        properties:
          - { name: city, logicalType: string }
          - { name: street, logicalType: string, tags: [pii] }
      - name: lines
        logicalType: array
        items:
          logicalType: object
          properties:
            - { name: sku, logicalType: string }
            - { name: unit_cost, logicalType: number, classification: restricted, customProperties: [{ property: meshgateMask, value: redact }] }
";

const FORBID: &str = r#"@id("sales.orders.pii-for-sales-only")
forbid (principal, action == Mesh::Action::"read_field", resource in Mesh::Dataset::"sales.orders/orders")
when { resource.pii }
unless { principal in Mesh::Domain::"sales" };
"#;

const RECORD: &str = r#"{"id": "SO-1", "amount": 12.50, "customer_email": "ana@example.com", "customer_phone": "+49 170 1234567", "shipping": {"city": "Köln", "street": "Ring 1"}, "lines": [{"sku": "X-1", "unit_cost": 3.25}]}"#;

/// A sidecar on the example tree with the fields above declared, the
/// forbid added and a hash key; `reporting` (finance) and `orders` (sales).
fn masked(pki: &Pki, up: &impl Target) -> Meshgate {
    pki.client(
        "orders",
        Leaf::client_spiffe("spiffe://mesh.local/ns/sales/sa/order-service"),
    );
    let sidecar = Meshgate::builder(pki, up).policies();
    let contract = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&contract).expect("read contract");
    let text = text.replace("      - { name: placed_at, logicalType: date }\n", FIELDS);
    assert!(text.contains("customer_email"));
    std::fs::write(&contract, text).expect("write contract");
    pki.write("policies/domains/sales/fields.cedar", FORBID);
    pki.write("hash.key", "0123456789abcdef0123456789abcdef-test-key");
    let key = pki.path("hash.key");
    sidecar
        .extra(&format!("fields:\n  hash_key_file: {}\n", key.display()))
        .start()
}

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

/// (curl's exit code, status, body) of one GET as `who`.
fn get(pki: &Pki, who: &str, proto: &str, url: &str) -> (i32, String, String) {
    let out = curl(pki, Some(who), &[proto, "-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        status.to_string(),
        body.to_string(),
    )
}

const MASKED: &str = r#"{"id":"SO-1","amount":12.50,"customer_email":"hmac-sha256:"#;

#[test]
fn personal_fields_are_masked_for_callers_outside_the_domain_over_h1_and_h2() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up);
    let mut seen_hash = None;
    for proto in ["--http1.1", "--http2"] {
        let (code, status, body) = get(&pki, "reporting", proto, &mg.url("/orders/SO-1"));
        assert_eq!((code, status.as_str()), (0, "200"), "{proto}: {body}");
        assert!(body.starts_with(MASKED), "{proto}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["customer_phone"], "***********4567", "{proto}");
        assert_eq!(
            v["shipping"],
            serde_json::json!({"city": "Köln"}),
            "{proto}"
        );
        // Restricted without a declared purpose: redacted to a number.
        assert_eq!(
            v["lines"],
            serde_json::json!([{"sku": "X-1", "unit_cost": 0}])
        );
        // The same value pseudonymises the same way on every request.
        let hash = v["customer_email"].as_str().map(str::to_string);
        assert!(seen_hash.is_none() || seen_hash == hash);
        seen_hash = hash;
    }
    // An array of records: each is masked; visible values byte for byte.
    let (_, _, body) = get(&pki, "reporting", "--http2", &mg.url("/orders/list"));
    assert_eq!(body.matches(MASKED).count(), 2, "{body}");
    assert!(!body.contains("ana@example.com") && !body.contains("Ring 1"));

    // The owning domain sees personal fields; a purpose the product
    // allows unlocks the restricted cost.
    let (_, _, body) = get(&pki, "orders", "--http1.1", &mg.url("/orders/SO-1"));
    assert!(
        body.contains("ana@example.com") && body.contains("Ring 1"),
        "{body}"
    );
    assert!(body.contains(r#""unit_cost":0"#), "{body}");
    let out = curl(
        &pki,
        Some("orders"),
        &["-H", "x-data-purpose: reporting", &mg.url("/orders/SO-1")],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains(r#""unit_cost": 3.25"#), "{body}");
}

#[test]
fn what_cannot_be_masked_is_never_sent() {
    let pki = Pki::new();
    let up = FixedUpstream::start(bodies());
    let mg = masked(&pki, &up);
    for proto in ["--http1.1", "--http2"] {
        // Not JSON on a masked route: 502 before any of it is sent.
        let (_, status, body) = get(&pki, "reporting", proto, &mg.url("/orders/text"));
        assert_eq!(status, "502", "{proto}: {body}");
        assert!(body.contains("unmaskable_response"), "{proto}: {body}");
        assert!(!body.contains("customer_email"), "{proto}: {body}");
        // Invalid JSON after the head: the transfer fails, never a whole body.
        let (code, status, body) = get(&pki, "reporting", proto, &mg.url("/orders/broken"));
        assert_ne!(
            code, 0,
            "{proto}: a cut body looked complete: {status} {body}"
        );
        assert!(!body.contains("ana@example.com"), "{proto}: {body}");
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
    let mg = masked(&pki, &up);
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
    let mg = masked(&pki, &recording);
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
