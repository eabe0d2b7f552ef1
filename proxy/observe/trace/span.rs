//! One sampled request's spans while it is under way ([`Draft`]), and the
//! SDK's `SpanData` they become when its response ends: the server span
//! with the HTTP semantic conventions' attributes and meshgate's own
//! (`meshgate.product`, `.action`, `.decision`, `.policy_ids`,
//! `.principal`), and the client span of the upstream exchange.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::export::Queue;
use super::UpstreamPeer;
use crate::decision::authz::AuthzOutcome;
use crate::decision::jwt::User;
use crate::model::connection::ConnInfo;
use crate::model::trace::TraceContext;

/// What every draft shares: the queue, the upstream's name, the scope.
pub(super) struct Shared {
    pub(super) queue: Queue,
    upstream: UpstreamPeer,
    scope: InstrumentationScope,
}

impl Shared {
    pub(super) fn new(queue: Queue, upstream: UpstreamPeer) -> Shared {
        Shared {
            queue,
            upstream,
            scope: InstrumentationScope::builder("meshgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }
}

/// A sampled request's spans, from its arrival to the end of its response.
pub struct Draft {
    shared: Arc<Shared>,
    trace_id: TraceId,
    flags: TraceFlags,
    state: TraceState,
    /// The caller's span, when the trace was continued.
    parent: Option<SpanId>,
    server: SpanId,
    client: SpanId,
    start: SystemTime,
    /// A gRPC call's `package.Service/Method`: the spans' name.
    rpc: Option<String>,
    /// `http.request.method` as the conventions name it (`_OTHER` for an
    /// unknown method).
    method: &'static str,
    /// The server span's attributes so far.
    attributes: Vec<KeyValue>,
    upstream: Option<Upstream>,
    /// The server span's status: an error for a 5xx or a gRPC server error.
    error: Option<&'static str>,
    grpc_status: Option<u8>,
    /// The response body broke off after its head: why (`error.type`); the
    /// server span is an error whatever the status said.
    cut: Option<&'static str>,
}

/// The upstream exchange, as far as it got.
struct Upstream {
    start: SystemTime,
    /// When it failed before a response; otherwise it ends with the body.
    failed: Option<SystemTime>,
    status: Option<u16>,
    error: Option<&'static str>,
}

/// How a request was answered, as the pipeline learned it.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The normalised path as forwarded, or the path as sent when refused.
    pub path: &'a str,
    /// The matched route's template (`/orders/{id}`, a gRPC method's
    /// `/package.Service/Method`): `http.route`; `None` when no route
    /// matched.
    pub route: Option<&'a str>,
    /// The status on the wire; `None` when the client went away first.
    pub status: Option<u16>,
    /// `allow`, `deny`, … (the audit event's `decision`).
    pub decision: &'static str,
    /// meshgate's error code (`forbidden`, `upstream_timeout`, …).
    pub error: Option<&'static str>,
    pub grpc_status: Option<u8>,
    pub outcome: Option<&'a AuthzOutcome>,
    pub user: Option<&'a User>,
}

/// The methods the HTTP conventions know; any other is `_OTHER`.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl Draft {
    pub(super) fn new<B>(
        shared: &Arc<Shared>,
        trace: &TraceContext,
        server: SpanId,
        client: SpanId,
        req: &http::Request<B>,
        conn: &ConnInfo,
        request_id: &http::HeaderValue,
    ) -> Draft {
        let sent = req.method().as_str();
        let method = KNOWN_METHODS
            .into_iter()
            .find(|m| *m == sent)
            .unwrap_or("_OTHER");
        let mut a = Vec::with_capacity(24);
        a.push(KeyValue::new("http.request.method", method));
        if method == "_OTHER" {
            a.push(KeyValue::new(
                "http.request.method_original",
                sent.to_string(),
            ));
        }
        a.push(KeyValue::new("url.scheme", "https"));
        let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        if let Some(authority) = authority.and_then(|a| a.parse::<http::uri::Authority>().ok()) {
            a.push(KeyValue::new(
                "server.address",
                authority.host().to_string(),
            ));
            if let Some(port) = authority.port_u16() {
                a.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        a.push(KeyValue::new("network.protocol.name", "http"));
        a.push(KeyValue::new(
            "network.protocol.version",
            version(req.version()),
        ));
        a.push(KeyValue::new("client.address", conn.peer.ip().to_string()));
        a.push(KeyValue::new("client.port", i64::from(conn.peer.port())));
        if let Some(ua) = req.headers().get(http::header::USER_AGENT) {
            a.push(KeyValue::new(
                "user_agent.original",
                String::from_utf8_lossy(ua.as_bytes()).into_owned(),
            ));
        }
        a.push(KeyValue::new(
            "meshgate.principal",
            conn.identity.principal.to_string(),
        ));
        a.push(KeyValue::new(
            "meshgate.request_id",
            String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
        ));
        let tracestate = trace.parent_id.and_then(|_| {
            let v = req.headers().get(crate::model::trace::TRACESTATE)?;
            v.to_str().ok()?.parse::<TraceState>().ok()
        });
        Draft {
            shared: shared.clone(),
            trace_id: TraceId::from_bytes(trace.trace_id),
            flags: TraceFlags::SAMPLED,
            state: tracestate.unwrap_or_default(),
            parent: trace.parent_id.map(SpanId::from_bytes),
            server,
            client,
            start: SystemTime::now(),
            rpc: None,
            method,
            attributes: a,
            upstream: None,
            error: None,
            grpc_status: None,
            cut: None,
        }
    }

    /// The request goes to the upstream now.
    pub fn upstream_sent(&mut self) {
        self.upstream = Some(Upstream {
            start: SystemTime::now(),
            failed: None,
            status: None,
            error: None,
        });
    }

    /// The upstream's response headers (`Some` status), or its failure.
    pub fn upstream_answered(&mut self, status: Option<u16>) {
        if let Some(u) = &mut self.upstream {
            u.status = status;
            if status.is_none() {
                u.failed = Some(SystemTime::now());
            }
        }
    }

    /// The answer: the server span's attributes from what the stages
    /// learned. The spans end with the response body ([`Draft::end`]).
    pub fn answered(&mut self, answer: &Answer<'_>, grpc_call: bool) {
        let a = &mut self.attributes;
        a.push(KeyValue::new("url.path", answer.path.to_string()));
        if let Some(route) = answer.route {
            a.push(KeyValue::new("http.route", route.to_string()));
        }
        if let Some(status) = answer.status {
            a.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        a.push(KeyValue::new("meshgate.decision", answer.decision));
        if let Some(o) = answer.outcome {
            a.push(KeyValue::new("meshgate.product", o.product.clone()));
            a.push(KeyValue::new("meshgate.action", o.action.as_str()));
            let ids: Vec<StringValue> = o
                .decision
                .policies
                .iter()
                .map(|p| p.clone().into())
                .collect();
            a.push(KeyValue::new(
                "meshgate.policy_ids",
                Value::Array(Array::String(ids)),
            ));
        }
        if let Some(u) = answer.user {
            a.push(KeyValue::new("enduser.id", u.id.clone()));
        }
        if grpc_call {
            a.push(KeyValue::new("rpc.system", "grpc"));
            let name = answer.path.trim_start_matches('/');
            if let Some((service, method)) = name.split_once('/') {
                a.push(KeyValue::new("rpc.service", service.to_string()));
                a.push(KeyValue::new("rpc.method", method.to_string()));
                self.rpc = Some(name.to_string());
            }
        }
        if let Some(code) = answer.error {
            a.push(KeyValue::new("error.type", code));
            // A 4xx, or a client that went away, is not the server's error.
            if answer.status.is_some_and(|s| s >= 500) && !grpc_call {
                self.error = Some(code);
            }
        } else if answer.status.is_some_and(|s| s >= 500) {
            self.error = Some("upstream status");
        }
        if let Some(u) = &mut self.upstream {
            if u.status.is_none() {
                u.error = answer.error;
            }
        }
        if let Some(code) = answer.grpc_status {
            self.grpc_status(code);
        }
    }

    /// The gRPC status the call ended with (the upstream's trailers, or
    /// meshgate's refusal).
    pub fn grpc_status(&mut self, code: u8) {
        self.grpc_status = Some(code);
    }

    /// The response body broke off after its head, for `code` (its
    /// `error.type`): field masking refused the rest (`unmaskable_response`),
    /// or the upstream died mid-body (`upstream_failed`, `upstream`: the
    /// client span is an error too).
    pub fn body_failed(&mut self, code: &'static str, upstream: bool) {
        self.cut = Some(code);
        if let Some(u) = self.upstream.as_mut().filter(|_| upstream) {
            u.error = Some(code);
        }
    }

    /// The response has ended (`complete`: to its last byte): both spans
    /// are queued for export.
    pub fn end(self: Box<Self>, complete: bool) {
        let end = SystemTime::now();
        let this = *self;
        let shared = this.shared.clone();
        let (server, client) = this.build(end, complete);
        if let Some(client) = client {
            shared.queue.push(client);
        }
        shared.queue.push(server);
    }

    fn build(mut self, end: SystemTime, complete: bool) -> (SpanData, Option<SpanData>) {
        let name: Cow<'static, str> = match self.rpc.take() {
            Some(name) => name.into(),
            // The conventions name a span of an unknown method `HTTP`.
            None if self.method == "_OTHER" => "HTTP".into(),
            None => self.method.into(),
        };
        let mut status = match self.error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        };
        if let Some(code) = self.grpc_status {
            self.attributes
                .push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            // The codes a gRPC server reports as its own errors.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                status = Status::error(format!("gRPC status {code}"));
            }
        }
        if let Some(code) = self.cut {
            self.attributes.retain(|kv| kv.key.as_str() != "error.type");
            self.attributes.push(KeyValue::new("error.type", code));
            status = Status::error(code);
        }
        if !complete {
            self.attributes
                .push(KeyValue::new("meshgate.complete", false));
        }
        let client = self
            .upstream
            .take()
            .map(|u| self.client_span(u, name.clone(), end));
        let server = SpanData {
            span_context: self.context(self.server),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name,
            start_time: self.start,
            end_time: end,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.shared.scope.clone(),
        };
        (server, client)
    }

    fn client_span(&self, u: Upstream, name: Cow<'static, str>, end: SystemTime) -> SpanData {
        let peer = &self.shared.upstream;
        let mut a = Vec::with_capacity(8);
        a.push(KeyValue::new("http.request.method", self.method));
        a.push(KeyValue::new("server.address", peer.host.clone()));
        a.push(KeyValue::new("server.port", i64::from(peer.port)));
        a.push(KeyValue::new("network.protocol.name", "http"));
        a.push(KeyValue::new("network.protocol.version", peer.version));
        let mut status = Status::Unset;
        if let Some(s) = u.status {
            a.push(KeyValue::new("http.response.status_code", i64::from(s)));
            if s >= 400 {
                status = Status::error(format!("status {s}"));
            }
        }
        if let Some(e) = u.error {
            a.push(KeyValue::new("error.type", e));
            status = Status::error(e);
        }
        if let Some(code) = self.grpc_status.filter(|_| u.status.is_some()) {
            a.push(KeyValue::new("rpc.system", "grpc"));
            a.push(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            if code != 0 {
                status = Status::error(format!("gRPC status {code}"));
            }
        }
        SpanData {
            span_context: self.context(self.client),
            parent_span_id: self.server,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name,
            start_time: u.start,
            end_time: u.failed.unwrap_or(end),
            attributes: a,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.shared.scope.clone(),
        }
    }

    fn context(&self, span: SpanId) -> SpanContext {
        SpanContext::new(self.trace_id, span, self.flags, false, self.state.clone())
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
