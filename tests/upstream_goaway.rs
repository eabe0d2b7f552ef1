//! An h2c upstream that closes its connections gracefully (gRPC's
//! `max_connection_age`, a rolling restart) or refuses a stream must cost
//! no request: every stream it took is answered, every request it did not
//! take goes again (on a new connection after a GOAWAY) with its body
//! whole, none runs twice. The upstream here is the `h2` crate's server,
//! scripted: a graceful GOAWAY after every stream it accepts, so that
//! dozens of requests in flight meet a connection going away; or each
//! request's first stream refused (`REFUSED_STREAM`) and its second
//! answered before its body is read, through a 1 KiB window, so that the
//! answer overtakes the replayed body; or every stream held unanswered,
//! so that the sidecar's timeout must reset it at the upstream.
//! (hyper's HTTP/2 client, which meshgate used before, failed a request it
//! had already sent when the GOAWAY was read between its send and its next
//! readiness check: 502s by the hundred in this test.)

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

/// What the scripted upstream does with its streams.
#[derive(Clone, Copy)]
enum Script {
    /// A graceful shutdown after each stream accepted.
    CloseAfterEach,
    /// Every stream taken and never answered; the reset that ends it,
    /// reported.
    Hold,
    /// A request's first stream (by its `x-key`) refused once up to
    /// [`REFUSE_AFTER`] bytes of its body came; its second answered at
    /// once, its body read after the answer's head.
    RefuseFirst,
    /// The first connection allows no stream (`MAX_CONCURRENT_STREAMS` 0);
    /// later ones answer.
    NoStreamsOnFirst,
    /// No connection allows a stream.
    NoStreams,
}

/// How much of a body the upstream reads before it refuses the stream
/// (RFC 9113 lets it: the bytes were received, not processed). More than
/// one DATA frame of 16 KiB, so that the sidecar has several frames to
/// send again, and the answer can overtake them.
const REFUSE_AFTER: usize = 40 * 1024;

