//! One client connection of the data listener: TLS handshake, identity,
//! HTTP/1.1 or HTTP/2 by ALPN, the request path composed in one visible
//! place (`connection`), and what ends the connection besides its peer
//! (`drive`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use super::Sidecar;
use crate::model::connection::ConnInfo;
use crate::model::identity;
use crate::observe::metrics::{CloseReason, Metrics};
use crate::pipeline::request;
use crate::transport::frames;
use crate::transport::streams::{Streams, Verdict, Watch};
use crate::transport::tls;
use crate::transport::turns::{turn, turn_io, TurnFlush};

/// Counts an open connection for as long as it lives.
struct OpenConnection<'a>(&'a Metrics);

impl<'a> OpenConnection<'a> {
    fn new(m: &'a Metrics) -> Self {
        m.open_connections.inc();
        OpenConnection(m)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// One client connection: TLS handshake, identity, then HTTP until the
/// peer ends it or its life is over (see [`drive`]).
pub(super) async fn connection(
    sc: Arc<Sidecar>,
    tcp: TcpStream,
    peer: SocketAddr,
    draining: watch::Receiver<bool>,
) {
    let _open = OpenConnection::new(&sc.gate.metrics);
    let accepted = tokio::time::Instant::now();
    let _ = tcp.set_nodelay(true);
    let Some(Verified {
        stream,
        conn,
        h2,
        not_after,
    }) = handshake(&sc, tcp, peer).await
    else {
        return;
    };
    let expiry = Expiry::new(not_after);
    let timeouts = &sc.config.timeouts;
    let aged = timeouts
        .max_connection_age
        .map(|age| later(accepted, jittered(age)));

    // The request path, top to bottom, is request::handle: in-flight limit,
    // authorization, quotas, the upstream, metrics and the audit event.
    let svc_sc = sc.clone();
    let first = Arc::new(FirstRequest::default());
    let seen = first.clone();
    // HTTP/2: what its exchanges are doing, for `drive` (transport/streams.rs).
    let limits = &sc.config.limits;
    let streams = h2.then(|| Streams::new(limits.max_h2_streams, limits.max_h2_premature_resets));
    let svc_streams = streams.clone();
    let closed = Arc::new(ClosedOnce::default());
    let svc_closed = closed.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let sc = svc_sc.clone();
        let conn = conn.clone();
        seen.arrived();
        // Not forwarded with an identity whose certificate has expired,
        // whether or not `drive` has closed the connection yet.
        let expired = expiry.passed();
        // Dropped with the request's future before the answer: given up.
        let exchange = (!expired)
            .then(|| svc_streams.as_ref().map(|s| s.open()))
            .flatten();
        // HTTP/1.1 closes the connection with the refusal: its life's end,
        // counted here if `drive` has not counted it yet.
        if expired && !h2 {
            svc_closed.count(&sc.gate.metrics, CloseReason::CertificateExpired);
        }
        // Boxed: the request's future is some 3.4 KB, and hyper moves the
        // stream task holding it several times before it first runs.
        Box::pin(async move {
            if expired {
                tracing::debug!(peer = %conn.peer, "a request after the client certificate's notAfter: refused unprocessed");
                return Err(Expired::refusal());
            }
            let mut resp = request::handle(&sc.gate, &conn, req).await;
            if let Some(exchange) = exchange {
                resp.body_mut().watch(exchange);
            }
            Ok(resp)
        })
    });

