//! Field masking on the wire: the response stage's transform for a request
//! whose field plan hides something (or does not pass undeclared fields).
//!
//! It needs an `application/json` body (or a `+json` type): a successful
//! response of another type is refused before its head is sent (502
//! `unmaskable_response`); an error response of another type is passed on
//! as it is (it holds no records). The body goes through [`scan::Scanner`]:
//! a body that is not JSON, a value a method cannot make, or an undeclared
//! field under `undeclared: refuse`, cuts the stream.

mod methods;
pub mod scan;
pub mod tree;

use std::sync::Arc;

use aws_lc_rs::hmac;
use bytes::Bytes;

use crate::decision::fields::FieldPlan;
use crate::model::response::{BodyTransform, ResponseTransform, TransformError};

/// The transform's name in its errors; `pipeline/error.rs` answers its
/// refusals as `unmaskable_response`.
pub const MASKING: &str = "field masking";

/// The mesh's pseudonymisation key (`fields.hash_key_file`).
pub type HashKey = Arc<hmac::Key>;

/// The `fields` section: what field masking needs besides the contracts.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    /// The mesh's key for `hash`-masked fields (at least 32 bytes; the same
    /// file on every node, so that pseudonyms join). Without it, a plan
    /// that hashes a field cuts the response.
    pub hash_key_file: std::path::PathBuf,
}

impl FieldsConfig {
    pub fn resolve(&mut self, base: &std::path::Path) {
        crate::base::paths::resolve(base, &mut self.hash_key_file);
    }
}

/// Reads a hash key file: its bytes, trimmed of surrounding whitespace, at
/// least 32 of them.
pub fn read_key(path: &std::path::Path) -> Result<HashKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 32 {
        return Err(format!(
            "{}: a hash key has at least 32 bytes (this one has {})",
            path.display(),
            trimmed.len()
        ));
    }
    Ok(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, trimmed)))
}

/// Masks the responses of one request by its field plan, after the route's
/// own transform (lifecycle headers), if it has one.
pub struct FieldMasking {
    tree: Arc<tree::Level>,
    key: Option<HashKey>,
    inner: Option<Arc<dyn ResponseTransform>>,
}

impl FieldMasking {
    /// The transform for `plan`, or the route's own when the plan changes
    /// nothing.
    pub fn for_plan(
        plan: Option<&FieldPlan>,
        key: Option<&HashKey>,
        inner: Option<Arc<dyn ResponseTransform>>,
    ) -> Option<Arc<dyn ResponseTransform>> {
        match plan.filter(|p| p.rewrites()) {
            None => inner,
            Some(plan) => Some(Arc::new(FieldMasking {
                tree: tree::of(plan),
                key: key.cloned(),
                inner,
            })),
        }
    }
}

fn refused(reason: impl Into<String>) -> TransformError {
    TransformError {
        transform: MASKING,
        reason: reason.into(),
    }
}

/// Whether a `Content-Type` is JSON: `application/json` or a `+json` type.
fn is_json(head: &http::response::Parts) -> bool {
    let Some(v) = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    // gRPC's JSON (`application/grpc+json`) is framed in gRPC messages, not
    // one JSON value: it cannot be masked as JSON.
    essence == "application/json"
        || (essence.starts_with("application/")
            && essence.ends_with("+json")
            && !essence.starts_with("application/grpc"))
}

/// A response with no body to mask: 204, 304, or a declared length of 0.
fn empty(head: &http::response::Parts) -> bool {
    matches!(head.status.as_u16(), 204 | 304)
        || head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
}

impl std::fmt::Debug for FieldMasking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldMasking")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ResponseTransform for FieldMasking {
    fn rewrites_body(&self) -> bool {
        true
    }

    fn head(
        &self,
        head: &mut http::response::Parts,
    ) -> Result<Option<Box<dyn BodyTransform>>, TransformError> {
        if let Some(inner) = &self.inner {
            if inner.head(head)?.is_some() {
                return Err(refused("the route's own transform rewrites the body too"));
            }
        }
        if empty(head) {
            return Ok(None);
        }
        if !is_json(head) {
            if head.status.is_success() {
                return Err(refused("the response is not JSON and a field plan applies"));
            }
            return Ok(None);
        }
        Ok(Some(Box::new(MaskBody(scan::Scanner::new(
            self.tree.clone(),
            self.key.clone(),
        )))))
    }
}

struct MaskBody(scan::Scanner);

impl BodyTransform for MaskBody {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        self.0.feed(&chunk).map(Bytes::from).map_err(refused)
    }

    fn end(&mut self) -> Result<Bytes, TransformError> {
        self.0.finish().map(Bytes::from).map_err(refused)
    }
}

#[cfg(test)]
mod tests;
