//! SPIFFE federation: each trust domain's certificates verified against that
//! trust domain's own bundle (`tls.trust_domains`), as the X509-SVID
//! specification asks. One bundle holding the CAs of several trust domains
//! would let any of them issue an identity in any other.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::model::identity::{from_leaf, Principal};

/// Whether `name` is a SPIFFE trust domain name: lowercase letters,
/// digits, `.`, `-` and `_` (SPIFFE ID specification, 2.1).
pub fn is_trust_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Picks the bundle a client certificate is verified against by the trust
/// domain of its SPIFFE ID; a trust domain without a bundle is refused.
/// A certificate that names no SPIFFE ID (a DNS name or a common name as
/// its identity), or none that parses (refused after the handshake, with
/// its reason), is verified against `tls.client_ca`.
#[derive(Debug)]
pub struct TrustDomainVerifier {
    client_ca: Arc<dyn ClientCertVerifier>,
    by_domain: HashMap<String, Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

impl TrustDomainVerifier {
    pub fn new(
        client_ca: Arc<dyn ClientCertVerifier>,
        by_domain: HashMap<String, Arc<dyn ClientCertVerifier>>,
    ) -> TrustDomainVerifier {
        let mut hints: Vec<DistinguishedName> = client_ca.root_hint_subjects().to_vec();
        for v in by_domain.values() {
            for h in v.root_hint_subjects() {
                if !hints.iter().any(|k| k.as_ref() == h.as_ref()) {
                    hints.push(h.clone());
                }
            }
        }
        TrustDomainVerifier {
            client_ca,
            by_domain,
            hints,
        }
    }
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match from_leaf(end_entity).map(|id| id.principal) {
            Ok(Principal::Spiffe(id)) => match self.by_domain.get(&id.trust_domain) {
                Some(bundle) => bundle.verify_client_cert(end_entity, intermediates, now),
                None => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            },
            _ => self
                .client_ca
                .verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.client_ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.client_ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client_ca.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_names_follow_the_spiffe_id_specification() {
        for ok in ["mesh.local", "partner-1.example", "a_b", "td"] {
            assert!(is_trust_domain_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Mesh.local",
            "mesh.local:443",
            "spiffe://mesh.local",
            "a/b",
            "é",
        ] {
            assert!(!is_trust_domain_name(bad), "{bad}");
        }
    }
}
