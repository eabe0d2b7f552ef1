//! The request body on its way to the upstream, its bytes counted for the
//! audit event, and its failures recorded: when the client's body breaks
//! (malformed framing, a connection closed or a stream reset mid-body), the
//! exchange with the upstream fails too, and the [`BodyWatch`] tells that the
//! fault was the client's, not the upstream's. It also tells who a timeout
//! waited on: a body whose last read was still waiting for the client's
//! bytes when the upstream's response timed out stalled on the client's
//! side (a slow or stopped upload), not the upstream's. And it tells when
//! the upstream last took a chunk of the body: an upload in progress is
//! not an upstream late to answer (`wait.rs`).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// How a client's request body failed while it was forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFault {
    /// The body cannot be read: malformed chunked framing (chunk size,
    /// extension, a bare CR), or another protocol fault of the client's.
    Malformed,
    /// The client went away mid-body: the connection closed before the
    /// body declared by `Content-Length` or chunked framing ended, or was
    /// reset; an HTTP/2 stream reset.
    Gone,
    /// The client stopped sending its body: the upstream's response timed
    /// out while the body was waiting for the client's next bytes (the
    /// upstream was ready to take them).
    Stalled,
}

impl ClientBodyFault {
    /// Which fault a body error is. Malformed only when hyper's HTTP/1.1
    /// decoder refused the framing (an I/O error of kind `InvalidInput` or
    /// `InvalidData`: chunk size, extension, bare CR or LF; not a TLS
    /// record error, which arrives with the same kind); everything else
    /// (end of file before the declared length, a connection error or
    /// reset, an HTTP/2 stream reset) means the client is gone: on HTTP/2
    /// a broken body resets the stream, so no answer can reach the client.
    pub fn of(e: &hyper::Error) -> ClientBodyFault {
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{InvalidData, InvalidInput};
                // A TLS record that does not decrypt or parse also comes as
                // `InvalidData`, but it ends the connection: no answer can
                // reach the client, which is gone.
                let tls = io
                    .get_ref()
                    .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some());
                if matches!(io.kind(), InvalidInput | InvalidData) && !tls {
                    return ClientBodyFault::Malformed;
                }
            }
            src = inner.source();
        }
        ClientBodyFault::Gone
    }
}

/// Shared between the body and whoever sent it: the first fault of the
/// client's body, if it had one, and whether its last read was waiting on
/// the client.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<Watched>);

#[derive(Debug, Default)]
struct Watched {
    fault: OnceLock<ClientBodyFault>,
    /// The last read of the body found no bytes from the client yet.
    waiting_on_client: AtomicBool,
    /// The body was read to its end.
    ended: AtomicBool,
    /// The body is one the client owes in full before it can expect the
    /// answer (a declared length, or HTTP/1.x): waiting on it at a timeout
    /// is a stall. Not an open HTTP/2 stream (a gRPC call streaming its
    /// requests waits for the answer with its body open, as it should).
    bounded: bool,
    /// When the upstream last took a frame of the body: nanoseconds after
    /// [`epoch`], plus one (0: never).
    taken: AtomicU64,
}

/// The instant the `taken` stamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl BodyWatch {
    /// The client's fault, if its body failed.
    pub fn fault(&self) -> Option<ClientBodyFault> {
        self.0.fault.get().copied()
    }

    /// The client's fault in an exchange whose response timed out: a body
    /// that failed, or a bounded one left waiting for the client's bytes
    /// (stalled).
    /// A body that ended, or that the upstream stopped reading (its last
    /// read returned bytes and none was asked for since), is not.
    pub fn fault_at_timeout(&self) -> Option<ClientBodyFault> {
        self.fault().or_else(|| {
            self.0
                .waiting_on_client
                .load(Ordering::Relaxed)
                .then_some(ClientBodyFault::Stalled)
                .filter(|_| self.0.bounded)
        })
    }

    /// The client's fault in an exchange dropped before it was answered
    /// (its connection failed): a body that failed, or one not read to its
    /// end, which the client left mid-body.
    pub fn fault_when_dropped(&self) -> Option<ClientBodyFault> {
        self.fault()
            .or_else(|| (!self.0.ended.load(Ordering::Relaxed)).then_some(ClientBodyFault::Gone))
    }

    /// When the upstream last took a frame of the body (`None`: never).
    pub fn last_taken(&self) -> Option<Instant> {
        match self.0.taken.load(Ordering::Relaxed) {
            0 => None,
            n => Some(epoch() + Duration::from_nanos(n - 1)),
        }
    }

    fn record(&self, fault: ClientBodyFault) {
        let _ = self.0.fault.set(fault);
    }

    fn stamp_taken(&self) {
        let nanos = Instant::now().saturating_duration_since(epoch()).as_nanos();
        let n = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        self.0.taken.store(n + 1, Ordering::Relaxed);
    }
}

/// A request body on its way to the upstream, counted.
pub struct CountedBody {
    inner: Incoming,
    count: Option<Arc<AtomicU64>>,
    watch: BodyWatch,
    /// A copy of the watch's `waiting_on_client`, so the shared flag is
    /// written only when it changes.
    waiting: bool,
}

impl CountedBody {
    /// `bounded`: the client owes the whole body before the answer (see
    /// [`BodyWatch::fault_at_timeout`]).
    pub fn new(inner: Incoming, count: Option<Arc<AtomicU64>>, bounded: bool) -> CountedBody {
        let watch = BodyWatch(Arc::new(Watched {
            ended: AtomicBool::new(inner.is_end_stream()),
            bounded,
            ..Watched::default()
        }));
        CountedBody {
            inner,
            count,
            watch,
            waiting: false,
        }
    }

    /// The watch on this body's failures, to keep when the body is sent.
    pub fn watch(&self) -> BodyWatch {
        self.watch.clone()
    }

    /// The body is not being read for now (the frames already read go
    /// again on another stream first): a timeout meanwhile is not the
    /// client's stall.
    pub fn not_waiting(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.watch
                .0
                .waiting_on_client
                .store(false, Ordering::Relaxed);
        }
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut r = Pin::new(&mut self.inner).poll_frame(cx);
        // A client's trailers end the body here: they would reach the
        // upstream unfiltered (an `x-meshgate-principal` of the client's
        // choosing, an override), and gRPC servers take trailers on a
        // request for a protocol error that closes the connection every
        // consumer's calls share. HTTP/1.1 upstreams never got them.
        if matches!(&r, Poll::Ready(Some(Ok(frame))) if frame.is_trailers()) {
            r = Poll::Ready(None);
        }
        let waiting = r.is_pending();
        if waiting != self.waiting {
            self.waiting = waiting;
            self.watch
                .0
                .waiting_on_client
                .store(waiting, Ordering::Relaxed);
        }
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                self.watch.stamp_taken();
                if let (Some(d), Some(c)) = (frame.data_ref(), &self.count) {
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(e))) => self.watch.record(ClientBodyFault::of(e)),
            _ => {}
        }
        if matches!(r, Poll::Ready(None)) || (r.is_ready() && self.inner.is_end_stream()) {
            self.watch.0.ended.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
