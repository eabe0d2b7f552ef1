//! HTTP/2 cleartext to the upstream (h2c, e.g. gRPC or Arrow Flight), on
//! the `h2` crate's client: one connection, shared by every request and
//! replaced when it goes away.
//!
//! Why not hyper's client: after handing a request to `h2`, hyper's HTTP/2
//! dispatcher checks the connection again, and when the upstream's
//! graceful GOAWAY has been read in between (by the connection's task, on
//! another worker thread) it fails that request and cancels its stream,
//! although the stream was sent and the upstream, which serves every
//! stream up to the GOAWAY's last one, may be running it
//! (hyperium/hyper#2500). With an upstream that closes its connections
//! gracefully now and then (gRPC's `max_connection_age`, a restart), some
//! calls then failed with 502: about one in ten in tests/upstream_goaway.rs,
//! whose upstream closes after every stream. Here a request is either
//! refused by `h2` before it is sent (the connection is going away: it goes
//! again on a new one) or sent and answered; a stream the upstream refused
//! unprocessed (`REFUSED_STREAM`, or above the GOAWAY's last stream) goes
//! again, on a new connection after a GOAWAY, its body replayed
//! (`outgoing.rs`).

mod outgoing;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;

use super::body::CountedBody;
use super::Dialer;
use outgoing::Outgoing;

/// Settings as hyper's client had them: windows larger than the protocol's
/// 64 KiB (a Flight stream of record batches is not held to one round trip
/// per 64 KiB), a 16 KiB bound on the upstream's header list, and at most
/// 100 streams open until the upstream's SETTINGS say how many it takes
/// (then its own limit; the streams beyond it wait in `h2`'s queue).
///
/// The connection's window is the protocol's largest: every request shares
/// the one connection, and a stream's window is given back only as its
/// client takes the body, so with hyper's 5 MiB three clients that did not
/// read (2 MiB each) froze every other response body on the node. What a
/// stream may hold unread stays bounded by `STREAM_WINDOW`, and for no
/// longer than `timeouts.send` once its client has stopped taking frames:
/// memory is at most 2 MiB times the streams open on the connection (the
/// upstream's own stream limit), where before it was at most 5 MiB in all.
const CONN_WINDOW: u32 = (1 << 31) - 1;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// A connection unused for this long is not given out again (a new one is
/// dialled): an upstream that closes idle connections without a GOAWAY
/// would otherwise race the next request, as hyper's pool avoided with
/// the same 60 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Streams given out on one connection before a new one is dialled: the
/// stream ids of one connection run out at 2^30 requests.
const MAX_STREAMS_PER_CONNECTION: u64 = 1 << 29;

/// How many tries a request gets when the connection it was given went
/// away before the request was sent, or the upstream refused it
/// unprocessed. Ten: with 32 requests racing for connections that each
/// close after one stream (harsher than any graceful upstream), three were
/// not enough for some; an upstream whose every new connection goes away
/// at once is broken, not graceful.
const ATTEMPTS: usize = 10;

/// The one connection to the upstream, dialled on first use and again
/// after it went away.
pub(super) struct H2c {
    dialer: Dialer,
    current: Mutex<Option<Conn>>,
    /// Held while a connection is dialled, so that the requests that find
    /// none wait for the one being made instead of dialling their own.
    dialing: tokio::sync::Mutex<()>,
    /// Dials that failed so far: a request that waited for one fails with
    /// it instead of dialling again (with the upstream unreachable, each
    /// would wait out the connect timeout in turn).
    failed_dials: AtomicU64,
    next_id: AtomicU64,
}

#[derive(Clone)]
struct Conn {
    id: u64,
    sender: SendRequest<Bytes>,
    use_: Arc<Use>,
}

/// How much a connection has been used.
struct Use {
    streams: AtomicU64,
    /// When it was last given out, in milliseconds after it was dialled.
    last_ms: AtomicU64,
    dialled: Instant,
}

