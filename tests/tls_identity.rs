//! Who a client certificate makes the caller, beyond one trust bundle:
//! SPIFFE trust domains each verified against their own bundle
//! (`tls.trust_domains`), and resumed TLS sessions whose certificate has
//! expired since. Real certificates (rcgen), curl and openssl.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;

const PARTNER: &str = "spiffe://partner.example/ns/analytics/sa/dashboard";
const STRANGER: &str = "spiffe://other.example/ns/finance/sa/reporting";

const UNTRUSTED: &str = "meshgate_tls_handshake_failures_total{reason=\"untrusted\"}";

fn refused(mg: &Meshgate) -> f64 {
    mg.counter(UNTRUSTED)
}

#[test]
fn each_trust_domain_is_verified_against_its_own_bundle_only() {
    let pki = Pki::new();
    let partner = Ca::new("partner CA");
    pki.write("partner-ca.pem", &partner.pem);
    // The partner's CA issues an identity of its own trust domain, and
    // one in the mesh's: the latter must not pass, though the partner's
    // CA is trusted.
    pki.foreign_client("partner", &partner, Leaf::client_spiffe(PARTNER));
    pki.foreign_client("forged", &partner, Leaf::client_spiffe(REPORTING));
    // The mesh's CA issuing for a trust domain no bundle is listed for.
    pki.client("stranger", Leaf::client_spiffe(STRANGER));
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .trust_domain("mesh.local", &pki.path("ca.pem").display().to_string())
        .trust_domain(
            "partner.example",
            &pki.path("partner-ca.pem").display().to_string(),
        )
        .start();

    for (who, id) in [("reporting", REPORTING), ("partner", PARTNER)] {
        assert_eq!(
            status_of(&pki, Some(who), &mg.url("/orders")),
            "200",
            "{who}"
        );
        let seen = up.seen();
        let last = seen.last().expect("forwarded");
        assert_eq!(last.header("x-meshgate-principal"), [id], "{who}");
    }
    let before = up.count();
    for (n, who) in ["forged", "stranger"].into_iter().enumerate() {
        assert_eq!(
            status_of(&pki, Some(who), &mg.url("/orders")),
            "000",
            "{who} got an HTTP response"
        );
        // Counted as the handshake fails, which curl may see first.
        mg.wait_metric(UNTRUSTED, (n + 1) as f64);
        assert_eq!(refused(&mg), (n + 1) as f64, "{who}");
    }
    assert_eq!(up.count(), before, "a refused client reached the upstream");
}

#[test]
fn a_trust_domain_bundle_that_is_missing_or_misnamed_is_refused_with_its_place() {
    let pki = Pki::new();
    let up = Upstream::start();
    let ca = pki.path("ca.pem").display().to_string();
    let missing = pki.path("no-such-bundle.pem").display().to_string();
    let cases = [
        (
            Meshgate::builder(&pki, &up).trust_domain("Mesh.Local", &ca),
            "`Mesh.Local` is not a SPIFFE trust domain name",
        ),
        (
            Meshgate::builder(&pki, &up).trust_domain("mesh.local", &missing),
            "tls.trust_domains",
        ),
    ];
    for (sidecar, reason) in cases {
        for (cmd, err) in sidecar.refusals("bad-trust-domain.yaml") {
            assert!(err.contains(reason), "{cmd}: {err}");
        }
    }
}