/// The scripted upstream, on a thread of its own.
struct ScriptedUpstream {
    addr: SocketAddr,
    /// Streams taken by a handler (executions).
    taken: Arc<AtomicUsize>,
    /// Streams refused unread.
    refused: Arc<AtomicUsize>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// The reset of each held stream (`Script::Hold`).
    resets: std::sync::mpsc::Receiver<h2::Reason>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedUpstream {
    fn start(script: Script) -> ScriptedUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (reset_tx, resets) = std::sync::mpsc::channel();
        let counts = Counts {
            taken: Arc::default(),
            refused: Arc::default(),
            seen: Arc::default(),
            resets: reset_tx,
        };
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (k, c) = (counts.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let index = c.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(serve(tcp, script, index, k.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        ScriptedUpstream {
            addr,
            taken: counts.taken,
            refused: counts.refused,
            connections,
            resets,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// What the upstream counts, and the keys it has refused once.
#[derive(Clone)]
struct Counts {
    taken: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    resets: std::sync::mpsc::Sender<h2::Reason>,
}

impl Target for ScriptedUpstream {
    fn target_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A sidecar (two workers) speaking h2c to `up`.
fn sidecar(pki: &Pki, up: &ScriptedUpstream) -> Sidecar {
    Meshgate::builder(pki, up).extra("upstream_protocol: h2c\n")
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection, as `script` says. Each stream taken is answered
/// `<method> <body bytes> <body's sha256>`. The socket lingers after the
/// close, its remaining input read and dropped, as a server should: closed
/// with unread input, the kernel would answer a reset, and the reset can
/// overtake the GOAWAY still unread in the client's buffer, turning streams
/// the server never took into streams lost mid-flight.
async fn serve(tcp: tokio::net::TcpStream, script: Script, index: usize, counts: Counts) {
    let Ok(raw) = tcp.into_std() else {
        return;
    };
    let linger = raw.try_clone().and_then(tokio::net::TcpStream::from_std);
    let Ok(tcp) = tokio::net::TcpStream::from_std(raw) else {
        return;
    };
    let mut builder = h2::server::Builder::new();
    if matches!(script, Script::RefuseFirst) {
        builder.initial_window_size(1024);
    }
    let no_streams = match script {
        Script::NoStreamsOnFirst => index == 0,
        Script::NoStreams => true,
        _ => false,
    };
    if no_streams {
        builder.max_concurrent_streams(0);
    }
    if let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await {
        while let Some(Ok((req, respond))) = conn.accept().await {
            let key = req
                .headers()
                .get("x-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let first = counts.seen.lock().expect("lock").insert(key);
            match script {
                Script::RefuseFirst if first => {
                    tokio::spawn(refuse(req, respond, counts.clone()));
                }
                Script::RefuseFirst => {
                    tokio::spawn(answer(req, respond, counts.clone(), true));
                }
                Script::Hold => {
                    tokio::spawn(hold(req, respond, counts.clone()));
                }
                Script::CloseAfterEach => {
                    tokio::spawn(answer(req, respond, counts.clone(), false));
                    conn.graceful_shutdown();
                }
                // (A stream over the limit is refused by `h2` itself.)
                Script::NoStreamsOnFirst | Script::NoStreams => {
                    tokio::spawn(answer(req, respond, counts.clone(), false));
                }
            }
        }
    }
    // The client closes its side once it has read the GOAWAY.
    if let Ok(mut rest) = linger {
        let mut sink = tokio::io::sink();
        let drain = tokio::io::copy(&mut rest, &mut sink);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    }
}

/// Takes a stream, reads its body, never answers; reports its reset.
async fn hold(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    counts: Counts,
) {
    counts.taken.fetch_add(1, Ordering::SeqCst);
    let mut body = req.into_body();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
    }
    if let Ok(reason) = std::future::poll_fn(|cx| respond.poll_reset(cx)).await {
        let _ = counts.resets.send(reason);
    }
}

/// Refuses a stream once [`REFUSE_AFTER`] bytes of its body (or all of
/// it) came.
async fn refuse(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    counts: Counts,
) {
    let mut body = req.into_body();
    let mut read = 0;
    while read < REFUSE_AFTER {
        let Some(Ok(data)) = body.data().await else {
            break;
        };
        read += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    respond.send_reset(h2::Reason::REFUSED_STREAM);
    counts.refused.fetch_add(1, Ordering::SeqCst);
}

/// Takes a stream: reads its body and answers what it read; with `early`,
/// the answer's head goes before the body is read.
async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    counts: Counts,
    early: bool,
) {
    counts.taken.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let head = || {
        http::Response::builder()
            .status(200)
            .body(())
            .expect("head")
    };
    let mut stream = None;
    if early {
        stream = respond.send_response(head(), false).ok();
    }
    let mut body = req.into_body();
    let mut read = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        read.extend_from_slice(&data);
        let _ = body.flow_control().release_capacity(data.len());
    }
    if !early {
        stream = respond.send_response(head(), false).ok();
    }
    let answer = format!("{method} {} {}", read.len(), sha256_hex(&read));
    if let Some(mut stream) = stream {
        let _ = stream.send_data(Bytes::from(answer), true);
    }
}

/// What the upstream answers for a request with `body`.
fn expected(method: &str, body: &[u8]) -> String {
    format!("{method} {} {}", body.len(), sha256_hex(body))
}

/// Sends `req`; the status and body as text.
async fn exchange(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
) -> (u16, String) {
    sender.ready().await.expect("sidecar connection");
    let resp = sender.send_request(req).await.expect("the sidecar answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_every_connection_gracefully_loses_and_repeats_no_request() {
    const TASKS: usize = 16;
    const EACH: usize = 60;
    let pki = Pki::new();
    let up = ScriptedUpstream::start(Script::CloseAfterEach);
    let mg = sidecar(&pki, &up).start();
    let sender = h2_sender::<Full<Bytes>>(&pki, "reporting", mg.data).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut sender = sender.clone();
        let url = mg.url("/orders");
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..EACH {
                // Half without a body, half with one (a gRPC call has one).
                let (req, expect) = if (t + i) % 2 == 0 {
                    let req = http::Request::get(&url).body(Full::new(Bytes::new()));
                    (req, expected("GET", b""))
                } else {
                    let body = vec![b'x'; 1000 + i];
                    let expect = expected("POST", &body);
                    let req = http::Request::post(&url).body(Full::new(Bytes::from(body)));
                    (req, expect)
                };
                let (status, body) = exchange(&mut sender, req.expect("request")).await;
                if status != 200 || body != expect {
                    failures.push(format!("{status} {body}"));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.expect("task"));
    }
    let total = TASKS * EACH;
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed, e.g. {:?}; the sidecar's failures: {}",
        failures.len(),
        &failures[..failures.len().min(5)],
        failed_lines(&mg)
    );
    // Each taken once: none lost, none run twice.
    assert_eq!(up.taken.load(Ordering::SeqCst), total);
    // And the upstream did close its connections as it went.
    let connections = up.connections.load(Ordering::SeqCst);
    assert!(connections > 10, "{connections} upstream connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_goes_again_with_its_whole_body_even_when_the_answer_overtakes_it() {
    let pki = Pki::new();
    let up = ScriptedUpstream::start(Script::RefuseFirst);
    let mg = sidecar(&pki, &up).start();
    let mut sender = h2_sender::<Full<Bytes>>(&pki, "reporting", mg.data).await;
    // Bodiless; within the window; 60 KiB (kept whole: its frames sent
    // again through the 1 KiB window while the answer's head is already
    // out); 200 KiB (longer than what is kept, but refused before more
    // than that was read).
    let sizes = [0usize, 700, 60 * 1024, 200 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let body: Vec<u8> = (0..size).map(|n| (n % 251) as u8).collect();
        let method = if size == 0 { "GET" } else { "POST" };
        let req = http::Request::builder()
            .method(method)
            .uri(mg.url("/orders"))
            .header("x-key", format!("k{i}"))
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let (status, answer) = exchange(&mut sender, req).await;
        assert_eq!(
            (status, answer.as_str()),
            (200, expected(method, &body).as_str()),
            "{size} bytes; the sidecar's failures: {}",
            failed_lines(&mg)
        );
    }
    assert_eq!(up.refused.load(Ordering::SeqCst), sizes.len());
    assert_eq!(up.taken.load(Ordering::SeqCst), sizes.len());
    // Refused streams do not close the connection: one was enough.
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    let again = mg
        .logs
        .dump()
        .lines()
        .filter(|l| l.contains("refused the stream unprocessed; sent again"))
        .count();
    assert_eq!(again, sizes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_sidecar_gives_up_on_is_reset_at_the_upstream() {
    let pki = Pki::new();
    let up = ScriptedUpstream::start(Script::Hold);
    let mg = sidecar(&pki, &up)
        .timeout("upstream_response: 300ms")
        .start();
    let mut sender = h2_sender::<Full<Bytes>>(&pki, "reporting", mg.data).await;
    for body in [
        Bytes::new(),
        Bytes::from_static(b"a body the upstream reads"),
    ] {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = http::Request::builder()
            .method(method)
            .uri(mg.url("/orders"))
            .body(Full::new(body))
            .expect("request");
        let (status, answer) = exchange(&mut sender, req).await;
        assert_eq!(status, 504, "{method}: {answer}");
        // The upstream is told to stop: its stream is cancelled, not left
        // open to count against its concurrency (a bounded wait, for the
        // reset to cross the loopback).
        let reason = up
            .resets
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the held stream is reset");
        assert_eq!(reason, h2::Reason::CANCEL, "{method}");
    }
    assert_eq!(up.taken.load(Ordering::SeqCst), 2);
}

/// An upstream whose connection allows no stream (`SETTINGS_MAX_CONCURRENT_
/// STREAMS` 0) held every request queued on that connection until its
/// timeout (504), and, each request keeping the connection in use, never
/// gave it up while traffic went on. A new connection is given out once the
/// upstream's SETTINGS are read; one that allows no stream is replaced, and
/// when the second one dialled for a request allows none either, the
/// request is refused at once (502), not held until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_that_allows_no_stream_is_replaced() {
    let pki = Pki::new();
    let up = ScriptedUpstream::start(Script::NoStreamsOnFirst);
    let mg = sidecar(&pki, &up).timeout("upstream_response: 60s").start();
    assert_eq!(statuses(&pki, &mg, 2).await, [200, 200]);
    assert_eq!(up.taken.load(Ordering::SeqCst), 2);
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);

    let none = ScriptedUpstream::start(Script::NoStreams);
    let mg = sidecar(&pki, &none)
        .timeout("upstream_response: 60s")
        .start();
    assert_eq!(statuses(&pki, &mg, 2).await, [502, 502]);
    assert_eq!(none.taken.load(Ordering::SeqCst), 0);
    // Two connections a request, no more.
    assert_eq!(none.connections.load(Ordering::SeqCst), 4);
}

/// `n` GETs of `/orders`, one after the other: their statuses.
async fn statuses(pki: &Pki, mg: &Meshgate, n: usize) -> Vec<u16> {
    let mut sender = h2_sender::<Full<Bytes>>(pki, "reporting", mg.data).await;
    let mut seen = Vec::new();
    for _ in 0..n {
        let req = http::Request::get(mg.url("/orders"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, _) = exchange(&mut sender, req).await;
        seen.push(status);
    }
    seen
}

/// The sidecar's `request failed` log lines, a few of them.
fn failed_lines(mg: &Meshgate) -> String {
    let dump = mg.logs.dump();
    let lines: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains("request failed"))
        .take(3)
        .collect();
    lines.join("\n")
}
