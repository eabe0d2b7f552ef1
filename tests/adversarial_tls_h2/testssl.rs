//! testssl.sh against the data port.

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::setup::*;

/// testssl (Debian's testssl.sh 3.0, which has no `--mtls`): its openssl
/// is a wrapper that presents campaigns' certificate on every `s_client`, so
/// its HTTP checks get through the mTLS listener; its own socket-level
/// probes need no certificate (they read the ServerHello).
#[test]
fn testssl_finds_no_protocol_or_cipher_weakness() {
    let _heavy = heavy();
    let tool = ["testssl", "testssl.sh"].into_iter().find(|t| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(tool) = tool else {
        require_tool("testssl");
        return;
    };
    if !require_tool("openssl") {
        return;
    }
    let env = env(|_| {}, &[]);
    let (text, took) = run_testssl(tool, &env);
    let findings: Vec<Value> = serde_json::from_str(&text).expect("testssl JSON");
    let finding = |id: &str| -> (String, String) {
        let f = findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("testssl reported no {id}: {text}"));
        (
            f["severity"].as_str().unwrap_or_default().to_string(),
            f["finding"].as_str().unwrap_or_default().to_string(),
        )
    };
    // No weakness: nothing MEDIUM or worse (LOW neither, in fact), and every
    // check ran. Accepted: the WARN `engine_problem`, about the local
    // openssl's missing GOST engine, not about the server.
    for f in &findings {
        let severity = f["severity"].as_str().unwrap_or_default();
        assert!(
            matches!(severity, "OK" | "INFO")
                || (severity == "WARN" && f["id"] == "engine_problem"),
            "testssl finding: {f}"
        );
    }
    // The mTLS wrapper got through to HTTP (the BREACH check needs it).
    assert_eq!(finding("service").1, "HTTP");
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(finding(id).1, "not offered", "{id}");
    }
    assert_eq!(finding("TLS1_2"), ("OK".into(), "offered".into()));
    assert_eq!(finding("TLS1_3").0, "OK");
    for id in ["NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"] {
        assert_eq!(
            finding(&format!("cipherlist_{id}")).1,
            "not offered",
            "{id}"
        );
    }
    for id in [
        "heartbleed",
        "CCS",
        "ticketbleed",
        "ROBOT",
        "secure_renego",
        "secure_client_renego",
        "CRIME_TLS",
        "BREACH",
        "POODLE_SSL",
        "fallback_SCSV",
        "SWEET32",
        "FREAK",
        "DROWN",
        "LOGJAM",
        "BEAST",
        "LUCKY13",
        "RC4",
        "PFS",
    ] {
        assert_eq!(finding(id).0, "OK", "{id}: {:?}", finding(id));
    }
    eprintln!("testssl: {} findings in {took:?}", findings.len());
    env.assert_still_serving();
}

/// Runs `tool` (testssl) against the sidecar of `env` with an openssl that
/// presents campaigns' certificate; its JSON report, and how long it took.
fn run_testssl(tool: &str, env: &Env) -> (String, Duration) {
    let wrapper = env.pki.path("openssl-mtls");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = s_client ]; then shift; exec openssl s_client -cert {} -key {} \"$@\"; fi\nexec openssl \"$@\"\n",
            env.pki.path("campaigns.pem").display(),
            env.pki.path("campaigns-key.pem").display()
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let json = env.pki.path("testssl.json");
    let started = Instant::now();
    // A run takes minutes; the deadline only bounds a hang.
    let out = output_within_limit(
        Command::new(tool)
            .args([
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                "--nodns",
                "none",
                "--ip",
                "127.0.0.1",
            ])
            .args(["--connect-timeout", "30", "--openssl-timeout", "30"])
            .arg("--openssl")
            .arg(&wrapper)
            .arg("--add-ca")
            .arg(env.pki.path("ca.pem"))
            .arg("--jsonfile")
            .arg(&json)
            .args(["-p", "-s", "-f", "-U"])
            .arg(format!("localhost:{}", env.mg.data.port()))
            .stdin(Stdio::null()),
        Duration::from_secs(900),
    );
    let took = started.elapsed();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (text, took)
}
