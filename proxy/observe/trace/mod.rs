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
//!
//! Sampling is parent-based, as OpenTelemetry's default, but the caller's
//! word is bounded: a caller that asks for every request to be sampled
//! (any identity can send `traceparent` with the sampled flag, or, not
//! parent-based, choose trace ids the ratio samples) gets at most
//! `sampler.parent_rate` requests a second sampled beyond the ratio;
//! past it, the ratio decides on meshgate's own random draw, and
//! `meshgate_trace_parent_rate_limited_total` counts them.

mod config;
mod export;
mod send;
mod span;
mod wire;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use prometheus_client::metrics::counter::Counter;

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
    sampler: Sampler,
    ids: RandomIdGenerator,
    shared: Arc<span::Shared>,
}

/// The sampling decision: parent-based ratio sampling, the caller's word
/// bounded by `sampler.parent_rate`.
struct Sampler {
    /// A new trace is sampled when its id's low 63 bits are below this.
    bound: u64,
    parent_based: bool,
    /// Requests a second sampled on the caller's word beyond the ratio;
    /// `None`: none (`parent_rate: 0`).
    parent_rate: Option<DefaultDirectRateLimiter>,
    /// Requests the caller asked for past `parent_rate`.
    limited: Counter,
    /// The second (since `start`) `parent_rate` last turned a request
    /// away, plus one (0: never): not parent-based, the ratio is then
    /// decided on meshgate's own draw for every continued trace.
    limited_at: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
}

impl Sampler {
    fn new(bound: u64, parent_based: bool, parent_rate: Option<Quota>, limited: Counter) -> Self {
        Sampler {
            bound,
            parent_based,
            parent_rate: parent_rate.map(DefaultDirectRateLimiter::direct),
            limited,
            limited_at: std::sync::atomic::AtomicU64::new(0),
            start: std::time::Instant::now(),
        }
    }

    /// Whether `parent_rate` turned a request away this second or the last.
    fn recently_limited(&self) -> bool {
        let at = self.limited_at.load(std::sync::atomic::Ordering::Relaxed);
        at != 0 && self.start.elapsed().as_secs() <= at
    }

