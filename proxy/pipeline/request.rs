//! The request path, top to bottom, as typed stages. Each stage takes what
//! the one before it produced and returns the next named type, or the
//! error that answers the request:
//!
//! ```text
//! start the record (ids, trace, span, clock)     Exchange
//! take the audit place                     503
//! check the target, normalise the path     400   -> Checked
//! in-flight place                          503
//! route, once, in one policy snapshot      404/405 -> Routed
//! authenticate the end user                401
//! decide with Cedar                        403   -> Decided
//! a retired version (after the decision)   410
//! admit against quotas                     429/503 -> Cleared
//! forward over the pooled upstream         502/504 (400/499: the client's own body failed)
//! response stage: the route's transform    502    (and quota headers)
//! respond: error -> response (pipeline/error.rs), metrics, audit at the end of the body
//! ```
//!
//! A request under the well-known prefixes (`/.well-known/data-product`,
//! `/.well-known/api-catalog`) takes the same stages with the action
//! `describe` and is answered by the sidecar (`request/describe.rs`).
//! The body of a request answered before forwarding lingers (`linger.rs`).
//!
//! Without a `policy` section (authenticated mode) a checked request goes
//! straight to forwarding. Header hygiene is in `headers.rs`; override and
//! client-address headers, and the method a product's allowed override
//! names, in `overrides.rs`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::body::{Held, PendingEvent, ProxyBody};
use super::error::{ProxyError, CLIENT_CLOSED, CLIENT_CLOSED_REQUEST};
use super::grpc::{self, GrpcCall, GrpcEnd};
use super::headers::{
    strip_hop_by_hop, strip_identity_headers, strip_upstream_claims, X_FORWARDED_CLIENT_CERT,
    X_FORWARDED_FOR, X_FORWARDED_PROTO, X_MESHGATE_PRINCIPAL, X_REQUEST_ID,
};
use super::ids;
use super::linger::{linger, read_first};
use super::overrides::{
    method_value, route_effective, strip_overrides, Effective, MethodOverride, X_REAL_IP,
};
use super::Gate;
use crate::decision::authz::{AuthzOutcome, HttpFacts, Snapshot};
use crate::decision::contract::UserToken;
use crate::decision::jwt::{TokenError, User, Verifier};
use crate::decision::quota::{self, Consumer, Refusal};
use crate::decision::routes::Target;
use crate::model::conformance::Kinds;
use crate::model::connection::ConnInfo;
use crate::model::path::NormalPath;
use crate::model::response::ResponseTransform;
use crate::model::trace::TraceContext;
use crate::observe::audit::{Event, Slot};
use crate::observe::metrics::{Observed, QuotaLabels};
use crate::observe::trace::Draft;
use crate::transport::upstream::{BodyWatch, ClientBodyFault, CountedBody, Wait};

mod describe;
mod response;
mod target;
mod traced;

use response::{ask_for_the_whole_body, response_stage};
use target::check_target;

/// Handles one request end to end and records it: metrics at once, the
/// audit event when the response ends.
///
/// The request's futures are async blocks, not async fns, from here down to
/// the upstream's sending: an async fn's future holds each parameter twice
/// (as passed, and as bound in its body), some 2 KB of a 5.6 KB future that
/// is copied whenever it moves.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn's future holds each parameter twice"
)]
pub fn handle<'a>(
    gate: &'a Gate,
    conn: &'a Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ProxyBody>> + 'a {
    async move {
        let mut ex = Exchange::start(gate, conn, &req);
        // Enabled with `RUST_LOG=meshgate=debug`: every log line of the request
        // then carries these fields.
        let span = tracing::debug_span!(
            "request",
            request_id = ?ex.request_id,
            trace_id = %ex.trace,
            method = %req.method(),
            principal = %conn.identity.principal,
        );
        // The run's future is some 2.7 KB, and each move is a copy: it is not
        // moved into another future first, nor into the span's wrapper when
        // the span is off (as it is unless debug logging is on).
        let result = if span.is_disabled() {
            ex.run(req).await
        } else {
            ex.run(req).instrument(span.clone()).await
        };
        let _in_span = span.enter();
        ex.respond(result)
    }
}

// === stage types ===

/// A request whose target is one plain resource, its path normalised.
/// The stages borrow the request; it moves once, into `forward`.
struct Checked<'r> {
    req: &'r Request<Incoming>,
    path: NormalPath,
}

