//! Skips that cannot go unseen. A test that cannot run for want of an
//! outside tool fails under CI (any non-empty `CI`, as CI systems set it:
//! `true`, `1`, `yes`, ...); elsewhere it prints `SKIPPED <test>: <why>` on
//! the process's own stderr, past the test harness's output capture, and
//! tests/run.sh counts those lines in its closing line.

use std::io::Write;

/// Whether this is a CI run: `CI` set to anything but the empty string.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The test cannot run because `missing` is missing: a failure under CI,
/// otherwise a `SKIPPED` line a person sees.
pub fn skip(missing: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if under_ci() {
        panic!("{missing} is required under CI; tests/run.sh installs it");
    }
    // `eprintln!` would be captured with the test's output and shown only if
    // it failed; a write to the stderr handle goes to the terminal (or log).
    let line = format!("SKIPPED {test}: {missing} is missing\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
