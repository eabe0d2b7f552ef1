//! The response stage: the route's transform (lifecycle headers, field
//! masking) on the upstream's response, then the consumer's `RateLimit`
//! headers; and, before forwarding, what a request whose response will be
//! rewritten must not ask for.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, Version};

use crate::decision::quota;
use crate::model::response::{Audience, ResponseTransform, Shaped};
use crate::pipeline::body::ProxyBody;
use crate::pipeline::error::ProxyError;
use crate::pipeline::headers::{remove_named, remove_where};

/// What describes the upstream's bytes, untrue of a rewritten body: its
/// length, validator, range support and digests.
const DESCRIBE_THE_BYTES: [&str; 7] = [
    "content-length",
    "etag",
    "accept-ranges",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// What a request asks of the upstream's bytes: a part of them, or an
/// answer that depends on them (a 304 or 412 to a guessed validator tells
/// whether the guess matched the whole, unmasked body).
const ASK_OF_THE_BYTES: [&str; 6] = [
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// A request whose response body will be rewritten asks for the whole
/// body, as it is (no range, no condition on the upstream's validators,
/// no compression the transform cannot read).
pub(super) fn ask_for_the_whole_body(headers: &mut HeaderMap) {
    remove_named(headers, &ASK_OF_THE_BYTES);
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// The response stage: the route's transform, when it has one, sees the
/// head and may rewrite the body as it streams (a refusal here is a 502,
/// nothing of the upstream's response is sent) or withhold it (the
/// status and head are answered with the sidecar's own body, by
/// `ProxyError::Withheld`); every answer of a route whose answers depend
/// on the caller is marked so ([`mark_for`]); then the consumer's
/// `RateLimit` headers, in place of any the upstream sent. A route without
/// a transform costs one branch.
///
/// A transform that looks ahead (contract conformance under `enforce`)
/// reads the body's first record before the head goes, within
/// `look_ahead` and [`LOOK_AHEAD_LIMIT`](crate::pipeline::body::LOOK_AHEAD_LIMIT)
/// bytes: a violation there is a 502, not a cut transfer. The violations
/// of a response refused here are left in `violations` for its audit event.
pub(super) async fn response_stage(
    resp: Response<ProxyBody>,
    request: (&Method, Version),
    admission: Option<&quota::Admitted>,
    transform: Option<Arc<dyn ResponseTransform>>,
    look_ahead: std::time::Duration,
    violations: &mut crate::model::conformance::Kinds,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut resp = match transform {
        None => resp,
        Some(t) => {
            let (mut head, mut body) = resp.into_parts();
            let shaped = t.head(&mut head)?;
            let audience = t.audience();
            // Every answer of the route, whatever its status or body.
            mark_for(audience, &mut head.headers);
            match shaped {
                Shaped::Passed => {}
                Shaped::Withheld => {
                    rate_limit_headers(&mut head.headers, admission);
                    return Err(ProxyError::Withheld(Box::new(head)));
                }
                Shaped::Rewritten(rewrite) => {
                    let verbatim = rewrite.verbatim();
                    // Said of the bytes the upstream would have sent, even
                    // where none are (HEAD): untrue of the rewritten ones.
                    if !verbatim && audience != Audience::Masked {
                        forget_the_bytes(&mut head.headers);
                        keep_private(&mut head.headers);
                    }
                    // HEAD, 204 and 304 have no body to rewrite (RFC 9110 6.4.1).
                    let bodiless = request.0 == Method::HEAD
                        || matches!(head.status.as_u16(), 204 | 304)
                        || head.status.is_informational();
                    if !bodiless {
                        let ahead = rewrite.look_ahead();
                        if !verbatim {
                            prepare_rewrite(&mut head, request.1)?;
                        } else if ahead
                            && request.1 < Version::HTTP_11
                            && !head.headers.contains_key(header::CONTENT_LENGTH)
                        {
                            // A watch that enforces may cut the body, which an
                            // HTTP/1.0 client reading to the connection's end
                            // would take for all of it (with a Content-Length,
                            // a cut is short of it).
                            return Err(refused_for_http_1_0());
                        }
                        body.rewrite(rewrite);
                        if ahead {
                            let read = tokio::time::timeout(look_ahead, body.look_ahead()).await;
                            // Past the bound the head goes: the rest is still
                            // checked as it streams.
                            if let Ok(Err(e)) = read {
                                *violations = body.violations();
                                return Err(e.into());
                            }
                        }
                    }
                }
            }
            Response::from_parts(head, body)
        }
    };
    rate_limit_headers(resp.headers_mut(), admission);
    Ok(resp)
}

/// Under a quota the `RateLimit` headers are the quota's, never the
/// upstream's. (The in-flight places go with the body: `ProxyBody::hold`.)
fn rate_limit_headers(headers: &mut HeaderMap, admission: Option<&quota::Admitted>) {
    if let Some(a) = admission {
        match &a.state {
            Some(state) => state.set_headers(headers),
            None if a.metered => quota::QuotaState::remove_headers(headers),
            None => {}
        }
    }
}

/// The head of every answer of a route whose answers depend on the
/// caller: kept from shared caches and varying by what a field plan
/// reads; on a masked route, without what describes the upstream's bytes
/// (an unsolicited 304's `ETag` is the unmasked body's).
fn mark_for(audience: Audience, headers: &mut HeaderMap) {
    match audience {
        Audience::Anyone => return,
        Audience::Caller => {}
        Audience::Masked => forget_the_bytes(headers),
    }
    keep_private(headers);
    vary_by_caller(headers);
}

/// What a field plan reads from the request besides the client's
/// certificate (which `Vary` cannot name): the end user's token and the
/// declared purpose.
const VARY_BY_CALLER: &str = "Authorization, X-Data-Purpose";

/// `Vary` names the request headers a field plan reads, beside those the
/// upstream named (one field; `*` stays `*`): a private cache that holds
/// answers for several users or purposes does not give one's to another.
fn vary_by_caller(headers: &mut HeaderMap) {
    if !headers.contains_key(header::VARY) {
        headers.insert(header::VARY, HeaderValue::from_static(VARY_BY_CALLER));
        return;
    }
    let mut names: Vec<String> = Vec::new();
    let mut any = false;
    let mut add = |name: &str| {
        any |= name == "*";
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    };
    for v in headers.get_all(header::VARY) {
        // A value that is not text cannot be read: dropped.
        let Ok(text) = v.to_str() else { continue };
        text.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .for_each(&mut add);
    }
    VARY_BY_CALLER.split(", ").for_each(&mut add);
    let value = match any {
        true => HeaderValue::from_static("*"),
        false => HeaderValue::from_str(&names.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(VARY_BY_CALLER)),
    };
    // One field, in place of every one there was.
    headers.insert(header::VARY, value);
}

fn refused_for_http_1_0() -> ProxyError {
    ProxyError::ResponseRefused(crate::model::response::TransformError {
        transform: "response stage",
        reason: "an HTTP/1.0 client cannot tell a rewritten body's end from a cut".into(),
    })
}

/// A rewritten body is one caller's view (its plan follows the principal,
/// the end user and the purpose): no shared cache may store it and give it
/// to another caller. `public` and `s-maxage` go, `private` comes (RFC 9111
/// 5.2.2.7), other directives stay; a response without `Cache-Control`
/// gets `private` too (a shared cache may otherwise store it by heuristic).
/// (A quoted directive value holding a comma is split there: its pieces
/// stay, only `public` and `s-maxage` names go.)
fn keep_private(headers: &mut HeaderMap) {
    // Fields for shared caches only, which they obey over Cache-Control
    // (RFC 9213's `CDN-Cache-Control` and its vendor forms, and
    // `Surrogate-Control`): gone. Most responses carry none.
    remove_where(headers, |n| {
        n.ends_with("cdn-cache-control") || n == "surrogate-control"
    });
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return;
    }
    let mut value = String::new();
    let mut private = false;
    let mut push = |directive: &str| {
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(directive);
    };
    for v in headers.get_all(header::CACHE_CONTROL) {
        // A value that is not text cannot be read: dropped.
        let Ok(text) = v.to_str() else { continue };
        for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let name = directive.split('=').next().unwrap_or_default().trim();
            if name.eq_ignore_ascii_case("public") || name.eq_ignore_ascii_case("s-maxage") {
                continue;
            }
            // `private="field"` keeps only the named fields from shared caches.
            if directive.eq_ignore_ascii_case("private")
                || directive.eq_ignore_ascii_case("no-store")
            {
                private = true;
            }
            push(directive);
        }
    }
    if !private {
        push("private");
    }
    let value =
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("private"));
    // One field, in place of every one there was.
    headers.insert(header::CACHE_CONTROL, value);
}