/// Routed in the snapshot `snapshot` (held from routing to admission).
struct Routed<'r, 's> {
    checked: Checked<'r>,
    snapshot: &'s Snapshot,
    target: &'s Target,
    /// The method routed and decided: the one sent, or the one in the
    /// method-override header its product allows.
    method: Method,
    /// The method-override headers the snapshot's products allow, and the
    /// one the method came from.
    method_override: MethodOverride,
    /// The route's response transform, chosen now, run on the response.
    response: Option<Arc<dyn ResponseTransform>>,
    /// When the route lookup began: `meshgate_authorization_duration_seconds`
    /// counts the lookup and the decision.
    lookup_began: Instant,
    /// How long the lookup took, when an end-user token is verified between
    /// it and the decision (and must not be counted).
    lookup: Option<Duration>,
}

/// Decided and allowed, with the end user it was decided for.
struct Decided<'r, 's> {
    routed: Routed<'r, 's>,
    user: Option<Arc<User>>,
    outcome: Arc<AuthzOutcome>,
}

/// Cleared for forwarding: within quotas, with the upstream timeout of its
/// product. The quota's in-flight places are held until the response body
/// has ended or is dropped.
struct Cleared {
    timeout: Duration,
    method_override: MethodOverride,
    admission: Option<quota::Admitted>,
    response: Option<Arc<dyn ResponseTransform>>,
}

/// What the stages before forwarding came to: cleared for forwarding (with
/// the in-flight place, held until the response body has ended or is
/// dropped), or answered by the sidecar itself (the well-known documents).
enum Clearance {
    Forward(Cleared, OwnedSemaphorePermit),
    Answered(Response<ProxyBody>),
}

// === impl Exchange ===

/// One request from its arrival to its audit event: who asked, its ids and
/// clock, and what the stages learned on the way. If the request's future is
/// dropped before there is a response (the client closed the connection or
/// reset the stream, the idle timeout, shutdown), the event is written
/// anyway: status 499, `complete: false`.
struct Exchange<'a> {
    gate: &'a Gate,
    conn: &'a Arc<ConnInfo>,
    request_id: HeaderValue,
    trace: TraceContext,
    method: Method,
    version: Version,
    received: SystemTime,
    start: Instant,
    /// The audit event's place, taken first.
    slot: Option<Slot>,
    /// A gRPC call (`content-type: application/grpc…`): refused with a
    /// gRPC status, its deadline bounding the upstream's.
    grpc: Option<GrpcCall>,
    /// A sampled request's spans (`request/traced.rs`); `None` when tracing is off.
    span: Option<Box<Draft>>,
    learned: Learned,
    /// Answered (`respond` ran): a drop after it is no cancellation.
    answered: bool,
}

/// What the stages learned, for metrics and the audit event.
#[derive(Default)]
struct Learned {
    /// The normalised path as forwarded, or the path as sent when refused.
    path: String,
    /// The matched route's pattern (`http.route`), kept for a sampled
    /// request only.
    route: Option<String>,
    outcome: Option<Arc<AuthzOutcome>>,
    user: Option<Arc<User>>,
    tier: Option<Arc<str>>,
    /// The deprecated version the policies allowed the request to
    /// (`meshgate_deprecated_requests_total`).
    deprecated: Option<Arc<str>>,
    upstream: Option<Duration>,
    /// Request body bytes forwarded (counted only when audited).
    bytes_in: Option<Arc<AtomicU64>>,
    /// Allowed and on its way to the upstream.
    forwarded: bool,
    /// Whether the forwarded body failed on the client's side.
    body: Option<BodyWatch>,
    /// The contract violations of a response refused before its head.
    violations: Kinds,
}