impl Conn {
    /// Counts one more stream; false when the connection is not to be
    /// given out any more (idle too long, or its stream ids running out).
    fn take(&self) -> bool {
        let now = u64::try_from(self.use_.dialled.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.use_.last_ms.swap(now, Ordering::Relaxed);
        let streams = self.use_.streams.fetch_add(1, Ordering::Relaxed);
        let idle = now.saturating_sub(last) > IDLE_TIMEOUT.as_millis() as u64;
        !idle && streams < MAX_STREAMS_PER_CONNECTION
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be made.
    Connect,
    /// The exchange failed on a connection.
    Failed(h2::Error),
}

impl H2c {
    pub(super) fn new(dialer: Dialer) -> H2c {
        H2c {
            dialer,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            failed_dials: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        }
    }

    /// Sends `req` (absolute-form URI, no `Host`) and waits for the
    /// response headers, sending the request body meanwhile; the rest of
    /// the body, if the response comes first, streams in a task of its own
    /// as long as the upstream reads it (a gRPC client stream goes on after
    /// the response headers). Dropped before the response came (a timeout,
    /// the client gone), the stream is reset.
    pub(super) async fn send(
        &self,
        req: Request<CountedBody>,
    ) -> Result<Response<RecvBody>, SendError> {
        let (mut head, body) = req.into_parts();
        // Nothing of the client's request's extensions is for the upstream.
        head.extensions = http::Extensions::new();
        let mut body = Outgoing::new(body);
        let mut attempt = 0;
        let mut refused_fresh = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let (conn, fresh) = self.connection().await?;
            let mut sender = match conn.sender.clone().ready().await {
                // An upstream that allows no stream at all (its
                // `MAX_CONCURRENT_STREAMS` 0) would hold every request
                // queued on this connection until its timeout, and, each
                // request keeping the connection in use, for ever: another
                // connection is dialled instead, as after a GOAWAY. When a
                // second one dialled for this request allows none either,
                // the upstream takes nothing now: refused (502), not
                // dialled on.
                Ok(s) if s.current_max_send_streams() == 0 => {
                    self.retire(conn.id);
                    refused_fresh += usize::from(fresh);
                    if last || refused_fresh >= 2 {
                        return Err(SendError::Failed(Reason::REFUSED_STREAM.into()));
                    }
                    continue;
                }
                Ok(s) => s,
                // The connection went away (GOAWAY, closed): nothing sent.
                Err(e) => {
                    self.retire(conn.id);
                    if last {
                        return Err(SendError::Failed(e));
                    }
                    continue;
                }
            };
            // `send_request` takes the head; a copy stays for another try.
            let head_only = body.is_empty();
            let sent = sender.send_request(Request::from_parts(head.clone(), ()), head_only);
            let (response, stream) = match sent {
                Ok(s) => s,
                // Refused before it was sent: the connection went away
                // since `ready` (its GOAWAY read on another thread).
                Err(e) if e.is_go_away() || e.is_io() => {
                    self.retire(conn.id);
                    if last {
                        return Err(SendError::Failed(e));
                    }
                    continue;
                }
                // The request itself (a header h2 refuses): the same again.
                Err(e) => return Err(SendError::Failed(e)),
            };
            let mut pump = Pump {
                body,
                stream,
                done: head_only,
            };
            let mut response = pin!(answer(response));
            let answered = poll_fn(|cx| {
                if !pump.done {
                    pump.done = pump.body.poll_send(&mut pump.stream, cx).is_ready();
                }
                response.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(mut resp) => {
                    pump.body.forget();
                    if !pump.done {
                        let sending = tokio::spawn(async move {
                            let Pump {
                                mut body,
                                mut stream,
                                ..
                            } = pump;
                            poll_fn(|cx| body.poll_send(&mut stream, cx)).await
                        });
                        resp.body_mut().sending = Some(sending.abort_handle());
                    }
                    return Ok(resp);
                }
                // Refused unprocessed: again, whole (on a new connection
                // after a GOAWAY).
                Err(e) if !last && unprocessed(&e) && pump.body.replayable() => {
                    tracing::debug!(error = %e, "upstream refused the stream unprocessed; sent again");
                    // A GOAWAY closes the connection to new streams; a
                    // refused stream alone (its concurrency limit) does not.
                    if e.is_go_away() {
                        self.retire(conn.id);
                    }
                    body = pump.body;
                    body.rewind();
                }
                Err(e) => return Err(SendError::Failed(e)),
            }
        }
    }

    /// The current connection, or a new one (then `true`).
    async fn connection(&self) -> Result<(Conn, bool), SendError> {
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        let failed = self.failed_dials.load(Ordering::Acquire);
        let _dialing = self.dialing.lock().await;
        if let Some(c) = self.current() {
            return Ok((c, false));
        }
        // The dial this request waited for failed: so does the request.
        if self.failed_dials.load(Ordering::Acquire) != failed {
            return Err(SendError::Connect);
        }
        let conn = match self.dial().await {
            Ok(c) => c,
            Err(e) => {
                self.failed_dials.fetch_add(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        conn.take();
        if let Ok(mut current) = self.current.lock() {
            *current = Some(conn.clone());
        }
        Ok((conn, true))
    }

    /// The connection to give out, if there is one still to be used.
    fn current(&self) -> Option<Conn> {
        let mut current = self.current.lock().ok()?;
        let conn = current.as_ref()?;
        if conn.take() {
            return Some(conn.clone());
        }
        *current = None;
        None
    }

    /// Stops giving out connection `id` (it went away); the requests still
    /// on it finish there.
    fn retire(&self, id: u64) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|c| c.id == id) {
                *current = None;
            }
        }
    }

    async fn dial(&self) -> Result<Conn, SendError> {
        let started = tokio::time::Instant::now();
        let stream = self.dialer.connect().await.ok_or(SendError::Connect)?;
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(SendError::Failed)?;
        let ping = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream h2c connection ended");
            }
        });
        // Given out once the upstream's SETTINGS are read, which its answer
        // to a PING follows (a server's first frame is its SETTINGS): a
        // limit of no stream at all is then known before a request is put
        // on the connection, where `h2` would hold it unsent until its
        // timeout. One round trip per connection dialled, within the
        // dial's `timeouts.upstream_connect` (requests wait for the dial).
        // (A limit lowered to 0 later holds the requests put on the
        // connection meanwhile until their timeout.)
        if let Some(mut ping) = ping {
            let deadline = started + self.dialer.timeout;
            match tokio::time::timeout_at(deadline, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                Ok(Err(e)) => return Err(SendError::Failed(e)),
                Err(_) => return Err(SendError::Connect),
            }
        }
        Ok(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            use_: Arc::new(Use {
                streams: AtomicU64::new(0),
                last_ms: AtomicU64::new(0),
                dialled: Instant::now(),
            }),
        })
    }
}

