//! The data product's own server on loopback: HTTP/1.1 over our keep-alive
//! pool, or HTTP/2 cleartext (h2c, e.g. gRPC) on one shared connection
//! (`h2c/`). Returns its own error; the pipeline chooses the status.

mod body;
mod h2c;
mod pool;
mod wait;

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderName, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde::Deserialize;

pub use body::{BodyWatch, ClientBodyFault, CountedBody};
use h2c::H2c;
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
    /// HTTP/2 without TLS: every request a stream on one connection.
    H2c(H2c),
}

/// The upstream's response body, as its protocol delivers it.
pub enum UpstreamBody {
    Http1(Incoming),
    H2c(h2c::RecvBody),
}

/// Why an upstream's response body ended before its end.
pub type UpstreamBodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H2c(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Http1(b) => b.is_end_stream(),
            UpstreamBody::H2c(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Http1(b) => b.size_hint(),
            UpstreamBody::H2c(b) => b.size_hint(),
        }
    }
}

// === impl Upstream ===

impl Upstream {
    pub fn new(s: &UpstreamSettings<'_>) -> Upstream {
        let authority = s.authority;
        let transport = match s.protocol {
            UpstreamProtocol::Http1 => {
                Transport::Http1(Pool::new(Dialer::new(authority, s.connect_timeout)))
            }
            UpstreamProtocol::H2c => {
                Transport::H2c(H2c::new(Dialer::new(authority, s.connect_timeout)))
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
                if parts.version == Version::HTTP_2 {
                    join_cookies(headers);
                }
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
    ) -> impl Future<Output = Result<(Response<UpstreamBody>, Option<Lease>), UpstreamError>> + '_
    {
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
                        Some(Ok((resp, lease))) => Ok((resp.map(UpstreamBody::Http1), Some(lease))),
                    }
                }
                Transport::H2c(client) => {
                    let sending = pin!(client.send(req));
                    match wait::within(wait, &watch, sending).await {
                        None => Err(UpstreamError::Timeout),
                        Some(Err(h2c::SendError::Connect)) => Err(UpstreamError::Unavailable),
                        Some(Err(h2c::SendError::Failed(e))) => {
                            Err(UpstreamError::Failed(error_chain(&e)))
                        }
                        Some(Ok(resp)) => Ok((resp.map(UpstreamBody::H2c), None)),
                    }
                }
            };
            // No request asks for an upgrade (`Upgrade` is not forwarded): a
            // final 1xx (`101 Switching Protocols`) is a broken upstream, and
            // its connection (the lease, dropped) is not used again.
            let sent = match sent {
                Ok((resp, _)) if resp.status().is_informational() => {
                    Err(UpstreamError::Failed(format!(
                        "the upstream answered {} to a request for no upgrade",
                        resp.status()
                    )))
                }
                sent => sent,
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

/// Where the upstream is, and how long a connection to it may take.
struct Dialer {
    /// As a socket address takes it (an IPv6 literal without brackets).
    host: String,
    port: u16,
    timeout: Duration,
}

impl Dialer {
    fn new(authority: &Authority, timeout: Duration) -> Dialer {
        Dialer {
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: authority.port_u16().unwrap_or(80),
            timeout,
        }
    }

    /// A TCP connection to the upstream, without Nagle's delay; `None` when
    /// it is refused or not made in time.
    async fn connect(&self) -> Option<tokio::net::TcpStream> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .ok()?
            .ok()?;
        stream.set_nodelay(true).ok()?;
        Some(stream)
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

/// An HTTP/2 request's `cookie` fields (HTTP/2 lets a client send each
/// cookie as a field of its own, for compression) as the one field
/// HTTP/1.1 has, joined with `; ` (RFC 9113 8.2.3): a server reads one
/// `Cookie` line, often only the first.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    // (Each crumb was a valid value, and so is their join.)
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http2_requests_cookies_go_on_as_one_field() {
        let mut h = http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
    }
}