impl<'a> Exchange<'a> {
    /// Starts the record: request id, trace context, clock.
    fn start(gate: &'a Gate, conn: &'a Arc<ConnInfo>, req: &Request<Incoming>) -> Exchange<'a> {
        let request_id = gate.request_ids.next();
        let mut trace = TraceContext::from_headers(req.headers());
        let span =
            (gate.tracer.as_ref()).and_then(|t| t.sample(&mut trace, req, conn, &request_id));
        Exchange {
            gate,
            conn,
            request_id,
            trace,
            span,
            method: req.method().clone(),
            version: req.version(),
            received: SystemTime::now(),
            start: Instant::now(),
            slot: None,
            grpc: grpc::is_grpc(req.headers()).then(GrpcCall::default),
            learned: Learned::default(),
            answered: false,
        }
    }

    /// The stages, in order. A request answered before forwarding leaves
    /// its body to linger (`linger.rs`): the answer is not delayed, and the
    /// in-flight place and quotas are released with it.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds each parameter twice"
    )]
    fn run(
        &mut self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + use<'_, 'a> {
        async move {
            let (cleared, in_flight) = match self.clear(&req).await {
                Ok(Clearance::Forward(cleared, in_flight)) => (cleared, in_flight),
                Ok(Clearance::Answered(resp)) => return self.early(req, Ok(resp)).await,
                Err(e) => return self.early(req, Err(e)).await,
            };
            // A gRPC call whose answer would be refused whatever it holds
            // (a field plan applies) is refused here, before it runs.
            let refused = self.grpc.as_ref().and(cleared.response.as_ref());
            if let Some(e) = refused.and_then(|t| t.refuses_grpc()) {
                return self.early(req, Err(ProxyError::ResponseRefused(e))).await;
            }
            self.learned.tier = cleared
                .admission
                .as_ref()
                .and_then(|a| a.state.as_ref())
                .map(|s| s.tier.clone());
            self.learned.forwarded = true;
            // The configured timeout bounds a wait without progress; a gRPC
            // client's deadline is a fixed instant (transport/upstream/wait.rs).
            let wait = Wait {
                idle: cleared.timeout,
                deadline: self.grpc.as_ref().and_then(|c| c.deadline(self.start)),
            };
            let whole_body = cleared.response.as_ref().is_some_and(|t| t.rewrites_body());
            let resp = self
                .forward(req, wait, cleared.method_override, whole_body)
                .await?;
            let mut violations = Kinds::NONE;
            let answer = response_stage(
                resp,
                (&self.method, self.version),
                cleared.admission.as_ref(),
                cleared.response,
                cleared.timeout,
                &mut violations,
            )
            .await;
            self.learned.violations = violations;
            // The request is in flight until its response body has ended
            // or is dropped (a client reset, a cut), not only until its head.
            answer.map(|mut resp| {
                resp.body_mut().hold(Held {
                    global: Some(in_flight),
                    quota: cleared.admission.map(|a| a.places).unwrap_or_default(),
                });
                resp
            })
        }
    }

    /// An answer before forwarding: the request's body is left to linger,
    /// except when the node sheds load or cannot audit (no work is added
    /// exactly then; the stream is reset as before). A gRPC call's answer is
    /// an HTTP 200: a body of a declared length within `limits.linger` is
    /// read before it (`linger.rs`, [`read_first`]).
    async fn early(
        &self,
        req: Request<Incoming>,
        answer: Result<Response<ProxyBody>, ProxyError>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if matches!(
            answer,
            Err(ProxyError::Overloaded(_) | ProxyError::AuditUnavailable)
        ) {
            return answer;
        }
        let version = req.version();
        let (config, counter) = (&self.gate.linger, self.gate.metrics.lingers());
        let mut body = req.into_body();
        if self.grpc.is_some() {
            match read_first(config, version, body, counter).await {
                Some(unread) => body = unread,
                None => return answer,
            }
        }
        linger(config, version, body, counter);
        answer
    }

    /// Every stage before forwarding: the request cleared, with its
    /// in-flight place (held until the response body has ended or is
    /// dropped), or the error that answers it.
    async fn clear(&mut self, req: &Request<Incoming>) -> Result<Clearance, ProxyError> {
        if let Err(e) = self.take_audit_place().await {
            self.learned.path = req.uri().path().to_string();
            return Err(e);
        }
        let checked = self.check(req)?;
        if let Some(call) = &mut self.grpc {
            *call = GrpcCall::read(req.headers()).map_err(|_| ProxyError::BadGrpcTimeout)?;
        }
        // Past `limits.max_in_flight` requests in flight, 503 at once (no
        // queue).
        let gate = self.gate;
        let Ok(in_flight) = gate.in_flight.clone().try_acquire_owned() else {
            gate.metrics.load_shed("global");
            return Err(ProxyError::Overloaded("global"));
        };
        let cleared = match &gate.policy {
            None => Cleared {
                timeout: gate.upstream.response_timeout(),
                method_override: MethodOverride::default(),
                admission: None,
                response: None,
            },
            Some(store) => {
                // One snapshot from routing to admission: a reload meanwhile
                // changes nothing for this request.
                let snapshot = store.snapshot();
                if crate::decision::describe::is_well_known(&self.learned.path) {
                    return self
                        .describe(&snapshot, checked)
                        .await
                        .map(Clearance::Answered);
                }
                let routed = self.route(&snapshot, checked)?;
                let user = self.authenticate(&routed).await?;
                let decided = self.decide(routed, user)?;
                self.admit(decided).await?
            }
        };
        Ok(Clearance::Forward(cleared, in_flight))
    }

    async fn take_audit_place(&mut self) -> Result<(), ProxyError> {
        // Nothing is decided or forwarded that the audit trail cannot
        // record (when_full: block).
        if let Some(audit) = &self.gate.audit {
            let slot = audit
                .slot()
                .await
                .map_err(|_| ProxyError::AuditUnavailable)?;
            if slot.is_some() {
                self.learned.bytes_in = Some(Arc::default());
            }
            self.slot = slot;
        }
        Ok(())
    }

    /// 400 for a target that is not one plain resource or a path that does
    /// not normalise unambiguously.
    fn check<'r>(&mut self, req: &'r Request<Incoming>) -> Result<Checked<'r>, ProxyError> {
        let checked = check_target(req)
            .and_then(|()| crate::model::path::normalize(req.uri().path()).map_err(Into::into));
        match checked {
            Ok(path) => {
                self.learned.path = path.encoded();
                Ok(Checked { req, path })
            }
            Err(e) => {
                self.learned.path = req.uri().path().to_string();
                Err(e)
            }
        }
    }

    /// 404 or 405 for a request no route of the snapshot names.
    fn route<'r, 's>(
        &mut self,
        snapshot: &'s Snapshot,
        checked: Checked<'r>,
    ) -> Result<Routed<'r, 's>, ProxyError> {
        let lookup_began = Instant::now();
        let Effective {
            target,
            method,
            header,
        } = route_effective(
            snapshot,
            checked.req.method(),
            checked.req.headers(),
            hyper::body::Body::is_end_stream(checked.req.body()),
            &checked.path,
        )?;
        // The audit event and the response stage see the method decided.
        self.method = method.clone();
        let target = target?;
        if self.span.is_some() {
            self.learned.route = Some(target.pattern.clone());
        }
        let method_override = MethodOverride {
            // Rarely any: collecting none allocates nothing.
            allowed: snapshot
                .products()
                .filter_map(|p| p.method_override.clone())
                .collect(),
            decided: header.map(|h| (h, method.clone())),
        };
        let lookup = (target.user_token != UserToken::None).then(|| lookup_began.elapsed());
        Ok(Routed {
            checked,
            snapshot,
            target,
            method,
            method_override,
            response: snapshot.response_transform(target).cloned(),
            lookup_began,
            lookup,
        })
    }

    /// The verified end user of a request whose route takes a token. A
    /// token that is sent is verified even where it is optional: a bad one
    /// is refused (401), never ignored. Only `Authorization` is read.
    async fn authenticate(&self, routed: &Routed<'_, '_>) -> Result<Option<Arc<User>>, ProxyError> {
        self.user_for(routed.target.user_token, routed.checked.req.headers())
            .await
    }

    /// The verified end user for a token requirement `mode`.
    async fn user_for(
        &self,
        mode: UserToken,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<User>>, ProxyError> {
        if mode == UserToken::None {
            return Ok(None);
        }
        let users = &self.gate.users;
        let refuse = |e: TokenError| {
            if let Some(v) = users {
                v.count(&Err(e.clone()));
            }
            ProxyError::Unauthorized(e)
        };
        let token = match Verifier::bearer(headers) {
            Ok(Some(t)) => t,
            Ok(None) if mode == UserToken::Optional => return Ok(None),
            Ok(None) => return Err(refuse(TokenError::Missing)),
            Err(e) => return Err(refuse(e)),
        };
        let Some(verifier) = users else {
            return Err(refuse(TokenError::NoKeys));
        };
        verifier
            .verify(token)
            .await
            .map(Some)
            .map_err(ProxyError::Unauthorized)
    }

    /// Cedar's decision (403 when it denies), timed and counted; a shadow
    /// set that disagrees is logged.
    fn decide<'r, 's>(
        &mut self,
        routed: Routed<'r, 's>,
        user: Option<Arc<User>>,
    ) -> Result<Decided<'r, 's>, ProxyError> {
        let gate = self.gate;
        let conn = self.conn;
        let req = &routed.checked.req;
        // Without a token check in between, the decision's time runs on
        // from the lookup's start: one clock read fewer per request.
        let t0 = match routed.lookup {
            None => routed.lookup_began,
            Some(_) => Instant::now(),
        };
        let now = SystemTime::now();
        let outcome = routed.snapshot.decide_routed(
            &conn.identity.principal,
            routed.target,
            &HttpFacts {
                method: &routed.method,
                path: &routed.checked.path,
                headers: req.headers(),
                source_ip: conn.peer.ip(),
                tls_version: conn.tls_version,
                time: now,
                user: user.as_deref(),
            },
        )?;
        let m = &gate.metrics;
        m.authorization_duration
            .observe(routed.lookup.unwrap_or_default() + t0.elapsed());
        self.count_decision(&outcome);
        let outcome = Arc::new(outcome);
        self.learned.user = user.clone();
        self.learned.outcome = Some(outcome.clone());
        if !outcome.decision.allowed {
            return Err(ProxyError::Forbidden);
        }
        // Only a caller that may use the product learns that this version
        // is gone, and where to go instead.
        if let Some((version, l)) = routed.snapshot.lifecycle(routed.target) {
            if l.is_retired(now) {
                return Err(ProxyError::Gone(l.successor.clone()));
            }
            if l.is_deprecated(now) {
                // Counted with the answer, when the consumer's tier is known.
                self.learned.deprecated = Some(version.clone());
            }
        }
        Ok(Decided {
            routed,
            user,
            outcome,
        })
    }

    /// Counts a decision (and its evaluation errors); a shadow set that
    /// disagrees is counted and logged.
    fn count_decision(&self, outcome: &AuthzOutcome) {
        let m = &self.gate.metrics;
        let conn = self.conn;
        let decision = &outcome.decision;
        m.decision(decision.allowed);
        if !decision.errors.is_empty() {
            m.policy_evaluation_errors
                .inc_by(decision.errors.len() as u64);
        }
        if let Some(s) = &outcome.shadow {
            if s.allowed != decision.allowed {
                m.shadow_disagreements.inc();
                tracing::info!(
                    principal = %conn.identity.principal,
                    resource = %outcome.resource,
                    action = outcome.action.as_str(),
                    enforced = if decision.allowed { "allow" } else { "deny" },
                    enforced_policies = ?decision.policies,
                    shadow = if s.allowed { "allow" } else { "deny" },
                    shadow_policies = ?s.policies,
                    "shadow policy set disagrees"
                );
            }
        }
        if let Some(plan) = &outcome.fields {
            let principal = &conn.identity.principal;
            crate::pipeline::mask::shadow_plan(&m.fields, principal, &outcome.product, plan);
        }
    }

    /// Admits the request under the product's and consumer's limits: 503
    /// past an in-flight limit, 429 when the consumer's quota is used up.
    async fn admit(&self, decided: Decided<'_, '_>) -> Result<Cleared, ProxyError> {
        let Decided {
            routed,
            user,
            outcome,
        } = decided;
        // A field plan that changes the response masks it, after the
        // route's own transform.
        let plan = outcome.fields.as_deref();
        let conformance = plan.and_then(|plan| {
            let settings = routed.snapshot.conformance(routed.target);
            crate::pipeline::mask::conform::sample(
                settings.over(self.gate.conformance),
                &outcome.product,
                plan,
                &self.gate.metrics.fields,
            )
        });
        let masking = crate::pipeline::mask::Masking {
            plan,
            product: &outcome.product,
            key: self.gate.mask_key.as_ref(),
            metrics: &self.gate.metrics.fields,
            conformance,
        };
        let response = crate::pipeline::mask::FieldMasking::for_plan(masking, routed.response);
        let method_override = routed.method_override;
        let timeout = product_timeout(self.gate, &outcome)
            .unwrap_or_else(|| self.gate.upstream.response_timeout());
        let Some(quotas) = &self.gate.quotas else {
            return Ok(Cleared {
                timeout,
                method_override,
                admission: None,
                response,
            });
        };
        let identity = &self.conn.identity;
        // The header form is made from a `str`, so this never replaces a byte.
        let service = String::from_utf8_lossy(identity.principal_header.as_bytes());
        let service_groups = if quotas.uses_groups() {
            routed.snapshot.service_groups(&identity.principal)
        } else {
            Vec::new()
        };
        let who = Consumer {
            service: &service,
            user: user.as_deref(),
            service_groups: &service_groups,
        };
        match quotas
            .admit(&outcome.product, outcome.throughput, &who)
            .await
        {
            Ok(admitted) => Ok(Cleared {
                timeout,
                method_override,
                admission: Some(admitted),
                response,
            }),
            Err(Refusal::Unavailable) => Err(ProxyError::QuotaUnavailable),
            Err(Refusal::Overloaded(what)) => {
                self.gate.metrics.load_shed(what);
                Err(ProxyError::Overloaded(what))
            }
            Err(Refusal::OverQuota(state, retry_after)) => {
                self.gate
                    .metrics
                    .quota_rejections
                    .get_or_create(&QuotaLabels {
                        product: outcome.product.to_string(),
                        tier: state.tier.to_string(),
                    })
                    .inc();
                Err(ProxyError::TooManyRequests(state, retry_after))
            }
        }
    }

    /// Sends the request upstream with the verified identity headers set
    /// (every client copy removed first), and takes the response headers.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds each parameter twice"
    )]
    fn forward(
        &mut self,
        req: Request<Incoming>,
        wait: Wait,
        method_override: MethodOverride,
        whole_body: bool,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + use<'_, 'a> {
        async move {
            let conn = self.conn;
            let (mut parts, body) = req.into_parts();
            // A body the client owes whole before the answer: HTTP/1.x, or a
            // declared length; never a gRPC call's stream.
            let bounded = self.grpc.is_none()
                && (parts.version < Version::HTTP_2
                    || parts.headers.contains_key(http::header::CONTENT_LENGTH));
            let body = CountedBody::new(body, self.learned.bytes_in.clone(), bounded);
            self.learned.body = Some(body.watch());
            // The path the upstream receives is the one that was authorised
            // (normalised and encoded once, in `check`).
            let path = &self.learned.path;
            let mut target = String::with_capacity(path.len() + 64);
            target.push_str(path);
            if let Some(q) = parts.uri.query() {
                target.push('?');
                target.push_str(q);
            }
            let path_and_query = PathAndQuery::from_maybe_shared(target)
                .map_err(|_| ProxyError::BadRequest("request target"))?;
            // Absolute-form (HTTP/1.1) and :authority (HTTP/2) name the host; Host follows it.
            let original_host = match parts.uri.authority() {
                Some(a) => HeaderValue::from_str(a.as_str()).ok(),
                None => parts.headers.get(header::HOST).cloned(),
            };
            let headers = &mut parts.headers;
            strip_hop_by_hop(headers);
            strip_identity_headers(headers);
            strip_overrides(headers, &self.gate.strip_extra);
            if whole_body {
                ask_for_the_whole_body(headers);
            }
            // Room for the headers set below and the trace's, in one allocation.
            headers.reserve(10);
            if !method_override.allowed.is_empty() {
                // The products' own headers, even when not in the lists.
                strip_overrides(headers, &method_override.allowed);
            }
            if let Some((name, method)) = method_override.decided {
                headers.insert(name, method_value(&method));
            }
            headers.insert(X_FORWARDED_CLIENT_CERT, conn.identity.xfcc.clone());
            headers.insert(X_MESHGATE_PRINCIPAL, conn.identity.principal_header.clone());
            headers.insert(X_REQUEST_ID, ids::unindexed(&self.request_id));
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
            headers.insert(X_REAL_IP, conn.peer_ip.clone());
            headers.insert(header::FORWARDED, conn.forwarded.clone());
            self.trace.apply(headers);
            if let Some(call) = &self.grpc {
                call.forward(headers, self.start.elapsed());
            }
            let upstream = &self.gate.upstream;
            let req = upstream.prepare(parts, body, path_and_query, original_host)?;
            let t0 = Instant::now();
            self.span_upstream(None);
            let sent = upstream.send(req, wait).await;
            self.span_upstream(Some(sent.as_ref().ok().map(|(r, _)| r.status())));
            let took = t0.elapsed();
            self.learned.upstream = Some(took);
            let product = self.learned.outcome.as_ref().map(|o| &o.product);
            self.gate.metrics.observe_upstream(product, took);
            let (resp, lease) = sent?;
            let (mut parts, body) = resp.into_parts();
            // (Drops a Content-Length beside Transfer-Encoding too.)
            strip_hop_by_hop(&mut parts.headers);
            strip_upstream_claims(&mut parts.headers, self.learned.outcome.is_some());
            parts
                .headers
                .insert(X_REQUEST_ID, ids::unindexed(&self.request_id));
            Ok(Response::from_parts(
                parts,
                ProxyBody::upstream(body, lease),
            ))
        }
    }

    /// The one place a result becomes the response: an error's response
    /// (pipeline/error.rs), the request's metrics, and its audit event,
    /// written when the response body ends.
    fn respond(&mut self, result: Result<Response<ProxyBody>, ProxyError>) -> Response<ProxyBody> {
        // Answered: a body fault is counted here, not when dropped.
        self.learned.body = None;
        self.answered = true;
        let client_fault = matches!(result, Err(ProxyError::ClientBody(_)));
        let reason = result.as_ref().err().and_then(ProxyError::reason);
        // A refused gRPC call is a 200 on the wire; it is counted and
        // audited with the HTTP status it has for HTTP clients, beside its
        // gRPC status.
        let (mut resp, decision, error, status, refused) = match result {
            Ok(resp) => {
                let status = resp.status();
                (resp, "allow", None, status, None)
            }
            Err(e) => {
                log_refusal(&e, &self.request_id, &self.trace, self.conn);
                if let ProxyError::TooManyRequests(state, _) = &e {
                    self.learned.tier = Some(state.tier.clone());
                }
                if let ProxyError::ClientBody(fault) = &e {
                    let product = self.learned.outcome.as_ref().map(|o| &o.product);
                    self.gate
                        .metrics
                        .request_body_error(product, body_error_reason(*fault));
                }
                let grpc = self.grpc.is_some();
                (
                    e.to_response(&self.request_id, grpc),
                    e.decision(),
                    Some(e.code()),
                    e.status(),
                    grpc.then(|| e.grpc_code()),
                )
            }
        };
        let grpc_status = self.grpc_status(&mut resp, refused);
        self.span_answered(&mut resp, decision, error, grpc_status);
        let outcome = self.learned.outcome.as_ref();
        self.gate.metrics.observe_request(&Observed {
            product: outcome.map(|o| &o.product),
            action: outcome.map_or("", |o| o.action.as_str()),
            decision,
            status,
            elapsed: self.start.elapsed(),
            tier: self.learned.tier.as_ref(),
            service: &self.conn.identity.principal_header,
            deprecated: self.learned.deprecated.as_ref(),
            client_fault,
        });
        if let Some(slot) = self.slot.take() {
            let bytes_in = self.learned.bytes_in.take();
            let mut event = self.event(decision, error, status.as_u16());
            event.reason = reason;
            event.grpc_status = grpc_status;
            resp.body_mut().audit(Box::new(PendingEvent {
                slot,
                event,
                start: self.start,
                bytes_in,
            }));
        }
        resp
    }

    /// A gRPC call's status, counted: meshgate's own (`refused`), or one
    /// in the upstream's headers (a trailers-only response); otherwise the
    /// body reads it from the trailers when they pass.
    fn grpc_status(
        &self,
        resp: &mut Response<ProxyBody>,
        refused: Option<grpc::Code>,
    ) -> Option<u8> {
        self.grpc.as_ref()?;
        let product = self.learned.outcome.as_ref().map(|o| o.product.clone());
        let statuses = self.gate.metrics.grpc_statuses();
        match refused.or_else(|| grpc::status_in(resp.headers())) {
            Some(code) => {
                statuses.count(product.as_ref(), code.name());
                Some(code.number())
            }
            None => {
                resp.body_mut().grpc(GrpcEnd {
                    statuses: statuses.clone(),
                    product,
                });
                None
            }
        }
    }

    fn event(&mut self, decision: &'static str, error: Option<&'static str>, status: u16) -> Event {
        let learned = std::mem::take(&mut self.learned);
        let policy_version = match (&learned.outcome, &self.gate.policy) {
            (None, Some(store)) => Some(store.current().version.clone()),
            _ => None,
        };
        Event {
            time: self.received,
            request_id: self.request_id.clone(),
            trace_id: self.trace.trace_id,
            conn: self.conn.clone(),
            user: learned.user,
            tier: learned.tier,
            outcome: learned.outcome,
            policy_version,
            method: self.method.clone(),
            path: learned.path,
            decision,
            error,
            status,
            grpc_status: None,
            upstream: learned.upstream,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            complete: false,
            reason: None,
            violations: learned.violations,
        }
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let decision = self.cancelled_decision();
        self.span_cancelled(decision);
        self.count_cancelled(decision);
        let Some(slot) = self.slot.take() else {
            return;
        };
        let bytes_in = self.learned.bytes_in.take();
        let mut event = self.event(decision, Some(CLIENT_CLOSED_REQUEST), CLIENT_CLOSED);
        event.duration = self.start.elapsed();
        event.bytes_in = bytes_in.map_or(0, |n| n.load(Ordering::Relaxed));
        slot.send(event);
    }
}

