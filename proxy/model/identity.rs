//! The verified client certificate turned into a principal, once per connection.
//!
//! Order: the SPIFFE URI SAN first, else the first DNS SAN, else the subject CN.
//! A certificate that carries a malformed SPIFFE id, or more than one, or a
//! SPIFFE id beside another URI SAN, or a leaf SPIFFE id without a path (the
//! X509-SVID rules, section 5.2), has no identity at all: we never fall back to
//! a weaker name when the strong one is present but wrong (SAN-type confusion).
//! Names only ever count in their own SAN type: a SPIFFE id written into a DNS
//! SAN, an email SAN or the CN is that DNS name or CN (`dns:…`, `cn:…`), never
//! the service.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A SPIFFE id, parsed per the SPIFFE-ID specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub id: String,
    pub trust_domain: String,
    /// Path segments after the trust domain.
    pub path: String,
    /// From the Kubernetes form `/ns/<namespace>/sa/<service-account>`.
    pub namespace: Option<String>,
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Spiffe(SpiffeId),
    Dns(String),
    CommonName(String),
}

impl Principal {
    /// [`header_form`](Self::header_form) without a copy where it is
    /// the id as it is (a SPIFFE id), for per-request lookups.
    pub fn header_form_ref(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Principal::Spiffe(s) => std::borrow::Cow::Borrowed(&s.id),
            other => std::borrow::Cow::Owned(other.header_form()),
        }
    }

    /// The value of `x-meshgate-principal`: the SPIFFE id as is, `dns:NAME` or `cn:NAME`,
    /// so that a DNS name can never pass for a SPIFFE id or a CN for a DNS name.
    pub fn header_form(&self) -> String {
        match self {
            Principal::Spiffe(s) => s.id.clone(),
            Principal::Dns(d) => format!("dns:{d}"),
            Principal::CommonName(c) => format!("cn:{c}"),
        }
    }
}

impl std::str::FromStr for Principal {
    type Err = IdentityError;
    /// The inverse of [`Principal::header_form`]: a SPIFFE id, `dns:NAME` or `cn:NAME`.
    fn from_str(s: &str) -> Result<Principal, IdentityError> {
        if let Some(d) = s.strip_prefix("dns:") {
            Ok(Principal::Dns(d.to_string()))
        } else if let Some(c) = s.strip_prefix("cn:") {
            Ok(Principal::CommonName(c.to_string()))
        } else {
            parse_spiffe_id(s).map(Principal::Spiffe)
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header_form())
    }
}

/// Everything later layers need to know about the peer, computed once per connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub principal: Principal,
    /// `x-meshgate-principal` value.
    pub principal_header: HeaderValue,
    /// `x-forwarded-client-cert` value, Envoy's format.
    pub xfcc: HeaderValue,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub cert_sha256: String,
    /// The leaf certificate's notAfter: the connection it authenticates is
    /// closed then (`runtime::sidecar::connection`).
    pub not_after: SystemTime,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate carries more than one SPIFFE id")]
    MultipleSpiffeIds,
    #[error(
        "certificate carries a SPIFFE id and other URI SANs (an X509-SVID has exactly one URI SAN)"
    )]
    SpiffeIdWithOtherUris,
    #[error("SPIFFE id `{0}` names a trust domain, not a workload (a leaf SVID's id has a path)")]
    RootSpiffeId(String),
    #[error("malformed SPIFFE id `{id}`: {reason}")]
    InvalidSpiffeId { id: String, reason: &'static str },
    #[error("certificate names no principal (no URI or DNS SAN, no CN)")]
    NoIdentity,
    #[error("certificate field not usable in a header: {0}")]
    NotHeaderSafe(String),
}

impl IdentityError {
    /// Label value for the handshake-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            IdentityError::NoIdentity => "no_identity",
            _ => "bad_identity",
        }
    }
}

