//! The load generator: rustls with hyper (HTTP/1.1) and h2 (HTTP/2)
//! clients in a runtime of their own, every request with a deadline and its
//! outcome recorded.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// The request interval of each client of the 100-reload tests: at most
/// 200 requests a second in all, so that the reloads under test get some
/// of the two CPUs the test machine has.
pub(crate) const PACE: Duration = Duration::from_millis(20);

/// How long a test waits for an event it expects (responses of a kind, a log
/// line, a metric, connections closing) before it fails. It bounds a wait
/// on an event, it is no window the event must fall into: a loaded machine
/// makes a test slower, never wrong, and only a hang spends all of it.
pub(crate) const EVENT_WAIT: Duration = Duration::from_secs(60);

/// No request may take longer than this, whatever the fault.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// How a client uses connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    /// HTTP/1.1, one connection kept for every request (replaced only when
    /// the server closed it).
    KeepAlive,
    /// HTTP/1.1, a new connection (TCP + TLS handshake) for every request.
    Fresh,
    /// HTTP/2, one connection shared by this many concurrent streams.
    H2(usize),
}

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) who: &'static str,
    /// Read at each new connection, so a test can rotate it.
    pub(crate) tls: Arc<RwLock<Arc<rustls::ClientConfig>>>,
    pub(crate) path: String,
    pub(crate) mode: Mode,
    /// At most one request per this interval (per stream for HTTP/2); none:
    /// as fast as responses come.
    pub(crate) pace: Option<Duration>,
}

impl Client {
    pub(crate) fn new(
        who: &'static str,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        mode: Mode,
    ) -> Client {
        Client::shared(who, Arc::new(RwLock::new(tls)), path, mode)
    }

    pub(crate) fn shared(
        who: &'static str,
        tls: Arc<RwLock<Arc<rustls::ClientConfig>>>,
        path: &str,
        mode: Mode,
    ) -> Client {
        Client {
            who,
            tls,
            path: path.to_string(),
            mode,
            pace: None,
        }
    }

    pub(crate) fn paced(mut self, every: Duration) -> Client {
        self.pace = Some(every);
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Response {
        status: u16,
        request_id: String,
        body: String,
    },
    /// The TCP connection was refused: nothing listens.
    Refused,
    /// TCP connected (or not, for another reason than a refusal), but no
    /// TLS session came of it.
    Handshake(String),
    /// The request was not sent: the connection closed before it was
    /// written, or the server's GOAWAY refused it (HTTP/2).
    NotSent(String),
    /// The request was written (HTTP/2: queued, and not refused by a
    /// GOAWAY); the connection ended without a response.
    NoResponse(String),
    /// The response headers came; the body did not end.
    BodyCut(String),
    /// No outcome within [`DEADLINE`].
    Deadline,
}

impl Outcome {
    pub(crate) fn kind(&self) -> String {
        match self {
            Outcome::Response { status, body, .. } => match error_code(body) {
                Some(code) if *status >= 400 => format!("{status} {code}"),
                _ => status.to_string(),
            },
            Outcome::Refused => "refused".into(),
            Outcome::Handshake(_) => "handshake failed".into(),
            Outcome::NotSent(_) => "not sent".into(),
            Outcome::NoResponse(_) => "no response".into(),
            Outcome::BodyCut(_) => "body cut".into(),
            Outcome::Deadline => "DEADLINE".into(),
        }
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The `error` field of one of meshgate's JSON error bodies.
pub(crate) fn error_code(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["error"].as_str().map(str::to_string)
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) client: usize,
    pub(crate) who: &'static str,
    /// The W3C trace id sent in `traceparent` (meshgate audits it).
    pub(crate) trace_id: String,
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
    /// Sent on a connection that had carried a request before.
    pub(crate) reused: bool,
    pub(crate) outcome: Outcome,
}

impl Record {
    /// A request of client `id` that ends now.
    pub(crate) fn now(
        client: usize,
        who: &'static str,
        trace_id: String,
        sent: Instant,
        reused: bool,
        outcome: Outcome,
    ) -> Self {
        Record {
            client,
            who,
            trace_id,
            sent,
            done: Instant::now(),
            reused,
            outcome,
        }
    }

