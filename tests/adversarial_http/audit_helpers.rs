//! Raw requests with extra headers, and the audit trail they leave.

use crate::common::*;

/// `GET` of the public path with extra header lines, last on its connection.
pub(crate) fn get_with(target: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

pub(crate) fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The audit events of a file, one JSON object per line.
pub(crate) fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit file")
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub(crate) fn verified(path: &std::path::Path) -> String {
    let (ok, text) = audit_verify(&[path]);
    assert!(ok, "{text}");
    text
}

/// The trace id of a `traceparent` meshgate sent.
pub(crate) fn trace_id_of(traceparent: &str) -> String {
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    traceparent[3..35].to_string()
}
