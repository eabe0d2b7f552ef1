//! Forwarding to the data product's own server on loopback.
//!
//! Header hygiene happens here: hop-by-hop headers and every client-supplied
//! copy of the identity headers are removed before the verified ones are set.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::audit::{CountedBody, Event, PendingEvent, Slot};
use crate::authz::{AuthzOutcome, HttpFacts};
use crate::config::{Config, UpstreamProtocol};
use crate::contract::UserToken;
use crate::error::{ProxyBody, ProxyError};
use crate::identity::PeerIdentity;
use crate::jwt::{TokenError, User, Verifier};
use crate::metrics::{Observed, QuotaLabels};
use crate::path::NormalPath;
use crate::policy::PolicyStore;
use crate::pool::{Pool, SendError};
use crate::quota::{Admitted, Consumer, Refusal};
use crate::server::Sidecar;
use crate::trace::TraceContext;
use tracing::Instrument;

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_MESHGATE_PRINCIPAL: HeaderName = HeaderName::from_static("x-meshgate-principal");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What is known about a client connection; it travels with every request on it
/// (as a request extension) so later layers need not recompute it.
#[derive(Debug)]
pub struct ConnInfo {
    pub identity: PeerIdentity,
    pub peer: SocketAddr,
    pub peer_ip: HeaderValue,
    pub tls_version: &'static str,
}

/// The pooled connections to the one upstream.
pub struct Upstream {
    transport: Transport,
    authority: Authority,
    /// `Host` for a request that named none (HTTP/1.0 without `Host`).
    host_header: Option<HeaderValue>,
    protocol: UpstreamProtocol,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &Config) -> Upstream {
        let authority = &config.upstream.authority;
        let transport = match config.upstream_protocol {
            UpstreamProtocol::Http1 => Transport::Http1(Pool::new(
                authority.host(),
                authority.port_u16().unwrap_or(80),
                config.timeouts.upstream_connect,
            )),
            UpstreamProtocol::H2c => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(config.timeouts.upstream_connect));
                let mut builder = Client::builder(TokioExecutor::new());
                builder
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .http2_only(true);
                Transport::H2c(Box::new(builder.build(connector)))
            }
        };
        Upstream {
            transport,
            authority: config.upstream.authority.clone(),
            host_header: HeaderValue::from_str(config.upstream.authority.as_str()).ok(),
            protocol: config.upstream_protocol,
            response_timeout: config.timeouts.upstream_response,
        }
    }
}

enum Transport {
    /// HTTP/1.1: one request at a time per connection, our own pool.
    Http1(Pool),
    /// HTTP/2 without TLS: hyper-util's client multiplexes on one connection.
    H2c(Box<Client<HttpConnector, CountedBody>>),
}

