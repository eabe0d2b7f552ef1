//! The upstream: a real HTTP/1.1 and HTTP/2 server the tests control, which
//! records every request it receives.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};

/// The upstream: a real HTTP server the tests control.
///
/// - `/headers` answers the request headers as a JSON list of [name, value]
/// - `/bytes/N` streams N deterministic bytes
/// - `/upload` answers `<len> <sha256>` of the body it received
/// - `/slow/MS` reports arrival on `arrivals`, waits MS, answers `slow done`
/// - anything else answers `{"upstream_path": "<target as received>"}`, after
///   reporting arrival and waiting MS when the query has `slow=MS`, or
///   until the test calls [`Upstream::release`]`(KEY)` when it has
///   `hold=KEY` (a request held open for exactly as long as the test
///   needs, whatever the load: no wall-clock window); with `stream=KEY`
///   the head and a first line go at once and the body ends (with a
///   last line) when the test releases KEY: a response streaming for as
///   long as the test needs; `ratelimit=1` adds the upstream's own
///   `RateLimit` and `RateLimit-Policy` (`"upstream"`) to the answer
pub struct Upstream {
    pub addr: SocketAddr,
    pub arrivals: Mutex<mpsc::Receiver<String>>,
    /// Every request that arrived, in order (recorded before it is answered).
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    arrivals_tx: mpsc::Sender<String>,
    holds: Arc<Holds>,
    server: Option<UpstreamServer>,
}

/// The keys of `hold=KEY` requests the test has released.
#[derive(Default)]
pub struct Holds {
    released: Mutex<std::collections::HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Holds {
    /// Returns when `key` is released (at once if it was already).
    async fn until_released(&self, key: &str) {
        loop {
            // Created before the check: a release in between still wakes it.
            let changed = self.changed.notified();
            if self.released.lock().expect("lock").contains(key) {
                return;
            }
            changed.await;
        }
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    /// Every header line, in order, value bytes as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    /// Every value of header `name` (lower case), lossily as text.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect()
    }
}

/// One run of the upstream's server thread: dropping `stop` ends it.
struct UpstreamServer {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

struct PatternBody {
    sent: u64,
    total: u64,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.total {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let n = (self.total - self.sent).min(64 * 1024);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

/// A body whose first chunk goes at once and whose last waits until its
/// key is released.
struct HeldBody {
    first: Option<Bytes>,
    released: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(released) = self.released.as_mut() else {
            return Poll::Ready(None);
        };
        if std::future::Future::poll(released.as_mut(), cx).is_pending() {
            return Poll::Pending;
        }
        self.released = None;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"last\n")))))
    }
}

type UpBody = http_body_util::Either<Full<Bytes>, http_body_util::Either<PatternBody, HeldBody>>;

pub fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Upstream {
    pub fn start() -> Upstream {
        let std_listener = StdListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = std_listener.local_addr().expect("addr");
        let (arrivals_tx, arr_rx) = mpsc::channel();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let holds: Arc<Holds> = Arc::default();
        let server = UpstreamServer::spawn(
            std_listener,
            arrivals_tx.clone(),
            seen.clone(),
            connections.clone(),
            holds.clone(),
        );
        Upstream {
            addr,
            arrivals: Mutex::new(arr_rx),
            seen,
            connections,
            arrivals_tx,
            holds,
            server: Some(server),
        }
    }

    /// Stops the server as a killed process would: the listener and every
    /// open connection are closed (in-flight requests get no answer), and
    /// the port refuses connections until [`Upstream::restart`].
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop.send(());
            server.thread.join().expect("upstream thread");
        }
    }

    /// Serves again on the same port after [`Upstream::kill`].
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the upstream is running");
        let std_listener = StdListener::bind(self.addr).expect("bind the upstream's port again");
        self.server = Some(UpstreamServer::spawn(
            std_listener,
            self.arrivals_tx.clone(),
            self.seen.clone(),
            self.connections.clone(),
            self.holds.clone(),
        ));
    }

    /// Lets every `hold=KEY` request (held now or arriving later) answer.
    pub fn release(&self, key: &str) {
        self.holds
            .released
            .lock()
            .expect("lock")
            .insert(key.to_string());
        self.holds.changed.notify_waiters();
    }

    /// The requests that arrived so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a `/slow` request reached the upstream.
    pub fn wait_arrival(&self) -> String {
        self.arrivals
            .lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(20))
            .expect("request reached the upstream")
    }
}

