//! Certificate -> identity.

use super::*;

/// What the rules of [`crate::model::identity`] say a certificate's principal is:
/// exactly one `spiffe://` URI SAN (scheme case-insensitive) and it must be a
/// valid SPIFFE id with a path, and the only URI SAN (X509-SVID 5.2); none:
/// the first DNS SAN, else a non-empty CN; several: no identity. `Err` holds
/// the kind of refusal.
pub(super) fn expected_principal(
    uris: &[&str],
    dns: &[&str],
    cn: Option<&str>,
) -> Result<Principal, &'static str> {
    let spiffe: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|u| {
            u.get(..9)
                .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
        })
        .collect();
    match spiffe.as_slice() {
        [] => {}
        [_] if uris.len() > 1 => return Err("spiffe_with_other_uris"),
        [one] => {
            return if !spiffe_id_is_valid(one) {
                Err("invalid_spiffe")
            } else if !one["spiffe://".len()..].contains('/') {
                Err("root_spiffe")
            } else {
                Ok(Principal::Spiffe(
                    crate::model::identity::parse_spiffe_id(one).map_err(|_| "valid id refused")?,
                ))
            }
        }
        _ => return Err("multiple_spiffe"),
    }
    if let Some(d) = dns.first() {
        return Ok(Principal::Dns(d.to_string()));
    }
    match cn {
        Some(c) if !c.is_empty() => Ok(Principal::CommonName(c.to_string())),
        _ => Err("no_identity"),
    }
}

/// The SPIFFE-ID spec's grammar, written out apart from the parser.
fn spiffe_id_is_valid(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    if id.len() > 2048 {
        return false;
    }
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let td_ok = !td.is_empty()
        && td.len() <= 255
        && td
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_'));
    let path_ok = path.is_empty()
        || path[1..].split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        });
    td_ok && path_ok
}

fn refusal_kind(e: &IdentityError) -> &'static str {
    match e {
        IdentityError::Parse(_) => "parse",
        IdentityError::MultipleSpiffeIds => "multiple_spiffe",
        IdentityError::SpiffeIdWithOtherUris => "spiffe_with_other_uris",
        IdentityError::RootSpiffeId(_) => "root_spiffe",
        IdentityError::InvalidSpiffeId { .. } => "invalid_spiffe",
        IdentityError::NoIdentity => "no_identity",
        IdentityError::NotHeaderSafe(_) => "not_header_safe",
    }
}

pub(super) fn header_safe(s: &str) -> bool {
    http::HeaderValue::from_str(s).is_ok()
}

/// Compares [`from_leaf`] with the rules, given the names the certificate
/// holds. `names_safe`: every URI, DNS name and the subject fit in a header.
fn check_identity(der: &[u8], uris: &[&str], dns: &[&str], cn: Option<&str>, names_safe: bool) {
    let got = from_leaf(der);
    let want = expected_principal(uris, dns, cn);
    match (&got, &want) {
        (Ok(id), Ok(p)) => {
            assert_eq!(&id.principal, p, "{uris:?} {dns:?} {cn:?}");
            let form = p.header_form();
            assert_eq!(id.principal_header.as_bytes(), form.as_bytes());
            assert_eq!(
                form.parse::<Principal>().as_ref(),
                Ok(p),
                "{form}: round trip"
            );
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
            assert_eq!(id.cert_sha256, crate::base::hex::hex(digest.as_ref()));
            assert!(id.xfcc.as_bytes().starts_with(b"Hash="));
            assert!(!id.xfcc.as_bytes().iter().any(|b| *b < 0x20 && *b != b'\t'));
        }
        (Err(IdentityError::NotHeaderSafe(_)), Ok(p)) => {
            assert!(
                !names_safe || !header_safe(&p.header_form()),
                "{p:?} refused as not header-safe"
            );
        }
        (Err(e), Err(kind)) => assert_eq!(refusal_kind(e), *kind, "{uris:?} {dns:?} {cn:?}"),
        (got, want) => panic!("{uris:?} {dns:?} {cn:?}: got {got:?}, the rules say {want:?}"),
    }
}

/// The names in a certificate as `from_leaf` sees them.
struct CertNames {
    uris: Vec<String>,
    dns: Vec<String>,
    cn: Option<String>,
    /// Every URI, DNS name and the subject fit in a header.
    header_safe: bool,
}

/// `None` when the certificate (or its SAN extension) does not parse.
fn names(der: &[u8]) -> Option<CertNames> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Some(san) = cert.subject_alternative_name().ok()? {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(String::from);
    let header_safe =
        uris.iter().chain(&dns).all(|s| header_safe(s)) && header_safe(&cert.subject().to_string());
    Some(CertNames {
        uris,
        dns,
        cn,
        header_safe,
    })
}

