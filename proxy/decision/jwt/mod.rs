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

mod config;
mod keys;
mod lifetime;
mod metrics;
mod user;

pub use config::*;
use keys::*;
pub use metrics::{IssuerLabels, IssuerResultLabels, JwtMetrics, TokenResultLabels};
pub use user::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

/// A JWKS file as `meshgate validate` checks it: an error (it does not
/// parse, or holds no usable signing key), or the keys it ignores (each
/// `keys[i] (kid …): ignored: reason`).
pub fn check_jwks_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let source = path.display().to_string();
    let bytes = crate::base::paths::read_file_bytes(path).map_err(|e| format!("{source}: {e}"))?;
    let (keys, skipped) = KeySet::parse(&bytes, &source)?;
    if keys.len() == 0 {
        return Err(format!("{source}: the JWKS holds no usable signing key"));
    }
    Ok(skipped.iter().map(|s| s.to_string()).collect())
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
    /// A time claim present but not a NumericDate.
    #[error("the token's claim `{0}` is not a whole number of seconds from 0 to 2^63-1")]
    MalformedClaim(String),
    /// An `iat` ahead of now (beyond the leeway) or after `exp`.
    #[error("the token's claim `iat` is ahead of now (beyond the leeway) or after its `exp`")]
    IatImpossible,
    #[error("the token lives longer than its issuer's max_lifetime of {}", humantime::format_duration(*.0))]
    LifetimeTooLong(Duration),
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
            TokenError::MalformedClaim(_) | TokenError::IatImpossible => "malformed_claim",
            TokenError::LifetimeTooLong(_) => "lifetime_too_long",
        }
    }
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
    /// The keys the last fetch skipped (kid, reason), as last warned
    /// about: a fetch that skips the same ones says so at debug only (a
    /// token naming an unknown kid forces a fetch; any caller can send one).
    skipped: Mutex<Vec<(Option<String>, String)>>,
}

/// Verifies bearer tokens for every configured issuer.
pub struct Verifier {
    issuers: Vec<Arc<Issuer>>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<User>>,
    /// Counts key withdrawals: a token verified with keys loaded before
    /// one is not cached after it.
    withdrawals: AtomicU64,
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
            if c.min_refresh.is_zero() && (c.jwks_url.is_some() || c.discovery) {
                tracing::warn!(
                    field = %field("min_refresh"),
                    issuer = %c.issuer,
                    "0s with keys fetched over https: every token naming an unknown kid fetches them again (0s is meant for a jwks_file)"
                );
            }
            let secret = match &c.hs_secret_file {
                None => None,
                Some(p) => {
                    let bytes = crate::base::paths::read_file_bytes(p).map_err(|e| {
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
                    // The time claims are read and checked by `lifetime`.
                    v.set_required_spec_claims(&["iss", "aud", "sub"]);
                    v.validate_exp = false;
                    v.validate_nbf = false;
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
                skipped: Mutex::new(Vec::new()),
            }));
        }
        let verifier = Arc::new(Verifier {
            issuers,
            cache: quick_cache::sync::Cache::new(config.cache_entries.max(1)),
            withdrawals: AtomicU64::new(0),
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
            KeySource::File(p) => {
                let source = p.display().to_string();
                let path = p.clone();
                tokio::task::spawn_blocking(move || crate::base::paths::read_file_bytes(&path))
                    .await
                    .map_err(|e| format!("{source}: {e}"))
                    .and_then(|read| {
                        read.map(|bytes| (source.clone(), bytes))
                            .map_err(|e| format!("{source}: {e}"))
                    })
            }
            KeySource::Url(u) => match &issuer.http {
                Some(c) => c.get(u).await.map(|bytes| (u.clone(), bytes)),
                None => Err("no client".into()),
            },
            KeySource::Discovery(u) => match &issuer.http {
                Some(c) => discover(c, u, &issuer.config.issuer).await,
                None => Err("no client".into()),
            },
        };
        let parsed = fetched.and_then(|(source, bytes)| {
            let (keys, skipped) = KeySet::parse(&bytes, &source)?;
            // A key the issuer publishes that no token of it can be
            // verified with: warned about when the skipped keys change.
            let now: Vec<(Option<String>, String)> =
                skipped.iter().map(|s| (s.kid.clone(), s.reason.clone())).collect();
            let changed = match issuer.skipped.lock() {
                Ok(said) if *said == now => false,
                Ok(mut said) => {
                    *said = now;
                    true
                }
                Err(_) => true,
            };
            for s in &skipped {
                let kid = s.kid.as_deref().unwrap_or("");
                if changed {
                    tracing::warn!(issuer = %name, source = %source, kid, reason = %s.reason, "a signing key of the JWKS is ignored: tokens naming it are refused (unknown_kid)");
                } else {
                    tracing::debug!(issuer = %name, source = %source, kid, reason = %s.reason, "a signing key of the JWKS is ignored (as at the last fetch)");
                }
            }
            Ok(keys)
        });
        let result = match parsed {
            Ok(keys) => {
                if keys.len() == 0 {
                    Err("the JWKS holds no usable signing key".to_string())
                } else {
                    let old = issuer.keys.swap(Arc::new(keys));
                    let new = issuer.keys.load();
                    // A key withdrawn at the issuer (gone, or its `kid`
                    // now naming other material) no longer vouches for
                    // cached tokens.
                    if old.withdrawn_in(&new) {
                        self.withdrawals.fetch_add(1, Ordering::SeqCst);
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
        let withdrawals = self.withdrawals.load(Ordering::SeqCst);
        let user = Arc::new(self.verify_uncached(token)?);
        if now < user.expires_at {
            self.cache.insert(key, user.clone());
            // Keys withdrawn while this token was verified: the clear may
            // have come before the insert, so the entry goes now.
            if self.withdrawals.load(Ordering::SeqCst) != withdrawals {
                self.cache.remove(&key);
            }
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
        let window = lifetime::Window {
            now: now_secs(),
            leeway: issuer.config.leeway,
            max_lifetime: issuer.config.max_lifetime,
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )
        .map_err(|e| match e.kind() {
            // The signature held, but jsonwebtoken's own claim reading stumbled
            // (on a time claim that is a list or an object): name the claim.
            jsonwebtoken::errors::ErrorKind::Json(_) => lifetime::check(&claims, window)
                .err()
                .unwrap_or(TokenError::Malformed),
            // jsonwebtoken calls a claim of another type than it reads
            // (`"sub": 123`, `"aud": {}`) missing: it is there.
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c)
                if claims.get(c).is_some_and(|v| !v.is_null()) =>
            {
                TokenError::BadClaim(c.clone())
            }
            kind => map_error(kind),
        })?;
        lifetime::check(&data.claims, window)?;
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
    serde_json::from_slice(&bytes)
        .map_err(|e| lifetime::out_of_range_claim(&bytes, &e).unwrap_or(TokenError::Malformed))
}

#[cfg(test)]
mod tests;
