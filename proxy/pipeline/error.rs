//! Every error a request can meet, and the one place that turns it into a response.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::decision::authz::DecideError;
use crate::decision::describe::DescribeError;
use crate::decision::jwt::TokenError;
use crate::pipeline::body::ProxyBody;
use crate::pipeline::grpc::{self, Code};
use crate::transport::upstream::{ClientBodyFault, UpstreamError};

/// nginx's code for a request the client closed before the response.
pub const CLIENT_CLOSED: u16 = 499;
/// The error code of a request the client closed before the response.
pub const CLIENT_CLOSED_REQUEST: &str = "client_closed_request";

/// The error code of a response refused because it violates its contract
/// (conformance under `enforce`).
pub const CONTRACT_VIOLATION: &str = "contract_violation";

/// The error code of a response the response stage refused, before its
/// head (the 502's body) or inside its body (the audit event of the cut
/// stream): `unmaskable_response` when field masking could not make it
/// safe, `contract_violation` when it violates its contract under
/// `enforce`, `response_refused` for another transform.
pub fn refusal_code(e: &crate::model::response::TransformError) -> &'static str {
    if e.transform == crate::pipeline::mask::MASKING {
        "unmaskable_response"
    } else if e.transform == crate::pipeline::mask::conform::CONFORMANCE {
        CONTRACT_VIOLATION
    } else {
        crate::pipeline::body::RESPONSE_REFUSED
    }
}

/// The error code of an upstream's error or redirect whose body was
/// withheld: it could not be masked ([`ProxyError::Withheld`]).
pub const BODY_WITHHELD: &str = "body_withheld";

/// The error code of an upstream that reset or closed the connection
/// mid-request, or mid-body once its response had begun (the span's
/// `error.type`).
pub const UPSTREAM_FAILED: &str = "upstream_failed";

