use super::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::path::Path;

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
    let confused =
        jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(&public)).expect("hs256");
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

#[tokio::test]
async fn a_key_republished_under_its_kid_with_other_material_empties_the_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let (old, old_jwk) = es256("k1");
    let v = verifier(dir.path(), std::slice::from_ref(&old_jwk)).await;
    let token = sign(&old, &claims());
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cache.len(), 1);
    let issuer = v.issuers[0].clone();
    // The same keys again: the cache stays.
    assert!(v.refresh(&issuer).await);
    assert_eq!(v.cache.len(), 1);
    // Another key under the same kid: the cached token no longer verifies.
    let (_, new_jwk) = es256("k1");
    let write = |keys: serde_json::Value| {
        std::fs::write(
            dir.path().join("jwks.json"),
            json!({ "keys": keys }).to_string(),
        )
        .expect("rotate")
    };
    write(json!([new_jwk]));
    assert!(v.refresh(&issuer).await);
    assert_eq!(v.cache.len(), 0);
    assert_eq!(v.verify(&token).await, Err(TokenError::BadSignature));

    // A key without a kid replaced by another: the same.
    let mut anonymous = old_jwk.clone();
    anonymous.common.key_id = None;
    write(json!([anonymous]));
    assert!(v.refresh(&issuer).await);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = None;
    let token = jsonwebtoken::encode(&h, &claims(), &old.key).expect("sign");
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cache.len(), 1);
    let (_, mut other) = es256("x");
    other.common.key_id = None;
    write(json!([other]));
    assert!(v.refresh(&issuer).await);
    assert_eq!(v.cache.len(), 0);
    assert_eq!(v.verify(&token).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn scopes_split_on_spaces_only_and_an_empty_subject_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, jwk) = es256("k1");
    let v = verifier(dir.path(), &[jwk]).await;
    let mut c = claims();
    c["scope"] = json!("ledger:read\u{a0}admin  ledger:list");
    let user = v.verify(&sign(&key, &c)).await.expect("valid");
    assert_eq!(user.scopes, ["ledger:read\u{a0}admin", "ledger:list"]);
    c["sub"] = json!("");
    assert_eq!(
        v.verify(&sign(&key, &c)).await,
        Err(TokenError::BadClaim("sub".into()))
    );
}

#[tokio::test]
async fn a_registered_claim_of_another_type_is_a_bad_claim_not_a_missing_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, jwk) = es256("k1");
    let v = verifier(dir.path(), &[jwk]).await;
    let wrong = [
        ("sub", json!(123)),
        ("aud", json!({ "a": "meshgate" })),
        ("aud", json!([["meshgate"]])),
        ("aud", json!(["meshgate", 1])),
    ];
    for (claim, value) in wrong {
        let mut c = claims();
        c[claim] = value.clone();
        assert_eq!(
            v.verify(&sign(&key, &c)).await,
            Err(TokenError::BadClaim(claim.into())),
            "{claim}: {value}"
        );
    }
    // Absent, it is missing.
    let mut c = claims();
    c.as_object_mut().expect("object").remove("sub");
    assert_eq!(
        v.verify(&sign(&key, &c)).await,
        Err(TokenError::MissingClaim("sub".into()))
    );
}

#[test]
fn configuration_refuses_a_repeated_issuer_and_built_in_attributes() {
    let cfg: UsersConfig = crate::base::yaml::parse_yaml(
        "issuers:\n  - issuer: https://idp.test\n    audiences: [a]\n    jwks_url: https://idp.test/keys\n    attributes: { issuer: { claim: tenant, type: string } }\n  - issuer: https://idp.test\n    audiences: [b]\n    jwks_file: k.json\n    min_refresh: 0s\n",
        "u.yaml",
    )
    .expect("parses");
    assert_eq!(
        cfg.check(),
        [
            "users.issuers[0].attributes.issuer: a built-in attribute of Mesh::User (subject, issuer, scopes), set from the token itself; map the claim to another name",
            "users.issuers[1].issuer: `https://idp.test` is listed twice; give it one entry",
        ]
    );
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

/// A token over an exact payload text (numbers serde_json would not write).
fn sign_raw(s: &Signer, payload: &str) -> String {
    let header = b64(format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, s.kid).as_bytes());
    let message = format!("{header}.{}", b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &s.key, s.alg).expect("sign");
    format!("{message}.{sig}")
}

