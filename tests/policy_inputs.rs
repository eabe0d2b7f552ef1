//! What the sidecar refuses to load, through the real binary: a policy too
//! deep for the stacks it is handled on, an input that is no regular file
//! or is too large. Written while the sidecar runs, each is refused where
//! it is; the sidecar lives on, serves with its last good snapshot, names
//! the file in `/policy`, reloads again and stops when told.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::json_upstream::FixedUpstream;
use common::*;

/// Writes `text` to `file` while `mg` runs (beside it, then renamed over
/// it: no reload sees it half written); see [`refused_after`].
fn refused_on_reload(mg: &mut Meshgate, pki: &Pki, file: &Path, text: &str, error: &str) {
    let write = || {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, file).expect("rename");
    };
    refused_after(mg, pki, write, error);
}

/// Makes `change` while `mg` runs and waits for the reload that fails with
/// `error`: the sidecar is alive, still on the snapshot it had, `/policy`'s
/// `last_error` has `error`, and `reporting` still reads orders.
fn refused_after(mg: &mut Meshgate, pki: &Pki, change: impl FnOnce(), error: &str) {
    let before = mg.policy_json();
    let from = mg.logs.len();
    change();
    let this_failure = |l: &str| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        v["error"].as_str().is_some_and(|e| e.starts_with(error))
    };
    mg.logs
        .wait_for(from, Duration::from_secs(60), this_failure)
        .unwrap_or_else(|| panic!("no reload failure `{error}`:\n{}", mg.logs.dump()));
    let after = mg.policy_json();
    assert_eq!(after["version"], before["version"], "{after}");
    let errors = after["last_error"]["errors"].as_array().cloned();
    let mut named = errors.into_iter().flatten();
    assert!(
        named.any(|e| e.as_str().is_some_and(|e| e.starts_with(error))),
        "{after}"
    );
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

/// A FIFO as `policy.entities` held the reload thread in open() for ever:
/// SIGHUP reloaded nothing more, `/policy` said nothing and SIGTERM never
/// ended the process. `/dev/zero` was read until memory ran out.
#[test]
fn an_input_that_is_no_regular_file_or_too_large_is_refused_and_the_sidecar_still_stops() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut mg = Meshgate::builder(&pki, &up).policies().start();
    let entities = pki.path("policies/entities.json");
    let fifo = || {
        let tmp = pki.path("policies/entities.fifo");
        let made = Command::new("mkfifo").arg(&tmp).status();
        assert!(made.expect("mkfifo").success());
        std::fs::rename(&tmp, &entities).expect("rename");
    };
    let not_regular = "is a FIFO, not a regular file; only regular files are read";
    let error = format!("{}: {not_regular}", entities.display());
    refused_after(&mut mg, &pki, fifo, &error);
    // The reload thread is free: SIGHUP reloads (and fails) again.
    let pid = mg.pid().to_string();
    let hup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().is_ok());
    refused_after(&mut mg, &pki, hup, &error);

    // The schema a link to a device (a directory lists regular files only).
    let schema = pki.path("policies/schema.cedarschema");
    let zero = || {
        let tmp = pki.path("policies/schema.zero");
        std::os::unix::fs::symlink("/dev/zero", &tmp).expect("symlink");
        std::fs::rename(&tmp, &schema).expect("rename");
    };
    let device = "is a character device, not a regular file";
    refused_after(
        &mut mg,
        &pki,
        zero,
        &format!("{}: {device}", schema.display()),
    );

    let big = pki.path("policies/domains/sales/zz-big.cedar");
    let text = "// padding\n".repeat(400_000);
    let error = format!(
        "{}: is 4400000 bytes or more, larger than the 4194304 bytes (4 MiB) an input file may be",
        big.display()
    );
    refused_on_reload(&mut mg, &pki, &big, &text, &error);
    assert!(mg.terminate().success());
}

/// The server's key and the mesh's hash key are read like policies: a
/// FIFO put in their place (no writer ever comes) is refused at once,
/// counted and logged, and the sidecar keeps its key, serves, and stops
/// when told. Before, each reload waited in open() for ever.
#[test]
fn a_key_file_that_is_no_regular_file_is_refused_and_the_sidecar_still_stops() {
    let pki = Pki::new();
    let record = common::fields::RECORD.to_string();
    let up = FixedUpstream::start(vec![("/orders/SO-1", "application/json", record)]);
    let mut mg = common::fields::masked(&pki, &up).start();
    let fifo_over = |file: &Path| {
        let tmp = file.with_extension("fifo");
        let made = Command::new("mkfifo").arg(&tmp).status();
        assert!(made.expect("mkfifo").success());
        std::fs::rename(&tmp, file).expect("rename");
    };
    let not_regular = "is a FIFO, not a regular file";
    for (file, metric, logged) in [
        (
            "hash.key",
            "meshgate_hash_key_reloads_total{result=\"error\"}",
            "hash key reload failed",
        ),
        (
            "server-key.pem",
            "meshgate_tls_reloads_total{result=\"error\"}",
            "tls reload failed",
        ),
    ] {
        let from = mg.logs.len();
        fifo_over(&pki.path(file));
        mg.wait_metric(metric, 1.0);
        let line = mg
            .logs
            .wait_for(from, Duration::from_secs(30), |l| l.contains(logged))
            .unwrap_or_else(|| panic!("no `{logged}`:\n{}", mg.logs.dump()));
        assert!(line.contains(not_regular), "{line}");
        assert!(line.contains(file), "{line}");
        assert_eq!(
            status_of(&pki, Some("reporting"), &mg.url("/orders/SO-1")),
            "200",
            "{}",
            mg.logs.dump()
        );
    }
    assert!(mg.terminate().success());
}
