//! A product version's lifecycle on the wire, through the real binary and
//! curl: the response stage adds `Deprecation` (RFC 9745), `Sunset` (RFC
//! 8594) and `Link` headers to every response of a deprecated version, and
//! a contract whose lifecycle does not hold together is refused at load.

mod common;

use common::*;

/// A sidecar on the example tree with the sales orders contract made a
/// deprecated version: `status`, `endOfSupport`/`endOfLife` and the custom
/// properties inserted into the contract as committed.
fn deprecate_orders(pki: &Pki, upstream: &str, end_of_support: &str, end_of_life: &str) -> Sidecar {
    let sidecar = Meshgate::builder(pki, upstream).policies();
    let path = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&path).expect("read contract");
    let text = text
        .replace("\nstatus: active\n", "\nstatus: deprecated\n")
        .replace(
            "slaProperties:\n",
            &format!(
                "slaProperties:\n  - {{ property: endOfSupport, value: \"{end_of_support}\" }}\n  - {{ property: endOfLife, value: \"{end_of_life}\" }}\n"
            ),
        )
        .replace(
            "customProperties:\n",
            "customProperties:\n  - property: successorVersion\n    value: /v2/orders\n  - property: deprecationLink\n    value: https://docs.example/sales/orders/v1-deprecation\n",
        );
    assert!(text.contains("status: deprecated") && text.contains("successorVersion"));
    std::fs::write(&path, text).expect("write contract");
    sidecar
}

/// The response headers of one request (`curl -D -`), lower-cased names.
fn headers(pki: &Pki, args: &[&str], url: &str) -> Vec<(String, String)> {
    let mut all = vec!["-o", "/dev/null", "-D", "-"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(pki, Some("reporting"), &all);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

#[test]
fn responses_of_a_deprecated_version_carry_deprecation_sunset_and_links() {
    let pki = Pki::new();
    pki.client(
        "campaigns",
        Leaf::client_spiffe("spiffe://mesh.local/ns/marketing/sa/campaigns"),
    );
    let up = Upstream::start();
    // Deprecated in the past, sunset in the future: it still answers.
    let mg = deprecate_orders(&pki, &up.url(), "2026-01-01", "2099-06-30T12:00:00Z").start();

    for (args, proto) in [
        (&["--http1.1"][..], "HTTP/1.1"),
        (&["--http2"][..], "HTTP/2"),
        (&["-I"][..], "HEAD"),
    ] {
        let h = headers(&pki, args, &mg.url("/orders"));
        let ctx = format!("{proto}: {h:?}");
        // RFC 9745: a structured-field Date, `@` and Unix seconds.
        assert_eq!(header_values(&h, "deprecation"), ["@1767225600"], "{ctx}");
        // RFC 8594: an IMF-fixdate.
        assert_eq!(
            header_values(&h, "sunset"),
            ["Tue, 30 Jun 2099 12:00:00 GMT"],
            "{ctx}"
        );
        assert_eq!(
            header_values(&h, "link"),
            [
                "<https://docs.example/sales/orders/v1-deprecation>; rel=\"deprecation\"",
                "</v2/orders>; rel=\"successor-version\"",
            ],
            "{ctx}"
        );
    }

    // The three requests above to the deprecated version; per-consumer
    // series are off by default, so no consumer label.
    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_deprecated_requests_total{product=\"sales.orders\",version=\"2.0.0\"}"
        ),
        3.0,
        "{m}"
    );
    assert!(!m.contains(REPORTING), "no consumer named: {m}");

    // The same node's other products announce nothing.
    let h = headers(&pki, &[], &mg.url("/customers"));
    assert!(
        header_values(&h, "deprecation").is_empty() && header_values(&h, "sunset").is_empty(),
        "{h:?}"
    );
    // A refusal is meshgate's own answer, not a response of the version.
    let out = curl(
        &pki,
        Some("campaigns"),
        &["-o", "/dev/null", "-D", "-", &mg.url("/orders")],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.lines().next().is_some_and(|l| l.contains(" 403")),
        "{text}"
    );
    assert!(!text.contains("deprecation:"), "{text}");
}

/// The example tree as committed: version 1 of orders (`/v1/orders`,
/// `sales.orders.v1`) is deprecated, version 2 (`/orders`) is active.
#[test]
fn the_example_version_1_carries_its_lifecycle_and_only_its_existing_consumer_reads_it() {
    let pki = Pki::new();
    pki.client(
        "planner",
        Leaf::client_spiffe("spiffe://mesh.local/ns/logistics/sa/planner"),
    );
    let up = Upstream::start();
    // Who still calls it, with per-consumer series on.
    let mg = Meshgate::builder(&pki, &up.url())
        .policies()
        .extra("metrics:\n  consumer_label: service\n")
        .start();

    assert_eq!(
        status_of(&pki, Some("reporting"), &mg.url("/v1/orders")),
        "200"
    );
    let h = headers(&pki, &[], &mg.url("/v1/orders/SO-1001"));
    // 2026-06-30 and 2030-12-31, midnight UTC.
    assert_eq!(header_values(&h, "deprecation"), ["@1782777600"], "{h:?}");
    assert_eq!(
        header_values(&h, "sunset"),
        ["Tue, 31 Dec 2030 00:00:00 GMT"],
        "{h:?}"
    );
    assert_eq!(
        header_values(&h, "link"),
        [
            "<https://docs.acme.example/sales/orders/v1-deprecation>; rel=\"deprecation\"",
            "</orders>; rel=\"successor-version\"",
        ],
        "{h:?}"
    );
    // Version 2 announces nothing.
    let h = headers(&pki, &[], &mg.url("/orders"));
    assert!(
        header_values(&h, "deprecation").is_empty() && header_values(&h, "link").is_empty(),
        "{h:?}"
    );
    // A consumer granted version 2 is not one of version 1's.
    assert_eq!(status_of(&pki, Some("planner"), &mg.url("/orders")), "200");
    assert_eq!(
        status_of(&pki, Some("planner"), &mg.url("/v1/orders")),
        "403"
    );

    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            &format!("meshgate_deprecated_requests_total{{product=\"sales.orders.v1\",version=\"1.2.0\",consumer=\"{REPORTING}\"}}")
        ),
        2.0,
        "{m}"
    );
    assert!(
        !m.contains("meshgate_deprecated_requests_total{product=\"sales.orders\","),
        "{m}"
    );
}

