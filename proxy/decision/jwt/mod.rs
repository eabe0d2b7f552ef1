//! End-user identity: bearer JWTs verified against trusted issuers' keys and
//! turned into the claims a Cedar `Mesh::User` is made of.
//!
//! Each trusted issuer names its accepted audiences, its signing keys (a JWKS
//! file, an HTTPS URL, or OIDC discovery from the issuer URL), the algorithms
//! it may use, a clock leeway and required claims. `none` is never accepted;
//! HMAC algorithms only for an issuer with an explicitly configured secret, so
//! a public key can never be used as an HMAC secret. Keys are refreshed on an
//! interval and, rate-limited, when a token names a key id not yet known; a
//! failed fetch keeps the keys already held. Verified tokens are cached by
//! their SHA-256 until they expire.

mod metrics;

pub use metrics::{IssuerLabels, IssuerResultLabels, JwtMetrics, TokenResultLabels};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

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

fn default_max_token_bytes() -> usize {
    16 * 1024
}

fn default_cache_entries() -> usize {
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
    /// no limit, for a local file).
    #[serde(default = "default_min_refresh", deserialize_with = "de_interval")]
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

fn de_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("`{s}`: {e} (e.g. 10s, 1m)")))
}

fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .map(String::from)
    .to_vec()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_min_refresh() -> Duration {
    Duration::from_secs(10)
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes_claim() -> String {
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
            if c.discovery && !c.issuer.starts_with("https://") {
                bad(
                    "discovery",
                    format!("`{}`: discovery needs an https issuer", c.issuer),
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

fn parse_algorithm(a: &str) -> Result<Algorithm, String> {
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

/// Why a token was refused. `reason()` is the metric label; `Display` the
/// `error_description`, which never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a bearer token is required")]
    Missing,
    #[error("one Authorization header with a Bearer token is allowed")]
    BadHeader,
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("alg none is not accepted")]
    AlgNone,
    #[error("the token's algorithm is not accepted for its issuer")]
    AlgNotAllowed,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("the token's signing key is not known")]
    UnknownKey,
    #[error("no signing keys are available for the token's issuer")]
    NoKeys,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token lacks the claim `{0}`")]
    MissingClaim(String),
    #[error("the token's claim `{0}` has the wrong type")]
    BadClaim(String),
}

impl TokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::BadHeader => "bad_header",
            TokenError::TooLarge(_) => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::AlgNone => "alg_none",
            TokenError::AlgNotAllowed => "alg_not_allowed",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::NoKeys => "no_keys",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadClaim(_) => "bad_claim",
        }
    }
}

/// A claim value mapped to a Cedar attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    String(String),
    Long(i64),
    Bool(bool),
    Set(Vec<String>),
}

/// A verified end user, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `<issuer>|<sub>`: the `Mesh::User` entity id.
    pub id: String,
    pub issuer: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    /// Configured attributes present in the token.
    pub attributes: Vec<(String, AttrValue)>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
}