    pub(crate) fn took(&self) -> Duration {
        self.done - self.sent
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) records: Mutex<Vec<Record>>,
    pub(crate) changed: Condvar,
    /// Every server certificate a handshake was offered (DER).
    pub(crate) server_certs: Mutex<HashSet<Vec<u8>>>,
}

impl Shared {
    pub(crate) fn push(&self, r: Record) {
        self.records.lock().expect("lock").push(r);
        self.changed.notify_all();
    }
}

pub(crate) struct Load {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Bounds of one load run.
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    /// Requests per client task at most.
    pub(crate) max_per_client: u64,
    /// A client stops at its first refused connection (the listener is gone).
    pub(crate) stop_on_refused: bool,
}

pub(crate) const BOUNDED: Bounds = Bounds {
    max_per_client: 20_000,
    stop_on_refused: false,
};

impl Load {
    pub(crate) fn start(addr: SocketAddr, clients: Vec<Client>, bounds: Bounds) -> Load {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("load runtime");
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        let mut id = 0;
        for c in clients {
            match c.mode {
                Mode::KeepAlive | Mode::Fresh => {
                    tasks.push(rt.spawn(h1_loop(shared.clone(), id, addr, c, bounds)));
                    id += 1;
                }
                Mode::H2(streams) => {
                    let conn = Arc::new(tokio::sync::Mutex::new(None));
                    for _ in 0..streams {
                        tasks.push(rt.spawn(h2_stream(
                            shared.clone(),
                            id,
                            addr,
                            c.clone(),
                            conn.clone(),
                            bounds,
                        )));
                        id += 1;
                    }
                }
            }
        }
        Load { rt, shared, tasks }
    }

    /// Waits until `pred` holds for the records so far; fails after `limit`.
    pub(crate) fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&[Record]) -> bool) {
        let deadline = Instant::now() + limit;
        let mut records = self.shared.records.lock().expect("lock");
        loop {
            if pred(&records) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "load: no {what} within {limit:?}; so far {:?}",
                summary(&records)
            );
            records = self
                .shared
                .changed
                .wait_timeout(records, deadline - now)
                .expect("lock")
                .0;
        }
    }

    /// Stops every client (each ends its request in flight, within the
    /// deadline) and returns the record.
    pub(crate) fn finish(self) -> (Vec<Record>, Arc<Shared>) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let tasks = self.tasks;
        self.rt.block_on(async {
            for t in tasks {
                t.await.expect("client task");
            }
        });
        let records = std::mem::take(&mut *self.shared.records.lock().expect("lock"));
        (records, self.shared)
    }
}

pub(crate) fn summary(records: &[Record]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(format!("{} {}", r.who, r.outcome.kind()))
            .or_insert(0) += 1;
    }
    m
}

pub(crate) fn trace_ids(client: usize, seq: u64) -> (String, String) {
    let trace = format!("fa17{:012x}{:016x}", client, seq + 1);
    let parent = format!("{:016x}", seq + 1);
    (trace.clone(), format!("00-{trace}-{parent}-01"))
}

/// A request rate: a tick per interval; a late request delays the next
/// tick instead of bunching the missed ones.
pub(crate) fn pacer(every: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(every);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

pub(crate) type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

pub(crate) async fn open(
    shared: &Shared,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Tls, Outcome> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            _ => Outcome::Handshake(format!("connect: {e}")),
        })?;
    let _ = tcp.set_nodelay(true);
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| Outcome::Handshake(e.to_string()))?;
    if let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        shared
            .server_certs
            .lock()
            .expect("lock")
            .insert(leaf.to_vec());
    }
    Ok(stream)
}

