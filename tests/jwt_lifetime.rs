//! End-user tokens' time claims through the real binary: tokens signed here
//! with a real ES256 key whose JWKS the sidecar reads from a file; absurd
//! lifetimes and malformed `exp`/`nbf`/`iat` get 401 with a precise reason,
//! counted by that reason; `max_lifetime` is validated.

mod common;

use jsonwebtoken::Algorithm;
use serde_json::json;

use common::tokens::Signer;
use common::*;

const DASHBOARD: &str = "spiffe://mesh.local/ns/reporting/sa/dashboard";
const SUMMARY: &str = "/ledger/summary";
const ISS: &str = "https://idp.mesh.local";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The sidecar with the example policies and one issuer whose keys are
/// `signer`'s, from a JWKS file, with `fields` added to the issuer's own.
fn sidecar(pki: &Pki, up: &Upstream, signer: &Signer, fields: &str) -> Sidecar {
    let jwks = pki.path("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [signer.jwk] }).to_string()).expect("jwks");
    Meshgate::builder(pki, up).policies().issuer(&format!(
        "issuer: {ISS}\naudiences: [meshgate]\njwks_file: {}\nalgorithms: [ES256]\n{fields}",
        jwks.display()
    ))
}

struct Reply {
    status: String,
    www_authenticate: String,
    body: String,
}

/// GET the ledger summary as the dashboard, on behalf of `token`'s user.
fn with_token(pki: &Pki, mg: &Meshgate, token: &str) -> Reply {
    let headers = pki.dir.path().join("reply-headers");
    let auth = format!("Authorization: Bearer {token}");
    let url = mg.url(SUMMARY);
    let out = curl(
        pki,
        Some("dashboard"),
        &[
            "-D",
            headers.to_str().expect("utf-8 path"),
            "-w",
            "\n%{http_code}",
            "-H",
            &auth,
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let www_authenticate = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("www-authenticate")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        status: status.to_string(),
        www_authenticate,
        body: body.to_string(),
    }
}

fn tokens_counted(mg: &Meshgate, result: &str) -> f64 {
    mg.counter(&format!(
        "meshgate_user_token_validations_total{{result=\"{result}\"}}"
    ))
}

/// An analyst's claims, valid for ten minutes.
fn analyst(iss: &str) -> serde_json::Value {
    json!({ "iss": iss, "sub": "alice", "aud": "meshgate", "iat": now(), "exp": now() + 600,
            "groups": ["finance-analysts"], "scope": "ledger:read" })
}

/// A token over an exact payload text, for numbers serde_json would not write
/// (`1e400`, 2^64 as written by an issuer).
fn sign_raw(signer: &Signer, payload: &str) -> String {
    let header = b64(
        json!({ "alg": format!("{:?}", signer.alg), "typ": "JWT", "kid": signer.kid })
            .to_string()
            .as_bytes(),
    );
    let message = format!("{header}.{}", b64(payload.as_bytes()));
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key, signer.alg).expect("sign");
    format!("{message}.{sig}")
}

#[test]
fn absurd_lifetimes_and_malformed_time_claims_get_401_with_a_precise_reason() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let es = Signer::new(Algorithm::ES256, "es-1");
    let iss = ISS.to_string();
    let audit = pki.path("audit.log");
    let mg = sidecar(&pki, &up, &es, "max_lifetime: 1h")
        .audit_file(&audit)
        .start();
    let n = now();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = analyst(&iss);
        f(&mut c);
        es.sign(&c)
    };
    // Within the hour, with and without iat, even as an integral float: allowed.
    for token in [
        with(&|c| c["exp"] = json!(n + 3000)),
        with(&|c| {
            c.as_object_mut().expect("object").remove("iat");
            c["exp"] = json!(n + 3600);
        }),
        with(&|c| c["exp"] = json!((n + 600) as f64)),
    ] {
        let r = with_token(&pki, &mg, &token);
        assert_eq!(r.status, "200", "{}", r.body);
    }
    assert_eq!(tokens_counted(&mg, "ok"), 3.0);

    let cases = time_claim_cases(&es, n);
    for (what, token, reason, description) in &cases {
        let before = tokens_counted(&mg, reason);
        let r = with_token(&pki, &mg, token);
        assert_eq!(r.status, "401", "{what}: {}", r.body);
        assert_eq!(
            r.www_authenticate,
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
            "{what}"
        );
        assert_eq!(
            tokens_counted(&mg, reason),
            before + 1.0,
            "{what}: {reason}"
        );
    }
    assert_eq!(tokens_counted(&mg, "malformed_claim"), 7.0);
    assert_eq!(tokens_counted(&mg, "lifetime_too_long"), 3.0);
    // The sidecar is still serving.
    let r = with_token(&pki, &mg, &with(&|_| {}));
    assert_eq!(r.status, "200", "{}", r.body);

    // Each refusal's audit event names its token's reason beside the code.
    let events = 3 + cases.len() + 1;
    mg.wait_metric("meshgate_audit_events_total", events as f64);
    check_audited_reasons(&audit, &cases);
}

/// A refused token: what it is, the token, the reason it is counted under,
/// the `error_description` of its `WWW-Authenticate`.
type Case = (&'static str, String, &'static str, String);