impl UpstreamServer {
    fn spawn(
        std_listener: StdListener,
        arr_tx: mpsc::Sender<String>,
        record: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
        holds: Arc<Holds>,
    ) -> UpstreamServer {
        std_listener.set_nonblocking(true).expect("nonblocking");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let arr_tx = Arc::new(Mutex::new(arr_tx));
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        connections.fetch_add(1, Ordering::SeqCst);
                        let arr_tx = arr_tx.clone();
                        let record = record.clone();
                        let holds = holds.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let arr_tx = arr_tx.clone();
                                let holds = holds.clone();
                                record_request(&record, &req);
                                async move {
                                    Ok::<_, std::convert::Infallible>(
                                        upstream_route(req, arr_tx, &holds).await,
                                    )
                                }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {},
                    _ = stop_rx => {},
                }
            });
            // Dropping the runtime drops every connection task: their sockets close.
            drop(rt);
        });
        UpstreamServer {
            stop: stop_tx,
            thread,
        }
    }
}

fn record_request<B>(seen: &Mutex<Vec<Seen>>, req: &http::Request<B>) {
    let entry = Seen {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    };
    seen.lock().expect("lock").push(entry);
}

async fn upstream_route(
    req: http::Request<hyper::body::Incoming>,
    arrivals: Arc<Mutex<mpsc::Sender<String>>>,
    holds: &Arc<Holds>,
) -> http::Response<UpBody> {
    let path = req.uri().path().to_string();
    let full = |s: String| http::Response::new(UpBody::Left(Full::new(Bytes::from(s))));
    if path == "/headers" {
        let list: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": list,
        });
        return full(body.to_string());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        return http::Response::new(UpBody::Right(http_body_util::Either::Left(PatternBody {
            sent: 0,
            total,
            trailers: None,
        })));
    }
    if path == "/trailers" {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        t.insert("grpc-message", http::HeaderValue::from_static("all good"));
        let te = req.headers().get("te").map(|v| v.as_bytes().to_vec());
        let mut resp =
            http::Response::new(UpBody::Right(http_body_util::Either::Left(PatternBody {
                sent: 0,
                total: 5,
                trailers: Some(t),
            })));
        if let Some(te) = te.and_then(|v| http::HeaderValue::from_bytes(&v).ok()) {
            resp.headers_mut().insert("x-seen-te", te);
        }
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        return resp;
    }
    if path == "/upload" {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0usize;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                len += d.len();
                ctx.update(d);
            }
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return full(format!("{len} {hex}"));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        let _ = arrivals.lock().map(|tx| tx.send(path.clone()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return full("slow done".into());
    }
    // Anything else: say exactly which target arrived; `?slow=MS` first
    // reports the arrival and waits MS (for routed paths under policies).
    let slow = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("slow=")))
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = slow {
        let _ = arrivals.lock().map(|tx| tx.send(path.clone()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let hold = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("hold=")));
    if let Some(key) = hold {
        let _ = arrivals.lock().map(|tx| tx.send(path.clone()));
        holds.until_released(key).await;
    }
    answer_by_query(&req, &path, &arrivals, holds)
}

/// The answer of a path no route names, as its query asks: streamed until
/// `stream=KEY` is released, or the target as received (with `ratelimit=1`,
/// and the upstream's own `RateLimit` headers).
fn answer_by_query<B>(
    req: &http::Request<B>,
    path: &str,
    arrivals: &Mutex<mpsc::Sender<String>>,
    holds: &Arc<Holds>,
) -> http::Response<UpBody> {
    let stream = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("stream=")));
    if let Some(key) = stream {
        let _ = arrivals.lock().map(|tx| tx.send(path.to_string()));
        let (holds, key) = (holds.clone(), key.to_string());
        return http::Response::new(UpBody::Right(http_body_util::Either::Right(HeldBody {
            first: Some(Bytes::from_static(b"first\n")),
            released: Some(Box::pin(async move { holds.until_released(&key).await })),
        })));
    }
    let body = serde_json::json!({ "upstream_path": req.uri().to_string() }).to_string();
    let mut resp = http::Response::new(UpBody::Left(Full::new(Bytes::from(body))));
    if req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "ratelimit=1"))
    {
        let h = resp.headers_mut();
        h.insert(
            "ratelimit",
            http::HeaderValue::from_static("\"upstream\";r=999;t=1"),
        );
        h.insert(
            "ratelimit-policy",
            http::HeaderValue::from_static("\"upstream\";q=1000;w=1"),
        );
    }
    resp
}

/// A free loopback port nobody listens on (bound then released).
pub fn unused_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
