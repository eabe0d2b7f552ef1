//! The span export's counters: `meshgate_trace_spans_exported_total`,
//! `meshgate_trace_spans_dropped_total` by reason, and
//! `meshgate_trace_parent_rate_limited_total` (sampling). Registered whether or
//! not `tracing.otlp` is configured, so that dashboards and alerts need
//! no special case (they stay at zero when tracing is off).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// The handles the span queue and its exporter count with; cheap to clone.
#[derive(Clone, Debug)]
pub struct TraceMetrics {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans that did not fit in the bounded queue (the exporter is behind:
    /// a slow or unreachable collector).
    pub dropped_queue_full: Counter,
    /// Spans of batches the collector refused or did not answer in time.
    pub dropped_export_failed: Counter,
    /// Spans still queued or being exported when the process exited (the
    /// collector did not take them within the shutdown flush).
    pub dropped_shutdown: Counter,
    /// Continued traces the caller asked to sample that
    /// `sampler.parent_rate` refused (the ratio then decided).
    pub parent_rate_limited: Counter,
}

impl TraceMetrics {
    pub(super) fn register(registry: &mut Registry) -> TraceMetrics {
        let exported = Counter::default();
        registry.register(
            "trace_spans_exported",
            "Spans (server and client) the OTLP collector accepted",
            exported.clone(),
        );
        let dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "Sampled spans that were never exported: queue_full (the bounded export queue was full), export_failed (the collector refused the batch, answered with more than 4 KiB, or did not answer within tracing.otlp.timeout) or shutdown (still queued or being exported when the process exited)",
            dropped.clone(),
        );
        let parent_rate_limited = Counter::default();
        registry.register(
            "trace_parent_rate_limited",
            "Requests in a caller's trace that the caller asked to sample (its sampled flag) beyond tracing.otlp.sampler.parent_rate a second: the ratio decided them instead, on meshgate's own draw",
            parent_rate_limited.clone(),
        );
        let reason = |reason| dropped.get_or_create(&DropLabels { reason }).clone();
        TraceMetrics {
            exported,
            dropped_queue_full: reason("queue_full"),
            dropped_export_failed: reason("export_failed"),
            dropped_shutdown: reason("shutdown"),
            parent_rate_limited,
        }
    }
}
