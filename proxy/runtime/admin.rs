//! The admin listener (plain HTTP, its own port) of the sidecar and of the
//! injector's webhook alike: `/live`, `/ready`, `/metrics` (OpenMetrics to
//! a scraper that asks for it, the Prometheus text format to anyone else),
//! and the routes a process adds (the sidecar's `/policy`). GET and HEAD
//! only (405); anything else is 404.
//!
//! Here, not in `observe/`, because it chooses HTTP statuses; the webhook
//! (`k8s/`) may import the runtime.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::observe::exposition;
use crate::transport::listener::Acceptor;

/// What differs between the processes serving an admin port.
pub trait Admin: Send + Sync + 'static {
    /// The bodies of the probes' answers.
    const PROBES: Probes;

    /// 200 on `/ready` (else 503).
    fn is_ready(&self) -> bool;

    /// The metrics, in OpenMetrics text.
    fn metrics(&self) -> String;

    /// An answer to a GET of a path the admin port does not know itself.
    fn route(&self, _path: &str) -> Option<Response<Full<Bytes>>> {
        None
    }
}

/// The bodies of the probes' answers. They differ by process (the sidecar
/// says `live`/`ready`, the injector `ok`) and stay so: a script may read them.
pub struct Probes {
    pub live: &'static str,
    pub ready: &'static str,
    pub not_ready: &'static str,
}

/// Admin connections served at once with keep-alive. Beyond them a
/// connection is served briefly (see [`MAX_BRIEF`]); beyond those it is
/// closed at once. So an idle or stuck scraper cannot take the process's
/// file descriptors (the data listener's accepts would then fail), and
/// connections held open do not queue the kubelet's probes behind them.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served beyond [`MAX_CONNECTIONS`]: one request each, its
/// head within [`BRIEF_HEAD`], the whole exchange within [`BRIEF_LIFETIME`].
pub const MAX_BRIEF: usize = 192;
/// See [`MAX_BRIEF`].
pub const BRIEF_HEAD: Duration = Duration::from_secs(1);
/// See [`MAX_BRIEF`].
pub const BRIEF_LIFETIME: Duration = Duration::from_secs(2);
/// How long one admin connection is served; it is then closed gracefully
/// (after the answer being written, if any), and dropped [`CLOSE_GRACE`]
/// later whatever it is doing: a client that pipelines requests and never
/// reads the answers would otherwise hold the connection, and megabytes of
/// socket buffers, for ever. Prometheus and the kubelet reconnect.
pub const LIFETIME: Duration = Duration::from_secs(30);
/// See [`LIFETIME`].
pub const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// How many admin connections, and for how long.
struct Limits {
    open: Arc<Semaphore>,
    brief: Arc<Semaphore>,
    lifetime: Duration,
    grace: Duration,
    /// A brief connection's head timeout and lifetime.
    brief_head: Duration,
    brief_lifetime: Duration,
}

/// Serves the admin port until the task is dropped.
pub async fn serve<A: Admin>(listener: TcpListener, admin: Arc<A>) {
    let limits = Limits {
        open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        brief: Arc::new(Semaphore::new(MAX_BRIEF)),
        lifetime: LIFETIME,
        grace: CLOSE_GRACE,
        brief_head: BRIEF_HEAD,
        brief_lifetime: BRIEF_LIFETIME,
    };
    serve_within(listener, admin, limits).await
}

async fn serve_within<A: Admin>(listener: TcpListener, admin: Arc<A>, limits: Limits) {
    let mut acceptor = Acceptor::new(listener, "admin");
    loop {
        let (tcp, _) = acceptor.accept().await;
        let (permit, brief) = match limits.open.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match limits.brief.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                // Closed at once: the fd is back before the next accept.
                Err(_) => continue,
            },
        };
        let admin = admin.clone();
        let (lifetime, grace) = match brief {
            false => (limits.lifetime, limits.grace),
            true => (limits.brief_lifetime, Duration::ZERO),
        };
        let head = match brief {
            false => Duration::from_secs(10),
            true => limits.brief_head,
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&*admin, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(!brief)
                .header_read_timeout(head)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            if tokio::time::timeout(lifetime, conn.as_mut()).await.is_err() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(grace, conn).await;
            }
            drop(permit);
        });
    }
}

fn route<A: Admin, B>(admin: &A, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, A::PROBES.live),
        "/ready" if admin.is_ready() => text(StatusCode::OK, A::PROBES.ready),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, A::PROBES.not_ready),
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = exposition::negotiate(accept, admin.metrics());
            with_type(Response::new(Full::new(Bytes::from(body))), content_type)
        }
        path => admin
            .route(path)
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    with_type(resp, "text/plain; charset=utf-8")
}

