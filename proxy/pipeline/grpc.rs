//! gRPC on the request path: which requests are gRPC calls, their
//! deadline (`grpc-timeout`), the trailers-only answer a refusal becomes,
//! and the status a forwarded call ends with (for metrics and the audit
//! event). Which status a refusal gets is chosen with its HTTP status, in
//! `error.rs`; this file only speaks the wire format (gRPC over HTTP/2,
//! "PROTOCOL-HTTP2" of the gRPC repository).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::observe::metrics::GrpcStatuses;
use crate::pipeline::body::ProxyBody;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The gRPC status codes a call can end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// Its number on the wire.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The code whose number `s` is (`grpc-status`); `None` for anything
    /// else, which clients read as UNKNOWN.
    pub fn parse(s: &[u8]) -> Option<Code> {
        let n: usize = std::str::from_utf8(s).ok()?.parse().ok()?;
        Code::ALL.get(n).copied()
    }

    /// The name gRPC gives it: the label value of
    /// `meshgate_grpc_requests_total`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// Whether a request is a gRPC call: `content-type` `application/grpc`,
/// alone or with a subtype (`application/grpc+proto`, `+json`, …) or
/// parameters. gRPC-Web (`application/grpc-web…`) is not: its status
/// travels in the body, and it is answered like any HTTP request.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let prefix = b"application/grpc";
    ct.len() >= prefix.len()
        && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(ct.get(prefix.len()), None | Some(b'+' | b';'))
}

/// A `grpc-timeout` that is not 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), or is sent twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimeout;

/// One gRPC call on its way through the sidecar.
#[derive(Debug, Default, Clone, Copy)]
pub struct GrpcCall {
    /// The client's deadline, from when the request arrived.
    pub timeout: Option<Duration>,
}

impl GrpcCall {
    /// Reads the call's `grpc-timeout`, when it has one.
    pub fn read(headers: &HeaderMap) -> Result<GrpcCall, BadTimeout> {
        let mut values = headers.get_all(GRPC_TIMEOUT).iter();
        let timeout = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(v), None) => Some(parse_timeout(v.as_bytes()).ok_or(BadTimeout)?),
            (Some(_), Some(_)) => return Err(BadTimeout),
        };
        Ok(GrpcCall { timeout })
    }

    /// The client's deadline, for a call that reached the sidecar at
    /// `started`: the upstream's response headers are waited for until
    /// then at the latest, however the request body progresses.
    pub fn deadline(&self, started: Instant) -> Option<Instant> {
        self.timeout.map(|t| started + t)
    }

    /// The `grpc-timeout` sent upstream: what is left of the client's
    /// deadline after the time `spent` in the sidecar, so that the product's
    /// server gives up when the client does.
    pub fn forward(&self, headers: &mut HeaderMap, spent: Duration) {
        if let Some(t) = self.timeout {
            headers.insert(GRPC_TIMEOUT, encode_timeout(t.saturating_sub(spent)));
        }
    }
}

/// `TimeoutValue TimeoutUnit`: at most 8 ASCII digits, then one of
/// `H M S m u n`.
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The finest unit in which `t` fits 8 digits (rounded down; a deadline
/// is never lengthened).
fn encode_timeout(t: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = t.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    let (n, unit) = units
        .iter()
        .map(|(per, unit)| (nanos / per, *unit))
        .find(|(n, _)| *n <= MAX)
        .unwrap_or((MAX, "H"));
    HeaderValue::from_str(&format!("{n}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// `grpc-message`: percent-encoded, every byte outside printable ASCII
/// (0x20 to 0x7E) and `%` itself as `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A trailers-only response: HTTP 200, `content-type: application/grpc`,
/// the status and message in the one header block, no body. The message
/// is percent-encoded.
pub fn trailers_only(code: Code, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS, HeaderValue::from(u16::from(code.number())));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert(GRPC_MESSAGE, v);
    }
    resp
}

/// The status in a header block (a trailers-only response's headers, or
/// trailers); a value that is not a code counts as UNKNOWN, as clients
/// read it.
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|v| Code::parse(v.as_bytes()).unwrap_or(Code::Unknown))
}

