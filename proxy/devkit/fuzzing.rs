//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays every committed seed and regression
//! input through the same functions under plain `cargo test`.
//!
//! Each function takes arbitrary bytes, drives one parser of untrusted input
//! and panics when an invariant does not hold (a panic is what a fuzzer
//! reports). Not part of meshgate's interface.

use std::sync::OnceLock;

use http::Method;

use crate::decision::routes::{Lookup, RouteTable, Target};
use crate::model::path::{normalize, NormalPath};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/` and
/// `fuzz/regressions/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("path_routes", path_routes),
    ("identity_der", identity_der),
    ("identity_rcgen", identity_rcgen),
    ("jwt", jwt),
    ("config", config),
    ("contract", contract),
    ("admission_review", admission_review),
    ("audit_verify", audit_verify),
    ("audit_mutation", audit_mutation),
];

// ---------------------------------------------------------------------------
// Path normalisation + route matching

/// Routes used when an input names none: shaped like the example contracts,
/// with literals beside parameters at several depths.
const DEFAULT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("GET", "/orders/{id}"),
    ("GET", "/orders/_schema"),
    ("GET", "/orders/{id}/items/{item}"),
    ("PUT", "/orders/{id}/items/{item}"),
    ("GET", "/orders/{id}/items/_count"),
    ("GET", "/customers/{id}"),
    ("GET", "/admin/public"),
    ("DELETE", "/admin/{x}/secret"),
    ("GET", "/ledger/summary"),
    ("GET", "/caf\u{e9}/{x}"),
];

/// `METHOD PATH` on the first line (the request), then optionally one route
/// per line as `METHOD PATTERN` (none: [`DEFAULT_ROUTES`]).
///
/// Checks, for every path that normalises: no segment is empty, `.` or `..`
/// or holds `/`, `\`, NUL, a control character or `;`; the encoded form has
/// no `//`, no encoded `/`, `\` or NUL, only pchars and `%XX`, decodes (once,
/// as the upstream does) to exactly the decoded form, and normalises to the
/// same path (idempotent); a raw path with an encoded separator, a backslash
/// or `;` never normalises; and the route table answers what a plain scan of
/// the route list says (literal beats parameter, position by position).
pub fn path_routes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, raw) = match first.split_once(' ') {
        Some((m, p)) => (Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET), p),
        None => (Method::GET, first),
    };
    let mut specs: Vec<(Method, String)> = lines
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            Some((Method::from_bytes(m.as_bytes()).ok()?, p.to_string()))
        })
        .collect();
    if specs.is_empty() {
        specs = DEFAULT_ROUTES
            .iter()
            .map(|(m, p)| {
                (
                    Method::from_bytes(m.as_bytes()).expect("method"),
                    p.to_string(),
                )
            })
            .collect();
    }
    let mut table = RouteTable::new();
    let mut accepted: Vec<(Method, String)> = Vec::new();
    for (i, (m, p)) in specs.into_iter().enumerate() {
        let target = Target {
            product: i,
            action: crate::decision::contract::Action::Read,
            dataset: None,
            pattern: p.clone(),
            user_token: Default::default(),
        };
        if table.insert(m.clone(), &p, target).is_ok() {
            accepted.push((m, p));
        }
    }
    assert_eq!(table.len(), accepted.len());

    let Ok(n) = normalize(raw) else {
        return;
    };
    check_normal_path(raw, &n);

    let got = match table.lookup(&method, &n) {
        Lookup::Found(t) => Some(Some(t.pattern.as_str())),
        Lookup::MethodNotAllowed => Some(None),
        Lookup::NotFound => None,
    };
    let want = reference_lookup(&accepted, &method, &n);
    assert_eq!(
        got,
        want.as_ref().map(|o| o.as_deref()),
        "{method} {raw}: the route table and the route list disagree"
    );
    // What is forwarded routes as what was authorised.
    let again = normalize(&n.encoded()).expect("the encoded form normalises");
    let got_again = match table.lookup(&method, &again) {
        Lookup::Found(t) => Some(Some(t.pattern.as_str())),
        Lookup::MethodNotAllowed => Some(None),
        Lookup::NotFound => None,
    };
    assert_eq!(got, got_again, "{raw}: re-normalised path routes elsewhere");
}