#[tokio::test]
async fn time_claims_that_are_not_integer_numeric_dates_are_malformed_not_missing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (signer, jwk) = es256("k1");
    let v = verifier(dir.path(), std::slice::from_ref(&jwk)).await;
    let n = now();
    let malformed = |c: &str| TokenError::MalformedClaim(c.into());
    let cases: Vec<(&str, serde_json::Value, TokenError)> = vec![
        ("exp", json!(n as f64 + 600.5), malformed("exp")),
        ("exp", json!((n + 600).to_string()), malformed("exp")),
        ("exp", json!(-1), malformed("exp")),
        ("exp", json!(null), malformed("exp")),
        ("exp", json!([n + 600]), malformed("exp")),
        ("exp", json!(u64::MAX), malformed("exp")),
        ("exp", json!(i64::MAX as u64 + 1), malformed("exp")),
        (
            "exp",
            json!(18_446_744_073_709_551_616.0_f64),
            malformed("exp"),
        ),
        ("nbf", json!(1.5), malformed("nbf")),
        ("nbf", json!("0"), malformed("nbf")),
        ("iat", json!(n as f64 - 0.25), malformed("iat")),
        ("iat", json!(true), malformed("iat")),
    ];
    for (claim, value, want) in cases {
        let mut c = claims();
        c[claim] = value.clone();
        let got = v.verify(&sign(&signer, &c)).await;
        assert_eq!(got, Err(want.clone()), "{claim}: {value}");
        assert_eq!(want.reason(), "malformed_claim");
        assert!(want.to_string().contains(&format!("`{claim}`")), "{want}");
    }
    // Beyond f64: serde_json cannot read the payload, and still the claim is named.
    for (payload, claim) in [
        (format!(r#"{{"iss":"{ISS}","sub":"a","aud":"meshgate","exp":1e400}}"#), "exp"),
        (
            format!("{{\"iss\":\"{ISS}\",\"sub\":\"a\",\n \"aud\":\"meshgate\",\n \"exp\": {},\n \"nbf\" : -1E+999}}", n + 600),
            "nbf",
        ),
        (format!(r#"{{"iss":"{ISS}","iat":1e400,"exp":{}}}"#, n + 600), "iat"),
    ] {
        assert_eq!(v.verify(&sign_raw(&signer, &payload)).await, Err(malformed(claim)), "{payload}");
    }
    // Another number out of range is a malformed token, not a claim's fault.
    let payload = format!(
        r#"{{"iss":"{ISS}","sub":"a","aud":"meshgate","exp":{},"x":1e400}}"#,
        n + 600
    );
    assert_eq!(
        v.verify(&sign_raw(&signer, &payload)).await,
        Err(TokenError::Malformed)
    );
    // An integer-valued float is a NumericDate; an absent `exp` is missing.
    let mut c = claims();
    c["exp"] = json!((n + 600) as f64);
    c["iat"] = json!(n as f64);
    assert_eq!(
        v.verify(&sign(&signer, &c))
            .await
            .expect("valid")
            .expires_at,
        n + 600
    );
    let mut c = claims();
    c.as_object_mut().expect("object").remove("exp");
    assert_eq!(
        v.verify(&sign(&signer, &c)).await,
        Err(TokenError::MissingClaim("exp".into()))
    );
}

#[tokio::test]
async fn a_token_living_longer_than_max_lifetime_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (signer, jwk) = es256("k1");
    let v = verifier(dir.path(), std::slice::from_ref(&jwk)).await;
    let n = now();
    let day = 24 * 3600;
    let too_long = Err(TokenError::LifetimeTooLong(Duration::from_secs(day)));
    let token = |exp: u64, iat: Option<u64>| {
        let mut c = claims();
        c["exp"] = json!(exp);
        match iat {
            Some(iat) => c["iat"] = json!(iat),
            None => {
                c.as_object_mut().expect("object").remove("iat");
            }
        }
        sign(&signer, &c)
    };
    // exp - iat over a day, with iat now or in the past.
    assert_eq!(v.verify(&token(n + day + 60, Some(n))).await, too_long);
    assert_eq!(v.verify(&token(n + 600, Some(n - day))).await, too_long);
    // No iat: exp more than a day (and the 30 s leeway) away.
    assert_eq!(v.verify(&token(n + day + 120, None)).await, too_long);
    // An iat in the future, or after exp, is no time a real issuer writes
    // (and would shrink exp - iat): malformed.
    let bad_iat = Err(TokenError::IatImpossible);
    assert_eq!(TokenError::IatImpossible.reason(), "malformed_claim");
    assert_eq!(v.verify(&token(n + 2 * day, Some(n + day))).await, bad_iat);
    assert_eq!(v.verify(&token(n + 600, Some(n + 3600))).await, bad_iat);
    // Within the leeway, a clock a little ahead is not refused.
    assert!(v.verify(&token(n + 600, Some(n + 10))).await.is_ok());
    // At the edges of u64 and i64: no overflow, a precise reason.
    assert_eq!(v.verify(&token(i64::MAX as u64, Some(0))).await, too_long);
    assert_eq!(v.verify(&token(i64::MAX as u64, None)).await, too_long);
    assert_eq!(
        v.verify(&token(i64::MAX as u64, Some(i64::MAX as u64)))
            .await,
        bad_iat
    );
    // Exactly a day, with and without iat: accepted.
    assert!(v.verify(&token(n + day, Some(n))).await.is_ok());
    assert!(v.verify(&token(n + day, None)).await.is_ok());
    let e = TokenError::LifetimeTooLong(Duration::from_secs(day));
    assert_eq!(e.reason(), "lifetime_too_long");
    assert_eq!(
        e.to_string(),
        "the token lives longer than its issuer's max_lifetime of 1day"
    );
}

#[test]
fn max_lifetime_is_positive_and_at_most_a_year() {
    let yaml = |v: &str| {
        format!("issuers:\n  - issuer: https://idp.test\n    audiences: [a]\n    jwks_file: k.json\n    max_lifetime: {v}\n")
    };
    let cfg: UsersConfig = crate::base::yaml::parse_yaml(&yaml("8h"), "u.yaml").expect("parses");
    assert_eq!(cfg.issuers[0].max_lifetime, Duration::from_secs(8 * 3600));
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    let cfg: UsersConfig = crate::base::yaml::parse_yaml(&yaml("0s"), "u.yaml").expect("parses");
    assert_eq!(
        cfg.check(),
        vec![
            "users.issuers[0].max_lifetime: zero would refuse every token; give a positive duration such as 24h"
                .to_string()
        ]
    );
    let cfg: UsersConfig =
        crate::base::yaml::parse_yaml(&yaml("400days"), "u.yaml").expect("parses");
    assert_eq!(
        cfg.check(),
        vec![
            "users.issuers[0].max_lifetime: 34560000 s is longer than the bound of 366 days"
                .to_string()
        ]
    );
    let cfg: UsersConfig = crate::base::yaml::parse_yaml(
        "issuers:\n  - issuer: https://idp.test\n    audiences: [a]\n    jwks_file: k.json\n",
        "u.yaml",
    )
    .expect("parses");
    assert_eq!(cfg.issuers[0].max_lifetime, Duration::from_secs(24 * 3600));
}

/// Keys a JWKS holds that meshgate cannot use (an unknown `alg`, a corrupt
/// modulus, a `kty` it does not know) are skipped, each returned with its
/// kid and reason; the others are kept. A JWKS that does not parse names
/// where it came from.
#[test]
fn keys_that_cannot_be_used_are_skipped_with_their_kid_and_reason() {
    let (_, good) = es256("good");
    let mut bad_alg = serde_json::to_value(&good).expect("jwk");
    bad_alg["kid"] = "bad-alg".into();
    bad_alg["alg"] = "RS265".into();
    let corrupt =
        json!({ "kty": "RSA", "kid": "corrupt", "alg": "RS256", "n": "!!!", "e": "AQAB" });
    let unknown = json!({ "kty": "AKP", "kid": "pq", "alg": "ML-DSA-44", "pub": "AAAA" });
    // Keys for encryption are skipped as meant, without a word, even in an
    // algorithm the JWK parser does not know.
    let enc = json!({ "kty": "OKP", "crv": "X25519", "use": "enc", "kid": "e", "alg": "ECDH-ES+A256KW", "x": "AAAA" });
    let set = json!({ "keys": [good, bad_alg, corrupt, unknown, enc] }).to_string();
    let (keys, skipped) = KeySet::parse(set.as_bytes(), "/idp/jwks.json").expect("a JWKS");
    assert_eq!(keys.len(), 1);
    assert!(keys.by_kid.contains_key("good"));
    let kids: Vec<_> = skipped.iter().map(|s| s.kid.as_deref()).collect();
    assert_eq!(kids, [Some("bad-alg"), Some("corrupt"), Some("pq")]);
    assert_eq!(
        skipped[0].to_string(),
        "keys[1] (kid `bad-alg`): ignored: its alg `RS265` is not a signing algorithm meshgate supports"
    );
    assert!(
        skipped[1].reason.contains("does not parse"),
        "{}",
        skipped[1].reason
    );
    let err = KeySet::parse(br#"{"keys": 3}"#, "https://idp.test/keys")
        .err()
        .expect("not a JWKS");
    assert!(
        err.starts_with("https://idp.test/keys: not a JWKS: "),
        "{err}"
    );
}