/// Unique request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        // If the system RNG fails, ids are still unique within this process.
        let _ = aws_lc_rs::rand::fill(&mut seed);
        RequestIds {
            prefix: u64::from_be_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        let mut hex = [0u8; 32];
        crate::trace::hex_into(&id, &mut hex);
        HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

/// What the request path learned on the way, for metrics and the audit event.
#[derive(Default)]
struct Facts {
    /// The normalised path as forwarded, or the path as sent when refused.
    path: String,
    outcome: Option<Arc<AuthzOutcome>>,
    user: Option<Arc<User>>,
    tier: Option<Arc<str>>,
    upstream: Option<Duration>,
    /// Request body bytes forwarded (counted only when audited).
    bytes_in: Option<Arc<AtomicU64>>,
    /// Allowed and on its way to the upstream.
    forwarded: bool,
}

/// Handles one request end to end and records it: metrics at once, the
/// audit event when the response ends.
pub async fn handle(
    sc: &Sidecar,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let received = SystemTime::now();
    let request_id = sc.request_ids.next();
    let trace = TraceContext::from_headers(req.headers());
    // Enabled with `RUST_LOG=meshgate=debug`: every log line of the request
    // then carries these fields.
    let span = tracing::debug_span!(
        "request",
        request_id = ?request_id,
        trace_id = %trace,
        method = %req.method(),
        principal = %conn.identity.principal,
    );
    handle_in(sc, conn, req, start, received, request_id, trace)
        .instrument(span)
        .await
}

async fn handle_in(
    sc: &Sidecar,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    start: Instant,
    received: SystemTime,
    request_id: HeaderValue,
    trace: TraceContext,
) -> Response<ProxyBody> {
    let mut rec = Recording {
        sc,
        conn,
        slot: None,
        received,
        start,
        request_id: request_id.clone(),
        trace_id: trace.trace_id,
        method: req.method().clone(),
        facts: Facts::default(),
    };
    // The event's place is taken first: nothing is decided or forwarded
    // that the audit trail cannot record (when_full: block).
    let result = match audit_slot(sc).await {
        Ok(slot) => {
            if slot.is_some() {
                rec.facts.bytes_in = Some(Arc::default());
            }
            rec.slot = slot;
            decide_and_forward(sc, conn, &request_id, &trace, &mut rec.facts, req).await
        }
        Err(e) => {
            rec.facts.path = req.uri().path().to_string();
            Err(e)
        }
    };
    let (mut resp, decision, error) = match result {
        Ok(resp) => (resp, "allow", None),
        Err(e) => {
            log_refusal(&e, &request_id, &trace, conn);
            if let ProxyError::TooManyRequests(state, _) = &e {
                rec.facts.tier = Some(state.tier.clone());
            }
            (e.into_response(&request_id), e.decision(), Some(e.code()))
        }
    };
    let outcome = rec.facts.outcome.as_ref();
    sc.metrics.observe_request(&Observed {
        product: outcome.map(|o| &o.product),
        action: outcome.map_or("", |o| o.action.as_str()),
        decision,
        status: resp.status(),
        elapsed: start.elapsed(),
        tier: rec.facts.tier.as_ref(),
        service: &conn.identity.principal_header,
    });
    if let Some(slot) = rec.slot.take() {
        let bytes_in = rec.facts.bytes_in.take();
        let event = rec.event(decision, error, resp.status().as_u16());
        resp.body_mut().audit(Box::new(PendingEvent {
            slot,
            event,
            start,
            bytes_in,
        }));
    }
    resp
}

/// The audit side of a request while it is handled. If the request's future
/// is dropped before there is a response (the client closed the connection
/// or reset the stream, the idle timeout, shutdown), the event is written
/// anyway: status 499, `complete: false`.
struct Recording<'a> {
    sc: &'a Sidecar,
    conn: &'a Arc<ConnInfo>,
    slot: Option<Slot>,
    received: SystemTime,
    start: Instant,
    request_id: HeaderValue,
    trace_id: [u8; 16],
    method: Method,
    facts: Facts,
}

/// nginx's code for a request the client closed before the response.
const CLIENT_CLOSED: u16 = 499;

impl Recording<'_> {
    fn event(&mut self, decision: &'static str, error: Option<&'static str>, status: u16) -> Event {
        let facts = std::mem::take(&mut self.facts);
        let policy_version = match (&facts.outcome, &self.sc.policy) {
            (None, Some(store)) => Some(store.current().version.clone()),
            _ => None,
        };
        Event {
            time: self.received,
            request_id: self.request_id.clone(),
            trace_id: self.trace_id,
            conn: self.conn.clone(),
            user: facts.user,
            tier: facts.tier,
            outcome: facts.outcome,
            policy_version,
            method: self.method.clone(),
            path: facts.path,
            decision,
            error,
            status,
            upstream: facts.upstream,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            complete: false,
        }
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let bytes_in = self.facts.bytes_in.take();
        let decision = match &self.facts.outcome {
            _ if self.facts.forwarded => "allow",
            Some(o) if !o.decision.allowed => "deny",
            // Cancelled before it was decided (and admitted).
            _ => "cancelled",
        };
        let mut event = self.event(decision, Some("client_closed_request"), CLIENT_CLOSED);
        event.duration = self.start.elapsed();
        event.bytes_in = bytes_in.map_or(0, |n| n.load(Ordering::Relaxed));
        slot.send(event);
    }
}