fn check_normal_path(raw: &str, n: &NormalPath) {
    let lower = raw.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "\\", ";", "%3b"] {
        assert!(!lower.contains(bad), "{raw:?} normalised despite {bad}");
    }
    for seg in &n.segments {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{raw:?}: {seg:?}"
        );
        assert!(
            !seg.contains(['/', '\\', ';'])
                && !seg.chars().any(|c| (c as u32) < 0x20 || c == '\x7f'),
            "{raw:?}: segment {seg:?}"
        );
    }
    let decoded = n.decoded();
    let encoded = n.encoded();
    for form in [&decoded, &encoded] {
        assert!(form.starts_with('/'), "{raw:?} -> {form:?}");
        assert!(!form.contains("//"), "{raw:?} -> {form:?}");
        assert!(!form.contains(['\\', '\0']), "{raw:?} -> {form:?}");
        let segs: Vec<&str> = form[1..].split('/').collect();
        assert!(
            !segs.iter().any(|s| *s == "." || *s == ".."),
            "{raw:?} -> {form:?}"
        );
    }
    let upper = encoded.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(bad), "{raw:?} -> {encoded:?}");
    }
    let b = encoded.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            assert!(
                i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(),
                "{raw:?} -> {encoded:?}: bad escape"
            );
            i += 3;
        } else {
            assert!(
                b[i].is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b[i]),
                "{raw:?} -> {encoded:?}: {:?} unescaped",
                b[i] as char
            );
            i += 1;
        }
    }
    assert_eq!(
        percent_decode(&encoded).as_deref(),
        Some(decoded.as_str()),
        "{raw:?}: the upstream would decode something else"
    );
    assert_eq!(
        normalize(&encoded).as_ref(),
        Ok(n),
        "{raw:?}: normalising is not idempotent"
    );
}

/// Decodes `%XX` once, as an upstream server does.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route the documented rules pick, by scanning the list: among the
/// patterns whose segments match (a literal equal, a parameter anything),
/// the one with a literal at the first position where they differ; then the
/// method (HEAD as GET) on that pattern. `None`: not found; `Some(None)`:
/// the path exists, not for this method.
fn reference_lookup(
    routes: &[(Method, String)],
    method: &Method,
    path: &NormalPath,
) -> Option<Option<String>> {
    if path.trailing_slash && !path.segments.is_empty() {
        return None;
    }
    // A pattern's shape: its literals, `None` for a parameter.
    let shape = |p: &str| -> Vec<Option<String>> {
        let rest = &p[1..];
        if rest.is_empty() {
            return Vec::new();
        }
        rest.split('/')
            .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
            .collect()
    };
    let matches = |sh: &[Option<String>]| {
        sh.len() == path.segments.len()
            && sh
                .iter()
                .zip(&path.segments)
                .all(|(l, s)| l.as_ref().is_none_or(|l| l == s))
    };
    let best = routes
        .iter()
        .map(|(_, p)| shape(p))
        .filter(|sh| matches(sh))
        .min_by_key(|sh| sh.iter().map(Option::is_none).collect::<Vec<bool>>())?;
    let want = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    Some(
        routes
            .iter()
            .find(|(m, p)| m == want && shape(p) == best)
            .map(|(_, p)| p.clone()),
    )
}

// ---------------------------------------------------------------------------
// Certificate -> identity

use crate::model::identity::{from_leaf, IdentityError, Principal};

