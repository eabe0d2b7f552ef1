//! `meshgate test --format junit`: the real binary's JUnit XML, read back
//! with a real XML parser (python3's xml.etree), counted and compared with
//! the text report of the same run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Reads JUnit XML on stdin with xml.etree and prints what it holds as
/// JSON; the counts on `<testsuites>`/`<testsuite>` are checked against the
/// elements actually there.
const READ_JUNIT: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
assert root.tag == "testsuites", root.tag
suites = []
for s in root.findall("testsuite"):
    cases = []
    for c in s.findall("testcase"):
        f = c.find("failure")
        e = c.find("error")
        cases.append({
            "name": c.get("name"),
            "classname": c.get("classname"),
            "time": float(c.get("time", "0")),
            "failure": None if f is None else {"message": f.get("message"), "text": f.text, "type": f.get("type")},
            "error": None if e is None else {"message": e.get("message"), "text": e.text},
        })
    assert int(s.get("tests")) == len(cases), s.get("name")
    assert int(s.get("failures")) == sum(c["failure"] is not None for c in cases), s.get("name")
    assert int(s.get("errors")) == sum(c["error"] is not None for c in cases), s.get("name")
    suites.append({"name": s.get("name"), "cases": cases})
all_cases = [c for s in suites for c in s["cases"]]
assert int(root.get("tests")) == len(all_cases)
assert int(root.get("failures")) == sum(c["failure"] is not None for c in all_cases)
assert int(root.get("errors")) == sum(c["error"] is not None for c in all_cases)
print(json.dumps({"tests": int(root.get("tests")), "failures": int(root.get("failures")),
                  "errors": int(root.get("errors")), "suites": suites}))
"#;

fn read_junit(xml: &[u8]) -> serde_json::Value {
    let out = output_fed(
        Command::new("python3").args(["-c", READ_JUNIT]),
        Some(xml),
        EXIT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "not valid JUnit XML: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(xml)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn meshgate_test(args: &[&str]) -> Output {
    output_within(Command::new(bin()).arg("test").args(args))
}

/// A copy of this repository's `policies/` tree in `dir`.
fn copy_policies(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let status = Command::new("cp")
        .arg("-R")
        .arg(&src)
        .arg(dir)
        .status()
        .expect("cp");
    assert!(status.success());
    dir.join("policies")
}

/// A case name with every character XML treats specially.
const AWKWARD: &str = "marketing <reads> \"orders\" & 'more' ]]>";

#[test]
fn junit_has_one_testcase_per_case_and_failures_with_the_reason() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = copy_policies(dir.path());
    std::fs::write(
        root.join("domains/sales/tests/wrong.test.yaml"),
        format!(
            "cases:\n  - name: {}\n    principal: spiffe://mesh.local/ns/marketing/sa/campaigns\n    path: /orders\n    expect: {{ decision: allow }}\n  - name: right\n    principal: spiffe://mesh.local/ns/finance/sa/reporting\n    path: /orders\n    expect: {{ status: 200 }}\n",
            serde_json::Value::String(AWKWARD.into())
        ),
    )
    .expect("write");
    let root_arg = root.to_str().expect("utf-8");

    // The same run as text, for the counts.
    let text = meshgate_test(&[root_arg]);
    let stdout = String::from_utf8_lossy(&text.stdout).to_string();
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    let (passed, failed) = summary
        .split_once(" passed, ")
        .and_then(|(p, f)| {
            Some((
                p.parse::<usize>().ok()?,
                f.strip_suffix(" failed")?.parse::<usize>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert_eq!(failed, 1, "{stdout}");
    assert!(passed >= 20, "{stdout}");

    let out = meshgate_test(&["--format", "junit", root_arg]);
    assert_eq!(out.status.code(), Some(1), "a failure fails the run");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        summary,
        "the summary goes to stderr"
    );
    let report = read_junit(&out.stdout);
    assert_eq!(report["tests"], passed + failed);
    assert_eq!(report["failures"], 1);
    assert_eq!(report["errors"], 0);
    let suites = report["suites"].as_array().expect("suites");
    // One suite per test file.
    let names: Vec<&str> = suites.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names
        .iter()
        .any(|n| n.ends_with("finance/tests/ledger.test.yaml")));
    assert!(names
        .iter()
        .any(|n| n.ends_with("risk/tests/exposures.test.json")));
    assert!(names
        .iter()
        .any(|n| n.ends_with("sales/tests/orders.test.json")));
    let wrong = suites
        .iter()
        .find(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("wrong.test.yaml"))
        })
        .expect("the wrong file's suite");
    let cases = wrong["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 2);
    // The name comes back exactly, markup and all.
    assert_eq!(cases[0]["name"], AWKWARD);
    assert!(cases[0]["classname"]
        .as_str()
        .is_some_and(|c| c.ends_with("domains/sales/tests/wrong.test.yaml")));
    let failure = &cases[0]["failure"];
    assert_eq!(failure["message"], "expected decision allow, got deny");
    assert_eq!(failure["text"], "expected decision allow, got deny");
    assert_eq!(cases[1]["name"], "right");
    assert!(cases[1]["failure"].is_null());
}

#[test]
fn a_policy_set_that_does_not_load_is_one_errored_case_with_the_reasons() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = copy_policies(dir.path());
    // In a `policies/` tree, `domains/sales/` speaks for the sales domain.
    std::fs::write(
        root.join("domains/sales/zz-ledger.cedar"),
        "@id(\"sales.reads-ledger\")\npermit (principal, action, resource in Mesh::DataProduct::\"finance.ledger\");\n",
    )
    .expect("write");
    let out = meshgate_test(&["--format", "junit", root.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = read_junit(&out.stdout);
    assert_eq!(
        (report["tests"].as_u64(), report["errors"].as_u64()),
        (Some(1), Some(1))
    );
    let error = &report["suites"][0]["cases"][0]["error"];
    let why = "zz-ledger.cedar:1:1: policy `sales.reads-ledger` of domain `sales` is refused";
    for text in [&error["message"], &error["text"]] {
        assert!(text.as_str().is_some_and(|t| t.contains(why)), "{report}");
    }
    assert!(stderr.contains(why), "{stderr}");
}
