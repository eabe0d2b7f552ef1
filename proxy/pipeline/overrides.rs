//! Headers that would make the upstream act on another method, path, host
//! or client than the one meshgate decided on. Web frameworks and proxies
//! honour them (README "Override and client-address headers"); meshgate removes every
//! client copy before forwarding, under its own spelling and with `_` read
//! as `-` (CGI-style servers map both to one variable), and sets the
//! client's verified address itself.
//!
//! A product whose framework needs a method override names its header in
//! its contract (`meshgateAllowOverride.methodHeader`): on a `POST`, the
//! method in that header is the one routed and decided, and the upstream
//! receives the header with exactly that method ([`route_effective`]).
//! Path overrides are never
//! honoured: the path is what routing, Cedar and the audit see, and the
//! normalised path already is what the upstream receives.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use serde::{Deserialize, Deserializer};

use super::error::ProxyError;
use crate::decision::authz::{DecideError, Snapshot};
use crate::decision::routes::Target;
use crate::model::path::NormalPath;

/// Method overrides: Rails (`Rack::MethodOverride`), Express
/// `method-override`, Symfony and Laravel, Django REST framework (on any
/// method, GET included, in some versions), Martini, Ktor, Mojolicious,
/// WAI, ASP.NET (`X-HTTP-Method`, `X-HTTP-Method-Override`,
/// `X-Method-Override`), Jersey's `HttpMethodOverrideFilter`, Google APIs,
/// OData.
pub const METHOD_OVERRIDES: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-method",
];

/// Path, URL and authority overrides: IIS URL Rewrite and Zend/Laminas
/// (`X-Original-URL`, `X-Rewrite-URL`), `X-Override-URL`, nginx's
/// `X-Original-URI`, Envoy's `x-envoy-original-path`, Traefik's
/// `X-Forwarded-Uri`, Spring's and Werkzeug's `X-Forwarded-Prefix`, legacy
/// connectors' `X-Request-Uri`/`X-Request-URL`, rewrite modules'
/// `X-Rewrite-Path`/`X-Real-URL`, and the forwarded host/port/scheme family
/// frameworks build absolute URLs from.
pub const PATH_OVERRIDES: [&str; 24] = [
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-original-path",
    "x-request-uri",
    "x-request-url",
    "x-rewrite-path",
    "x-real-url",
    "x-real-uri",
    "x-forwarded-url",
    "x-original-host",
    "x-real-host",
    "x-envoy-original-path",
    "x-envoy-original-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-ssl",
    "x-host",
    "x-http-host-override",
];

/// Client addresses set by CDNs and proxies (Cloudflare, Akamai, Fastly,
/// nginx `real_ip`, Envoy, App Engine, Azure): only the verified peer's
/// address reaches the upstream.
pub const CLIENT_ADDRESSES: [&str; 14] = [
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "forwarded-for",
    "x-forwarded",
    "x-envoy-external-address",
    "x-appengine-user-ip",
    "x-azure-clientip",
];

/// Identities asserted by an authenticating proxy in front of an
/// application: oauth2-proxy (`X-Forwarded-User` …, `X-Auth-Request-*`),
/// Authelia and Apache (`Remote-User` …), Kubernetes' front proxy and
/// impersonation (`X-Remote-User`, `Impersonate-*`), Grafana's auth proxy,
/// Google IAP, AWS ALB, Azure App Service, Cloudflare Access, Kong,
/// Pomerium, Vouch and Keycloak Gatekeeper. A product that trusted one of
/// them behind such a proxy would take a client's copy for a verified user;
/// meshgate's own identity is `x-meshgate-principal`.
pub const IDENTITIES: [&str; 47] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    "x-remote-user",
    "x-remote-group",
    "impersonate-user",
    "impersonate-group",
    "impersonate-uid",
    "x-webauth-user",
    "x-goog-authenticated-user-email",
    "x-goog-authenticated-user-id",
    "x-goog-iap-jwt-assertion",
    "x-amzn-oidc-data",
    "x-amzn-oidc-identity",
    "x-amzn-oidc-accesstoken",
    "x-ms-client-principal",
    "x-ms-client-principal-id",
    "x-ms-client-principal-name",
    "x-ms-client-principal-idp",
    "cf-access-jwt-assertion",
    "cf-access-authenticated-user-email",
    "x-consumer-id",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-authenticated-userid",
    "x-authenticated-scope",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-authenticated-user",
    "x-pomerium-jwt-assertion",
    "x-vouch-user",
    "x-auth-userid",
    "x-auth-username",
    "x-auth-email",
    "x-auth-roles",
    "x-auth-subject",
];

