//! Prometheus metrics (the official `prometheus-client` crate), all prefixed `meshgate_`.
//!
//! The hot-path handles (per status class counters, the duration histogram) are
//! resolved once at start-up so that recording a request takes no lock.

mod areas;
mod conformance;
mod fields;
mod grpc;
mod handles;
mod histogram;
mod trace;

pub use conformance::{ConformanceMetrics, ViolationLabels};
pub use fields::{DatasetLabels, FieldMetrics, HiddenLabels};
pub use grpc::GrpcStatuses;
pub use histogram::AtomicHistogram;
pub use trace::TraceMetrics;

use crate::decision::jwt::JwtMetrics;
use crate::decision::store::Reload;
use areas::{register_jwt, Connections, Policy, Quota, Traffic};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Request duration buckets: 100 µs to 10 s (`metrics.duration_buckets`
/// replaces them).
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

/// `meshgate_deprecated_requests_total`: who still calls which deprecated
/// version. `consumer` as `metrics.consumer_label` says (the tier, or the
/// service bounded by `max_consumers`); with none, no `consumer` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct DeprecatedLabels {
    pub product: Arc<str>,
    pub version: Arc<str>,
    pub consumer: Option<Arc<str>>,
}

impl EncodeLabelSet for DeprecatedLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("product", &*self.product).encode(encoder.encode_label())?;
        ("version", &*self.version).encode(encoder.encode_label())?;
        if let Some(consumer) = &self.consumer {
            ("consumer", &**consumer).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub product: Arc<str>,
    pub consumer: Arc<str>,
    pub decision: &'static str,
}

/// Which consumer label `meshgate_consumer_requests_total` and
/// `meshgate_deprecated_requests_total` carry. Consumer
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
    /// The bucket bounds of `meshgate_request_duration_seconds` and
    /// `meshgate_upstream_duration_seconds`, in seconds; absent: the
    /// built-in [`DURATION_BUCKETS`].
    pub duration_buckets: Option<Vec<f64>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            consumer_label: ConsumerLabel::None,
            max_consumers: 100,
            duration_buckets: None,
        }
    }
}

/// Most bucket bounds `metrics.duration_buckets` may list: each is one
/// series per product and decision.
pub const MAX_DURATION_BUCKETS: usize = 40;

impl MetricsConfig {
    /// The duration histograms' bucket bounds, in seconds.
    pub fn duration_buckets(&self) -> &[f64] {
        self.duration_buckets
            .as_deref()
            .unwrap_or(&DURATION_BUCKETS)
    }

    /// What is wrong with `duration_buckets`: positive, finite, strictly
    /// increasing, 1 to [`MAX_DURATION_BUCKETS`] of them.
    pub fn check_buckets(&self) -> Result<(), String> {
        let Some(b) = &self.duration_buckets else {
            return Ok(());
        };
        if b.is_empty() || b.len() > MAX_DURATION_BUCKETS {
            return Err(format!(
                "{} bounds; list 1 to {MAX_DURATION_BUCKETS} (+Inf is always added)",
                b.len()
            ));
        }
        for (i, &x) in b.iter().enumerate() {
            if !(x.is_finite() && x > 0.0) {
                return Err(format!(
                    "bound {} ({x}) is not a positive, finite number of seconds",
                    i + 1
                ));
            }
            if i > 0 && x <= b[i - 1] {
                return Err(format!(
                    "bound {} ({x}) is not above the one before it ({}); list the bounds in increasing order, each once",
                    i + 1,
                    b[i - 1]
                ));
            }
            // Observations are compared in whole nanoseconds.
            if !(1e-9..=1e9).contains(&x) {
                return Err(format!(
                    "bound {} ({x}) is outside 1ns to 1e9 seconds",
                    i + 1
                ));
            }
        }
        Ok(())
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
    /// The deprecated version (status `deprecated`, or past its
    /// `endOfSupport`) the policies allowed the request to:
    /// `meshgate_deprecated_requests_total`.
    pub deprecated: Option<&'a Arc<str>>,
    /// The request's own body failed (the client's fault): counted, but
    /// its duration is not the product's and stays out of the histogram
    /// (and so out of the latency SLI).
    pub client_fault: bool,
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
    /// The sequence number of the chain's head (the last line written);
    /// -1 while the trail holds no line. The head's hash is not a label:
    /// a new value per batch would make a new series each time.
    pub chain_seq: Gauge,
}

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `meshgate_request_body_errors_total`: forwarded requests whose own body
/// failed, by product and reason (`malformed`, `client_gone`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BodyErrorLabels {
    pub product: Arc<str>,
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

/// Why a connection is closed at the end of its allowed life: the `reason`
/// of `meshgate_connections_closed_total`, and of
/// `meshgate_connections_cut_total` when its grace ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its client certificate's (or an intermediate's) notAfter passed.
    CertificateExpired,
    /// `timeouts.max_connection_age`.
    MaxAge,
    /// HTTP/2: no request in progress for `timeouts.idle` while its client
    /// kept it busy (pings).
    IdleStreams,
}