/// Derives the identity from the (already verified) leaf certificate.
pub fn from_leaf(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;

    let mut uris: Vec<&str> = Vec::new();
    let mut dns: Vec<&str> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u),
                GeneralName::DNSName(d) => dns.push(d),
                _ => {}
            }
        }
    } else if cert.subject_alternative_name().is_err() {
        return Err(IdentityError::Parse("malformed subjectAltName".into()));
    }

    let spiffe: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|u| {
            u.as_bytes()
                .get(..9)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"spiffe://"))
        })
        .collect();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());

    let principal = match spiffe.as_slice() {
        [_] if uris.len() > 1 => return Err(IdentityError::SpiffeIdWithOtherUris),
        [one] => {
            let id = parse_spiffe_id(one)?;
            if id.path.is_empty() {
                return Err(IdentityError::RootSpiffeId(id.id));
            }
            Principal::Spiffe(id)
        }
        [] => match (dns.first(), cn) {
            (Some(d), _) => Principal::Dns(d.to_string()),
            (None, Some(cn)) if !cn.is_empty() => Principal::CommonName(cn.to_string()),
            _ => return Err(IdentityError::NoIdentity),
        },
        _ => return Err(IdentityError::MultipleSpiffeIds),
    };

    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let cert_sha256 = crate::base::hex::hex(digest.as_ref());
    let subject = cert.subject().to_string();
    let xfcc = xfcc_value(&cert_sha256, &subject, &uris, &dns);

    let header = |v: String| {
        HeaderValue::from_str(&v)
            .map_err(|_| IdentityError::NotHeaderSafe(v.escape_debug().to_string()))
    };
    Ok(PeerIdentity {
        principal_header: header(principal.header_form())?,
        xfcc: header(xfcc)?,
        principal,
        cert_sha256,
        not_after: not_after(&cert),
    })
}

/// A certificate's notAfter as a system time (one before 1970 is 1970: long
/// past either way).
pub fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    u64::try_from(cert.validity().not_after.timestamp())
        .ok()
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Envoy's `x-forwarded-client-cert` element: `Hash=…;Subject="…";URI=…;DNS=…`.
fn xfcc_value(hash: &str, subject: &str, uris: &[&str], dns: &[&str]) -> String {
    let mut out = format!("Hash={hash};Subject={}", quote(subject, true));
    for u in uris {
        out.push_str(";URI=");
        out.push_str(&quote(u, false));
    }
    for d in dns {
        out.push_str(";DNS=");
        out.push_str(&quote(d, false));
    }
    out
}

/// Quotes a value when forced or when it holds one of XFCC's delimiters.
fn quote(v: &str, force: bool) -> String {
    if force || v.contains([',', ';', '=', '"', '\\', ' ']) {
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        v.to_string()
    }
}

