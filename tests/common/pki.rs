//! Certificates for a test: a CA (rcgen), the leaves it issues, and the
//! directory they are written to.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::REPORTING;

/// A CA able to issue leaf certificates.
pub struct Ca {
    pub pem: String,
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("self-signed CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Issues a leaf: (cert PEM, key PEM).
    pub fn issue(&self, spec: Leaf) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.subject_alt_names = spec.sans;
        // rcgen's default subject has a CN of its own; `cn: None` means none.
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = spec.cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.extended_key_usages = spec.eku;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now + spec.valid_from;
        p.not_after = now + spec.valid_until;
        let cert = p.signed_by(&key, &self.issuer).expect("signed leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// What a leaf certificate looks like.
pub struct Leaf {
    pub sans: Vec<SanType>,
    /// The subject's common name; None: an empty subject.
    pub cn: Option<String>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub valid_from: time::Duration,
    pub valid_until: time::Duration,
}

impl Leaf {
    pub fn client_spiffe(id: &str) -> Leaf {
        Leaf {
            sans: vec![SanType::URI(id.try_into().expect("ia5 string"))],
            cn: Some("client".into()),
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            valid_from: -time::Duration::hours(1),
            valid_until: time::Duration::days(30),
        }
    }

    pub fn server() -> Leaf {
        Leaf {
            sans: vec![
                SanType::DnsName("localhost".try_into().expect("ia5 string")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            cn: Some("localhost".into()),
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            valid_from: -time::Duration::hours(1),
            valid_until: time::Duration::days(30),
        }
    }
}

/// A directory of certificates for one test.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Pki {
    /// CA, server cert and the `reporting` client.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("test mesh CA");
        let pki = Pki { dir, ca };
        pki.write("ca.pem", &pki.ca.pem);
        let (c, k) = pki.ca.issue(Leaf::server());
        pki.write("server.pem", &c);
        pki.write("server-key.pem", &k);
        pki.client("reporting", Leaf::client_spiffe(REPORTING));
        pki
    }

    /// The same, with one SPIFFE client per (file name, identity).
    pub fn with_clients(clients: &[(&str, &str)]) -> Pki {
        let pki = Pki::new();
        for (name, id) in clients {
            pki.client(name, Leaf::client_spiffe(id));
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).expect("write");
    }

    /// Issues `NAME.pem` / `NAME-key.pem` from this PKI's CA.
    pub fn client(&self, name: &str, leaf: Leaf) {
        let (c, k) = self.ca.issue(leaf);
        self.write(&format!("{name}.pem"), &c);
        self.write(&format!("{name}-key.pem"), &k);
    }

    /// Issues a client from another CA (untrusted by the sidecar).
    pub fn foreign_client(&self, name: &str, ca: &Ca, leaf: Leaf) {
        let (c, k) = ca.issue(leaf);
        self.write(&format!("{name}.pem"), &c);
        self.write(&format!("{name}-key.pem"), &k);
    }
}
