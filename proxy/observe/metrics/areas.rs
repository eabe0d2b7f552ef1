//! The metrics of each area, one struct each, registered by one function
//! each. [`super::Metrics::with_config`] registers the areas in the order
//! the exposition lists them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::decision::jwt::{IssuerLabels, IssuerResultLabels, JwtMetrics, TokenResultLabels};

use super::*;

pub(super) type HistogramFamily<L> = Family<L, AtomicHistogram, Buckets>;

/// Makes each series of a duration family with the configured buckets
/// (`metrics.duration_buckets`).
#[derive(Clone)]
pub(super) struct Buckets(Arc<[f64]>);

impl MetricConstructor<AtomicHistogram> for Buckets {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(&self.0)
    }
}

/// The status classes of `meshgate_requests_total`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests answered: counts, durations and, when configured, consumers.
pub(super) struct Traffic {
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) request_duration: HistogramFamily<DurationLabels>,
    pub(super) upstream_duration: HistogramFamily<ProductLabels>,
    pub(super) consumer_requests: Option<Family<ConsumerLabels, Counter>>,
    pub(super) deprecated_requests: Family<DeprecatedLabels, Counter>,
    /// Bodies of refused HTTP/2 requests read and discarded (`limits.linger`).
    pub(super) lingers: Family<ResultLabels, Counter>,
    /// Forwarded requests whose own body failed (the client's fault).
    pub(super) body_errors: Family<BodyErrorLabels, Counter>,
    pub(super) consumer_label: ConsumerLabel,
    pub(super) max_consumers: usize,
    /// Services given their own consumer series (label `service`).
    pub(super) consumers_seen: std::sync::RwLock<std::collections::HashSet<Arc<str>>>,
    pub(super) no_product: Arc<str>,
    pub(super) other_consumer: Arc<str>,
    /// The request and upstream-duration series by label set.
    pub(super) handles: super::handles::Handles,
}

impl Traffic {
    pub(super) fn register(registry: &mut Registry, config: &MetricsConfig) -> Traffic {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by data product, action, decision and HTTP status class",
            requests.clone(),
        );
        let buckets = Buckets(Arc::from(config.duration_buckets()));
        let request_duration: HistogramFamily<DurationLabels> =
            Family::new_with_constructor(buckets.clone());
        registry.register_with_unit(
            "request_duration",
            "Time from request received to response headers sent, by data product and decision",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration: HistogramFamily<ProductLabels> =
            Family::new_with_constructor(buckets);
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
        let deprecated_requests = Family::<DeprecatedLabels, Counter>::default();
        registry.register(
            "deprecated_requests",
            "Requests allowed to a deprecated product version, by product, version and, with metrics.consumer_label, consumer (the quota tier, or the calling service and past metrics.max_consumers `other`)",
            deprecated_requests.clone(),
        );
        let lingers = Family::<ResultLabels, Counter>::default();
        registry.register(
            "request_body_lingers",
            "Bodies of HTTP/2 requests answered before forwarding, read and discarded (limits.linger), by how that ended: complete (the stream ended without a reset), bytes and time (past the bound, reset), error",
            lingers.clone(),
        );
        let body_errors = Family::<BodyErrorLabels, Counter>::default();
        registry.register(
            "request_body_errors",
            "Allowed requests whose own body failed while forwarded, by data product and reason: malformed (answered 400 bad_request_body) or client_gone (499); the client's fault, never counted as an upstream failure",
            body_errors.clone(),
        );
        Traffic {
            requests,
            body_errors,
            request_duration,
            upstream_duration,
            consumer_requests,
            deprecated_requests,
            lingers,
            consumer_label: config.consumer_label,
            max_consumers: config.max_consumers,
            consumers_seen: Default::default(),
            no_product: Arc::from(""),
            other_consumer: Arc::from("other"),
            handles: Default::default(),
        }
    }
}

