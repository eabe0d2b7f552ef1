//! `meshgate slo-rules` sunset alerts, through the real binary and promtool:
//! per deprecated version with an `endOfLife`, an alert that fires while a
//! consumer still calls it within `--sunset-window` of its sunset.
//! `deploy/prometheus/sunset.test.yml` (promtool) proves the alert fires
//! inside the window, stays silent outside it and clears when the consumer
//! stops, on rules generated from a 1970 contract (promtool's clock starts
//! at the Unix epoch).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const ALERT: &str = "MeshgateDeprecatedVersionCalledBeforeSunset";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(path)
}

fn slo_rules(args: &[&str]) -> Output {
    output_within(Command::new(bin()).arg("slo-rules").args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The sunset alerts of a generated rule file: expression and labels.
fn alerts(yaml: &str) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let rules: meshgate::RuleFile = serde_yaml_ng::from_str(yaml).expect("rule file");
    rules
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
        .filter(|r| r.alert.as_deref() == Some(ALERT))
        .map(|r| (r.expr, r.labels))
        .collect()
}

#[test]
fn the_example_version_1_is_alerted_on_from_the_window_before_its_sunset() {
    let config = deploy("meshgate.yaml");
    let config = config.to_str().expect("utf-8 path");
    let committed = std::fs::read_to_string(deploy("meshgate-slo.yml")).expect("committed rules");
    let found = alerts(&committed);
    // One version of the example sunsets: sales.orders.v1, 2030-12-31.
    assert_eq!(found.len(), 1, "{found:?}");
    let (expr, labels) = &found[0];
    assert!(
        expr.starts_with("sum by (consumer) (increase(meshgate_deprecated_requests_total{product=\"sales.orders.v1\",version=\"1.2.0\"}[1h])) > 0"),
        "{expr}"
    );
    // 2030-12-31T00:00:00Z is 1924905600; 30 days before, by default.
    assert!(
        expr.ends_with("and on () (vector(time()) > 1922313600)"),
        "{expr}"
    );
    for (k, v) in [
        ("product", "sales.orders.v1"),
        ("version", "1.2.0"),
        ("domain", "sales"),
        ("sunset", "2030-12-31T00:00:00Z"),
        ("successor", "/orders"),
        ("severity", "ticket"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{labels:?}");
    }

    // Another window moves only the threshold: two weeks.
    let out = slo_rules(&["--config", config, "--sunset-window", "2w"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found = alerts(&text(&out.stdout));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].0.ends_with("(vector(time()) > 1923696000)"),
        "{}",
        found[0].0
    );
    assert!(
        text(&out.stdout).contains("sales.orders.v1 1.2.0 sunsets at 2030-12-31T00:00:00Z: alert from 2030-12-17T00:00:00Z (successor /orders)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn the_1970_example_rules_are_generated_and_pass_promtool_unit_tests() {
    let config = deploy("sunset-example/meshgate.yaml");
    let out = slo_rules(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--sunset-window",
        "1d",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let committed =
        std::fs::read_to_string(deploy("sunset-example.yml")).expect("committed example rules");
    assert!(
        text(&out.stdout) == committed,
        "deploy/prometheus/sunset-example.yml is stale: run\n  meshgate slo-rules --config deploy/prometheus/sunset-example/meshgate.yaml --sunset-window 1d -o deploy/prometheus/sunset-example.yml"
    );
    let found = alerts(&committed);
    assert_eq!(found.len(), 1, "{found:?}");
    // 1970-01-03 less a day.
    assert!(
        found[0].0.ends_with("(vector(time()) > 86400)"),
        "{found:?}"
    );

    if !require_tool("promtool") {
        return;
    }
    let out = output_within(
        Command::new("promtool")
            .args(["test", "rules", "sunset.test.yml"])
            .current_dir(deploy("")),
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("SUCCESS") && !report.contains("FAILED"),
        "{report}"
    );
}

#[test]
fn a_bad_sunset_window_is_refused_and_help_names_the_flag() {
    let config = deploy("meshgate.yaml");
    let config = config.to_str().expect("utf-8 path");
    for (window, why) in [("soon", "30d"), ("0s", "longer than zero")] {
        let out = slo_rules(&["--config", config, "--sunset-window", window]);
        assert!(!out.status.success(), "{window}");
        let err = text(&out.stderr);
        assert!(
            err.contains("--sunset-window") && err.contains(window) && err.contains(why),
            "{window}: {err}"
        );
        assert!(out.stdout.is_empty(), "{window}");
    }
    let out = slo_rules(&["--help"]);
    let help = text(&out.stdout);
    assert!(
        help.contains("--sunset-window <DURATION>") && help.contains("[default: 30d]"),
        "{help}"
    );
}

#[test]
fn a_version_that_sunsets_without_being_deprecated_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new();
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080")
        .dir(dir.path())
        .policies();
    // Version 1 declared active, with an end of life but no end of support:
    // the sidecar never counts its requests as deprecated.
    let v1 = dir
        .path()
        .join("policies/domains/sales/orders-v1.odcs.yaml");
    let contract = std::fs::read_to_string(&v1).expect("v1 contract");
    let edited = contract
        .replace("\nstatus: deprecated\n", "\nstatus: active\n")
        .replace(
            "  - { property: endOfSupport, value: \"2026-06-30\" }\n",
            "",
        );
    assert!(!edited.contains("endOfSupport") && edited.contains("status: active"));
    std::fs::write(&v1, edited).expect("write contract");
    let config = dir.path().join("meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("config");
    let out = slo_rules(&["--config", config.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: sales.orders.v1: endOfLife 2030-12-31T00:00:00Z without status `deprecated` or an endOfSupport"),
        "{err}"
    );
    assert!(alerts(&text(&out.stdout)).is_empty());
}