impl Exchange<'_> {
    /// A request dropped before it was answered (its client went away):
    /// counted as the 499 it is audited as, under the same decision. A
    /// forwarded one whose body failed or was left unfinished (an HTTP/2
    /// stream reset mid-body, a connection closed or broken mid-body) is
    /// also a body error of the client's, kept out of the duration
    /// histogram as when such a failure is answered.
    fn count_cancelled(&mut self, decision: &'static str) {
        let fault = self
            .learned
            .body
            .take()
            .as_ref()
            .and_then(BodyWatch::fault_when_dropped);
        let outcome = self.learned.outcome.as_ref();
        let metrics = &self.gate.metrics;
        if let Some(fault) = fault {
            metrics.request_body_error(outcome.map(|o| &o.product), body_error_reason(fault));
        }
        metrics.observe_request(&Observed {
            product: outcome.map(|o| &o.product),
            action: outcome.map_or("", |o| o.action.as_str()),
            decision,
            status: ProxyError::ClientBody(ClientBodyFault::Gone).status(),
            elapsed: self.start.elapsed(),
            tier: self.learned.tier.as_ref(),
            service: &self.conn.identity.principal_header,
            deprecated: self.learned.deprecated.as_ref(),
            client_fault: fault.is_some(),
        });
    }
}

