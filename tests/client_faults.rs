//! A client's own faults are client errors, never upstream failures
//! (issue 23). An allowed request whose body breaks while it is forwarded
//! (malformed chunked framing, a connection closed before the declared
//! `Content-Length`, an HTTP/2 stream reset mid-body) is answered 400
//! `bad_request_body` (or audited 499 `client_closed_request` when the
//! client is gone), decision `allow`, counted in
//! `meshgate_request_body_errors_total` and as a 4xx, never as a 5xx of
//! the product; the upstream connection that saw the broken body is not
//! reused, and the next request to the upstream is served.
//!
//! Each fault is sent by hand over mTLS to the real binary: the request
//! head and a first good part of the body, then (once the upstream has the
//! request, so the fault happens mid-forward) the fault itself. The
//! upstream's `/upload` reads the whole body before it answers.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORDER_SERVICE: &str = "spiffe://mesh.local/ns/sales/sa/order-service";

/// Waits (at most 20 s) until the upstream has received `n` requests,
/// looking every few milliseconds: the request reached the upstream, so
/// what the client sends next arrives while the body is being forwarded.
async fn until_upstream_saw(up: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while up.count() < n {
        assert!(Instant::now() < deadline, "the upstream saw {}", up.count());
        tick.tick().await;
    }
}

/// Reads until the server closes the connection (at most 15 s); the
/// status and body of the one response, or `None` when none came.
async fn read_reply(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Option<(u16, serde_json::Value)> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut chunk = [0u8; 8192];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Some((status, json))
}

/// The request events of a trail, whole lines only (`common::trail`).
fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    trail::events(path)
        .into_iter()
        .filter(|e| e["type"] == "request")
        .collect()
}

