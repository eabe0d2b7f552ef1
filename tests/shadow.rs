//! Shadow mode through the real binary: a shadow set that would allow what
//! the enforced set denies, and deny what it allows, is never enforced; each
//! request's audit event carries the shadow decision and its policies, each
//! disagreement is counted and logged; and the shadow set reloads on its own
//! (only its source changed) without the enforced decisions moving.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use common::reply::{fetch, Reply};
use common::trail::event_of;
use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";

/// Trials of the shadow set beside copies of the enforced policies.
const LET_MARKETING_READ: &str = "@id(\"trial.marketing-may-read-orders\")\npermit (principal in Mesh::Domain::\"marketing\", action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n";
const STOP_FINANCE_READING: &str = "@id(\"trial.finance-stops-reading-orders\")\nforbid (principal in Mesh::Domain::\"finance\", action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n";

/// The enforced and the shadow decision of one request, from its audit event.
fn decisions(mg: &Meshgate, trail: &Path, r: &Reply) -> (serde_json::Value, serde_json::Value) {
    let e = event_of(mg, trail, r.request_id());
    (
        json!({ "decision": e["decision"], "policies": e["policies"] }),
        e["shadow"].clone(),
    )
}

fn disagreements(mg: &Meshgate) -> f64 {
    mg.metric("meshgate_shadow_disagreements_total")
}

/// A sidecar enforcing the example policies, with a shadow set of the same
/// policies and both trials (the trials' directory: the shadow's own source);
/// audit events to `audit.log`.
fn start(pki: &Pki, up: &Upstream) -> (Meshgate, PathBuf, PathBuf) {
    let trail = pki.path("audit.log");
    let sidecar = Meshgate::builder(pki, up).policies().audit_file(&trail);
    let trial = pki.path("trial");
    std::fs::create_dir_all(&trial).expect("mkdir");
    std::fs::write(trial.join("allow.cedar"), LET_MARKETING_READ).expect("write");
    std::fs::write(trial.join("deny.cedar"), STOP_FINANCE_READING).expect("write");
    let d = pki.path("policies");
    let mg = sidecar
        .shadow(&[
            d.join("mesh"),
            d.join("domains/sales"),
            d.join("domains/finance"),
            trial.clone(),
        ])
        .start();
    (mg, trail, trial)
}

fn finance_reads() -> serde_json::Value {
    json!({ "decision": "allow", "policies": ["sales.orders.finance-may-read"] })
}

#[test]
fn shadow_decisions_both_ways_are_audited_counted_logged_and_never_enforced() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let (mg, trail, _) = start(&pki, &up);
    let orders = mg.url("/orders");

    // Shadow allows where the enforced set denies: still 403, nothing upstream.
    let r = fetch(&pki, "campaigns", &[], &orders);
    assert_eq!(r.status, "403", "the shadow set must not be enforced");
    assert_eq!(up.count(), 0);
    let (enforced, shadow) = decisions(&mg, &trail, &r);
    assert_eq!(enforced, json!({ "decision": "deny", "policies": [] }));
    assert_eq!(
        shadow,
        json!({ "decision": "allow", "policies": ["trial.marketing-may-read-orders"] })
    );
    assert_eq!(disagreements(&mg), 1.0);

    // Shadow denies where the enforced set allows: still 200, served.
    let r = fetch(&pki, "reporting", &[], &orders);
    assert_eq!(r.status, "200", "the shadow set must not be enforced");
    assert_eq!(r.json()["upstream_path"], "/orders");
    let (enforced, shadow) = decisions(&mg, &trail, &r);
    assert_eq!(enforced, finance_reads());
    assert_eq!(
        shadow,
        json!({ "decision": "deny", "policies": ["trial.finance-stops-reading-orders"] })
    );
    assert_eq!(disagreements(&mg), 2.0);
    for (enforced, shadow, policy) in [
        ("deny", "allow", "trial.marketing-may-read-orders"),
        ("allow", "deny", "trial.finance-stops-reading-orders"),
    ] {
        let line = mg
            .logs
            .wait_for(0, Duration::from_secs(10), |l| {
                l.contains("shadow policy set disagrees")
                    && l.contains(&format!("\"enforced\":\"{enforced}\""))
            })
            .expect("disagreement logged");
        assert!(
            line.contains(&format!("\"shadow\":\"{shadow}\"")) && line.contains(policy),
            "{line}"
        );
    }

    // Where both agree, the shadow decision is audited and nothing counted.
    let r = fetch(&pki, "reporting", &[], &mg.url("/v1/orders"));
    assert_eq!(r.status, "200", "{r:?}");
    let (enforced, shadow) = decisions(&mg, &trail, &r);
    assert_eq!(enforced["decision"], "allow");
    assert_eq!(shadow, enforced);
    assert_eq!(disagreements(&mg), 2.0);
}

#[test]
fn a_shadow_set_reloads_on_its_own_and_the_enforced_decisions_stay() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let (mg, trail, trial) = start(&pki, &up);
    let orders = mg.url("/orders");
    let before = mg.policy_json();
    assert_eq!(
        before["shadow_policies"].as_u64(),
        before["policies"].as_u64().map(|n| n + 2),
        "{before}"
    );
    let r = fetch(&pki, "reporting", &[], &orders);
    assert_eq!(decisions(&mg, &trail, &r).1["decision"], "deny");

    // Only the shadow source changes: the forbid trial ends. The snapshot
    // reloads (a new version), the enforced policies stay as they were.
    let mark = mg.logs.len();
    std::fs::remove_file(trial.join("deny.cedar")).expect("remove the trial");
    mg.logs
        .wait_for(mark, Duration::from_secs(20), |l| {
            l.contains("policy snapshot reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));
    let after = mg.policy_json();
    assert_ne!(after["version"], before["version"]);
    assert_eq!(after["policies"], before["policies"]);
    assert_eq!(
        after["shadow_policies"].as_u64(),
        before["shadow_policies"].as_u64().map(|n| n - 1),
        "{after}"
    );
    assert_eq!(
        mg.metric("meshgate_policy_reloads_total{result=\"ok\"}"),
        1.0
    );

    // Reporting: enforced as before, the shadow now agrees.
    let r = fetch(&pki, "reporting", &[], &orders);
    assert_eq!(r.status, "200", "{r:?}");
    let (enforced, shadow) = decisions(&mg, &trail, &r);
    assert_eq!(enforced, finance_reads());
    assert_eq!(shadow, finance_reads());
    // Marketing: still denied, the shadow still would allow it.
    let r = fetch(&pki, "campaigns", &[], &orders);
    assert_eq!(r.status, "403");
    let (enforced, shadow) = decisions(&mg, &trail, &r);
    assert_eq!(enforced, json!({ "decision": "deny", "policies": [] }));
    assert_eq!(shadow["decision"], "allow");
    // Disagreements: reporting before the reload, marketing after.
    assert_eq!(disagreements(&mg), 2.0);
    assert_eq!(up.count(), 2, "only reporting's requests were served");
}