    let activity = Activity::default();
    let lifetime = Lifetime {
        activity: &activity,
        idle: timeouts.idle,
        send: timeouts.send,
        streams: streams.as_deref(),
        draining,
        first: &first,
        first_by: accepted + timeouts.header_read,
        end: End::first(&expiry, aged),
        grace: timeouts.close_grace(),
        metrics: &sc.gate.metrics,
        closed: &closed,
        peer,
    };
    let cut = if h2 {
        // Many streams' responses in one poll of the connection: sent
        // together at its end (transport/turns.rs).
        let (stream, turns) = turn_io(stream);
        turns.defer();
        let io = TokioIo::new(IdleIo {
            inner: stream,
            activity: activity.clone(),
        });
        let cut = drive(sc.h2.serve_connection(io, svc), lifetime, Some(&turns)).await;
        if let Some((reason, code)) = cut.and_then(|r| goaway_code(r).map(|c| (r, c))) {
            turns.go_away(code, reason.as_bytes());
        }
        cut
    } else {
        let io = TokioIo::new(IdleIo {
            inner: stream,
            activity: activity.clone(),
        });
        drive(
            sc.h1.serve_connection(io, svc),
            lifetime,
            None::<&TurnFlush<tokio_rustls::server::TlsStream<TcpStream>>>,
        )
        .await
    };
    cut.inspect(|reason| cut_off(&sc.gate.metrics, peer, reason));
}

/// A client connection past its handshake, its peer verified.
struct Verified {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    conn: Arc<ConnInfo>,
    /// ALPN chose HTTP/2.
    h2: bool,
    /// The earliest notAfter of the client's certificate and of the
    /// intermediates it sent.
    not_after: SystemTime,
}

/// The TLS handshake and the client's identity; `None`: refused (counted
/// and logged).
async fn handshake(sc: &Sidecar, tcp: TcpStream, peer: SocketAddr) -> Option<Verified> {
    let acceptor = TlsAcceptor::from(sc.tls.server_config());
    let stream =
        match tokio::time::timeout(sc.config.timeouts.tls_handshake, acceptor.accept(tcp)).await {
            Err(_) => {
                sc.gate.metrics.handshake_failed("timeout");
                tracing::debug!(%peer, "tls handshake timed out");
                return None;
            }
            Ok(Err(e)) => {
                let reason = tls::handshake_failure_reason(&e);
                sc.gate.metrics.handshake_failed(reason);
                tracing::info!(%peer, reason, error = %e, "tls handshake refused");
                return None;
            }
            Ok(Ok(s)) => s,
        };

    let session = stream.get_ref().1;
    let Some(chain) = session.peer_certificates() else {
        sc.gate.metrics.handshake_failed("no_client_cert");
        return None;
    };
    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
        && !tls::chain_valid_now(chain)
    {
        sc.gate.metrics.handshake_failed("expired");
        tracing::info!(%peer, "a resumed TLS session's client certificate is no longer valid; closed");
        return None;
    }
    let Some((leaf, intermediates)) = chain.split_first() else {
        sc.gate.metrics.handshake_failed("no_client_cert");
        return None;
    };
    let identity = match identity::from_leaf(leaf) {
        Ok(id) => id,
        Err(e) => {
            sc.gate.metrics.handshake_failed(e.reason());
            tracing::warn!(%peer, error = %e, "client certificate names no usable identity");
            return None;
        }
    };
    let not_after = tls::intermediates_not_after(intermediates)
        .map_or(identity.not_after, |n| n.min(identity.not_after));
    let h2 = session.alpn_protocol() == Some(b"h2");
    let tls_version = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    let conn = Arc::new(ConnInfo::new(identity, peer, tls_version));
    tracing::debug!(%peer, principal = %conn.identity.principal, tls_version, h2, "connection established");
    Some(Verified {
        stream,
        conn,
        h2,
        not_after,
    })
}

/// A connection cut: an HTTP/2 one for what its streams did, any whose
/// graceful close outlasted its grace.
fn cut_off(metrics: &Metrics, peer: SocketAddr, reason: &'static str) {
    metrics.connection_cut(reason);
    tracing::info!(%peer, reason, "connection cut");
}

/// The error code of the GOAWAY that ends an HTTP/2 connection cut for
/// `reason` (its debug data); `None`: none is written.
fn goaway_code(reason: &str) -> Option<u32> {
    match reason {
        // As the h2 crate ends a connection for its own reset limits.
        "premature_resets" => Some(frames::ENHANCE_YOUR_CALM),
        // The client takes nothing: a frame behind those it has not taken
        // would not be read either, and is not waited for.
        "send_timeout" => None,
        // After a graceful GOAWAY that went unanswered, or whose grace ran
        // out: the client learns which of its streams were not taken up.
        _ => Some(frames::NO_ERROR),
    }
}

