//! JWT parsing + claim mapping.

use super::*;

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
pub(super) fn users_yaml(dir: &std::path::Path) -> String {
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
pub(super) fn scratch_dir(what: &str) -> std::path::PathBuf {
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
    // `exp` mapped only as a NumericDate (an integer from 0 to 2^63-1);
    // when absent (claims given offline), the latest one.
    match claims.get("exp") {
        None => assert_eq!(user.expires_at, i64::MAX as u64),
        Some(exp) => {
            assert!(user.expires_at <= i64::MAX as u64, "exp {exp} mapped");
            assert_eq!(
                exp.as_f64(),
                Some(user.expires_at as f64),
                "exp {exp} mapped"
            );
        }
    }
    let issuer = users.and_then(|u| u.issuers.iter().find(|i| Some(i.issuer.as_str()) == iss));
    let (groups_claim, scopes_claim) = issuer.map_or(("groups", "scope"), |i| {
        (i.groups_claim.as_str(), i.scopes_claim.as_str())
    });
    let strings = |v: Option<&Value>, split: bool| -> Vec<String> {
        match v {
            None => Vec::new(),
            // RFC 6749 3.3: scope tokens are separated by spaces only.
            Some(Value::String(s)) if split => s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
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
