//! Early answers over HTTP/2 that clients accept: a request refused before
//! forwarding (here 403: `campaigns` may not write orders) whose body is
//! still on the way gets its answer, and its body is read and discarded
//! within `limits.linger` so that curl, still sending, sees the 403 and
//! not `(92) Stream error`. Past the bound the stream is reset as before,
//! and the sidecar goes on serving. HTTP/1.1 is unchanged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
/// A route the policy denies to `campaigns` (action `write`).
const DENIED: &str = "/orders";

fn body_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let path = dir.join(name);
    let data: Vec<u8> = (0..len as u64).map(pattern_byte).collect();
    std::fs::write(&path, data).expect("write body");
    path
}

/// `curl --http2 POST` of `file` as `campaigns`; stdout is
/// `STATUS VERSION` (curl's `%{http_code} %{http_version}`).
fn post(pki: &Pki, mg: &Meshgate, proto: &str, file: &Path, extra: &[&str]) -> Output {
    let data = format!("@{}", file.display());
    let url = mg.url(DENIED);
    let mut args = vec![
        proto,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &data,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(pki, Some("campaigns"), &args)
}

fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn lingers(mg: &Meshgate, result: &str) -> f64 {
    mg.counter(&format!(
        "meshgate_request_body_lingers_total{{result=\"{result}\"}}"
    ))
}

#[test]
fn h2_refusals_with_a_body_are_answered_403_and_curl_accepts_them() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    // The defaults: 256 KiB, 1 s.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&audit)
        .start();
    let tiny = body_file(pki.dir.path(), "tiny.bin", 7);
    let large = body_file(pki.dir.path(), "large.bin", 200 * 1000);

    for (name, file) in [("tiny", &tiny), ("200 KB", &large)] {
        for i in 0..20 {
            let out = post(&pki, &mg, "--http2", file, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name} #{i}: curl failed: {stderr}"
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "403 2",
                "{name} #{i}: {stderr}"
            );
        }
    }
    // Nothing was forwarded; every refusal is audited as what it was.
    assert_eq!(up.count(), 0);
    mg.wait_metric(
        "meshgate_requests_total{product=\"sales.orders\",action=\"write\",decision=\"deny\",class=\"4xx\"}",
        40.0,
    );
    // Every body that had not arrived with its headers lingered and ended
    // within the bound: to its end, or broken off by curl once it had the
    // 403 (an early END_STREAM, short of its Content-Length: `error`).
    // None was reset for its size or time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lingers(&mg, "complete") + lingers(&mg, "error") < 20.0 {
        assert!(std::time::Instant::now() < deadline, "{}", mg.metrics());
        mg.logs
            .wait_for(mg.logs.len(), std::time::Duration::from_millis(200), |_| {
                true
            });
    }
    for result in ["bytes", "time"] {
        assert_eq!(lingers(&mg, result), 0.0, "{result}:\n{}", mg.metrics());
    }
    let denied: Vec<_> = audit_events(&audit)
        .into_iter()
        .filter(|e| e["path"] == DENIED)
        .collect();
    assert_eq!(denied.len(), 40);
    for e in &denied {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["status"], 403, "{e}");
        assert_eq!(e["method"], "POST", "{e}");
    }
}

