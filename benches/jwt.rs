//! One end-user bearer token verified and mapped to a `User`, as
//! `Verifier::verify_now` does it per request: SHA-256 of the token, a look in
//! the verified-token cache and, on a miss, the signature check (jsonwebtoken
//! on aws-lc-rs), `iss`/`aud`/`exp`/`nbf` validation and the claim mapping
//! (groups, scopes, one attribute), then the cache insert.
//!
//! - `jwt/{es256,rs256}/miss`: every iteration verifies a token the cache does
//!   not hold. 4,096 distinct tokens (different `jti`) are cycled through a
//!   verifier whose cache holds 1 entry; before and after measuring, a second
//!   pass over the pool is checked to return no `Arc` of the first (no hits).
//! - `jwt/{es256,rs256}/hit`: one token verified once, then taken from the
//!   cache (default size) every iteration, checked to be the same `Arc`.
//! - `jwt/{es256,rs256}/signature_only`: the floor, side by side: aws-lc-rs
//!   checking the same tokens' signatures with the raw public key and nothing
//!   else. `miss` minus this is what meshgate adds.
//!
//! RS256 keys are 2048-bit. Targets from the issue: ES256 miss p50 ≤ 30 µs,
//! hit ≤ 2 µs.
//!
//!     cargo bench --bench jwt
//!
//! Medians are in target/criterion/jwt/<alg>/<miss|hit>/new/estimates.json.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use meshgate::{User, UsersConfig, Verifier};
use serde_json::json;

const ISS: &str = "https://idp.bench";
const POOL: usize = 4096;

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Signer {
    fn new(key: EncodingKey, alg: Algorithm, kid: &'static str) -> (Signer, Jwk) {
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("JWK of the signing key");
        jwk.common.key_id = Some(kid.into());
        (Signer { key, alg, kid }, jwk)
    }

    fn es256() -> (Signer, Jwk) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        Signer::new(
            EncodingKey::from_ec_der(&pair.serialize_der()),
            Algorithm::ES256,
            "bench-es256",
        )
    }

    fn rs256() -> (Signer, Jwk) {
        let pair =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("RSA-2048 key");
        // jsonwebtoken (without its PEM feature) and aws-lc-rs sign with a
        // PKCS#1 `RSAPrivateKey`: the OCTET STRING inside the PKCS#8 rcgen gives.
        let pkcs8 = pair.serialize_der();
        let (_, info) = x509_parser::der_parser::parse_der(&pkcs8).expect("PKCS#8 DER");
        let pkcs1 = info
            .as_sequence()
            .ok()
            .and_then(|s| s.get(2))
            .and_then(|o| o.as_slice().ok())
            .expect("PKCS#8 holds a private key");
        Signer::new(
            EncodingKey::from_rsa_der(pkcs1),
            Algorithm::RS256,
            "bench-rs256",
        )
    }

    /// A token as an IdP would issue it, valid for an hour.
    fn mint(&self, jti: usize) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let claims = json!({
            "iss": ISS,
            "sub": "alice@example.com",
            "aud": "meshgate",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": format!("bench-{jti:06}"),
            "groups": ["finance-analysts", "staff"],
            "scope": "ledger:read ledger:list",
            "dept": "finance",
        });
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign token")
    }
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url")
}

/// The signer's public key for aws-lc-rs directly, from its JWK.
enum RawKey {
    Ec(Vec<u8>),
    Rsa(Vec<u8>, Vec<u8>),
}

impl RawKey {
    fn verify(&self, input: &[u8], sig: &[u8]) -> Result<(), aws_lc_rs::error::Unspecified> {
        use aws_lc_rs::signature;
        match self {
            RawKey::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(input, sig)
            }
            RawKey::Rsa(n, e) => signature::RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                input,
                sig,
            ),
        }
    }
}

fn raw_key(name: &str, jwk: &Jwk) -> RawKey {
    use jsonwebtoken::jwk::AlgorithmParameters;
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => {
            let mut point = vec![4u8];
            point.extend(unb64(&ec.x));
            point.extend(unb64(&ec.y));
            RawKey::Ec(point)
        }
        AlgorithmParameters::RSA(rsa) => RawKey::Rsa(unb64(&rsa.n), unb64(&rsa.e)),
        other => panic!("{name}: unexpected key {other:?}"),
    }
}

fn verifier(rt: &tokio::runtime::Runtime, jwks: &Path, cache_entries: usize) -> Arc<Verifier> {
    let yaml = format!(
        "issuers:\n  - issuer: {ISS}\n    audiences: [meshgate]\n    jwks_file: {}\n    attributes: {{ department: {{ claim: dept, type: string }} }}\ncache_entries: {cache_entries}\n",
        jwks.display()
    );
    let cfg: UsersConfig = meshgate::parse_yaml(&yaml, "users").expect("users config");
    rt.block_on(Verifier::start(&cfg, None))
        .expect("verifier starts")
}

/// Verifies the pool twice and counts the tokens the second pass took from the
/// cache (the same `Arc` as the first pass).
fn cache_hits(v: &Verifier, pool: &[String]) -> usize {
    let first: Vec<Arc<User>> = pool
        .iter()
        .map(|t| v.verify_now(t).expect("pool token verifies"))
        .collect();
    pool.iter()
        .zip(&first)
        .filter(|(t, u)| Arc::ptr_eq(&v.verify_now(t).expect("pool token verifies"), u))
        .count()
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let jwks = dir.path().join("jwks.json");
    let (es, es_jwk) = Signer::es256();
    let (rs, rs_jwk) = Signer::rs256();
    std::fs::write(&jwks, json!({ "keys": [es_jwk, rs_jwk] }).to_string()).expect("write JWKS");
    let missing = verifier(&rt, &jwks, 1);
    let caching = verifier(&rt, &jwks, 10_000);

    let mut group = c.benchmark_group("jwt");
    for (name, signer, jwk) in [("es256", &es, &es_jwk), ("rs256", &rs, &rs_jwk)] {
        let pool: Vec<String> = (0..POOL).map(|i| signer.mint(i)).collect();
        assert_eq!(
            cache_hits(&missing, &pool),
            0,
            "{name}: the 1-entry cache must not hold pool tokens"
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::new(name, "miss"), |b| {
            b.iter(|| {
                let token = &pool[i % POOL];
                i += 1;
                black_box(
                    missing
                        .verify_now(black_box(token))
                        .expect("pool token verifies"),
                )
            })
        });
        assert_eq!(
            cache_hits(&missing, &pool),
            0,
            "{name}: the 1-entry cache held pool tokens after the run"
        );

        let raw = raw_key(name, jwk);
        let split: Vec<(Vec<u8>, Vec<u8>)> = pool
            .iter()
            .map(|t| {
                let (input, sig) = t.rsplit_once('.').expect("signed token");
                (input.as_bytes().to_vec(), unb64(sig))
            })
            .collect();
        let mut k = 0;
        group.bench_function(BenchmarkId::new(name, "signature_only"), |b| {
            b.iter(|| {
                let (input, sig) = &split[k % POOL];
                k += 1;
                raw.verify(black_box(input), black_box(sig))
                    .expect("signature verifies")
            })
        });

        let token = signer.mint(POOL);
        let first = caching.verify_now(&token).expect("token verifies");
        group.bench_function(BenchmarkId::new(name, "hit"), |b| {
            b.iter(|| {
                let user = caching
                    .verify_now(black_box(&token))
                    .expect("cached token verifies");
                assert!(Arc::ptr_eq(&user, &first), "{name}: not from the cache");
                black_box(user)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