impl User {
    /// A user from a token's claims given directly, without a signature (for
    /// `meshgate authorize --claims` and `claims:` in test cases): mapped as
    /// the configured issuer named by `iss` says, or with the default mapping
    /// (`groups`, `scope`, no attributes) when there is no `users` section.
    /// `exp` may be left out.
    pub fn from_claims(
        users: Option<&UsersConfig>,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<User, String> {
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or("claims: `iss` (a string) is required")?;
        let default;
        let issuer = match users {
            Some(u) => u
                .issuers
                .iter()
                .find(|i| i.issuer == iss)
                .ok_or_else(|| format!("claims: `{iss}` is not a configured issuer"))?,
            None => {
                default = serde_json::from_value::<IssuerConfig>(
                    serde_json::json!({ "issuer": iss, "audiences": [] }),
                )
                .map_err(|e| e.to_string())?;
                &default
            }
        };
        let mut claims = claims.clone();
        claims
            .entry("exp")
            .or_insert_with(|| serde_json::Value::from(u64::MAX));
        map_claims(issuer, &claims).map_err(|e| format!("claims: {e}"))
    }
}

/// A user written out directly, as `meshgate test` cases and `meshgate
/// authorize --user` give it: what a verified token would have mapped to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub issuer: String,
    pub subject: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Attribute -> a string, integer, boolean or list of strings.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl UserSpec {
    pub fn to_user(&self) -> Result<User, String> {
        use serde_json::Value;
        let mut attributes = Vec::new();
        for (name, v) in &self.attributes {
            let value = match v {
                Value::String(s) => AttrValue::String(s.clone()),
                Value::Bool(b) => AttrValue::Bool(*b),
                Value::Number(n) => AttrValue::Long(
                    n.as_i64()
                        .ok_or_else(|| format!("attributes.{name}: not a 64-bit integer"))?,
                ),
                Value::Array(items) => AttrValue::Set(
                    items
                        .iter()
                        .map(|i| i.as_str().map(String::from))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("attributes.{name}: a list of strings"))?,
                ),
                _ => {
                    return Err(format!(
                        "attributes.{name}: a string, integer, boolean or list of strings"
                    ))
                }
            };
            attributes.push((name.clone(), value));
        }
        Ok(User {
            id: format!("{}|{}", self.issuer, self.subject),
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            groups: self.groups.clone(),
            scopes: self.scopes.clone(),
            attributes,
            expires_at: u64::MAX,
        })
    }
}

/// One signing key from a JWKS.
struct Key {
    key: DecodingKey,
    /// The JWK's `alg`, when it names one: the token must use exactly it.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`: used only for tokens without one, when alone.
    anonymous: Vec<Arc<Key>>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Public signing keys of a JWKS; symmetric (`oct`) keys and keys meant
    /// for encryption are skipped.
    fn from_jwks(set: &JwkSet) -> KeySet {
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk.common.key_algorithm.and_then(|a| key_algorithm(a).ok());
            if jwk.common.key_algorithm.is_some() && alg.is_none() {
                continue;
            }
            let family = key.family();
            let entry = Arc::new(Key { key, alg, family });
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), entry);
                }
                None => keys.anonymous.push(entry),
            }
        }
        keys
    }
}

fn key_algorithm(a: KeyAlgorithm) -> Result<Algorithm, ()> {
    Ok(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return Err(()),
    })
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    File(PathBuf),
    Url(String),
    Discovery(String),
    /// Only an HMAC secret.
    None,
}

struct Issuer {
    config: IssuerConfig,
    source: KeySource,
    algorithms: Vec<Algorithm>,
    validation: HashMap<Algorithm, Validation>,
    secret: Option<DecodingKey>,
    keys: ArcSwap<KeySet>,
    /// When keys were last fetched because of an unknown key id.
    last_forced: Mutex<Option<Instant>>,
    http: Option<crate::base::fetch::Client>,
}