pub(crate) type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A failed hyper call: was the request written?
pub(crate) fn send_error(e: &hyper::Error) -> Outcome {
    let text = error_text(e);
    if e.is_canceled() {
        Outcome::NotSent(text)
    } else {
        Outcome::NoResponse(text)
    }
}

pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The request id meshgate answered with (empty: none).
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub(crate) async fn read_response(
    r: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Outcome {
    let resp = match r {
        Ok(r) => r,
        Err(e) => return send_error(&e),
    };
    let status = resp.status().as_u16();
    let request_id = request_id(resp.headers());
    match resp.into_body().collect().await {
        Ok(b) => Outcome::Response {
            status,
            request_id,
            body: String::from_utf8_lossy(&b.to_bytes()).to_string(),
        },
        Err(e) => Outcome::BodyCut(error_text(&e)),
    }
}

/// One HTTP/1.1 request, on the kept connection or a new one.
pub(crate) async fn h1_attempt(
    shared: &Shared,
    addr: SocketAddr,
    c: &Client,
    conn: &mut Option<(H1, u64)>,
    traceparent: &str,
) -> (Outcome, bool) {
    // A connection the server has closed meanwhile is replaced first.
    if let Some((s, _)) = conn.as_mut() {
        if s.ready().await.is_err() {
            *conn = None;
        }
    }
    if conn.is_none() {
        let tls = c.tls.read().expect("lock").clone();
        let stream = match open(shared, addr, tls).await {
            Ok(s) => s,
            Err(o) => return (o, false),
        };
        let (sender, driver) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(x) => x,
                Err(e) => return (Outcome::Handshake(error_text(&e)), false),
            };
        tokio::spawn(driver);
        *conn = Some((sender, 0));
    }
    let Some((sender, used)) = conn.as_mut() else {
        unreachable!("a connection was just opened")
    };
    let reused = *used > 0;
    *used += 1;
    if let Err(e) = sender.ready().await {
        return (send_error(&e), reused);
    }
    let req = http::Request::get(c.path.as_str())
        .header("host", "localhost")
        .header("traceparent", traceparent)
        .body(Empty::<Bytes>::new())
        .expect("request");
    (read_response(sender.send_request(req).await).await, reused)
}

pub(crate) async fn h1_loop(
    shared: Arc<Shared>,
    id: usize,
    addr: SocketAddr,
    c: Client,
    bounds: Bounds,
) {
    let mut conn: Option<(H1, u64)> = None;
    let mut pace = c.pace.map(pacer);
    for seq in 0..bounds.max_per_client {
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let (trace_id, traceparent) = trace_ids(id, seq);
        let sent = Instant::now();
        let (outcome, reused) = match tokio::time::timeout(
            DEADLINE,
            h1_attempt(&shared, addr, &c, &mut conn, &traceparent),
        )
        .await
        {
            Ok(x) => x,
            Err(_) => (Outcome::Deadline, true),
        };
        if c.mode == Mode::Fresh || !matches!(outcome, Outcome::Response { .. }) {
            conn = None;
        }
        let refused = outcome == Outcome::Refused;
        shared.push(Record::now(id, c.who, trace_id, sent, reused, outcome));
        if refused && bounds.stop_on_refused {
            break;
        }
    }
}