async fn audit_slot(sc: &Sidecar) -> Result<Option<Slot>, ProxyError> {
    match &sc.audit {
        None => Ok(None),
        Some(a) => a.slot().await.map_err(|_| ProxyError::AuditUnavailable),
    }
}

fn log_refusal(e: &ProxyError, request_id: &HeaderValue, trace: &TraceContext, conn: &ConnInfo) {
    let trace_id = trace;
    match e {
        // Refusals clients cause are counted in metrics and audited; a flood
        // of them must not flood the logs.
        ProxyError::Forbidden
        | ProxyError::NoRoute
        | ProxyError::MethodNotAllowed
        | ProxyError::BadPath(_)
        | ProxyError::Unauthorized(_)
        | ProxyError::TooManyRequests(..)
        | ProxyError::Overloaded(_)
        | ProxyError::QuotaUnavailable => {
            tracing::debug!(request_id = ?request_id, %trace_id, principal = %conn.identity.principal, error = %e, "request refused")
        }
        _ => {
            tracing::warn!(request_id = ?request_id, %trace_id, principal = %conn.identity.principal, error = %e, "request failed")
        }
    }
}

async fn decide_and_forward(
    sc: &Sidecar,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    trace: &TraceContext,
    facts: &mut Facts,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if let Err(e) = check_target(&req) {
        facts.path = req.uri().path().to_string();
        return Err(e);
    }
    let path = match crate::path::normalize(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            facts.path = req.uri().path().to_string();
            return Err(e.into());
        }
    };
    facts.path = path.encoded();
    // Past `limits.max_in_flight` requests in flight, 503 at once (no
    // queue). The place is held until the response headers are ready.
    let Ok(_in_flight) = sc.in_flight.try_acquire() else {
        sc.metrics.load_shed("global");
        return Err(ProxyError::Overloaded("global"));
    };
    let mut admitted = None;
    let mut timeout = sc.upstream.response_timeout;
    if let Some(store) = &sc.policy {
        let user = end_user(sc, store, &req, &path).await?;
        let outcome = Arc::new(authorize(sc, store, conn, &req, &path, user.as_deref())?);
        facts.user = user.clone();
        facts.outcome = Some(outcome.clone());
        let allowed = outcome.decision.allowed;
        if allowed {
            admitted = admit(sc, store, conn, &outcome, user.as_deref()).await?;
            timeout = product_timeout(sc, &outcome).unwrap_or(timeout);
        }
        req.extensions_mut().insert(outcome);
        if !allowed {
            return Err(ProxyError::Forbidden);
        }
    }
    facts.tier = admitted
        .as_ref()
        .and_then(|a| a.state.as_ref())
        .map(|s| s.tier.clone());
    facts.forwarded = true;
    let mut resp = forward(sc, conn, request_id, trace, facts, req, timeout).await?;
    // In-flight places are given back here, with the response headers.
    if let Some(state) = admitted.and_then(|a| a.state) {
        state.set_headers(resp.headers_mut());
    }
    Ok(resp)
}

/// Refuses, before anything else looks at it, a request whose target or
/// authority is not one plain resource: `CONNECT` (authority-form, a
/// tunnel), the asterisk-form (`OPTIONS *`), and a Host that is sent more
/// than once or, in HTTP/1.1, not at all (RFC 9112 3.2: the server must
/// answer 400; two Hosts let two hops disagree on which one counts).
fn check_target<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT"));
    }
    if req.uri() == "*" {
        return Err(ProxyError::BadRequest("asterisk-form target"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(ProxyError::BadRequest("more than one Host")),
        (None, None) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Err(ProxyError::BadRequest("no Host"))
        }
        _ => Ok(()),
    }
}