/// `resp` with its `Content-Type`.
pub fn with_type(
    mut resp: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        ready: bool,
        /// Bytes of filler in the metrics.
        filler: usize,
    }

    impl Admin for Fake {
        const PROBES: Probes = Probes {
            live: "alive\n",
            ready: "yes\n",
            not_ready: "no\n",
        };
        fn is_ready(&self) -> bool {
            self.ready
        }
        fn metrics(&self) -> String {
            format!(
                "# HELP x {}\n# TYPE x counter\nx_total 1\n# EOF\n",
                "x".repeat(self.filler)
            )
        }
        fn route(&self, path: &str) -> Option<Response<Full<Bytes>>> {
            (path == "/extra").then(|| Response::new(Full::new(Bytes::from_static(b"extra"))))
        }
    }

    fn get(
        admin: &Fake,
        method: Method,
        path: &str,
        accept: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        route(admin, &req.body(()).expect("request"))
    }

    fn content_type(resp: &Response<Full<Bytes>>) -> &str {
        resp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn probes_metrics_extra_routes_and_the_rest() {
        let up = Fake {
            ready: true,
            filler: 0,
        };
        let down = Fake {
            ready: false,
            filler: 0,
        };
        assert_eq!(
            get(&up, Method::GET, "/live", None).status(),
            StatusCode::OK
        );
        assert_eq!(
            get(&up, Method::HEAD, "/ready", None).status(),
            StatusCode::OK
        );
        assert_eq!(
            get(&down, Method::GET, "/ready", None).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let m = get(&up, Method::GET, "/metrics", None);
        assert_eq!(content_type(&m), exposition::PROMETHEUS_TEXT);
        let m = get(
            &up,
            Method::GET,
            "/metrics",
            Some("application/openmetrics-text"),
        );
        assert_eq!(content_type(&m), exposition::OPENMETRICS);
        assert_eq!(
            get(&up, Method::GET, "/extra", None).status(),
            StatusCode::OK
        );
        let nope = get(&up, Method::GET, "/nope", None);
        assert_eq!(nope.status(), StatusCode::NOT_FOUND);
        assert_eq!(content_type(&nope), "text/plain; charset=utf-8");
        assert_eq!(
            get(&up, Method::POST, "/live", None).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    async fn admin_port(filler: usize, limits: Limits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = Arc::new(Fake {
            ready: true,
            filler,
        });
        tokio::spawn(serve_within(listener, admin, limits));
        addr
    }

    /// Beyond the cap a connection is served briefly: one request, then
    /// closed (a probe is not queued behind idle connections); beyond the
    /// brief ones it is closed at once. Before the cap, every connection
    /// was kept: idle ones re-opened as they timed out took the process's
    /// file descriptors, and the data port's accepts failed.
    #[tokio::test]
    async fn connections_beyond_the_cap_are_served_briefly_then_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let brief = Arc::new(Semaphore::new(1));
        let addr = admin_port(
            0,
            Limits {
                open: Arc::new(Semaphore::new(2)),
                brief: brief.clone(),
                lifetime: LIFETIME,
                grace: CLOSE_GRACE,
                // Generous: the test writes its request only after another
                // connection was refused (a loaded runner may take a while).
                brief_head: Duration::from_secs(30),
                brief_lifetime: Duration::from_secs(60),
            },
        )
        .await;
        let _idle = [
            tokio::net::TcpStream::connect(addr).await.expect("connect"),
            tokio::net::TcpStream::connect(addr).await.expect("connect"),
        ];
        // Accepted in order: this one is the third, served briefly.
        let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut fourth = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 256];
        // The fourth finds no place: closed without an answer.
        let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        third
            .write_all(b"GET /live HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut got))
            .await
            .expect("answered and closed")
            .expect("read");
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        // Its place is free again.
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut poll = tokio::time::interval(Duration::from_millis(10));
            while brief.available_permits() < 1 {
                poll.tick().await;
            }
        })
        .await
        .expect("the brief place is given back");
    }

    /// A client that pipelines scrapes and never reads the answers: the
    /// connection is closed at the end of its lifetime and grace, its
    /// buffers freed. Before, it stayed open for as long as the client
    /// wanted, each holding megabytes of kernel send queue.
    #[tokio::test]
    async fn a_client_that_never_reads_is_dropped_after_its_lifetime() {
        use tokio::io::AsyncWriteExt;
        let open = Arc::new(Semaphore::new(4));
        let addr = admin_port(
            64 * 1024,
            Limits {
                open: open.clone(),
                brief: Arc::new(Semaphore::new(0)),
                lifetime: Duration::from_millis(200),
                grace: Duration::from_millis(200),
                brief_head: BRIEF_HEAD,
                brief_lifetime: BRIEF_LIFETIME,
            },
        )
        .await;
        let mut stuck = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // Writes until the server stops reading, then blocks until the
        // connection is dropped (reset: the server had requests unread).
        let written = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let req = b"GET /metrics HTTP/1.1\r\nhost: a\r\n\r\n".repeat(64);
                if stuck.write_all(&req).await.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(written.is_ok(), "the connection was never closed");
        // Its place is free again.
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut poll = tokio::time::interval(Duration::from_millis(10));
            while open.available_permits() < 4 {
                poll.tick().await;
            }
        })
        .await
        .expect("the connection's place returned");
    }
}
