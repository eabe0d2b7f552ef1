//! A product server that answers what no request asked for: the sidecar
//! must not pass it on as if it were an answer. The upstream here writes
//! raw bytes, one scripted answer per connection, whatever the request.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

/// Answers every connection with `answer` once it has read a request head,
/// then closes it.
struct RawUpstream {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawUpstream {
    fn start(answer: &'static str) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut tcp) = tcp else { continue };
                let Ok(read) = tcp.try_clone() else { continue };
                let mut lines = BufReader::new(read);
                let mut line = String::new();
                // The request head, to its empty line.
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let _ = tcp.write_all(answer.as_bytes());
            }
        });
        RawUpstream {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Target for RawUpstream {
    fn target_url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop to see the flag.
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An unsolicited `101 Switching Protocols` went to the client as the
/// answer (HTTP/1.1: a 101 without `Upgrade`, then the connection closed;
/// HTTP/2: a protocol error), audited as an allowed, complete 101. It is a
/// 502 `upstream_failed` now, on either protocol.
#[test]
fn an_unsolicited_switching_protocols_is_an_upstream_failure() {
    let pki = Pki::new();
    let up = RawUpstream::start("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nbytes of another protocol");
    let mg = Meshgate::builder(&pki, &up).start();
    for version in ["--http1.1", "--http2"] {
        let r = common::reply::fetch(&pki, "reporting", &[version], &mg.url("/orders"));
        assert_eq!(r.status, "502", "{version}: {r:?}");
        assert_eq!(r.json()["error"], "upstream_failed", "{version}: {r:?}");
        assert!(!r.body.contains("another protocol"), "{version}: {r:?}");
    }
}

/// Headers that speak for meshgate, written by the upstream: a lifecycle
/// the contract does not declare (`Deprecation`, `Sunset` on an active
/// version), and `x-meshgate-*`, reached the client as if meshgate had
/// said them. The contract's lifecycle is what the client sees.
#[test]
fn an_upstream_cannot_speak_for_meshgate() {
    let pki = Pki::new();
    let up = RawUpstream::start(concat!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDeprecation: @1\r\n",
        "Sunset: Wed, 11 Nov 2026 11:11:11 GMT\r\nx-meshgate-principal: spiffe://forged\r\n",
        "Link: </next>; rel=\"next\"\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]",
    ));
    let mg = Meshgate::builder(&pki, &up).policies().start();
    // The active version: no lifecycle at all.
    let r = common::reply::fetch(&pki, "reporting", &[], &mg.url("/orders"));
    assert_eq!(r.status, "200", "{r:?}");
    assert_eq!(r.header("deprecation"), None, "{r:?}");
    assert_eq!(r.header("sunset"), None, "{r:?}");
    assert_eq!(r.header("x-meshgate-principal"), None, "{r:?}");
    // The upstream's own links pass.
    assert_eq!(r.header("link"), Some("</next>; rel=\"next\""), "{r:?}");
    // The deprecated version: the contract's dates, not the upstream's.
    let r = common::reply::fetch(&pki, "reporting", &[], &mg.url("/v1/orders"));
    assert_eq!(r.status, "200", "{r:?}");
    let said = |name| r.headers.iter().filter(|(k, _)| k == name).count();
    assert_eq!((said("deprecation"), said("sunset")), (1, 1), "{r:?}");
    assert_ne!(r.header("deprecation"), Some("@1"), "{r:?}");
    assert_ne!(
        r.header("sunset"),
        Some("Wed, 11 Nov 2026 11:11:11 GMT"),
        "{r:?}"
    );
}

/// A deprecated version's route that names no dataset (no field plan)
/// lost the version's lifecycle headers with the plan; with the upstream's
/// own now removed, its clients heard of no deprecation at all.
#[test]
fn a_route_without_a_field_plan_still_announces_its_lifecycle() {
    let pki = Pki::new();
    let up = RawUpstream::start(concat!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        "Connection: close\r\nContent-Length: 2\r\n\r\n[]",
    ));
    let sidecar = Meshgate::builder(&pki, &up).policies();
    let v1 = pki.path("policies/domains/sales/orders-v1.odcs.yaml");
    let text = std::fs::read_to_string(&v1).expect("v1 contract");
    let route = "{ method: GET, path: /v1/orders, action: read, dataset: order_list }";
    assert!(text.contains(route), "{text}");
    let text = text.replace(route, "{ method: GET, path: /v1/orders, action: read }");
    std::fs::write(&v1, text).expect("write");
    let mg = sidecar.start();
    let r = common::reply::fetch(&pki, "reporting", &[], &mg.url("/v1/orders"));
    assert_eq!(r.status, "200", "{r:?}");
    assert!(r.header("deprecation").is_some(), "{r:?}");
    assert!(r.header("sunset").is_some(), "{r:?}");
}
