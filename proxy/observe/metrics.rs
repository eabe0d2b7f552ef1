//! Prometheus metrics (the official `prometheus-client` crate), all prefixed `meshgate_`.
//!
//! The hot-path handles (per status class counters, the duration histogram) are
//! resolved once at start-up so that recording a request takes no lock.

use crate::decision::jwt::{IssuerLabels, IssuerResultLabels, JwtMetrics, TokenResultLabels};
use crate::decision::store::Reload;
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

/// `meshgate_requests_total`: product ("" when no route matched), action,
/// decision (see [`crate::pipeline::error::ProxyError::decision`]) and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub product: Arc<str>,
    pub action: &'static str,
    pub decision: &'static str,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub product: Arc<str>,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProductLabels {
    pub product: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub product: Arc<str>,
    pub consumer: Arc<str>,
    pub decision: &'static str,
}

/// Which consumer label `meshgate_consumer_requests_total` carries. Consumer
/// labels exist only where their set is bounded, so cardinality cannot explode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerLabel {
    /// No per-consumer series (the default).
    #[default]
    None,
    /// The quota tier (bounded by the configuration).
    Tier,
    /// The calling service's identity, for the first `max_consumers` seen;
    /// later ones are counted as `other`.
    Service,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub consumer_label: ConsumerLabel,
    pub max_consumers: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            consumer_label: ConsumerLabel::None,
            max_consumers: 100,
        }
    }
}

/// One answered request, as the metrics see it.
#[derive(Debug)]
pub struct Observed<'a> {
    pub product: Option<&'a Arc<str>>,
    pub action: &'static str,
    pub decision: &'static str,
    pub status: http::StatusCode,
    pub elapsed: Duration,
    pub tier: Option<&'a Arc<str>>,
    /// The calling service (`x-meshgate-principal` form).
    pub service: &'a http::HeaderValue,
}

/// The handles the audit trail records with.
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    /// Events written to the sink.
    pub events: Counter,
    /// Events lost (mode `drop`, or refused requests in mode `block`).
    pub dropped: Counter,
    /// Requests that waited for room in the audit queue, and how long in all.
    pub backpressure_waits: Counter,
    pub backpressure_seconds: Counter<f64, AtomicU64>,
    /// Requests waiting for room right now.
    pub backpressure_waiting: Gauge,
    pub write_errors: Counter,
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

type HistogramFamily<L> = Family<L, AtomicHistogram, fn() -> AtomicHistogram>;

fn request_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&DURATION_BUCKETS)
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
pub struct ScopeLabels {
    pub scope: &'static str,
}

