//! The body of every response on the data listener: the upstream's,
//! streamed, or a small one of our own. It counts the bytes, returns the
//! upstream connection to the pool when it ends, and sends the request's
//! audit event at the end of the body. When the route's response stage
//! rewrites the body, the upstream's frames go through its
//! [`BodyTransform`] on the way.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};

use crate::decision::quota;
use crate::model::response::{BodyTransform, TransformError};
use crate::observe::audit::{Event, Slot};
use crate::observe::trace::Draft;
use crate::pipeline::grpc::GrpcEnd;
use crate::transport::streams::Exchange;
use crate::transport::upstream::{Lease, UpstreamBody};

/// The body of every response the data listener sends: the upstream's,
/// streamed, or a small one of our own; counted, and with the request's
/// audit event written when it ends.
pub struct ProxyBody {
    inner: Either<UpstreamBody, Full<Bytes>>,
    pending: Option<Box<PendingEvent>>,
    /// The upstream connection the body comes from: back to the pool when
    /// the body has ended, closed if it is dropped before.
    lease: Option<Lease>,
    /// The response stage's rewrite of the body, when its route has one.
    rewrite: Option<Box<Rewrite>>,
    /// A forwarded gRPC call: its status is read from the trailers.
    grpc: Option<Box<GrpcEnd>>,
    /// A sampled request's spans, ended with the body.
    span: Option<Box<Draft>>,
    /// HTTP/2: the exchange on its connection, told when a frame waits for
    /// the client and when the response is out ([`ProxyBody::watch`]).
    exchange: Option<Exchange>,
    /// The request's in-flight places, given back when the body ends.
    held: Held,
}

/// What a request holds until its response body has ended or is dropped
/// (the client reset the stream or closed the connection): its places in
/// the in-flight counts, `limits.max_in_flight` and the product's and the
/// consumer's. A streaming response is a request in flight until its end.
#[derive(Default)]
pub struct Held {
    pub global: Option<tokio::sync::OwnedSemaphorePermit>,
    pub quota: quota::Places,
}

impl Held {
    /// Gives every place back.
    fn release(&mut self) {
        self.global.take();
        self.quota.release();
    }
}

/// A body on its way through a [`BodyTransform`].
struct Rewrite {
    transform: Box<dyn BodyTransform>,
    /// A trailers frame that waits for the transform's held-back bytes.
    trailers: Option<Frame<Bytes>>,
    /// The transform has been told the end, and what it held back is out.
    done: bool,
    /// What the transform let through while the head waited for it
    /// ([`ProxyBody::look_ahead`]), sent first.
    ready: std::collections::VecDeque<Bytes>,
    /// The upstream body's failure met while looking ahead, for after `ready`.
    failed: Option<BodyError>,
    /// A chunk (or the end) is in hand: the transform may make more of it
    /// ([`BodyTransform::more`]).
    more: bool,
    /// The upstream's body has ended with the chunk in hand: the
    /// transform is told the end once it has made all of that chunk.
    ending: bool,
}

impl Rewrite {
    /// The upstream's trailers go after a body passed as it came; after a
    /// rewritten one none do: a digest of the upstream's bytes (or any
    /// field) would tell what the rewrite hid (`Content-Digest` confirms a
    /// guessed value behind `last4` or `year`).
    fn keep_trailers(&mut self, trailers: Frame<Bytes>) {
        if self.transform.verbatim() {
            self.trailers = Some(trailers);
        }
    }
}

/// How many empty parts a rewritten body makes before it lets the task
/// yield (a decoder can read long stretches that the mask drops).
const EMPTY_PARTS_BEFORE_YIELD: u32 = 64;

/// The audit event's error code for a body the response stage cut (one
/// field masking cut is `unmaskable_response`: `error::refusal_code`).
pub const RESPONSE_REFUSED: &str = "response_refused";

/// The most of the upstream's body read (through the transform) before the
/// head is sent, when the transform looks ahead.
pub const LOOK_AHEAD_LIMIT: usize = 256 * 1024;

/// An event waiting for the end of its response.
pub struct PendingEvent {
    pub slot: Slot,
    pub event: Event,
    pub start: Instant,
    pub bytes_in: Option<Arc<AtomicU64>>,
}

