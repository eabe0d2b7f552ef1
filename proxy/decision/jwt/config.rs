//! The `users` section: trusted issuers, their keys, algorithms and claim mapping.

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `users` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    pub issuers: Vec<IssuerConfig>,
    /// Larger tokens are refused unread.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Verified tokens kept (by SHA-256), each until it expires.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

pub(super) fn default_max_token_bytes() -> usize {
    16 * 1024
}

pub(super) fn default_cache_entries() -> usize {
    10_000
}

/// One trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Signing keys from a JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Signing keys from an HTTPS URL.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Find `jwks_uri` at `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// PEM CAs trusted for the HTTPS fetches, besides the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Accepted `alg`s; HS256/384/512 only with `hs_secret_file`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The shared secret for HS* tokens from this issuer.
    #[serde(default)]
    pub hs_secret_file: Option<PathBuf>,
    /// Allowed clock skew for `exp` and `nbf`.
    #[serde(
        default = "default_leeway",
        deserialize_with = "crate::base::yaml::de_duration"
    )]
    pub leeway: Duration,
    /// The longest a token may live: `exp - iat`, and, with or without
    /// `iat`, `exp - now` (plus the leeway). At most a year.
    #[serde(
        default = "default_max_lifetime",
        deserialize_with = "crate::base::yaml::de_duration_or_zero"
    )]
    pub max_lifetime: Duration,
    /// Claims every token must carry (`exp`, `iss`, `aud` and `sub` always are).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// How often keys are fetched again.
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::base::yaml::de_duration"
    )]
    pub refresh: Duration,
    /// At most one extra fetch per this interval for unknown key ids (`0s`:
    /// no limit, meant for a local file; with a URL it is warned about).
    #[serde(
        default = "default_min_refresh",
        deserialize_with = "crate::base::yaml::de_duration_or_zero"
    )]
    pub min_refresh: Duration,
    /// The claim holding the user's groups (parents `Mesh::Group`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim holding scopes: a space-separated string or a list.
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// Cedar attribute of `Mesh::User` -> the claim it comes from and its type.
    #[serde(default)]
    pub attributes: BTreeMap<String, ClaimAttribute>,
}

pub(super) fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .map(String::from)
    .to_vec()
}

pub(super) fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

pub(super) fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The attributes every `Mesh::User` has from the token itself.
pub(super) const BUILT_IN_ATTRIBUTES: [&str; 3] = ["subject", "issuer", "scopes"];

/// The largest `max_lifetime` accepted.
pub(super) const MAX_LIFETIME_BOUND: Duration = Duration::from_secs(366 * 24 * 3600);

pub(super) fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

pub(super) fn default_min_refresh() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_groups_claim() -> String {
    "groups".into()
}

pub(super) fn default_scopes_claim() -> String {
    "scope".into()
}

/// A claim mapped to a `Mesh::User` attribute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimAttribute {
    pub claim: String,
    #[serde(rename = "type")]
    pub kind: AttributeType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    String,
    Long,
    Bool,
    /// A list of strings.
    StringSet,
}

impl UsersConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        for i in &mut self.issuers {
            for p in [&mut i.jwks_file, &mut i.ca, &mut i.hs_secret_file]
                .into_iter()
                .flatten()
            {
                crate::base::paths::resolve(base, p);
            }
        }
    }

    /// Everything that can be checked without fetching: each problem as
    /// `users.issuers[i].field: message`.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.issuers.is_empty() {
            errors.push("users.issuers: at least one issuer".into());
        }
        for (i, c) in self.issuers.iter().enumerate() {
            let mut bad = |field: &str, msg: String| {
                errors.push(format!("users.issuers[{i}].{field}: {msg}"));
            };
            let sources = usize::from(c.jwks_file.is_some())
                + usize::from(c.jwks_url.is_some())
                + usize::from(c.discovery);
            if sources > 1 {
                bad(
                    "jwks_file",
                    "one of jwks_file, jwks_url or discovery".into(),
                );
            }
            if sources == 0 && c.hs_secret_file.is_none() {
                bad(
                    "jwks_file",
                    "no keys: give jwks_file, jwks_url, discovery or hs_secret_file".into(),
                );
            }
            if let Some(u) = &c.jwks_url {
                if !u.starts_with("https://") {
                    bad(
                        "jwks_url",
                        format!("`{u}`: keys are fetched over https only"),
                    );
                }
            }
            if self.issuers[..i].iter().any(|o| o.issuer == c.issuer) {
                bad(
                    "issuer",
                    format!("`{}` is listed twice; give it one entry", c.issuer),
                );
            }
            for name in c.attributes.keys() {
                if BUILT_IN_ATTRIBUTES.contains(&name.as_str()) {
                    bad(
                        &format!("attributes.{name}"),
                        "a built-in attribute of Mesh::User (subject, issuer, scopes), set from the token itself; map the claim to another name".into(),
                    );
                }
            }
            if c.discovery && !c.issuer.starts_with("https://") {
                bad(
                    "discovery",
                    format!("`{}`: discovery needs an https issuer", c.issuer),
                );
            }
            if c.max_lifetime.is_zero() {
                bad(
                    "max_lifetime",
                    "zero would refuse every token; give a positive duration such as 24h".into(),
                );
            }
            if c.max_lifetime > MAX_LIFETIME_BOUND {
                bad(
                    "max_lifetime",
                    format!(
                        "{} s is longer than the bound of {} days",
                        c.max_lifetime.as_secs(),
                        MAX_LIFETIME_BOUND.as_secs() / 86_400
                    ),
                );
            }
            if c.audiences.is_empty() {
                bad("audiences", "at least one audience".into());
            }
            let mut hmac = false;
            for a in &c.algorithms {
                match parse_algorithm(a) {
                    Ok(alg) => hmac |= alg.family() == AlgorithmFamily::Hmac,
                    Err(e) => bad("algorithms", e),
                }
            }
            if hmac && c.hs_secret_file.is_none() {
                bad(
                    "algorithms",
                    "HS256/384/512 need hs_secret_file for this issuer".into(),
                );
            }
            if !hmac && c.hs_secret_file.is_some() {
                bad(
                    "hs_secret_file",
                    "list HS256, HS384 or HS512 in algorithms to use it".into(),
                );
            }
        }
        errors
    }
}

pub(super) fn parse_algorithm(a: &str) -> Result<Algorithm, String> {
    if a.eq_ignore_ascii_case("none") {
        return Err("`none` is never accepted".into());
    }
    let alg: Algorithm = a.parse().map_err(|_| {
        format!("`{a}`: one of RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, HS256/384/512")
    })?;
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512
        | Algorithm::ES256
        | Algorithm::ES384
        | Algorithm::EdDSA
        | Algorithm::HS256
        | Algorithm::HS384
        | Algorithm::HS512 => Ok(alg),
        #[allow(unreachable_patterns)]
        _ => Err(format!("`{a}` is not supported")),
    }
}
