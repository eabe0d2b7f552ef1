//! The policy set replaced 100 times under load, invalid sets among them.

use std::collections::HashMap;
use std::time::Instant;

use crate::common::*;
use crate::load::*;
use crate::probes::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";

fn policy_json(mg: &Meshgate) -> serde_json::Value {
    let body = admin_get(mg, "/policy");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A policy version and when it may have decided requests: from the swap
/// that brought it (it went live after that) to the moment its successor
/// was seen live (it decided nothing after that).
#[derive(Debug)]
struct Live {
    version: String,
    step: usize,
    /// Does it let marketing read orders?
    allows: bool,
    from: Instant,
    until: Option<Instant>,
}

/// Lets marketing read orders (policy id `toggle.allow.I`).
fn permit(i: usize) -> String {
    format!(
        "@id(\"toggle.allow.{i}\")\npermit (principal in Mesh::Domain::\"marketing\", \
         action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n"
    )
}

/// Forbids marketing to read orders (policy id `toggle.deny.I`).
fn forbid(i: usize) -> String {
    format!(
        "@id(\"toggle.deny.{i}\")\nforbid (principal in Mesh::Domain::\"marketing\", \
         action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n"
    )
}

/// The policy files of step `i`, whether the set is valid and then
/// whether it lets marketing read orders, and the name of its broken file.
fn step_files(i: usize) -> (Vec<(String, String)>, Option<bool>, String) {
    // allow, invalid (a syntax error beside a forbid), deny, invalid
    // (a schema violation beside a permit): a set loaded in part would
    // show as a version nobody wrote, deciding otherwise.
    let broken = format!("broken-{i}.cedar");
    let (files, valid_allows) = match i % 4 {
        1 => (vec![("allow.cedar".to_string(), permit(i))], Some(true)),
        2 => (
            vec![
                ("deny.cedar".to_string(), forbid(i)),
                (
                    broken.clone(),
                    format!("@id(\"toggle.broken.{i}\")\npermit (principal, action, resource) when {{ 1 + }};\n"),
                ),
            ],
            None,
        ),
        3 => (vec![("deny.cedar".to_string(), forbid(i))], Some(false)),
        _ => (
            vec![
                ("allow.cedar".to_string(), permit(i)),
                (
                    broken.clone(),
                    format!("@id(\"toggle.broken.{i}\")\npermit (principal, action, resource) when {{ resource.no_such_attr }};\n"),
                ),
            ],
            None,
        ),
    };
    (files, valid_allows, broken)
}

/// Waits for step `i`'s set (swapped in at `swapped`, log lines from
/// `from`) to be loaded or refused, checks what /policy says, and adds a
/// loaded one to the timeline; whether it was loaded.
fn after_swap(
    mg: &Meshgate,
    i: usize,
    valid_allows: Option<bool>,
    broken: &str,
    from: usize,
    swapped: Instant,
    timeline: &mut Vec<Live>,
) -> bool {
    match valid_allows {
        Some(allows) => {
            let line = mg
                .logs
                .wait_for(from, EVENT_WAIT, |l| l.contains("policy snapshot reloaded"))
                .unwrap_or_else(|| panic!("step {i}: no reload:\n{}", mg.logs.dump()));
            let seen = Instant::now();
            let v: serde_json::Value = serde_json::from_str(&line).expect("json log");
            let version = v["version"].as_str().expect("version").to_string();
            let p = policy_json(mg);
            assert_eq!(p["version"].as_str(), Some(version.as_str()), "step {i}");
            assert!(p["last_error"].is_null(), "step {i}: {p}");
            if let Some(last) = timeline.last_mut() {
                last.until = Some(seen);
            }
            assert!(timeline.iter().all(|l| l.version != version), "step {i}");
            timeline.push(Live {
                version,
                step: i,
                allows,
                from: swapped,
                until: None,
            });
            true
        }
        None => {
            let line = mg
                .logs
                .wait_for(from, EVENT_WAIT, |l| {
                    l.contains("policy reload failed") && l.contains(broken)
                })
                .unwrap_or_else(|| panic!("step {i}: not rejected:\n{}", mg.logs.dump()));
            assert!(line.contains(&format!("{broken}:")), "{line}");
            // (The failure is logged just before /policy shows it.)
            let mut p = policy_json(mg);
            eventually("/policy shows the rejection", EVENT_WAIT, || {
                p = policy_json(mg);
                p["last_error"]["errors"].to_string().contains(broken)
            });
            let live = timeline.last().map(|l| l.version.as_str());
            assert_eq!(
                p["version"].as_str(),
                live,
                "step {i}: the last good set serves"
            );
            false
        }
    }
}

/// The responses whose audit event does not show a decision by a version
/// written whole, live around the time, deciding as the response says;
/// and how many of marketing's were allowed and denied.
fn wrong_decisions(
    records: &[Record],
    events: &HashMap<String, serde_json::Value>,
    timeline: &[Live],
) -> (Vec<String>, usize, usize) {
    let mut failures = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for r in records {
        let Outcome::Response {
            status, request_id, ..
        } = &r.outcome
        else {
            failures.push(format!("{r:?}"));
            continue;
        };
        let Some(event) = events.get(request_id) else {
            failures.push(format!("no audit event: {r:?}"));
            continue;
        };
        let version = event["policy_version"].as_str().unwrap_or_default();
        let Some(live) = timeline.iter().find(|l| l.version == version) else {
            failures.push(format!("decided by a version never live: {r:?} {event}"));
            continue;
        };
        if event["status"].as_u64() != Some(u64::from(*status)) {
            failures.push(format!("event and response differ: {r:?} {event}"));
        }
        if live.from > r.done || live.until.is_some_and(|u| r.sent > u) {
            failures.push(format!(
                "decided by a version not live then: {r:?} {live:?}"
            ));
        }
        let policies = event["policies"].to_string();
        let right = match (r.who, *status) {
            ("reporting", 200) => policies.contains("sales.orders.finance-may-read"),
            ("campaigns", 200) => {
                allowed += 1;
                live.allows && policies.contains(&format!("toggle.allow.{}\"", live.step))
            }
            ("campaigns", 403) => {
                denied += 1;
                !live.allows
            }
            _ => false,
        };
        if !right {
            failures.push(format!("wrong decision: {r:?} {live:?} {event}"));
        }
    }
    (failures, allowed, denied)
}

#[test]
fn policy_set_replaced_100_times_under_load_with_invalid_sets_fails_and_wrongly_allows_nothing() {
    let _heavy = heavy();
    const STEPS: usize = 100;
    let pki = Pki::new();
    pki.client("campaigns", Leaf::client_spiffe(CAMPAIGNS));
    let up = Upstream::start();
    let dir = pki.dir.path();
    // The replaced set lives in `toggle`, a symlink swapped atomically to
    // a new directory at each step (as git-sync does), beside the example
    // policies. Marketing's `campaigns` may not read orders unless it holds.
    let steps = dir.join("steps");
    std::fs::create_dir_all(steps.join("0")).expect("mkdir");
    // A source meant to hold no policy holds a file with none (an empty
    // directory is refused, as one emptied by mistake would be).
    std::fs::write(steps.join("0/none.cedar"), "// no policy yet\n").expect("write");
    let toggle = dir.join("toggle");
    std::os::unix::fs::symlink("steps/0", &toggle).expect("symlink");
    let swap = |i: usize, files: &[(String, String)]| {
        let d = steps.join(i.to_string());
        std::fs::create_dir(&d).expect("mkdir step");
        for (name, text) in files {
            std::fs::write(d.join(name), text).expect("write policy");
        }
        let tmp = dir.join("toggle.tmp");
        std::os::unix::fs::symlink(format!("steps/{i}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, &toggle).expect("atomic swap");
    };
    let audit_file = pki.path("audit.log");
    let mut mg = quiet(&pki, &up)
        .policies()
        .policy_source(&toggle)
        .audit_file(&audit_file)
        .start();

    let initial = policy_json(&mg);
    let t0 = Instant::now();
    let mut timeline = vec![Live {
        version: initial["version"].as_str().expect("version").to_string(),
        step: 0,
        allows: false,
        from: t0,
        until: None,
    }];

    let reporting = rustls_client(&pki, "reporting");
    let campaigns = rustls_client(&pki, "campaigns");
    let clients = vec![
        Client::new("reporting", reporting.clone(), "/orders", Mode::KeepAlive),
        Client::new("reporting", reporting, "/orders", Mode::KeepAlive),
        Client::new("campaigns", campaigns.clone(), "/orders", Mode::KeepAlive),
        Client::new("campaigns", campaigns.clone(), "/orders", Mode::KeepAlive),
        Client::new("campaigns", campaigns, "/orders", Mode::Fresh),
    ]
    .into_iter()
    .map(|c| c.paced(PACE))
    .collect();
    let load = Load::start(mg.data, clients, BOUNDED);
    load.wait("first responses", EVENT_WAIT, |r| r.len() >= 20);

    let started = Instant::now();
    let (mut valid, mut invalid) = (0, 0);
    for i in 1..=STEPS {
        let (files, valid_allows, broken) = step_files(i);
        let from = mg.logs.len();
        let swapped = Instant::now();
        swap(i, &files);
        mg.sighup();
        let reloaded = after_swap(&mg, i, valid_allows, &broken, from, swapped, &mut timeline);
        if reloaded {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    let replacing = started.elapsed();
    let m = mg.metrics();
    let (records, _) = load.finish();
    assert!(mg.terminate().success(), "{}", mg.logs.dump());

    // Every response, with the event of its request: the version that
    // decided it, which must be one that was written whole and live
    // around the time, and must decide as the response says.
    let events = events_by_request_id(&audit_events(&audit_file));
    let sum = summary(&records);
    let (failures, allowed, denied) = wrong_decisions(&records, &events, &timeline);
    assert!(
        failures.is_empty(),
        "{sum:?}\n{}",
        failures[..failures.len().min(5)].join("\n")
    );
    assert!(allowed > 0 && denied > 0, "{sum:?}");

    let ok = metric_value(&m, "meshgate_policy_reloads_total{result=\"ok\"}");
    let errors = metric_value(&m, "meshgate_policy_reloads_total{result=\"error\"}");
    // Each valid set is a new version: exactly one successful reload each.
    // Invalid ones are each refused at least once (the file watch may see
    // a set too, besides SIGHUP).
    assert_eq!(ok as usize, valid, "{m}");
    assert!(errors as usize >= invalid, "{m}");
    // The last step is an invalid set.
    assert_eq!(
        metric_value(&m, "meshgate_policy_last_reload_successful"),
        0.0
    );
    let last = &timeline[timeline.len() - 1].version;
    assert_eq!(
        metric_value(&m, &format!("meshgate_policy_info{{version=\"{last}\"}}")),
        1.0,
        "{m}"
    );
    eprintln!(
        "policy replacement: {STEPS} sets ({valid} valid, {invalid} invalid) in {replacing:?}; \
         reloads ok {ok}, error {errors}; {} requests: {sum:?}; campaigns allowed {allowed}, \
         denied {denied}, each by a version live at the time",
        records.len()
    );
}
