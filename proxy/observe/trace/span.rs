//! One sampled request's spans while it is under way ([`Draft`]), encoded
//! as OTLP protobuf when its response ends (`wire.rs`): the server span
//! with the HTTP semantic conventions' attributes and meshgate's own
//! (`meshgate.product`, `.action`, `.decision`, `.policy_ids`,
//! `.principal`), and the client span of the upstream exchange. The server
//! span's attributes are encoded as the stages learn them ([`Draft::attr`]):
//! no attribute is held as a string of its own.
//!
//! A span's size is bounded whatever the request sent: every string
//! attribute is cut at a UTF-8 boundary to [`MAX_VALUE`] bytes
//! ([`MAX_PATH`] for `url.path`), as the OpenTelemetry SDK's
//! `AttributeValueLengthLimit` does, `meshgate.policy_ids` lists at most
//! [`MAX_POLICY_IDS`] ids, and the span name is cut like a value. With
//! `tracestate` within W3C's 512 bytes (`model::trace::tracestate`), a
//! request's two spans take at most [`MAX_REQUEST_SPANS`] bytes.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::export::Queue;
use super::wire::{self, Fields, Kind, Val, SPAN_ATTRIBUTES};
use super::UpstreamPeer;
use crate::decision::authz::AuthzOutcome;
use crate::decision::jwt::User;
use crate::model::connection::ConnInfo;
use crate::model::trace::TraceContext;

/// Longest string attribute value, in bytes (user agent, host, principal,
/// end user, gRPC service and method, the span name, each policy id, …).
pub(super) const MAX_VALUE: usize = 256;
/// Longest `url.path`, in bytes.
pub(super) const MAX_PATH: usize = 1024;
/// Most ids in `meshgate.policy_ids` (the first ones the decision named).
pub(super) const MAX_POLICY_IDS: usize = 16;
/// What a request's two spans take at most, encoded: the server span's
/// string values (eleven of [`MAX_VALUE`], one of [`MAX_PATH`], the ids
/// 16 × [`MAX_VALUE`], the names and their framing, the fixed fields, a
/// 512-byte `tracestate`) and the client span's (a copy of the name and
/// `tracestate`): a draft filled to every limit took 10,373 bytes (the
/// unit test below checks it stays under this).
pub(super) const MAX_REQUEST_SPANS: usize = 12 * 1024;

/// `s` cut to at most `max` bytes at a UTF-8 boundary.
pub(super) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What every draft shares: the queue and the upstream's name.
pub(super) struct Shared {
    pub(super) queue: Queue,
    upstream: UpstreamPeer,
}

impl Shared {
    pub(super) fn new(queue: Queue, upstream: UpstreamPeer) -> Shared {
        Shared { queue, upstream }
    }
}

/// A sampled request's spans, from its arrival to the end of its response.
pub struct Draft {
    shared: Arc<Shared>,
    trace_id: [u8; 16],
    /// The caller's `tracestate`, when the trace was continued.
    state: Option<String>,
    /// The caller's span, when the trace was continued.
    parent: Option<[u8; 8]>,
    server: [u8; 8],
    client: [u8; 8],
    /// Unix nanoseconds.
    start: u64,
    /// A gRPC call's `package.Service/Method`: the spans' name.
    rpc: Option<String>,
    /// `http.request.method` as the conventions name it (`_OTHER` for an
    /// unknown method).
    method: &'static str,
    /// The spans' bytes: the server span begun and its attributes
    /// so far; at the end, its other fields and the client span.
    out: Vec<u8>,
    /// Where the server span's length goes in `out`.
    server_at: usize,
    upstream: Option<Upstream>,
    /// The server span's status: an error for a 5xx or a gRPC server error.
    error: Option<StatusMessage>,
    grpc_status: Option<u8>,
    /// The response body broke off after its head: why (`error.type`); the
    /// server span is an error whatever the status said.
    cut: Option<&'static str>,
    /// `error.type` is written already (attributes are encoded as they come,
    /// so one cannot be replaced later).
    typed: bool,
}

/// An error status's message.
#[derive(Debug, Clone, Copy)]
enum StatusMessage {
    /// meshgate's error code.
    Code(&'static str),
    /// `status 503`.
    Http(u16),
    /// `gRPC status 14`.
    Grpc(u8),
}

impl fmt::Display for StatusMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMessage::Code(c) => f.write_str(c),
            StatusMessage::Http(s) => write!(f, "status {s}"),
            StatusMessage::Grpc(c) => write!(f, "gRPC status {c}"),
        }
    }
}

/// The upstream exchange, as far as it got.
struct Upstream {
    start: u64,
    /// When it failed before a response; otherwise it ends with the body.
    failed: Option<u64>,
    status: Option<u16>,
    error: Option<&'static str>,
}

