//! Old protocols, renegotiation and weak ciphers are refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;
use crate::setup::*;
use crate::tls_helpers::*;

#[test]
fn old_protocols_renegotiation_and_weak_ciphers_are_refused() {
    if !require_tool("openssl") {
        return;
    }
    let env = env(|_| {}, &[]);
    let failures = |reason: &str| {
        env.metric(&format!(
            "meshgate_tls_handshake_failures_total{{reason=\"{reason}\"}}"
        ))
    };
    let mut incompatible = 0.0;

    // openssl s_client offering only TLS 1.0 or 1.1 (OpenSSL 3 needs security
    // level 0 to offer them at all), or TLS 1.2 with only NULL or CBC-SHA1
    // suites. This openssl has no SSL 3 and cannot offer RC4, export or 3DES
    // suites; the hand-made ClientHellos below do.
    for args in [
        ["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
        ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        ["-tls1_2", "-cipher", "NULL-SHA256:NULL-SHA:@SECLEVEL=0"],
        [
            "-tls1_2",
            "-cipher",
            "AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
        ],
    ] {
        let (code, text) = s_client(&env, Some("campaigns"), &args, "");
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert_eq!(
            alert_number(&text),
            Some(HANDSHAKE_FAILURE),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("no peer certificate available"),
            "{args:?}: {text}"
        );
        incompatible += 1.0;
        wait_until("the refusal counted", || {
            failures("incompatible") == incompatible
        });
    }

    // Hand-made ClientHellos: SSL 2.0 and 3.0, TLS 1.0, and TLS 1.2 offering
    // only RC4, export, NULL, 3DES or CBC-SHA1 suites.
    for (name, hello, alert, reason) in weak_client_hellos() {
        let before = failures(reason);
        assert_eq!(raw_client_hello(&env, &hello), Ok((2, alert)), "{name}");
        wait_until("the refusal counted", || failures(reason) == before + 1.0);
    }
    let refused = handshake_failures(&env);
    assert_eq!(refused, 4.0 + 8.0);

    // Renegotiation on an established TLS 1.2 connection (s_client's `R`),
    // secure and legacy: refused with a no_renegotiation alert, which
    // openssl treats as fatal. The handshake had succeeded: nothing more is
    // counted as refused.
    for extra in [&[][..], &["-legacy_renegotiation"][..]] {
        let mut args = vec!["-tls1_2"];
        args.extend_from_slice(extra);
        let (code, text) = s_client(&env, Some("campaigns"), &args, "R\n");
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert!(text.contains("Protocol  : TLSv1.2"), "{args:?}: {text}");
        assert!(text.contains("RENEGOTIATING"), "{args:?}: {text}");
        assert!(text.contains(":no renegotiation:"), "{args:?}: {text}");
    }
    let after = handshake_failures(&env);
    assert_eq!(after, refused);
    env.assert_still_serving();
    assert_eq!(env.assert_protected_never_arrived(), 1);
}

/// Every handshake failure counted so far, whatever the reason.
fn handshake_failures(env: &Env) -> f64 {
    env.mg
        .metrics()
        .lines()
        .filter(|l| l.starts_with("meshgate_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Hand-made ClientHellos nothing modern sends: (what, the bytes, the alert
/// the server must answer, the failure reason it must count).
fn weak_client_hellos() -> Vec<(&'static str, Vec<u8>, u8, &'static str)> {
    vec![
        (
            "SSL 2.0",
            sslv2_client_hello(),
            DECODE_ERROR,
            "protocol_error",
        ),
        (
            "SSL 3.0",
            client_hello(0x0300, 0x0300, &[0x000a, 0x0005, 0x002f], false),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
        (
            "TLS 1.0",
            client_hello(0x0301, 0x0301, &[0xc009, 0xc013, 0x002f], true),
            PROTOCOL_VERSION,
            "incompatible",
        ),
        (
            "RC4",
            client_hello(0x0301, 0x0303, &[0xc007, 0xc011, 0x0005, 0x0004], true),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
        (
            "export",
            client_hello(0x0301, 0x0303, &[0x0003, 0x0006, 0x0008, 0x0014], true),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
        (
            "NULL",
            client_hello(
                0x0301,
                0x0303,
                &[0x0000, 0x0001, 0x0002, 0xc006, 0x003b],
                true,
            ),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
        (
            "3DES",
            client_hello(0x0301, 0x0303, &[0x000a, 0xc008, 0xc012], true),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
        (
            "CBC-SHA1",
            client_hello(0x0301, 0x0303, &[0xc009, 0xc013, 0x002f, 0x0035], true),
            HANDSHAKE_FAILURE,
            "incompatible",
        ),
    ]
}

/// Sends one hand-made ClientHello and returns the server's answer: the
/// alert (level, description) when its first record is one, None otherwise.
fn raw_client_hello(env: &Env, hello: &[u8]) -> Result<(u8, u8), String> {
    let mut tcp = TcpStream::connect(env.mg.data).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(hello).expect("send hello");
    let mut head = [0u8; 5];
    tcp.read_exact(&mut head)
        .map_err(|e| format!("no answer: {e}"))?;
    if head[0] != 21 {
        return Err(format!("record type {} instead of an alert", head[0]));
    }
    let mut alert = [0u8; 2];
    tcp.read_exact(&mut alert)
        .map_err(|e| format!("short alert: {e}"))?;
    Ok((alert[0], alert[1]))
}

/// A ClientHello record: TLS record version, client_version, cipher suites;
/// with `extensions`, the ones a TLS 1.2 client sends (groups, point formats,
/// signature algorithms, secure renegotiation).
fn client_hello(
    record_version: u16,
    client_version: u16,
    suites: &[u16],
    extensions: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(client_version.to_be_bytes());
    body.extend([0x5a; 32]);
    body.push(0);
    body.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend(s.to_be_bytes());
    }
    body.extend([1, 0]);
    if extensions {
        let mut ext = Vec::new();
        for (kind, data) in [
            (0x000a_u16, &[0, 4, 0, 0x1d, 0, 0x17][..]),
            (0x000b, &[1, 0][..]),
            (0x000d, &[0, 6, 4, 3, 8, 4, 4, 1][..]),
            (0xff01, &[0][..]),
        ] {
            ext.extend(kind.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
    }
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![22];
    rec.extend(record_version.to_be_bytes());
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// An SSL 2.0 CLIENT-HELLO (the old compatible form), offering SSL 2 ciphers.
fn sslv2_client_hello() -> Vec<u8> {
    let specs: [u8; 6] = [0x01, 0x00, 0x80, 0x07, 0x00, 0xc0];
    let mut body = vec![1, 0x00, 0x02];
    body.extend((specs.len() as u16).to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.extend(16u16.to_be_bytes());
    body.extend(specs);
    body.extend([0x5a; 16]);
    let mut rec = vec![0x80 | (body.len() >> 8) as u8, body.len() as u8];
    rec.extend(body);
    rec
}