/// Verifies bearer tokens for every configured issuer.
pub struct Verifier {
    issuers: Vec<Arc<Issuer>>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<User>>,
    max_token_bytes: usize,
    metrics: Option<JwtMetrics>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| i.config.issuer.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Verifier {
    /// Builds the verifier and fetches every issuer's keys once. A fetch that
    /// fails is logged and counted; that issuer's tokens are refused until a
    /// later refresh succeeds.
    pub async fn start(
        config: &UsersConfig,
        metrics: Option<JwtMetrics>,
    ) -> Result<Arc<Verifier>, String> {
        let errors = config.check();
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let mut issuers = Vec::new();
        for (i, c) in config.issuers.iter().enumerate() {
            let field = |f: &str| format!("users.issuers[{i}].{f}");
            let secret = match &c.hs_secret_file {
                None => None,
                Some(p) => {
                    let bytes = std::fs::read(p).map_err(|e| {
                        format!("{}: {}: {e}", field("hs_secret_file"), p.display())
                    })?;
                    let trimmed = bytes.trim_ascii();
                    if trimmed.len() < 32 {
                        return Err(format!(
                            "{}: {}: a secret of at least 32 bytes",
                            field("hs_secret_file"),
                            p.display()
                        ));
                    }
                    Some(DecodingKey::from_secret(trimmed))
                }
            };
            let source = if let Some(p) = &c.jwks_file {
                KeySource::File(p.clone())
            } else if let Some(u) = &c.jwks_url {
                KeySource::Url(u.clone())
            } else if c.discovery {
                KeySource::Discovery(format!(
                    "{}/.well-known/openid-configuration",
                    c.issuer.trim_end_matches('/')
                ))
            } else {
                KeySource::None
            };
            let http = match source {
                KeySource::Url(_) | KeySource::Discovery(_) => Some(
                    crate::base::fetch::Client::new(c.ca.as_deref())
                        .map_err(|e| format!("{}: {e}", field("ca")))?,
                ),
                _ => None,
            };
            let algorithms: Vec<Algorithm> = c
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a).ok())
                .collect();
            let validation = algorithms
                .iter()
                .map(|&alg| {
                    let mut v = Validation::new(alg);
                    v.set_issuer(&[c.issuer.as_str()]);
                    v.set_audience(&c.audiences);
                    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                    v.leeway = c.leeway.as_secs();
                    v.validate_nbf = true;
                    (alg, v)
                })
                .collect();
            issuers.push(Arc::new(Issuer {
                config: c.clone(),
                source,
                algorithms,
                validation,
                secret,
                keys: ArcSwap::from_pointee(KeySet::default()),
                last_forced: Mutex::new(None),
                http,
            }));
        }
        let verifier = Arc::new(Verifier {
            issuers,
            cache: quick_cache::sync::Cache::new(config.cache_entries.max(1)),
            max_token_bytes: config.max_token_bytes,
            metrics,
        });
        for issuer in &verifier.issuers {
            verifier.refresh(issuer).await;
        }
        Ok(verifier)
    }

    /// Refreshes every issuer's keys on its interval, until the runtime ends.
    pub fn spawn_refresh(self: &Arc<Self>) {
        for (i, issuer) in self.issuers.iter().enumerate() {
            if matches!(issuer.source, KeySource::None) {
                continue;
            }
            let every = issuer.config.refresh.max(Duration::from_secs(1));
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(v) = me.upgrade() else { return };
                    let Some(issuer) = v.issuers.get(i).cloned() else {
                        return;
                    };
                    v.refresh(&issuer).await;
                }
            });
        }
    }

    /// Fetches an issuer's keys and swaps them in; on failure keeps the old.
    async fn refresh(&self, issuer: &Issuer) -> bool {
        let name = issuer.config.issuer.clone();
        let fetched = match &issuer.source {
            KeySource::None => return false,
            KeySource::File(p) => tokio::fs::read(p)
                .await
                .map_err(|e| format!("{}: {e}", p.display())),
            KeySource::Url(u) => match &issuer.http {
                Some(c) => c.get(u).await,
                None => Err("no client".into()),
            },
            KeySource::Discovery(u) => match &issuer.http {
                Some(c) => discover(c, u).await,
                None => Err("no client".into()),
            },
        };
        let parsed = fetched.and_then(|bytes| {
            serde_json::from_slice::<JwkSet>(&bytes).map_err(|e| format!("not a JWKS: {e}"))
        });
        let result = match parsed {
            Ok(set) => {
                let keys = KeySet::from_jwks(&set);
                if keys.len() == 0 {
                    Err("the JWKS holds no usable signing key".to_string())
                } else {
                    let old = issuer.keys.swap(Arc::new(keys));
                    let new = issuer.keys.load();
                    // A key withdrawn at the issuer no longer vouches for cached tokens.
                    if old.by_kid.keys().any(|k| !new.by_kid.contains_key(k))
                        || old.anonymous.len() > new.anonymous.len()
                    {
                        self.cache.clear();
                    }
                    tracing::info!(issuer = %name, keys = new.len(), "signing keys loaded");
                    Ok(new.len())
                }
            }
            Err(e) => Err(e),
        };
        if let Some(m) = &self.metrics {
            let label = match &result {
                Ok(n) => {
                    m.jwks_keys
                        .get_or_create(&IssuerLabels {
                            issuer: name.clone(),
                        })
                        .set(*n as i64);
                    "ok"
                }
                Err(_) => "error",
            };
            m.jwks_refreshes
                .get_or_create(&IssuerResultLabels {
                    issuer: name.clone(),
                    result: label,
                })
                .inc();
        }
        match result {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(issuer = %name, error = %e, kept = issuer.keys.load().len(), "signing keys could not be fetched; keeping the keys held");
                false
            }
        }
    }

    /// The bearer token of a request: exactly one `Authorization` header with
    /// the `Bearer` scheme. `Ok(None)` when there is none.
    pub fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, TokenError> {
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(TokenError::BadHeader);
        }
        let value = value.to_str().map_err(|_| TokenError::BadHeader)?;
        let (scheme, token) = value.split_once(' ').ok_or(TokenError::BadHeader)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::BadHeader);
        }
        let token = token.trim_matches(' ');
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        Ok(Some(token))
    }

    /// Verifies a token, fetching the issuer's keys again (rate-limited) when
    /// the token names a key not yet known. Counts the result.
    pub async fn verify(&self, token: &str) -> Result<Arc<User>, TokenError> {
        let result = match self.verify_now(token) {
            Err(TokenError::UnknownKey) | Err(TokenError::NoKeys) => match self.issuer_of(token) {
                Some(issuer) if self.may_force(&issuer) => {
                    self.refresh(&issuer).await;
                    self.verify_now(token)
                }
                _ => self.verify_now(token),
            },
            other => other,
        };
        self.count(&result);
        result
    }

    /// Counts a refusal that happened before verification (missing token).
    pub fn count(&self, result: &Result<Arc<User>, TokenError>) {
        if let Some(m) = &self.metrics {
            let label = match result {
                Ok(_) => "ok",
                Err(e) => e.reason(),
            };
            m.user_tokens
                .get_or_create(&TokenResultLabels { result: label })
                .inc();
        }
    }

    fn may_force(&self, issuer: &Issuer) -> bool {
        if matches!(issuer.source, KeySource::None) {
            return false;
        }
        let Ok(mut last) = issuer.last_forced.lock() else {
            return false;
        };
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < issuer.config.min_refresh => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    fn issuer_of(&self, token: &str) -> Option<Arc<Issuer>> {
        let claims = peek_claims(token).ok()?;
        let iss = claims.get("iss")?.as_str()?;
        self.issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .cloned()
    }

    /// Verifies with the keys held now: from the cache when this exact token
    /// was verified before and has not expired since.
    pub fn verify_now(&self, token: &str) -> Result<Arc<User>, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge(self.max_token_bytes));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let now = now_secs();
        if let Some(user) = self.cache.get(&key) {
            if now < user.expires_at {
                return Ok(user);
            }
            self.cache.remove(&key);
        }
        let user = Arc::new(self.verify_uncached(token)?);
        if now < user.expires_at {
            self.cache.insert(key, user.clone());
        }
        Ok(user)
    }

    fn verify_uncached(&self, token: &str) -> Result<User, TokenError> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => {
                return Err(if header_alg(token).as_deref() == Some("none") {
                    TokenError::AlgNone
                } else {
                    TokenError::Malformed
                })
            }
        };
        // RFC 7515 4.1.11: extensions the issuer marks critical must be
        // understood, and none is here.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let claims = peek_claims(token)?;
        let iss = claims
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(TokenError::UnknownIssuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(TokenError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgNotAllowed);
        }
        let keys = issuer.keys.load();
        let key: &DecodingKey = if header.alg.family() == AlgorithmFamily::Hmac {
            issuer.secret.as_ref().ok_or(TokenError::AlgNotAllowed)?
        } else {
            if keys.len() == 0 {
                return Err(TokenError::NoKeys);
            }
            let k = match &header.kid {
                Some(kid) => keys.by_kid.get(kid).ok_or(TokenError::UnknownKey)?,
                None if keys.len() == 1 => keys
                    .anonymous
                    .first()
                    .or_else(|| keys.by_kid.values().next())
                    .ok_or(TokenError::UnknownKey)?,
                None => return Err(TokenError::UnknownKey),
            };
            if k.family != header.alg.family() || k.alg.is_some_and(|a| a != header.alg) {
                return Err(TokenError::AlgNotAllowed);
            }
            &k.key
        };
        let validation = issuer
            .validation
            .get(&header.alg)
            .ok_or(TokenError::AlgNotAllowed)?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )
        .map_err(|e| map_error(e.kind()))?;
        map_claims(&issuer.config, &data.claims)
    }
}