/// What the rules of [`crate::model::identity`] say a certificate's principal is:
/// exactly one `spiffe://` URI SAN (scheme case-insensitive) and it must be a
/// valid SPIFFE id with a path, and the only URI SAN (X509-SVID 5.2); none:
/// the first DNS SAN, else a non-empty CN; several: no identity. `Err` holds
/// the kind of refusal.
fn expected_principal(
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

fn header_safe(s: &str) -> bool {
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

// ---------------------------------------------------------------------------
// JWT parsing + claim mapping

/// Public keys whose private halves were thrown away when they were made:
/// no token can be signed for them.
const JWKS: &str = r#"{"keys":[
{"kty":"EC","crv":"P-256","x":"6ke1RclO3sVbDUjxfEKutRi5zKDtG3QzIVHPwQ86INs","y":"9lqvscbx_B-hVl3Rf9bxXfpuxWfFli-uqJ0PPLnqMfg","kid":"es-1","use":"sig","alg":"ES256"},
{"kty":"OKP","crv":"Ed25519","x":"xip7uMBKZQBrPMMhJcYj-aXQc0oWM2KQyEvuxr-yXBg","kid":"ed-1","use":"sig"},
{"kty":"RSA","n":"zkvGW8hpKu7iuUi0i3GBSCLCsvrTOUBHrgc5MYXN_vMVXYOrAu-OS4ZpoTfqS-qAxat4QYHswjp7Bvc4R7BIYvAbD1sN40b6ctlfG-LyJRGx13-9GG4qwACXXSv7rZhRJjy76SUgGDvJxbWtkCrSLl2n8IaGeWHZaU3aQWe89rYNHniSBFsQLpUVO5tTEDl-a90NoJbRrADpCx0zkwFB2VI_q4NFGq5Cvtf2BV4e-iNjcNhfRdliiYYnMNL1L2MnRpgOH4vjo96ZUA9Bknqmw7MESKp6e84nnXH_svj8UgsNpWSsk1Xyn6o4Ya5BCV8pKPmfA5OQ9SsrOVg0kJHE4w","e":"AQAB","kid":"rs-1","use":"sig","alg":"RS256"}
]}"#;

/// One key without a `kid`: used for tokens that name none.
const JWKS_ANONYMOUS: &str = r#"{"keys":[
{"kty":"EC","crv":"P-256","x":"0Znv9_u6rQDfQE8c-kp9yJYrjm07JjVWSptDSPi8WC8","y":"vSLXtkn9g3_56KBKggtK9ff_tb1GxyyE9rR0PNtpMQ4"}
]}"#;

/// The HMAC secret of the `https://hs.test` issuer. The fuzzer could read it
/// here but cannot compute an HMAC with it.
const HS_SECRET: &str = "meshgate-fuzz-hmac-secret-0123456789abcdef";

/// The trusted issuers the JWT target verifies against.
fn users_yaml(dir: &std::path::Path) -> String {
    format!(
        "issuers:
  - issuer: https://idp.test
    audiences: [meshgate, orders]
    jwks_file: {dir}/jwks.json
    required_claims: [exp]
    attributes:
      department: {{ claim: dept, type: string }}
      level: {{ claim: lvl, type: long }}
      admin: {{ claim: adm, type: bool }}
      teams: {{ claim: teams, type: string_set }}
  - issuer: https://hs.test
    audiences: [meshgate]
    algorithms: [HS256, HS384]
    hs_secret_file: {dir}/hs.secret
    groups_claim: roles
    scopes_claim: scp
  - issuer: https://single.test
    audiences: [meshgate]
    jwks_file: {dir}/single.json
    algorithms: [ES256]
",
        dir = dir.display()
    )
}

struct JwtFixture {
    verifier: std::sync::Arc<crate::decision::jwt::Verifier>,
    users: crate::decision::jwt::UsersConfig,
}

fn jwt_fixture() -> &'static JwtFixture {
    static FIXTURE: OnceLock<JwtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = scratch_dir("jwt");
        std::fs::write(dir.join("jwks.json"), JWKS).expect("write jwks");
        std::fs::write(dir.join("single.json"), JWKS_ANONYMOUS).expect("write jwks");
        std::fs::write(dir.join("hs.secret"), HS_SECRET).expect("write secret");
        let users: crate::decision::jwt::UsersConfig =
            crate::base::yaml::parse_yaml(&users_yaml(&dir), "users.yaml").expect("users config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let verifier = rt
            .block_on(crate::decision::jwt::Verifier::start(&users, None))
            .expect("verifier");
        // The keys are loaded; nothing refreshes them (no refresh task, and
        // `verify_now` never fetches).
        let _ = std::fs::remove_dir_all(&dir);
        JwtFixture { verifier, users }
    })
}