const SHED_SCOPES: [&str; 3] = ["global", "product", "consumer"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub product: String,
    pub tier: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<DurationLabels>,
    upstream_duration: HistogramFamily<ProductLabels>,
    consumer_requests: Option<Family<ConsumerLabels, Counter>>,
    consumer_label: ConsumerLabel,
    max_consumers: usize,
    /// Services given their own consumer series (label `service`).
    consumers_seen: std::sync::RwLock<std::collections::HashSet<Arc<str>>>,
    no_product: Arc<str>,
    other_consumer: Arc<str>,
    pub audit: AuditMetrics,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    pub open_connections: Gauge,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub cert_expiry: Family<CertLabels, Gauge>,
    /// allow, deny
    decisions: [Counter; 2],
    pub authorization_duration: AtomicHistogram,
    pub policy_evaluation_errors: Counter,
    policy_reloads: Family<ResultLabels, Counter>,
    policy_last_reload_successful: Gauge,
    policy_info: Family<VersionLabels, Gauge>,
    pub shadow_disagreements: Counter,
    /// End-user tokens checked: `ok` or the reason for refusal.
    pub user_tokens: Family<TokenResultLabels, Counter>,
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
        Metrics::with_config(&MetricsConfig::default())
    }

    pub fn with_config(config: &MetricsConfig) -> Metrics {
        let mut registry = Registry::with_prefix("meshgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by data product, action, decision and HTTP status class",
            requests.clone(),
        );
        let request_duration: HistogramFamily<DurationLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from request received to response headers sent, by data product and decision",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration: HistogramFamily<ProductLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "upstream_duration",
            "Time from forwarding a request to the upstream's response headers, by data product",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let consumer_requests = match config.consumer_label {
            ConsumerLabel::None => None,
            _ => {
                let f = Family::<ConsumerLabels, Counter>::default();
                registry.register(
                    "consumer_requests",
                    "Requests by data product, consumer and decision (metrics.consumer_label)",
                    f.clone(),
                );
                Some(f)
            }
        };
        let audit = AuditMetrics {
            events: Counter::default(),
            dropped: Counter::default(),
            backpressure_waits: Counter::default(),
            backpressure_seconds: Counter::default(),
            backpressure_waiting: Gauge::default(),
            write_errors: Counter::default(),
        };
        registry.register(
            "audit_events",
            "Audit events written to the sink",
            audit.events.clone(),
        );
        registry.register(
            "audit_dropped",
            "Audit events lost: queue full or write failed in mode drop, or the request refused in mode block",
            audit.dropped.clone(),
        );
        registry.register(
            "audit_backpressure_waits",
            "Requests that waited for room in the full audit queue (mode block)",
            audit.backpressure_waits.clone(),
        );
        registry.register_with_unit(
            "audit_backpressure",
            "Time requests spent waiting for room in the full audit queue (mode block)",
            Unit::Seconds,
            audit.backpressure_seconds.clone(),
        );
        registry.register(
            "audit_backpressure_waiting",
            "Requests waiting for room in the full audit queue now (mode block)",
            audit.backpressure_waiting.clone(),
        );
        registry.register(
            "audit_write_errors",
            "Failed writes to the audit sink",
            audit.write_errors.clone(),
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
        let policy_last_reload_successful = Gauge::default();
        // Nothing has failed yet (and without a policy nothing can).
        policy_last_reload_successful.set(1);
        registry.register(
            "policy_last_reload_successful",
            "1 if the last policy load or reload succeeded, 0 while the sidecar enforces an older snapshot because it failed",
            policy_last_reload_successful.clone(),
        );
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
        let user_tokens = Family::<TokenResultLabels, Counter>::default();
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
            requests,
            request_duration,
            upstream_duration,
            consumer_requests,
            consumer_label: config.consumer_label,
            max_consumers: config.max_consumers,
            consumers_seen: Default::default(),
            no_product: Arc::from(""),
            other_consumer: Arc::from("other"),
            audit,
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
            policy_last_reload_successful,
            policy_info,
            shadow_disagreements,
            registry,
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
    pub fn observe_request(&self, r: &Observed<'_>) {
        let class = CLASSES[(r.status.as_u16() / 100).clamp(1, 5) as usize - 1];
        let product = r.product.unwrap_or(&self.no_product);
        self.requests
            .get_or_create(&RequestLabels {
                product: product.clone(),
                action: r.action,
                decision: r.decision,
                class,
            })
            .inc();
        self.request_duration
            .get_or_create(&DurationLabels {
                product: product.clone(),
                decision: r.decision,
            })
            .observe(r.elapsed);
        if let Some(family) = &self.consumer_requests {
            let consumer = match self.consumer_label {
                ConsumerLabel::Tier => r.tier.cloned().unwrap_or_else(|| self.no_product.clone()),
                _ => self.bounded_consumer(r.service.to_str().unwrap_or("")),
            };
            family
                .get_or_create(&ConsumerLabels {
                    product: product.clone(),
                    consumer,
                    decision: r.decision,
                })
                .inc();
        }
    }

    /// The service's own label while fewer than `max_consumers` have one.
    fn bounded_consumer(&self, service: &str) -> Arc<str> {
        if let Ok(seen) = self.consumers_seen.read() {
            if let Some(s) = seen.get(service) {
                return s.clone();
            }
            if seen.len() >= self.max_consumers {
                return self.other_consumer.clone();
            }
        }
        let Ok(mut seen) = self.consumers_seen.write() else {
            return self.other_consumer.clone();
        };
        if let Some(s) = seen.get(service) {
            return s.clone();
        }
        if seen.len() >= self.max_consumers {
            return self.other_consumer.clone();
        }
        let s: Arc<str> = Arc::from(service);
        seen.insert(s.clone());
        s
    }

    /// Records the upstream's time to response headers.
    pub fn observe_upstream(&self, product: Option<&Arc<str>>, elapsed: Duration) {
        self.upstream_duration
            .get_or_create(&ProductLabels {
                product: product.unwrap_or(&self.no_product).clone(),
            })
            .observe(elapsed);
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
        self.policy_last_reload_successful.set(1);
    }

    /// Records what a policy reload did.
    pub fn policy_reloaded(&self, reload: &Reload) {
        match reload {
            // The inputs build the snapshot in force (again, after a failed
            // reload): nothing is pending, so the last reload succeeded.
            Reload::Unchanged { .. } => {
                self.policy_last_reload_successful.set(1);
            }
            Reload::Swapped { version, .. } => {
                self.policy_loaded(version);
                self.policy_reload("ok");
            }
            Reload::Failed { .. } => self.policy_reload("error"),
        }
    }

    fn policy_reload(&self, result: &'static str) {
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.policy_last_reload_successful
            .set(i64::from(result == "ok"));
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

    fn observed<'a>(
        product: Option<&'a Arc<str>>,
        decision: &'static str,
        status: u16,
        elapsed: Duration,
        service: &'a http::HeaderValue,
    ) -> Observed<'a> {
        Observed {
            product,
            action: if product.is_some() { "read" } else { "" },
            decision,
            status: http::StatusCode::from_u16(status).expect("status"),
            elapsed,
            tier: None,
            service,
        }
    }

    #[test]
    fn requests_are_counted_by_product_decision_and_class() {
        let m = Metrics::new();
        let orders: Arc<str> = Arc::from("sales.orders");
        let p = Some(&orders);
        let a = http::HeaderValue::from_static("spiffe://a");
        m.observe_request(&observed(p, "allow", 200, Duration::from_micros(50), &a));
        m.observe_request(&observed(p, "allow", 502, Duration::from_millis(3), &a));
        m.observe_request(&observed(p, "allow", 200, Duration::from_secs(20), &a));
        m.observe_request(&observed(
            None,
            "no_route",
            404,
            Duration::from_micros(5),
            &a,
        ));
        let text = m.encode();
        for line in [
            r#"meshgate_requests_total{product="sales.orders",action="read",decision="allow",class="2xx"} 2"#,
            r#"meshgate_requests_total{product="sales.orders",action="read",decision="allow",class="5xx"} 1"#,
            r#"meshgate_requests_total{product="",action="",decision="no_route",class="4xx"} 1"#,
            r#"meshgate_request_duration_seconds_bucket{le="0.0001",product="sales.orders",decision="allow"} 1"#,
            r#"meshgate_request_duration_seconds_bucket{le="0.005",product="sales.orders",decision="allow"} 2"#,
            r#"meshgate_request_duration_seconds_bucket{le="10.0",product="sales.orders",decision="allow"} 2"#,
            r#"meshgate_request_duration_seconds_bucket{le="+Inf",product="sales.orders",decision="allow"} 3"#,
            r#"meshgate_request_duration_seconds_count{product="sales.orders",decision="allow"} 3"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("consumer_requests"), "off by default");
    }

    #[test]
    fn consumer_labels_stay_bounded() {
        let m = Metrics::with_config(&MetricsConfig {
            consumer_label: ConsumerLabel::Service,
            max_consumers: 2,
        });
        let orders: Arc<str> = Arc::from("sales.orders");
        for service in [
            "spiffe://a",
            "spiffe://b",
            "spiffe://c",
            "spiffe://d",
            "spiffe://a",
        ] {
            let service = http::HeaderValue::from_static(service);
            m.observe_request(&observed(
                Some(&orders),
                "deny",
                403,
                Duration::ZERO,
                &service,
            ));
        }
        let text = m.encode();
        for line in [
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://a",decision="deny"} 2"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://b",decision="deny"} 1"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="other",decision="deny"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
