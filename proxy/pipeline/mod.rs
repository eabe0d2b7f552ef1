//! The request path as stages, and the one place errors become responses.
//! Handed what it needs (a [`Gate`]); never imports the runtime.

pub mod body;
pub mod error;
pub mod grpc;
pub mod headers;
mod ids;
pub mod linger;
pub mod mask;
pub mod overrides;
pub mod request;

use std::sync::Arc;

use crate::decision::jwt::Verifier;
use crate::decision::quota::Quotas;
use crate::decision::store::PolicyStore;
use crate::observe::audit::Audit;
use crate::observe::metrics::Metrics;
use crate::transport::upstream::Upstream;

pub use ids::RequestIds;

/// Everything the request path uses, shared by every connection: the
/// policy store, end-user verification, quotas, the audit trail, metrics
/// and the upstream. Immutable but for the snapshots swapped inside.
pub struct Gate {
    pub metrics: Metrics,
    /// Cedar authorization; `None` is authenticated mode.
    pub policy: Option<PolicyStore>,
    /// End-user token verification, when issuers are configured.
    pub users: Option<Arc<Verifier>>,
    /// SLA quotas, when configured.
    pub quotas: Option<Quotas>,
    /// The audit trail; `None` when `audit.sink` is `off`.
    pub audit: Option<Audit>,
    /// Places for requests in flight (`limits.max_in_flight`), each held
    /// until its response body has ended or is dropped.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub upstream: Upstream,
    pub request_ids: RequestIds,
    /// `timeouts.latency_factor`: a product's upstream timeout is this
    /// times the latency its contract promises.
    pub latency_factor: f64,
    /// `limits.linger`: the body of a request answered before forwarding is
    /// read and discarded within these bounds (HTTP/2).
    pub linger: linger::LingerConfig,
    /// `headers.strip_overrides_extra`: override headers removed besides
    /// the built-in lists (`overrides.rs`).
    pub strip_extra: Vec<http::HeaderName>,
    /// `fields.hash_key_file`: the key of `hash`-masked fields, reloaded
    /// when its file changes.
    pub mask_key: Option<mask::HashKeys>,
    /// `conformance`: the mesh's checks of responses against their
    /// contracts (a product's `meshgateConformance` wins over it).
    pub conformance: crate::decision::fields::ConformanceSettings,
    /// OpenTelemetry spans (`tracing.otlp`); `None`: off.
    pub tracer: Option<crate::observe::trace::Tracer>,
}
