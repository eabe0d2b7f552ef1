//! End-user tokens through the real binary: an identity provider served over
//! HTTPS by the test (discovery document and JWKS, real rcgen certificates),
//! tokens minted here with real ES256 and RS256 keys, requests made with curl
//! by the `dashboard` service on behalf of a person.

mod common;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use common::idp::Idp;
use common::tokens::{analyst, now, Signer};
use common::*;

const DASHBOARD: &str = "spiffe://mesh.local/ns/reporting/sa/dashboard";
const SUMMARY: &str = "/ledger/summary";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The sidecar with the example policies and one issuer: the test's IdP,
/// found by discovery, with `fields` added to the issuer's own.
fn sidecar(pki: &Pki, up: &Upstream, idp: &Idp, fields: &str) -> Sidecar {
    Meshgate::builder(pki, up)
        .policies()
        .limit("max_header_bytes: 65536")
        .issuer(&idp.issuer_yaml(pki, fields))
}

struct Reply {
    status: String,
    www_authenticate: String,
    body: String,
}

/// GET `path` as the dashboard, with `args` (headers) before the URL.
fn get(pki: &Pki, mg: &Meshgate, path: &str, args: &[&str]) -> Reply {
    let headers = pki.dir.path().join("reply-headers");
    let mut all = vec![
        "-D",
        headers.to_str().expect("utf-8 path"),
        "-w",
        "\n%{http_code}",
    ];
    all.extend_from_slice(args);
    let url = mg.url(path);
    all.push(&url);
    let out = curl(pki, Some("dashboard"), &all);
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

fn with_token(pki: &Pki, mg: &Meshgate, token: &str) -> Reply {
    get(
        pki,
        mg,
        SUMMARY,
        &["-H", &format!("Authorization: Bearer {token}")],
    )
}

fn tokens_counted(mg: &Meshgate, result: &str) -> f64 {
    mg.counter(&format!(
        "meshgate_user_token_validations_total{{result=\"{result}\"}}"
    ))
}

fn upstream_path(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["upstream_path"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_group_member_is_allowed_and_every_forged_or_stale_token_gets_401_counted_by_reason() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let es = Signer::new(Algorithm::ES256, "es-1");
    let rs = Signer::new(Algorithm::RS256, "rs-1");
    let idp = Idp::start(&pki, vec![es.jwk.clone(), rs.jwk.clone()]);
    let iss = idp.issuer();
    let mg = sidecar(&pki, &up, &idp, "").start();

    // Valid tokens of both key types: allowed by the group-based policy.
    for signer in [&es, &rs] {
        let r = with_token(&pki, &mg, &signer.sign(&analyst(&iss)));
        assert_eq!(r.status, "200", "{:?}: {}", signer.alg, r.body);
        assert_eq!(upstream_path(&r.body), SUMMARY);
    }
    assert_eq!(tokens_counted(&mg, "ok"), 2.0);
    // A valid token of someone outside the group: a policy decision, 403.
    let mut outsider = analyst(&iss);
    outsider["sub"] = json!("bob");
    outsider["groups"] = json!(["marketing"]);
    assert_eq!(with_token(&pki, &mg, &es.sign(&outsider)).status, "403");

    let good = es.sign(&analyst(&iss));
    let sig = good.rsplit('.').next().unwrap_or_default();
    let attacks = forged_tokens(&es, &rs, &iss, &good);
    for (what, token, reason) in &attacks {
        assert_refused_and_counted(&pki, &mg, what, token, reason);
    }

    // A token only in the query string is not a token: missing, 401, and it
    // goes nowhere (not upstream, not into the logs).
    let in_query = format!("{SUMMARY}?access_token={good}");
    let r = get(&pki, &mg, &in_query, &[]);
    assert_eq!(r.status, "401", "{}", r.body);
    assert_eq!(
        r.www_authenticate,
        "Bearer error=\"invalid_token\", error_description=\"a bearer token is required\""
    );
    assert_eq!(tokens_counted(&mg, "missing"), 1.0);
    // Without any token at all, the same.
    assert_eq!(get(&pki, &mg, SUMMARY, &[]).status, "401");
    assert_eq!(tokens_counted(&mg, "missing"), 2.0);

    // Routes that take no token ignore one (the orders product is the sales
    // domain's, read by finance reporting only, so 403 for the dashboard).
    let r = get(
        &pki,
        &mg,
        "/orders",
        &["-H", "Authorization: Bearer garbage"],
    );
    assert_eq!(r.status, "403");

    // The counted results appear once each; nothing else was counted.
    let m = mg.metrics();
    let counted: f64 = m
        .lines()
        .filter(|l| l.starts_with("meshgate_user_token_validations_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    // 2 ok + 1 outsider ok + 10 attacks + 2 missing.
    assert_eq!(counted, 15.0, "{m}");
    let logs = mg.logs.dump();
    for (what, token, _) in &attacks {
        let sig = token.rsplit('.').next().unwrap_or_default();
        assert!(
            sig.len() < 16 || !logs.contains(sig),
            "{what}: token in the logs"
        );
    }
    assert!(!logs.contains(sig), "a token is in the logs");
}

/// Forged, stale and malformed tokens, each with the reason it is counted
/// under; `good` is a valid ES256 token of `es` whose parts they reuse.
fn forged_tokens(
    es: &Signer,
    rs: &Signer,
    iss: &str,
    good: &str,
) -> Vec<(&'static str, String, &'static str)> {
    let [h, p, sig]: [&str; 3] = good
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .expect("three parts");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = analyst(iss);
        f(&mut c);
        c
    };
    let mut confusion = Header::new(Algorithm::HS256);
    confusion.kid = Some(rs.kid.clone());
    let mut forged_groups = analyst(iss);
    forged_groups["groups"] = json!(["finance-analysts", "admins"]);
    let stranger = Signer::new(Algorithm::ES256, "not-published");

    vec![
        (
            "alg none",
            format!("{}.{p}.", b64(br#"{"alg":"none","typ":"JWT"}"#)),
            "alg_none",
        ),
        (
            "HS256 keyed with the RSA public key (key confusion)",
            jsonwebtoken::encode(
                &confusion,
                &analyst(iss),
                &EncodingKey::from_secret(rs.public_pem.as_bytes()),
            )
            .expect("hs256"),
            "alg_not_allowed",
        ),
        (
            "expired an hour ago",
            es.sign(&with(&|c| c["exp"] = json!(now() - 3600))),
            "expired",
        ),
        (
            "not valid for another hour",
            es.sign(&with(&|c| c["nbf"] = json!(now() + 3600))),
            "not_yet_valid",
        ),
        (
            "for another audience",
            es.sign(&with(&|c| c["aud"] = json!("billing"))),
            "wrong_audience",
        ),
        (
            "from an untrusted issuer",
            es.sign(&with(&|c| c["iss"] = json!("https://evil.example"))),
            "unknown_issuer",
        ),
        (
            "signed by a key the IdP never published",
            stranger.sign(&analyst(iss)),
            "unknown_kid",
        ),
        (
            "payload tampered (groups), signature kept",
            format!("{h}.{}.{sig}", b64(forged_groups.to_string().as_bytes())),
            "bad_signature",
        ),
        (
            "header tampered, signature kept",
            format!(
                "{}.{p}.{sig}",
                b64(br#"{"alg":"ES256","kid":"es-1","typ":"JWT","jku":"https://evil.example"}"#)
            ),
            "bad_signature",
        ),
        (
            "larger than 16 KiB",
            es.sign(&with(&|c| c["pad"] = json!("x".repeat(17 * 1024)))),
            "too_large",
        ),
    ]
}

/// `token` (`what`) is refused with 401, `WWW-Authenticate: Bearer
/// error="invalid_token"`, never echoed, and counted under `reason`.
fn assert_refused_and_counted(pki: &Pki, mg: &Meshgate, what: &str, token: &str, reason: &str) {
    let before = tokens_counted(mg, reason);
    let r = with_token(pki, mg, token);
    assert_eq!(r.status, "401", "{what}: {}", r.body);
    assert!(
        r.www_authenticate
            .starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{what}: {}",
        r.www_authenticate
    );
    assert!(
        !r.www_authenticate.contains(token) && !r.body.contains(token),
        "{what}: the token is echoed"
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json body");
    assert_eq!(v["error"], "invalid_token", "{what}");
    assert_eq!(tokens_counted(mg, reason), before + 1.0, "{what}: {reason}");
}

#[test]
fn a_rotated_key_is_picked_up_without_restart_and_a_down_idp_keeps_the_cached_keys() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let old = Signer::new(Algorithm::ES256, "2026-10");
    let mut idp = Idp::start(&pki, vec![old.jwk.clone()]);
    let iss = idp.issuer();
    // Unknown key ids may trigger a fetch at any time (0s: no rate limit here).
    let mg = sidecar(&pki, &up, &idp, "min_refresh: 0s").start();
    assert_eq!(
        with_token(&pki, &mg, &old.sign(&analyst(&iss))).status,
        "200"
    );

    // The IdP rotates: a new key is published, the old one withdrawn. The
    // first token naming the new kid makes the sidecar fetch the keys again.
    let new = Signer::new(Algorithm::RS256, "2026-11");
    idp.publish(vec![new.jwk.clone()]);
    let fetched = idp.fetches();
    let r = with_token(&pki, &mg, &new.sign(&analyst(&iss)));
    assert_eq!(r.status, "200", "{}", r.body);
    assert_eq!(idp.fetches(), fetched + 1);
    // Tokens of the withdrawn key no longer pass.
    assert_eq!(
        with_token(&pki, &mg, &old.sign(&analyst(&iss))).status,
        "401"
    );

    // The IdP goes down. Fetching fails (logged and counted), the keys held
    // keep working for new tokens; a token naming a key nobody has is refused.
    idp.stop();
    let errors = format!("meshgate_jwks_refreshes_total{{issuer=\"{iss}\",result=\"error\"}}");
    assert_eq!(mg.counter(&errors), 0.0);
    let log_mark = mg.logs.len();
    let unknown = Signer::new(Algorithm::ES256, "2026-12");
    let r = with_token(&pki, &mg, &unknown.sign(&analyst(&iss)));
    assert_eq!(r.status, "401");
    assert!(mg.counter(&errors) >= 1.0, "{}", mg.metrics());
    assert!(mg
        .logs
        .wait_for(log_mark, std::time::Duration::from_secs(5), |l| l
            .contains("signing keys could not be fetched"))
        .is_some());
    let mut fresh = analyst(&iss);
    fresh["jti"] = json!("after-the-idp-went-down");
    let r = with_token(&pki, &mg, &new.sign(&fresh));
    assert_eq!(r.status, "200", "{}", r.body);
    assert_eq!(
        mg.metric(&format!("meshgate_jwks_keys{{issuer=\"{iss}\"}}")),
        1.0
    );
}

#[test]
fn unknown_kids_cannot_hammer_the_idp_and_an_issuer_without_keys_fails_closed() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let key = Signer::new(Algorithm::ES256, "k1");
    let idp = Idp::start(&pki, vec![key.jwk.clone()]);
    let iss = idp.issuer();
    // A second issuer whose keys cannot be fetched: nothing listens there.
    let dead = format!("https://localhost:{}", unused_port());
    // A third whose discovery document names another issuer (the IdP's
    // document for `{iss}/` is `{iss}`'s): no source of keys (OpenID
    // Connect Discovery 1.0, 4.3).
    let misnamed = format!("{iss}/");
    let mg = sidecar(&pki, &up, &idp, "min_refresh: 1h")
        .issuer(&format!(
            "issuer: {dead}\naudiences: [meshgate]\njwks_url: {dead}/jwks\nca: {}",
            pki.path("ca.pem").display()
        ))
        .issuer(&format!(
            "issuer: {misnamed}\naudiences: [meshgate]\ndiscovery: true\nca: {}",
            pki.path("ca.pem").display()
        ))
        .start();
    let at_start = idp.fetches();
    assert_eq!(at_start, 1);

    // A flood of random key ids: at most one extra fetch per min_refresh.
    for i in 0..20 {
        let random = Signer::new(Algorithm::ES256, &format!("random-{i}"));
        assert_eq!(
            with_token(&pki, &mg, &random.sign(&analyst(&iss))).status,
            "401"
        );
    }
    assert_eq!(tokens_counted(&mg, "unknown_kid"), 20.0);
    assert!(idp.fetches() <= at_start + 1, "{} fetches", idp.fetches());
    // The real key still works.
    assert_eq!(
        with_token(&pki, &mg, &key.sign(&analyst(&iss))).status,
        "200"
    );

    // No keys at all for the dead issuer: its tokens are refused.
    let r = with_token(&pki, &mg, &key.sign(&analyst(&dead)));
    assert_eq!(r.status, "401", "{}", r.body);
    assert!(
        r.www_authenticate.contains("no signing keys"),
        "{}",
        r.www_authenticate
    );
    assert_eq!(tokens_counted(&mg, "no_keys"), 1.0);

    // The misnamed issuer's tokens too, though its keys are the IdP's: the
    // document was read, its keys never fetched.
    let r = with_token(&pki, &mg, &key.sign(&analyst(&misnamed)));
    assert_eq!(r.status, "401", "{}", r.body);
    assert_eq!(tokens_counted(&mg, "no_keys"), 2.0);
    assert!(idp.fetches() <= at_start + 1, "{} fetches", idp.fetches());
    let logs = mg.logs.dump();
    assert!(
        logs.contains(&format!(
            "the document's issuer `{iss}` is not the configured `{misnamed}`"
        )),
        "{logs}"
    );
}

#[test]
fn on_behalf_of_policies_are_testable_offline_with_claims_or_a_token() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let key = Signer::new(Algorithm::ES256, "k1");
    let iss = "https://idp.mesh.local";
    let jwks = pki.path("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [key.jwk] }).to_string()).expect("jwks");
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").policies();
    let yaml = |dept_type: &str| {
        sidecar
            .clone()
            .issuer(&format!(
                "issuer: {iss}\naudiences: [meshgate]\njwks_file: {}\nattributes: {{ department: {{ claim: dept, type: {dept_type} }} }}",
                jwks.display()
            ))
            .yaml()
    };
    let config = pki.path("offline.yaml");
    std::fs::write(&config, yaml("string")).expect("config");
    let config = config.to_str().expect("utf-8");
    // Test cases: raw claims (mapped like a token's), and real tokens.
    let mut analyst_claims = analyst(iss);
    analyst_claims["dept"] = json!("finance");
    let valid = key.sign(&analyst_claims);
    let mut expired = analyst(iss);
    expired["exp"] = json!(now() - 3600);
    let expired = key.sign(&expired);
    check_offline_cases(&pki, config, iss, &valid, &expired);

    check_offline_authorize(config, &analyst_claims, &valid, &expired);

    // validate checks the claim mapping against the schema's Mesh::User.
    let out = offline(&["validate", "--config", config]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(config, yaml("long")).expect("config");
    let out = offline(&["validate", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("users.issuers[0].attributes: the mapped user does not match"),
        "{}",
        text(&out)
    );
}

/// `meshgate ARGS`, run to its end (at most [`EXIT_DEADLINE`]).
fn offline(args: &[&str]) -> std::process::Output {
    output_within(std::process::Command::new(bin()).args(args))
}

/// What a command printed, stdout then stderr.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `meshgate test` cases of on-behalf-of requests: raw claims (mapped like
/// a token's) and real tokens (`valid`, `expired`) of the issuer `iss`
/// that `config` names.
fn check_offline_cases(pki: &Pki, config: &str, iss: &str, valid: &str, expired: &str) {
    let cases = pki.path("obo.test.yaml");
    std::fs::write(
        &cases,
        format!(
            r#"cases:
  - name: claims of an analyst
    principal: {DASHBOARD}
    path: {SUMMARY}
    claims: {{ iss: "{iss}", sub: alice, groups: [finance-analysts], dept: finance }}
    expect: {{ decision: allow, policies: [finance.ledger.dashboard-for-analysts] }}
  - name: claims of someone in marketing
    principal: {DASHBOARD}
    path: {SUMMARY}
    claims: {{ iss: "{iss}", sub: bob, groups: [marketing] }}
    expect: {{ decision: deny, status: 403 }}
  - name: a valid token
    principal: {DASHBOARD}
    path: {SUMMARY}
    token: {valid}
    expect: {{ decision: allow, status: 200 }}
  - name: an expired token
    principal: {DASHBOARD}
    path: {SUMMARY}
    token: {expired}
    expect: {{ decision: allow }}
"#
        ),
    )
    .expect("cases");
    let out = offline(&["test", "--config", config, cases.to_str().expect("utf-8")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("an expired token: token refused (expired): the token has expired"),
        "{all}"
    );
    assert!(all.ends_with("3 passed, 1 failed\n"), "{all}");
}

/// `meshgate authorize` with `--claims` and `--token`.
fn check_offline_authorize(
    config: &str,
    analyst_claims: &serde_json::Value,
    valid: &str,
    expired: &str,
) {
    let base = [
        "authorize",
        "--config",
        config,
        "--principal",
        DASHBOARD,
        "--path",
        SUMMARY,
    ];
    let claims = analyst_claims.to_string();
    for extra in [["--claims", claims.as_str()], ["--token", valid]] {
        let out = offline(&[&base[..], &extra[..]].concat());
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {all}");
        assert!(
            all.contains("decision: allow")
                && all.contains("policies: finance.ledger.dashboard-for-analysts"),
            "{all}"
        );
    }
    let stranger = json!({ "iss": "https://elsewhere", "sub": "eve" }).to_string();
    let out = offline(&[&base[..], &["--claims", stranger.as_str()]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("`https://elsewhere` is not a configured issuer"),
        "{}",
        text(&out)
    );
    let out = offline(&[&base[..], &["--token", expired]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("--token refused (expired)"),
        "{}",
        text(&out)
    );
}

#[test]
fn keys_are_fetched_again_on_the_refresh_interval() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let old = Signer::new(Algorithm::ES256, "a");
    let mut idp = Idp::start(&pki, vec![old.jwk.clone()]);
    let iss = idp.issuer();
    let mg = sidecar(&pki, &up, &idp, "refresh: 1s\nmin_refresh: 1h").start();
    let new = Signer::new(Algorithm::ES256, "b");
    idp.publish(vec![new.jwk.clone()]);
    // Wait for the interval's fetch (the start-up fetch was the first).
    mg.wait_metric(
        &format!("meshgate_jwks_refreshes_total{{issuer=\"{iss}\",result=\"ok\"}}"),
        2.0,
    );
    // The new key is held: with the IdP gone, its tokens pass (no fetch on
    // their behalf could have brought it); the old one is gone.
    idp.stop();
    assert_eq!(
        with_token(&pki, &mg, &new.sign(&analyst(&iss))).status,
        "200"
    );
    assert_eq!(
        with_token(&pki, &mg, &old.sign(&analyst(&iss))).status,
        "401"
    );
}

#[test]
fn header_injection_key_confusion_and_framing_attacks_get_401_counted_by_reason() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let es = Signer::new(Algorithm::ES256, "es-1");
    let rs = Signer::new(Algorithm::RS256, "rs-1");
    let idp = Idp::start(&pki, vec![es.jwk.clone(), rs.jwk.clone()]);
    // The attacker's own "identity provider", serving the attacker's key:
    // a token may point at it (jku, x5u), and it must never be asked.
    let attacker = Signer::new(Algorithm::ES256, "attacker-1");
    let evil = Idp::start(&pki, vec![attacker.jwk.clone()]);
    let iss = idp.issuer();
    // A second issuer that does take HS256, with its own secret: a public
    // key used as the HMAC secret still does not verify there.
    let secret = pki.path("hs-secret");
    std::fs::write(&secret, "a-shared-secret-of-at-least-32-bytes!").expect("secret");
    let hs_iss = "https://hs.mesh.local";
    let hs_issuer = format!(
        "issuer: {hs_iss}\naudiences: [meshgate]\njwks_file: {}\nhs_secret_file: {}\nalgorithms: [HS256, ES256]",
        pki.path("hs-jwks.json").display(),
        secret.display()
    );
    std::fs::write(
        pki.path("hs-jwks.json"),
        json!({ "keys": [es.jwk] }).to_string(),
    )
    .expect("jwks");
    let mg = sidecar(&pki, &up, &idp, "").issuer(&hs_issuer).start();
    let good = es.sign(&analyst(&iss));
    assert_eq!(with_token(&pki, &mg, &good).status, "200");

    let forge = Forge {
        es: &es,
        rs: &rs,
        attacker: &attacker,
        iss: &iss,
        hs_iss,
        evil_url: format!("{}/jwks", evil.issuer()),
        good: &good,
    };
    let mut attacks = forge.alg_attacks();
    attacks.extend(forge.key_attacks());
    attacks.extend(forge.framing_attacks());
    for (what, token, reason) in &attacks {
        let before = tokens_counted(&mg, reason);
        let r = with_token(&pki, &mg, token);
        assert_eq!(r.status, "401", "{what}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json body");
        assert_eq!(v["error"], "invalid_token", "{what}");
        assert_eq!(
            tokens_counted(&mg, reason),
            before + 1.0,
            "{what}: not counted as {reason}:\n{}",
            mg.metrics()
        );
    }
    assert_eq!(
        evil.fetches(),
        0,
        "a token made the sidecar fetch from jku/x5u"
    );

    for (what, hs, reason) in &header_attacks(&good) {
        let before = tokens_counted(&mg, reason);
        let mut args: Vec<&str> = Vec::new();
        for h in hs {
            args.extend(["-H", h.as_str()]);
        }
        let r = get(&pki, &mg, SUMMARY, &args);
        assert_eq!(r.status, "401", "{what}: {}", r.body);
        assert_eq!(
            tokens_counted(&mg, reason),
            before + 1.0,
            "{what}: not counted as {reason}"
        );
    }
    // Nothing of the above reached the upstream; the good token did, once.
    let reached: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(reached, vec![SUMMARY.to_string()]);
}

/// The keys and the valid token the attacks of
/// `header_injection_key_confusion_and_framing_attacks_get_401_counted_by_reason`
/// are made from: each attack is named, with the reason it is counted under.
struct Forge<'a> {
    es: &'a Signer,
    rs: &'a Signer,
    /// The attacker's own key, served by the attacker's IdP at `evil_url`.
    attacker: &'a Signer,
    iss: &'a str,
    /// An issuer that takes HS256 with a secret of its own.
    hs_iss: &'a str,
    evil_url: String,
    good: &'a str,
}

type Attacks = Vec<(&'static str, String, &'static str)>;

fn signed(h: Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&h, claims, key).expect("sign")
}

fn header(alg: Algorithm, kid: Option<&str>, f: &dyn Fn(&mut Header)) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    f(&mut h);
    h
}

fn hmac(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret)
}

fn none_header(alg: &str) -> String {
    b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes())
}

fn no(_: &mut Header) {}

impl Forge<'_> {
    /// The valid token's header, payload and signature.
    fn parts(&self) -> [&str; 3] {
        self.good
            .split('.')
            .collect::<Vec<_>>()
            .try_into()
            .expect("three parts")
    }

    /// `alg: none` and algorithm confusion.
    fn alg_attacks(&self) -> Attacks {
        let f = self;
        let [_, gp, gs] = self.parts();
        let es_pub_der = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(f.es.public_pem.as_bytes())
                .expect("spki")
                .to_vec()
        };
        let es_jwk_json = serde_json::to_string(&f.es.jwk).expect("jwk json");
        vec![
            // alg none in every spelling, with and without a signature.
            (
                "alg None",
                format!("{}.{gp}.", none_header("None")),
                "alg_none",
            ),
            (
                "alg NONE",
                format!("{}.{gp}.", none_header("NONE")),
                "alg_none",
            ),
            (
                "alg nOnE, signature kept",
                format!("{}.{gp}.{gs}", none_header("nOnE")),
                "alg_none",
            ),
            // Algorithm confusion: the EC public key as the HMAC secret, in
            // each form an attacker could take it from the JWKS.
            (
                "HS256 keyed with the EC public key PEM, kid of the EC key",
                signed(
                    header(Algorithm::HS256, Some("es-1"), &no),
                    &analyst(f.iss),
                    &hmac(f.es.public_pem.as_bytes()),
                ),
                "alg_not_allowed",
            ),
            (
                "HS256 keyed with the EC public key DER, no kid",
                signed(
                    header(Algorithm::HS256, None, &no),
                    &analyst(f.iss),
                    &hmac(&es_pub_der),
                ),
                "alg_not_allowed",
            ),
            (
                "HS256 keyed with the EC key's JWK JSON",
                signed(
                    header(Algorithm::HS256, Some("es-1"), &no),
                    &analyst(f.iss),
                    &hmac(es_jwk_json.as_bytes()),
                ),
                "alg_not_allowed",
            ),
            (
                "HS512 keyed with the RSA public key, kid of the RSA key",
                signed(
                    header(Algorithm::HS512, Some("rs-1"), &no),
                    &analyst(f.iss),
                    &hmac(f.rs.public_pem.as_bytes()),
                ),
                "alg_not_allowed",
            ),
            (
                "HS256 at an issuer that takes HS256, keyed with its EC public key",
                signed(
                    header(Algorithm::HS256, Some("es-1"), &no),
                    &analyst(f.hs_iss),
                    &hmac(f.es.public_pem.as_bytes()),
                ),
                "bad_signature",
            ),
            (
                "RS256 header on an ES256 signature (kid of the EC key)",
                format!(
                    "{}.{gp}.{gs}",
                    b64(br#"{"alg":"RS256","kid":"es-1","typ":"JWT"}"#)
                ),
                "alg_not_allowed",
            ),
        ]
    }

    /// A `kid` used as a path or a query, keys the token brings or points
    /// at, a critical extension.
    fn key_attacks(&self) -> Attacks {
        let f = self;
        vec![
            // kid used as a path or a query.
            (
                "kid path traversal",
                signed(
                    header(Algorithm::ES256, Some("../../../../../../dev/null"), &no),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "unknown_kid",
            ),
            (
                "kid SQL",
                signed(
                    header(
                        Algorithm::ES256,
                        Some("x' UNION SELECT 'attacker-1' --"),
                        &no,
                    ),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "unknown_kid",
            ),
            (
                "HS256 with kid /dev/null and an empty secret",
                signed(
                    header(Algorithm::HS256, Some("/dev/null"), &no),
                    &analyst(f.iss),
                    &hmac(b""),
                ),
                "alg_not_allowed",
            ),
            // The token brings its own key, or says where to fetch one.
            (
                "embedded jwk of the attacker, attacker's kid",
                signed(
                    header(Algorithm::ES256, Some("attacker-1"), &|h| {
                        h.jwk = Some(f.attacker.jwk.clone())
                    }),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "unknown_kid",
            ),
            (
                "embedded jwk of the attacker, the real kid",
                signed(
                    header(Algorithm::ES256, Some("es-1"), &|h| {
                        h.jwk = Some(f.attacker.jwk.clone())
                    }),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "bad_signature",
            ),
            (
                "jku to the attacker's JWKS, attacker's kid",
                signed(
                    header(Algorithm::ES256, Some("attacker-1"), &|h| {
                        h.jku = Some(f.evil_url.clone())
                    }),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "unknown_kid",
            ),
            (
                "x5u to the attacker, the real kid",
                signed(
                    header(Algorithm::ES256, Some("es-1"), &|h| {
                        h.x5u = Some(f.evil_url.clone())
                    }),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "bad_signature",
            ),
            (
                "embedded jwk, no kid (two keys published)",
                signed(
                    header(Algorithm::ES256, None, &|h| {
                        h.jwk = Some(f.attacker.jwk.clone())
                    }),
                    &analyst(f.iss),
                    &f.attacker.key,
                ),
                "unknown_kid",
            ),
            // An extension the issuer marks critical is not understood here
            // (RFC 7515 4.1.11): the token is refused even though it is signed.
            (
                "crit extension",
                signed(
                    header(Algorithm::ES256, Some("es-1"), &|h| {
                        h.crit = Some(vec!["exp-bound".into()])
                    }),
                    &analyst(f.iss),
                    &f.es.key,
                ),
                "malformed",
            ),
        ]
    }

    /// Framing: extra segments, trailing garbage, padding.
    fn framing_attacks(&self) -> Attacks {
        let [gh, gp, gs] = self.parts();
        let good = self.good;
        vec![
            ("a fourth segment", format!("{good}.{gs}"), "malformed"),
            (
                "five segments (JWE shape)",
                format!("{gh}.{gp}.{gs}.{gs}.{gs}"),
                "malformed",
            ),
            ("a trailing dot", format!("{good}."), "malformed"),
            (
                "trailing garbage after a space",
                format!("{good} garbage"),
                "malformed",
            ),
            (
                "garbage appended to the signature",
                format!("{good}AAAA"),
                "bad_signature",
            ),
            ("padding on the signature", format!("{good}=="), "malformed"),
            ("two segments", format!("{gh}.{gp}"), "malformed"),
        ]
    }
}

/// The Authorization header itself: exactly one, scheme Bearer. Each case:
/// its name, its header lines, the reason it is counted under.
fn header_attacks(good: &str) -> Vec<(&'static str, Vec<String>, &'static str)> {
    vec![
        (
            "the valid token twice",
            vec![
                format!("Authorization: Bearer {good}"),
                format!("Authorization: Bearer {good}"),
            ],
            "bad_header",
        ),
        (
            "a valid token and a forged one",
            vec![
                format!("Authorization: Bearer {good}"),
                "authorization: Bearer x.y.z".to_string(),
            ],
            "bad_header",
        ),
        (
            "Basic scheme",
            vec![format!("Authorization: Basic {good}")],
            "bad_header",
        ),
        (
            "no scheme",
            vec![format!("Authorization: {good}")],
            "bad_header",
        ),
        // (`Bearer ` with its space is the same once HTTP/1.1 trims the
        // value; over HTTP/2 a value ending in a space is a 400.)
        (
            "Bearer with no token",
            vec!["Authorization: Bearer".to_string()],
            "bad_header",
        ),
    ]
}
