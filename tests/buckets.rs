//! `metrics.duration_buckets`: the request- and upstream-duration histograms
//! expose the configured bucket bounds (checked by `promtool check
//! metrics`), `meshgate slo-rules` reads a contract's latency at those
//! bounds, and a list that is not positive, finite, increasing and bounded
//! is refused by `run`, `validate` and `slo-rules` alike, naming the field.

mod common;

use std::process::{Command, Output};

use common::*;

/// The contracts promise 250 ms (sales.orders), 500 ms (sales.customers)
/// and 1 s (finance.ledger): here one bucket sits at 300 ms instead of 250.
const BUCKETS: &str = "metrics:\n  duration_buckets: [0.05, 0.3, 0.5, 1, 5]\n";

fn meshgate(args: &[&str]) -> Output {
    output_within(Command::new(bin()).args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The `le` values of one histogram's sample lines.
fn bounds(metrics: &str, histogram: &str) -> Vec<String> {
    let prefix = format!("{histogram}_bucket{{");
    let mut les: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split("le=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    les.dedup();
    les
}

#[test]
fn configured_buckets_are_exposed_and_checked_by_promtool() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(BUCKETS)
        .start();
    let ok = curl(
        &pki,
        Some("reporting"),
        &["-o", "/dev/null", "-w", "%{http_code}", &mg.url("/orders")],
    );
    assert_eq!(text(&ok.stdout), "200");
    mg.wait_metric(
        "meshgate_requests_total{product=\"sales.orders\",action=\"read\",decision=\"allow\",class=\"2xx\"}",
        1.0,
    );
    let metrics = mg.metrics();
    for histogram in [
        "meshgate_request_duration_seconds",
        "meshgate_upstream_duration_seconds",
    ] {
        assert_eq!(
            bounds(&metrics, histogram),
            ["0.05", "0.3", "0.5", "1.0", "5.0", "+Inf"],
            "{histogram}:\n{metrics}"
        );
    }
    if !require_tool("promtool") {
        return;
    }
    let out = output_fed(
        Command::new("promtool").args(["check", "metrics"]),
        Some(metrics.as_bytes()),
        EXIT_DEADLINE,
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && report.is_empty(), "{report}");
}

#[test]
fn slo_rules_read_latencies_at_the_configured_buckets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080")
        .dir(dir.path())
        .policies();
    let config = dir.path().join("meshgate.yaml");
    let config_arg = config.to_str().expect("utf-8 path");

    // Built in: 250 ms and 1 s are bucket bounds; nothing is rounded.
    std::fs::write(&config, sidecar.yaml()).expect("config");
    let out = meshgate(&["slo-rules", "--config", config_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("note:"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("product=\"sales.orders\",decision=\"allow\",le=\"0.25\"}[5m]")
    );

    // Configured: 250 ms is watched at 0.3 s, and the note says how to
    // watch it exactly; 1 s is still a bound.
    std::fs::write(&config, sidecar.clone().extra(BUCKETS).yaml()).expect("config");
    let out = meshgate(&["slo-rules", "--config", config_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        ["meshgate: note: sales.orders: the contract's latency 250ms is watched as 0.3s, the histogram bucket le=\"0.3\" at or above it (add 0.25 to metrics.duration_buckets to watch it exactly)"]
    );
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("product=\"sales.orders\",decision=\"allow\",le=\"0.3\"}[5m]"),
        "{yaml}"
    );
    assert!(
        yaml.contains("product=\"finance.ledger\",decision=\"allow\",le=\"1.0\"}[5m]"),
        "{yaml}"
    );
    assert!(!yaml.contains("le=\"0.25\""), "{yaml}");

    // A latency above the largest configured bound: no latency SLO, said.
    std::fs::write(
        &config,
        sidecar
            .clone()
            .extra("metrics:\n  duration_buckets: [0.1, 0.5]\n")
            .yaml(),
    )
    .expect("config");
    let out = meshgate(&["slo-rules", "--config", config_arg]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("meshgate: warning: finance.ledger: latency 1s is above the largest bucket of meshgate_request_duration_seconds (0.5s); no latency SLO (add a bucket to metrics.duration_buckets)"),
        "{stderr}"
    );
}

#[test]
fn bad_bucket_lists_are_refused_naming_the_field() {
    let pki = Pki::new();
    let too_many: Vec<String> = (1..=41).map(|i| format!("{i}")).collect();
    let too_many = format!("[{}]", too_many.join(", "));
    for (list, says) in [
        ("[]", "0 bounds; list 1 to 40"),
        (too_many.as_str(), "41 bounds; list 1 to 40"),
        (
            "[0.1, 0.05, 1]",
            "bound 2 (0.05) is not above the one before it (0.1)",
        ),
        (
            "[0.1, 0.1]",
            "bound 2 (0.1) is not above the one before it (0.1)",
        ),
        (
            "[0, 1]",
            "bound 1 (0) is not a positive, finite number of seconds",
        ),
        (
            "[-1, 1]",
            "bound 1 (-1) is not a positive, finite number of seconds",
        ),
        (
            "[0.1, .inf]",
            "bound 2 (inf) is not a positive, finite number of seconds",
        ),
        (
            "[.nan]",
            "bound 1 (NaN) is not a positive, finite number of seconds",
        ),
    ] {
        let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080")
            .extra(&format!("metrics:\n  duration_buckets: {list}\n"));
        for (cmd, err) in sidecar.refusals("buckets.yaml") {
            assert!(
                err.contains("metrics.duration_buckets"),
                "{cmd} {list}: {err}"
            );
            assert!(err.contains(says), "{cmd} {list}: {err}");
        }
        let config = pki.path("buckets.yaml");
        let out = meshgate(&["slo-rules", "--config", config.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "slo-rules {list}");
        let err = text(&out.stderr);
        assert!(
            err.contains("metrics.duration_buckets"),
            "slo-rules {list}: {err}"
        );
        assert!(err.contains(says), "slo-rules {list}: {err}");
    }
    // Not a number: a type error with its line and field.
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080")
        .extra("metrics:\n  duration_buckets: [0.1, fast]\n");
    for (cmd, err) in sidecar.refusals("buckets.yaml") {
        assert!(err.contains("metrics.duration_buckets"), "{cmd}: {err}");
    }
}