impl ProxyBody {
    pub fn upstream(body: UpstreamBody, lease: Option<Lease>) -> ProxyBody {
        let mut body = ProxyBody {
            inner: Either::Left(body),
            pending: None,
            lease,
            rewrite: None,
            grpc: None,
            span: None,
            exchange: None,
            held: Held::default(),
        };
        body.release_if_ended();
        body
    }

    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            inner: Either::Right(Full::new(bytes)),
            pending: None,
            lease: None,
            rewrite: None,
            grpc: None,
            span: None,
            exchange: None,
            held: Held::default(),
        }
    }

    /// Handed to hyper as an HTTP/2 response: from now its frames wait for
    /// the client until hyper comes back for the next (it polls a body
    /// only when the stream has room in the client's window), and the
    /// exchange is answered once the body has ended (or failed, which is
    /// not the client's doing). A body that has ended already is answered.
    pub fn watch(&mut self, exchange: Exchange) {
        if self.is_end_stream() {
            exchange.answered();
            return;
        }
        exchange.handed();
        self.exchange = Some(exchange);
    }

    /// Sends this body through `transform` as it streams.
    pub fn rewrite(&mut self, transform: Box<dyn BodyTransform>) {
        self.rewrite = Some(Box::new(Rewrite {
            transform,
            trailers: None,
            done: false,
            ready: Default::default(),
            failed: None,
            more: false,
            ending: false,
        }));
    }

    /// The contract violations its transform found so far.
    pub fn violations(&self) -> crate::model::conformance::Kinds {
        self.rewrite
            .as_ref()
            .map_or(Default::default(), |rw| rw.transform.violations())
    }

    /// Reads the upstream's body through the transform, before the head is
    /// sent, until the transform is settled (it has judged the first
    /// record), the body has ended, or [`LOOK_AHEAD_LIMIT`] bytes were read
    /// or made. What it lets through is kept and sent first; its refusal is
    /// returned (nothing of the body has been sent: the caller answers 502).
    pub async fn look_ahead(&mut self) -> Result<(), TransformError> {
        let mut read = 0usize;
        loop {
            let out = match self.rewrite.as_deref_mut() {
                Some(rw)
                    if rw.failed.is_none()
                        && !rw.transform.settled()
                        && read < LOOK_AHEAD_LIMIT =>
                {
                    match rw.owed() {
                        Some(out) => out,
                        None if rw.done => return Ok(()),
                        None => {
                            let inner = &mut self.inner;
                            let frame =
                                std::future::poll_fn(|cx| Pin::new(&mut *inner).poll_frame(cx))
                                    .await;
                            let last = self.inner.is_end_stream();
                            let Some(rw) = self.rewrite.as_deref_mut() else {
                                return Ok(());
                            };
                            match frame {
                                Some(Ok(frame)) => match frame.into_data() {
                                    Ok(chunk) => {
                                        read += chunk.len();
                                        rw.data(chunk, last)
                                    }
                                    Err(trailers) => {
                                        rw.keep_trailers(trailers);
                                        rw.end()
                                    }
                                },
                                None => rw.end(),
                                Some(Err(e)) => {
                                    rw.failed = Some(e);
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
                _ => return Ok(()),
            };
            let bytes = out?;
            read += bytes.len();
            let Some(rw) = self.rewrite.as_deref_mut() else {
                return Ok(());
            };
            if !bytes.is_empty() {
                rw.ready.push_back(bytes);
            }
            if rw.done || self.inner.is_end_stream() {
                self.upstream_ended();
            }
        }
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
    }

    /// Reads the gRPC status from the trailers, when they pass, into the
    /// metrics and the audit event.
    pub fn grpc(&mut self, end: GrpcEnd) {
        self.grpc = Some(Box::new(end));
    }

    /// A trailers frame on its way to the client: a gRPC call's status.
    fn saw_trailers(&mut self, frame: &Frame<Bytes>) {
        let (Some(end), Some(trailers)) = (self.grpc.take(), frame.trailers_ref()) else {
            return;
        };
        let code = end.trailers(trailers);
        if let (Some(span), Some(code)) = (self.span.as_mut(), code) {
            span.grpc_status(code.number());
        }
        if let (Some(p), Some(code)) = (self.pending.as_mut(), code) {
            p.event.grpc_status = Some(code.number());
        }
    }

    /// Writes `pending`'s event when this body ends or is dropped.
    pub fn audit(&mut self, pending: Box<PendingEvent>) {
        self.pending = Some(pending);
    }

    /// Ends the request's spans when this body ends or is dropped.
    pub fn trace(&mut self, span: Box<Draft>) {
        self.span = Some(span);
    }

    /// Holds the request's in-flight places until this body ends or is
    /// dropped.
    pub fn hold(&mut self, held: Held) {
        self.held = held;
    }

    fn finish(&mut self, complete: bool) {
        // The request is over: its places go back before the client can
        // see the end (and send the next request).
        self.held.release();
        self.note_violations();
        if let Some(span) = self.span.take() {
            span.end(complete);
        }
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

/// Two pieces of a body as one (copied only when both hold bytes).
fn joined(a: Bytes, b: Bytes) -> Bytes {
    match (a.is_empty(), b.is_empty()) {
        (_, true) => a,
        (true, false) => b,
        (false, false) => [a, b].concat().into(),
    }
}

// === impl Rewrite ===

impl Rewrite {
    /// A data frame of the upstream's body through the transform. `last`:
    /// the body ends with it (its length was known): hyper may not poll
    /// past the length, so the end is told at once when the chunk has made
    /// all it makes.
    fn data(&mut self, chunk: Bytes, last: bool) -> Result<Bytes, TransformError> {
        let first = self.transform.data(chunk)?;
        self.more = true;
        if !last {
            return Ok(first);
        }
        match self.transform.more()? {
            Some(next) => {
                self.ending = true;
                Ok(self.queue([first, next]))
            }
            None => {
                // The chunk's last part and what the end lets go: one frame.
                let [end, next] = self.told_end()?;
                Ok(self.queue([joined(first, end), next]))
            }
        }
    }

    /// The upstream's body has ended (or its trailers came).
    fn end(&mut self) -> Result<Bytes, TransformError> {
        let next = self.told_end()?;
        Ok(self.queue(next))
    }

    /// Tells the transform the end: what it returns, and its first further
    /// part (so that the body knows at once whether it has ended).
    fn told_end(&mut self) -> Result<[Bytes; 2], TransformError> {
        self.done = true;
        self.ending = false;
        let end = self.transform.end()?;
        let next = self.transform.more()?;
        self.more = next.is_some();
        Ok([end, next.unwrap_or_default()])
    }

    /// What the transform still makes of what it was given, without
    /// reading the upstream: the parts of the chunk in hand, then the end
    /// it is owed. `None` when it needs the next frame (or has ended).
    fn owed(&mut self) -> Option<Result<Bytes, TransformError>> {
        if self.more {
            match self.transform.more() {
                Ok(Some(part)) => return Some(Ok(part)),
                Ok(None) => self.more = false,
                Err(e) => return Some(Err(e)),
            }
        }
        if !self.ending {
            return None;
        }
        Some(self.end())
    }

    /// Two parts made at once, in order, as the next frame; each its own
    /// frame (through `ready`) when both hold bytes, or when `ready`
    /// already holds some (the head waits).
    fn queue(&mut self, [a, b]: [Bytes; 2]) -> Bytes {
        if self.ready.is_empty() {
            if b.is_empty() {
                return a;
            }
            if a.is_empty() {
                return b;
            }
        }
        self.ready
            .extend([a, b].into_iter().filter(|p| !p.is_empty()));
        Bytes::new()
    }
}

/// Why a response body ended before its end.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What a poll of the body returns.
type Polled = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(exchange) = &this.exchange else {
            return this.poll_unwatched(cx);
        };
        exchange.taken();
        let r = this.poll_unwatched(cx);
        match &r {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) if frame.is_data() && !this.is_end_stream() => {
                if let Some(exchange) = &this.exchange {
                    exchange.handed();
                }
            }
            // The end, trailers, or an error (the upstream's or the
            // response stage's): answered, as far as the client goes.
            Poll::Ready(_) => {
                if let Some(exchange) = this.exchange.take() {
                    exchange.answered();
                }
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.rewrite {
            None => self.inner.is_end_stream(),
            Some(r) => {
                r.done
                    && !r.more
                    && r.trailers.is_none()
                    && r.ready.is_empty()
                    && r.failed.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rewrite {
            None => self.inner.size_hint(),
            // Every byte as it came (and none of it sent yet).
            Some(rw) if rw.transform.verbatim() && rw.ready.is_empty() => self.inner.size_hint(),
            // The rewritten length is known only at the end.
            Some(_) => SizeHint::default(),
        }
    }
}

impl ProxyBody {
    /// `poll_frame`, without the exchange's bookkeeping.
    fn poll_unwatched(&mut self, cx: &mut Context<'_>) -> Polled {
        let this = self;
        if this.rewrite.is_some() {
            return this.poll_rewritten(cx);
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(p), Some(data)) = (this.pending.as_mut(), frame.data_ref()) {
                    p.event.bytes_out += data.len() as u64;
                }
                if frame.is_trailers() {
                    this.saw_trailers(frame);
                }
                if this.inner.is_end_stream() {
                    this.release_if_ended();
                    this.finish(true);
                }
            }
            Poll::Ready(None) => {
                // The end, whether or not the last frame said so.
                this.ended()
            }
            Poll::Ready(Some(Err(_))) => {
                this.upstream_failed();
                this.finish(false);
            }
            Poll::Pending => {}
        }
        r
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
        let complete = bodiless || self.is_end_stream();
        if let Some(exchange) = self.exchange.take().filter(|_| complete) {
            exchange.answered();
        }
        self.finish(complete);
    }
}

impl ProxyBody {
    /// `poll_frame` of a rewritten body: the upstream's data frames go
    /// through the transform (a chunk it holds back entirely is not sent
    /// as an empty frame), what it held back goes out at the end, before
    /// any trailers; what the transform makes of a chunk in parts (`more`)
    /// goes out before the next chunk is read. An error of the transform
    /// ends the body with an error, so the client never takes the cut body
    /// for a whole one.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Polled {
        let mut empty = 0;
        loop {
            let Some(rw) = self.rewrite.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(bytes) = rw.ready.pop_front() {
                if let Some(p) = self.pending.as_mut() {
                    p.event.bytes_out += bytes.len() as u64;
                }
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if let Some(out) = rw.owed() {
                match self.send(out, &mut empty, cx) {
                    Some(poll) => return poll,
                    None => continue,
                }
            }
            if let Some(e) = rw.failed.take() {
                self.finish(false);
                return Poll::Ready(Some(Err(e)));
            }
            if rw.done {
                let trailers = rw.trailers.take();
                match &trailers {
                    None => self.ended(),
                    Some(t) => self.saw_trailers(t),
                }
                return Poll::Ready(trailers.map(Ok));
            }
            let out = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    self.upstream_failed();
                    self.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        let last = self.inner.is_end_stream();
                        let out = rw.data(chunk, last);
                        if last {
                            self.upstream_ended();
                        }
                        out
                    }
                    Err(trailers) => {
                        rw.keep_trailers(trailers);
                        let out = rw.end();
                        self.upstream_ended();
                        out
                    }
                },
                Poll::Ready(None) => {
                    let out = rw.end();
                    self.upstream_ended();
                    out
                }
            };
            if let Some(poll) = self.send(out, &mut empty, cx) {
                return poll;
            }
        }
    }

    /// What the transform made, as the rewritten body's next frame: its
    /// error ends the body; nothing is no frame (`None`: read on), though
    /// after many empty parts in a row the task yields, woken at once.
    fn send(
        &mut self,
        out: Result<Bytes, TransformError>,
        empty: &mut u32,
        cx: &mut Context<'_>,
    ) -> Option<Polled> {
        match out {
            Err(e) => Some(Poll::Ready(Some(Err(self.refused(e))))),
            Ok(bytes) if bytes.is_empty() => {
                *empty += 1;
                if *empty < EMPTY_PARTS_BEFORE_YIELD {
                    return None;
                }
                cx.waker().wake_by_ref();
                Some(Poll::Pending)
            }
            Ok(bytes) => {
                if let Some(p) = self.pending.as_mut() {
                    p.event.bytes_out += bytes.len() as u64;
                }
                Some(Poll::Ready(Some(Ok(Frame::data(bytes)))))
            }
        }
    }

    /// The upstream body has been read to its end: its connection goes
    /// back to the pool now, whether or not hyper polls this body again
    /// (it stops after a frame that ends the body, and after trailers).
    fn upstream_ended(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }

    /// The transform's violations into the audit event.
    fn note_violations(&mut self) {
        if let (Some(p), Some(rw)) = (self.pending.as_mut(), self.rewrite.as_ref()) {
            p.event.violations = rw.transform.violations();
        }
    }

    /// The upstream body has ended and all of it is out.
    fn ended(&mut self) {
        self.upstream_ended();
        self.finish(true);
    }

    /// The upstream's body broke off (it reset or closed the connection):
    /// the server and client spans and the audit event say so
    /// (`upstream_failed`), unlike a client that went away.
    fn upstream_failed(&mut self) {
        if let Some(span) = self.span.as_mut() {
            span.body_failed(crate::pipeline::error::UPSTREAM_FAILED, true);
        }
        if let Some(p) = self.pending.as_mut() {
            p.event.error = Some(crate::pipeline::error::UPSTREAM_FAILED);
        }
    }

    /// The transform refused the rest of the body: nothing more is read or
    /// sent (the upstream connection is closed with the body), and the
    /// event and the server span record the cut.
    fn refused(&mut self, e: TransformError) -> BodyError {
        self.note_violations();
        self.rewrite = None;
        self.inner = Either::Right(Full::new(Bytes::new()));
        self.lease = None;
        let code = crate::pipeline::error::refusal_code(&e);
        if let Some(span) = self.span.as_mut() {
            span.body_failed(code, false);
        }
        if let Some(p) = self.pending.as_mut() {
            tracing::warn!(request_id = ?p.event.request_id, error = %e, "response cut by the response stage");
            p.event.error = Some(code);
        } else {
            tracing::warn!(error = %e, "response cut by the response stage");
        }
        self.finish(false);
        Box::new(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Upper-cases what it is given, holding back the last byte of each
    /// chunk until the next one (or the end), and refuses `!`.
    struct Shout {
        held: Option<u8>,
    }

    impl BodyTransform for Shout {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
            if chunk.contains(&b'!') {
                return Err(TransformError {
                    transform: "shout",
                    reason: "a `!` cannot be shouted".into(),
                });
            }
            let mut out: Vec<u8> = self.held.take().into_iter().collect();
            out.extend(chunk.to_ascii_uppercase());
            self.held = out.pop();
            Ok(Bytes::from(out))
        }

        fn end(&mut self) -> Result<Bytes, TransformError> {
            Ok(self
                .held
                .take()
                .map(|b| Bytes::from(vec![b]))
                .unwrap_or_default())
        }
    }

    async fn frames(mut body: ProxyBody) -> Vec<Result<Bytes, String>> {
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => out.push(Ok(f.into_data().unwrap_or_default())),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_rewritten_body_streams_through_its_transform_and_holds_back_what_it_must() {
        let mut body = ProxyBody::full(Bytes::from_static(b"orders"));
        assert_eq!(body.size_hint().exact(), Some(6));
        body.rewrite(Box::new(Shout { held: None }));
        // The length is no longer known from the upstream's.
        assert_eq!(body.size_hint().exact(), None);
        assert!(!body.is_end_stream());
        // The last frame of a body of known length is told the end at once
        // (hyper may not poll past the length): what the transform held
        // back goes with it, and the body has ended.
        let mut frames_of = Vec::new();
        while let Some(f) = body.frame().await {
            frames_of.push(
                f.map(|f| f.into_data().unwrap_or_default())
                    .map_err(|e| e.to_string()),
            );
            if body.is_end_stream() {
                break;
            }
        }
        assert_eq!(frames_of, [Ok(Bytes::from_static(b"ORDERS"))]);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn a_transform_that_refuses_ends_the_body_with_an_error_and_nothing_of_it() {
        let mut body = ProxyBody::full(Bytes::from_static(b"secret!"));
        body.rewrite(Box::new(Shout { held: None }));
        let got = frames(body).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let e = got[0].clone().expect_err("cut");
        assert_eq!(e, "shout: a `!` cannot be shouted");
    }

    /// Makes each chunk (and the end, `.`) in parts of two bytes, the rest
    /// through `more`: as a decoder bounds what one call makes.
    struct Pieces {
        held: Vec<u8>,
    }

    impl BodyTransform for Pieces {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
            self.held = chunk.to_vec();
            Ok(self.more()?.unwrap_or_default())
        }

        fn more(&mut self) -> Result<Option<Bytes>, TransformError> {
            if self.held.is_empty() {
                return Ok(None);
            }
            let n = self.held.len().min(2);
            Ok(Some(Bytes::from(self.held.drain(..n).collect::<Vec<u8>>())))
        }

        fn end(&mut self) -> Result<Bytes, TransformError> {
            self.data(Bytes::from_static(b"..."))
        }
    }

    #[tokio::test]
    async fn what_a_transform_makes_in_parts_is_sent_part_by_part_to_the_end() {
        let mut body = ProxyBody::full(Bytes::from_static(b"orders"));
        body.rewrite(Box::new(Pieces { held: Vec::new() }));
        let got = frames(body).await;
        let parts: Vec<&[u8]> = got.iter().map(|p| p.as_deref().expect("part")).collect();
        assert_eq!(parts, [&b"or"[..], b"de", b"rs", b"..", b"."]);
    }

    #[tokio::test]
    async fn a_body_without_a_transform_is_passed_as_it_is() {
        let body = ProxyBody::full(Bytes::from_static(b"orders"));
        assert_eq!(frames(body).await, [Ok(Bytes::from_static(b"orders"))]);
    }
}