/// Now, as OTLP's Unix nanoseconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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
        client: [u8; 8],
        req: &http::Request<B>,
        conn: &ConnInfo,
        request_id: &http::HeaderValue,
    ) -> Draft {
        let sent = req.method().as_str();
        let method = KNOWN_METHODS
            .into_iter()
            .find(|m| *m == sent)
            .unwrap_or("_OTHER");
        // What the upstream receives too: valid, within W3C's bounds.
        let tracestate = trace
            .parent_id
            .and_then(|_| crate::model::trace::tracestate(req.headers()));
        let mut d = Draft {
            shared: shared.clone(),
            trace_id: trace.trace_id,
            state: tracestate,
            parent: trace.parent_id,
            server: trace.span_id,
            client,
            start: now(),
            rpc: None,
            method,
            out: Vec::with_capacity(1536),
            server_at: 0,
            upstream: None,
            error: None,
            grpc_status: None,
            cut: None,
            typed: false,
        };
        d.server_at = wire::open_span(&mut d.out);
        d.attr("http.request.method", method);
        if method == "_OTHER" {
            d.attr("http.request.method_original", Val::Str(sent));
        }
        d.attr("url.scheme", "https");
        let authority = match req.uri().authority() {
            Some(a) => Some((a.host(), a.port_u16())),
            None => (req.headers().get(http::header::HOST))
                .and_then(|h| h.to_str().ok())
                .and_then(split_authority),
        };
        if let Some((host, port)) = authority {
            d.attr("server.address", Val::Str(host));
            if let Some(port) = port {
                d.attr("server.port", i64::from(port));
            }
        }
        d.attr("network.protocol.name", "http");
        d.attr("network.protocol.version", version(req.version()));
        d.attr("client.address", Val::Str(&text(&conn.peer_ip)));
        d.attr("client.port", i64::from(conn.peer.port()));
        if let Some(ua) = req.headers().get(http::header::USER_AGENT) {
            d.attr("user_agent.original", Val::Str(&text(ua)));
        }
        let principal = &conn.identity.principal_header;
        d.attr("meshgate.principal", Val::Str(&text(principal)));
        d.attr("meshgate.request_id", Val::Str(&text(request_id)));
        d
    }

    /// Adds an attribute to the server span, a string cut to
    /// [`MAX_VALUE`] bytes.
    pub(super) fn attr<'a>(&mut self, name: &'static str, value: impl Into<Val<'a>>) {
        self.attr_within(name, value.into(), MAX_VALUE);
    }

    /// Adds an attribute, a string cut to `max` bytes, a list to
    /// [`MAX_POLICY_IDS`] strings of [`MAX_VALUE`].
    fn attr_within(&mut self, name: &'static str, value: Val<'_>, max: usize) {
        let out = &mut self.out;
        match value {
            Val::Str(s) => wire::attribute(out, SPAN_ATTRIBUTES, name, Val::Str(clip(s, max))),
            Val::Strs(list) => {
                let list = list.iter().take(MAX_POLICY_IDS);
                wire::attribute_list(out, SPAN_ATTRIBUTES, name, list.map(|s| clip(s, MAX_VALUE)));
            }
            other => wire::attribute(out, SPAN_ATTRIBUTES, name, other),
        }
    }

    /// The request goes to the upstream now.
    pub fn upstream_sent(&mut self) {
        self.upstream = Some(Upstream {
            start: now(),
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
                u.failed = Some(now());
            }
        }
    }

    /// The answer: the server span's attributes from what the stages
    /// learned. The spans end with the response body ([`Draft::end`]).
    pub fn answered(&mut self, answer: &Answer<'_>, grpc_call: bool) {
        self.attr_within("url.path", Val::Str(answer.path), MAX_PATH);
        if let Some(route) = answer.route {
            self.attr("http.route", Val::Str(route));
        }
        if let Some(status) = answer.status {
            self.attr("http.response.status_code", i64::from(status));
        }
        self.attr("meshgate.decision", answer.decision);
        if let Some(o) = answer.outcome {
            self.attr("meshgate.product", Val::Str(&o.product));
            self.attr("meshgate.action", o.action.as_str());
            self.attr("meshgate.policy_ids", Val::Strs(&o.decision.policies));
        }
        if let Some(u) = answer.user {
            self.attr("enduser.id", Val::Str(&u.id));
        }
        if grpc_call {
            self.attr("rpc.system", "grpc");
            let name = answer.path.trim_start_matches('/');
            if let Some((service, method)) = name.split_once('/') {
                self.attr("rpc.service", Val::Str(service));
                self.attr("rpc.method", Val::Str(method));
                self.rpc = Some(clip(name, MAX_VALUE).to_string());
            }
        }
        if let Some(code) = answer.error {
            self.attr("error.type", code);
            self.typed = true;
            // A 4xx, or a client that went away, is not the server's error.
            if answer.status.is_some_and(|s| s >= 500) && !grpc_call {
                self.error = Some(StatusMessage::Code(code));
            }
        } else if answer.status.is_some_and(|s| s >= 500) {
            self.error = Some(StatusMessage::Code("upstream status"));
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
    /// are encoded and queued for export.
    pub fn end(mut self: Box<Self>, complete: bool) {
        let end = now();
        if let Some(code) = self.grpc_status {
            self.attr("rpc.grpc.status_code", i64::from(code));
            // The codes a gRPC server reports as its own errors.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                self.error = Some(StatusMessage::Grpc(code));
            }
        }
        if let Some(code) = self.cut {
            // A head that was already an error keeps its own error.type.
            if !self.typed {
                self.attr("error.type", code);
            }
            self.error = Some(StatusMessage::Code(code));
        }
        if !complete {
            self.attr("meshgate.complete", false);
        }
        let name = match (&self.rpc, self.method) {
            (Some(name), _) => name.as_str(),
            // The conventions name a span of an unknown method `HTTP`.
            (None, "_OTHER") => "HTTP",
            (None, method) => method,
        };
        let server = Fields {
            trace_id: &self.trace_id,
            span_id: &self.server,
            trace_state: self.state.as_deref(),
            parent: self.parent.as_ref(),
            parent_is_remote: self.parent.is_some(),
            name,
            kind: Kind::Server,
            start: self.start,
            end,
            error: self.error.as_ref().map(|e| e as &dyn fmt::Display),
        };
        let mut out = std::mem::take(&mut self.out);
        wire::close_span(&mut out, self.server_at, &server);
        let mut spans = 1;
        if let Some(u) = &self.upstream {
            self.client_span(&mut out, u, &server);
            spans = 2;
        }
        self.shared.queue.push(out, spans);
    }

    fn client_span(&self, out: &mut Vec<u8>, u: &Upstream, server: &Fields<'_>) {
        let mut error = u.status.filter(|s| *s >= 400).map(StatusMessage::Http);
        if let Some(e) = u.error {
            error = Some(StatusMessage::Code(e));
        }
        let grpc = self.grpc_status.filter(|_| u.status.is_some());
        if let Some(code) = grpc.filter(|c| *c != 0) {
            error = Some(StatusMessage::Grpc(code));
        }
        let fields = Fields {
            span_id: &self.client,
            parent: Some(&self.server),
            parent_is_remote: false,
            kind: Kind::Client,
            start: u.start,
            end: u.failed.unwrap_or(server.end),
            error: error.as_ref().map(|e| e as &dyn fmt::Display),
            ..*server
        };
        let peer = &self.shared.upstream;
        let at = wire::open_span(out);
        {
            let mut a = |name, value| wire::attribute(out, SPAN_ATTRIBUTES, name, value);
            a("http.request.method", Val::Str(self.method));
            a("server.address", Val::Str(&peer.host));
            a("server.port", Val::Int(i64::from(peer.port)));
            a("network.protocol.name", Val::Str("http"));
            a("network.protocol.version", Val::Str(peer.version));
            if let Some(s) = u.status {
                a("http.response.status_code", Val::Int(i64::from(s)));
            }
            if let Some(e) = u.error {
                a("error.type", Val::Str(e));
            }
            if let Some(code) = grpc {
                a("rpc.system", Val::Str("grpc"));
                a("rpc.grpc.status_code", Val::Int(i64::from(code)));
            }
        }
        wire::close_span(out, at, &fields);
    }
}