/// The upstream response timeout of a product whose contract promises a
/// latency: `timeouts.latency_factor` times it, at most `upstream_response`.
fn product_timeout(sc: &Sidecar, outcome: &AuthzOutcome) -> Option<Duration> {
    let factor = sc.config.timeouts.latency_factor;
    let latency = outcome.latency?;
    if factor <= 0.0 {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(latency.as_secs_f64() * factor).ok()?;
    Some(timeout.min(sc.upstream.response_timeout))
}

/// Admits the request under the product's and consumer's limits: 503 past
/// an in-flight limit, 429 when the consumer's quota is used up.
async fn admit(
    sc: &Sidecar,
    store: &PolicyStore,
    conn: &ConnInfo,
    outcome: &AuthzOutcome,
    user: Option<&User>,
) -> Result<Option<Admitted>, ProxyError> {
    let Some(quotas) = &sc.quotas else {
        return Ok(None);
    };
    // The header form is made from a `str`, so this never replaces a byte.
    let service = String::from_utf8_lossy(conn.identity.principal_header.as_bytes());
    let service_groups = if quotas.uses_groups() {
        store.current().service_groups(&conn.identity.principal)
    } else {
        Vec::new()
    };
    let who = Consumer {
        service: &service,
        user,
        service_groups: &service_groups,
    };
    match quotas
        .admit(&outcome.product, outcome.throughput, &who)
        .await
    {
        Ok(admitted) => Ok(Some(admitted)),
        Err(Refusal::Unavailable) => Err(ProxyError::QuotaUnavailable),
        Err(Refusal::Overloaded(what)) => {
            sc.metrics.load_shed(what);
            Err(ProxyError::Overloaded(what))
        }
        Err(Refusal::OverQuota(state, retry_after)) => {
            sc.metrics
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

/// The verified end user of a request whose route takes a token. A token
/// that is sent is verified even where it is optional: a bad one is refused,
/// never ignored. Only the `Authorization` header is read.
async fn end_user(
    sc: &Sidecar,
    store: &PolicyStore,
    req: &Request<Incoming>,
    path: &NormalPath,
) -> Result<Option<Arc<User>>, ProxyError> {
    let mode = store.current().user_token(req.method(), path);
    let Some(mode @ (UserToken::Optional | UserToken::Required)) = mode else {
        return Ok(None);
    };
    let refuse = |e: TokenError| {
        if let Some(v) = &sc.users {
            v.count(&Err(e.clone()));
        }
        ProxyError::Unauthorized(e)
    };
    let token = match Verifier::bearer(req.headers()) {
        Ok(Some(t)) => t,
        Ok(None) if mode == UserToken::Optional => return Ok(None),
        Ok(None) => return Err(refuse(TokenError::Missing)),
        Err(e) => return Err(refuse(e)),
    };
    let Some(verifier) = &sc.users else {
        return Err(refuse(TokenError::NoKeys));
    };
    verifier
        .verify(token)
        .await
        .map(Some)
        .map_err(ProxyError::Unauthorized)
}

fn authorize(
    sc: &Sidecar,
    store: &PolicyStore,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    path: &NormalPath,
    user: Option<&User>,
) -> Result<AuthzOutcome, ProxyError> {
    let snapshot = store.current();
    let t0 = Instant::now();
    let outcome = snapshot.decide_http(
        &conn.identity.principal,
        &HttpFacts {
            method: req.method(),
            path,
            headers: req.headers(),
            source_ip: conn.peer.ip(),
            tls_version: conn.tls_version,
            time: SystemTime::now(),
            user,
        },
    )?;
    sc.metrics.authorization_duration.observe(t0.elapsed());
    let decision = &outcome.decision;
    sc.metrics.decision(decision.allowed);
    if !decision.errors.is_empty() {
        sc.metrics
            .policy_evaluation_errors
            .inc_by(decision.errors.len() as u64);
    }
    if let Some(s) = &outcome.shadow {
        if s.allowed != decision.allowed {
            sc.metrics.shadow_disagreements.inc();
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
    Ok(outcome)
}

async fn forward(
    sc: &Sidecar,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    trace: &TraceContext,
    facts: &mut Facts,
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Response<ProxyBody>, ProxyError> {
    let upstream = &sc.upstream;
    let (mut parts, body) = req.into_parts();
    let body = CountedBody::new(body, facts.bytes_in.clone());
    // The path the upstream receives is the one that was authorised
    // (encoded once, in decide_and_forward).
    let mut target = String::with_capacity(facts.path.len() + 64);
    target.push_str(&facts.path);
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
    // Room for the headers set below and the trace's, in one allocation.
    headers.reserve(8);
    headers.insert(X_FORWARDED_CLIENT_CERT, conn.identity.xfcc.clone());
    headers.insert(X_MESHGATE_PRINCIPAL, conn.identity.principal_header.clone());
    headers.insert(X_REQUEST_ID, request_id.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    headers.insert(X_FORWARDED_FOR, conn.peer_ip.clone());
    trace.apply(headers);
    match upstream.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            let host = original_host.or_else(|| upstream.host_header.clone());
            if let Some(h) = host {
                headers.insert(header::HOST, h);
            }
        }
        UpstreamProtocol::H2c => {
            // HTTP/2 forbids a Host that differs from :authority (the upstream's).
            parts.version = Version::HTTP_2;
            headers.remove(header::HOST);
            if let Some(h) = original_host {
                headers.insert(X_FORWARDED_HOST, h);
            }
        }
    }
    let t0 = Instant::now();
    let r = match &upstream.transport {
        // Origin-form target: the connection is to the upstream itself.
        Transport::Http1(pool) => {
            parts.uri = Uri::from(path_and_query);
            let call = pool.send(Request::from_parts(parts, body));
            match tokio::time::timeout(timeout, call).await {
                Err(_) => Err(ProxyError::UpstreamTimeout),
                Ok(Err(SendError::Connect(_))) => Err(ProxyError::UpstreamUnavailable),
                Ok(Err(SendError::Failed(e))) => Err(ProxyError::UpstreamFailed(error_chain(&e))),
                Ok(Ok((resp, lease))) => Ok((resp, Some(lease))),
            }
        }
        Transport::H2c(client) => {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(upstream.authority.clone());
            uri.path_and_query = Some(path_and_query);
            parts.uri =
                Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("request target"))?;
            let call = client.request(Request::from_parts(parts, body));
            match tokio::time::timeout(timeout, call).await {
                Err(_) => Err(ProxyError::UpstreamTimeout),
                Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamUnavailable),
                Ok(Err(e)) => Err(ProxyError::UpstreamFailed(error_chain(&e))),
                Ok(Ok(resp)) => Ok((resp, None)),
            }
        }
    };
    let took = t0.elapsed();
    facts.upstream = Some(took);
    sc.metrics
        .observe_upstream(facts.outcome.as_ref().map(|o| &o.product), took);
    let (resp, lease) = r?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    Ok(Response::from_parts(
        parts,
        ProxyBody::upstream(body, lease),
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `TE: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a
    // lookup per hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::TE {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A header that `strip_hop_by_hop` removes or rewrites, whatever `Connection` names.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::TE,
    ]
    .contains(&name)
}

/// Headers meshgate sets for the upstream (besides `x-meshgate-*`): a
/// client's copies never reach it. `forwarded` (RFC 7239) carries the same
/// facts as the `x-forwarded-*` headers, so a client's copy goes too.
const SET_BY_MESHGATE: [&str; 7] = [
    "x-forwarded-client-cert",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
    "traceparent",
];

/// Whether a client header is one only meshgate may set. Names are read
/// with `_` as `-` too: CGI-style servers (and many frameworks) map both to
/// the same variable, so `x_meshgate_principal` would pass for ours.
fn set_by_meshgate(name: &str) -> bool {
    let is_ours = |n: &str| n.starts_with("x-meshgate-") || SET_BY_MESHGATE.contains(&n);
    is_ours(name) || (name.contains('_') && is_ours(&name.replace('_', "-")))
}

/// Removes every client-supplied copy of the headers only meshgate may set
/// (the verified ones are set after this).
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| set_by_meshgate(k.as_str()))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, te"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep", "te"]);
        assert_eq!(
            h.get(header::TE).map(|v| v.as_bytes()),
            Some(&b"trailers"[..])
        );
    }

    #[test]
    fn each_hop_by_hop_header_is_stripped_even_alone() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, vec!["x-keep"], "{name}");
        }
        // Without any, the message is left as it is.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.append("x-keep", HeaderValue::from_static("1"));
        h.append("x-keep", HeaderValue::from_static("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn strips_every_copy_of_identity_headers() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("URI=spiffe://evil"),
        );
        h.append(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("URI=spiffe://evil2"),
        );
        h.append(
            X_MESHGATE_PRINCIPAL,
            HeaderValue::from_static("spiffe://evil"),
        );
        h.append("X-Meshgate-Anything", HeaderValue::from_static("x"));
        h.append("x-other", HeaderValue::from_static("kept"));
        h.append("x_other", HeaderValue::from_static("kept"));
        // Underscore spellings a CGI-style upstream reads as ours.
        for name in [
            "x_meshgate_principal",
            "X_Meshgate-User",
            "x_forwarded_client_cert",
            "x_forwarded_for",
            "x-forwarded_proto",
            "x_request_id",
        ] {
            h.append(name, HeaderValue::from_static("spoofed"));
        }
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "forwarded",
            "x-request-id",
            "traceparent",
        ] {
            h.append(name, HeaderValue::from_static("spoofed"));
        }
        strip_identity_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["x-other", "x_other"]);
    }

    #[test]
    fn refuses_tunnels_asterisk_targets_and_ambiguous_hosts() {
        let req = |method: &str, target: &str, version: Version, hosts: &[&str]| {
            let mut b = Request::builder()
                .method(method)
                .uri(target)
                .version(version);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).expect("request")
        };
        let refused = |r: Request<()>| match check_target(&r) {
            Err(ProxyError::BadRequest(what)) => Some(what),
            _ => None,
        };
        let h11 = Version::HTTP_11;
        assert_eq!(
            refused(req("CONNECT", "localhost:443", h11, &["localhost:443"])),
            Some("CONNECT")
        );
        assert_eq!(
            refused(req("CONNECT", "/orders", h11, &["localhost"])),
            Some("CONNECT")
        );
        assert_eq!(
            refused(req("OPTIONS", "*", h11, &["localhost"])),
            Some("asterisk-form target")
        );
        assert_eq!(
            refused(req("GET", "/orders", h11, &["localhost", "evil.example"])),
            Some("more than one Host")
        );
        assert_eq!(
            refused(req("GET", "/orders", h11, &["localhost", "localhost"])),
            Some("more than one Host")
        );
        assert_eq!(refused(req("GET", "/orders", h11, &[])), Some("no Host"));
        // HTTP/1.0 needs no Host, an absolute-form target names the
        // authority itself, and HTTP/2 has :authority.
        assert_eq!(refused(req("GET", "/orders", Version::HTTP_10, &[])), None);
        assert_eq!(
            refused(req("GET", "https://localhost/orders", h11, &[])),
            None
        );
        assert_eq!(
            refused(req("GET", "https://localhost/orders", Version::HTTP_2, &[])),
            None
        );
        assert_eq!(refused(req("GET", "/orders", h11, &["localhost"])), None);
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .to_str()
            .is_ok_and(|s| s.bytes().all(|c| c.is_ascii_hexdigit())));
    }
}