fn forget_the_bytes(headers: &mut HeaderMap) {
    remove_named(headers, &DESCRIBE_THE_BYTES);
}

/// Makes a response head fit for a body the response stage rewrites, or
/// refuses it. The rewritten body must end in a way the client can tell
/// from a cut (chunked HTTP/1.1 or an HTTP/2 stream, never the end of the
/// connection) and must be the bytes the transform can read (not a range,
/// not compressed).
fn prepare_rewrite(head: &mut http::response::Parts, client: Version) -> Result<(), ProxyError> {
    let refuse = |reason: &str| {
        ProxyError::ResponseRefused(crate::model::response::TransformError {
            transform: "response stage",
            reason: reason.into(),
        })
    };
    if client < Version::HTTP_11 {
        return Err(refused_for_http_1_0());
    }
    if head.status == http::StatusCode::PARTIAL_CONTENT {
        return Err(refuse("a range (206) cannot be rewritten"));
    }
    let encoded = head
        .headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(refuse("an encoded (compressed) body cannot be rewritten"));
    }
    // The upstream may have answered in HTTP/1.0; the client is sent
    // HTTP/1.1 framing (chunked) either way.
    head.version = Version::HTTP_11;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_removed_are_header_names_as_the_map_spells_them() {
        let names = || DESCRIBE_THE_BYTES.iter().chain(&ASK_OF_THE_BYTES);
        for name in names() {
            let parsed = header::HeaderName::from_bytes(name.as_bytes()).ok();
            assert_eq!(parsed.as_ref().map(|n| n.as_str()), Some(*name), "{name}");
        }
        let mut response = HeaderMap::new();
        for name in names() {
            let name = header::HeaderName::from_static(name);
            response.append(name, HeaderValue::from_static("x"));
        }
        response.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        let mut request = response.clone();
        forget_the_bytes(&mut response);
        ask_for_the_whole_body(&mut request);
        fn left(h: &HeaderMap) -> Vec<&str> {
            let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            names.sort_unstable();
            names
        }
        let mut asks = ASK_OF_THE_BYTES.to_vec();
        asks.push("content-type");
        asks.sort_unstable();
        assert_eq!(left(&response), asks);
        let mut describes = DESCRIBE_THE_BYTES.to_vec();
        describes.extend(["content-type", "accept-encoding"]);
        describes.sort_unstable();
        assert_eq!(left(&request), describes);
        let coding = request.get(header::ACCEPT_ENCODING);
        assert_eq!(coding.map(|v| v.as_bytes()), Some(&b"identity"[..]));
    }

    #[test]
    fn a_rewritten_body_is_framed_for_its_end_and_loses_what_described_the_upstreams_bytes() {
        let head = |status: u16, headers: &[(&'static str, &'static str)]| {
            let mut b = Response::builder().status(status).version(Version::HTTP_10);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).expect("response").into_parts().0
        };
        let refused = |mut h: http::response::Parts, client| match prepare_rewrite(&mut h, client) {
            Err(ProxyError::ResponseRefused(e)) => Some(e.reason),
            _ => None,
        };
        let h11 = Version::HTTP_11;
        assert!(refused(head(200, &[]), Version::HTTP_10)
            .is_some_and(|r| r.contains("HTTP/1.0 client")));
        assert!(refused(head(206, &[]), h11).is_some_and(|r| r.contains("range")));
        assert!(
            refused(head(200, &[("content-encoding", "gzip")]), Version::HTTP_2)
                .is_some_and(|r| r.contains("encoded"))
        );
        let mut h = head(
            200,
            &[
                ("content-encoding", "identity"),
                ("content-length", "42"),
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
                ("content-digest", "sha-256=:AAAA:"),
                ("content-type", "application/json"),
            ],
        );
        assert!(prepare_rewrite(&mut h, h11).is_ok());
        forget_the_bytes(&mut h.headers);
        assert_eq!(h.version, h11, "chunked, whatever the upstream spoke");
        let names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-encoding", "content-type"]);
    }

    #[test]
    fn a_rewritten_body_is_kept_from_shared_caches() {
        let after = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    header::CACHE_CONTROL,
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            keep_private(&mut h);
            let all: Vec<_> = h.get_all(header::CACHE_CONTROL).iter().collect();
            assert_eq!(all.len(), 1, "{values:?}");
            all[0].to_str().expect("text").to_string()
        };
        assert_eq!(after(&[]), "private");
        let mut h = HeaderMap::new();
        for name in [
            "cdn-cache-control",
            "cloudflare-cdn-cache-control",
            "surrogate-control",
        ] {
            h.insert(name, HeaderValue::from_static("max-age=600"));
        }
        keep_private(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(after(&["public, max-age=600"]), "max-age=600, private");
        assert_eq!(after(&["S-MAXAGE=60", "Public"]), "private");
        assert_eq!(after(&["no-store"]), "no-store");
        assert_eq!(after(&["max-age=5, private"]), "max-age=5, private");
        assert_eq!(
            after(&["private=\"set-cookie\", max-age=9"]),
            "private=\"set-cookie\", max-age=9, private"
        );
    }

    #[test]
    fn an_answer_for_one_caller_varies_by_what_a_plan_reads() {
        let after = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::VARY, HeaderValue::from_str(v).expect("value"));
            }
            vary_by_caller(&mut h);
            let all: Vec<_> = h.get_all(header::VARY).iter().collect();
            assert_eq!(all.len(), 1, "{values:?}");
            all[0].to_str().expect("text").to_string()
        };
        assert_eq!(after(&[]), "Authorization, X-Data-Purpose");
        assert_eq!(
            after(&["Accept-Encoding"]),
            "Accept-Encoding, Authorization, X-Data-Purpose"
        );
        assert_eq!(
            after(&["accept-encoding, authorization", "Origin,"]),
            "accept-encoding, authorization, Origin, X-Data-Purpose"
        );
        assert_eq!(after(&["Origin, *"]), "*");
    }

    #[test]
    fn every_head_of_a_route_whose_answers_are_the_callers_is_marked() {
        let head = || {
            let mut h = HeaderMap::new();
            h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=9"),
            );
            h
        };
        let mut h = head();
        mark_for(Audience::Anyone, &mut h);
        assert_eq!(h, head());
        for (audience, etag) in [(Audience::Caller, true), (Audience::Masked, false)] {
            let mut h = head();
            mark_for(audience, &mut h);
            assert_eq!(h.contains_key(header::ETAG), etag, "{audience:?}");
            let cache = h.get(header::CACHE_CONTROL).map(|v| v.as_bytes());
            assert_eq!(cache, Some(&b"max-age=9, private"[..]), "{audience:?}");
            assert!(h.contains_key(header::VARY), "{audience:?}");
        }
    }
}