fn client_closed() -> StatusCode {
    StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request target not supported: {0}")]
    BadRequest(&'static str),
    /// The declared purpose cannot be read: sent twice, empty or not
    /// printable ASCII.
    #[error("{0}")]
    BadPurpose(DecideError),
    #[error("path refused: {0}")]
    BadPath(#[from] crate::model::path::PathError),
    /// A gRPC call's `grpc-timeout` cannot be read.
    #[error("grpc-timeout is not 1 to 8 digits and a unit (H, M, S, m, u, n), or is sent twice")]
    BadGrpcTimeout,
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("end-user token refused: {0}")]
    Unauthorized(crate::decision::jwt::TokenError),
    #[error("denied by policy")]
    Forbidden,
    /// Denied by policy, answered as an unknown path: a well-known
    /// document about a product or contract the caller may not describe
    /// (a 403 would tell that it exists). Counted and audited as `deny`.
    #[error("denied by policy (answered as no route)")]
    Concealed,
    /// The product version is retired or past its end of life; the
    /// version that replaces it, when its contract names one.
    #[error("the product version is retired")]
    Gone(Option<String>),
    #[error("over quota (tier {tier}); retry after {1} s", tier = .0.tier)]
    TooManyRequests(crate::decision::quota::QuotaState, u64),
    #[error("overloaded: too many requests in flight ({0})")]
    Overloaded(&'static str),
    #[error("the quota store does not answer (failure mode deny)")]
    QuotaUnavailable,
    #[error("the audit trail cannot take the request's event (when_full: block)")]
    AuditUnavailable,
    #[error("upstream refused the connection")]
    UpstreamUnavailable,
    #[error("upstream failed: {0}")]
    UpstreamFailed(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    /// The client's request body failed while it was forwarded: malformed
    /// framing (400), the client gone mid-body (499), or stalled until the
    /// upstream's response timed out (408). The client's fault, never the
    /// upstream's.
    #[error("the request body failed: {}", match .0 {
        ClientBodyFault::Malformed => "malformed framing",
        ClientBodyFault::Gone => "the client went away mid-body",
        ClientBodyFault::Stalled => "the client stopped sending it before the upstream's response timed out",
    })]
    ClientBody(ClientBodyFault),
    /// The response stage could not make the upstream's response fit to
    /// pass on (fail closed: nothing of it is sent).
    #[error("response refused by the response stage: {0}")]
    ResponseRefused(#[from] crate::model::response::TransformError),
    /// The upstream's error or redirect, on a route whose field plan hides
    /// something, has a body masking cannot read (HTML, text: a debug
    /// page may echo a record): its status and head (marked by the
    /// response stage) are answered, with the sidecar's own body.
    #[error("the upstream's {} answer has a body field masking cannot read: withheld", .0.status)]
    Withheld(Box<http::response::Parts>),
    /// The sidecar could not write a document it answers itself (a
    /// well-known descriptor).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadPurpose(_)
            | ProxyError::BadPath(_)
            | ProxyError::BadGrpcTimeout => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute | ProxyError::Concealed => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Gone(_) => StatusCode::GONE,
            ProxyError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded(_)
            | ProxyError::QuotaUnavailable
            | ProxyError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamFailed(_)
            | ProxyError::ResponseRefused(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Withheld(head) => head.status,
            ProxyError::ClientBody(ClientBodyFault::Malformed) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBody(ClientBodyFault::Gone) => client_closed(),
            ProxyError::ClientBody(ClientBodyFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error's own reason, for the audit event: a refused token's.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            ProxyError::Unauthorized(e) => Some(e.reason()),
            ProxyError::Concealed => Some("forbidden"),
            _ => None,
        }
    }

    /// The stable, machine-readable error code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadPurpose(_) => "bad_request",
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::BadGrpcTimeout => "bad_grpc_timeout",
            ProxyError::NoRoute | ProxyError::Concealed => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::Unauthorized(_) => "invalid_token",
            ProxyError::Forbidden => "forbidden",
            ProxyError::Gone(_) => "gone",
            ProxyError::TooManyRequests(..) => "quota_exceeded",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::QuotaUnavailable => "quota_unavailable",
            ProxyError::AuditUnavailable => "audit_unavailable",
            ProxyError::UpstreamUnavailable => "upstream_unavailable",
            ProxyError::UpstreamFailed(_) => UPSTREAM_FAILED,
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::ClientBody(ClientBodyFault::Malformed) => "bad_request_body",
            ProxyError::ClientBody(ClientBodyFault::Gone) => CLIENT_CLOSED_REQUEST,
            ProxyError::ClientBody(ClientBodyFault::Stalled) => "request_body_timeout",
            ProxyError::ResponseRefused(e) => refusal_code(e),
            ProxyError::Withheld(_) => BODY_WITHHELD,
            ProxyError::Internal(_) => "internal_error",
        }
    }

    /// The decision a refused or failed request is counted and audited under:
    /// `deny` (policy), `unauthenticated` (end-user token), `rate_limited`
    /// (quota), `shed` (in-flight limits, quota store or audit unavailable),
    /// `no_route`, `invalid` (the request itself), `retired` (410: the product
    /// version is past its end of life), or `allow` when the request
    /// was allowed and the upstream failed it, or its own body did.
    pub fn decision(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadPurpose(_)
            | ProxyError::BadPath(_)
            | ProxyError::BadGrpcTimeout => "invalid",
            ProxyError::NoRoute | ProxyError::MethodNotAllowed => "no_route",
            ProxyError::Unauthorized(_) => "unauthenticated",
            ProxyError::Forbidden | ProxyError::Concealed => "deny",
            ProxyError::Gone(_) => "retired",
            ProxyError::TooManyRequests(..) => "rate_limited",
            ProxyError::Overloaded(_)
            | ProxyError::QuotaUnavailable
            | ProxyError::AuditUnavailable => "shed",
            ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamFailed(_)
            | ProxyError::UpstreamTimeout
            | ProxyError::ClientBody(_)
            | ProxyError::ResponseRefused(_)
            | ProxyError::Withheld(_)
            | ProxyError::Internal(_) => "allow",
        }
    }

    /// The status a gRPC call refused or failed with this error ends with
    /// (README, "gRPC"). gRPC's own HTTP-to-gRPC table is for clients that
    /// got no `grpc-status`; the sidecar always sends one, the code that
    /// says what happened: a policy denial is PERMISSION_DENIED (not the
    /// table's UNKNOWN for a 403's neighbours), a quota RESOURCE_EXHAUSTED
    /// (not UNAVAILABLE, which clients retry at once), an upstream timeout
    /// DEADLINE_EXCEEDED. What the client sent wrong is INVALID_ARGUMENT;
    /// a broken framing or `grpc-timeout` is INTERNAL, as gRPC's own
    /// servers answer a malformed request (grpc-go: "malformed
    /// grpc-timeout" is INTERNAL).
    pub fn grpc_code(&self) -> Code {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadPurpose(_) | ProxyError::BadPath(_) => {
                Code::InvalidArgument
            }
            ProxyError::BadGrpcTimeout | ProxyError::ClientBody(ClientBodyFault::Malformed) => {
                Code::Internal
            }
            ProxyError::NoRoute | ProxyError::MethodNotAllowed | ProxyError::Concealed => {
                Code::Unimplemented
            }
            ProxyError::Unauthorized(_) => Code::Unauthenticated,
            ProxyError::Forbidden => Code::PermissionDenied,
            ProxyError::Gone(_) => Code::NotFound,
            ProxyError::TooManyRequests(..) => Code::ResourceExhausted,
            ProxyError::Overloaded(_)
            | ProxyError::QuotaUnavailable
            | ProxyError::AuditUnavailable
            | ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamFailed(_) => Code::Unavailable,
            // A stalled request stream also ran out of its time.
            ProxyError::UpstreamTimeout | ProxyError::ClientBody(ClientBodyFault::Stalled) => {
                Code::DeadlineExceeded
            }
            ProxyError::ClientBody(ClientBodyFault::Gone) => Code::Cancelled,
            ProxyError::ResponseRefused(_) | ProxyError::Withheld(_) | ProxyError::Internal(_) => {
                Code::Internal
            }
        }
    }

    /// The response. For HTTP, a small JSON object with the error code and
    /// the request id; for a gRPC call (`grpc`), a trailers-only response
    /// whose `grpc-message` says the same. Details stay in the logs; the
    /// advice headers (`Retry-After`, `RateLimit`, `Link`,
    /// `WWW-Authenticate`) are sent either way, as gRPC metadata for a call.
    pub fn to_response(&self, request_id: &HeaderValue, grpc: bool) -> Response<ProxyBody> {
        let id = request_id.to_str().unwrap_or("");
        let mut resp = if grpc {
            grpc::trailers_only(
                self.grpc_code(),
                &format!("meshgate: {} (request id {id})", self.code()),
            )
        } else {
            self.json_response(id)
        };
        let h = resp.headers_mut();
        if let ProxyError::Withheld(head) = self {
            keep_the_head(h, &head.headers);
        }
        h.insert("x-request-id", super::ids::unindexed(request_id));
        self.advice_headers(h);
        resp
    }

    fn json_response(&self, request_id: &str) -> Response<ProxyBody> {
        let mut body = serde_json::json!({
            "error": self.code(),
            "request_id": request_id,
        });
        if let ProxyError::Gone(Some(successor)) = self {
            body["successor"] = serde_json::Value::String(successor.clone());
        }
        let body = body.to_string();
        let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    /// What the client may do next: when to come back, its quota, the
    /// successor of a retired version, the token challenge.
    fn advice_headers(&self, h: &mut http::HeaderMap) {
        if let ProxyError::Overloaded(_)
        | ProxyError::QuotaUnavailable
        | ProxyError::AuditUnavailable = self
        {
            // Shed at once; in-flight requests finish in milliseconds to seconds.
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ProxyError::TooManyRequests(state, retry_after) = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            state.set_headers(h);
        }
        if let ProxyError::Gone(Some(successor)) = self {
            // Checked to be a URI reference when the contract was read.
            if let Ok(v) =
                HeaderValue::from_str(&format!("<{successor}>; rel=\"successor-version\""))
            {
                h.insert(header::LINK, v);
            }
        }
        if let ProxyError::Unauthorized(e) = self {
            // RFC 6750: the description is our own text, never the token.
            let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{e}\"");
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
    }
}