/// DER bytes as a client certificate: never a panic; when it parses, the
/// principal follows the rules and is tied to the certificate's hash.
pub fn identity_der(data: &[u8]) {
    let Some(n) = names(data) else {
        if let Ok(id) = from_leaf(data) {
            panic!("an unparseable certificate has an identity: {id:?}");
        }
        return;
    };
    let uris: Vec<&str> = n.uris.iter().map(String::as_str).collect();
    let dns: Vec<&str> = n.dns.iter().map(String::as_str).collect();
    check_identity(data, &uris, &dns, n.cn.as_deref(), n.header_safe);
}

/// A certificate built with rcgen from fuzzed names. The input is fields
/// separated by 0xFF; a field's first byte picks what the rest is: 0 URI
/// SAN, 1 DNS SAN, 2 e-mail SAN, 3 IP SAN (4 or 16 bytes), 4..=8 the CN as
/// UTF8String, PrintableString, IA5String, BMPString or TeletexString, 9 an
/// organisation name. Checks the principal against the rules, with the
/// names as they were put in.
pub fn identity_rcgen(data: &[u8]) {
    use rcgen::{CertificateParams, DnType, DnValue, SanType};
    static KEY: OnceLock<rcgen::KeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key pair")
    });
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let mut uris: Vec<String> = Vec::new();
    let mut dns: Vec<String> = Vec::new();
    // The CN as written, and whether from_leaf can read it as text.
    let mut cn: Option<(String, bool)> = None;
    let mut names: Vec<String> = Vec::new();
    for field in data.split(|b| *b == 0xff).take(16) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        let ia5 = || rcgen::string::Ia5String::try_from(text.to_string()).ok();
        match kind % 10 {
            0 => {
                let Some(v) = ia5() else { continue };
                params.subject_alt_names.push(SanType::URI(v));
                uris.push(text.to_string());
            }
            1 => {
                let Some(v) = ia5() else { continue };
                params.subject_alt_names.push(SanType::DnsName(v));
                dns.push(text.to_string());
            }
            2 => {
                let Some(v) = ia5() else { continue };
                params.subject_alt_names.push(SanType::Rfc822Name(v));
                names.push(text.to_string());
            }
            3 => {
                let ip = match value.len() {
                    4 => std::net::IpAddr::from(<[u8; 4]>::try_from(value).expect("4 bytes")),
                    16 => std::net::IpAddr::from(<[u8; 16]>::try_from(value).expect("16 bytes")),
                    _ => continue,
                };
                params.subject_alt_names.push(SanType::IpAddress(ip));
            }
            4 => {
                params
                    .distinguished_name
                    .push(DnType::CommonName, DnValue::Utf8String(text.into()));
                cn = Some((text.to_string(), true));
            }
            5 => {
                // rcgen accepts `?` (X.680 allows it) but yasna 0.6, which
                // writes the DER, panics on it.
                if text.contains('?') {
                    continue;
                }
                let Ok(v) = rcgen::string::PrintableString::try_from(text) else {
                    continue;
                };
                params
                    .distinguished_name
                    .push(DnType::CommonName, DnValue::PrintableString(v));
                cn = Some((text.to_string(), true));
            }
            6 => {
                let Some(v) = ia5() else { continue };
                params
                    .distinguished_name
                    .push(DnType::CommonName, DnValue::Ia5String(v));
                cn = Some((text.to_string(), true));
            }
            7 => {
                let Ok(v) = rcgen::string::BmpString::try_from(text) else {
                    continue;
                };
                params
                    .distinguished_name
                    .push(DnType::CommonName, DnValue::BmpString(v));
                cn = Some((text.to_string(), false));
            }
            8 => {
                let Ok(v) = rcgen::string::TeletexString::try_from(text) else {
                    continue;
                };
                params
                    .distinguished_name
                    .push(DnType::CommonName, DnValue::TeletexString(v));
                cn = Some((text.to_string(), false));
            }
            _ => {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, DnValue::Utf8String(text.into()));
                names.push(text.to_string());
            }
        }
    }
    let Ok(cert) = params.self_signed(key) else {
        return;
    };
    let der = cert.der();
    let readable_cn = cn.as_ref().filter(|(_, r)| *r).map(|(c, _)| c.as_str());
    let safe = uris
        .iter()
        .chain(&dns)
        .chain(&names)
        .chain(cn.iter().map(|(c, _)| c))
        .all(|s| !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f));
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
    check_identity(der, &uris, &dns, readable_cn, safe);
}