/// When a connection's client certificate chain stops being valid: from
/// then on its requests are refused unprocessed ([`Expired`]) and the
/// connection is closed ([`End`]).
#[derive(Clone, Copy)]
struct Expiry {
    not_after: SystemTime,
    /// The same instant on the monotonic clock, as seen at the handshake:
    /// the close's timer.
    at: tokio::time::Instant,
}

impl Expiry {
    fn new(not_after: SystemTime) -> Expiry {
        let left = not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Expiry {
            not_after,
            at: later(tokio::time::Instant::now(), left),
        }
    }

    /// notAfter has passed, by either clock (the wall clock may have been
    /// stepped since the handshake).
    fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at || SystemTime::now() >= self.not_after
    }
}

/// A request that arrived after its connection's client certificate
/// expired: not processed. HTTP/2 resets its stream with `REFUSED_STREAM`
/// (hyper finds the reason in the error's source), which tells the client
/// that it may send it again, on a new connection; HTTP/1.1 closes the
/// connection without an answer, as when a request is sent just as a
/// kept-alive connection closes.
#[derive(Debug, thiserror::Error)]
#[error("the connection's client certificate has expired: request refused unprocessed")]
struct Expired(#[source] h2::Error);

impl Expired {
    fn refusal() -> Expired {
        Expired(h2::Error::from(h2::Reason::REFUSED_STREAM))
    }
}

/// A connection's graceful close (`meshgate_connections_closed_total`),
/// counted once: by `drive` when it closes the connection, or by the
/// service when an HTTP/1.1 request refused for an expired certificate
/// closes it first.
#[derive(Default)]
struct ClosedOnce(AtomicBool);

impl ClosedOnce {
    fn count(&self, metrics: &Metrics, reason: CloseReason) {
        if !self.0.swap(true, Ordering::Relaxed) {
            metrics.connection_closed(reason);
        }
    }
}

/// When a connection's allowed life is over, and why: it is then closed
/// gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    at: tokio::time::Instant,
    reason: CloseReason,
}

impl End {
    /// The sooner of its certificate's expiry and its age limit.
    fn first(expiry: &Expiry, aged: Option<tokio::time::Instant>) -> End {
        match aged {
            Some(at) if at < expiry.at => End {
                at,
                reason: CloseReason::MaxAge,
            },
            _ => End {
                at: expiry.at,
                reason: CloseReason::CertificateExpired,
            },
        }
    }
}