/// The upstream's head of a withheld answer, on the sidecar's own: all
/// but what described the upstream's body (its type, length, coding,
/// language, …): a redirect keeps its `Location`, a 503 its
/// `Retry-After`, a 401 its challenge.
fn keep_the_head(ours: &mut http::HeaderMap, upstream: &http::HeaderMap) {
    for (name, value) in upstream {
        if !name.as_str().starts_with("content-") {
            ours.append(name, value.clone());
        }
    }
}

/// The decision layer's refusals, as the errors they answer with.
impl From<DecideError> for ProxyError {
    fn from(e: DecideError) -> ProxyError {
        match e {
            DecideError::NoRoute => ProxyError::NoRoute,
            DecideError::MethodNotAllowed => ProxyError::MethodNotAllowed,
            DecideError::UserTokenMissing => ProxyError::Unauthorized(TokenError::Missing),
            DecideError::DuplicatePurpose
            | DecideError::InvalidPurpose
            | DecideError::HopByHopPurpose => ProxyError::BadPurpose(e),
        }
    }
}

/// A well-known path that names nothing is a 404 like any unrouted path.
impl From<DescribeError> for ProxyError {
    fn from(e: DescribeError) -> ProxyError {
        match e {
            DescribeError::Unknown => ProxyError::NoRoute,
            DescribeError::Render(why) => ProxyError::Internal(why),
        }
    }
}

