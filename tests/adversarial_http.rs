//! Adversarial HTTP/1.1 requests against the real binary with the example
//! policies: the marketing `campaigns` service may describe the orders
//! product (`GET /orders/_schema`, the public path) and may not read it
//! (`/orders`, `/orders/{id}`, the protected paths), nor anything of the
//! customers or ledger products. Requests are written as raw bytes over mTLS
//! (no client library normalises them first) and the upstream records every
//! request that reaches it, so each case asserts the exact answer and exactly
//! what the upstream received: never a protected path.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const PUBLIC: &str = "/orders/_schema";
const FRAUD: &str = "spiffe://mesh.local/ns/risk/sa/fraud-scanner";

/// One HTTP response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of one of meshgate's own JSON refusals.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// What came back on one connection.
#[derive(Debug)]
struct Exchange {
    replies: Vec<Reply>,
    /// The server closed the connection (EOF seen within the deadline).
    closed: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses as many complete responses as `buf` holds; returns them and the
/// number of bytes they took.
fn parse_replies(buf: &[u8]) -> (Vec<Reply>, usize) {
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
async fn exchange(pki: &Pki, who: &str, mg: &Meshgate, raw: &[u8]) -> Exchange {
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
fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// What must come of one adversarial request.
#[derive(Debug, Clone, Copy)]
enum Want {
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
async fn run_cases(pki: &Pki, up: &Upstream, mg: &Meshgate, cases: &[(&str, Vec<u8>, Want)]) {
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

#[tokio::test]
async fn path_encodings_map_to_exactly_the_resource_authorised_or_are_refused() {
    use Want::*;
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let g = |t: &str| get(t);
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("the public path", g(PUBLIC), Forwarded(PUBLIC)),
        (
            "the protected path",
            g("/orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        // Encoded separators: never decoded into a separator.
        (
            "%2F",
            g("/orders/_schema%2F..%2FSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%2f",
            g("/orders/_schema%2f..%2fSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%2F in place of the separator",
            g("/orders%2FSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%5C",
            g("/orders/_schema%5C..%5CSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%5c",
            g("/orders/_schema%5c..%5cSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "raw backslashes",
            g("/orders/_schema\\..\\SO-1"),
            Refused(400, "bad_path"),
        ),
        ("%00", g("/orders/_schema%00"), Refused(400, "bad_path")),
        // Encoded dots are dots: resolved, then authorised as what they name.
        (
            "%2e%2e",
            g("/orders/_schema/%2e%2e/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2E%2E/",
            g("/orders/_schema/%2E%2E/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            ".%2e",
            g("/orders/_schema/.%2e/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2e.",
            g("/orders/_schema/%2e./SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2e%2e back to the public path",
            g("/orders/SO-1/%2e%2e/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "%2e%2e above the root",
            g("/orders/_schema/%2e%2e/%2e%2e/%2e%2e/x"),
            Refused(400, "bad_path"),
        ),
        // Overlong UTF-8 for `/` and `.`: not UTF-8, refused.
        (
            "%c0%af",
            g("/orders/_schema%c0%af..%c0%afSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%e0%80%af",
            g("/orders/_schema/%e0%80%af../SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%c0%ae%c0%ae",
            g("/orders/_schema/%c0%ae%c0%ae/SO-1"),
            Refused(400, "bad_path"),
        ),
        // Double encoding is decoded once: a literal `%2F` / `%5F` in a segment.
        (
            "%252F",
            g("/orders/_schema%252F..%252FSO-1"),
            Refused(403, "forbidden"),
        ),
        ("%255F", g("/orders/%255Fschema"), Refused(403, "forbidden")),
        // Empty and dot segments.
        ("//", g("//orders//_schema"), Forwarded(PUBLIC)),
        (
            "// to the protected path",
            g("//orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        ("/./", g("/./orders/./_schema"), Forwarded(PUBLIC)),
        (
            "/./../",
            g("/orders/_schema/./../SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "/public/../protected",
            g("/orders/_schema/../SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "/other/../public",
            g("/customers/../orders/_schema"),
            Forwarded(PUBLIC),
        ),
        // Matrix parameters.
        (
            ";jsessionid=",
            g("/orders/_schema;jsessionid=1"),
            Refused(400, "bad_path"),
        ),
        (
            "; in a segment",
            g("/orders;x=1/SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "; before ..",
            g("/orders/_schema;/../SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%3B",
            g("/orders/SO-1%3B/../_schema"),
            Refused(400, "bad_path"),
        ),
        // `?` and `#`: the query is not the path; encoded ones are text.
        (
            "?/../ in the query",
            g("/orders/_schema?/../SO-1"),
            Forwarded("/orders/_schema?/../SO-1"),
        ),
        ("%3F", g("/orders/SO-1%3F/../_schema"), Forwarded(PUBLIC)),
        ("%23", g("/orders/SO-1%23/../_schema"), Forwarded(PUBLIC)),
        (
            "%3F at the end",
            g("/orders/_schema%3F"),
            Refused(403, "forbidden"),
        ),
        (
            "%23 at the end",
            g("/orders/_schema%23"),
            Refused(403, "forbidden"),
        ),
        (
            "raw # before ..",
            g("/orders/SO-1#/../_schema"),
            Refused(403, "forbidden"),
        ),
        (
            "raw # after the public path",
            g("/orders/_schema#/../SO-1"),
            Forwarded(PUBLIC),
        ),
        // Other request-target forms.
        (
            "absolute-form, protected",
            g("https://localhost/orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "absolute-form, public",
            g("https://localhost/orders/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "absolute-form, another authority",
            g("http://evil.example/orders/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "authority-form CONNECT",
            b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n"
                .to_vec(),
            Refused(400, "bad_request"),
        ),
        (
            "CONNECT with a path",
            b"CONNECT /orders/_schema HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                .to_vec(),
            Refused(400, "bad_request"),
        ),
        (
            "OPTIONS *",
            b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
            Refused(400, "bad_request"),
        ),
        ("GET *", g("*"), Refused(400, "bad_request")),
        ("an empty target", g(""), Malformed(400)),
        ("a query only", g("?x"), Malformed(400)),
        ("a relative path", g("orders/_schema"), Malformed(400)),
        (
            "a raw byte that is not ASCII",
            {
                let mut raw = g("/orders/_sch@ema");
                let at = find(&raw, b"@").expect("marker");
                raw[at] = 0xff;
                raw
            },
            Malformed(400),
        ),
        // Case and trailing slashes are significant.
        ("upper case", g("/ORDERS/_schema"), Refused(404, "no_route")),
        (
            "a trailing slash",
            g("/orders/_schema/"),
            Refused(404, "no_route"),
        ),
    ];
    run_cases(&pki, &up, &mg, &cases).await;
    // Exactly the forwarded cases reached the upstream.
    let forwarded = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, Want::Forwarded(_)))
        .count();
    assert_eq!(up.count(), forwarded);
}

#[tokio::test]
async fn duplicate_conflicting_and_malformed_headers_never_smuggle_a_request() {
    use Want::*;
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    // A request to the protected path, as it would be hidden in a body.
    const HIDDEN: &str = "GET /orders/SO-1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let raw = |head: &str, body: &str| format!("{head}\r\n{body}").into_bytes();
    let public = |headers: &str| format!("GET /orders/_schema HTTP/1.1\r\n{headers}");
    let close = "Connection: close\r\n";
    let host = "Host: localhost\r\n";
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("Host twice", raw(&public(&format!("{host}Host: evil.example\r\n{close}")), ""), Refused(400, "bad_request")),
        ("Host twice, the same", raw(&public(&format!("{host}{host}{close}")), ""), Refused(400, "bad_request")),
        ("no Host", raw(&public(close), ""), Refused(400, "bad_request")),
        (
            "absolute-form authority and a conflicting Host",
            raw(&format!("GET https://localhost/orders/_schema HTTP/1.1\r\nHost: evil.example\r\n{close}"), ""),
            Forwarded(PUBLIC),
        ),
        (
            "absolute-form to the protected path, Host elsewhere",
            raw(&format!("GET https://evil.example/orders/SO-1 HTTP/1.1\r\n{host}{close}"), ""),
            Refused(403, "forbidden"),
        ),
        // CL.TE and TE.CL: the hidden request is never served, the
        // connection is closed after the response (RFC 9112 6.1).
        (
            "Content-Length and Transfer-Encoding (CL.TE)",
            raw(&public(&format!("{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")), &format!("0\r\n\r\n{HIDDEN}")),
            Forwarded(PUBLIC),
        ),
        (
            "Transfer-Encoding and Content-Length (TE.CL)",
            raw(
                &public(&format!("{host}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n")),
                &format!("{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len()),
            ),
            Forwarded(PUBLIC),
        ),
        (
            "a request in a body framed by Content-Length",
            raw(&public(&format!("{host}Content-Length: {}\r\n{close}", HIDDEN.len())), HIDDEN),
            Forwarded(PUBLIC),
        ),
        ("two different Content-Lengths", raw(&public(&format!("{host}Content-Length: 5\r\nContent-Length: 6\r\n{close}")), "abcdef"), Malformed(400)),
        ("a Content-Length list", raw(&public(&format!("{host}Content-Length: 5, 5\r\n{close}")), "abcde"), Malformed(400)),
        ("Content-Length: +5", raw(&public(&format!("{host}Content-Length: +5\r\n{close}")), "abcde"), Malformed(400)),
        (
            "the same Content-Length twice",
            raw(&public(&format!("{host}Content-Length: 5\r\nContent-Length: 5\r\n{close}")), "abcde"),
            Forwarded(PUBLIC),
        ),
        ("Transfer-Encoding: chunked, identity", raw(&public(&format!("{host}Transfer-Encoding: chunked, identity\r\n{close}")), "0\r\n\r\n"), Malformed(400)),
        ("Transfer-Encoding: xchunked", raw(&public(&format!("{host}Transfer-Encoding: xchunked\r\n{close}")), "0\r\n\r\n"), Malformed(400)),
        (
            "Transfer-Encoding folded onto a second line",
            raw(&public(&format!("{host}Transfer-Encoding:\r\n chunked\r\n{close}")), "0\r\n\r\n"),
            Malformed(400),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            raw(&format!("GET /orders/_schema HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n"), "0\r\n\r\n"),
            Malformed(400),
        ),
        (
            "Transfer-Encoding identity, then chunked",
            raw(&public(&format!("{host}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n{close}")), "0\r\n\r\n"),
            Forwarded(PUBLIC),
        ),
        ("obs-fold (tab)", raw(&public(&format!("{host}X-Folded: a\r\n\tb\r\n{close}")), ""), Malformed(400)),
        ("obs-fold (space)", raw(&public(&format!("{host}X-Folded: a\r\n b\r\n{close}")), ""), Malformed(400)),
        ("NUL in a value", raw(&public(&format!("{host}X-Nul: a\0b\r\n{close}")), ""), Malformed(400)),
        ("NUL in a name", raw(&public(&format!("{host}X-N\0ul: ab\r\n{close}")), ""), Malformed(400)),
        ("bare CR in a value", raw(&public(&format!("{host}X-Cr: a\rb\r\n{close}")), ""), Malformed(400)),
        ("space before the colon", raw(&public(&format!("Host : localhost\r\n{close}")), ""), Malformed(400)),
        (
            "bare LF line ends",
            b"GET /orders/_schema HTTP/1.1\nHost: localhost\nConnection: close\n\n".to_vec(),
            Forwarded(PUBLIC),
        ),
    ];
    run_cases(&pki, &up, &mg, &cases).await;
    let forwarded = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, Want::Forwarded(_)))
        .count();
    assert_eq!(
        up.count(),
        forwarded,
        "one upstream request per forwarded case"
    );
    // The absolute-form authority, not the conflicting Host, went upstream.
    let seen = up.seen();
    assert_eq!(seen[0].header("host"), vec!["localhost"]);

    // Pipelined requests are each authorised on their own: the protected
    // one is refused, and the upstream sees only the public one.
    let before = up.count();
    let mut two = format!("GET {PUBLIC} HTTP/1.1\r\n{host}\r\n").into_bytes();
    two.extend(get("/orders/SO-1"));
    let ex = exchange(&pki, "campaigns", &mg, &two).await;
    let statuses: Vec<u16> = ex.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 403], "{ex:?}");
    assert_eq!(up.count(), before + 1);
    assert_eq!(up.seen()[before].target, PUBLIC);

    // The declared purpose decides restricted data: policy and upstream
    // must see the same one, so two are refused.
    pki.client("fraud", Leaf::client_spiffe(FRAUD));
    let customer = |purposes: &[&str]| {
        let mut req = format!("GET /customers/C-7 HTTP/1.1\r\n{host}");
        for p in purposes {
            req.push_str(&format!("x-data-purpose: {p}\r\n"));
        }
        req.push_str(close);
        req.push_str("\r\n");
        req.into_bytes()
    };
    for (purposes, status) in [
        (&["fraud-investigation", "marketing"][..], 400),
        (&["marketing", "fraud-investigation"][..], 400),
        (&["fraud-investigation", "fraud-investigation"][..], 400),
        (&["marketing"][..], 403),
        (&["fraud-investigation"][..], 200),
    ] {
        let before = up.count();
        let ex = exchange(&pki, "fraud", &mg, &customer(purposes)).await;
        assert_eq!(ex.replies.len(), 1, "{purposes:?}: {ex:?}");
        let r = &ex.replies[0];
        assert_eq!(r.status, status, "{purposes:?}");
        if status == 200 {
            assert_eq!(up.count(), before + 1);
            let s = &up.seen()[before];
            assert_eq!(s.target, "/customers/C-7");
            assert_eq!(s.header("x-data-purpose"), vec!["fraud-investigation"]);
        } else {
            let code = if status == 400 {
                "bad_request"
            } else {
                "forbidden"
            };
            assert_eq!(r.error(), code, "{purposes:?}");
            assert_eq!(up.count(), before, "{purposes:?}: reached the upstream");
        }
    }
}

/// `GET` of the public path with extra header lines, last on its connection.
fn get_with(target: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The audit events of a file, one JSON object per line.
fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit file")
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn verified(path: &std::path::Path) -> String {
    let (ok, text) = audit_verify(&[path]);
    assert!(ok, "{text}");
    text
}

/// The trace id of a `traceparent` meshgate sent.
fn trace_id_of(traceparent: &str) -> String {
    assert_eq!(traceparent.len(), 55, "{traceparent}");
    assert!(traceparent.starts_with("00-"), "{traceparent}");
    traceparent[3..35].to_string()
}

#[tokio::test]
async fn spoofed_identity_forwarding_and_trace_headers_never_reach_the_upstream() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mut mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&audit)
        .start();
    // Every header meshgate sets for the upstream, sent by the client in
    // several spellings and more than once, and the forms an upstream may
    // read as the same thing (`_` for `-`, RFC 7239 `Forwarded`).
    let spoofed = [
        "x-meshgate-principal: spiffe://mesh.local/ns/sales/sa/etl",
        "X-MESHGATE-PRINCIPAL: spiffe://mesh.local/ns/sales/sa/etl",
        "X-Meshgate-Principal: spiffe://mesh.local/ns/admin/sa/root",
        "x_meshgate_principal: spiffe://mesh.local/ns/admin/sa/root",
        "X_Meshgate_User: root",
        "x-meshgate-user: root",
        "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://mesh.local/ns/sales/sa/etl",
        "X-Forwarded-Client-Cert: Hash=00;URI=spiffe://mesh.local/ns/admin/sa/root",
        "x_forwarded_client_cert: URI=spiffe://evil",
        "x-forwarded-for: 10.0.0.1",
        "X-Forwarded-For: 10.0.0.2, 10.0.0.3",
        "x_forwarded_for: 10.0.0.4",
        "x-forwarded-proto: http",
        "X_Forwarded_Proto: http",
        "x-forwarded-host: evil.example",
        "Forwarded: for=10.0.0.5;proto=http;host=evil.example",
        "x-request-id: spoofed-request-id",
        "X-Request-ID: 00000000000000000000000000000000",
        "x_request_id: third",
        "x-end-to-end: kept",
    ];
    let ex = exchange(&pki, "campaigns", &mg, &get_with(PUBLIC, &spoofed)).await;
    assert_eq!(ex.replies.len(), 1, "{ex:?}");
    let reply = &ex.replies[0];
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.target, PUBLIC);
    assert_eq!(s.header("x-meshgate-principal"), vec![CAMPAIGNS]);
    let xfcc = s.header("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{s:?}");
    assert!(
        xfcc[0].starts_with("Hash=") && xfcc[0].ends_with(&format!(";URI={CAMPAIGNS}")),
        "{}",
        xfcc[0]
    );
    assert_eq!(s.header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(s.header("x-forwarded-proto"), vec!["https"]);
    assert_eq!(s.header("forwarded"), vec!["for=127.0.0.1;proto=https"]);
    let request_id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert_eq!(request_id.len(), 32);
    assert_eq!(s.header("x-request-id"), vec![request_id.clone()]);
    assert_eq!(s.header("x-end-to-end"), vec!["kept"]);
    // Nothing else that looks like ours arrived, in any spelling.
    for (name, value) in &s.headers {
        let dashed = name.replace('_', "-");
        let ours = dashed.starts_with("x-meshgate-")
            || dashed.starts_with("x-forwarded-")
            || ["forwarded", "x-request-id", "traceparent"].contains(&dashed.as_str());
        if ours {
            assert!(
                [
                    "x-meshgate-principal",
                    "x-forwarded-client-cert",
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "forwarded",
                    "x-request-id",
                    "traceparent",
                ]
                .contains(&name.as_str()),
                "a client copy of {name} reached the upstream: {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
    let tp = s.header("traceparent");
    assert_eq!(tp.len(), 1, "{tp:?}");
    let mut sent = vec![(request_id, trace_id_of(&tp[0]))];

    // traceparent: continued only when there is exactly one valid header;
    // tracestate goes with the trace it belongs to.
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let cases: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "one valid header",
            vec![format!("traceparent: {VALID}")],
            true,
        ),
        (
            "the same valid header twice",
            vec![
                format!("traceparent: {VALID}"),
                format!("traceparent: {VALID}"),
            ],
            false,
        ),
        (
            "two different valid headers",
            vec![
                format!("traceparent: {VALID}"),
                "Traceparent: 00-11111111111111111111111111111111-2222222222222222-01".into(),
            ],
            false,
        ),
        (
            "all-zero trace id",
            vec!["traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()],
            false,
        ),
        (
            "all-zero parent id",
            vec![format!("traceparent: 00-{TRACE}-0000000000000000-01")],
            false,
        ),
        (
            "upper-case hex",
            vec![format!(
                "traceparent: 00-{}-00F067AA0BA902B7-01",
                TRACE.to_uppercase()
            )],
            false,
        ),
        (
            "version ff",
            vec![format!("traceparent: ff-{TRACE}-00f067aa0ba902b7-01")],
            false,
        ),
        (
            "too short",
            vec![format!("traceparent: 00-{TRACE}-00f067aa0ba902b7-1")],
            false,
        ),
        (
            "version 00 with a trailing field",
            vec![format!("traceparent: {VALID}-extra")],
            false,
        ),
        (
            "a trace id that is not hex",
            vec!["traceparent: 00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01".into()],
            false,
        ),
        (
            "spaces around the fields",
            vec![format!("traceparent: 00 -{TRACE}-00f067aa0ba902b7-01")],
            false,
        ),
    ];
    for (what, headers, continued) in &cases {
        let mut lines: Vec<&str> = headers.iter().map(String::as_str).collect();
        lines.push("tracestate: vendor=spoofed");
        let before = up.count();
        let ex = exchange(&pki, "campaigns", &mg, &get_with(PUBLIC, &lines)).await;
        assert_eq!(ex.replies.len(), 1, "{what}: {ex:?}");
        assert_eq!(ex.replies[0].status, 200, "{what}");
        let seen = up.seen();
        assert_eq!(seen.len(), before + 1, "{what}");
        let s = &seen[before];
        let tp = s.header("traceparent");
        assert_eq!(tp.len(), 1, "{what}: {tp:?}");
        let trace = trace_id_of(&tp[0]);
        for h in headers {
            assert!(
                !h.contains(&tp[0][36..52]),
                "{what}: the caller's span as parent"
            );
        }
        if *continued {
            assert_eq!(trace, TRACE, "{what}");
            assert!(tp[0].ends_with("-01"), "{what}: {}", tp[0]);
            assert_eq!(s.header("tracestate"), vec!["vendor=spoofed"], "{what}");
        } else {
            assert!(
                headers.iter().all(|h| !h.contains(&trace)),
                "{what}: continued {trace}"
            );
            assert_ne!(trace, "0".repeat(32), "{what}");
            assert!(tp[0].ends_with("-00"), "{what}: {}", tp[0]);
            assert!(s.header("tracestate").is_empty(), "{what}");
        }
        let id = ex.replies[0].header("x-request-id").expect("request id");
        assert_eq!(s.header("x-request-id"), vec![id.to_string()], "{what}");
        sent.push((id.to_string(), trace));
    }

    // The audit trail has one event per request, with the trace id the
    // upstream was given.
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let events = audit_events(&audit);
    assert_eq!(events.len(), sent.len());
    for (event, (id, trace)) in events.iter().zip(&sent) {
        assert_eq!(event["request_id"], id.as_str(), "{event}");
        assert_eq!(event["trace_id"], trace.as_str(), "{event}");
        assert_eq!(event["principal"]["id"], CAMPAIGNS, "{event}");
        assert_eq!(event["path"], PUBLIC, "{event}");
    }
    let ok = verified(&audit);
    assert!(ok.contains(&format!("ok: {} events", sent.len())), "{ok}");
}

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_and_the_proxy_keeps_serving() {
    use Want::*;
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .limit("max_header_bytes: 16384")
        .start();
    let big = |n: usize| "a".repeat(n);
    let many_large: Vec<String> = (0..30).map(|i| format!("x-h{i}: {}", big(1000))).collect();
    let many_small: Vec<String> = (0..150).map(|i| format!("x-h{i}: 1")).collect();
    let chunked = |target: &str, body: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}")
            .into_bytes()
    };
    let sized = |target: &str, len: usize| {
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            .into_bytes();
        raw.extend(std::iter::repeat_n(b'x', len));
        raw
    };
    let huge_size = "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n";
    let huge_extension = format!("5;{}\r\nabcde\r\n0\r\n\r\n", big(70_000));
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        // hyper answers 431 and closes: meshgate never sees a request.
        (
            "a header section over the limit",
            get_with(PUBLIC, &refs(&many_large)),
            Malformed(431),
        ),
        (
            "one header over the limit",
            get_with(PUBLIC, &[&format!("x-big: {}", big(20_000))]),
            Malformed(431),
        ),
        (
            "more than 100 headers",
            get_with(PUBLIC, &refs(&many_small)),
            Malformed(431),
        ),
        (
            "a query string over the limit",
            get(&format!("{PUBLIC}?{}", big(20_000))),
            Malformed(431),
        ),
        (
            "a path over the limit",
            get(&format!("/orders/{}", big(20_000))),
            Malformed(431),
        ),
        // Bodies have no size limit of their own (they stream); a denied
        // request's body goes nowhere, an allowed one's to the upstream.
        (
            "a chunk size past 64 bits, protected path",
            chunked("/orders/SO-1", huge_size),
            Refused(403, "forbidden"),
        ),
        (
            "a chunk size past 64 bits, public path",
            chunked(PUBLIC, huge_size),
            Forwarded(PUBLIC),
        ),
        (
            "a 70 kB chunk extension",
            chunked(PUBLIC, &huge_extension),
            Forwarded(PUBLIC),
        ),
        (
            "a 64 KiB body to the protected path",
            sized("/orders/SO-1", 64 * 1024),
            Refused(403, "forbidden"),
        ),
    ];
    run_cases(&pki, &up, &mg, &cases).await;
    assert_eq!(up.count(), 2);
    // The proxy keeps serving, on new connections and on a kept-alive one.
    let mut two = format!("GET {PUBLIC} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    two.extend(get(PUBLIC));
    let ex = exchange(&pki, "campaigns", &mg, &two).await;
    let statuses: Vec<u16> = ex.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200]);
    assert_eq!(up.count(), 4);
}

const DASHBOARD: &str = "spiffe://mesh.local/ns/reporting/sa/dashboard";
const ISSUER: &str = "https://idp.mesh.local";

/// An ES256 key of the identity provider, published in a JWKS file.
struct TokenKey {
    key: jsonwebtoken::EncodingKey,
}

impl TokenKey {
    fn new(jwks: &std::path::Path) -> TokenKey {
        use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some("k1".into());
        std::fs::write(jwks, serde_json::json!({ "keys": [jwk] }).to_string()).expect("jwks");
        TokenKey { key }
    }

    /// A token of a finance analyst whose subject is `sub`.
    fn token(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({ "iss": ISSUER, "sub": sub, "aud": "meshgate",
            "exp": now + 600, "groups": ["finance-analysts"] });
        jsonwebtoken::encode(&h, &claims, &self.key).expect("sign")
    }
}

#[tokio::test]
async fn control_characters_and_quotes_stay_inside_one_audit_line() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    pki.client("dashboard", Leaf::client_spiffe(DASHBOARD));
    // A certificate whose only name is a subject CN full of quotes,
    // backslashes, braces and non-ASCII line separators.
    let odd_cn = "Zo\u{eb} \"admin\" \\ {\"seq\":0}\u{2028}\u{85}end";
    let mut odd = Leaf::client_spiffe(CAMPAIGNS);
    odd.sans = vec![];
    odd.cn = Some(odd_cn.into());
    pki.client("odd", odd);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let jwks = pki.path("jwks.json");
    let key = TokenKey::new(&jwks);
    let mut mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&audit)
        .issuer(&format!(
            "issuer: {ISSUER}\naudiences: [meshgate]\njwks_file: {}",
            jwks.display()
        ))
        .start();
    let chain_field = format!("x\",\"chain\":\"{}\"}}", "0".repeat(64));
    // (who, raw request, status, what the event must say: field, value)
    let mut cases: Vec<(&str, Vec<u8>, u16, &str, String)> = Vec::new();
    // The user of a verified token is recorded: its subject is the
    // identity provider's text, anything JSON can hold.
    for sub in [
        "alice\n{\"seq\":0,\"type\":\"request\",\"decision\":\"allow\"}",
        "bob\r\nx-injected: 1",
        "nul\u{0}byte",
        "line\u{2028}sep\u{2029}para\u{85}nel",
        "quote\"back\\slash",
        chain_field.as_str(),
        "\u{1b}[31mred\u{7f}\u{8}\u{b}\u{c}",
        "emoji \u{1f600} and a lone \u{fffd}",
    ] {
        let raw = get_with(
            "/ledger/summary",
            &[&format!("Authorization: Bearer {}", key.token(sub))],
        );
        cases.push(("dashboard", raw, 200, "user", format!("{ISSUER}|{sub}")));
    }
    // Refused paths are recorded as sent.
    for path in [
        "/orders/%0a%0d%00",
        "/orders/\"quoted\"%2F",
        "/orders/{\"seq\":0}%2f",
        "/orders/%22%5c%0A",
    ] {
        cases.push(("campaigns", get(path), 400, "path", path.to_string()));
    }
    // An extension method made of every token character.
    cases.push((
        "campaigns",
        b"!#$%&'*+-.^_`|~09azAZ /orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            .to_vec(),
        405,
        "method",
        "!#$%&'*+-.^_`|~09azAZ".into(),
    ));
    // Trace and purpose headers with bytes that are not text.
    let mut junk = get_with(PUBLIC, &["traceparent: 00-\"\\ \t", "tracestate: a=\"b\""]);
    let at = find(&junk, b"\r\nConnection").expect("end of headers");
    junk.splice(at..at, b"\r\nx-obs-text: \xff\xfe\x80".iter().copied());
    cases.push(("campaigns", junk, 200, "path", PUBLIC.into()));
    cases.push((
        "campaigns",
        get_with(PUBLIC, &["x-data-purpose: \"fraud investigation\"\\n"]),
        400,
        "error",
        "bad_request".into(),
    ));
    // The odd certificate's principal.
    cases.push(("odd", get(PUBLIC), 403, "principal", format!("cn:{odd_cn}")));

    for (who, raw, status, _, _) in &cases {
        let ex = exchange(&pki, who, &mg, raw).await;
        assert_eq!(
            ex.replies.len(),
            1,
            "{:?}: {ex:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(
            ex.replies[0].status,
            *status,
            "{:?}: {:?}",
            String::from_utf8_lossy(raw),
            String::from_utf8_lossy(&ex.replies[0].body)
        );
    }
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let bytes = std::fs::read(&audit).expect("audit file");
    assert!(
        bytes.is_ascii(),
        "the audit file holds bytes that are not ASCII"
    );
    assert_eq!(bytes.last(), Some(&b'\n'));
    let lines: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), cases.len(), "one line per request");
    for (line, (_, _, status, field, value)) in lines.iter().zip(&cases) {
        let text = std::str::from_utf8(line).expect("utf-8");
        assert!(!text.contains('\r'), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v.is_object());
        assert_eq!(v["status"], *status, "{text}");
        let got = match *field {
            "principal" => &v["principal"]["id"],
            f => &v[f],
        };
        assert_eq!(got, value.as_str(), "{text}");
    }
    let ok = verified(&audit);
    assert!(ok.contains(&format!("ok: {} events", cases.len())), "{ok}");
}