/// The longest wait a timer is set for: tokio's own "far future".
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + by`, `by` at most [`FAR`] (a configured duration or a
/// certificate's notAfter may be centuries away; an `Instant` that far
/// would overflow).
fn later(from: tokio::time::Instant, by: Duration) -> tokio::time::Instant {
    from + by.min(FAR)
}

/// `age` ±10%, so that connections many clients opened together (a
/// rollout, a restart) do not all close, and reconnect, together.
fn jittered(age: Duration) -> Duration {
    Duration::try_from_secs_f64(age.as_secs_f64() * rand::random_range(0.9..=1.1)).unwrap_or(age)
}

/// Whether a connection has carried a request yet.
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: Notify,
}

impl FirstRequest {
    fn arrived(&self) {
        if !self.seen.swap(true, Ordering::AcqRel) {
            // A stored permit: a waiter that comes later returns at once.
            self.notify.notify_one();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        if !self.seen() {
            self.notify.notified().await;
        }
    }
}

/// What ends a connection besides the peer: no byte moving for `idle`,
/// shutdown, the end of its allowed life, and on HTTP/2 what its exchanges
/// do: a response frame not taken for `send`, no exchange for `idle`
/// (however many pings), too many exchanges given up.
struct Lifetime<'a> {
    activity: &'a Activity,
    idle: Duration,
    send: Duration,
    /// HTTP/2: the connection's exchanges.
    streams: Option<&'a Streams>,
    draining: watch::Receiver<bool>,
    first: &'a FirstRequest,
    /// When a client that has sent nothing yet stops being waited for.
    first_by: tokio::time::Instant,
    /// Its client certificate's notAfter or its age limit: closed
    /// gracefully then, and cut `grace` later.
    end: End,
    grace: Duration,
    metrics: &'a Metrics,
    /// Whether its graceful close has been counted.
    closed: &'a ClosedOnce,
    peer: SocketAddr,
}

/// Runs a connection until it ends, no byte has moved for `idle`, or it has
/// closed gracefully after shutdown began or at the end of its life
/// (HTTP/1.1: after the response in progress, with `Connection: close`;
/// HTTP/2: GOAWAY, open streams finish). Closed at the end of its life, it
/// is cut when its requests take longer than `grace` to finish; requests
/// that arrive after its certificate's notAfter, before it has closed (an
/// HTTP/2 stream opened before the client saw the GOAWAY), are refused by
/// the service ([`Expired`]).
///
/// A connection accepted before shutdown that has not carried a request yet
/// (its TLS handshake done or still under way, its first request perhaps on
/// the wire) is given until `timeouts.header_read` after its accept for that
/// request, which is then served: told to close gracefully at once, hyper
/// would close it unread, and the client, on a new connection, could not
/// know that it may retry.
///
/// `turns`: the connection's IO gathers its writes (transport/turns.rs),
/// sent after every poll of `conn`.
async fn drive<C: GracefulConnection, T: AsyncWrite + Unpin>(
    conn: C,
    mut life: Lifetime<'_>,
    turns: Option<&TurnFlush<T>>,
) -> Option<&'static str> {
    tokio::pin!(conn);
    // Draining, and waiting for the first request before closing.
    let mut waiting_first = false;
    // Told to close gracefully.
    let mut closing = false;
    // HTTP/2: its exchanges are looked at four times per `send` (or `idle`).
    let mut watch = Watch::default();
    let every = (life.send.min(life.idle) / 4).max(Duration::from_millis(1));
    let mut look_at = tokio::time::Instant::now() + every;
    // Closed gracefully for having no exchange: cut at the next look if
    // still open.
    let mut quiet_closing = false;
    // Told to close at the end of its life: cut at this instant.
    let mut cut_at = None;
    let abusive = async {
        match life.streams {
            Some(s) => s.abusive().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(abusive);
    loop {
        let idle_at = tokio::time::Instant::from_std(life.activity.last() + life.idle);
        tokio::select! {
            // Ended: by its client, or gracefully by meshgate (not a cut).
            _ = turn(conn.as_mut(), turns) => return None,
            _ = tokio::time::sleep_until(idle_at) => {
                if life.activity.last().elapsed() >= life.idle {
                    tracing::debug!("closing idle connection");
                    return None;
                }
            }
            () = &mut abusive => return Some("premature_resets"),
            _ = tokio::time::sleep_until(look_at), if life.streams.is_some() => {
                let now = tokio::time::Instant::now();
                look_at = now + every;
                let verdict = life.streams.map_or(Verdict::Fine, |s| s.check(&mut watch, now, life.send, life.idle));
                match verdict {
                    Verdict::SendStalled => return Some("send_timeout"),
                    // Its GOAWAY went unanswered (hyper waits for a ping's answer).
                    Verdict::Quiet if quiet_closing => return Some("idle_streams"),
                    Verdict::Quiet if !closing => {
                        life.closed.count(life.metrics, CloseReason::IdleStreams);
                        conn.as_mut().graceful_shutdown();
                        (closing, quiet_closing) = (true, true);
                    }
                    _ => {}
                }
            }
            // Its life is over: closed gracefully, then cut after the grace.
            _ = tokio::time::sleep_until(cut_at.unwrap_or(life.end.at)) => {
                if cut_at.is_some() {
                    return Some(life.end.reason.label());
                }
                if !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    life.closed.count(life.metrics, life.end.reason);
                    tracing::debug!(peer = %life.peer, reason = life.end.reason.label(), "closing the connection gracefully: its life is over");
                }
                cut_at = Some(later(tokio::time::Instant::now(), life.grace));
            }
            // (An error: the sender is gone, which also means draining.)
            _ = life.draining.changed(), if !waiting_first && !closing => {
                if life.first.seen() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    waiting_first = true;
                }
            }
            _ = life.first.wait(), if waiting_first && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(life.first_by), if waiting_first && !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// When a connection last moved a byte.
#[derive(Clone)]
struct Activity(Arc<AtomicU64>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Default for Activity {
    fn default() -> Self {
        let a = Activity(Arc::new(AtomicU64::new(0)));
        a.touch();
        a
    }
}

impl Activity {
    fn touch(&self) {
        let ms = epoch().elapsed().as_millis() as u64;
        if self.0.load(Ordering::Relaxed) != ms {
            self.0.store(ms, Ordering::Relaxed);
        }
    }

    fn last(&self) -> Instant {
        epoch() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// An IO stream that records activity for the idle timeout.
struct IdleIo<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_counted_once_whoever_closes_first() {
        let metrics = Metrics::new();
        let closed = ClosedOnce::default();
        closed.count(&metrics, CloseReason::CertificateExpired);
        closed.count(&metrics, CloseReason::CertificateExpired);
        closed.count(&metrics, CloseReason::MaxAge);
        let text = metrics.encode();
        let line = |reason: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "meshgate_connections_closed_total{{reason=\"{reason}\"}}"
                    ))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
        };
        assert_eq!(line("certificate_expired").as_deref(), Some("1"), "{text}");
        assert_eq!(line("max_age").as_deref(), Some("0"), "{text}");
    }

    #[test]
    fn a_connection_ends_at_the_sooner_of_its_certificate_and_its_age() {
        let now = tokio::time::Instant::now();
        let expiry = Expiry::new(SystemTime::now() + Duration::from_secs(3600));
        let cert = End::first(&expiry, None);
        assert_eq!(cert.reason, CloseReason::CertificateExpired);
        assert!(cert.at > now + Duration::from_secs(3590), "{cert:?}");
        assert_eq!(End::first(&expiry, Some(now + FAR)), cert);
        let aged = End::first(&expiry, Some(now + Duration::from_secs(60)));
        assert_eq!(aged.reason, CloseReason::MaxAge);
        assert_eq!(aged.at, now + Duration::from_secs(60));
    }

    #[test]
    fn an_expired_certificate_has_passed_at_once_and_a_far_one_is_bounded() {
        let gone = Expiry::new(SystemTime::now() - Duration::from_secs(1));
        assert!(gone.passed());
        let far = Expiry::new(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799));
        assert!(!far.passed());
        assert!(far.at <= tokio::time::Instant::now() + FAR);
        // A configured age that would overflow an Instant does not panic.
        let _ = later(tokio::time::Instant::now(), jittered(Duration::MAX));
    }

    #[test]
    fn the_age_is_jittered_by_a_tenth_either_way() {
        let age = Duration::from_secs(3600);
        let seen: Vec<Duration> = (0..200).map(|_| jittered(age)).collect();
        assert!(seen
            .iter()
            .all(|d| (age.mul_f64(0.9)..=age.mul_f64(1.1)).contains(d)));
        // Spread, not one value.
        let (lo, hi) = (seen.iter().min(), seen.iter().max());
        assert!(hi
            .zip(lo)
            .is_some_and(|(h, l)| *h - *l > Duration::from_secs(60)));
    }

    /// hyper resets an HTTP/2 stream with the reason of the `h2::Error` it
    /// finds among the service error's sources.
    #[test]
    fn a_refusal_carries_refused_stream_for_hyper_to_find() {
        let e = Expired::refusal();
        let reason = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<h2::Error>())
            .and_then(h2::Error::reason);
        assert_eq!(reason, Some(h2::Reason::REFUSED_STREAM));
    }
}
