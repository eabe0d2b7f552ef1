//! The data product's own server on loopback: HTTP/1.1 over our keep-alive
//! pool, or HTTP/2 cleartext (h2c, e.g. gRPC) over hyper-util's client.
//! Returns its own error; the pipeline chooses the status.

mod body;
mod pool;
mod wait;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderName, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

pub use body::{BodyWatch, ClientBodyFault, CountedBody};
pub use pool::Lease;
use pool::{Pool, SendError};
pub use wait::Wait;

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How to speak to the upstream: `http1` (default) or `h2c` (HTTP/2 cleartext, e.g. gRPC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
}

/// Where the upstream is and how long to wait for it.
pub struct UpstreamSettings<'a> {
    pub authority: &'a Authority,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Cannot happen with a valid authority and path; kept rather than a panic.
    #[error("the request target cannot be sent upstream")]
    BadTarget,
    #[error("upstream refused the connection")]
    Unavailable,
    #[error("upstream failed: {0}")]
    Failed(String),
    #[error("upstream did not answer in time")]
    Timeout,
    /// The exchange failed because the client's request body did: the
    /// client's fault, not the upstream's. Its connection is not reused.
    #[error("the client's request body failed: {0:?}")]
    ClientBody(ClientBodyFault),
}

/// The pooled connections to the one upstream.
pub struct Upstream {
    transport: Transport,
    authority: Authority,
    /// `Host` for a request that named none (HTTP/1.0 without `Host`).
    host_header: Option<HeaderValue>,
    protocol: UpstreamProtocol,
    response_timeout: Duration,
}

enum Transport {
    /// HTTP/1.1: one request at a time per connection, our own pool.
    Http1(Pool),
    /// HTTP/2 without TLS: hyper-util's client multiplexes on one connection.
    H2c(Box<Client<HttpConnector, CountedBody>>),
}

// === impl Upstream ===

impl Upstream {
    pub fn new(s: &UpstreamSettings<'_>) -> Upstream {
        let authority = s.authority;
        let transport = match s.protocol {
            UpstreamProtocol::Http1 => Transport::Http1(Pool::new(
                authority.host(),
                authority.port_u16().unwrap_or(80),
                s.connect_timeout,
            )),
            UpstreamProtocol::H2c => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(s.connect_timeout));
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .http2_only(true);
                Transport::H2c(Box::new(builder.build(connector)))
            }
        };
        Upstream {
            transport,
            authority: authority.clone(),
            host_header: HeaderValue::from_str(authority.as_str()).ok(),
            protocol: s.protocol,
            response_timeout: s.response_timeout,
        }
    }

    /// The longest wait for a response (`timeouts.upstream_response`).
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The request as this upstream takes it, from one whose headers are
    /// ready but for the protocol's own: the version, `Host` (HTTP/1.1;
    /// `x-forwarded-host` on HTTP/2, which forbids a Host other than
    /// :authority) and the target, built from `target`. `original_host` is
    /// the host the client named.
    pub fn prepare(
        &self,
        mut parts: http::request::Parts,
        body: CountedBody,
        target: PathAndQuery,
        original_host: Option<HeaderValue>,
    ) -> Result<Request<CountedBody>, UpstreamError> {
        let headers = &mut parts.headers;
        match self.protocol {
            UpstreamProtocol::Http1 => {
                parts.version = Version::HTTP_11;
                let host = original_host.or_else(|| self.host_header.clone());
                if let Some(h) = host {
                    headers.insert(header::HOST, h);
                }
                // Origin-form target: the connection is to the upstream itself.
                parts.uri = Uri::from(target);
            }
            UpstreamProtocol::H2c => {
                parts.version = Version::HTTP_2;
                headers.remove(header::HOST);
                if let Some(h) = original_host {
                    headers.insert(X_FORWARDED_HOST, h);
                }
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(self.authority.clone());
                uri.path_and_query = Some(target);
                parts.uri = Uri::from_parts(uri).map_err(|_| UpstreamError::BadTarget)?;
            }
        }
        Ok(Request::from_parts(parts, body))
    }

    /// Sends a prepared request and waits for its response headers as
    /// `wait` bounds it (see `wait.rs`); an HTTP/1.1 response comes with
    /// the lease of its pooled connection.
    ///
    /// (An async block, not an async fn: an async fn's future holds each
    /// parameter twice, and every future up to the connection's holds
    /// this one.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds each parameter twice"
    )]
    pub fn send(
        &self,
        req: Request<CountedBody>,
        wait: Wait,
    ) -> impl Future<Output = Result<(Response<Incoming>, Option<Lease>), UpstreamError>> + '_ {
        async move {
            let watch = req.body().watch();
            let sent = match &self.transport {
                Transport::Http1(pool) => {
                    let sending = pin!(pool.send(req));
                    match wait::within(wait, &watch, sending).await {
                        None => Err(UpstreamError::Timeout),
                        Some(Err(SendError::Connect)) => Err(UpstreamError::Unavailable),
                        Some(Err(SendError::Failed(e))) => {
                            Err(UpstreamError::Failed(error_chain(&e)))
                        }
                        Some(Ok((resp, lease))) => Ok((resp, Some(lease))),
                    }
                }
                Transport::H2c(client) => {
                    let sending = pin!(client.request(req));
                    match wait::within(wait, &watch, sending).await {
                        None => Err(UpstreamError::Timeout),
                        Some(Err(e)) if e.is_connect() => Err(UpstreamError::Unavailable),
                        Some(Err(e)) => Err(UpstreamError::Failed(error_chain(&e))),
                        Some(Ok(resp)) => Ok((resp, None)),
                    }
                }
            };
            // A failure that follows a broken request body is the client's, and
            // so is a timeout while the body waited for the client's bytes.
            let fault = match &sent {
                Ok(_) => None,
                Err(UpstreamError::Timeout) => watch.fault_at_timeout(),
                Err(_) => watch.fault(),
            };
            match fault {
                Some(fault) => Err(UpstreamError::ClientBody(fault)),
                None => sent,
            }
        }
    }
}

/// An error with its sources, `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
