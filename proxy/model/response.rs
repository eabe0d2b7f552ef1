//! The response stage's seam: what may change a response on its way from
//! the product's server to the caller.
//!
//! A [`ResponseTransform`] is chosen when the request is routed (the
//! decision layer attaches one to what a route leads to; absent by
//! default, and then nothing of this runs). It sees the response head and
//! may change its headers; when the body must change too it returns a
//! [`BodyTransform`], which the pipeline feeds the body through as it
//! streams, and when the body must not pass at all it says so
//! ([`Shaped::Withheld`]). Failing is closed: an error from either ends the response
//! without the bytes that could not be made safe (before the head: a 502;
//! after it: the stream is cut, which the client sees as an incomplete
//! response, and the audit event says `complete: false`).

use bytes::Bytes;

/// Why the response stage could not pass a response on. The message is
/// logged; the caller learns only that the response failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{transform}: {reason}")]
pub struct TransformError {
    /// The transform that failed.
    pub transform: &'static str,
    pub reason: String,
}

/// What a transform makes of a response, by its head
/// ([`ResponseTransform::head`]).
pub enum Shaped {
    /// The body passes as the upstream sends it.
    Passed,
    /// The body goes through this transform as it streams (the pipeline
    /// drops `Content-Length`: the length is no longer the upstream's).
    Rewritten(Box<dyn BodyTransform>),
    /// The body must not reach the caller, though its status and the rest
    /// of its head may: the sidecar answers the status with a small body
    /// of its own (an error or redirect whose body masking cannot read,
    /// on a route whose field plan hides something).
    Withheld,
}

impl Shaped {
    /// The body's transform, when it is rewritten.
    pub fn rewrite(self) -> Option<Box<dyn BodyTransform>> {
        match self {
            Shaped::Rewritten(body) => Some(body),
            Shaped::Passed | Shaped::Withheld => None,
        }
    }
}

/// Whom the answers of a route are for. The response stage marks every
/// response of a route whose answers depend on the caller, whatever its
/// status and whether or not it has a body, so that no shared cache
/// keeps one caller's answer for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Anyone: the head is left as it is.
    Anyone,
    /// Each caller its own (a field plan applies, though it hides nothing
    /// from this one): kept from shared caches, and `Vary` names the
    /// request headers a plan reads. The body is the upstream's bytes, so
    /// its validators stand.
    Caller,
    /// Each caller its own, and the body is not the upstream's bytes (the
    /// plan hides something): what describes those bytes (`ETag`, length,
    /// digests) goes too, a 304's or 204's included.
    Masked,
}

/// Changes the responses of one route.
pub trait ResponseTransform: Send + Sync + std::fmt::Debug {
    /// Adjusts the head of an upstream response, and says what becomes of
    /// its body.
    fn head(&self, head: &mut http::response::Parts) -> Result<Shaped, TransformError>;

    /// Whom its answers are for.
    fn audience(&self) -> Audience {
        Audience::Anyone
    }

    /// Whether it rewrites bodies (then the request asks the upstream for
    /// the whole body as it is: no range, condition or compression).
    fn rewrites_body(&self) -> bool {
        false
    }

    /// Why it would refuse any response to a gRPC call (whose messages it
    /// does not read): then the call is refused before it is forwarded, so
    /// that it runs nowhere (a write would otherwise be done, and its
    /// caller told it failed).
    fn refuses_grpc(&self) -> Option<TransformError> {
        None
    }
}

/// Rewrites one response body as it streams: each chunk in, what may be
/// sent now out (possibly nothing, while a value is still incomplete).
pub trait BodyTransform: Send {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError>;

    /// More of what the last chunk (or the end) makes, for a transform
    /// that bounds what one call returns (a decoder: a small chunk may
    /// expand a thousandfold). The pipeline calls it after each `data` and
    /// after `end`, sending each part, until it returns `None`.
    fn more(&mut self) -> Result<Option<Bytes>, TransformError> {
        Ok(None)
    }

    /// The body has ended: what is still held back, or an error if the
    /// body, taken whole, could not be made safe.
    fn end(&mut self) -> Result<Bytes, TransformError>;

    /// Whether it passes every byte as it came (it only watches): the
    /// head keeps what describes the upstream's bytes.
    fn verbatim(&self) -> bool {
        false
    }

    /// Whether the head waits until [`settled`](Self::settled) (within a
    /// bound), so that what the transform finds in the first record is
    /// answered before the head is sent.
    fn look_ahead(&self) -> bool {
        false
    }

    /// Whether it has seen enough to let the head go.
    fn settled(&self) -> bool {
        true
    }

    /// The contract violations it found, for the audit event.
    fn violations(&self) -> crate::model::conformance::Kinds {
        crate::model::conformance::Kinds::NONE
    }
}
