//! "Only requests that policy allows take from the bucket", through the real
//! binary: a consumer whose tier holds one request sends requests that policy
//! denies and requests that are shed at the product's and at the sidecar's
//! in-flight limit, and its one request still passes afterwards; the next is
//! 429, so the bucket was there, full, all along.

mod common;

use std::process::{Child, Stdio};

use common::held::HeldUpstream;
use common::reply::{fetch, Reply};
use common::*;

const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

/// `reporting` holds one request an hour on sales.orders; the product takes
/// one request at a time, the sidecar two. The ETL (sales' own service) has
/// the contract's tier, a bucket of its own.
const QUOTAS: &str = r#"quotas:
  tiers:
    one: { rate: 1/h, burst: 1 }
  products:
    sales.orders:
      max_in_flight: 1
      consumers:
        - { id: "spiffe://mesh.local/ns/finance/sa/reporting", tier: one }
"#;

/// A GET running in the background (curl, bounded by its own `--max-time`).
fn spawn_get(pki: &Pki, who: &str, url: &str) -> Child {
    curl_command(pki, Some(who), &["-w", "\n%{http_code}", url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs")
}

/// The status a background GET ended with.
fn status_of_child(child: Child) -> String {
    // curl's own --max-time ends it; the deadline only guards against that failing.
    let out = output_of(child, EXIT_DEADLINE, "curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.rsplit_once('\n')
        .map(|(_, s)| s.to_string())
        .unwrap_or(text)
}

fn shed(mg: &Meshgate, scope: &str) -> f64 {
    mg.metric(&format!("meshgate_load_shed_total{{scope=\"{scope}\"}}"))
}

fn assert_overloaded(r: &Reply) {
    assert_eq!(r.status, "503", "{r:?}");
    assert_eq!(r.json()["error"], "overloaded", "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(r.header("ratelimit"), None, "{r:?}");
}

#[test]
fn denied_and_shed_requests_take_nothing_from_the_bucket() {
    let pki = Pki::with_clients(&[("etl", SALES_ETL)]);
    let up = HeldUpstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .limit("max_in_flight: 2")
        .extra(QUOTAS)
        .start();
    let orders = mg.url("/orders");
    let reporting = |args: &[&str], url: &str| fetch(&pki, "reporting", args, url);

    // Denied by policy (finance may not write sales' orders): 403, three times.
    for _ in 0..3 {
        let r = reporting(&["-X", "POST", "-d", "{}"], &orders);
        assert_eq!(r.status, "403", "{r:?}");
    }
    assert_eq!(
        mg.metric("meshgate_authorization_decisions_total{decision=\"deny\"}"),
        3.0
    );

    // Shed at the product's limit: the ETL's request is held upstream, so
    // reporting's (allowed by policy) find the product full.
    let etl = spawn_get(&pki, "etl", &orders);
    assert_eq!(up.wait_arrival(), "/orders");
    for _ in 0..3 {
        assert_overloaded(&reporting(&[], &orders));
    }
    assert_eq!(shed(&mg, "product"), 3.0);
    assert_eq!(
        mg.metric("meshgate_authorization_decisions_total{decision=\"allow\"}"),
        4.0,
        "reporting's shed requests were allowed by policy first"
    );

    // Shed at the sidecar's limit: a second held request (reporting's, to
    // another product: sales.orders.v1) fills it, before any routing.
    let v1 = spawn_get(&pki, "reporting", &mg.url("/v1/orders"));
    assert_eq!(up.wait_arrival(), "/v1/orders");
    for _ in 0..3 {
        assert_overloaded(&reporting(&[], &orders));
    }
    assert_eq!(shed(&mg, "global"), 3.0);

    up.release(2);
    assert_eq!(status_of_child(etl), "200");
    assert_eq!(status_of_child(v1), "200");

    // The one request reporting's bucket holds is still there...
    up.release(1);
    let r = reporting(&[], &orders);
    assert_eq!(r.status, "200", "{r:?}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"one\";q=1;w=3600"));
    let left = r.header("ratelimit").unwrap_or_default();
    assert!(left.starts_with("\"one\";r=0;t="), "{left}");
    // ... and it was the only one: the bucket exists and is now empty.
    let r = reporting(&[], &orders);
    assert_eq!(r.status, "429", "{r:?}");
    assert_eq!(r.json()["error"], "quota_exceeded");
    assert_eq!(
        mg.metric("meshgate_quota_rejections_total{product=\"sales.orders\",tier=\"one\"}"),
        1.0
    );
}
