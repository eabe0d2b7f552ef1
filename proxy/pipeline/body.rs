//! The body of every response on the data listener: the upstream's,
//! streamed, or a small one of our own. It counts the bytes, returns the
//! upstream connection to the pool when it ends, and sends the request's
//! audit event at the end of the body.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::observe::audit::{Event, Slot};
use crate::transport::upstream::Lease;

/// The body of every response the data listener sends: the upstream's,
/// streamed, or a small one of our own; counted, and with the request's
/// audit event written when it ends.
pub struct ProxyBody {
    inner: Either<Incoming, Full<Bytes>>,
    pending: Option<Box<PendingEvent>>,
    /// The upstream connection the body comes from: back to the pool when
    /// the body has ended, closed if it is dropped before.
    lease: Option<Lease>,
}

/// An event waiting for the end of its response.
pub struct PendingEvent {
    pub slot: Slot,
    pub event: Event,
    pub start: Instant,
    pub bytes_in: Option<Arc<AtomicU64>>,
}

impl ProxyBody {
    pub fn upstream(body: Incoming, lease: Option<Lease>) -> ProxyBody {
        let mut body = ProxyBody {
            inner: Either::Left(body),
            pending: None,
            lease,
        };
        body.release_if_ended();
        body
    }

    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            inner: Either::Right(Full::new(bytes)),
            pending: None,
            lease: None,
        }
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
    }

    /// Writes `pending`'s event when this body ends or is dropped.
    pub fn audit(&mut self, pending: Box<PendingEvent>) {
        self.pending = Some(pending);
    }

    fn finish(&mut self, complete: bool) {
        if let Some(p) = self.pending.take() {
            let PendingEvent {
                slot,
                mut event,
                start,
                bytes_in,
            } = *p;
            event.complete = complete;
            event.duration = start.elapsed();
            if let Some(n) = bytes_in {
                event.bytes_in = n.load(Ordering::Relaxed);
            }
            slot.send(event);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(p), Some(data)) = (this.pending.as_mut(), frame.data_ref()) {
                    p.event.bytes_out += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.release_if_ended();
                    this.finish(true);
                }
            }
            Poll::Ready(None) => {
                // The end, whether or not the last frame said so.
                if let Some(lease) = this.lease.take() {
                    lease.release();
                }
                this.finish(true)
            }
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
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

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A finished upstream body returns its connection to the pool; an
        // unfinished one drops the lease with this body, closing it.
        self.release_if_ended();
        // hyper never polls the body of a response that has none.
        let bodiless = self
            .pending
            .as_ref()
            .is_some_and(|p| p.event.method == Method::HEAD || matches!(p.event.status, 204 | 304));
        let complete = bodiless || self.inner.is_end_stream();
        self.finish(complete);
    }
}
