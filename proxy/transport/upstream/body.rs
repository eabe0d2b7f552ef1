//! The request body on its way to the upstream, its bytes counted for the
//! audit event.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request body on its way to the upstream, counted.
pub struct CountedBody {
    inner: Incoming,
    count: Option<Arc<AtomicU64>>,
}

impl CountedBody {
    pub fn new(inner: Incoming, count: Option<Arc<AtomicU64>>) -> CountedBody {
        CountedBody { inner, count }
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
        if let (Poll::Ready(Some(Ok(frame))), Some(c)) = (&r, &self.count) {
            if let Some(d) = frame.data_ref() {
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
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