#[test]
fn past_the_bound_the_stream_is_reset_and_the_sidecar_serves_on() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .limit("linger: { bytes: 65536, time: 300ms }")
        .audit_file(&audit)
        .start();
    let dir = pki.dir.path().to_path_buf();

    // 2 MB, past 64 KiB by its Content-Length: reset at once, unread. curl
    // may report the reset (92) or a failed send (55), or the 403 it read
    // first.
    let huge = body_file(&dir, "huge.bin", 2 * 1000 * 1000);
    let out = post(&pki, &mg, "--http2", &huge, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(matches!(out.status.code(), Some(0 | 55 | 92)), "{out:?}");
    if out.status.code() == Some(0) {
        assert_eq!(stdout, "403 2");
    }
    mg.wait_metric("meshgate_request_body_lingers_total{result=\"bytes\"}", 1.0);

    // The same 2 MB without a Content-Length (streamed from standard
    // input): read up to the bound, then reset (`bytes`), unless curl,
    // having read the 403, ends its upload first (`complete`).
    let url = mg.url(DENIED);
    let out = curl_command(
        &pki,
        Some("campaigns"),
        &[
            "--http2",
            "-X",
            "POST",
            "-T",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            &url,
        ],
    )
    .stdin(std::fs::File::open(&huge).expect("open body"))
    .output()
    .expect("curl runs");
    assert!(matches!(out.status.code(), Some(0 | 55 | 92)), "{out:?}");
    if out.status.code() == Some(0) {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403 2");
    }
    // Whichever way it ends (on a loaded machine 64 KiB may take longer than
    // 300 ms: `time`; curl may break its upload off: `error`), it ends
    // within the bound.
    let ended = |mg: &Meshgate| {
        ["bytes", "complete", "time", "error"]
            .iter()
            .map(|r| lingers(mg, r))
            .sum::<f64>()
    };
    let wait_ended = |mg: &Meshgate, n: f64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while ended(mg) < n {
            assert!(std::time::Instant::now() < deadline, "{}", mg.metrics());
            mg.logs
                .wait_for(mg.logs.len(), std::time::Duration::from_millis(200), |_| {
                    true
                });
        }
    };
    wait_ended(&mg, 2.0);

    // A body within 64 KiB sent slower than 300 ms: reset at the time bound
    // (or broken off by curl once it has the 403), never read to its end.
    let slow = body_file(&dir, "slow.bin", 60 * 1000);
    let (time, error, complete) = (
        lingers(&mg, "time"),
        lingers(&mg, "error"),
        lingers(&mg, "complete"),
    );
    let out = post(&pki, &mg, "--http2", &slow, &["--limit-rate", "20k"]);
    assert!(matches!(out.status.code(), Some(0 | 55 | 92)), "{out:?}");
    wait_ended(&mg, 3.0);
    assert_eq!(lingers(&mg, "complete"), complete, "{}", mg.metrics());
    assert_eq!(
        lingers(&mg, "time") + lingers(&mg, "error"),
        time + error + 1.0,
        "{}",
        mg.metrics()
    );

    // Still serving, on new connections and old-style requests alike.
    let ok = curl(
        &pki,
        Some("reporting"),
        &[
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/orders"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "200");
    assert_eq!(up.count(), 1, "only the allowed request was forwarded");
    // The audit says what was decided and answered: 403, deny, nothing
    // forwarded, whatever the client made of the reset.
    let denied: Vec<_> = audit_events(&audit)
        .into_iter()
        .filter(|e| e["path"] == DENIED && e["method"] == "POST")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    for e in &denied {
        assert_eq!(e["decision"], "deny", "{e}");
        assert_eq!(e["status"], 403, "{e}");
        assert_eq!(e["bytes_in"], 0, "{e}");
        assert_eq!(e["method"], "POST", "{e}");
    }
}

#[test]
fn http1_refusals_are_unchanged_nothing_lingers() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    // As before lingering: curl sends 200 KB at once and reads the 403;
    // hyper reads what has arrived of the unread body and keeps the
    // connection only when that was all of it.
    let large = body_file(pki.dir.path(), "large.bin", 200 * 1000);
    let out = post(&pki, &mg, "--http1.1", &large, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403 1.1");
    // 2 MB: curl waits for `100 Continue`, which never comes: the 403
    // comes instead, curl sends nothing more, the connection is closed.
    let huge = body_file(pki.dir.path(), "huge.bin", 2 * 1000 * 1000);
    let out = post(&pki, &mg, "--http1.1", &huge, &["-v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403 1.1", "{stderr}");
    assert!(stderr.contains("Expect: 100-continue"), "{stderr}");
    assert!(stderr.contains("Closing connection"), "{stderr}");
    assert_eq!(up.count(), 0);
    for result in ["complete", "bytes", "time", "error"] {
        assert_eq!(lingers(&mg, result), 0.0, "{result}");
    }
}

/// A gRPC refusal is an HTTP 200 (trailers-only): a client still sending
/// may take it for an answer it has to finish its upload for, and curl
/// 7.88 then never saw the exchange end (tests/grpc.rs). So the body of a
/// refused call that declares its length is read before the answer: the
/// answer (here INTERNAL for a `grpc-timeout` it cannot read) is sent only
/// once the body has ended, and the stream then ends without a reset.
#[test]
fn a_grpc_refusal_waits_for_the_body_the_call_declared() {
    if !common::python::require_module("hpack", "h2") {
        return;
    }
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    // A time bound longer than any wait below: the body decides.
    let mg = Meshgate::builder(&pki, &up)
        .limit("linger: { bytes: 65536, time: 60s }")
        .log_level("meshgate=debug")
        .start();
    let headers = serde_json::json!([
        [":method", "POST"],
        [":scheme", "https"],
        [":authority", "localhost"],
        [":path", "/orders.v1.Orders/Get"],
        ["content-type", "application/grpc"],
        ["te", "trailers"],
        ["grpc-timeout", "1.5S"],
        ["content-length", "5"]
    ])
    .to_string();
    let port = mg.data.port().to_string();
    let [ca, cert, key] =
        ["ca.pem", "campaigns.pem", "campaigns-key.pem"].map(|f| pki.path(f).display().to_string());
    let args = [
        "late-body",
        "--port",
        &port,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--headers",
        &headers,
        "--body",
        // Five bytes: what a gRPC message prefix would take (never read as one).
        "hello",
    ];
    let script = common::python::script("h2", "h2probe.py");
    let mut probe = common::python::PyServer::spawn(&script, &args);
    probe.wait_line(0, "SENT");
    // The sidecar has refused the call and waits for its body.
    let waiting = mg
        .logs
        .wait_for(0, std::time::Duration::from_secs(30), |l| {
            l.contains("refused request body to be read before the answer")
        });
    assert!(waiting.is_some(), "{}", mg.logs.dump());
    probe.send_line("go");
    let report: serde_json::Value =
        serde_json::from_str(&probe.wait_line(0, "{")).expect("h2probe report is JSON");
    assert_eq!(report["answered_before_body"], false, "{report}");
    assert_eq!(report["stream1"]["status"], 200, "{report}");
    assert_eq!(report["headers"]["grpc-status"], "13", "{report}");
    assert_eq!(report["ended"], true, "{report}");
    assert_eq!(
        report["stream1"]["reset"],
        serde_json::Value::Null,
        "{report}"
    );
    mg.wait_metric(
        "meshgate_request_body_lingers_total{result=\"complete\"}",
        1.0,
    );
    assert_eq!(up.count(), 0);
}
