//! Certificate chains: an intermediate CA under a root, and clients whose
//! certificate file holds the leaf with or without its intermediate.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::{Ca, Leaf, Pki};

impl Ca {
    /// An intermediate CA signed by this one (its PEM is the
    /// intermediate's certificate alone).
    pub fn intermediate(&self, name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p
            .signed_by(&key, &self.issuer)
            .expect("signed intermediate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }
}

impl Pki {
    /// Issues `NAME.pem` / `NAME-key.pem` from `intermediate`; the file
    /// holds the leaf, then the intermediate when `with_intermediate`.
    pub fn chained_client(
        &self,
        name: &str,
        intermediate: &Ca,
        leaf: Leaf,
        with_intermediate: bool,
    ) {
        let (cert, key) = intermediate.issue(leaf);
        let chain = if with_intermediate {
            format!("{cert}{}", intermediate.pem)
        } else {
            cert
        };
        self.write(&format!("{name}.pem"), &chain);
        self.write(&format!("{name}-key.pem"), &key);
    }
}
