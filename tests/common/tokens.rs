//! Signing keys of a test identity provider: real ES256 and RS256 keys made
//! by rcgen, tokens signed with jsonwebtoken.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// A signing key of the identity provider.
pub struct Signer {
    pub key: EncodingKey,
    pub alg: Algorithm,
    pub kid: String,
    pub jwk: Jwk,
    /// The public key as PEM (what a key-confusion attacker would use).
    pub public_pem: String,
}

impl Signer {
    pub fn new(alg: Algorithm, kid: &str) -> Signer {
        let (rcgen_alg, key_of): (_, fn(&[u8]) -> EncodingKey) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_der),
            Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, |pkcs8| {
                EncodingKey::from_rsa_der(&pkcs1_of(pkcs8))
            }),
            other => panic!("no test key for {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key pair");
        let key = key_of(&pair.serialize_der());
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        Signer {
            key,
            alg,
            kid: kid.into(),
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).expect("sign")
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (its third
/// field, an OCTET STRING), which is what jsonwebtoken signs with.
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info) = x509_parser::der_parser::parse_der(pkcs8).expect("PKCS#8 DER");
    let fields = info.as_sequence().expect("PrivateKeyInfo");
    fields[2].as_slice().expect("privateKey").to_vec()
}

/// Now, in whole seconds since the Unix epoch (what JWT time claims count).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An analyst's claims for issuer `iss`, valid for ten minutes: subject
/// `alice`, audience `meshgate`, group `finance-analysts`.
pub fn analyst(iss: &str) -> serde_json::Value {
    serde_json::json!({ "iss": iss, "sub": "alice", "aud": "meshgate", "iat": now(), "exp": now() + 600,
            "groups": ["finance-analysts"], "scope": "ledger:read" })
}