/// A client's certificate and its verification, as TLS-terminating proxies
/// pass them on to the application behind them: RFC 9440 (`Client-Cert`,
/// `Client-Cert-Chain`), Azure App Service (`X-ARR-ClientCert`,
/// `X-ARR-SSL`), HAProxy's and nginx's usual set-ups (`X-SSL`,
/// `X-Client-Verify`, `X-Client-DN` …); and the families of
/// [`FAMILIES`]. A product moved behind meshgate from such a proxy would
/// take a client's copy for a verified certificate; meshgate's is
/// `x-forwarded-client-cert`.
pub const CLIENT_CERTIFICATES: [&str; 9] = [
    "client-cert",
    "client-cert-chain",
    "x-arr-clientcert",
    "x-arr-ssl",
    "x-ssl",
    "x-client-verify",
    "x-client-dn",
    "x-client-s-dn",
    "x-client-i-dn",
];

/// Name prefixes removed whole (after `_` is read as `-`): the forwarded
/// family (`X-Forwarded-*`: what the hop before the product saw of the
/// request, and that hop is meshgate; Traefik's
/// `X-Forwarded-Tls-Client-Cert` and `-Info` among them), and the client
/// certificate families of nginx and HAProxy set-ups (`X-SSL-Client-*`,
/// Apache's `SSL_CLIENT_*` through CGI), Google Cloud's load balancer and
/// Kong (`X-Client-Cert-*`), AWS ALB (`X-Amzn-Mtls-Clientcert*`) and
/// Cloudflare (`Cf-Client-Cert-*`).
pub const FAMILIES: [&str; 6] = [
    "x-forwarded-",
    "x-ssl-",
    "x-client-cert",
    "x-amzn-mtls-",
    "ssl-client-",
    "cf-client-cert-",
];

pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// `headers` in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// More override headers to remove before forwarding, besides the
    /// built-in lists.
    #[serde(deserialize_with = "de_header_names")]
    pub strip_overrides_extra: Vec<HeaderName>,
}

fn de_header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| header_name(n).map_err(serde::de::Error::custom))
        .collect()
}

/// A header name as configured: a token (RFC 9110 5.1), read lowercase.
pub fn header_name(name: &str) -> Result<HeaderName, String> {
    if name.is_empty() {
        return Err("an empty header name".into());
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"))
}

/// `name` with `_` read as `-`.
fn folded(name: &str) -> std::borrow::Cow<'_, str> {
    if name.as_bytes().contains(&b'_') {
        name.replace('_', "-").into()
    } else {
        name.into()
    }
}

/// The built-in lists as one set (one hash per header of a request).
static BUILT_IN: std::sync::LazyLock<
    std::collections::HashSet<&'static str, foldhash::fast::RandomState>,
> = std::sync::LazyLock::new(|| {
    METHOD_OVERRIDES
        .iter()
        .chain(&PATH_OVERRIDES)
        .chain(&CLIENT_ADDRESSES)
        .chain(&IDENTITIES)
        .chain(&CLIENT_CERTIFICATES)
        .copied()
        .collect()
});

/// Whether a client header is an override, a client address, an asserted
/// identity or client certificate, or one named in `extra`.
fn is_override(name: &str, extra: &[HeaderName]) -> bool {
    let name = folded(name);
    let name = name.as_ref();
    BUILT_IN.contains(name)
        || FAMILIES.iter().any(|f| name.starts_with(f))
        || extra.iter().any(|e| folded(e.as_str()) == name)
}

/// Removes every override and client-address header (and those in
/// `extra`), every copy.
pub fn strip_overrides(headers: &mut HeaderMap, extra: &[HeaderName]) {
    super::headers::remove_where(headers, |name| is_override(name, extra));
}

/// A method override that cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideError {
    /// Sent more than once: which one the upstream reads is unknown.
    Repeated,
    /// Not an HTTP method, or `CONNECT`.
    NotAMethod,
    /// Not `PUT`, `PATCH` or `DELETE`: a `POST` is never decided as a safe
    /// method (the upstream could still read the body as a write, or send
    /// a body the response stage would not see).
    NotAWrite,
    /// The body is a form: frameworks read a `_method` field in it before
    /// the header, so what the upstream does is not what was decided.
    FormBody,
    /// A body without one clear `Content-Type` (none, empty, not ASCII,
    /// sent twice, or named in `Connection` and so removed on the way):
    /// Rack reads a `POST` without a type as a form.
    UntypedBody,
}

impl OverrideError {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideError::Repeated => "method override sent more than once",
            OverrideError::NotAMethod => "method override is not an HTTP method",
            OverrideError::NotAWrite => "method override is not PUT, PATCH or DELETE",
            OverrideError::FormBody => {
                "method override on a form body, whose _method field the upstream may read instead"
            }
            OverrideError::UntypedBody => {
                "method override on a body without one Content-Type, which the upstream may read as a form"
            }
        }
    }
}

