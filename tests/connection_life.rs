//! A connection does not outlive what authorised it: it is closed
//! gracefully at its client certificate's notAfter (HTTP/1.1: after the
//! response in progress, with `Connection: close`; HTTP/2: GOAWAY, the
//! streams in flight finish), and a request that arrives after notAfter is
//! not forwarded; `timeouts.max_connection_age` closes it the same way, and
//! cuts it when its requests outlast `timeouts.max_connection_age_grace`.
//! The clients write their bytes by hand (HTTP/1.1 text, HTTP/2 frames:
//! `common/raw_h2.rs`), so that they can pipeline, open a stream after a
//! GOAWAY and answer the server's PING when the test says. Every wait is
//! for an event (a frame, the connection's end, a metric) under a generous
//! deadline; the only clock is the certificate's own notAfter.

mod common;

use std::time::{Duration, Instant};

use common::raw_h2::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the short-lived client certificates live (notAfter is written
/// to the second, so a little less): long enough for a loaded machine to
/// connect and send a request or two first.
const LIFE: i64 = 8;

const EXPIRED: &str = "meshgate_connections_closed_total{reason=\"certificate_expired\"}";
const EXPIRED_CUT: &str = "meshgate_connections_cut_total{reason=\"certificate_expired\"}";
const AGED: &str = "meshgate_connections_closed_total{reason=\"max_age\"}";
const AGED_CUT: &str = "meshgate_connections_cut_total{reason=\"max_age\"}";

/// Issues `brief`, a client certificate of [`LIFE`] seconds; when.
fn brief(pki: &Pki) -> Instant {
    let issued = Instant::now();
    pki.client(
        "brief",
        Leaf {
            valid_until: time::Duration::seconds(LIFE),
            ..Leaf::client_spiffe(REPORTING)
        },
    );
    issued
}

/// Fails the test plainly when its set-up took the certificate's whole life.
fn set_up_in_time(issued: Instant) {
    let life = Duration::from_secs(LIFE as u64 - 1);
    assert!(
        issued.elapsed() < life,
        "the set-up took {:?}, longer than the certificate lives: a machine this loaded cannot run this test",
        issued.elapsed()
    );
}

/// Blocking waits (the harness's metric and upstream waits) from an async test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Answers the PING that came with a graceful GOAWAY (read already, or
/// still to come): the server then sends its final GOAWAY.
async fn answer_the_goaways_ping(c: &mut RawH2) {
    if c.pings.is_empty() {
        c.until(|f| f.kind == PING && f.flags & ACK == 0).await;
    }
    c.answer_pings().await;
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n")
}

/// One HTTP/1.1 response (head and `Content-Length` body), as text.
async fn read_response(tls: &mut Tls) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .expect("a Content-Length");
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed before the response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Everything the sidecar sends until it closes the connection, as text.
async fn read_until_closed(tls: &mut Tls) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, tls.read(&mut buf)).await {
            Err(_) => panic!(
                "not closed in {WAIT:?}; got {}",
                String::from_utf8_lossy(&got)
            ),
            // A close without close_notify is a close too.
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&got).to_string(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// HTTP/1.1: a kept-alive connection with nothing in progress is closed at
/// notAfter; one with a response in progress gets it, with `Connection:
/// close`, and the request pipelined behind it is never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_close_at_the_client_certificates_not_after() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let issued = brief(&pki);

    let mut idle = tls_connect(&pki, "brief", mg.data).await;
    idle.write_all(get("/first").as_bytes())
        .await
        .expect("write");
    let first = read_response(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut busy = tls_connect(&pki, "brief", mg.data).await;
    let pipelined = get("/held?hold=k") + &get("/after");
    busy.write_all(pipelined.as_bytes()).await.expect("write");
    assert_eq!(blocking(|| up.wait_arrival()), "/held");
    set_up_in_time(issued);

    // notAfter: both are told to close.
    blocking(|| mg.wait_metric(EXPIRED, 2.0));
    assert_eq!(read_until_closed(&mut idle).await, "");
    up.release("k");
    let rest = read_until_closed(&mut busy).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(
        rest.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{rest}"
    );
    assert_eq!(rest.matches("HTTP/1.1 ").count(), 1, "{rest}");
    let targets: Vec<String> = up.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/first", "/held?hold=k"]);
    assert_eq!(mg.counter(EXPIRED), 2.0);
    assert_eq!(mg.counter(EXPIRED_CUT), 0.0);
}

/// HTTP/2: at notAfter a GOAWAY; a stream the client opens before it has
/// answered the GOAWAY's PING reaches the server and is refused
/// (`REFUSED_STREAM`), one opened after the final GOAWAY is ignored; the
/// stream in flight finishes, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_goaway_at_the_client_certificates_not_after() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let issued = brief(&pki);

    let mut c = RawH2::connect(&pki, "brief", mg.data).await;
    c.get(1, "/held?hold=k").await;
    assert_eq!(blocking(|| up.wait_arrival()), "/held");
    set_up_in_time(issued);

    // The first GOAWAY (2^31-1, with a PING to time the second): notAfter.
    let seen = c.until(|f| f.kind == GOAWAY).await;
    let first = seen.last().and_then(Frame::goaway);
    assert_eq!(first, Some((MAX_STREAM_ID, NO_ERROR)), "{seen:?}");
    assert!(!seen.iter().any(|f| f.stream == 1), "{seen:?}");
    // A new stream the server reads before its PING is answered.
    c.get(3, "/after").await;
    let seen = c.until(|f| f.stream == 3).await;
    let refused = seen.last().and_then(Frame::reset);
    assert_eq!(refused, Some(REFUSED_STREAM), "{seen:?}");
    // The final GOAWAY names it as the last stream taken up...
    answer_the_goaways_ping(&mut c).await;
    let seen = c.until(|f| f.kind == GOAWAY).await;
    let last = seen.last().and_then(Frame::goaway);
    assert_eq!(last, Some((3, NO_ERROR)), "{seen:?}");
    // ...and a stream past it is not taken up at all.
    c.get(5, "/later").await;

    // The stream in flight is answered, then the connection closes.
    up.release("k");
    let rest = c.until_closed().await;
    let on1: Vec<&Frame> = rest.iter().filter(|f| f.stream == 1).collect();
    assert!(on1.first().is_some_and(|f| f.is_ok_head()), "{rest:?}");
    assert!(on1.iter().any(|f| f.ends_stream()), "{rest:?}");
    assert!(!rest.iter().any(|f| f.stream == 5), "{rest:?}");
    let targets: Vec<String> = up.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/held?hold=k"]);
    assert_eq!(mg.counter(EXPIRED), 1.0);
    assert_eq!(mg.counter(EXPIRED_CUT), 0.0);
}

