//! The span export's counters: `meshgate_trace_spans_exported_total` and
//! `meshgate_trace_spans_dropped_total` by reason. Registered whether or
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
            "Sampled spans that were never exported: queue_full (the bounded export queue was full) or export_failed (the collector refused the batch or did not answer within tracing.otlp.timeout)",
            dropped.clone(),
        );
        let reason = |reason| dropped.get_or_create(&DropLabels { reason }).clone();
        TraceMetrics {
            exported,
            dropped_queue_full: reason("queue_full"),
            dropped_export_failed: reason("export_failed"),
        }
    }
}