/// A good upload on a new connection is served whole, over a new upstream
/// connection: the one that saw the broken body was not returned to the pool.
fn next_upload_is_served(pki: &Pki, mg: &Meshgate, up: &Upstream) {
    let dialled = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    let out = curl(
        pki,
        Some("orders"),
        &["--data-binary", "hello", &mg.url("/upload")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("5 {}", sha256_hex(b"hello")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        dialled + 1,
        "the upstream connection of the broken body was reused"
    );
}

/// Sends the head of a chunked upload and one good chunk; once the upstream
/// has the request, `fault`; the reply.
async fn chunked_fault(
    pki: &Pki,
    mg: &Meshgate,
    up: &Upstream,
    fault: &[u8],
) -> Option<(u16, serde_json::Value)> {
    let before = up.count();
    let mut tls = tls_connect(pki, "orders", mg.data).await;
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.flush().await.expect("flush");
    until_upstream_saw(up, before + 1).await;
    tls.write_all(fault).await.expect("write fault");
    tls.flush().await.expect("flush");
    read_reply(&mut tls).await
}

#[tokio::test]
async fn malformed_chunked_bodies_and_a_client_gone_mid_body_are_the_clients_faults() {
    let pki = Pki::with_clients(&[("orders", ORDER_SERVICE)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up).audit_file(&audit).start();
    // One good upload first: the pool holds an idle connection that the
    // first fault takes.
    next_upload_is_served(&pki, &mg, &up);

    let faults: [(&str, &[u8]); 3] = [
        ("an invalid chunk size", b"zz\r\nabc\r\n0\r\n\r\n"),
        (
            "an invalid chunk extension (a bare LF in it)",
            b"5;ext\nabcde\r\n0\r\n\r\n",
        ),
        ("a bare CR in the chunk framing", b"5\rXabcde\r\n0\r\n\r\n"),
    ];
    for (what, fault) in faults {
        let reply = chunked_fault(&pki, &mg, &up, fault).await;
        let (status, body) = reply.unwrap_or_else(|| panic!("{what}: no response"));
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "bad_request_body", "{what}: {body}");
        next_upload_is_served(&pki, &mg, &up);
    }

    // A Content-Length of 100 with 10 bytes sent, then the client closes.
    let before = up.count();
    let mut tls = tls_connect(&pki, "orders", mg.data).await;
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789";
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.flush().await.expect("flush");
    until_upstream_saw(&up, before + 1).await;
    tls.shutdown().await.expect("close");
    drop(tls);
    next_upload_is_served(&pki, &mg, &up);

    // 1 + 4 good uploads, 3 malformed, 1 gone: 9 events.
    mg.wait_metric("meshgate_audit_events_total", 9.0);
    mg.wait_metric(
        "meshgate_request_body_errors_total{product=\"\",reason=\"client_gone\"}",
        1.0,
    );
    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_request_body_errors_total{product=\"\",reason=\"malformed\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "meshgate_request_body_errors_total{product=\"\",reason=\"client_gone\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"4xx\"}"
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"2xx\"}"
        ),
        5.0,
        "{m}"
    );
    assert!(
        !m.contains("class=\"5xx\""),
        "a client fault counted as 5xx: {m}"
    );

    let events = audit_events(&audit);
    assert_eq!(events.len(), 9, "{events:?}");
    let faulty: Vec<_> = events.iter().filter(|e| e["status"] != 200).collect();
    let seen: Vec<(u64, &str, &str)> = faulty
        .iter()
        .map(|e| {
            (
                e["status"].as_u64().unwrap_or(0),
                e["error"].as_str().unwrap_or(""),
                e["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (400, "bad_request_body", "allow"),
            (400, "bad_request_body", "allow"),
            (400, "bad_request_body", "allow"),
            (499, "client_closed_request", "allow"),
        ],
        "{faulty:?}"
    );
    for e in &faulty {
        assert_eq!(e["path"], "/upload", "{e}");
    }
    for e in events.iter().filter(|e| e["status"] == 200) {
        assert_eq!(e["decision"], "allow", "{e}");
        assert!(e["error"].is_null(), "{e}");
    }
}

/// A request body from a channel: the frames the test sends, then the error
/// it sends (hyper's HTTP/2 client resets the stream when its body fails).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|r| r.map(|r| r.map(Frame::data)))
    }
}

#[tokio::test]
async fn an_http2_client_resetting_its_stream_mid_body_is_a_499_not_an_upstream_failure() {
    let pki = Pki::with_clients(&[("orders", ORDER_SERVICE)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up).audit_file(&audit).start();
    next_upload_is_served(&pki, &mg, &up);

    let mut sender = h2_sender::<ChannelBody>(&pki, "orders", mg.data).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(mg.url("/upload"))
        .body(ChannelBody(rx))
        .expect("request");
    let before = up.count();
    let response = tokio::spawn(sender.send_request(req));
    tx.send(Ok(Bytes::from_static(b"hello")))
        .await
        .expect("body open");
    until_upstream_saw(&up, before + 1).await;
    tx.send(Err(std::io::Error::other("the client gives up")))
        .await
        .expect("body open");
    let answered = response.await.expect("task");
    assert!(
        answered.is_err(),
        "the reset stream got a response: {answered:?}"
    );
    next_upload_is_served(&pki, &mg, &up);

    mg.wait_metric("meshgate_audit_events_total", 3.0);
    mg.wait_metric(
        "meshgate_request_body_errors_total{product=\"\",reason=\"client_gone\"}",
        1.0,
    );
    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"4xx\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        !m.contains("class=\"5xx\""),
        "a client fault counted as 5xx: {m}"
    );
    assert!(!m.contains("reason=\"malformed\""), "{m}");
    let events = audit_events(&audit);
    let reset: Vec<_> = events.iter().filter(|e| e["status"] != 200).collect();
    assert_eq!(reset.len(), 1, "{events:?}");
    assert_eq!(reset[0]["status"], 499, "{}", reset[0]);
    assert_eq!(reset[0]["error"], "client_closed_request", "{}", reset[0]);
    assert_eq!(reset[0]["decision"], "allow", "{}", reset[0]);
    assert_eq!(reset[0]["path"], "/upload", "{}", reset[0]);
}

/// An upload the client stops sending is the client's fault too: when the
/// upstream's response times out while the body waits for the client's
/// next bytes, the answer is 408 `request_body_timeout`, decision `allow`,
/// counted with `reason="stalled"`, as a 4xx and out of the request
/// duration histogram (the latency SLI), over HTTP/1.1 and HTTP/2. A
/// whole body the upstream then fails to answer in time, or an HTTP/2
/// stream with no declared length (a streaming call), stays the
/// upstream's 504.
#[tokio::test]
async fn an_upload_the_client_stops_sending_is_a_408_not_an_upstream_timeout() {
    let pki = Pki::with_clients(&[("orders", ORDER_SERVICE)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up)
        .audit_file(&audit)
        .timeout("upstream_response: 1s")
        .start();
    next_upload_is_served(&pki, &mg, &up);

    // HTTP/1.1: a chunked upload whose second chunk never comes.
    let before = up.count();
    let mut tls = tls_connect(&pki, "orders", mg.data).await;
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.flush().await.expect("flush");
    until_upstream_saw(&up, before + 1).await;
    let (status, body) = read_reply(&mut tls).await.expect("a response");
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "request_body_timeout", "{body}");
    next_upload_is_served(&pki, &mg, &up);

    // HTTP/2: a stream that declares 100 bytes, sends 5 and nothing more.
    // (Without a declared length, an open stream is a streaming call
    // waiting for its answer, as gRPC's are: its timeout stays a 504.)
    let mut sender = h2_sender::<ChannelBody>(&pki, "orders", mg.data).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(mg.url("/upload"))
        .header("content-length", "100")
        .body(ChannelBody(rx))
        .expect("request");
    tx.send(Ok(Bytes::from_static(b"hello")))
        .await
        .expect("body open");
    let resp = sender.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), 408);
    drop(tx);
    next_upload_is_served(&pki, &mg, &up);

    // HTTP/2, no declared length: an open stream waiting for its answer.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = http::Request::post(mg.url("/upload"))
        .body(ChannelBody(rx))
        .expect("request");
    tx.send(Ok(Bytes::from_static(b"hello")))
        .await
        .expect("body open");
    let resp = sender.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), 504);
    drop(tx);

    // The whole body sent, the upstream slower than the timeout: its 504.
    let out = curl(
        &pki,
        Some("orders"),
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
            "hello",
            &mg.url("/slow/3000"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "504");

    // 3 good uploads, 2 stalled, 2 timed out: 7 events.
    mg.wait_metric("meshgate_audit_events_total", 7.0);
    let m = mg.metrics();
    let value = |sample: &str| metric_value(&m, sample);
    assert_eq!(
        value("meshgate_request_body_errors_total{product=\"\",reason=\"stalled\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        value("meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"4xx\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        value("meshgate_requests_total{product=\"\",action=\"\",decision=\"allow\",class=\"5xx\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        value("meshgate_request_duration_seconds_count{product=\"\",decision=\"allow\"}"),
        5.0,
        "the stalled uploads were timed as the product's requests: {m}"
    );
    let seen: Vec<(u64, String)> = audit_events(&audit)
        .iter()
        .filter(|e| e["status"] != 200)
        .map(|e| {
            assert_eq!(e["decision"], "allow", "{e}");
            (
                e["status"].as_u64().unwrap_or(0),
                e["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected = [
        (408, "request_body_timeout"),
        (408, "request_body_timeout"),
        (504, "upstream_timeout"),
        (504, "upstream_timeout"),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(s, e)| (*s, e.to_string())).collect();
    assert_eq!(seen, expected);
}

/// A TLS record that does not decrypt, mid-body, ends the connection: the
/// client is gone (499 `client_closed_request`, `reason="client_gone"`),
/// not a malformed body that a 400 could still answer.
#[tokio::test]
async fn a_broken_tls_record_mid_body_is_a_client_gone() {
    let pki = Pki::with_clients(&[("orders", ORDER_SERVICE)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up).audit_file(&audit).start();
    let before = up.count();
    let mut tls = tls_connect(&pki, "orders", mg.data).await;
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789";
    tls.write_all(head.as_bytes()).await.expect("write head");
    tls.flush().await.expect("flush");
    until_upstream_saw(&up, before + 1).await;
    // An application-data record of 32 bytes that no key encrypted.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0x5a; 32]);
    let tcp = tls.get_mut().0;
    tcp.write_all(&record).await.expect("write record");
    tcp.flush().await.expect("flush");
    mg.wait_metric(
        "meshgate_request_body_errors_total{product=\"\",reason=\"client_gone\"}",
        1.0,
    );
    mg.wait_metric("meshgate_audit_events_total", 1.0);
    let m = mg.metrics();
    assert!(!m.contains("reason=\"malformed\""), "{m}");
    assert!(!m.contains("class=\"5xx\""), "{m}");
    let events = audit_events(&audit);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], 499, "{}", events[0]);
    assert_eq!(events[0]["error"], "client_closed_request", "{}", events[0]);
    assert_eq!(events[0]["decision"], "allow", "{}", events[0]);
}
