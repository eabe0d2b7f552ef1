//! Field masking on the wire: the response stage's transform for a request
//! whose field plan hides something (or does not pass undeclared fields).
//!
//! It needs an `application/json` body (or a `+json` type): a successful
//! response of another type is refused before its head is sent (502
//! `unmaskable_response`); an error response of another type is passed on
//! as it is (it holds no records). The body goes through [`scan::Scanner`]:
//! a body that is not JSON, a value a method cannot make, or an undeclared
//! field under `undeclared: refuse`, cuts the stream.

mod key;
mod methods;
pub mod scan;
pub mod tree;

use std::sync::Arc;

use bytes::Bytes;

use prometheus_client::metrics::counter::Counter;

use crate::decision::fields::{FieldPlan, Mask};
use crate::model::response::{BodyTransform, ResponseTransform, TransformError};

use crate::observe::metrics::{DatasetLabels, FieldMetrics, HiddenLabels};
pub use key::{HashKey, HashKeys};

/// The transform's name in its errors; `pipeline/error.rs` answers its
/// refusals as `unmaskable_response`.
pub const MASKING: &str = "field masking";

/// The `fields` section: what field masking needs besides the contracts.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsConfig {
    /// The mesh's key for `hash`-masked fields (at least 32 bytes; the same
    /// file on every node, so that pseudonyms join; reloaded when it
    /// changes). Without it, a plan that hashes a field cuts the response.
    pub hash_key_file: std::path::PathBuf,
}

impl FieldsConfig {
    pub fn resolve(&mut self, base: &std::path::Path) {
        crate::base::paths::resolve(base, &mut self.hash_key_file);
    }
}

/// Masks the responses of one request by its field plan, after the route's
/// own transform (lifecycle headers), if it has one.
pub struct FieldMasking {
    tree: Arc<tree::Level>,
    key: Option<HashKey>,
    inner: Option<Arc<dyn ResponseTransform>>,
    /// `meshgate_fields_hidden_total` of the plan's product and dataset,
    /// by mask, and how many fields of each a masked response hides.
    hidden: Vec<(Counter, u64)>,
}

/// What the transform of one request is made from.
pub struct Masking<'a> {
    pub plan: Option<&'a FieldPlan>,
    pub product: &'a Arc<str>,
    /// The mesh's key, when configured: its current key masks the response.
    pub key: Option<&'a HashKeys>,
    pub metrics: &'a FieldMetrics,
}

impl FieldMasking {
    /// The transform for `m.plan`, or the route's own when the plan
    /// changes nothing.
    pub fn for_plan(
        m: Masking<'_>,
        inner: Option<Arc<dyn ResponseTransform>>,
    ) -> Option<Arc<dyn ResponseTransform>> {
        let Some(plan) = m.plan.filter(|p| p.rewrites()) else {
            return inner;
        };
        let mut hidden: Vec<(Counter, u64)> = Vec::new();
        let dataset: Arc<str> = Arc::from(plan.specs.dataset.as_str());
        for mask in Mask::ALL {
            let n = plan.hidden.iter().filter(|h| h.mask == mask).count() as u64;
            if n > 0 {
                let labels = HiddenLabels {
                    product: m.product.clone(),
                    dataset: dataset.clone(),
                    mask: mask.as_str(),
                };
                hidden.push((m.metrics.hidden.get_or_create(&labels).clone(), n));
            }
        }
        Some(Arc::new(FieldMasking {
            tree: tree::of(plan),
            key: m.key.map(HashKeys::current),
            inner,
            hidden,
        }))
    }
}

/// Counts and logs an allowed request whose field plan the shadow policy
/// set would make otherwise (as a shadow decision that disagrees is).
pub fn shadow_plan(
    metrics: &FieldMetrics,
    principal: &dyn std::fmt::Display,
    product: &Arc<str>,
    plan: &FieldPlan,
) {
    if !plan.shadow_disagrees() {
        return;
    }
    metrics
        .shadow_disagreements
        .get_or_create(&DatasetLabels {
            product: product.clone(),
            dataset: Arc::from(plan.specs.dataset.as_str()),
        })
        .inc();
    let enforced: Vec<&str> = plan.hidden.iter().map(|h| &*h.path).collect();
    let shadow: Vec<&str> = plan.shadow_hidden.iter().flatten().map(|p| &**p).collect();
    tracing::info!(
        principal = %principal,
        dataset = %plan.dataset,
        enforced_hidden = ?enforced,
        shadow_hidden = ?shadow,
        "shadow field policies disagree"
    );
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
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl std::fmt::Debug for FieldMasking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldMasking")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ResponseTransform for FieldMasking {
    fn head(
        &self,
        head: &mut http::response::Parts,
    ) -> Result<Option<Box<dyn BodyTransform>>, TransformError> {
        if let Some(inner) = &self.inner {
            if inner.head(head)?.is_some() {
                return Err(refused("the route's own transform rewrites the body too"));
            }
        }
        if !is_json(head) {
            if head.status.is_success() {
                return Err(refused("the response is not JSON and a field plan applies"));
            }
            return Ok(None);
        }
        for (counter, n) in &self.hidden {
            counter.inc_by(*n);
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