/// Parses and validates a SPIFFE id (SPIFFE-ID spec §2).
pub fn parse_spiffe_id(id: &str) -> Result<SpiffeId, IdentityError> {
    let bad = |reason| IdentityError::InvalidSpiffeId {
        id: id.escape_debug().to_string(),
        reason,
    };
    if id.len() > 2048 {
        return Err(bad("longer than 2048 bytes"));
    }
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad("scheme must be lowercase `spiffe://`"))?;
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if td.is_empty() {
        return Err(bad("empty trust domain"));
    }
    if td.len() > 255 {
        return Err(bad("trust domain longer than 255 bytes"));
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(bad("trust domain may hold only a-z 0-9 - . _"));
    }
    let mut segments = Vec::new();
    if !path.is_empty() {
        for seg in path[1..].split('/') {
            if seg.is_empty() {
                return Err(bad("empty path segment"));
            }
            if seg == "." || seg == ".." {
                return Err(bad("`.` or `..` path segment"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(bad("path may hold only A-Z a-z 0-9 - . _ and /"));
            }
            segments.push(seg);
        }
    }
    let (namespace, service_account) = match segments.as_slice() {
        ["ns", ns, "sa", sa] => (Some(ns.to_string()), Some(sa.to_string())),
        _ => (None, None),
    };
    Ok(SpiffeId {
        id: id.to_string(),
        trust_domain: td.to_string(),
        path: path.to_string(),
        namespace,
        service_account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_spiffe_id() {
        let s = parse_spiffe_id("spiffe://mesh.local/ns/finance/sa/reporting").expect("valid");
        assert_eq!(s.trust_domain, "mesh.local");
        assert_eq!(s.namespace.as_deref(), Some("finance"));
        assert_eq!(s.service_account.as_deref(), Some("reporting"));
        let s = parse_spiffe_id("spiffe://mesh.local/workload/x").expect("valid");
        assert_eq!(s.namespace, None);
        assert_eq!(s.path, "/workload/x");
    }

    #[test]
    fn rejects_malformed_spiffe_ids() {
        for bad in [
            "SPIFFE://mesh.local/ns/a/sa/b",
            "spiffe://",
            "spiffe:///ns/a",
            "spiffe://Mesh.local/ns/a",
            "spiffe://mesh.local:8443/ns/a",
            "spiffe://user@mesh.local/ns/a",
            "spiffe://mesh.local/ns//sa/b",
            "spiffe://mesh.local/ns/../sa/b",
            "spiffe://mesh.local/ns/a/",
            "spiffe://mesh.local/ns/a?x=1",
            "spiffe://mesh.local/ns/a#f",
            "spiffe://mesh.local/ns/a%2Fb",
        ] {
            assert!(parse_spiffe_id(bad).is_err(), "{bad} accepted");
        }
    }

    /// Found by the `identity_der` fuzz target
    /// (fuzz/regressions/identity_der/non-ascii-uri-san.der): a URI SAN with
    /// a multi-byte character across its ninth byte made the SPIFFE scheme
    /// check slice inside the character and panic.
    #[test]
    fn a_non_ascii_uri_san_is_not_a_spiffe_id_and_does_not_panic() {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe:/XXe.example/ns/a/sa/b".try_into().expect("ia5")),
            rcgen::SanType::DnsName("fallback.example".try_into().expect("ia5")),
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let mut der = params.self_signed(&key).expect("cert").der().to_vec();
        // The same length in UTF-8: `ў` (D1 9E) where `XX` was, as IA5
        // strings are not checked for ASCII by the parser.
        let at = der
            .windows(10)
            .position(|w| w == b"spiffe:/XX")
            .expect("the URI");
        der[at + 8..at + 10].copy_from_slice("ў".as_bytes());
        let id = from_leaf(&der).expect("an identity");
        assert_eq!(id.principal, Principal::Dns("fallback.example".into()));
    }

    #[test]
    fn xfcc_quotes_subject_and_delimiters() {
        let v = xfcc_value(
            "ab",
            "CN=a, O=\"x\"",
            &["spiffe://t/ns/a/sa/b"],
            &["a.b", "c;d"],
        );
        assert_eq!(
            v,
            "Hash=ab;Subject=\"CN=a, O=\\\"x\\\"\";URI=spiffe://t/ns/a/sa/b;DNS=a.b;DNS=\"c;d\""
        );
    }

    /// A self-signed leaf with these SANs and CN, as DER.
    fn leaf(sans: Vec<rcgen::SanType>, cn: Option<&str>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = sans;
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn the_leafs_not_after_is_read_to_the_second() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![uri(ID)];
        let at = time::OffsetDateTime::from_unix_timestamp(1_900_000_123).expect("time");
        p.not_after = at;
        let der = p.self_signed(&key).expect("cert").der().to_vec();
        let id = from_leaf(&der).expect("an identity");
        assert_eq!(
            id.not_after,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_123)
        );
    }

    fn uri(u: &str) -> rcgen::SanType {
        rcgen::SanType::URI(u.try_into().expect("ia5"))
    }

    const ID: &str = "spiffe://mesh.local/ns/finance/sa/reporting";

    #[test]
    fn a_spiffe_id_counts_only_in_a_uri_san() {
        let principal = |sans, cn| from_leaf(&leaf(sans, cn)).map(|p| p.principal.header_form());
        let dns = rcgen::SanType::DnsName(ID.try_into().expect("ia5"));
        assert_eq!(principal(vec![dns], Some("x")), Ok(format!("dns:{ID}")));
        let email = rcgen::SanType::Rfc822Name(ID.try_into().expect("ia5"));
        assert_eq!(principal(vec![email], Some("x")), Ok("cn:x".into()));
        assert_eq!(principal(vec![], Some(ID)), Ok(format!("cn:{ID}")));
        let other = "spiffe://mesh.local/ns/marketing/sa/campaigns";
        assert_eq!(principal(vec![uri(other)], Some(ID)), Ok(other.into()));
        let https = "https://mesh.local/ns/finance/sa/reporting";
        assert_eq!(principal(vec![uri(https)], Some("x")), Ok("cn:x".into()));
    }

    #[test]
    fn a_spiffe_id_beside_another_uri_or_without_a_path_is_no_identity() {
        for sans in [
            vec![uri(ID), uri("https://evil.example/")],
            vec![uri("https://evil.example/"), uri(ID)],
            vec![uri(ID), uri("urn:x")],
        ] {
            assert_eq!(
                from_leaf(&leaf(sans, None)).map(|p| p.principal),
                Err(IdentityError::SpiffeIdWithOtherUris)
            );
        }
        assert_eq!(
            from_leaf(&leaf(vec![uri("spiffe://mesh.local")], None)).map(|p| p.principal),
            Err(IdentityError::RootSpiffeId("spiffe://mesh.local".into()))
        );
        assert_eq!(
            from_leaf(&leaf(vec![uri(ID), uri(ID)], None)).map(|p| p.principal),
            Err(IdentityError::MultipleSpiffeIds)
        );
    }
}
