//! OpenTelemetry spans over OTLP (`tracing.otlp`): each request is one
//! server span, its upstream exchange a child client span.
//!
//! Spans are not built through a tracer and a span processor: the request
//! path already records what a span says (the ids, the clock, the route,
//! the decision, the status), so a sampled request carries one [`Draft`]
//! that becomes the SDK's [`SpanData`](opentelemetry_sdk::trace::SpanData)
//! when its response ends, and is handed to a bounded queue without
//! waiting (`export.rs`: batched, exported off the request path by the
//! official OTLP exporter, drops counted). Tracing off is a `None` on the
//! gate; a request sampled out costs the sampling decision and nothing
//! more.

mod config;
mod export;
mod span;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};

pub use config::{OtlpConfig, TracingConfig};
pub use span::{Answer, Draft};

use crate::model::connection::ConnInfo;
use crate::model::trace::TraceContext;
use crate::observe::metrics::TraceMetrics;

/// The upstream as its client span names it.
#[derive(Debug, Clone)]
pub struct UpstreamPeer {
    /// The host, as configured (`127.0.0.1`, `localhost`).
    pub host: String,
    pub port: u16,
    /// `network.protocol.version`: `1.1` or `2` (h2c).
    pub version: &'static str,
}

impl UpstreamPeer {
    pub fn new(authority: &http::uri::Authority, h2c: bool) -> UpstreamPeer {
        UpstreamPeer {
            host: authority.host().to_string(),
            port: authority.port_u16().unwrap_or(80),
            version: if h2c { "2" } else { "1.1" },
        }
    }
}

/// Samples requests and starts their spans; shared by every request.
pub struct Tracer {
    ratio: Sampler,
    parent_based: bool,
    ids: RandomIdGenerator,
    shared: Arc<span::Shared>,
}

impl Tracer {
    /// Builds the exporter and starts its task (on the current Tokio
    /// runtime). Fails only on what the configuration check cannot see
    /// (the exporter's own validation of the endpoint and headers).
    pub fn start(
        config: &OtlpConfig,
        upstream: UpstreamPeer,
        metrics: TraceMetrics,
    ) -> Result<Tracer, String> {
        let queue = export::spawn(config, metrics)?;
        Ok(Tracer {
            ratio: Sampler::TraceIdRatioBased(config.sampler.ratio),
            parent_based: config.sampler.parent_based,
            ids: RandomIdGenerator::default(),
            shared: Arc::new(span::Shared::new(queue, upstream)),
        })
    }

    /// Decides whether the request is sampled and says so in its trace
    /// flags (which the upstream receives). A sampled request gets its two
    /// span ids, the client span's becoming the parent the upstream sees,
    /// and a [`Draft`] that records it.
    pub fn sample<B>(
        &self,
        trace: &mut TraceContext,
        req: &http::Request<B>,
        conn: &ConnInfo,
        request_id: &http::HeaderValue,
    ) -> Option<Box<Draft>> {
        let sampled = match trace.parent_id {
            Some(_) if self.parent_based => trace.flags & 1 == 1,
            _ => self.ratio_samples(trace.trace_id),
        };
        trace.flags = (trace.flags & !1) | u8::from(sampled);
        if !sampled {
            return None;
        }
        let server = self.ids.new_span_id();
        let client = self.ids.new_span_id();
        let draft = Draft::new(&self.shared, trace, server, client, req, conn, request_id);
        trace.span_id = client.to_bytes();
        Some(Box::new(draft))
    }

    fn ratio_samples(&self, trace_id: [u8; 16]) -> bool {
        let result = self.ratio.should_sample(
            None,
            TraceId::from_bytes(trace_id),
            "",
            &SpanKind::Server,
            &[],
            &[],
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    /// Exports what is queued now, waiting at most `within` (shutdown).
    pub async fn flush(&self, within: Duration) -> bool {
        self.shared.queue.flush(within).await
    }
}
