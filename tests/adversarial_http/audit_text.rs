//! Control characters and quotes stay inside one audit line.

use crate::audit_helpers::*;
use crate::common::*;
use crate::raw::*;

const DASHBOARD: &str = "spiffe://mesh.local/ns/reporting/sa/dashboard";
const ISSUER: &str = "https://idp.mesh.local";

/// An ES256 key of the identity provider, published in a JWKS file.
struct TokenKey {
    key: jsonwebtoken::EncodingKey,
}

impl TokenKey {
    fn new(jwks: &std::path::Path) -> TokenKey {
        use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
        jwk.common.key_id = Some("k1".into());
        std::fs::write(jwks, serde_json::json!({ "keys": [jwk] }).to_string()).expect("jwks");
        TokenKey { key }
    }

    /// A token of a finance analyst whose subject is `sub`.
    fn token(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({ "iss": ISSUER, "sub": sub, "aud": "meshgate",
            "exp": now + 600, "groups": ["finance-analysts"] });
        jsonwebtoken::encode(&h, &claims, &self.key).expect("sign")
    }
}

#[tokio::test]
async fn control_characters_and_quotes_stay_inside_one_audit_line() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    pki.client("dashboard", Leaf::client_spiffe(DASHBOARD));
    // A certificate whose only name is a subject CN full of quotes,
    // backslashes, braces and non-ASCII line separators.
    let odd_cn = "Zo\u{eb} \"admin\" \\ {\"seq\":0}\u{2028}\u{85}end";
    let mut odd = Leaf::client_spiffe(CAMPAIGNS);
    odd.sans = vec![];
    odd.cn = Some(odd_cn.into());
    pki.client("odd", odd);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let jwks = pki.path("jwks.json");
    let key = TokenKey::new(&jwks);
    let mut mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&audit)
        .issuer(&format!(
            "issuer: {ISSUER}\naudiences: [meshgate]\njwks_file: {}",
            jwks.display()
        ))
        .start();
    let chain_field = format!("x\",\"chain\":\"{}\"}}", "0".repeat(64));
    // (who, raw request, status, what the event must say: field, value)
    let mut cases: Vec<(&str, Vec<u8>, u16, &str, String)> = Vec::new();
    // The user of a verified token is recorded: its subject is the
    // identity provider's text, anything JSON can hold.
    for sub in [
        "alice\n{\"seq\":0,\"type\":\"request\",\"decision\":\"allow\"}",
        "bob\r\nx-injected: 1",
        "nul\u{0}byte",
        "line\u{2028}sep\u{2029}para\u{85}nel",
        "quote\"back\\slash",
        chain_field.as_str(),
        "\u{1b}[31mred\u{7f}\u{8}\u{b}\u{c}",
        "emoji \u{1f600} and a lone \u{fffd}",
    ] {
        let raw = get_with(
            "/ledger/summary",
            &[&format!("Authorization: Bearer {}", key.token(sub))],
        );
        cases.push(("dashboard", raw, 200, "user", format!("{ISSUER}|{sub}")));
    }
    // Refused paths are recorded as sent.
    for path in [
        "/orders/%0a%0d%00",
        "/orders/\"quoted\"%2F",
        "/orders/{\"seq\":0}%2f",
        "/orders/%22%5c%0A",
    ] {
        cases.push(("campaigns", get(path), 400, "path", path.to_string()));
    }
    // An extension method made of every token character.
    cases.push((
        "campaigns",
        b"!#$%&'*+-.^_`|~09azAZ /orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            .to_vec(),
        405,
        "method",
        "!#$%&'*+-.^_`|~09azAZ".into(),
    ));
    // Trace and purpose headers with bytes that are not text.
    let mut junk = get_with(PUBLIC, &["traceparent: 00-\"\\ \t", "tracestate: a=\"b\""]);
    let at = find(&junk, b"\r\nConnection").expect("end of headers");
    junk.splice(at..at, b"\r\nx-obs-text: \xff\xfe\x80".iter().copied());
    cases.push(("campaigns", junk, 200, "path", PUBLIC.into()));
    cases.push((
        "campaigns",
        get_with(PUBLIC, &["x-data-purpose: \"fraud investigation\"\\n"]),
        400,
        "error",
        "bad_request".into(),
    ));
    // The odd certificate's principal.
    cases.push(("odd", get(PUBLIC), 403, "principal", format!("cn:{odd_cn}")));

    for (who, raw, status, _, _) in &cases {
        let ex = exchange(&pki, who, &mg, raw).await;
        assert_eq!(
            ex.replies.len(),
            1,
            "{:?}: {ex:?}",
            String::from_utf8_lossy(raw)
        );
        assert_eq!(
            ex.replies[0].status,
            *status,
            "{:?}: {:?}",
            String::from_utf8_lossy(raw),
            String::from_utf8_lossy(&ex.replies[0].body)
        );
    }
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let bytes = std::fs::read(&audit).expect("audit file");
    assert!(
        bytes.is_ascii(),
        "the audit file holds bytes that are not ASCII"
    );
    assert_eq!(bytes.last(), Some(&b'\n'));
    let lines: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), cases.len(), "one line per request");
    for (line, (_, _, status, field, value)) in lines.iter().zip(&cases) {
        let text = std::str::from_utf8(line).expect("utf-8");
        assert!(!text.contains('\r'), "{text}");
        let v: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v.is_object());
        assert_eq!(v["status"], *status, "{text}");
        let got = match *field {
            "principal" => &v["principal"]["id"],
            f => &v[f],
        };
        assert_eq!(got, value.as_str(), "{text}");
    }
    let ok = verified(&audit);
    assert!(ok.contains(&format!("ok: {} events", cases.len())), "{ok}");
}