/// A header's text (always UTF-8 where meshgate made it).
fn text(v: &http::HeaderValue) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => s.into(),
        Err(_) => String::from_utf8_lossy(v.as_bytes()),
    }
}

/// `host[:port]` of a `Host` header (`[v6]:port` too); `None` when it is
/// not one.
fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match a.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            (
                &a[..v6.len() + 2],
                after.strip_prefix(':').map(Some).unwrap_or(None),
            )
        }
        None => match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        },
    };
    let valid = |c: u8| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    if host.is_empty() || !(host.starts_with('[') || host.bytes().all(valid)) {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => p.parse::<u16>().ok().map(|p| (host, Some(p))),
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

#[cfg(test)]
mod tests {
    use super::super::export::Item;
    use super::*;
    use crate::decision::authz::Decision;
    use crate::decision::contract::Action;
    use crate::model::identity::{PeerIdentity, Principal};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use prost::Message;

    fn text_of(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Vec<String> {
        match v.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(s)) => vec![s.clone()],
            Some(Any::ArrayValue(a)) => a
                .values
                .iter()
                .flat_map(|v| text_of(&Some(v.clone())))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A request that sends, and a decision that names, more than any
    /// limit: its spans stay within `MAX_REQUEST_SPANS`, each value cut
    /// at a UTF-8 boundary.
    #[test]
    fn a_requests_spans_are_bounded_whatever_it_sent() {
        let (queue, mut rx) = Queue::unexported(16);
        let upstream = UpstreamPeer {
            host: "127.0.0.1".into(),
            port: 8080,
            version: "1.1",
        };
        let shared = Arc::new(Shared::new(queue, upstream));
        // 'a' and then 'é's: byte 256 falls inside a character.
        let agent = format!("a{}", "é".repeat(7_500));
        let state = format!("a={},b={}", "v".repeat(250), "w".repeat(250));
        let req = http::Request::builder()
            .method(http::Method::from_bytes("X".repeat(5_000).as_bytes()).expect("method"))
            .uri("/")
            .header(http::header::HOST, "h".repeat(5_000))
            .header(http::header::USER_AGENT, agent.as_str())
            .header(
                crate::model::trace::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header(crate::model::trace::TRACESTATE, state.as_str())
            .body(())
            .expect("request");
        let long = "p".repeat(5_000);
        let identity = PeerIdentity {
            principal: Principal::CommonName(long.clone()),
            principal_header: http::HeaderValue::from_str(&long).expect("value"),
            xfcc: http::HeaderValue::from_static("x"),
            cert_sha256: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        };
        let conn = ConnInfo::new(identity, "10.0.0.1:4000".parse().expect("addr"), "TLSv1.3");
        let request_id = http::HeaderValue::from_str(&long).expect("value");
        let trace = TraceContext::from_headers(req.headers());
        let mut draft = Box::new(Draft::new(
            &shared,
            &trace,
            [9; 8],
            &req,
            &conn,
            &request_id,
        ));
        draft.upstream_sent();
        draft.upstream_answered(Some(200));
        let outcome = AuthzOutcome {
            product: long.as_str().into(),
            action: Action::Read,
            resource: "r".into(),
            decision: Decision {
                allowed: true,
                policies: (0..100).map(|i| format!("{i}{long}")).collect(),
                errors: Vec::new(),
            },
            shadow: None,
            policy_version: "v".into(),
            throughput: None,
            latency: None,
            fields: None,
        };
        let user = User {
            id: long.clone(),
            issuer: String::new(),
            subject: String::new(),
            groups: Vec::new(),
            scopes: Vec::new(),
            attributes: Vec::new(),
            expires_at: 0,
        };
        let path = format!("/{long}/{long}");
        draft.answered(
            &Answer {
                path: &path,
                route: Some(&long),
                status: Some(200),
                decision: "allow",
                error: None,
                grpc_status: Some(14),
                outcome: Some(&outcome),
                user: Some(&user),
            },
            true,
        );
        draft.end(false);
        let Ok(Item::Spans(bytes, 2)) = rx.try_recv() else {
            panic!("two spans queued");
        };
        assert!(bytes.len() <= MAX_REQUEST_SPANS, "{}", bytes.len());
        let spans = ScopeSpans::decode(&bytes[..]).expect("decodes").spans;
        let server = &spans[0];
        assert!(server.name.len() <= MAX_VALUE, "{}", server.name.len());
        assert_eq!(server.trace_state, state);
        let attr = |name: &str| -> Vec<String> {
            let kv = server.attributes.iter().find(|kv| kv.key == name);
            text_of(&kv.unwrap_or_else(|| panic!("{name}")).value)
        };
        assert_eq!(
            attr("user_agent.original"),
            [&agent[..255]],
            "cut before the 'é' at 255"
        );
        assert_eq!(attr("url.path")[0].len(), MAX_PATH);
        let ids = attr("meshgate.policy_ids");
        assert_eq!(ids.len(), MAX_POLICY_IDS);
        assert!(ids.iter().all(|id| id.len() == MAX_VALUE));
        for name in [
            "http.request.method_original",
            "server.address",
            "meshgate.principal",
            "meshgate.request_id",
            "http.route",
            "meshgate.product",
            "enduser.id",
            "rpc.service",
            "rpc.method",
        ] {
            assert_eq!(attr(name)[0].len(), MAX_VALUE, "{name}");
        }
    }

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("aé", 2), "a");
        assert_eq!(clip("é€", 4), "é");
        assert_eq!(clip("é", 0), "");
    }

    #[test]
    fn a_host_header_is_split_as_an_authority() {
        assert_eq!(
            split_authority("orders.sales:8443"),
            Some(("orders.sales", Some(8443)))
        );
        assert_eq!(split_authority("orders"), Some(("orders", None)));
        assert_eq!(split_authority("[::1]:443"), Some(("[::1]", Some(443))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        for bad in ["", ":80", "a:b", "a:70000", "a b:1", "[::1"] {
            assert_eq!(split_authority(bad), None, "{bad}");
        }
    }
}
