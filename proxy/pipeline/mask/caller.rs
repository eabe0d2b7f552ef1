//! The transform of a route whose field plan hides nothing from this
//! caller: the body passes as the upstream sends it, but the same URL may
//! be masked for another caller, so the answer is this caller's own
//! ([`Audience::Caller`]: kept from shared caches, `Vary` naming what a
//! plan reads). The route's own transform (lifecycle headers) runs inside.

use std::sync::{Arc, LazyLock};

use crate::model::response::{Audience, ResponseTransform, Shaped, TransformError};

/// The route's own transform, its answers marked as the caller's.
#[derive(Debug)]
pub(super) struct PerCaller {
    inner: Option<Arc<dyn ResponseTransform>>,
}

/// The one for routes without a transform of their own (most): shared,
/// not made per request.
static ALONE: LazyLock<Arc<dyn ResponseTransform>> =
    LazyLock::new(|| Arc::new(PerCaller { inner: None }));

impl PerCaller {
    pub(super) fn transform(
        inner: Option<Arc<dyn ResponseTransform>>,
    ) -> Arc<dyn ResponseTransform> {
        match inner {
            None => ALONE.clone(),
            Some(inner) => Arc::new(PerCaller { inner: Some(inner) }),
        }
    }
}

impl ResponseTransform for PerCaller {
    fn head(&self, head: &mut http::response::Parts) -> Result<Shaped, TransformError> {
        match &self.inner {
            Some(inner) => inner.head(head),
            None => Ok(Shaped::Passed),
        }
    }

    fn audience(&self) -> Audience {
        Audience::Caller
    }

    fn rewrites_body(&self) -> bool {
        self.inner.as_ref().is_some_and(|t| t.rewrites_body())
    }

    fn refuses_grpc(&self) -> Option<TransformError> {
        self.inner.as_ref().and_then(|t| t.refuses_grpc())
    }
}