/// The method a request's `header` names, upper-cased as frameworks read
/// it (Rack, Symfony); `None` without the header. `body_empty`: the
/// request is known to carry no body (then no `_method` field can be in it).
pub fn method_in(
    headers: &HeaderMap,
    header: &HeaderName,
    body_empty: bool,
) -> Result<Option<Method>, OverrideError> {
    let mut values = headers.get_all(header).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => return Err(OverrideError::Repeated),
        (Some(v), None) => v,
    };
    let upper = value
        .to_str()
        .map_err(|_| OverrideError::NotAMethod)?
        .trim()
        .to_ascii_uppercase();
    let method = Method::from_bytes(upper.as_bytes()).map_err(|_| OverrideError::NotAMethod)?;
    if upper.is_empty() || method == Method::CONNECT {
        return Err(OverrideError::NotAMethod);
    }
    if ![Method::PUT, Method::PATCH, Method::DELETE].contains(&method) {
        return Err(OverrideError::NotAWrite);
    }
    match body_type(headers) {
        BodyType::Form => Err(OverrideError::FormBody),
        BodyType::Unclear if !body_empty => Err(OverrideError::UntypedBody),
        _ => Ok(Some(method)),
    }
}

enum BodyType {
    Form,
    /// One content type that is not a form.
    Other,
    /// What the upstream takes it for depends on the upstream.
    Unclear,
}

/// The body's type as the upstream will read it.
fn body_type(headers: &HeaderMap) -> BodyType {
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return BodyType::Unclear;
    };
    let Ok(value) = value.to_str() else {
        return BodyType::Unclear;
    };
    let value = value.trim().to_ascii_lowercase();
    if value.starts_with("application/x-www-form-urlencoded") || value.starts_with("multipart/") {
        return BodyType::Form;
    }
    // Hop-by-hop removal would take it away before the upstream.
    let removed =
        super::headers::named_in_connection(headers).any(|n| n == http::header::CONTENT_TYPE);
    if value.is_empty() || removed {
        return BodyType::Unclear;
    }
    BodyType::Other
}

/// The header value that carries `method` to the upstream.
pub fn method_value(method: &Method) -> HeaderValue {
    // A method is a token, so always a valid header value.
    HeaderValue::from_str(method.as_str()).unwrap_or_else(|_| HeaderValue::from_static("POST"))
}

/// Routes a request on the method it will be decided as: the one sent, or,
/// on a `POST` carrying the method-override header the path's product
/// allows (`meshgateAllowOverride`), the method in that header (405 when the
/// product has no route for it). Any other override is ignored here and
/// removed before forwarding. A malformed override (sent twice, not a
/// method) is a 400 unless the path leads to a product that does not allow
/// that header.
pub(super) fn route_effective<'s>(
    snapshot: &'s Snapshot,
    sent: &Method,
    headers: &HeaderMap,
    body_empty: bool,
    path: &NormalPath,
) -> Result<Effective<'s>, ProxyError> {
    if sent == Method::POST {
        let allows = |t: &Target, h: &HeaderName| {
            snapshot.product(t).and_then(|p| p.method_override.as_ref()) == Some(h)
        };
        for h in snapshot
            .products()
            .filter_map(|p| p.method_override.as_ref())
        {
            let method = match method_in(headers, h, body_empty) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // Refused unless the path leads, as sent, to a product that
                // does not honour this header (there it is only removed).
                Err(e) => match snapshot.route(sent, path) {
                    Ok(t) if !allows(t, h) => continue,
                    _ => return Err(ProxyError::BadRequest(e.as_str())),
                },
            };
            match snapshot.route(&method, path) {
                Ok(t) if allows(t, h) => {
                    return Ok(Effective {
                        target: Ok(t),
                        method,
                        header: Some(h.clone()),
                    })
                }
                Ok(_) => {}
                // The product the path leads to allows the override but
                // has no route for its method: refused as that method.
                Err(e) => match snapshot.route(sent, path) {
                    Ok(t) if allows(t, h) => {
                        return Ok(Effective {
                            target: Err(e),
                            method,
                            header: None,
                        })
                    }
                    _ => {}
                },
            }
        }
    }
    Ok(Effective {
        target: snapshot.route(sent, path),
        method: sent.clone(),
        header: None,
    })
}

/// The method-override headers of a request's snapshot: every one a
/// product allows is removed from what the client sent (they need not be
/// in the built-in lists); the one the decided method came from is set to it.
#[derive(Default)]
pub(super) struct MethodOverride {
    pub(super) allowed: Vec<HeaderName>,
    pub(super) decided: Option<(HeaderName, Method)>,
}

