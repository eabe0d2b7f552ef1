//! The first check of every request: is its target one plain resource?

use http::header;
use http::{Method, Request, Version};

use crate::pipeline::error::ProxyError;

/// Refuses, before anything else looks at it, a request whose target or
/// authority is not one plain resource: `CONNECT` (authority-form, a
/// tunnel), the asterisk-form (`OPTIONS *`), and a Host that is sent more
/// than once or, in HTTP/1.1, not at all (RFC 9112 3.2: the server must
/// answer 400; two Hosts let two hops disagree on which one counts).
pub(super) fn check_target<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT"));
    }
    // HTTP/2's `:path: *` comes with the scheme and authority around it.
    if req.uri() == "*" || req.uri().path() == "*" {
        return Err(ProxyError::BadRequest("asterisk-form target"));
    }
    // Userinfo (`user@host`) is deprecated in http(s) URIs and an error
    // where received (RFC 9110 4.2.4, RFC 9113 8.3.1); passed on, an
    // upstream could take it for a user or read another host from it.
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(ProxyError::BadRequest("userinfo in the authority"));
    }
    // RFC 9113 8.2.1: an HTTP/2 field value that begins or ends with SP or
    // HTAB makes the request malformed. An HTTP/1.1 upstream would trim
    // what meshgate read whole: the two would not read the same value.
    if req.version() == Version::HTTP_2 && req.headers().values().any(padded) {
        return Err(ProxyError::BadRequest(
            "an HTTP/2 field value begins or ends with whitespace",
        ));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(ProxyError::BadRequest("more than one Host")),
        (Some(host), None) if host.as_bytes().contains(&b'@') => {
            Err(ProxyError::BadRequest("userinfo in the authority"))
        }
        (None, None) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Err(ProxyError::BadRequest("no Host"))
        }
        _ => Ok(()),
    }
}

/// Whether `v` begins or ends with SP or HTAB.
fn padded(v: &http::HeaderValue) -> bool {
    let b = v.as_bytes();
    matches!(b.first(), Some(b' ' | b'\t')) || matches!(b.last(), Some(b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // HTTP/2's `:path: *`, as the h2 crate builds its URI.
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(http::uri::Authority::from_static("localhost"));
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("*"));
        let h2 = Request::builder()
            .method("OPTIONS")
            .uri(http::Uri::from_parts(parts).expect("uri"))
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        assert_eq!(refused(h2), Some("asterisk-form target"));
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
        // Userinfo, in an absolute-form target (or `:authority`) or in Host.
        for (target, hosts) in [
            ("https://reporting@localhost/orders", &[][..]),
            ("https://a:b@localhost:8443/orders", &["localhost"][..]),
            ("/orders", &["reporting@localhost"][..]),
        ] {
            assert_eq!(
                refused(req("GET", target, h11, hosts)),
                Some("userinfo in the authority"),
                "{target} {hosts:?}"
            );
        }
        assert_eq!(
            refused(req(
                "GET",
                "https://reporting@localhost/orders",
                Version::HTTP_2,
                &[]
            )),
            Some("userinfo in the authority")
        );
    }

    #[test]
    fn an_http2_value_with_whitespace_around_it_is_refused_an_http11_one_is_not() {
        let req = |version: Version, value: &'static str| {
            Request::builder()
                .uri("https://localhost/orders")
                .version(version)
                .header("x-ws", http::HeaderValue::from_static(value))
                .body(())
                .expect("request")
        };
        let refused = |r: Request<()>| match check_target(&r) {
            Err(ProxyError::BadRequest(what)) => Some(what),
            _ => None,
        };
        for value in [" padded", "padded\t", " ", "\tx y "] {
            assert_eq!(
                refused(req(Version::HTTP_2, value)),
                Some("an HTTP/2 field value begins or ends with whitespace"),
                "{value:?}"
            );
        }
        assert!(check_target(&req(Version::HTTP_2, "in side")).is_ok());
        assert!(check_target(&req(Version::HTTP_2, "")).is_ok());
        // HTTP/1.1's parser trims them already (RFC 9112 5).
        assert!(check_target(&req(Version::HTTP_11, " padded")).is_ok());
    }
}