/// `openssl s_client` over TLS 1.2 as `who`, saving the session to
/// `session` or resuming it from there; its stdout.
fn s_client(pki: &Pki, mg: &Meshgate, who: &str, session: &str, resume: bool) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-tls1_2", "-connect", &mg.data.to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(pki.path("ca.pem"))
        .arg("-cert")
        .arg(pki.path(&format!("{who}.pem")))
        .arg("-key")
        .arg(pki.path(&format!("{who}-key.pem")))
        .arg(if resume { "-sess_in" } else { "-sess_out" })
        .arg(pki.path(session))
        .arg("-ign_eof");
    let out = output_fed(
        &mut cmd,
        Some(b"GET /orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_resumed_session_whose_certificate_has_expired_since_is_closed() {
    if !require_tool("openssl") {
        return;
    }
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    // Valid for a few seconds from now (the sidecar trusts its CA).
    let mut brief = Leaf::client_spiffe(REPORTING);
    brief.valid_until = time::Duration::seconds(4);
    pki.client("brief", brief);
    let expires = SystemTime::now() + Duration::from_secs(4);

    let full = s_client(&pki, &mg, "brief", "session.pem", false);
    assert!(full.contains("HTTP/1.1 200"), "{full}");
    assert!(full.contains("New, TLSv1.2"), "{full}");
    // Resumed while the certificate is valid: served.
    let resumed = s_client(&pki, &mg, "brief", "session.pem", true);
    assert!(resumed.contains("Reused, TLSv1.2"), "{resumed}");
    assert!(resumed.contains("HTTP/1.1 200"), "{resumed}");

    // The certificate's notAfter is a time of the clock: nothing to wait
    // on but the clock itself (a second past it, for its whole seconds).
    if let Ok(left) = (expires + Duration::from_secs(1)).duration_since(SystemTime::now()) {
        std::thread::sleep(left);
    }
    let before = up.count();
    let late = s_client(&pki, &mg, "brief", "session.pem", true);
    assert!(late.contains("Reused, TLSv1.2"), "{late}");
    assert!(
        !late.contains("HTTP/1.1"),
        "an expired session was served: {late}"
    );
    let expired = "meshgate_tls_handshake_failures_total{reason=\"expired\"}";
    mg.wait_metric(expired, 1.0);
    assert_eq!(mg.counter(expired), 1.0);
    assert_eq!(up.count(), before);
    // A full handshake with it is refused by the verifier, as always.
    let again = s_client(&pki, &mg, "brief", "session-2.pem", false);
    assert!(!again.contains("HTTP/1.1"), "{again}");
}

/// Writes `text` to `path` beside it first, then renames it over: what
/// cert-manager and editors do.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A rotation to a server certificate that is expired, or not yet valid,
/// keeps the valid one in force, says so with the file and the dates, and
/// counts an error. Before, the expired certificate replaced the valid one
/// and every handshake failed. And a sidecar started with an expired
/// certificate starts (as Envoy does), saying loudly that it is expired.
#[test]
fn a_server_certificate_outside_its_validity_does_not_replace_a_valid_one() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let orders = mg.url("/orders");
    assert_eq!(status_of(&pki, Some("reporting"), &orders), "200");
    let days = time::Duration::days;
    for (what, from, until) in [
        ("expired", -days(30), -days(1)),
        ("not yet valid", days(1), days(30)),
    ] {
        let mut leaf = Leaf::server();
        (leaf.valid_from, leaf.valid_until) = (from, until);
        let (cert, key) = pki.ca.issue(leaf);
        let line = mg.logs.len();
        let errors = mg.counter("meshgate_tls_reloads_total{result=\"error\"}");
        replace(&pki.path("server-key.pem"), &key);
        replace(&pki.path("server.pem"), &cert);
        let refused = mg
            .logs
            .wait_for(line, Duration::from_secs(30), |l| {
                l.contains("tls reload refused") && l.contains("server.pem")
            })
            .unwrap_or_else(|| panic!("{what}: no refusal:\n{}", mg.logs.dump()));
        assert!(refused.contains("not_after"), "{refused}");
        assert!(
            mg.counter("meshgate_tls_reloads_total{result=\"error\"}") > errors,
            "{what}"
        );
        assert_eq!(
            status_of(&pki, Some("reporting"), &orders),
            "200",
            "{what}: the valid certificate is no longer served"
        );
        assert_eq!(mg.counter("meshgate_tls_reloads_total{result=\"ok\"}"), 0.0);
    }

    // Started with one outside its validity: up, and loud about it.
    let expired = Meshgate::builder(&pki, &up).start();
    expired
        .logs
        .wait_for(0, Duration::from_secs(30), |l| {
            l.contains("the server certificate is not valid now") && l.contains("server.pem")
        })
        .unwrap_or_else(|| panic!("no error at start-up:\n{}", expired.logs.dump()));
}

/// A certificate file cut short: `run` and `validate` refuse it naming the
/// field, the file and the missing end line as text. Before, the line was
/// printed as a byte array (`missing section end marker: [67, 69, 82, …]`).
#[test]
fn a_cut_pem_file_is_refused_naming_the_file_and_the_missing_line_as_text() {
    let pki = Pki::new();
    let full = std::fs::read_to_string(pki.path("server.pem")).expect("read");
    let cut = &full[..full.find("-----END").expect("an end line")];
    pki.write("cut.pem", cut);
    let cut_path = pki.path("cut.pem").display().to_string();
    let key = pki.path("server-key.pem").display().to_string();
    let ca = pki.path("ca.pem").display().to_string();
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").tls(&cut_path, &key, &ca);
    for (cmd, stderr) in sidecar.refusals("cut.yaml") {
        assert!(
            stderr.contains(&format!(
                "tls.cert: {cut_path}: not valid PEM: no `-----END CERTIFICATE-----` line"
            )),
            "{cmd}: {stderr}"
        );
        assert!(!stderr.contains("[45, 45"), "{cmd}: {stderr}");
    }
}
