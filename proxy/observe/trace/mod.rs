//! OpenTelemetry spans over OTLP (`tracing.otlp`): each request is one
//! server span, its upstream exchange a child client span.
//!
//! Spans are not built through a tracer and a span processor: the request
//! path already records what a span says (the ids, the clock, the route,
//! the decision, the status), so a sampled request carries one [`Draft`]
//! that encodes its attributes as OTLP protobuf as they are learned and
//! its two spans when its response ends (`wire.rs`); the bytes go to a
//! bounded queue without waiting (`export.rs`: batched, sent off the
//! request path over OTLP/HTTP or OTLP/gRPC, drops counted). Tracing off is
//! a `None` on the gate; a request sampled out costs the sampling decision
//! (a comparison on its trace id) and nothing more.

mod config;
mod export;
mod send;
mod span;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

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
    /// A new trace is sampled when its id's low 63 bits are below this.
    bound: u64,
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
            bound: ratio_bound(config.sampler.ratio),
            parent_based: config.sampler.parent_based,
            ids: RandomIdGenerator::default(),
            shared: Arc::new(span::Shared::new(queue, upstream)),
        })
    }

    /// Decides whether the request is sampled and says so in its trace
    /// flags (which the upstream receives). A sampled request gets a
    /// [`Draft`] that records it: its server span is the span id the
    /// request already drew, its client span a new one, which becomes the
    /// parent the upstream sees. Nothing else is done for a request
    /// sampled out.
    pub fn sample<B>(
        &self,
        trace: &mut TraceContext,
        req: &http::Request<B>,
        conn: &ConnInfo,
        request_id: &http::HeaderValue,
    ) -> Option<Box<Draft>> {
        let sampled = match trace.parent_id {
            Some(_) if self.parent_based => trace.flags & 1 == 1,
            _ => ratio_samples(self.bound, &trace.trace_id),
        };
        trace.flags = (trace.flags & !1) | u8::from(sampled);
        if !sampled {
            return None;
        }
        let client = self.ids.new_span_id().to_bytes();
        let draft = Draft::new(&self.shared, trace, client, req, conn, request_id);
        trace.span_id = client;
        Some(Box::new(draft))
    }

    /// Exports what is queued now, waiting at most `within` (shutdown).
    pub async fn flush(&self, within: Duration) -> bool {
        self.shared.queue.flush(within).await
    }
}

/// OpenTelemetry's `TraceIdRatioBased`, its bound computed once: a trace
/// is sampled when the low 63 bits of its id are below `ratio` × 2^63
/// (every bit set for 1, so that every trace is).
fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * (1u64 << 63) as f64) as u64
    }
}

fn ratio_samples(bound: u64, trace_id: &[u8; 16]) -> bool {
    let mut low = [0; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
    use rand::Rng;

    #[test]
    fn the_ratio_decides_as_the_sdks_trace_id_ratio_sampler() {
        let mut rng = rand::rng();
        for ratio in [0.0, 0.001, 0.01, 0.25, 0.5, 0.999, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let bound = ratio_bound(ratio);
            let mut ids: Vec<[u8; 16]> = (0..20_000).map(|_| rng.random()).collect();
            ids.extend([[0; 16], [0xff; 16]]);
            for id in ids {
                let theirs = sdk
                    .should_sample(
                        None,
                        TraceId::from_bytes(id),
                        "",
                        &SpanKind::Server,
                        &[],
                        &[],
                    )
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ratio_samples(bound, &id), theirs, "{ratio} {id:?}");
            }
        }
    }
}