fn map_error(kind: &jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => TokenError::BadSignature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidAudience => TokenError::WrongAudience,
        K::InvalidIssuer => TokenError::UnknownIssuer,
        K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        K::InvalidClaimFormat(c) => TokenError::BadClaim(c.clone()),
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
            TokenError::AlgNotAllowed
        }
        K::InvalidEcdsaKey | K::InvalidEddsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
            TokenError::BadSignature
        }
        _ => TokenError::Malformed,
    }
}

fn b64(part: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

/// The `alg` of a header jsonwebtoken refused (to tell `none` apart).
fn header_alg(token: &str) -> Option<String> {
    let header = b64(token.split('.').next()?)?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    Some(v.get("alg")?.as_str()?.to_ascii_lowercase())
}

/// The claims before verification: only to choose the issuer.
fn peek_claims(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = b64(payload).ok_or(TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn map_claims(
    c: &IssuerConfig,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<User, TokenError> {
    use serde_json::Value;
    for name in &c.required_claims {
        if !claims.contains_key(name) {
            return Err(TokenError::MissingClaim(name.clone()));
        }
    }
    let string = |name: &str| -> Result<String, TokenError> {
        match claims.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(TokenError::BadClaim(name.into())),
            None => Err(TokenError::MissingClaim(name.into())),
        }
    };
    let strings = |name: &str, split: bool| -> Result<Vec<String>, TokenError> {
        match claims.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) if split => Ok(s.split_whitespace().map(String::from).collect()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| TokenError::BadClaim(name.into()))
                })
                .collect(),
            Some(_) => Err(TokenError::BadClaim(name.into())),
        }
    };
    let issuer = string("iss")?;
    let subject = string("sub")?;
    let expires_at = match claims.get("exp") {
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().map(|f| f as u64))
            .ok_or_else(|| TokenError::BadClaim("exp".into()))?,
        None => return Err(TokenError::MissingClaim("exp".into())),
    };
    let mut attributes = Vec::new();
    for (attr, spec) in &c.attributes {
        let Some(v) = claims.get(&spec.claim) else {
            continue;
        };
        let bad = || TokenError::BadClaim(spec.claim.clone());
        let value = match spec.kind {
            AttributeType::String => AttrValue::String(v.as_str().ok_or_else(bad)?.to_string()),
            AttributeType::Long => AttrValue::Long(v.as_i64().ok_or_else(bad)?),
            AttributeType::Bool => AttrValue::Bool(v.as_bool().ok_or_else(bad)?),
            AttributeType::StringSet => AttrValue::Set(strings(&spec.claim, false)?),
        };
        attributes.push((attr.clone(), value));
    }
    Ok(User {
        id: format!("{issuer}|{subject}"),
        groups: strings(&c.groups_claim, false)?,
        scopes: strings(&c.scopes_claim, true)?,
        issuer,
        subject,
        attributes,
        expires_at,
    })
}

