//! Two claims of the README about end-user tokens, through the real binary
//! with an identity provider served over HTTPS by the test:
//!
//! - a key withdrawn at the issuer empties the cache of verified tokens, so
//!   the very token string that passed before is refused (`unknown_kid`);
//! - on a `userToken: optional` route no token means no user, but a token
//!   that is sent is verified: a bad one is 401 (counted), a good one makes
//!   the user of the decision and of the audit event.

mod common;

use std::path::Path;

use jsonwebtoken::Algorithm;
use serde_json::json;

use common::idp::Idp;
use common::reply::{fetch, Reply};
use common::tokens::{analyst, now, Signer};
use common::trail::event_of;
use common::*;

const DASHBOARD: &str = "spiffe://mesh.local/ns/reporting/sa/dashboard";
const SUMMARY: &str = "/ledger/summary";
const BALANCES: &str = "/accounts/balances";

fn tokens_counted(mg: &Meshgate, result: &str) -> f64 {
    mg.metric(&format!(
        "meshgate_user_token_validations_total{{result=\"{result}\"}}"
    ))
}

/// GET `path` as the dashboard, with `token` as its bearer token when given.
fn as_dashboard(pki: &Pki, mg: &Meshgate, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let args: Vec<&str> = auth.iter().flat_map(|a| ["-H", a.as_str()]).collect();
    fetch(pki, "dashboard", &args, &mg.url(path))
}

/// A 401 as the README documents it: `invalid_token` in the body, and the
/// reason's description in `WWW-Authenticate`.
fn assert_refused(r: &Reply, description: &str) {
    assert_eq!(r.status, "401", "{r:?}");
    assert_eq!(r.json()["error"], "invalid_token", "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\"").as_str()
        ),
        "{r:?}"
    );
}

#[test]
fn a_withdrawn_key_refuses_the_same_token_string_that_passed_before() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let old = Signer::new(Algorithm::ES256, "2026-10");
    let idp = Idp::start(&pki, vec![old.jwk.clone()]);
    let iss = idp.issuer();
    let trail = pki.path("audit.log");
    // The keys are fetched again every second; a forced fetch for an unknown
    // kid is allowed once an hour, so the withdrawal is seen by the
    // scheduled refresh, as it would be in production.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&trail)
        .issuer(&idp.issuer_yaml(&pki, "refresh: 1s\nmin_refresh: 1h"))
        .start();

    // One token string, verified once and then served from the cache.
    let token = old.sign(&analyst(&iss));
    for _ in 0..2 {
        let r = as_dashboard(&pki, &mg, SUMMARY, Some(&token));
        assert_eq!(r.status, "200", "{r:?}");
    }
    assert_eq!(tokens_counted(&mg, "ok"), 2.0);

    // The IdP withdraws the key: it now publishes two others. The gauge of
    // keys held moves to 2 only once the sidecar has swapped the new set in
    // (the cache is emptied in that same step, before the gauge is set).
    let (new, spare) = (
        Signer::new(Algorithm::ES256, "2026-11"),
        Signer::new(Algorithm::RS256, "2026-12"),
    );
    idp.publish(vec![new.jwk.clone(), spare.jwk.clone()]);
    mg.wait_metric(&format!("meshgate_jwks_keys{{issuer=\"{iss}\"}}"), 2.0);

    // The same token string again: refused, its key no longer known.
    let upstream_before = up.count();
    let r = as_dashboard(&pki, &mg, SUMMARY, Some(&token));
    assert_refused(&r, "the token's signing key is not known");
    assert_eq!(tokens_counted(&mg, "unknown_kid"), 1.0);
    assert_eq!(
        up.count(),
        upstream_before,
        "a refused token reached the upstream"
    );
    let event = event_of(&mg, &trail, r.request_id());
    assert_eq!(event["status"], 401, "{event}");
    assert_eq!(event["decision"], "unauthenticated", "{event}");
    assert_eq!(event["error"], "invalid_token", "{event}");
    assert_eq!(event["user"], serde_json::Value::Null, "{event}");

    // A token of the key now published passes: the verifier still works.
    let r = as_dashboard(&pki, &mg, SUMMARY, Some(&new.sign(&analyst(&iss))));
    assert_eq!(r.status, "200", "{r:?}");
    let event = event_of(&mg, &trail, r.request_id());
    assert_eq!(event["user"], format!("{iss}|alice"), "{event}");
}

