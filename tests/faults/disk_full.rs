//! The audit file at its size limit, in `block` and `drop` mode.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::load::*;
use crate::probes::*;

/// Sets the soft RLIMIT_FSIZE of a running process (`None`: unlimited).
/// The hard limit stays as it is, so an unprivileged caller may raise the
/// soft one again.
fn set_file_size_limit(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or("unlimited".to_string(), |b| b.to_string());
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:"))
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct DiskFull {
    records: Vec<Record>,
    events: Vec<serde_json::Value>,
    /// When the limit was set, and when it was lifted.
    full: Instant,
    space: Instant,
    dropped_metric: f64,
    write_errors: f64,
    verified: String,
}

/// Runs `mode` with a tiny queue under load, fills the "disk" (the audit
/// file may not grow past its size: RLIMIT_FSIZE set on the live process,
/// so every write fails with EFBIG), waits until `enough` holds, gives the
/// space back, and returns what happened. The file's chain must verify.
fn audit_disk_full(
    mode: &str,
    enough: impl Fn(&[Record], Instant, &Meshgate) -> bool,
) -> Option<DiskFull> {
    if !require_tool("prlimit") {
        return None;
    }
    let pki = Pki::new();
    let up = Upstream::start();
    let file = pki.path("audit.log");
    let mut mg = quiet(&pki, &up)
        .audit_file(&file)
        .audit("queue: 16")
        .audit(&format!("when_full: {mode}"))
        .audit("max_wait: 300ms")
        .start();
    let tls = rustls_client(&pki, "reporting");
    let clients = (0..4)
        .map(|_| Client::new("reporting", tls.clone(), "/orders/1", Mode::KeepAlive))
        .collect();
    let load = Load::start(mg.data, clients, BOUNDED);
    load.wait("200s", EVENT_WAIT, |r| {
        count(r, |r| is_status(r, 200)) >= 50
    });

    let size = std::fs::metadata(&file).expect("audit file").len();
    let full = Instant::now();
    set_file_size_limit(mg.pid(), Some(size));
    eventually("an audit write error", EVENT_WAIT, || {
        if let Some(exit) = mg.child.try_wait().expect("try_wait") {
            panic!(
                "meshgate died with the disk full: {exit}\n{}",
                mg.logs.dump()
            );
        }
        mg.metric("meshgate_audit_write_errors_total") >= 1.0
    });
    load.wait("the disk-full effect", EVENT_WAIT, |r| enough(r, full, &mg));
    assert!(
        mg.child.try_wait().expect("try_wait").is_none(),
        "meshgate died with the disk full:\n{}",
        mg.logs.dump()
    );

    let space = Instant::now();
    set_file_size_limit(mg.pid(), None);
    load.wait("200s with space again", EVENT_WAIT, |r| {
        count(r, |r| r.sent > space && is_status(r, 200)) >= 50
    });
    let (records, _) = load.finish();
    let m = mg.metrics();
    let dropped_metric = metric_value(&m, "meshgate_audit_dropped_total");
    let write_errors = metric_value(&m, "meshgate_audit_write_errors_total");
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let verified = verify_chain(&[&file]);
    Some(DiskFull {
        records,
        events: audit_events(&file),
        full,
        space,
        dropped_metric,
        write_errors,
        verified,
    })
}

#[test]
fn audit_disk_full_in_block_mode_serves_nothing_unrecorded_and_catches_up() {
    let _heavy = heavy();
    let max_wait = Duration::from_millis(300);
    let Some(run) = audit_disk_full("block", |r, full, _| {
        count(r, |r| r.sent > full && is_status(r, 503)) >= 20
    }) else {
        return;
    };
    let records = &run.records;
    let sum = summary(records);
    let events = events_by_request_id(&run.events);

    // Only 200 and 503 audit_unavailable, the latter after max_wait.
    let mut failures = Vec::new();
    for r in records {
        let ok = match &r.outcome {
            Outcome::Response { status: 200, .. } => true,
            Outcome::Response {
                status: 503, body, ..
            } => error_code(body).as_deref() == Some("audit_unavailable") && r.took() >= max_wait,
            _ => false,
        };
        if !ok {
            failures.push(r.clone());
        }
    }
    assert!(failures.is_empty(), "{sum:?}\n{failures:#?}");

    // No request answered 200 without its event in the trail.
    let ok: Vec<&Record> = records.iter().filter(|r| is_status(r, 200)).collect();
    for r in &ok {
        let Outcome::Response { request_id, .. } = &r.outcome else {
            unreachable!()
        };
        let e = events
            .get(request_id)
            .unwrap_or_else(|| panic!("200 without its event: {r:?}"));
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["trace_id"].as_str(), Some(r.trace_id.as_str()), "{e}");
    }
    // Once the queue was full, nothing more was served until space came back.
    let first_refusal = records
        .iter()
        .filter(|r| is_status(r, 503))
        .map(|r| r.done)
        .min()
        .expect("a refusal");
    let served_blind = count(records, |r| {
        r.sent > first_refusal && r.done < run.space && is_status(r, 200)
    });
    assert_eq!(served_blind, 0, "{sum:?}");
    let served_while_full = count(records, |r| {
        r.sent > run.full && r.done < first_refusal && is_status(r, 200)
    });
    // Every refusal is counted and recorded in the chain as a loss.
    let refused = count(records, |r| is_status(r, 503));
    assert_eq!(run.dropped_metric as usize, refused);
    assert_eq!(
        dropped_in_chain(&run.events) as usize,
        refused,
        "{}",
        run.verified
    );
    assert!(run.write_errors >= 1.0);
    eprintln!(
        "audit disk full (block): {} requests {sum:?}; {served_while_full} served 200 while the \
         disk was full (events held in the queue, all written later), {refused} refused 503 \
         after {max_wait:?}, write errors {}; {}",
        records.len(),
        run.write_errors,
        run.verified.trim()
    );
}

#[test]
fn audit_disk_full_in_drop_mode_counts_every_lost_event_and_the_chain_verifies() {
    let _heavy = heavy();
    let Some(run) = audit_disk_full("drop", |_, _, mg| {
        mg.metric("meshgate_audit_dropped_total") >= 200.0
    }) else {
        return;
    };
    let records = &run.records;
    let sum = summary(records);
    let failed: Vec<&Record> = records.iter().filter(|r| !is_status(r, 200)).collect();
    assert!(failed.is_empty(), "{sum:?}\n{failed:#?}");
    let events = events_by_request_id(&run.events);
    let recorded = count(records, |r| match &r.outcome {
        Outcome::Response { request_id, .. } => events.contains_key(request_id),
        _ => false,
    });
    let dropped = dropped_in_chain(&run.events);
    // Each response has its event, or is one of the losses the chain records.
    assert_eq!(events.len(), recorded, "events of requests nobody sent");
    assert_eq!(recorded + dropped as usize, records.len(), "{sum:?}");
    assert_eq!(run.dropped_metric as u64, dropped);
    assert!(dropped > 0);
    // Only requests sent once the disk was full can have lost theirs (the
    // queue stays full a moment after the space is back: the writer may be
    // in its back-off).
    let after_full = count(records, |r| r.sent > run.full) as u64;
    assert!(dropped <= after_full, "{dropped} > {after_full}");
    eprintln!(
        "audit disk full (drop): {} requests all 200; {dropped} events dropped (counted, and \
         recorded in the chain), {recorded} written; write errors {}; {}",
        records.len(),
        run.write_errors,
        run.verified.trim()
    );
}
