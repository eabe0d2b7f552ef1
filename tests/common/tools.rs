//! Outside tools and processes the tests run: curl, kubernetes-validate,
//! `meshgate audit verify`, and readings of /proc.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::{bin, output_within, output_within_limit, skip, Pki};

/// Runs curl against the sidecar as client `who` (`None`: no client certificate).
pub fn curl(pki: &Pki, who: Option<&str>, args: &[&str]) -> Output {
    curl_command(pki, who, args).output().expect("curl runs")
}

/// The curl command `curl` runs, for callers that spawn it themselves.
pub fn curl_command(pki: &Pki, who: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(pki.path("ca.pem"));
    if let Some(who) = who {
        cmd.arg("--cert")
            .arg(pki.path(&format!("{who}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{who}-key.pem")));
    }
    cmd.args(args);
    cmd
}

/// `curl -w '%{http_code}'` for a GET; "000" when no HTTP response came.
pub fn status_of(pki: &Pki, who: Option<&str>, url: &str) -> String {
    let out = curl(pki, who, &["-o", "/dev/null", "-w", "%{http_code}", url]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The status code of a plain-HTTP GET (the admin port, as a kubelet probe
/// or a scraper sees it); "000" when no HTTP response came.
pub fn plain_status(url: &str) -> String {
    let out = output_within(Command::new("curl").args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Requires a command-line tool; under CI its absence fails the test,
/// elsewhere it is a [`skip`] (the caller returns on `false`).
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip(tool);
    }
    found
}

/// Copies the directory tree `src` to `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// A fixture of tests/fixtures/k8s (real `kubectl create --dry-run=client -o json` output).
pub fn k8s_fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Kubernetes version manifests are validated against (native sidecars are GA in 1.33).
pub const K8S_VERSION: &str = "1.33.0";

/// Validates the manifests of `file` strictly (unknown fields are errors)
/// against the Kubernetes 1.33 schemas with kubernetes-validate; returns how
/// many resources passed, None when the tool is missing (outside CI; in CI
/// a missing tool fails). Only the CRD kinds in `crd_kinds` (cert-manager,
/// Prometheus Operator: no schema in kubernetes-validate) may go unchecked.
pub fn kubernetes_validate(file: &Path, crd_kinds: &[&str]) -> Option<usize> {
    if !require_tool("kubernetes-validate") {
        return None;
    }
    let out = output_within_limit(
        Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", K8S_VERSION])
            .arg(file),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}: kubernetes-validate failed:\n{text}",
        file.display()
    );
    let mut passed = 0;
    for line in text.lines() {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
            let kind = rest.split_whitespace().next().unwrap_or_default();
            assert!(
                crd_kinds.contains(&kind),
                "{}: no schema for {kind}:\n{text}",
                file.display()
            );
        } else if !line.trim().is_empty() {
            panic!(
                "{}: unexpected kubernetes-validate output:\n{text}",
                file.display()
            );
        }
    }
    Some(passed)
}

/// `meshgate audit verify FILES...`: whether the chain verifies, and what it
/// printed (stdout, then stderr).
pub fn audit_verify(files: &[&Path]) -> (bool, String) {
    let out = output_within(Command::new(bin()).args(["audit", "verify"]).args(files));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Resident set size of a process, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The values of header `name` in `(name, value)` pairs, in order.
pub fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