/// A directory of its own for this process's scratch files.
fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshgate-fuzz-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A token (or, when the input starts with `{`, a claims object) against a
/// fixed key set: no token ever verifies, since no one holds the private
/// keys; the claims mapping (as `meshgate authorize --claims` uses it, with
/// the configured issuers and with the defaults) never panics and maps
/// `iss`, `sub`, `exp`, groups, scopes and attributes as configured.
pub fn jwt(data: &[u8]) {
    use base64::Engine;
    let f = jwt_fixture();
    let claims: Option<serde_json::Map<String, serde_json::Value>> = if data.first() == Some(&b'{')
    {
        serde_json::from_slice(data).ok()
    } else {
        let Ok(token) = std::str::from_utf8(data) else {
            return;
        };
        // The Authorization header's parsing, on the way.
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, v);
            if let Ok(Some(t)) = crate::decision::jwt::Verifier::bearer(&headers) {
                assert_eq!(t, token.trim_matches(' '));
            }
        }
        if let Ok(user) = f.verifier.verify_now(token) {
            panic!("a token verified without a signing key: {user:?}");
        }
        token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    let Some(claims) = claims else {
        return;
    };
    for users in [Some(&f.users), None] {
        let Ok(user) = crate::decision::jwt::User::from_claims(users, &claims) else {
            continue;
        };
        check_user(users, &claims, &user);
    }
}

