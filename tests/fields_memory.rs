//! Masking never holds a response whole: a 100 MB JSON array, and NDJSON
//! and CSV bodies, stream through the real binary masked end to end (every
//! record's e-mail pseudonymised, none sent as it was) while the sidecar's
//! peak RSS rises by less than 32 MB; so do compressed ones, and a
//! decompression bomb.

mod common;

use std::process::{Command, Stdio};

use common::fields::masked;
use common::stream_upstream::{StreamUpstream, EMAIL};
use common::*;

/// The sidecar's peak resident set size, KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
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
fn download(pki: &Pki, args: &[&str], url: &str, needles: &[&str]) -> (i32, Vec<usize>) {
    let mut all = args.to_vec();
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
    let code = curl.wait().expect("wait").code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&found.stdout);
    let counts = needles
        .iter()
        .map(|n| text.lines().filter(|l| l == n).count())
        .collect();
    (code, counts)
}

#[test]
fn large_masked_responses_stream_within_a_bounded_memory() {
    let pki = Pki::new();
    let up = StreamUpstream::start();
    let mg = masked(&pki, &up).log_level("info").start();
    // Each format once, small: one-time allocations are not the bound's.
    for path in ["/orders/big.json", "/orders/big.ndjson", "/orders/big.csv"] {
        let (code, counts) = download(&pki, &[], &mg.url(path), &["hmac-sha256:"]);
        assert_eq!((code, counts[0]), (0, 1), "{path}");
    }
    let before = peak_kib(mg.pid());
    // About 100 MB of JSON, 20 MB of NDJSON and 10 MB of CSV (a debug
    // build masks about 10 MB/s on a loaded machine).
    for (path, n, proto) in [
        ("/orders/big.json?n=350000", 350_000, "--http1.1"),
        ("/orders/big.ndjson?n=70000", 70_000, "--http2"),
        ("/orders/big.csv?n=140000", 140_000, "--http1.1"),
    ] {
        let needles = ["hmac-sha256:", EMAIL];
        let (code, counts) = download(&pki, &[proto], &mg.url(path), &needles);
        assert_eq!(code, 0, "{path}: curl failed");
        assert_eq!(counts, [n, 0], "{path}");
    }
    let risen = peak_kib(mg.pid()).saturating_sub(before);
    assert!(risen < 32 * 1024, "peak RSS rose by {risen} KiB");
}

/// A compressed body is decoded as it streams: 100 MB of gzip-coded JSON,
/// zstd-coded NDJSON and br-coded CSV are masked end to end, and a gzip
/// bomb (64 MiB of spaces from about 64 KiB) passes, while the sidecar's
/// peak RSS rises by less than 32 MB.
#[test]
fn compressed_responses_and_bombs_stream_within_a_bounded_memory() {
    let pki = Pki::new();
    let up = StreamUpstream::start();
    let mg = masked(&pki, &up).log_level("info").start();
    for coding in common::coded::CODINGS {
        let url = mg.url(&format!("/orders/big.json?coding={coding}"));
        let (code, counts) = download(&pki, &[], &url, &["hmac-sha256:"]);
        assert_eq!((code, counts[0]), (0, 1), "{coding}");
    }
    let before = peak_kib(mg.pid());
    for (path, n, proto) in [
        (
            "/orders/big.json?n=350000&coding=gzip",
            350_000,
            "--http1.1",
        ),
        ("/orders/big.ndjson?n=70000&coding=zstd", 70_000, "--http2"),
        ("/orders/big.csv?n=140000&coding=br", 140_000, "--http1.1"),
        ("/orders/big.json?n=3&pad=64&coding=gzip", 3, "--http2"),
        ("/orders/big.json?n=3&pad=64&coding=zstd", 3, "--http1.1"),
    ] {
        let needles = ["hmac-sha256:", EMAIL];
        let (code, counts) = download(&pki, &[proto], &mg.url(path), &needles);
        assert_eq!(code, 0, "{path}: curl failed");
        assert_eq!(counts, [n, 0], "{path}");
    }
    let risen = peak_kib(mg.pid()).saturating_sub(before);
    assert!(risen < 32 * 1024, "peak RSS rose by {risen} KiB");
}