/// The upstream's failures, as the errors they answer with.
impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> ProxyError {
        match e {
            UpstreamError::BadTarget => ProxyError::BadRequest("request target"),
            UpstreamError::Unavailable => ProxyError::UpstreamUnavailable,
            UpstreamError::Failed(detail) => ProxyError::UpstreamFailed(detail),
            UpstreamError::Timeout => ProxyError::UpstreamTimeout,
            UpstreamError::ClientBody(fault) => ProxyError::ClientBody(fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_request_body_is_the_clients_fault_never_an_upstream_failure() {
        let malformed = ProxyError::from(UpstreamError::ClientBody(ClientBodyFault::Malformed));
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        assert_eq!(malformed.code(), "bad_request_body");
        assert_eq!(malformed.decision(), "allow");
        let gone = ProxyError::from(UpstreamError::ClientBody(ClientBodyFault::Gone));
        assert_eq!(gone.status().as_u16(), 499);
        assert_eq!(gone.code(), "client_closed_request");
        assert_eq!(gone.decision(), "allow");
        let stalled = ProxyError::from(UpstreamError::ClientBody(ClientBodyFault::Stalled));
        assert_eq!(stalled.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(stalled.code(), "request_body_timeout");
        assert_eq!(stalled.decision(), "allow");
    }

    #[test]
    fn a_purpose_that_cannot_be_read_is_a_400_whose_message_names_the_header() {
        for e in [
            DecideError::DuplicatePurpose,
            DecideError::InvalidPurpose,
            DecideError::HopByHopPurpose,
        ] {
            let p = ProxyError::from(e);
            assert_eq!(p.status(), StatusCode::BAD_REQUEST);
            assert_eq!(p.code(), "bad_request");
            assert_eq!(p.decision(), "invalid");
            let message = p.to_string();
            assert!(message.contains("x-data-purpose"), "{message}");
            assert!(!message.contains("request target"), "{message}");
        }
    }

    #[test]
    fn a_refused_grpc_call_is_a_trailers_only_200_with_its_status_and_the_advice_as_metadata() {
        use crate::pipeline::grpc::{GRPC_MESSAGE, GRPC_STATUS};
        let id = HeaderValue::from_static("req-1");
        let cases: [(ProxyError, &str); 12] = [
            (ProxyError::Forbidden, "7"),
            (ProxyError::Unauthorized(TokenError::Missing), "16"),
            (ProxyError::NoRoute, "12"),
            (ProxyError::MethodNotAllowed, "12"),
            (ProxyError::BadRequest("request target"), "3"),
            (ProxyError::BadGrpcTimeout, "13"),
            (ProxyError::Overloaded("global"), "14"),
            (ProxyError::UpstreamUnavailable, "14"),
            (ProxyError::UpstreamFailed("reset".into()), "14"),
            (ProxyError::UpstreamTimeout, "4"),
            (ProxyError::ClientBody(ClientBodyFault::Gone), "1"),
            (ProxyError::Gone(Some("/v2".into())), "5"),
        ];
        for (e, status) in cases {
            let resp = e.to_response(&id, true);
            assert_eq!(resp.status(), StatusCode::OK, "{e}");
            let h = resp.headers();
            assert_eq!(h[GRPC_STATUS], status, "{e}");
            assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
            assert_eq!(h["x-request-id"], "req-1");
            let message = h[GRPC_MESSAGE].to_str().unwrap();
            assert_eq!(
                message,
                format!("meshgate: {} (request id req-1)", e.code()),
                "the code and the request id, nothing of the details"
            );
        }
        let gone = ProxyError::Gone(Some("/v2".into())).to_response(&id, true);
        assert_eq!(
            gone.headers()[header::LINK],
            "</v2>; rel=\"successor-version\""
        );
        let challenge = ProxyError::Unauthorized(TokenError::Missing).to_response(&id, true);
        assert!(challenge.headers().contains_key(header::WWW_AUTHENTICATE));
        let shed = ProxyError::Overloaded("global").to_response(&id, true);
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        // The same errors answer HTTP clients as before.
        let http = ProxyError::Forbidden.to_response(&id, false);
        assert_eq!(http.status(), StatusCode::FORBIDDEN);
        assert_eq!(http.headers()[header::CONTENT_TYPE], "application/json");
        assert!(!http.headers().contains_key(GRPC_STATUS));
    }
}
