//! The admin listener (plain HTTP, its own port): /live, /ready, /metrics.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::observe::exposition;
use crate::runtime::sidecar::Sidecar;

pub async fn serve(listener: TcpListener, sc: Arc<Sidecar>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let sc = sc.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let sc = sc.clone();
                async move { Ok::<_, Infallible>(route(&sc, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn route(sc: &Sidecar, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if sc.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/policy" => policy(sc),
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (body, content_type) = if exposition::wants_openmetrics(accept) {
                (sc.gate.metrics.encode(), exposition::OPENMETRICS)
            } else {
                (
                    exposition::to_prometheus_text(&sc.gate.metrics.encode()),
                    exposition::PROMETHEUS_TEXT,
                )
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `GET /policy`: which snapshot is live, and the last reload error.
fn policy(sc: &Sidecar) -> Response<Full<Bytes>> {
    let body = match &sc.gate.policy {
        None => serde_json::json!({ "mode": "authenticated", "version": null }),
        Some(store) => {
            let s = store.current();
            let last_error = store.last_error().map(|e| {
                serde_json::json!({
                    "at": humantime::format_rfc3339_seconds(e.at).to_string(),
                    "errors": e.errors,
                })
            });
            serde_json::json!({
                "mode": "enforcing",
                "version": &*s.version,
                "loaded_at": humantime::format_rfc3339_seconds(s.loaded_at).to_string(),
                "policies": s.policy_count(),
                "shadow_policies": s.shadow_policy_count(),
                "routes": s.routes().len(),
                "last_error": last_error,
            })
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