    /// Whether the request of `trace` is sampled. A new trace: the ratio on
    /// its id (meshgate's own). A continued trace: what the caller asked
    /// for (its sampled flag; not parent-based, the ratio on its trace id)
    /// when the ratio on meshgate's own draw (the span id it drew, random)
    /// agrees or within `parent_rate`; past it, that own draw (not parent
    /// based, for every continued trace while the limit turns requests
    /// away: the ratio holds, not its square).
    fn decide(&self, trace: &TraceContext) -> bool {
        if trace.parent_id.is_none() {
            return ratio_samples(self.bound, &trace.trace_id);
        }
        let own = below(self.bound, trace.span_id);
        let asked = if self.parent_based {
            trace.flags & 1 == 1
        } else {
            ratio_samples(self.bound, &trace.trace_id)
        };
        if asked == own {
            return asked;
        }
        if !asked {
            // The ratio on the caller's trace id says no where the own
            // draw says yes: the id decides, unless the limit is turning
            // away the ids that say yes.
            return !self.parent_based && self.recently_limited();
        }
        if (self.parent_rate.as_ref()).is_some_and(|limit| limit.check().is_ok()) {
            return true;
        }
        self.limited.inc();
        let now = self.start.elapsed().as_secs();
        self.limited_at
            .store(now + 1, std::sync::atomic::Ordering::Relaxed);
        false
    }
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
        let limited = metrics.parent_rate_limited.clone();
        let queue = export::spawn(config, metrics)?;
        let s = &config.sampler;
        let rate = NonZeroU32::new(s.parent_rate).map(Quota::per_second);
        Ok(Tracer {
            sampler: Sampler::new(ratio_bound(s.ratio), s.parent_based, rate, limited),
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
        let sampled = self.sampler.decide(trace);
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

    /// After a [`Tracer::flush`] that did not finish, as the process exits:
    /// counts the spans left (queued, or in the export under way) as
    /// dropped, `reason="shutdown"`, and returns how many.
    pub fn abandon(&self) -> u64 {
        self.shared.queue.abandon()
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
    below(bound, low)
}

/// Eight random bytes' low 63 bits are below `bound`.
fn below(bound: u64, random: [u8; 8]) -> bool {
    (u64::from_be_bytes(random) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{Sampler as SdkSampler, SamplingDecision, ShouldSample};
    use rand::Rng;

    #[test]
    fn the_ratio_decides_as_the_sdks_trace_id_ratio_sampler() {
        let mut rng = rand::rng();
        for ratio in [0.0, 0.001, 0.01, 0.25, 0.5, 0.999, 1.0] {
            let sdk = SdkSampler::TraceIdRatioBased(ratio);
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

    /// A continued trace with `flags`, its trace id's low bits `low`,
    /// meshgate's own draw `own`.
    fn continued(flags: u8, low: u8, own: u8) -> TraceContext {
        let mut trace_id = [0x4b; 16];
        trace_id[8..].copy_from_slice(&[low; 8]);
        TraceContext {
            trace_id,
            span_id: [own; 8],
            parent_id: Some([1; 8]),
            flags,
        }
    }

    /// How many of 100 requests in continued traces `sampler` samples.
    fn sampled(sampler: &Sampler, flags: u8, low: u8) -> usize {
        (0..100)
            .filter(|_| sampler.decide(&continued(flags, low, 0xff)))
            .count()
    }

    #[test]
    fn a_callers_sampled_flag_is_honoured_only_within_parent_rate() {
        // 5 an hour, so that none comes back while the test runs.
        let quota = Quota::per_hour(NonZeroU32::MIN.saturating_add(4));
        let none = ratio_bound(0.0);
        let s = Sampler::new(none, true, Some(quota), Counter::default());
        assert_eq!(sampled(&s, 1, 0xff), 5, "the first 5, then the ratio (0)");
        assert_eq!(s.limited.get(), 95);
        // Not asked: never sampled, and no count.
        assert_eq!(sampled(&s, 0, 0xff), 0);
        assert_eq!(s.limited.get(), 95);
        // What the ratio samples on meshgate's own draw takes no allowance.
        let all = Sampler::new(ratio_bound(1.0), true, Some(quota), Counter::default());
        assert_eq!(sampled(&all, 1, 0xff), 100);
        assert_eq!(all.limited.get(), 0);
        let half = Sampler::new(ratio_bound(0.5), true, Some(quota), Counter::default());
        assert!(half.decide(&continued(1, 0xff, 0x00)), "own draw samples");
        assert_eq!(sampled(&half, 1, 0xff), 5, "own draw (0xff…) does not");
        // parent_rate 0: the ratio alone.
        let zero = Sampler::new(none, true, None, Counter::default());
        assert_eq!(sampled(&zero, 1, 0xff), 0);
        assert_eq!(zero.limited.get(), 100);
        // Not parent-based: a trace id the caller chose to pass the ratio
        // is its word too.
        let chosen = Sampler::new(ratio_bound(0.01), false, Some(quota), Counter::default());
        assert_eq!(sampled(&chosen, 0, 0x00), 5);
        assert_eq!(chosen.limited.get(), 95);
        // A new trace's id is meshgate's own: the ratio, unbounded.
        let mut new = continued(1, 0x00, 0xff);
        new.parent_id = None;
        assert!((0..100).all(|_| chosen.decide(&new)));
        assert_eq!(chosen.limited.get(), 95);
        // Past the limit, not parent-based, the own draw decides every
        // continued trace, the ids the ratio refuses too: the share stays
        // the ratio's, not its square.
        let fresh = Sampler::new(ratio_bound(0.5), false, Some(quota), Counter::default());
        assert!(
            !fresh.decide(&continued(0, 0xff, 0x00)),
            "not limited yet: the id says no"
        );
        assert_eq!(
            sampled(&fresh, 0, 0x00),
            5,
            "the id says yes, the own draw no"
        );
        assert!(
            fresh.decide(&continued(0, 0xff, 0x00)),
            "limited: the own draw says yes"
        );
        assert!(
            !fresh.decide(&continued(0, 0xff, 0xff)),
            "limited: the own draw says no"
        );
    }
}