/// `timeouts.max_connection_age`: an HTTP/1.1 connection is closed, and an
/// HTTP/2 one gets its GOAWAYs and, its stream still held after the grace,
/// is cut. The certificates here live 30 days: the age closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_age_closes_and_its_grace_cuts() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .timeout("max_connection_age: 4s")
        .timeout("max_connection_age_grace: 1s")
        .start();
    let opened = Instant::now();
    let mut h1 = tls_connect(&pki, "reporting", mg.data).await;
    h1.write_all(get("/first").as_bytes()).await.expect("write");
    let first = read_response(&mut h1).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut c = RawH2::connect(&pki, "reporting", mg.data).await;
    c.get(1, "/held?hold=never").await;
    assert_eq!(blocking(|| up.wait_arrival()), "/held");
    // The earliest age with its jitter (4 s - 10%).
    assert!(
        opened.elapsed() < Duration::from_millis(3600),
        "the set-up took {:?}, longer than the connections may live: a machine this loaded cannot run this test",
        opened.elapsed()
    );

    assert_eq!(read_until_closed(&mut h1).await, "");
    let seen = c.until(|f| f.kind == GOAWAY).await;
    let first = seen.last().and_then(Frame::goaway);
    assert_eq!(first, Some((MAX_STREAM_ID, NO_ERROR)), "{seen:?}");
    answer_the_goaways_ping(&mut c).await;
    let seen = c.until(|f| f.kind == GOAWAY).await;
    assert_eq!(seen.last().and_then(Frame::goaway), Some((1, NO_ERROR)));
    // The held stream outlasts the grace: cut, unanswered, with a last
    // GOAWAY of meshgate's own (never naming a later stream than before).
    let rest = c.until_closed().await;
    assert!(!rest.iter().any(|f| f.stream == 1), "{rest:?}");
    let cut = rest.iter().rfind(|f| f.kind == GOAWAY);
    assert_eq!(cut.and_then(Frame::goaway), Some((1, NO_ERROR)), "{rest:?}");
    assert!(
        cut.is_some_and(|f| f.payload.ends_with(b"max_age")),
        "{rest:?}"
    );
    blocking(|| mg.wait_metric(AGED_CUT, 1.0));
    assert_eq!(mg.counter(AGED), 2.0);
    assert_eq!(mg.counter(AGED_CUT), 1.0);
    assert_eq!(mg.counter(EXPIRED), 0.0);
}
