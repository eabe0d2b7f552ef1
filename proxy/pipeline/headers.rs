//! Header hygiene between client and upstream: hop-by-hop headers go
//! (RFC 9110 §7.6.1), and every client-supplied copy of the headers only
//! meshgate may set, before the verified ones are set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_MESHGATE_PRINCIPAL: HeaderName = HeaderName::from_static("x-meshgate-principal");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1) removed whatever `Connection`
/// names, besides `Connection` itself and `TE` (kept as `TE: trailers`).
static HOP_BY_HOP: [HeaderName; 7] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The header names a message's `Connection` header lists: hop-by-hop,
/// removed on the way.
pub fn named_in_connection(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `TE: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names instead of a
    // lookup per hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // A chunked message's length is its chunks': a Content-Length beside
    // Transfer-Encoding is wrong, and an intermediary drops it (RFC 9112
    // 6.3). Kept on a response, "0" had made the masking stage take a body
    // with records for an empty one.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = named_in_connection(headers).collect();
        for name in named {
            if name != header::TE {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    for name in &HOP_BY_HOP {
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
/// (Matched by its text: read for every header of every message, and
/// `HOP_BY_HOP.contains` made and dropped a copy of the array each time.)
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes every header named in `names` (lowercase, as `HeaderName`s are).
pub fn remove_named(headers: &mut HeaderMap, names: &[&str]) {
    // The names' lengths as bits: most headers present have a length none
    // of the names has, and are passed over without comparing them to each.
    let bit = |len: usize| 1u64.checked_shl(u32::try_from(len).unwrap_or(u32::MAX));
    let (lengths, long) = names
        .iter()
        .fold((0u64, false), |(bits, long), n| match bit(n.len()) {
            Some(b) => (bits | b, long),
            None => (bits, true),
        });
    remove_where(headers, |name| {
        let maybe = bit(name.len()).map_or(long, |b| lengths & b != 0);
        maybe && names.contains(&name)
    });
}

/// Removes every header (every copy) whose name `matches`: one pass over
/// the names present, then a removal for each one found, instead of a
/// lookup per name. The first few found are kept on the stack (a rewritten
/// response loses one or two: nothing is allocated); past them, a second
/// pass collects the rest.
pub fn remove_where(headers: &mut HeaderMap, mut matches: impl FnMut(&str) -> bool) {
    const FEW: usize = 4;
    let mut few: [Option<HeaderName>; FEW] = [const { None }; FEW];
    let (mut n, mut more) = (0, false);
    for name in headers.keys().filter(|k| matches(k.as_str())) {
        match few.get_mut(n) {
            Some(slot) => *slot = Some(name.clone()),
            None => {
                more = true;
                break;
            }
        }
        n += 1;
    }
    for name in few.iter().flatten() {
        headers.remove(name);
    }
    if more {
        let rest: Vec<HeaderName> = headers
            .keys()
            .filter(|k| matches(k.as_str()))
            .cloned()
            .collect();
        for name in rest {
            headers.remove(name);
        }
    }
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
///
/// The declared purpose spelt with `_` (`x_data_purpose`) goes too: the
/// decision reads `x-data-purpose` only, and a CGI-style server would read
/// either as its purpose.
fn set_by_meshgate(name: &str) -> bool {
    let is_ours = |n: &str| n.starts_with("x-meshgate-") || SET_BY_MESHGATE.contains(&n);
    is_ours(name)
        || (name.contains('_') && {
            let folded = name.replace('_', "-");
            is_ours(&folded) || folded == crate::decision::authz::X_DATA_PURPOSE
        })
}

/// Removes every client-supplied copy of the headers only meshgate may set
/// (the verified ones are set after this).
pub fn strip_identity_headers(headers: &mut HeaderMap) {
    remove_where(headers, set_by_meshgate);
}

/// Removes what an upstream's response may not say for meshgate:
/// `x-meshgate-*` names, and, on a route of a contract (`contract`), the
/// lifecycle it announces (`Deprecation`, `Sunset`): the contract's, set by
/// the response stage, not the product server's (which had a retired-looking
/// `Deprecation` reach the clients of an active version).
pub fn strip_upstream_claims(headers: &mut HeaderMap, contract: bool) {
    remove_where(headers, |name| {
        name.starts_with("x-meshgate-") || (contract && matches!(name, "deprecation" | "sunset"))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_says_nothing_in_meshgates_name() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-meshgate-principal", "spiffe://forged"),
            ("deprecation", "@1"),
            ("sunset", "Wed, 11 Nov 2026 11:11:11 GMT"),
            ("link", "</next>; rel=\"next\""),
            ("content-type", "application/json"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut routed = h.clone();
        strip_upstream_claims(&mut routed, true);
        let mut left: Vec<&str> = routed.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "link"]);
        // Without a contract the lifecycle headers are the server's own.
        strip_upstream_claims(&mut h, false);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "deprecation", "link", "sunset"]);
    }

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
    fn named_headers_go_with_every_copy_and_the_rest_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        h.append("digest", HeaderValue::from_static("sha-256=a"));
        h.append("digest", HeaderValue::from_static("md5=b"));
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert("x-etag", HeaderValue::from_static("kept"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        remove_named(&mut h, &["content-length", "etag", "digest", "repr-digest"]);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["content-type", "x-etag"]);
        let mut none = h.clone();
        remove_named(&mut none, &[]);
        assert_eq!(none, h);
    }

    #[test]
    fn names_past_the_length_bits_and_of_a_shared_length_are_told_apart() {
        let long = "x-".repeat(40) + "long";
        let longer = long.clone() + "er";
        let mut h = HeaderMap::new();
        for name in [&*long, &*longer, "x-a", "x-b", "x-etag", "etag"] {
            let name = HeaderName::try_from(name).expect("a header name");
            h.insert(name, HeaderValue::from_static("v"));
        }
        remove_named(&mut h, &[&long, "x-a", "etag"]);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["x-b", "x-etag", &*longer]);
    }

    #[test]
    fn more_matches_than_the_few_kept_on_the_stack_all_go() {
        let mut h = HeaderMap::new();
        for i in 0..9 {
            let gone = HeaderName::try_from(format!("x-gone-{i}")).expect("a header name");
            h.append(gone.clone(), HeaderValue::from_static("a"));
            h.append(gone, HeaderValue::from_static("b"));
            let kept = HeaderName::try_from(format!("x-kept-{i}")).expect("a header name");
            h.insert(kept, HeaderValue::from_static("c"));
        }
        remove_where(&mut h, |name| name.starts_with("x-gone-"));
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        let kept: Vec<String> = (0..9).map(|i| format!("x-kept-{i}")).collect();
        assert_eq!(names, kept);
        assert_eq!(h.len(), 9);
    }

    #[test]
    fn the_names_matched_are_the_names_removed() {
        for name in HOP_BY_HOP.iter().chain([&header::CONNECTION, &header::TE]) {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [header::CONTENT_TYPE, X_REQUEST_ID, header::TRAILER] {
            assert_eq!(is_hop_by_hop(&name), name == header::TRAILER, "{name}");
        }
    }

    #[test]
    fn a_content_length_beside_transfer_encoding_goes_with_it() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
        // Alone, a Content-Length stays.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
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
            "x_data_purpose",
            "X_Data-Purpose",
        ] {
            h.append(name, HeaderValue::from_static("spoofed"));
        }
        // The purpose as the decision reads it stays.
        h.append("x-data-purpose", HeaderValue::from_static("reporting"));
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
        assert_eq!(left, vec!["x-data-purpose", "x-other", "x_other"]);
    }
}
