//! The harness: raw requests written over mTLS, the replies parsed off the
//! wire, and what the upstream received.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

pub(crate) const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
pub(crate) const PUBLIC: &str = "/orders/_schema";
pub(crate) const FRAUD: &str = "spiffe://mesh.local/ns/risk/sa/fraud-scanner";

/// One HTTP response as read off the wire.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of one of meshgate's own JSON refusals.
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// What came back on one connection.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) replies: Vec<Reply>,
    /// The server closed the connection (EOF seen within the deadline).
    pub(crate) closed: bool,
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses as many complete responses as `buf` holds; returns them and the
/// number of bytes they took.
pub(crate) fn parse_replies(buf: &[u8]) -> (Vec<Reply>, usize) {
    let mut replies = Vec::new();
    let mut at = 0;
    while let Some(end) = find(&buf[at..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[at..at + end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut pos = at + end + 4;
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let Some(eol) = find(&buf[pos..], b"\r\n") else {
                    return (replies, at);
                };
                let size_text = String::from_utf8_lossy(&buf[pos..pos + eol]).to_string();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("chunk size {size_text:?}"));
                pos += eol + 2;
                if size == 0 {
                    let Some(t) = find(&buf[pos..], b"\r\n") else {
                        return (replies, at);
                    };
                    pos += t + 2;
                    break;
                }
                if buf.len() < pos + size + 2 {
                    return (replies, at);
                }
                body.extend_from_slice(&buf[pos..pos + size]);
                pos += size + 2;
            }
            body
        } else {
            let len: usize = get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < pos + len {
                return (replies, at);
            }
            pos += len;
            buf[pos - len..pos].to_vec()
        };
        replies.push(Reply {
            status,
            headers,
            body,
        });
        at = pos;
    }
    (replies, at)
}

/// Writes `raw` on a fresh mTLS connection as `who` and reads until the
/// server closes the connection (the last request of `raw` says
/// `Connection: close`, or the server refuses the input and closes), at
/// most 15 s.
pub(crate) async fn exchange(pki: &Pki, who: &str, mg: &Meshgate, raw: &[u8]) -> Exchange {
    let mut tls = tls_connect(pki, who, mg.data).await;
    // The server may answer and close before all of `raw` is written (an
    // early 403 or 431 with `Connection: close`): a failed write is that,
    // and what it answered is still read below.
    if tls.write_all(raw).await.is_ok() {
        let _ = tls.flush().await;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 16384];
        loop {
            match tls.read(&mut chunk).await {
                // A peer that closes without close_notify is closed all the same.
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (replies, used) = parse_replies(&buf);
    assert_eq!(
        used,
        buf.len(),
        "unparsed bytes after the responses: {:?}",
        String::from_utf8_lossy(&buf[used..])
    );
    Exchange {
        replies,
        closed: read.is_ok(),
    }
}

/// A GET of `target` as the last request on its connection.
pub(crate) fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// What must come of one adversarial request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// Forwarded (200), and the upstream received exactly this target.
    Forwarded(&'static str),
    /// Refused by meshgate with this status and JSON error code; the
    /// upstream received nothing.
    Refused(u16, &'static str),
    /// Refused by hyper before it is a request (no body of ours), the
    /// connection closed; the upstream received nothing.
    Malformed(u16),
}

/// Sends each case on its own connection as `campaigns` and checks its
/// outcome; then that the upstream never saw anything but the public path.
pub(crate) async fn run_cases(
    pki: &Pki,
    up: &Upstream,
    mg: &Meshgate,
    cases: &[(&str, Vec<u8>, Want)],
) {
    for (what, raw, want) in cases {
        let before = up.count();
        let ex = exchange(pki, "campaigns", mg, raw).await;
        assert_eq!(ex.replies.len(), 1, "{what}: {ex:?}");
        let r = &ex.replies[0];
        let body = String::from_utf8_lossy(&r.body).to_string();
        let seen = up.seen();
        match *want {
            Want::Forwarded(target) => {
                assert_eq!(r.status, 200, "{what}: {body}");
                assert_eq!(r.json()["upstream_path"], target, "{what}");
                assert_eq!(seen.len(), before + 1, "{what}: {seen:?}");
                assert_eq!(seen[before].target, target, "{what}");
            }
            Want::Refused(status, code) => {
                assert_eq!(r.status, status, "{what}: {body}");
                assert_eq!(r.error(), code, "{what}: {body}");
                assert_eq!(seen.len(), before, "{what}: reached the upstream");
            }
            Want::Malformed(status) => {
                assert_eq!(r.status, status, "{what}: {body}");
                assert!(r.body.is_empty(), "{what}: {body}");
                assert_eq!(seen.len(), before, "{what}: reached the upstream");
            }
        }
        assert!(ex.closed, "{what}: the connection stayed open");
    }
    for s in up.seen() {
        assert_eq!(
            s.target.split('?').next(),
            Some(PUBLIC),
            "the upstream received {}",
            s.target
        );
    }
}
