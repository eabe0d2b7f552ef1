//! Prometheus metrics (the official `prometheus-client` crate), all prefixed `meshgate_`.
//!
//! The hot-path handles (per status class counters, the duration histogram) are
//! resolved once at start-up so that recording a request takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Request duration buckets: 100 µs to 10 s.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// Authorization duration buckets: 1 µs to 10 ms.
pub const AUTHZ_BUCKETS: [f64; 12] = [
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025, 0.01,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub cert: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerResultLabels {
    pub issuer: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

const SHED_SCOPES: [&str; 3] = ["global", "product", "consumer"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub product: String,
    pub tier: String,
}

/// The handles the end-user token verifier records with.
#[derive(Clone, Debug)]
pub struct JwtMetrics {
    pub user_tokens: Family<ResultLabels, Counter>,
    pub jwks_refreshes: Family<IssuerResultLabels, Counter>,
    pub jwks_keys: Family<IssuerLabels, Gauge>,
}

pub struct Metrics {
    registry: Registry,
    by_class: [Counter; 5],
    pub request_duration: AtomicHistogram,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    pub open_connections: Gauge,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub cert_expiry: Family<CertLabels, Gauge>,
    /// allow, deny
    decisions: [Counter; 2],
    pub authorization_duration: AtomicHistogram,
    pub policy_evaluation_errors: Counter,
    policy_reloads: Family<ResultLabels, Counter>,
    policy_info: Family<VersionLabels, Gauge>,
    pub shadow_disagreements: Counter,
    /// End-user tokens checked: `ok` or the reason for refusal.
    pub user_tokens: Family<ResultLabels, Counter>,
    pub jwks_refreshes: Family<IssuerResultLabels, Counter>,
    pub jwks_keys: Family<IssuerLabels, Gauge>,
    /// Requests refused with 429, by product and consumer tier.
    pub quota_rejections: Family<QuotaLabels, Counter>,
    /// Requests shed with 503: global, product and consumer in-flight limits.
    load_shed: [Counter; 3],
    /// Quota checks the shared store (Redis) did not answer.
    pub quota_store_errors: Counter,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("meshgate");
        let requests = Family::<ClassLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by HTTP status class",
            requests.clone(),
        );
        let by_class = CLASSES.map(|class| requests.get_or_create(&ClassLabels { class }).clone());
        let request_duration = AtomicHistogram::new(&DURATION_BUCKETS);
        registry.register_with_unit(
            "request_duration",
            "Time from request received to response headers sent",
            Unit::Seconds,
            request_duration.clone(),
        );
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes refused, by reason",
            handshake_failures.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open on the data listener",
            open_connections.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Reloads of the server certificate, key and trust bundle, by result",
            tls_reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = tls_reloads.get_or_create(&ResultLabels { result });
        }
        let cert_expiry = Family::<CertLabels, Gauge>::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "notAfter of the loaded server certificate and trust-bundle CAs, Unix time",
            Unit::Seconds,
            cert_expiry.clone(),
        );
        let decisions_family = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authorization_decisions",
            "Cedar decisions on routed requests, by decision",
            decisions_family.clone(),
        );
        let decisions = ["allow", "deny"].map(|decision| {
            decisions_family
                .get_or_create(&DecisionLabels { decision })
                .clone()
        });
        let authorization_duration = AtomicHistogram::new(&AUTHZ_BUCKETS);
        registry.register_with_unit(
            "authorization_duration",
            "Time to build the Cedar request and decide it",
            Unit::Seconds,
            authorization_duration.clone(),
        );
        let policy_evaluation_errors = Counter::default();
        registry.register(
            "policy_evaluation_errors",
            "Policy evaluation errors (an erroring policy does not apply)",
            policy_evaluation_errors.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy snapshot reloads, by result",
            policy_reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        let policy_info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "policy_info",
            "The live policy snapshot: 1 for its version (sha256 of every input)",
            policy_info.clone(),
        );
        let shadow_disagreements = Counter::default();
        registry.register(
            "shadow_disagreements",
            "Requests on which the shadow policy set decided otherwise than the enforced one",
            shadow_disagreements.clone(),
        );
        let user_tokens = Family::<ResultLabels, Counter>::default();
        registry.register(
            "user_token_validations",
            "End-user bearer tokens checked, by result (ok or the reason for refusal)",
            user_tokens.clone(),
        );
        let jwks_refreshes = Family::<IssuerResultLabels, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Fetches of a token issuer's signing keys, by issuer and result",
            jwks_refreshes.clone(),
        );
        let jwks_keys = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "jwks_keys",
            "Signing keys currently held for a token issuer",
            jwks_keys.clone(),
        );
        let quota_rejections = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "quota_rejections",
            "Requests refused with 429 because the consumer's quota was used up, by product and tier",
            quota_rejections.clone(),
        );
        let shed = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "load_shed",
            "Requests refused with 503 at once because an in-flight limit was reached, by scope (global, product, consumer)",
            shed.clone(),
        );
        let load_shed = SHED_SCOPES.map(|scope| shed.get_or_create(&ScopeLabels { scope }).clone());
        let quota_store_errors = Counter::default();
        registry.register(
            "quota_store_errors",
            "Quota checks the shared store (Redis) did not answer; the failure mode applied",
            quota_store_errors.clone(),
        );
        Metrics {
            quota_store_errors,
            load_shed,
            quota_rejections,
            user_tokens,
            jwks_refreshes,
            jwks_keys,
            decisions,
            authorization_duration,
            policy_evaluation_errors,
            policy_reloads,
            policy_info,
            shadow_disagreements,
            registry,
            by_class,
            request_duration,
            handshake_failures,
            open_connections,
            tls_reloads,
            cert_expiry,
        }
    }

    /// Counts a request shed by the in-flight limit of `scope`.
    pub fn load_shed(&self, scope: &str) {
        if let Some(i) = SHED_SCOPES.iter().position(|s| *s == scope) {
            self.load_shed[i].inc();
        }
    }

    pub fn jwt(&self) -> JwtMetrics {
        JwtMetrics {
            user_tokens: self.user_tokens.clone(),
            jwks_refreshes: self.jwks_refreshes.clone(),
            jwks_keys: self.jwks_keys.clone(),
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.request_duration.observe(elapsed);
    }

    pub fn decision(&self, allowed: bool) {
        self.decisions[usize::from(!allowed)].inc();
    }

    /// A snapshot became live.
    pub fn policy_loaded(&self, version: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(1);
    }

    pub fn policy_reload(&self, result: &'static str) {
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A histogram of durations kept in atomics (no lock per observation).
#[derive(Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    bounds: Vec<f64>,
    /// Upper bounds in nanoseconds, for integer comparisons.
    bounds_ns: Vec<u64>,
    /// One count per bound, plus +Inf.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &[f64]) -> AtomicHistogram {
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds: bounds.to_vec(),
                bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_ns: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.inner.bounds_ns.partition_point(|b| *b < ns);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl std::fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicHistogram").finish_non_exhaustive()
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.inner.counts.len());
        let mut count = 0;
        for (i, c) in self.inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = self.inner.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = self.inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_text() {
        let m = Metrics::new();
        m.observe_request(http::StatusCode::OK, Duration::from_micros(50));
        m.observe_request(http::StatusCode::BAD_GATEWAY, Duration::from_millis(3));
        m.observe_request(http::StatusCode::OK, Duration::from_secs(20));
        let text = m.encode();
        assert!(
            text.contains("meshgate_requests_total{class=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_requests_total{class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_request_duration_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_request_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_request_duration_seconds_bucket{le=\"10.0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_request_duration_seconds_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("meshgate_request_duration_seconds_count 3"),
            "{text}"
        );
    }
}
