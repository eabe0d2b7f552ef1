//! Conformance on a response whose field plan hides nothing: the body is
//! parsed as masking would parse it (the same scanner or CSV masker, on
//! the plan's tree with its checks), and every byte passes as it came; the
//! masker's output is not sent. Only a sampled response is watched.
//!
//! A compressed body (`gzip`, `deflate`, `br`, `zstd`) is checked on a
//! decoded copy ([`decode::Decoder`], 64 KiB a piece) while its own bytes
//! pass as they came, `Content-Encoding` and all.
//!
//! What cannot be checked is passed unchecked: an error response, a body
//! of another content type (the contract describes records, not every
//! answer of the route), and, under `observe`, a range or a body in
//! stacked or unknown codings. Under `enforce` the request asks for the
//! whole body as it is (`rewrites_body`), and a range or such a body the
//! upstream sends anyway is refused. A body that is not the JSON, NDJSON
//! or CSV its type says, or a compressed one that is corrupt or cut, is a
//! `malformed` violation: noted under `observe` (and the rest passes
//! unchecked), refused under `enforce`.

use std::sync::Arc;

use bytes::Bytes;

use super::conform::{Checker, Sampled, CONFORMANCE};
use super::decode::{self, Decoder};
use super::{empty, format, tree, MaskBody, NotRead};
use crate::decision::fields::{FieldPlan, Mode};
use crate::model::conformance::{Kind, Kinds};
use crate::model::response::{Audience, BodyTransform, ResponseTransform, Shaped, TransformError};

/// Checks the responses of one request against the contract, unchanged.
pub struct Watching {
    tree: Arc<tree::Level>,
    sampled: Sampled,
    inner: Option<Arc<dyn ResponseTransform>>,
}

impl Watching {
    pub fn transform(
        plan: &FieldPlan,
        sampled: Sampled,
        inner: Option<Arc<dyn ResponseTransform>>,
    ) -> Arc<dyn ResponseTransform> {
        Arc::new(Watching {
            tree: plan.checked_tree(),
            sampled,
            inner,
        })
    }
}

impl std::fmt::Debug for Watching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watching")
            .field("mode", &self.sampled.mode)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn refused(reason: &str) -> TransformError {
    TransformError {
        transform: CONFORMANCE,
        reason: reason.into(),
    }
}

impl ResponseTransform for Watching {
    fn rewrites_body(&self) -> bool {
        self.sampled.mode == Mode::Enforce
    }

    fn refuses_grpc(&self) -> Option<TransformError> {
        self.inner.as_ref().and_then(|t| t.refuses_grpc())
    }

    /// The same URL may be masked for another caller.
    fn audience(&self) -> Audience {
        Audience::Caller
    }

    fn head(&self, head: &mut http::response::Parts) -> Result<Shaped, TransformError> {
        if let Some(inner) = &self.inner {
            if !matches!(inner.head(head)?, Shaped::Passed) {
                return Err(refused("the route's own transform rewrites the body"));
            }
        }
        // (Nothing is hidden from this caller: an error's body, which the
        // contract does not describe, passes unchecked.)
        if empty(head) || !head.status.is_success() {
            return Ok(Shaped::Passed);
        }
        let format = match format(head) {
            Ok(format) => format,
            Err(NotRead::Unreadable(why)) if self.sampled.mode == Mode::Enforce => {
                return Err(refused(&format!("{why}: the body cannot be checked")))
            }
            Err(_) => return Ok(Shaped::Passed),
        };
        let coding = match decode::coding(&head.headers) {
            Ok(coding) if head.status != http::StatusCode::PARTIAL_CONTENT => coding,
            _ => {
                return match self.sampled.mode {
                    Mode::Observe => Ok(Shaped::Passed),
                    Mode::Enforce => Err(refused(
                        "a range, or a body in stacked or unknown codings, cannot be checked",
                    )),
                }
            }
        };
        let body = MaskBody::of(format, self.tree.clone(), None, Some(self.sampled.clone()));
        Ok(Shaped::Rewritten(Box::new(Watch {
            body,
            decoder: coding.map(Decoder::new),
            stopped: false,
        })))
    }
}

/// One body, watched.
struct Watch {
    body: MaskBody,
    /// A compressed body's decoder: the body is checked on what it makes.
    decoder: Option<Decoder>,
    /// The body turned out malformed (under `observe`): the rest is not
    /// checked.
    stopped: bool,
}

impl Watch {
    fn checker_mut(&mut self) -> Option<&mut Checker> {
        match &mut self.body {
            MaskBody::Json(s) => s.checker_mut(),
            MaskBody::Csv(c) => c.checker_mut(),
        }
    }

    /// The parse failed with `reason`: a violation under `enforce` (found
    /// now, or one that failed it), else a malformed body noted.
    fn failed(&mut self, reason: String) -> Result<(), TransformError> {
        self.stopped = true;
        let Some(checker) = self.checker_mut() else {
            return Ok(());
        };
        if checker.refused() || checker.violation(Kind::Malformed).is_err() {
            return Err(TransformError {
                transform: CONFORMANCE,
                reason,
            });
        }
        Ok(())
    }

    /// Checks `piece` of the (decoded) body.
    fn check(&mut self, piece: &[u8]) -> Result<(), TransformError> {
        let fed = match &mut self.body {
            MaskBody::Json(s) => s.feed(piece),
            MaskBody::Csv(c) => c.feed(piece),
        };
        match fed {
            Ok(_) => Ok(()),
            Err(reason) => self.failed(reason),
        }
    }

    /// Checks all the decoder makes of what it holds (the whole stream,
    /// after `close`), a piece at a time.
    fn check_decoded(&mut self) -> Result<(), TransformError> {
        while !self.stopped {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(());
            };
            match decoder.next() {
                Ok(Some(piece)) => self.check(&piece)?,
                Ok(None) => return Ok(()),
                Err(reason) => self.failed(reason)?,
            }
        }
        Ok(())
    }
}

impl BodyTransform for Watch {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        if self.stopped {
            return Ok(chunk);
        }
        match self.decoder.as_mut() {
            None => self.check(&chunk)?,
            Some(decoder) => {
                decoder.push(chunk.clone());
                self.check_decoded()?;
            }
        }
        Ok(chunk)
    }

    fn end(&mut self) -> Result<Bytes, TransformError> {
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.close();
            self.check_decoded()?;
        }
        if !self.stopped {
            let fed = match &mut self.body {
                MaskBody::Json(s) => s.finish(),
                MaskBody::Csv(c) => c.finish(),
            };
            if let Err(reason) = fed {
                self.failed(reason)?;
            }
        }
        Ok(Bytes::new())
    }

    fn verbatim(&self) -> bool {
        true
    }

    fn look_ahead(&self) -> bool {
        self.body
            .checker()
            .is_some_and(|c| c.mode() == Mode::Enforce)
    }

    fn settled(&self) -> bool {
        self.stopped || self.body.checker().is_none_or(Checker::settled)
    }

    fn violations(&self) -> Kinds {
        self.body.checker().map_or(Kinds::NONE, Checker::kinds)
    }
}