/// The response headers, with the body to stream.
async fn answer(response: ResponseFuture) -> Result<Response<RecvBody>, h2::Error> {
    let resp = response.await?;
    let size = content_length(resp.headers());
    Ok(resp.map(|recv| RecvBody {
        recv,
        data_done: false,
        remaining: size,
        sending: None,
    }))
}

/// The stream was refused before the upstream processed it (RFC 9113,
/// 6.8 and 8.7): reset with `REFUSED_STREAM`, or above the last stream of
/// the upstream's GOAWAY, whatever its code (`h2` gives the GOAWAY's error
/// only to those; a stream up to the last one that the connection's end
/// cuts fails with an I/O error).
fn unprocessed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.is_reset() && e.reason() == Some(Reason::REFUSED_STREAM))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let n = values.next()?.to_str().ok()?.parse().ok()?;
    values.next().is_none().then_some(n)
}

/// One attempt's stream and the body going into it.
struct Pump {
    body: Outgoing,
    stream: SendStream<Bytes>,
    /// All of the body is sent, or the stream is cut.
    done: bool,
}

/// The upstream's response body: its data, then its trailers (gRPC's
/// status). Each data frame read gives its window back.
pub struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// What the `content-length` says is still to come.
    remaining: Option<u64>,
    /// The rest of the request body on its way (the response came first):
    /// stopped, and so the stream reset, when this body is dropped before
    /// its end.
    sending: Option<AbortHandle>,
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        if let Some(sending) = &self.sending {
            if !self.recv.is_end_stream() {
                sending.abort();
            }
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(n) = &mut self.remaining {
                        *n = n.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None if self.recv.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
