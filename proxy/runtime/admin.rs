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

/// Serves the admin port until the task is dropped.
pub async fn serve<A: Admin>(listener: TcpListener, admin: Arc<A>) {
    let mut acceptor = Acceptor::new(listener, "admin");
    loop {
        let (tcp, _) = acceptor.accept().await;
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&*admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
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
            "# TYPE x counter\nx_total 1\n# EOF\n".into()
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
        let up = Fake { ready: true };
        let down = Fake { ready: false };
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
}