/// One stream task of an HTTP/2 client; the streams share one connection
/// and whichever finds it closed opens the next.
pub(crate) async fn h2_stream(
    shared: Arc<Shared>,
    id: usize,
    addr: SocketAddr,
    c: Client,
    conn: Arc<tokio::sync::Mutex<Option<H2Conn>>>,
    bounds: Bounds,
) {
    let mut pace = c.pace.map(pacer);
    for seq in 0..bounds.max_per_client {
        if let Some(p) = pace.as_mut() {
            p.tick().await;
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let (trace_id, traceparent) = trace_ids(id, seq);
        let sent = Instant::now();
        let attempt = async {
            let (sender, generation, reused) = {
                let mut slot = conn.lock().await;
                if slot.as_ref().is_some_and(H2Conn::is_over) {
                    *slot = None;
                }
                if slot.is_none() {
                    match h2_open(&shared, addr, &c).await {
                        Ok(opened) => *slot = Some(opened),
                        Err(o) => return (o, false),
                    }
                }
                let Some(open) = slot.as_mut() else {
                    unreachable!("a connection was just opened")
                };
                open.used += 1;
                (open.sender.clone(), open.generation, open.used > 1)
            };
            // Refused to open a stream (the server's GOAWAY came): nothing
            // was written; the next request takes a new connection.
            let refused = |e: h2::Error| {
                let conn = conn.clone();
                async move {
                    let mut slot = conn.lock().await;
                    if slot.as_ref().is_some_and(|o| o.generation == generation) {
                        *slot = None;
                    }
                    Outcome::NotSent(error_text(&e))
                }
            };
            let mut sender = match sender.ready().await {
                Ok(s) => s,
                Err(e) => return (refused(e).await, reused),
            };
            let req = http::Request::get(format!("https://localhost{}", c.path))
                .header("traceparent", traceparent.as_str())
                .body(())
                .expect("request");
            let response = match sender.send_request(req, true) {
                Ok((response, _)) => response,
                Err(e) => return (refused(e).await, reused),
            };
            (read_h2_response(response).await, reused)
        };
        let (outcome, reused) = match tokio::time::timeout(DEADLINE, attempt).await {
            Ok(x) => x,
            Err(_) => (Outcome::Deadline, true),
        };
        let refused = outcome == Outcome::Refused;
        shared.push(Record::now(id, c.who, trace_id, sent, reused, outcome));
        if refused && bounds.stop_on_refused {
            break;
        }
    }
}

/// An HTTP/2 connection of the load, shared by a client's streams.
///
/// On the `h2` crate rather than hyper's client: hyper's HTTP/2 dispatcher
/// checks readiness again after handing a request to `h2`, and when the
/// server's graceful GOAWAY lands in between (the connection's task runs
/// on the other thread) it reports the request as failed and cancels its
/// stream although the request was already written (hyperium/hyper#2500):
/// the SIGTERM test then saw a forwarded request cut by its own client.
/// With `h2`, `send_request` either queues the stream or refuses it.
pub(crate) struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    /// The connection's task: finished once the connection has closed.
    driver: tokio::task::JoinHandle<()>,
    /// Which connection this is (unique in the process).
    generation: u64,
    used: u64,
}

impl H2Conn {
    fn is_over(&self) -> bool {
        self.driver.is_finished()
    }
}

async fn h2_open(shared: &Shared, addr: SocketAddr, c: &Client) -> Result<H2Conn, Outcome> {
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut tls = (**c.tls.read().expect("lock")).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let stream = open(shared, addr, Arc::new(tls)).await?;
    let (sender, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| Outcome::Handshake(error_text(&e)))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(H2Conn {
        sender,
        driver,
        generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        used: 0,
    })
}

/// The response to a stream `h2` accepted (its HEADERS queued). A GOAWAY
/// from the server naming a lower last stream says the server never
/// processed it: not sent.
async fn read_h2_response(response: h2::client::ResponseFuture) -> Outcome {
    let resp = match response.await {
        Ok(r) => r,
        Err(e) if e.is_go_away() && e.is_remote() => return Outcome::NotSent(error_text(&e)),
        Err(e) => return Outcome::NoResponse(error_text(&e)),
    };
    let status = resp.status().as_u16();
    let request_id = request_id(resp.headers());
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            Err(e) => return Outcome::BodyCut(error_text(&e)),
        }
    }
    Outcome::Response {
        status,
        request_id,
        body: String::from_utf8_lossy(&bytes).to_string(),
    }
}