/// Tokens of `es` whose time claims (around `n`, now) are absurd or
/// malformed, for an issuer with `max_lifetime: 1h`.
fn time_claim_cases(es: &Signer, n: u64) -> Vec<Case> {
    let iss = ISS;
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = analyst(iss);
        f(&mut c);
        es.sign(&c)
    };
    let raw = |time_claims: &str| {
        sign_raw(
            es,
            &format!(
                r#"{{"iss":"{iss}","sub":"alice","aud":"meshgate","groups":["finance-analysts"],{time_claims}}}"#
            ),
        )
    };

    let too_long = "the token lives longer than its issuer's max_lifetime of 1h";
    let malformed = |c: &str| {
        format!("the token's claim `{c}` is not a whole number of seconds from 0 to 2^63-1")
    };
    vec![
        (
            "exp two hours after iat",
            with(&|c| c["exp"] = json!(n + 7200)),
            "lifetime_too_long",
            too_long.into(),
        ),
        (
            "exp two hours away, no iat",
            with(&|c| {
                c.as_object_mut().expect("object").remove("iat");
                c["exp"] = json!(n + 7200);
            }),
            "lifetime_too_long",
            too_long.into(),
        ),
        (
            "exp at 2^63-1",
            raw(&format!(r#""iat":{n},"exp":9223372036854775807"#)),
            "lifetime_too_long",
            too_long.into(),
        ),
        (
            "exp at 2^64-1",
            raw(&format!(r#""iat":{n},"exp":18446744073709551615"#)),
            "malformed_claim",
            malformed("exp"),
        ),
        (
            "exp at 2^64",
            raw(&format!(r#""iat":{n},"exp":18446744073709551616"#)),
            "malformed_claim",
            malformed("exp"),
        ),
        (
            "exp 1e400",
            raw(&format!(r#""iat":{n},"exp":1e400"#)),
            "malformed_claim",
            malformed("exp"),
        ),
        (
            "exp with a fraction",
            raw(&format!(r#""iat":{n},"exp":{}.5"#, n + 600)),
            "malformed_claim",
            malformed("exp"),
        ),
        (
            "exp as a string",
            with(&|c| c["exp"] = json!((n + 600).to_string())),
            "malformed_claim",
            malformed("exp"),
        ),
        (
            "negative nbf",
            with(&|c| c["nbf"] = json!(-1)),
            "malformed_claim",
            malformed("nbf"),
        ),
        (
            "iat as a list",
            with(&|c| c["iat"] = json!([n])),
            "malformed_claim",
            malformed("iat"),
        ),
        (
            "no exp at all",
            with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            "missing_claim",
            "the token lacks the claim `exp`".into(),
        ),
    ]
}

/// Each event of the `audit` file, in order: three allowed, the refusal of
/// each of `cases` naming its token's reason beside the code, one allowed.
fn check_audited_reasons(audit: &std::path::Path, cases: &[Case]) {
    let text = std::fs::read_to_string(audit).expect("audit file");
    let seen: Vec<(String, String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("an event"))
        .filter(|e| e["type"] == "request")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("null").to_string();
            (s("decision"), s("error"), s("reason"))
        })
        .collect();
    let allowed = || ("allow".to_string(), "null".to_string(), "null".to_string());
    let mut expected = vec![allowed(), allowed(), allowed()];
    for (_, _, reason, _) in cases {
        let refused = ("unauthenticated", "invalid_token", *reason);
        expected.push((refused.0.into(), refused.1.into(), refused.2.into()));
    }
    expected.push(allowed());
    assert_eq!(seen, expected);
}

#[test]
fn max_lifetime_is_validated_and_claims_given_offline_are_read_as_strictly() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let jwks = pki.path("jwks.json");
    let key = Signer::new(Algorithm::ES256, "k");
    std::fs::write(&jwks, json!({ "keys": [key.jwk] }).to_string()).expect("jwks");
    let iss = ISS;
    let config = pki.path("lifetime.yaml");
    let write = |max_lifetime: &str| {
        let yaml = Meshgate::builder(&pki, "http://127.0.0.1:8080")
            .policies()
            .issuer(&format!(
                "issuer: {iss}\naudiences: [meshgate]\njwks_file: {}\nmax_lifetime: {max_lifetime}",
                jwks.display()
            ))
            .yaml();
        std::fs::write(&config, yaml).expect("config");
    };
    let run = |args: &[&str]| {
        let o = output_within(std::process::Command::new(bin()).args(args));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), all)
    };
    let cfg = config.to_str().expect("utf-8");

    write("12h");
    let (code, all) = run(&["validate", "--config", cfg]);
    assert_eq!(code, Some(0), "{all}");
    write("400days");
    let (code, all) = run(&["validate", "--config", cfg]);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains(
            "users.issuers[0].max_lifetime: 34560000 s is longer than the bound of 366 days"
        ),
        "{all}"
    );
    write("0s");
    let (code, all) = run(&["validate", "--config", cfg]);
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("users.issuers[0].max_lifetime: zero would refuse every token"),
        "{all}"
    );

    // `authorize --claims`: a malformed exp is named, not taken for absent.
    write("12h");
    for exp in ["1.5", "\"123\"", "-1", "18446744073709551616"] {
        let claims = format!(r#"{{"iss":"{iss}","sub":"alice","exp":{exp}}}"#);
        let (code, all) = run(&[
            "authorize",
            "--config",
            cfg,
            "--principal",
            DASHBOARD,
            "--path",
            SUMMARY,
            "--claims",
            &claims,
        ]);
        assert_ne!(code, Some(0), "{exp}: {all}");
        assert!(
            all.contains("the token's claim `exp` is not a whole number of seconds"),
            "{exp}: {all}"
        );
    }
}
