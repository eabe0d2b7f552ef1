//! The request body on its way to the upstream, its bytes counted for the
//! audit event, and its failures recorded: when the client's body breaks
//! (malformed framing, a connection closed or a stream reset mid-body), the
//! exchange with the upstream fails too, and the [`BodyWatch`] tells that the
//! fault was the client's, not the upstream's.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

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
}

impl ClientBodyFault {
    /// Which fault a body error is. Malformed only when hyper's HTTP/1.1
    /// decoder refused the framing (an I/O error of kind `InvalidInput` or
    /// `InvalidData`: chunk size, extension, bare CR or LF); everything else
    /// (end of file before the declared length, a connection error or
    /// reset, an HTTP/2 stream reset) means the client is gone: on HTTP/2
    /// a broken body resets the stream, so no answer can reach the client.
    pub fn of(e: &hyper::Error) -> ClientBodyFault {
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{InvalidData, InvalidInput};
                if matches!(io.kind(), InvalidInput | InvalidData) {
                    return ClientBodyFault::Malformed;
                }
            }
            src = inner.source();
        }
        ClientBodyFault::Gone
    }
}

/// Shared between the body and whoever sent it: the first fault of the
/// client's body, if it had one.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<OnceLock<ClientBodyFault>>);

impl BodyWatch {
    /// The client's fault, if its body failed.
    pub fn fault(&self) -> Option<ClientBodyFault> {
        self.0.get().copied()
    }

    fn record(&self, fault: ClientBodyFault) {
        let _ = self.0.set(fault);
    }
}

/// A request body on its way to the upstream, counted.
pub struct CountedBody {
    inner: Incoming,
    count: Option<Arc<AtomicU64>>,
    watch: BodyWatch,
}

impl CountedBody {
    pub fn new(inner: Incoming, count: Option<Arc<AtomicU64>>) -> CountedBody {
        CountedBody {
            inner,
            count,
            watch: BodyWatch::default(),
        }
    }

    /// The watch on this body's failures, to keep when the body is sent.
    pub fn watch(&self) -> BodyWatch {
        self.watch.clone()
    }
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match (&r, &self.count) {
            (Poll::Ready(Some(Ok(frame))), Some(c)) => {
                if let Some(d) = frame.data_ref() {
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            (Poll::Ready(Some(Err(e))), _) => self.watch.record(ClientBodyFault::of(e)),
            _ => {}
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