/// Counts the status a forwarded call ends with, from its trailers, in
/// `meshgate_grpc_requests_total`; the body hands it the trailers.
pub struct GrpcEnd {
    pub statuses: GrpcStatuses,
    pub product: Option<Arc<str>>,
}

impl GrpcEnd {
    /// The call's status in `trailers`, counted.
    pub fn trailers(&self, trailers: &HeaderMap) -> Option<Code> {
        let code = status_in(trailers)?;
        self.statuses.count(self.product.as_ref(), code.name());
        Some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn grpc_content_types_and_only_those_are_grpc_calls() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpcx",
            "application/json",
            "text/grpc",
        ] {
            assert!(!is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_is_up_to_eight_digits_and_a_unit() {
        let read = |v: &'static str| GrpcCall::read(&headers(&[("grpc-timeout", v)]));
        assert_eq!(read("1H").unwrap().timeout, Some(Duration::from_secs(3600)));
        assert_eq!(read("2M").unwrap().timeout, Some(Duration::from_secs(120)));
        assert_eq!(read("3S").unwrap().timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            read("250m").unwrap().timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            read("99999999u").unwrap().timeout,
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(read("0n").unwrap().timeout, Some(Duration::ZERO));
        for bad in [
            "",
            "m",
            "10",
            "123456789m",
            "1.5S",
            "-1S",
            "10s",
            "1 S",
            "+1S",
        ] {
            assert_eq!(read(bad).map(|c| c.timeout), Err(BadTimeout), "{bad:?}");
        }
        let twice = headers(&[("grpc-timeout", "1S"), ("grpc-timeout", "1S")]);
        assert_eq!(GrpcCall::read(&twice).map(|c| c.timeout), Err(BadTimeout));
        assert_eq!(GrpcCall::read(&HeaderMap::new()).unwrap().timeout, None);
    }

    #[test]
    fn the_deadline_bounds_the_upstream_wait_and_is_forwarded_less_the_time_spent() {
        let call = GrpcCall {
            timeout: Some(Duration::from_millis(500)),
        };
        let ms = Duration::from_millis;
        let started = Instant::now();
        assert_eq!(call.deadline(started), Some(started + ms(500)));
        assert_eq!(GrpcCall::default().deadline(started), None);
        let mut h = HeaderMap::new();
        call.forward(&mut h, ms(20));
        assert_eq!(h[GRPC_TIMEOUT], "480000u");
        let long = GrpcCall {
            timeout: Some(Duration::from_secs(3 * 3600)),
        };
        long.forward(&mut h, Duration::ZERO);
        assert_eq!(h[GRPC_TIMEOUT], "10800000m");
        GrpcCall::default().forward(&mut h, Duration::ZERO);
        assert_eq!(h.get_all(GRPC_TIMEOUT).iter().count(), 1);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("denied: ok"), "denied: ok");
        assert_eq!(percent_encode("100% sure"), "100%25 sure");
        assert_eq!(percent_encode("a\nb"), "a%0Ab");
        assert_eq!(percent_encode("caf\u{e9}"), "caf%C3%A9");
    }

    #[test]
    fn a_trailers_only_response_is_a_200_with_the_status_and_no_body() {
        use http_body::Body;
        let resp = trailers_only(Code::PermissionDenied, "denied (request id 1%)");
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(h[GRPC_STATUS], "7");
        assert_eq!(h[GRPC_MESSAGE], "denied (request id 1%25)");
        assert!(resp.body().is_end_stream());
        assert_eq!(status_in(h), Some(Code::PermissionDenied));
        assert_eq!(
            status_in(&headers(&[("grpc-status", "99")])),
            Some(Code::Unknown)
        );
        assert_eq!(Code::parse(b"16"), Some(Code::Unauthenticated));
        assert_eq!(Code::parse(b"-1"), None);
    }
}
