//! What a sidecar's memory and a large download come to, for the tests
//! of how much memory masking takes.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{curl_command, wait_or_kill, Pki};

/// The sidecar's peak resident set size, KiB (`VmHWM`).
pub fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// What came of one download, counted as it streams (grep, fast on a
/// 100 MB body where a debug-built loop is not): curl's exit code and how
/// often each of `needles` occurred.
pub fn download(pki: &Pki, args: &[&str], url: &str, needles: &[&str]) -> (i32, Vec<usize>) {
    // A debug build on a loaded machine may take minutes for 100 MB: the
    // bound is a hang guard, not a speed claim (the last --max-time wins).
    let mut all = vec!["--max-time", "600"];
    all.extend_from_slice(args);
    all.push(url);
    let mut curl = curl_command(pki, Some("reporting"), &all)
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let body = curl.stdout.take().expect("stdout");
    let mut grep = Command::new("grep");
    grep.args(["-o", "-a", "-F"]);
    for n in needles {
        grep.args(["-e", n]);
    }
    let found = grep.stdin(Stdio::from(body)).output().expect("grep runs");
    // curl's --max-time 600 ends it; the deadline only guards against that failing.
    let code = wait_or_kill(&mut curl, Duration::from_secs(660), "curl")
        .code()
        .unwrap_or(-1);
    let text = String::from_utf8_lossy(&found.stdout);
    let counts = needles
        .iter()
        .map(|n| text.lines().filter(|l| l == n).count())
        .collect();
    (code, counts)
}