/// The `reason` label of `meshgate_request_body_errors_total`.
fn body_error_reason(fault: ClientBodyFault) -> &'static str {
    match fault {
        ClientBodyFault::Malformed => "malformed",
        ClientBodyFault::Gone => "client_gone",
        ClientBodyFault::Stalled => "stalled",
    }
}

/// The upstream response timeout of a product whose contract promises a
/// latency: `timeouts.latency_factor` times it, at most `upstream_response`.
fn product_timeout(gate: &Gate, outcome: &AuthzOutcome) -> Option<Duration> {
    let factor = gate.latency_factor;
    let latency = outcome.latency?;
    if factor <= 0.0 {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(latency.as_secs_f64() * factor).ok()?;
    Some(timeout.min(gate.upstream.response_timeout()))
}

fn log_refusal(e: &ProxyError, request_id: &HeaderValue, trace: &TraceContext, conn: &ConnInfo) {
    let trace_id = trace;
    match e {
        // Refusals clients cause are counted in metrics and audited; a flood
        // of them must not flood the logs (nor of a product's error pages
        // withheld, counted in their own metric).
        ProxyError::Forbidden
        | ProxyError::Concealed
        | ProxyError::Gone(_)
        | ProxyError::NoRoute
        | ProxyError::MethodNotAllowed
        | ProxyError::BadPath(_)
        | ProxyError::Unauthorized(_)
        | ProxyError::TooManyRequests(..)
        | ProxyError::Overloaded(_)
        | ProxyError::QuotaUnavailable
        | ProxyError::Withheld(_) => {
            tracing::debug!(request_id = ?request_id, %trace_id, principal = %conn.identity.principal, error = %e, "request refused")
        }
        _ => {
            tracing::warn!(request_id = ?request_id, %trace_id, principal = %conn.identity.principal, error = %e, "request failed")
        }
    }
}