/// What a request is routed and decided as.
pub(super) struct Effective<'s> {
    pub(super) target: Result<&'s Target, DecideError>,
    pub(super) method: Method,
    /// The method-override header the method came from.
    pub(super) header: Option<HeaderName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_override_and_client_address_in_any_spelling() {
        let mut h = HeaderMap::new();
        for name in METHOD_OVERRIDES
            .iter()
            .chain(&PATH_OVERRIDES)
            .chain(&CLIENT_ADDRESSES)
            .chain(&IDENTITIES)
            .chain(&CLIENT_CERTIFICATES)
        {
            h.append(*name, HeaderValue::from_static("x"));
            h.append(*name, HeaderValue::from_static("y"));
        }
        for name in [
            "X_HTTP_Method_Override",
            "x_original_url",
            "x_real_ip",
            "Remote_User",
            // The families, in any spelling.
            "X-Forwarded-Tls-Client-Cert",
            "x-forwarded-tls-client-cert-info",
            "X-SSL-Client-S-DN",
            "SSL_CLIENT_CERT",
            "X-Client-Cert-Chain-Verified",
            "X-Amzn-Mtls-Clientcert-Leaf",
            "Cf-Client-Cert-Der-Base64",
        ] {
            h.append(name, HeaderValue::from_static("x"));
        }
        h.append("x-custom-verb", HeaderValue::from_static("DELETE"));
        h.append("x_custom_verb", HeaderValue::from_static("DELETE"));
        h.append("x-kept", HeaderValue::from_static("1"));
        // Near a family's name, not in it.
        h.append("x-client-id", HeaderValue::from_static("1"));
        h.append("x-sslx", HeaderValue::from_static("1"));
        let extra = vec![header_name("X-Custom-Verb").expect("name")];
        strip_overrides(&mut h, &extra);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-client-id", "x-kept", "x-sslx"]);
    }

    #[test]
    fn reads_one_method_override_upper_cased_and_refuses_doubtful_ones() {
        let name = HeaderName::from_static("x-http-method-override");
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(name.clone(), HeaderValue::from_static(v));
            }
            method_in(&h, &name, true)
        };
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&["delete"]), Ok(Some(Method::DELETE)));
        assert_eq!(with(&[" PATCH "]), Ok(Some(Method::PATCH)));
        assert_eq!(with(&["DELETE", "GET"]), Err(OverrideError::Repeated));
        assert_eq!(with(&["DE LETE"]), Err(OverrideError::NotAMethod));
        assert_eq!(with(&[""]), Err(OverrideError::NotAMethod));
        assert_eq!(with(&["connect"]), Err(OverrideError::NotAMethod));
    }

    #[test]
    fn a_body_the_upstream_may_read_as_a_form_refuses_the_override() {
        let name = HeaderName::from_static("x-http-method-override");
        let with = |headers: &[(&'static str, &'static [u8])], body_empty: bool| {
            let mut h = HeaderMap::new();
            h.append(name.clone(), HeaderValue::from_static("DELETE"));
            for (n, v) in headers {
                h.append(*n, HeaderValue::from_bytes(v).expect("value"));
            }
            method_in(&h, &name, body_empty)
        };
        let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
        assert_eq!(with(json, false), Ok(Some(Method::DELETE)));
        // No type, an empty one, one that is not ASCII, two, or one that
        // `Connection` removes on the way: Rack takes the body for a form.
        let unclear: [&[(&str, &[u8])]; 5] = [
            &[],
            &[("content-type", b" ")],
            &[("content-type", b"application/x-www-form-urlencoded;\x80")],
            &[
                ("content-type", b"application/json"),
                ("content-type", b"application/x-www-form-urlencoded"),
            ],
            &[
                ("content-type", b"application/json"),
                ("connection", b"keep-alive, Content-Type"),
            ],
        ];
        for headers in unclear {
            assert_eq!(
                with(headers, false),
                Err(OverrideError::UntypedBody),
                "{headers:?}"
            );
            // Without a body there is no `_method` field to read.
            assert_eq!(with(headers, true), Ok(Some(Method::DELETE)), "{headers:?}");
        }
        let form: &[(&str, &[u8])] = &[("content-type", b"Multipart/form-data; boundary=x")];
        assert_eq!(with(form, true), Err(OverrideError::FormBody));
    }

    #[test]
    fn configured_names_are_checked() {
        assert!(header_name("X-Verb").is_ok());
        let e = header_name("X Verb").expect_err("space");
        assert!(e.contains("`X Verb` is not a header name"), "{e}");
        assert!(header_name("").is_err());
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let v4 = crate::model::connection::forwarded_for("10.1.2.3".parse().expect("ip"));
        assert_eq!(v4, "for=10.1.2.3;proto=https");
        let v6 = crate::model::connection::forwarded_for("::1".parse().expect("ip"));
        assert_eq!(v6, "for=\"[::1]\";proto=https");
    }
}