fn check_user(
    users: Option<&crate::decision::jwt::UsersConfig>,
    claims: &serde_json::Map<String, serde_json::Value>,
    user: &crate::decision::jwt::User,
) {
    use crate::decision::jwt::{AttrValue, AttributeType};
    use serde_json::Value;
    let iss = claims.get("iss").and_then(Value::as_str);
    let sub = claims.get("sub").and_then(Value::as_str);
    assert_eq!(Some(user.issuer.as_str()), iss);
    assert_eq!(Some(user.subject.as_str()), sub);
    assert_eq!(user.id, format!("{}|{}", user.issuer, user.subject));
    if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
        assert_eq!(user.expires_at, exp);
    }
    let issuer = users.and_then(|u| u.issuers.iter().find(|i| Some(i.issuer.as_str()) == iss));
    let (groups_claim, scopes_claim) = issuer.map_or(("groups", "scope"), |i| {
        (i.groups_claim.as_str(), i.scopes_claim.as_str())
    });
    let strings = |v: Option<&Value>, split: bool| -> Vec<String> {
        match v {
            None => Vec::new(),
            Some(Value::String(s)) if split => s.split_whitespace().map(String::from).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().expect("mapped groups are strings").to_string())
                .collect(),
            Some(other) => panic!("{other} mapped as strings"),
        }
    };
    assert_eq!(user.groups, strings(claims.get(groups_claim), false));
    assert_eq!(user.scopes, strings(claims.get(scopes_claim), true));
    let configured = issuer.map(|i| &i.attributes);
    for (name, value) in &user.attributes {
        let spec = configured
            .and_then(|a| a.get(name))
            .unwrap_or_else(|| panic!("attribute {name} is not configured"));
        let claim = claims
            .get(&spec.claim)
            .expect("mapped from a present claim");
        match (spec.kind, value) {
            (AttributeType::String, AttrValue::String(s)) => {
                assert_eq!(claim.as_str(), Some(s.as_str()))
            }
            (AttributeType::Long, AttrValue::Long(n)) => assert_eq!(claim.as_i64(), Some(*n)),
            (AttributeType::Bool, AttrValue::Bool(b)) => assert_eq!(claim.as_bool(), Some(*b)),
            (AttributeType::StringSet, AttrValue::Set(s)) => {
                assert_eq!(*s, strings(Some(claim), false))
            }
            (kind, v) => panic!("attribute {name}: {v:?} for type {kind:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration and contracts

/// Checks an error from YAML loading: a syntax or type error carries a
/// position inside the text (1-based) and names a field.
fn check_config_error(text: &str, e: &crate::base::yaml::ConfigError) {
    use crate::base::yaml::ConfigError;
    let shown = e.to_string();
    assert!(!shown.is_empty());
    match e {
        ConfigError::Syntax {
            line,
            column,
            field,
            ..
        } => {
            // libyaml breaks lines at `\n`, `\r\n` and a lone `\r`, and (as
            // YAML 1.1 does) at NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR.
            let lines = text
                .replace("\r\n", "\n")
                .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
                .count();
            assert!(
                *line >= 1 && *line <= lines + 1,
                "line {line} of a {lines}-line text: {shown}"
            );
            assert!(*column >= 1, "{shown}");
            assert!(!field.is_empty(), "{shown}");
        }
        ConfigError::Invalid { field, .. } => assert!(!field.is_empty(), "{shown}"),
        ConfigError::Read { .. } => panic!("text was read from a file: {shown}"),
    }
}

/// YAML bytes as the sidecar's configuration: a `Config` or a typed error
/// with a position, never a panic. Relative paths resolve under a
/// directory that does not exist.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent/meshgate-fuzz");
    match crate::runtime::config::Config::from_text(text, "fuzz.yaml", base) {
        Ok(c) => {
            assert!(c.limits.max_header_bytes >= 8192);
            assert!(c.timeouts.latency_factor.is_finite() && c.timeouts.latency_factor >= 0.0);
            assert!(c.workers != Some(0));
        }
        Err(e) => check_config_error(text, &e),
    }
}

/// YAML bytes as an ODCS contract: a product or a typed error, never a
/// panic. A product's classifications are known ones, its id is usable, its
/// SLA numbers are finite, and its routes load into a route table, each
/// reachable by a path that fills its parameters in.
pub fn contract(data: &[u8]) {
    use crate::decision::contract::CLASSIFICATIONS;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = match crate::decision::contract::parse(text, "fuzz.odcs.yaml") {
        Ok(p) => p,
        Err(e) => return check_config_error(text, &e),
    };
    assert!(CLASSIFICATIONS.contains(&p.classification.as_str()));
    for (name, c) in &p.datasets {
        assert!(CLASSIFICATIONS.contains(&c.as_str()), "{name}: {c}");
    }
    assert!(!p.id.is_empty() && !p.id.contains(['"', '\\', '/']));
    assert!(!p.id.chars().any(char::is_control));
    assert!(!p.domain.is_empty());
    if let Some(a) = p.sla.availability {
        assert!((0.0..=100.0).contains(&a));
    }
    if let Some(t) = p.sla.throughput {
        assert!(t > 0.0 && t.is_finite(), "throughput {t}");
    }
    if let Some(l) = p.sla.latency {
        assert!(!l.is_zero(), "latency {l:?}");
    }
    if let Some(r) = p.sla.error_rate {
        assert!(r.is_finite(), "errorRate {r}");
    }
    let mut table = RouteTable::new();
    let mut accepted: Vec<(Method, String)> = Vec::new();
    for (i, r) in p.routes.iter().enumerate() {
        crate::decision::routes::check_pattern(&r.path).expect("a loaded route's pattern is valid");
        if let Some(d) = &r.dataset {
            assert!(p.datasets.iter().any(|(n, _)| n == d), "dataset {d}");
        }
        let target = Target {
            product: i,
            action: r.action,
            dataset: None,
            pattern: r.path.clone(),
            user_token: r.user_token.unwrap_or(p.user_token),
        };
        if table.insert(r.method.clone(), &r.path, target).is_ok() {
            accepted.push((r.method.clone(), r.path.clone()));
        }
    }
    for (m, pattern) in &accepted {
        let concrete: String = pattern
            .split('/')
            .map(|s| if s.starts_with('{') { "p-1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let n = normalize(&concrete).expect("a filled-in pattern normalises");
        let got = match table.lookup(m, &n) {
            Lookup::Found(t) => Some(Some(t.pattern.clone())),
            Lookup::MethodNotAllowed => Some(None),
            Lookup::NotFound => None,
        };
        let want = reference_lookup(&accepted, m, &n);
        assert!(want.is_some(), "{pattern} does not match {concrete}");
        assert_eq!(got, want, "{m} {concrete}");
    }
}

// ---------------------------------------------------------------------------
// AdmissionReview handling

/// The request's uid, when the body is a v1 AdmissionReview whose
/// `request.uid` is a string.
fn readable_uid(body: Option<&serde_json::Value>) -> Option<String> {
    let v = body?;
    if v.get("apiVersion")?.as_str()? != "admission.k8s.io/v1"
        || v.get("kind")?.as_str()? != "AdmissionReview"
    {
        return None;
    }
    Some(v.get("request")?.get("uid")?.as_str()?.to_string())
}

/// JSON bytes as a review through both webhooks (`/inject` and
/// `/inject-pod`): a review whose uid can be read always gets a response
/// with that uid; an injection's patch applies cleanly (json-patch) to the
/// pod as sent and gives a pod with exactly one sidecar, which a second
/// review (the API server's reinvocation) leaves alone.
pub fn admission_review(data: &[u8]) {
    use crate::k8s::inject::{review, InjectorConfig, Outcome, Selected, SkipReason, CONTAINER};
    use base64::Engine;
    use serde_json::Value;
    static CFG: OnceLock<InjectorConfig> = OnceLock::new();
    let cfg = CFG.get_or_init(InjectorConfig::default);
    // Read as the webhook reads uids: bytes that are not UTF-8 replaced
    // (the typed parse lets them through in fields it skips).
    let request: Option<Value> = serde_json::from_str(&String::from_utf8_lossy(data)).ok();
    let uid = readable_uid(request.as_ref());
    for selected in [Selected::Namespace, Selected::Pod] {
        let answer = match review(cfg, data, selected) {
            Ok(a) => a,
            Err(e) => {
                assert!(uid.is_none(), "the review of {uid:?} got no response: {e}");
                continue;
            }
        };
        let body = crate::k8s::webhook::review_json(answer.response.clone()).expect("serialises");
        let v: Value = serde_json::from_slice(&body).expect("the response is JSON");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        let r = &v["response"];
        assert_eq!(r["uid"].as_str(), uid.as_deref(), "response uid");
        let allowed = r["allowed"].as_bool().expect("allowed");
        let patch = r.get("patch");
        match &answer.outcome {
            Outcome::Injected(_) => assert!(allowed && patch.is_some(), "{r}"),
            Outcome::Skipped(_) => assert!(allowed && patch.is_none(), "{r}"),
            _ => assert!(!allowed && patch.is_none(), "{r}"),
        }
        let Some(patch) = patch else { continue };
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().expect("a base64 string"))
            .expect("base64");
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        let request = request.as_ref().expect("an answered review is JSON");
        let mut pod = request["request"]["object"].clone();
        if let Err(e) = json_patch::patch(&mut pod, &ops) {
            panic!("the patch does not apply to the pod sent: {e}\npatch: {ops:?}");
        }
        let typed: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(pod.clone()).expect("the patched pod parses");
        let spec = typed.spec.expect("spec");
        let sidecars = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| c.name == CONTAINER)
            .count();
        assert_eq!(sidecars, 1, "sidecars in the patched pod");
        // Reinvocation: the API server may call the webhook again with the
        // patched pod.
        let mut again = request.clone();
        again["request"]["object"] = pod;
        let second = review(cfg, again.to_string().as_bytes(), selected).expect("answered");
        assert!(
            matches!(
                second.outcome,
                Outcome::Skipped(SkipReason::AlreadyInjected)
            ),
            "second review: {:?}",
            second.outcome
        );
    }
}

// ---------------------------------------------------------------------------
// Audit-chain verification

/// Writes arbitrary files (the input split at 0xFF bytes, at most four, the
/// first byte's low bit choosing the mode) and verifies them in order. In
/// mode 1 every line that has a chain field gets the chain its content
/// and `prev` call for, so that the checks past the hash are reached too.
/// Never a panic; a chain that verifies has only complete lines and no
/// more events than lines.
pub fn audit_verify(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir("audit-verify");
    let mut paths = Vec::new();
    let mut lines = 0u64;
    let mut all_complete = true;
    for (i, content) in rest.split(|b| *b == 0xff).take(4).enumerate() {
        let content = if mode & 1 == 1 {
            rechain(content)
        } else {
            content.to_vec()
        };
        lines += content.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        all_complete &= content.is_empty() || content.last() == Some(&b'\n');
        let path = dir.join(format!("audit.{i}"));
        std::fs::write(&path, &content).expect("write");
        paths.push(path);
    }
    if let Ok(v) = crate::observe::audit::verify(&paths) {
        assert!(all_complete, "a torn file verified: {v:?}");
        assert!(v.events <= lines, "{v:?} from {lines} lines");
        assert_eq!(v.first_seq.is_some(), v.last_seq.is_some());
    }
}

/// Recomputes each line's chain field from its content and the chain it
/// continues (its own `prev`, else the line before's chain).
fn rechain(content: &[u8]) -> Vec<u8> {
    const FIELD: &[u8] = b",\"chain\":\"";
    let mut running = crate::observe::audit::GENESIS.to_string();
    let mut out = Vec::with_capacity(content.len());
    let mut pieces = content.split(|b| *b == b'\n').peekable();
    while let Some(line) = pieces.next() {
        let mut line = line.to_vec();
        if let Some(at) = line.windows(FIELD.len()).rposition(|w| w == FIELD) {
            let tail = at + FIELD.len();
            if line.len() == tail + 66 && line.ends_with(b"\"}") {
                let prev = serde_json::from_slice::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("prev")?.as_str().map(String::from))
                    .unwrap_or_else(|| running.clone());
                let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                ctx.update(prev.as_bytes());
                ctx.update(&line[..at]);
                ctx.update(b"}");
                let chain = crate::base::hex::hex(ctx.finish().as_ref());
                line[tail..tail + 64].copy_from_slice(chain.as_bytes());
                running = chain;
            }
        }
        out.extend_from_slice(&line);
        if pieces.peek().is_some() {
            out.push(b'\n');
        }
    }
    out
}

/// Files written by the real audit writer: events with awkward paths, a
/// rotation every 4 KiB, and a second writer that resumes the chain.
/// Oldest first, as `meshgate audit verify` takes them (public for seeding
/// the `audit_verify` corpus).
pub fn audit_golden() -> &'static [(String, Vec<u8>)] {
    static GOLDEN: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        use crate::observe::audit::{Audit, AuditConfig, FullMode, SinkKind};
        use std::time::{Duration, UNIX_EPOCH};
        // The node name is in every line: fixed, so that positions in the
        // committed inputs mean the same bytes on every machine.
        std::env::set_var("NODE_NAME", "fuzz-node");
        let dir = scratch_dir("audit-golden");
        let file = dir.join("audit.log");
        let config = AuditConfig {
            sink: SinkKind::File,
            file: Some(file.clone()),
            max_file_bytes: 4096,
            retain: 20,
            queue: 64,
            when_full: FullMode::Block,
            max_wait: Duration::from_secs(10),
            flush_interval: Duration::from_millis(1),
        };
        let principal: Principal = "spiffe://acme.example/ns/finance/sa/reporting"
            .parse()
            .expect("principal");
        let conn = std::sync::Arc::new(crate::model::connection::ConnInfo {
            identity: crate::model::identity::PeerIdentity {
                principal_header: http::HeaderValue::from_static(
                    "spiffe://acme.example/ns/finance/sa/reporting",
                ),
                principal,
                xfcc: http::HeaderValue::from_static("Hash=00"),
                cert_sha256: "00".into(),
            },
            peer: "127.0.0.1:40000".parse().expect("addr"),
            peer_ip: http::HeaderValue::from_static("127.0.0.1"),
            tls_version: "TLSv1.3",
        });
        let user = std::sync::Arc::new(crate::decision::jwt::User {
            id: "https://idp.test|al\"ice".into(),
            issuer: "https://idp.test".into(),
            subject: "al\"ice".into(),
            groups: vec!["finance".into()],
            scopes: vec![],
            attributes: vec![],
            expires_at: u64::MAX,
        });
        let paths = [
            "/orders/1",
            "/orders/%2F",
            "/a b\"\n{\"seq\":0}",
            "/caf\u{e9}/\u{1F600}",
            "/\u{0}\u{1b}[31m\r\n",
            "/ledger/summary",
            "/orders/42/items/7",
            "/x\\y",
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for round in 0..2u64 {
            let (audit, writer) =
                Audit::start(&config, crate::observe::metrics::Metrics::new().audit)
                    .expect("audit starts")
                    .expect("audit on");
            rt.block_on(async {
                for i in 0..12u64 {
                    let slot = audit.slot().await.expect("slot").expect("a place");
                    slot.send(crate::observe::audit::Event {
                        time: UNIX_EPOCH + Duration::from_secs(1_780_000_000 + round * 100 + i),
                        request_id: http::HeaderValue::from_static("req-0123"),
                        trace_id: [i as u8; 16],
                        conn: conn.clone(),
                        user: (i % 3 == 0).then(|| user.clone()),
                        tier: None,
                        outcome: None,
                        policy_version: Some("v1".into()),
                        method: if i % 2 == 0 {
                            Method::GET
                        } else {
                            Method::POST
                        },
                        path: paths[(i as usize) % paths.len()].to_string(),
                        decision: "no_route",
                        error: Some("no_route"),
                        status: 404,
                        upstream: None,
                        duration: Duration::from_micros(12 + i),
                        bytes_in: i,
                        bytes_out: 10 * i,
                        complete: i % 5 != 4,
                    });
                }
                assert!(audit.flush(Duration::from_secs(10)).await, "audit flush");
            });
            drop(audit);
            assert!(writer.join(Duration::from_secs(10)), "audit writer ends");
        }
        let mut files = Vec::new();
        for n in (1..=20).rev() {
            let p = dir.join(format!("audit.log.{n}"));
            if let Ok(b) = std::fs::read(&p) {
                files.push((format!("audit.log.{n}"), b));
            }
        }
        files.push((
            "audit.log".to_string(),
            std::fs::read(&file).expect("audit.log"),
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(files.len() >= 3, "the golden files rotate");
        files
    })
}

/// The golden files written once into this process's scratch directory.
fn audit_mutation_dir() -> &'static (std::path::PathBuf, Vec<std::path::PathBuf>) {
    static DIR: OnceLock<(std::path::PathBuf, Vec<std::path::PathBuf>)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("audit-mutation");
        let paths: Vec<_> = audit_golden()
            .iter()
            .map(|(name, bytes)| {
                let p = dir.join(name);
                std::fs::write(&p, bytes).expect("write");
                p
            })
            .collect();
        let v = crate::observe::audit::verify(&paths).expect("the writer's files verify");
        assert_eq!(v.events, 24);
        (dir, paths)
    })
}

