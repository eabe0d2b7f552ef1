//! HTTP/2 clients that hold the sidecar's resources without using them:
//! responses never taken (a shut flow-control window), idle connections
//! kept busy with pings.

use serde_json::Value;

use crate::common::*;
use crate::setup::*;

/// The stall probe (`h2probe.py stall`) against `mg` as campaigns, its
/// streams asking for `path`; returns once its streams' heads are in.
/// `window`: its SETTINGS_INITIAL_WINDOW_SIZE.
fn stall(pki: &Pki, mg: &Meshgate, n: usize, path: &str, window: u32) -> python::PyServer {
    let port = mg.data.port().to_string();
    let (n, window) = (n.to_string(), window.to_string());
    let [ca, cert, key] =
        ["ca.pem", "campaigns.pem", "campaigns-key.pem"].map(|f| pki.path(f).display().to_string());
    let args = [
        "stall", "--port", &port, "--ca", &ca, "--cert", &cert, "--key", &key, "--n", &n,
        "--public", path, "--window", &window,
    ];
    let probe = python::PyServer::spawn(&python::script("h2", "h2probe.py"), &args);
    probe.wait_line(0, "STALLED");
    probe
}

fn report(probe: &python::PyServer) -> Value {
    let line = probe.wait_line(0, "{");
    let r: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    eprintln!("h2probe stall: {r}");
    r
}

/// A client that opens streams to large responses with a window of zero
/// and never reads them, answering pings all along (bytes move, so the
/// idle timeout never comes), held every audit place: the sidecar then
/// refused everyone else with 503 `audit_unavailable`, for as long as the
/// client liked. `timeouts.send` closes its connection once a response
/// frame has waited that long; its places come back (its requests are
/// audited incomplete) and the next client is served.
#[test]
fn responses_a_client_never_takes_are_cut_after_the_send_timeout() {
    let _heavy = heavy();
    if !require_python_h2() {
        return;
    }
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up)
        .audit_file(&audit)
        .audit("queue: 8")
        .audit("max_wait: 200ms")
        .timeout("send: 2s")
        .start();
    let big = "/bytes/8388608";
    let probe = stall(&pki, &mg, 8, big, 0);
    let r = report(&probe);
    assert_eq!(r["heads"], 8, "{r}");
    assert_eq!(r["status_counts"]["200"], 8, "{r}");
    assert_eq!(r["data_bytes"], 0, "{r}");
    assert_eq!(r["closed"], true, "{r}");
    // Pings kept bytes moving all along...
    assert!(r["pongs"].as_u64().unwrap_or(0) >= 2, "{r}");
    // ...and it was closed after `send` (the bound is for a loaded machine;
    // without the timeout it lived until the probe gave up, 60 s).
    let alive = r["alive_for"].as_f64().unwrap_or(f64::MAX);
    assert!((1.5..20.0).contains(&alive), "{r}");
    assert_eq!(
        mg.counter("meshgate_connections_cut_total{reason=\"send_timeout\"}"),
        1.0
    );
    // Every place came back: more requests than the queue holds are served.
    for _ in 0..10 {
        assert_eq!(
            status_of(&pki, Some("reporting"), &mg.url("/bytes/100000")),
            "200"
        );
    }
    // The stalled requests were audited, as incomplete.
    let mut events = Vec::new();
    wait_until("the stalled requests' audit events", || {
        events = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|e: &Value| e["path"] == big)
            .collect();
        events.len() >= 8
    });
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(events.iter().all(|e| e["complete"] == false), "{events:?}");
}

/// An HTTP/2 connection that carries no request, kept busy by the client's
/// pings, lived for ever (an identity and a place among
/// `limits.max_connections`): without a stream in progress for
/// `timeouts.idle` it is closed gracefully, pings or not.
#[test]
fn an_idle_http2_connection_kept_busy_with_pings_is_closed() {
    let _heavy = heavy();
    if !require_python_h2() {
        return;
    }
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).timeout("idle: 2s").start();
    // The response taken whole, then nothing but pings.
    let probe = stall(&pki, &mg, 1, "/bytes/10", 65535);
    let r = report(&probe);
    assert_eq!(r["status_counts"]["200"], 1, "{r}");
    assert_eq!(r["goaway"]["error"], "NO_ERROR", "{r}");
    assert_eq!(r["closed"], true, "{r}");
    assert!(r["pongs"].as_u64().unwrap_or(0) >= 2, "{r}");
    let alive = r["alive_for"].as_f64().unwrap_or(f64::MAX);
    assert!((1.5..20.0).contains(&alive), "{r}");
    // Closed gracefully: counted as closed, not cut (its client let it close).
    assert_eq!(
        mg.counter("meshgate_connections_closed_total{reason=\"idle_streams\"}"),
        1.0
    );
    assert_eq!(
        mg.counter("meshgate_connections_cut_total{reason=\"idle_streams\"}"),
        0.0
    );
}

/// Every request to an h2c upstream is a stream of one shared connection,
/// and a stream's share of the connection's flow-control window comes back
/// only as its client takes the body. With a 5 MiB connection window, three
/// clients that never read (2 MiB each) froze every other response body on
/// the node. The connection window is now the protocol's largest: the
/// stalled streams hold their own windows, and others go on.
#[test]
fn responses_a_client_never_takes_do_not_freeze_others_on_an_h2c_upstream() {
    let _heavy = heavy();
    if !require_python_h2() {
        return;
    }
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .extra("upstream_protocol: h2c\n")
        .start();
    // Four streams of 8 MiB, none taken: 8 MiB of upstream windows held.
    let _probe = stall(&pki, &mg, 4, "/bytes/8388608", 0);
    let out = curl(
        &pki,
        Some("reporting"),
        &[
            "--http2",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &mg.url("/bytes/4000000"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 4000000");
}