impl Traffic {
    /// Records one answered request.
    pub(super) fn observe_request(&self, r: &Observed<'_>) {
        let class = CLASSES[(r.status.as_u16() / 100).clamp(1, 5) as usize - 1];
        let product = r.product.unwrap_or(&self.no_product);
        let requests = || {
            let labels = RequestLabels {
                product: product.clone(),
                action: r.action,
                decision: r.decision,
                class,
            };
            self.requests.get_or_create(&labels).clone()
        };
        let duration = || {
            let labels = DurationLabels {
                product: product.clone(),
                decision: r.decision,
            };
            self.request_duration.get_or_create(&labels).clone()
        };
        self.handles
            .request(product, [r.action, r.decision, class], requests, |s| {
                s.requests.inc();
                if !r.client_fault {
                    s.duration.get_or_init(duration).observe(r.elapsed);
                }
            });
        // Only an allowed request gives its service a label of its own: denied
        // callers (a scanner with many identities) would otherwise take every
        // slot and hide the real consumers of an old version behind `other`.
        let allowed = r.decision == "allow";
        if let (Some(product), Some(version)) = (r.product, r.deprecated) {
            self.deprecated_request(product, version, r.tier, r.service, allowed);
        }
        if let Some(family) = &self.consumer_requests {
            let Some(consumer) = self.consumer(r.tier, r.service, allowed) else {
                return;
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

    fn deprecated_request(
        &self,
        product: &Arc<str>,
        version: &Arc<str>,
        tier: Option<&Arc<str>>,
        service: &http::HeaderValue,
        allowed: bool,
    ) {
        self.deprecated_requests
            .get_or_create(&DeprecatedLabels {
                product: product.clone(),
                version: version.clone(),
                consumer: self.consumer(tier, service, allowed),
            })
            .inc();
    }

    /// The `consumer` label `metrics.consumer_label` asks for: the quota
    /// tier (empty without one), or the service while fewer than
    /// `max_consumers` have one (`take`: this request may give it one);
    /// `None` when off.
    fn consumer(
        &self,
        tier: Option<&Arc<str>>,
        service: &http::HeaderValue,
        take: bool,
    ) -> Option<Arc<str>> {
        match self.consumer_label {
            ConsumerLabel::None => None,
            ConsumerLabel::Tier => Some(tier.cloned().unwrap_or_else(|| self.no_product.clone())),
            ConsumerLabel::Service => {
                Some(self.bounded_consumer(service.to_str().unwrap_or(""), take))
            }
        }
    }

    /// The service's own label while fewer than `max_consumers` have one;
    /// one not seen before gets a label only when `take`.
    fn bounded_consumer(&self, service: &str, take: bool) -> Arc<str> {
        if let Ok(seen) = self.consumers_seen.read() {
            if let Some(s) = seen.get(service) {
                return s.clone();
            }
            if !take || seen.len() >= self.max_consumers {
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
    pub(super) fn request_body_error(&self, product: Option<&Arc<str>>, reason: &'static str) {
        self.body_errors
            .get_or_create(&BodyErrorLabels {
                product: product.unwrap_or(&self.no_product).clone(),
                reason,
            })
            .inc();
    }

    pub(super) fn observe_upstream(&self, product: Option<&Arc<str>>, elapsed: Duration) {
        let product = product.unwrap_or(&self.no_product);
        let make = || {
            let labels = ProductLabels {
                product: product.clone(),
            };
            self.upstream_duration.get_or_create(&labels).clone()
        };
        self.handles.upstream(product, make, |h| h.observe(elapsed));
    }
}

impl AuditMetrics {
    pub(super) fn register(registry: &mut Registry) -> AuditMetrics {
        let audit = AuditMetrics {
            events: Counter::default(),
            dropped: Counter::default(),
            backpressure_waits: Counter::default(),
            backpressure_seconds: Counter::<f64, AtomicU64>::default(),
            backpressure_waiting: Gauge::default(),
            write_errors: Counter::default(),
            chain_seq: Gauge::default(),
        };
        audit.chain_seq.set(-1);
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
        registry.register(
            "audit_chain_seq",
            "Sequence number of the audit chain's head (the last line written; -1: none yet), \
             to compare with `meshgate audit verify --expect`",
            audit.chain_seq.clone(),
        );
        audit
    }
}

/// The data listener's connections and certificates.
pub(super) struct Connections {
    pub(super) handshake_failures: Family<ReasonLabels, Counter>,
    pub(super) open_connections: Gauge,
    pub(super) connections_cut: Family<ReasonLabels, Counter>,
    pub(super) connections_closed: Family<ReasonLabels, Counter>,
    pub(super) tls_reloads: Family<ResultLabels, Counter>,
    pub(super) cert_expiry: Family<CertLabels, Gauge>,
}

impl Connections {
    pub(super) fn register(registry: &mut Registry) -> Connections {
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
        let connections_cut = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_cut",
            "Client connections meshgate cut: HTTP/2 for what their streams did, \
             and any whose requests outlasted the grace of a graceful close, by reason",
            connections_cut.clone(),
        );
        for reason in CUT_REASONS {
            let _ = connections_cut.get_or_create(&ReasonLabels { reason });
        }
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Client connections meshgate began to close gracefully at the end of their \
             allowed life or (HTTP/2) for carrying no request, by reason",
            connections_closed.clone(),
        );
        for reason in CloseReason::ALL.map(CloseReason::label) {
            let _ = connections_closed.get_or_create(&ReasonLabels { reason });
        }
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
        Connections {
            handshake_failures,
            open_connections,
            connections_cut,
            connections_closed,
            tls_reloads,
            cert_expiry,
        }
    }
}

/// Why a connection is cut: what its HTTP/2 streams did, or a graceful
/// close ([`CloseReason`]) whose grace ran out.
const CUT_REASONS: [&str; 5] = [
    "send_timeout",
    "premature_resets",
    CloseReason::IdleStreams.label(),
    CloseReason::CertificateExpired.label(),
    CloseReason::MaxAge.label(),
];

/// Authorization decisions and the policy snapshot they are made with.
pub(super) struct Policy {
    /// allow, deny
    pub(super) decisions: [Counter; 2],
    pub(super) authorization_duration: AtomicHistogram,
    pub(super) evaluation_errors: Counter,
    pub(super) reloads: Family<ResultLabels, Counter>,
    pub(super) last_reload_successful: Gauge,
    pub(super) info: Family<VersionLabels, Gauge>,
    pub(super) shadow_disagreements: Counter,
}

impl Policy {
    pub(super) fn register(registry: &mut Registry) -> Policy {
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
        let evaluation_errors = Counter::default();
        registry.register(
            "policy_evaluation_errors",
            "Policy evaluation errors (an erroring policy does not apply)",
            evaluation_errors.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy snapshot reloads, by result",
            reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        let last_reload_successful = Gauge::default();
        // Nothing has failed yet (and without a policy nothing can).
        last_reload_successful.set(1);
        registry.register(
            "policy_last_reload_successful",
            "1 if the last policy load or reload succeeded, 0 while the sidecar enforces an older snapshot because it failed",
            last_reload_successful.clone(),
        );
        let info = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "policy_info",
            "The live policy snapshot: 1 for its version (sha256 of every input)",
            info.clone(),
        );
        let shadow_disagreements = Counter::default();
        registry.register(
            "shadow_disagreements",
            "Requests on which the shadow policy set decided otherwise than the enforced one",
            shadow_disagreements.clone(),
        );
        Policy {
            decisions,
            authorization_duration,
            evaluation_errors,
            reloads,
            last_reload_successful,
            info,
            shadow_disagreements,
        }
    }
}

/// End-user tokens and their issuers' keys.
pub(super) fn register_jwt(registry: &mut Registry) -> JwtMetrics {
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
    JwtMetrics {
        user_tokens,
        jwks_refreshes,
        jwks_keys,
    }
}

/// Quotas and in-flight limits.
pub(super) struct Quota {
    pub(super) rejections: Family<QuotaLabels, Counter>,
    pub(super) load_shed: [Counter; 3],
    pub(super) store_errors: Counter,
}

impl Quota {
    pub(super) fn register(registry: &mut Registry) -> Quota {
        let rejections = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "quota_rejections",
            "Requests refused with 429 because the consumer's quota was used up, by product and tier",
            rejections.clone(),
        );
        let shed = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "load_shed",
            "Requests refused with 503 at once because an in-flight limit was reached, by scope (global, product, consumer)",
            shed.clone(),
        );
        let load_shed = SHED_SCOPES.map(|scope| shed.get_or_create(&ScopeLabels { scope }).clone());
        let store_errors = Counter::default();
        registry.register(
            "quota_store_errors",
            "Quota checks the shared store (Redis) did not answer; the failure mode applied",
            store_errors.clone(),
        );
        Quota {
            rejections,
            load_shed,
            store_errors,
        }
    }
}