/// The real writer's files with one byte replaced, inserted or deleted
/// (input: operation, position as 4 little-endian bytes, byte): verify
/// reports a break at exactly that file and line, unless the byte was
/// replaced by itself.
pub fn audit_mutation(data: &[u8]) {
    let [op, p0, p1, p2, p3, byte, ..] = *data else {
        return;
    };
    let golden = audit_golden();
    let (_, paths) = audit_mutation_dir();
    let total: usize = golden.iter().map(|(_, b)| b.len() + 1).sum();
    let mut pos = u32::from_le_bytes([p0, p1, p2, p3]) as usize % total;
    let mut which = 0;
    while pos > golden[which].1.len() {
        pos -= golden[which].1.len() + 1;
        which += 1;
    }
    let original = &golden[which].1;
    let mut mutated = original.clone();
    let op = op % 3;
    let no_op = match op {
        0 if pos < original.len() => {
            mutated[pos] = byte;
            original[pos] == byte
        }
        1 | 0 => {
            mutated.insert(pos, byte);
            false
        }
        _ if pos < original.len() => {
            mutated.remove(pos);
            false
        }
        _ => return,
    };
    let mut line = 1 + original[..pos].iter().filter(|b| **b == b'\n').count();
    if op == 1 && byte == b'\n' && original.get(pos) == Some(&b'\n') {
        // A newline put before a line's own: the line stays whole and the
        // empty line after it is the break.
        line += 1;
    }
    std::fs::write(&paths[which], &mutated).expect("write");
    let result = crate::observe::audit::verify(paths);
    std::fs::write(&paths[which], original).expect("restore");
    match result {
        Ok(v) => assert!(
            no_op,
            "{} byte {pos} (op {op}, {byte:#04x}) changed and the files verify: {v:?}",
            golden[which].0
        ),
        Err(brk) => {
            assert!(!no_op, "unchanged files break: {brk}");
            assert_eq!(
                (brk.file.as_str(), brk.line),
                (paths[which].to_str().expect("utf-8 path"), line),
                "{brk}"
            );
        }
    }
}
