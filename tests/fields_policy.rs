//! Field policies through the real binary: a reload changes the next
//! response's field plan, a shadow set's field plans are compared with the
//! enforced ones (counted, logged and audited where they differ, never
//! applied), and `meshgate test` cases assert which fields a caller's plan
//! hides and which it leaves visible.

mod common;

use std::process::Command;

use common::fields::{get, masked, MASKED, RECORD};
use common::json_upstream::FixedUpstream;
use common::*;

/// The sales domain's field rule after the reload: personal fields are
/// visible to finance again, the amount is not.
const AMOUNT_FOR_SALES_ONLY: &str = r#"@id("sales.orders.amount-for-sales-only")
forbid (principal, action == Mesh::Action::"read_field", resource in Mesh::Dataset::"sales.orders/orders")
when { resource.name == "amount" }
unless { principal in Mesh::Domain::"sales" };
"#;

#[test]
fn a_policy_reload_changes_the_plan_of_the_next_request() {
    let pki = Pki::new();
    let up = FixedUpstream::start(vec![("/orders/SO-1", "application/json", RECORD.into())]);
    let mg = masked(&pki, &up).start();
    let url = mg.url("/orders/SO-1");
    let (_, status, body) = get(&pki, "reporting", &["--http2"], &url);
    assert_eq!(status, "200", "{body}");
    assert!(body.starts_with(MASKED), "{body}");

    pki.write("policies/domains/sales/fields.cedar", AMOUNT_FOR_SALES_ONLY);
    mg.wait_metric("meshgate_policy_reloads_total{result=\"ok\"}", 1.0);
    for proto in ["--http1.1", "--http2"] {
        let (_, status, body) = get(&pki, "reporting", &[proto], &url);
        assert_eq!(status, "200", "{proto}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["customer_email"], "ana@example.com", "{proto}: {body}");
        assert_eq!(v["shipping"]["street"], "Ring 1", "{proto}: {body}");
        assert!(v.get("amount").is_none(), "{proto}: {body}");
    }
    // The owning domain is not affected.
    let (_, _, body) = get(&pki, "orders", &[], &url);
    assert!(body.contains(r#""amount":12.50"#), "{body}");
}

const CASES: &str = r#"cases:
  - name: finance sees no personal fields of an order
    principal: spiffe://mesh.local/ns/finance/sa/reporting
    path: /orders/SO-1
    expect:
      decision: allow
      hidden: [customer_email, customer_phone, customer_since, shipping/street, lines/unit_cost]
      visible: [id, amount, shipping, shipping/city, lines, lines/sku]
  - name: sales sees its own customers' contact details
    principal: spiffe://mesh.local/ns/sales/sa/order-service
    path: /orders/SO-1
    expect: { hidden: [lines/unit_cost], visible: [customer_email, shipping/street] }
  - name: an allowed purpose unlocks the restricted cost
    principal: spiffe://mesh.local/ns/sales/sa/order-service
    path: /orders/SO-1
    headers: { x-data-purpose: reporting }
    expect: { visible: [lines/unit_cost] }
  - name: wrongly expects finance to see the e-mail
    principal: spiffe://mesh.local/ns/finance/sa/reporting
    path: /orders/SO-1
    expect: { visible: [customer_email, nickname] }
  - name: wrongly expects a plan for a denied caller
    principal: spiffe://mesh.local/ns/marketing/sa/campaigns
    path: /orders/SO-1
    expect: { hidden: [customer_email] }
"#;

#[test]
fn policy_test_cases_assert_hidden_and_visible_fields() {
    let pki = Pki::new();
    // The sidecar is not started: its builder lays out the policy tree.
    let _ = masked(&pki, "http://127.0.0.1:9");
    let root = pki.path("policies");
    // Only these cases: the example's own expect the example's field rules.
    let tests = root.join("domains/sales/tests");
    std::fs::remove_dir_all(&tests).expect("rm");
    std::fs::create_dir_all(&tests).expect("mkdir");
    std::fs::write(tests.join("fields.test.yaml"), CASES).expect("write");
    let out = output_within(Command::new(bin()).arg("test").arg(&root));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Only failures are listed: the three right cases are not.
    for passed in [
        "finance sees no personal fields of an order",
        "sales sees its own customers' contact details",
        "an allowed purpose unlocks the restricted cost",
    ] {
        assert!(!stdout.contains(passed), "{passed}:\n{stdout}");
    }
    for failed in [
        "wrongly expects finance to see the e-mail: expected `customer_email` visible, it is hidden",
        "`nickname` is not a declared field of sales.orders/orders",
        "wrongly expects a plan for a denied caller: expected a field plan, got none",
    ] {
        assert!(stdout.contains(failed), "{failed}:\n{stdout}");
    }
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 2 failed"), "{stdout}");
}

/// A trial in the shadow set: finance would not see the amount either.
const TRIAL: &str = r#"@id("trial.amount-for-sales-only")
forbid (principal, action == Mesh::Action::"read_field", resource in Mesh::Dataset::"sales.orders/orders")
when { resource.name == "amount" }
unless { principal in Mesh::Domain::"sales" };
"#;

/// The shadow set's sales domain: the policies, grants and contracts of
/// `sales` without its field rule (so personal fields would be shown),
/// and [`TRIAL`] (so the amount would be hidden).
fn trial_sales(pki: &Pki) -> std::path::PathBuf {
    let sales = pki.path("policies/domains/sales");
    let trial = pki.path("trial-sales");
    std::fs::create_dir_all(&trial).expect("mkdir");
    for entry in std::fs::read_dir(&sales).expect("read sales") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let kept = name.ends_with(".cedar") || name.ends_with(".json") || name.ends_with(".yaml");
        if path.is_file() && kept && name != "fields.cedar" && name != "kustomization.yaml" {
            std::fs::copy(&path, trial.join(name)).expect("copy");
        }
    }
    std::fs::write(trial.join("trial.cedar"), TRIAL).expect("write");
    trial
}

#[test]
fn shadow_field_plans_that_differ_are_counted_logged_and_audited_never_applied() {
    let pki = Pki::new();
    let up = FixedUpstream::start(vec![("/orders/SO-1", "application/json", RECORD.into())]);
    let d = pki.path("policies");
    let trail = pki.path("audit.log");
    let sidecar = masked(&pki, &up).audit_file(&trail);
    let shadow = [d.join("mesh"), trial_sales(&pki), d.join("domains/finance")];
    let mg = sidecar.shadow(&shadow).start();
    let url = mg.url("/orders/SO-1");
    let sample =
        "meshgate_shadow_field_disagreements_total{product=\"sales.orders\",dataset=\"orders\"}";
    let from = mg.logs.len();
    // Finance: the shadow plan would hide the amount and show the personal
    // fields; the enforced one is applied.
    let (_, status, body) = get(&pki, "reporting", &["--http2"], &url);
    assert_eq!(status, "200", "{body}");
    assert!(body.starts_with(MASKED), "{body}");
    assert_eq!(mg.metric(sample), 1.0, "{}", mg.metrics());
    let line = mg
        .logs
        .wait_for(from, std::time::Duration::from_secs(10), |l| {
            l.contains("shadow field policies disagree")
        })
        .unwrap_or_else(|| panic!("no log line:\n{}", mg.logs.dump()));
    assert!(
        line.contains("spiffe://mesh.local/ns/finance/sa/reporting")
            && line.contains("sales.orders/orders")
            && line.contains("amount"),
        "{line}"
    );
    // The request's own decision agrees: not a request disagreement.
    assert_eq!(mg.metric("meshgate_shadow_disagreements_total"), 0.0);
    // Sales: both sets hide the same (the restricted cost only).
    let (_, _, body) = get(&pki, "orders", &[], &url);
    assert!(body.contains("ana@example.com"), "{body}");
    assert_eq!(mg.metric(sample), 1.0, "{}", mg.metrics());
    let (_, _, _) = get(&pki, "reporting", &["--http1.1"], &url);
    assert_eq!(mg.metric(sample), 2.0, "{}", mg.metrics());
    audited_shadow_fields(&mg, &trail);
}

/// The three requests' audit events: finance's list the fields the shadow
/// plan would hide or show, with method and policies; sales' has none.
fn audited_shadow_fields(mg: &Meshgate, trail: &std::path::Path) {
    let events = common::trail::events_of_path(mg, trail, "/orders/SO-1", 3);
    let shown = |field: &str, mask: &str| {
        serde_json::json!({"field": field, "would": "show", "mask": mask,
            "policies": ["mesh.fields-visible-unless-forbidden"]})
    };
    let expected = serde_json::json!([
        {"field": "amount", "would": "hide", "mask": "omit", "policies": ["trial.amount-for-sales-only"]},
        shown("customer_email", "hash"),
        shown("customer_phone", "last4"),
        shown("customer_since", "year"),
        shown("shipping/street", "omit"),
    ]);
    for e in [&events[0], &events[2]] {
        assert_eq!(e["principal"]["id"], common::REPORTING, "{e}");
        assert_eq!(e["shadow"]["decision"], "allow", "{e}");
        assert_eq!(e["shadow"]["fields"], expected, "{e}");
        assert!(e["shadow"].get("fields_left_off").is_none(), "{e}");
        // The enforced plan's own member is as before.
        let hidden: Vec<&str> = e["hidden"]
            .as_array()
            .expect("hidden")
            .iter()
            .filter_map(|h| h["field"].as_str())
            .collect();
        assert!(hidden.contains(&"customer_email"), "{e}");
        assert!(!hidden.contains(&"amount"), "{e}");
    }
    assert_eq!(events[1]["principal"]["id"], common::fields::ORDERS);
    assert_eq!(events[1]["shadow"]["decision"], "allow", "{}", events[1]);
    assert!(events[1]["shadow"].get("fields").is_none(), "{}", events[1]);
    let (ok, out) = audit_verify(&[trail]);
    assert!(ok, "{out}");
}
