//! What the sidecar refuses to load, through the real binary: a policy too
//! deep for the stacks it is handled on. Written while the sidecar runs, it
//! is refused at its position; the sidecar lives on, serves with its last
//! good snapshot and names the file in `/policy`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn policy_json(mg: &Meshgate) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("http://{}/policy", mg.admin))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).expect("policy json")
}

/// Writes `text` to `file` while `mg` runs and waits for the reload to
/// fail: the sidecar is alive, still on the snapshot it had, `/policy`'s
/// `last_error` begins with `error`, and `reporting` still reads orders.
fn refused_on_reload(mg: &mut Meshgate, pki: &Pki, file: &Path, text: &str, error: &str) {
    let before = policy_json(mg);
    let from = mg.logs.len();
    std::fs::write(file, text).expect("write policy");
    mg.logs
        .wait_for(from, Duration::from_secs(60), |l| {
            l.contains("policy reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure:\n{}", mg.logs.dump()));
    let after = policy_json(mg);
    assert_eq!(after["version"], before["version"], "{after}");
    let first = after["last_error"]["errors"][0]
        .as_str()
        .unwrap_or_default();
    assert!(first.starts_with(error), "{after}");
    assert_eq!(
        status_of(pki, Some("reporting"), &mg.url("/orders")),
        "200",
        "{}",
        mg.logs.dump()
    );
    assert!(mg.child.try_wait().expect("wait").is_none(), "exited");
}

/// 1,000 nested brackets aborted the reload thread; a chain of 10,000
/// `||` terms was loaded, and the first request to the product it covers
/// aborted the worker that specialised it.
#[test]
fn a_policy_too_deep_written_during_a_run_is_refused_and_the_old_snapshot_serves() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut mg = Meshgate::builder(&pki, &up).policies().start();
    let file = pki.path("policies/domains/sales/zz-deep.cedar");
    let name = file.display().to_string();
    let nested = format!(
        "@id(\"sales.deep\")\npermit (principal, action, resource in Mesh::DataProduct::\"sales.orders\")\nwhen {{ {}true{} }};\n",
        "(".repeat(1_000),
        ")".repeat(1_000)
    );
    let at = format!("{name}:3:39: brackets nested more than 32 deep");
    refused_on_reload(&mut mg, &pki, &file, &nested, &at);

    let chain = (0..10_000)
        .map(|i| format!("context.path == \"/n{i}\""))
        .collect::<Vec<_>>()
        .join(" || ");
    let chained = format!(
        "@id(\"sales.long\")\nforbid (principal, action, resource in Mesh::DataProduct::\"sales.orders\")\nwhen {{ {chain} }};\n"
    );
    let at = format!("{name}:1:1: policy has 30000 operators; at most 1000");
    refused_on_reload(&mut mg, &pki, &file, &chained, &at);
}