#[test]
fn a_lifecycle_that_does_not_hold_together_is_refused_with_its_file_and_field() {
    let pki = Pki::new();
    for (support, life, field, why) in [
        (
            "2027-01-01",
            "2026-06-30",
            "slaProperties.endOfLife",
            "before endOfSupport",
        ),
        (
            "30/06/2027",
            "2028-01-01",
            "slaProperties.endOfSupport",
            "not an RFC 3339 date",
        ),
    ] {
        let sidecar = deprecate_orders(&pki, "http://127.0.0.1:8080", support, life);
        for (cmd, err) in sidecar.refusals("bad.yaml") {
            assert!(
                err.contains("domains/sales/orders.odcs.yaml")
                    && err.contains(field)
                    && err.contains(why),
                "{cmd}: {err}"
            );
        }
    }
}

#[test]
fn a_version_past_its_end_of_life_answers_410_naming_its_successor_audited_and_counted() {
    let pki = Pki::new();
    pki.client(
        "campaigns",
        Leaf::client_spiffe("spiffe://mesh.local/ns/marketing/sa/campaigns"),
    );
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mut mg = deprecate_orders(&pki, &up.url(), "2020-01-01", "2021-01-01")
        .audit_file(&audit)
        .start();

    let out = curl(
        &pki,
        Some("reporting"),
        &["-D", "-", "--http1.1", &mg.url("/orders")],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 410"), "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nlink: </v2/orders>; rel=\"successor-version\""),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error"], "gone");
    assert_eq!(v["successor"], "/v2/orders");
    assert_eq!(
        up.count(),
        0,
        "nothing of a retired version reaches the upstream"
    );

    // A caller the policies refuse learns nothing about the version.
    let out = curl(
        &pki,
        Some("campaigns"),
        &["-o", "/dev/null", "-w", "%{http_code}", &mg.url("/orders")],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");

    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_requests_total{product=\"sales.orders\",action=\"read\",decision=\"retired\",class=\"4xx\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(mg.terminate().success());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let gone: Vec<_> = events.iter().filter(|e| e["status"] == 410).collect();
    assert_eq!(gone.len(), 1, "{events:?}");
    assert_eq!(gone[0]["decision"], "retired");
    assert_eq!(gone[0]["error"], "gone");
    assert_eq!(gone[0]["product"], "sales.orders");
}
