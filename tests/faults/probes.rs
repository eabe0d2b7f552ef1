//! What the process, the kernel and the audit trail say during a fault.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::load::*;

/// Open file descriptors of a process.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .count()
}

/// TCP connections *to* 127.0.0.1:`port` (the client side; only meshgate
/// connects to its upstream) by state: (ESTABLISHED, CLOSE_WAIT).
pub(crate) fn connections_to(port: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    let (mut established, mut close_wait) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 3 && f[2] == remote {
            match f[3] {
                "01" => established += 1,
                "08" => close_wait += 1,
                _ => {}
            }
        }
    }
    (established, close_wait)
}

/// The body of a GET on the admin port. Plain HTTP/1.0 over a socket: the
/// 100-reload tests ask after every reload, and a curl process each time
/// would cost more than the reload.
pub(crate) fn admin_get(mg: &Meshgate, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(mg.admin).expect("admin port");
    tcp.set_read_timeout(Some(EVENT_WAIT)).expect("timeout");
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut text = String::new();
    tcp.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("response head");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Polls `cond` until it holds; fails after `limit`.
pub(crate) fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The sidecar logging at `info`: no debug line per request under load.
pub(crate) fn quiet(pki: &Pki, upstream: &(impl Target + ?Sized)) -> Sidecar {
    Meshgate::builder(pki, upstream).log_level("info")
}

pub(crate) fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    trail::events(path)
}

pub(crate) fn verify_chain(files: &[&std::path::Path]) -> String {
    let (ok, text) = audit_verify(files);
    assert!(ok, "audit verify: {text}");
    text
}

/// The request events of an audit trail by request id, each seen once.
pub(crate) fn events_by_request_id(
    events: &[serde_json::Value],
) -> HashMap<String, serde_json::Value> {
    let mut map = HashMap::new();
    for e in events.iter().filter(|e| e["type"] == "request") {
        let id = e["request_id"].as_str().unwrap_or_default().to_string();
        let again = map.insert(id.clone(), e.clone());
        assert!(again.is_none(), "two events for request {id}");
    }
    map
}

pub(crate) fn dropped_in_chain(events: &[serde_json::Value]) -> u64 {
    events
        .iter()
        .filter(|e| e["type"] == "dropped")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .sum()
}

pub(crate) fn count(records: &[Record], pred: impl Fn(&Record) -> bool) -> usize {
    records.iter().filter(|r| pred(r)).count()
}

pub(crate) fn is_status(r: &Record, status: u16) -> bool {
    r.outcome.status() == Some(status)
}