/// Copies the fixture product `finance.accounts` (route `GET
/// /accounts/balances`, `userToken: optional`) and its policies into the
/// finance domain of the sidecar's copy of the example tree.
fn add_optional_token_product(pki: &Pki) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optional-token");
    for file in ["accounts.odcs.yaml", "accounts.cedar"] {
        std::fs::copy(
            fixtures.join(file),
            pki.path(&format!("policies/domains/finance/{file}")),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn an_optional_token_is_verified_when_sent_and_names_the_user_in_the_audit_event() {
    let pki = Pki::with_clients(&[("dashboard", DASHBOARD)]);
    let up = Upstream::start();
    let key = Signer::new(Algorithm::ES256, "k1");
    let idp = Idp::start(&pki, vec![key.jwk.clone()]);
    let iss = idp.issuer();
    let trail = pki.path("audit.log");
    let sidecar = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&trail)
        .issuer(&idp.issuer_yaml(&pki, ""));
    add_optional_token_product(&pki);
    let mg = sidecar.start();
    let counted = |mg: &Meshgate| {
        let m = mg.metrics();
        m.lines()
            .filter(|l| l.starts_with("meshgate_user_token_validations_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };

    // No token: served, no user, and nothing counted (no token is no refusal).
    let r = as_dashboard(&pki, &mg, BALANCES, None);
    assert_eq!(r.status, "200", "{r:?}");
    assert_eq!(r.json()["upstream_path"], BALANCES);
    let event = event_of(&mg, &trail, r.request_id());
    assert_eq!(event["user"], serde_json::Value::Null, "{event}");
    assert_eq!(event["decision"], "allow", "{event}");
    assert_eq!(
        event["policies"],
        json!(["finance.accounts.dashboard-alone"]),
        "{event}"
    );
    assert_eq!(counted(&mg), 0.0);

    // A token that is sent must be valid: each bad one is 401, never
    // ignored, counted by its reason, and goes no further.
    let reached = up.count();
    let mut expired = analyst(&iss);
    expired["exp"] = json!(now() - 3600);
    let stranger = Signer::new(Algorithm::ES256, "never-published");
    let bad: [(&str, &[&str], &str, &str); 3] = [
        (
            "expired",
            &[
                "-H",
                &format!("Authorization: Bearer {}", key.sign(&expired)),
            ],
            "expired",
            "the token has expired",
        ),
        (
            "signed by an unknown key",
            &[
                "-H",
                &format!("Authorization: Bearer {}", stranger.sign(&analyst(&iss))),
            ],
            "unknown_kid",
            "the token's signing key is not known",
        ),
        (
            "not a bearer token",
            &["-H", "Authorization: Basic ZGFzaGJvYXJkOnNlY3JldA=="],
            "bad_header",
            "one Authorization header with a Bearer token is allowed",
        ),
    ];
    for (what, args, reason, description) in bad {
        let r = fetch(&pki, "dashboard", args, &mg.url(BALANCES));
        assert_refused(&r, description);
        assert_eq!(tokens_counted(&mg, reason), 1.0, "{what}");
        let event = event_of(&mg, &trail, r.request_id());
        assert_eq!(event["decision"], "unauthenticated", "{what}: {event}");
        assert_eq!(event["user"], serde_json::Value::Null, "{what}: {event}");
    }
    assert_eq!(up.count(), reached, "a refused token reached the upstream");
    assert_eq!(counted(&mg), 3.0);

    // A valid token: served on the person's behalf, the user in the event
    // and in the decision (the analysts' policy, not the dashboard's own).
    let r = as_dashboard(&pki, &mg, BALANCES, Some(&key.sign(&analyst(&iss))));
    assert_eq!(r.status, "200", "{r:?}");
    let event = event_of(&mg, &trail, r.request_id());
    assert_eq!(event["user"], format!("{iss}|alice"), "{event}");
    assert_eq!(
        event["policies"],
        json!(["finance.accounts.dashboard-for-analysts"]),
        "{event}"
    );
    assert_eq!(tokens_counted(&mg, "ok"), 1.0);
    // A valid token of a person outside the group reaches Cedar as the
    // user: refused by policy (403), not let through as the dashboard alone.
    let mut outsider = analyst(&iss);
    outsider["sub"] = json!("bob");
    outsider["groups"] = json!(["marketing"]);
    let r = as_dashboard(&pki, &mg, BALANCES, Some(&key.sign(&outsider)));
    assert_eq!(r.status, "403", "{r:?}");
    let event = event_of(&mg, &trail, r.request_id());
    assert_eq!(event["user"], format!("{iss}|bob"), "{event}");
}