/// OIDC discovery: the provider document's `jwks_uri`, then the keys.
async fn discover(client: &crate::base::fetch::Client, url: &str) -> Result<Vec<u8>, String> {
    let doc = client.get(url).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&doc).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let jwks = v
        .get("jwks_uri")
        .and_then(|u| u.as_str())
        .ok_or_else(|| format!("{url}: no jwks_uri"))?;
    if !jwks.starts_with("https://") {
        return Err(format!("{url}: jwks_uri `{jwks}` is not https"));
    }
    client.get(jwks).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISS: &str = "https://idp.test";

    struct Signer {
        key: EncodingKey,
        alg: Algorithm,
        kid: String,
    }

    fn es256(kid: &str) -> (Signer, Jwk) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        (
            Signer {
                key,
                alg: Algorithm::ES256,
                kid: kid.into(),
            },
            jwk,
        )
    }

    fn now() -> u64 {
        now_secs()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISS, "sub": "alice", "aud": "meshgate", "exp": now() + 600,
               "groups": ["finance-analysts"], "scope": "ledger:read ledger:list", "dept": "finance"})
    }

    fn sign(s: &Signer, claims: &serde_json::Value) -> String {
        let mut h = Header::new(s.alg);
        h.kid = Some(s.kid.clone());
        jsonwebtoken::encode(&h, claims, &s.key).expect("sign")
    }

    async fn verifier(dir: &Path, jwks: &[Jwk]) -> Arc<Verifier> {
        let file = dir.join("jwks.json");
        std::fs::write(&file, json!({ "keys": jwks }).to_string()).expect("write jwks");
        let yaml = format!(
            "issuers:\n  - issuer: {ISS}\n    audiences: [meshgate]\n    jwks_file: {}\n    min_refresh: 0s\n    attributes: {{ department: {{ claim: dept, type: string }} }}\n",
            file.display()
        );
        let cfg: UsersConfig = crate::base::yaml::parse_yaml(&yaml, "users.yaml").expect("config");
        Verifier::start(&cfg, None).await.expect("verifier")
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[tokio::test]
    async fn a_valid_token_maps_to_a_user_and_every_attack_is_refused_with_its_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let (signer, jwk) = es256("k1");
        let v = verifier(dir.path(), std::slice::from_ref(&jwk)).await;

        let token = sign(&signer, &claims());
        let user = v.verify(&token).await.expect("valid token");
        assert_eq!(user.id, "https://idp.test|alice");
        assert_eq!(user.groups, vec!["finance-analysts"]);
        assert_eq!(user.scopes, vec!["ledger:read", "ledger:list"]);
        assert_eq!(
            user.attributes,
            vec![(
                "department".to_string(),
                AttrValue::String("finance".into())
            )]
        );
        // The second time comes from the cache, the same user.
        assert_eq!(v.verify(&token).await.expect("cached"), user);

        let refused = |t: String| {
            let v = v.clone();
            async move { v.verify(&t).await.expect_err("must be refused") }
        };
        let [h, p, sig]: [&str; 3] = token
            .split('.')
            .collect::<Vec<_>>()
            .try_into()
            .expect("three parts");

        // alg none, unsigned.
        let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            refused(format!("{none_header}.{p}.")).await,
            TokenError::AlgNone
        );
        // HS256 "signed" with the public key as the secret (key confusion).
        let public = serde_json::to_vec(&jwk).expect("jwk json");
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let confused = jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(&public))
            .expect("hs256");
        assert_eq!(refused(confused).await, TokenError::AlgNotAllowed);
        // Time.
        let mut c = claims();
        c["exp"] = json!(now() - 3600);
        assert_eq!(refused(sign(&signer, &c)).await, TokenError::Expired);
        let mut c = claims();
        c["nbf"] = json!(now() + 3600);
        assert_eq!(refused(sign(&signer, &c)).await, TokenError::NotYetValid);
        // Audience and issuer.
        let mut c = claims();
        c["aud"] = json!("someone-else");
        assert_eq!(refused(sign(&signer, &c)).await, TokenError::WrongAudience);
        let mut c = claims();
        c["iss"] = json!("https://evil.test");
        assert_eq!(refused(sign(&signer, &c)).await, TokenError::UnknownIssuer);
        // A key the issuer never published.
        let (stranger, _) = es256("k-unknown");
        assert_eq!(
            refused(sign(&stranger, &claims())).await,
            TokenError::UnknownKey
        );
        // Tampered payload and header, same signature.
        let mut c = claims();
        c["groups"] = json!(["admins"]);
        let forged_payload = b64(c.to_string().as_bytes());
        assert_eq!(
            refused(format!("{h}.{forged_payload}.{sig}")).await,
            TokenError::BadSignature
        );
        let forged_header = b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT","x":1}"#);
        assert_eq!(
            refused(format!("{forged_header}.{p}.{sig}")).await,
            TokenError::BadSignature
        );
        // Oversized.
        let mut c = claims();
        c["pad"] = json!("x".repeat(17 * 1024));
        assert_eq!(
            refused(sign(&signer, &c)).await,
            TokenError::TooLarge(16 * 1024)
        );
        // Claims of the wrong type.
        let mut c = claims();
        c["dept"] = json!(42);
        assert_eq!(
            refused(sign(&signer, &c)).await,
            TokenError::BadClaim("dept".into())
        );
        // A critical header extension, signed by the real key: not
        // understood here, so the token is refused (RFC 7515 4.1.11).
        let mut crit = Header::new(Algorithm::ES256);
        crit.kid = Some("k1".into());
        crit.crit = Some(vec!["exp-bound".into()]);
        let critical = jsonwebtoken::encode(&crit, &claims(), &signer.key).expect("sign");
        assert_eq!(refused(critical).await, TokenError::Malformed);
    }

    #[tokio::test]
    async fn a_new_key_at_the_issuer_is_fetched_when_a_token_names_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (old, old_jwk) = es256("2026-01");
        let v = verifier(dir.path(), std::slice::from_ref(&old_jwk)).await;
        assert!(v.verify(&sign(&old, &claims())).await.is_ok());
        // The issuer rotates: the new key is published, the old withdrawn.
        let (new, new_jwk) = es256("2026-02");
        std::fs::write(
            dir.path().join("jwks.json"),
            json!({ "keys": [new_jwk] }).to_string(),
        )
        .expect("rotate");
        assert!(v.verify(&sign(&new, &claims())).await.is_ok());
        // Tokens of the withdrawn key are refused, cached or not.
        assert_eq!(
            v.verify(&sign(&old, &claims())).await,
            Err(TokenError::UnknownKey)
        );
        // An unreadable key source keeps the keys held.
        std::fs::write(dir.path().join("jwks.json"), "not json").expect("break");
        let (other, _) = es256("2026-03");
        assert_eq!(
            v.verify(&sign(&other, &claims())).await,
            Err(TokenError::UnknownKey)
        );
        assert!(v.verify(&sign(&new, &claims())).await.is_ok());
    }

    #[test]
    fn configuration_refuses_none_and_hmac_without_a_secret() {
        let cfg: UsersConfig = crate::base::yaml::parse_yaml(
            "issuers:\n  - issuer: https://idp.test\n    audiences: [a]\n    jwks_file: k.json\n    algorithms: [none, HS256]\n",
            "u.yaml",
        )
        .expect("parses");
        let errors = cfg.check().join("\n");
        assert!(errors.contains("`none` is never accepted"), "{errors}");
        assert!(
            errors.contains("HS256/384/512 need hs_secret_file"),
            "{errors}"
        );
    }

    #[test]
    fn bearer_comes_only_from_one_authorization_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(Verifier::bearer(&h), Ok(None));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("v"),
        );
        assert_eq!(Verifier::bearer(&h), Ok(Some("abc")));
        h.append(
            http::header::AUTHORIZATION,
            "Bearer def".parse().expect("v"),
        );
        assert_eq!(Verifier::bearer(&h), Err(TokenError::BadHeader));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, "Basic abc".parse().expect("v"));
        assert_eq!(Verifier::bearer(&h), Err(TokenError::BadHeader));
    }
}