impl CloseReason {
    pub const ALL: [CloseReason; 3] = [
        CloseReason::CertificateExpired,
        CloseReason::MaxAge,
        CloseReason::IdleStreams,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            CloseReason::CertificateExpired => "certificate_expired",
            CloseReason::MaxAge => "max_age",
            CloseReason::IdleStreams => "idle_streams",
        }
    }
}

/// Every metric of the sidecar. The areas keep their own structs where
/// nothing outside reads their handles; the handles the transport, the
/// pipeline and the runtime record with directly are fields of their own.
pub struct Metrics {
    registry: Registry,
    traffic: Traffic,
    pub audit: AuditMetrics,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    pub open_connections: Gauge,
    /// Connections cut: HTTP/2 for what their streams did, any when the
    /// grace of a graceful close ran out.
    connections_cut: Family<ReasonLabels, Counter>,
    /// Connections closed gracefully at the end of their allowed life.
    connections_closed: Family<ReasonLabels, Counter>,
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
    /// End-user tokens checked (`ok` or the reason for refusal), issuers' keys.
    jwt: JwtMetrics,
    /// Requests refused with 429, by product and consumer tier.
    pub quota_rejections: Family<QuotaLabels, Counter>,
    /// Requests shed with 503: global, product and consumer in-flight limits.
    load_shed: [Counter; 3],
    /// Quota checks the shared store (Redis) did not answer.
    pub quota_store_errors: Counter,
    /// gRPC calls by product and the gRPC status they ended with.
    grpc: GrpcStatuses,
    /// Spans exported and dropped (`tracing.otlp`).
    pub trace: TraceMetrics,
    /// Response governance: hidden fields, shadow field plans, the hash key.
    pub fields: FieldMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_config(&MetricsConfig::default())
    }

    pub fn with_config(config: &MetricsConfig) -> Metrics {
        let mut registry = Registry::with_prefix("meshgate");
        let traffic = Traffic::register(&mut registry, config);
        let audit = AuditMetrics::register(&mut registry);
        let Connections {
            handshake_failures,
            open_connections,
            connections_cut,
            connections_closed,
            tls_reloads,
            cert_expiry,
        } = Connections::register(&mut registry);
        let policy = Policy::register(&mut registry);
        let jwt = register_jwt(&mut registry);
        let quota = Quota::register(&mut registry);
        let grpc = GrpcStatuses::register(&mut registry);
        let trace = TraceMetrics::register(&mut registry);
        let fields = FieldMetrics::register(&mut registry);
        Metrics {
            registry,
            traffic,
            audit,
            handshake_failures,
            open_connections,
            connections_cut,
            connections_closed,
            tls_reloads,
            cert_expiry,
            decisions: policy.decisions,
            authorization_duration: policy.authorization_duration,
            policy_evaluation_errors: policy.evaluation_errors,
            policy_reloads: policy.reloads,
            policy_last_reload_successful: policy.last_reload_successful,
            policy_info: policy.info,
            shadow_disagreements: policy.shadow_disagreements,
            jwt,
            quota_rejections: quota.rejections,
            load_shed: quota.load_shed,
            quota_store_errors: quota.store_errors,
            grpc,
            trace,
            fields,
        }
    }

    /// Counts a request shed by the in-flight limit of `scope`.
    pub fn load_shed(&self, scope: &str) {
        if let Some(i) = SHED_SCOPES.iter().position(|s| *s == scope) {
            self.load_shed[i].inc();
        }
    }

    /// `meshgate_request_body_lingers_total`, by `result`.
    pub fn lingers(&self) -> &Family<ResultLabels, Counter> {
        &self.traffic.lingers
    }

    /// `meshgate_grpc_requests_total`, by product and gRPC status.
    pub fn grpc_statuses(&self) -> &GrpcStatuses {
        &self.grpc
    }

    pub fn jwt(&self) -> JwtMetrics {
        self.jwt.clone()
    }

    /// Records one answered request.
    pub fn observe_request(&self, r: &Observed<'_>) {
        self.traffic.observe_request(r);
    }

    /// A forwarded request whose body failed on the client's side
    /// (`reason`: `malformed` or `client_gone`); the client's fault,
    /// counted apart from the upstream's failures.
    pub fn request_body_error(&self, product: Option<&Arc<str>>, reason: &'static str) {
        self.traffic.request_body_error(product, reason);
    }

    /// Records the upstream's time to response headers.
    pub fn observe_upstream(&self, product: Option<&Arc<str>>, elapsed: Duration) {
        self.traffic.observe_upstream(product, elapsed);
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

    /// A connection cut: an HTTP/2 one for what its streams did
    /// (`send_timeout`, `premature_resets`, `idle_streams`), any whose
    /// graceful close ([`CloseReason::label`]) outlasted its grace.
    pub fn connection_cut(&self, reason: &'static str) {
        self.connections_cut
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A connection told to close gracefully at the end of its allowed life,
    /// or (HTTP/2) for carrying no request.
    pub fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
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
            deprecated: None,
            client_fault: false,
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

    /// A request whose own body failed (the client's fault) is counted
    /// but makes no duration series; the set's first request that is not
    /// makes it, with that request alone.
    #[test]
    fn a_client_fault_is_counted_without_a_duration() {
        let m = Metrics::new();
        let orders: Arc<str> = Arc::from("sales.orders");
        let a = http::HeaderValue::from_static("spiffe://a");
        let mut faulty = observed(Some(&orders), "allow", 400, Duration::from_secs(1), &a);
        faulty.client_fault = true;
        m.observe_request(&faulty);
        let text = m.encode();
        let counted = r#"meshgate_requests_total{product="sales.orders",action="read",decision="allow",class="4xx"} 1"#;
        assert!(text.contains(counted), "{text}");
        assert!(
            !text.contains("meshgate_request_duration_seconds_count{"),
            "{text}"
        );
        m.observe_request(&observed(
            Some(&orders),
            "allow",
            400,
            Duration::from_micros(50),
            &a,
        ));
        m.observe_request(&faulty);
        let text = m.encode();
        for line in [
            r#"meshgate_requests_total{product="sales.orders",action="read",decision="allow",class="4xx"} 3"#,
            r#"meshgate_request_duration_seconds_count{product="sales.orders",decision="allow"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn consumer_labels_stay_bounded() {
        let m = Metrics::with_config(&MetricsConfig {
            consumer_label: ConsumerLabel::Service,
            max_consumers: 2,
            duration_buckets: None,
        });
        let orders: Arc<str> = Arc::from("sales.orders");
        // Denied callers take no label of their own: `b` and `e` do not keep
        // `c` from one.
        for (service, decision) in [
            ("spiffe://a", "allow"),
            ("spiffe://b", "deny"),
            ("spiffe://e", "deny"),
            ("spiffe://c", "allow"),
            ("spiffe://d", "allow"),
            ("spiffe://a", "deny"),
            ("spiffe://c", "allow"),
        ] {
            let service = http::HeaderValue::from_static(service);
            m.observe_request(&observed(
                Some(&orders),
                decision,
                if decision == "allow" { 200 } else { 403 },
                Duration::ZERO,
                &service,
            ));
        }
        let text = m.encode();
        for line in [
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://a",decision="allow"} 1"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://a",decision="deny"} 1"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://c",decision="allow"} 2"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="other",decision="deny"} 2"#,
            r#"meshgate_consumer_requests_total{product="sales.orders",consumer="other",decision="allow"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn deprecated_requests_name_the_consumer_only_as_consumer_label_says() {
        let orders: Arc<str> = Arc::from("sales.orders");
        let version: Arc<str> = Arc::from("1.2.0");
        let gold: Arc<str> = Arc::from("gold");
        let service = http::HeaderValue::from_static("spiffe://a");
        for (label, line) in [
            (
                ConsumerLabel::None,
                r#"meshgate_deprecated_requests_total{product="sales.orders",version="1.2.0"} 1"#,
            ),
            (
                ConsumerLabel::Service,
                r#"meshgate_deprecated_requests_total{product="sales.orders",version="1.2.0",consumer="spiffe://a"} 1"#,
            ),
            (
                ConsumerLabel::Tier,
                r#"meshgate_deprecated_requests_total{product="sales.orders",version="1.2.0",consumer="gold"} 1"#,
            ),
        ] {
            let m = Metrics::with_config(&MetricsConfig {
                consumer_label: label,
                ..MetricsConfig::default()
            });
            let mut r = observed(Some(&orders), "allow", 200, Duration::ZERO, &service);
            r.tier = Some(&gold);
            r.deprecated = Some(&version);
            m.observe_request(&r);
            // Not deprecated: not counted.
            m.observe_request(&observed(
                Some(&orders),
                "allow",
                200,
                Duration::ZERO,
                &service,
            ));
            let text = m.encode();
            let deprecated: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("meshgate_deprecated_requests_total{"))
                .collect();
            assert_eq!(deprecated, [line], "{label:?}");
        }
    }
}
