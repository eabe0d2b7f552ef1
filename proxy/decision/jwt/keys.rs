//! Signing keys: a JWKS read into keys by id, where they come from, OIDC discovery.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// One signing key from a JWKS.
pub(super) struct Key {
    pub(super) key: DecodingKey,
    /// The JWK's `alg`, when it names one: the token must use exactly it.
    pub(super) alg: Option<Algorithm>,
    pub(super) family: AlgorithmFamily,
    /// The JWK's key parameters and `alg` as published: a key republished
    /// under the same `kid` with other material is another key.
    pub(super) material: Vec<u8>,
}

#[derive(Default)]
pub(super) struct KeySet {
    pub(super) by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`: used only for tokens without one, when alone.
    pub(super) anonymous: Vec<Arc<Key>>,
}

impl KeySet {
    pub(super) fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Public signing keys of a JWKS (its bytes, read from `source`, a
    /// file or URL named in errors); symmetric (`oct`) keys and keys meant
    /// for encryption are skipped. A key that cannot be read (an unknown
    /// `kty` or `alg`, a corrupt modulus) is skipped too, as RFC 7517 §5
    /// asks, but said: each is returned, for the caller to warn about.
    pub(super) fn parse(bytes: &[u8], source: &str) -> Result<(KeySet, Vec<Skipped>), String> {
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let raw: RawSet =
            serde_json::from_slice(bytes).map_err(|e| format!("{source}: not a JWKS: {e}"))?;
        let mut keys = KeySet::default();
        let mut skipped = Vec::new();
        for (index, value) in raw.keys.into_iter().enumerate() {
            let text = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let (kid, alg) = (text("kid"), text("alg"));
            // Meant for encryption, or symmetric: skipped as meant, even
            // when its algorithm is one the JWK parser does not know
            // (X25519, ECDH-ES+A256KW).
            if text("use").as_deref() == Some("enc") || text("kty").as_deref() == Some("oct") {
                continue;
            }
            let mut skip = |reason: String| {
                skipped.push(Skipped {
                    index,
                    kid: kid.clone(),
                    reason,
                })
            };
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(e) => {
                    skip(format!("not a JWK meshgate can read: {e}"));
                    continue;
                }
            };
            match keys.add(&jwk, alg.as_deref()) {
                Ok(()) => {}
                Err(Some(reason)) => skip(reason),
                Err(None) => {}
            }
        }
        Ok((keys, skipped))
    }

    /// Adds one JWK. `Err(None)`: skipped as meant (`oct`, encryption);
    /// `Err(Some(reason))`: it cannot be used.
    /// `alg`: the JWK's `alg` as written.
    fn add(&mut self, jwk: &Jwk, alg: Option<&str>) -> Result<(), Option<String>> {
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(None);
        }
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(None);
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| Some(format!("its key material does not parse: {e}")))?;
        let written = alg;
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(key_algorithm(a).map_err(|()| {
                Some(format!(
                    "its alg `{}` is not a signing algorithm meshgate supports",
                    written.unwrap_or_default()
                ))
            })?),
        };
        let family = key.family();
        let material = serde_json::to_vec(&(&jwk.algorithm, alg)).unwrap_or_default();
        let entry = Arc::new(Key {
            key,
            alg,
            family,
            material,
        });
        match &jwk.common.key_id {
            Some(kid) => {
                self.by_kid.insert(kid.clone(), entry);
            }
            None => self.anonymous.push(entry),
        }
        Ok(())
    }

    /// Whether a key of this set is missing from `new`, or there with other
    /// material: tokens it vouched for no longer verify.
    pub(super) fn withdrawn_in(&self, new: &KeySet) -> bool {
        let same = |a: &Key, b: &Key| a.material == b.material;
        self.by_kid
            .iter()
            .any(|(kid, k)| !new.by_kid.get(kid).is_some_and(|n| same(k, n)))
            || self
                .anonymous
                .iter()
                .any(|k| !new.anonymous.iter().any(|n| same(k, n)))
    }
}

pub(super) fn key_algorithm(a: KeyAlgorithm) -> Result<Algorithm, ()> {
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

/// A key of a JWKS that was not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its place in `keys`, from 0.
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kid {
            Some(kid) => write!(
                f,
                "keys[{}] (kid `{kid}`): ignored: {}",
                self.index, self.reason
            ),
            None => write!(f, "keys[{}] (no kid): ignored: {}", self.index, self.reason),
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub(super) enum KeySource {
    File(PathBuf),
    Url(String),
    Discovery(String),
    /// Only an HMAC secret.
    None,
}

/// OIDC discovery: the provider document's `jwks_uri`, then the keys. The
/// document must name exactly the configured issuer (OpenID Connect
/// Discovery 1.0, 4.3).
pub(super) async fn discover(
    client: &crate::base::fetch::Client,
    url: &str,
    issuer: &str,
) -> Result<(String, Vec<u8>), String> {
    let doc = client.get(url).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&doc).map_err(|e| format!("{url}: not JSON: {e}"))?;
    match v.get("issuer").and_then(|i| i.as_str()) {
        Some(named) if named == issuer => {}
        Some(named) => {
            return Err(format!(
                "{url}: the document's issuer `{named}` is not the configured `{issuer}`"
            ))
        }
        None => return Err(format!("{url}: no issuer")),
    }
    let jwks = v
        .get("jwks_uri")
        .and_then(|u| u.as_str())
        .ok_or_else(|| format!("{url}: no jwks_uri"))?;
    if !jwks.starts_with("https://") {
        return Err(format!("{url}: jwks_uri `{jwks}` is not https"));
    }
    Ok((jwks.to_string(), client.get(jwks).await?))
}
