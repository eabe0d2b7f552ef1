//! `meshgate certs dev`: a development CA, a server certificate and client
//! certificates carrying SPIFFE ids, made with rcgen. Not for production.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::model::identity::parse_spiffe_id;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--client {0}: expected NAME=SPIFFE_ID")]
    ClientSyntax(String),
    #[error("--client {name}: name may hold only letters, digits, - and _")]
    ClientName { name: String },
    #[error("--client {name}: {source}")]
    ClientId {
        name: String,
        source: crate::model::identity::IdentityError,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A client certificate to issue: file name stem and SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevClient {
    pub name: String,
    pub spiffe_id: String,
}

impl std::str::FromStr for DevClient {
    type Err = CertsError;
    fn from_str(s: &str) -> Result<Self, CertsError> {
        let (name, id) = s
            .split_once('=')
            .ok_or_else(|| CertsError::ClientSyntax(s.to_string()))?;
        let client = DevClient {
            name: name.to_string(),
            spiffe_id: id.to_string(),
        };
        client.check()?;
        Ok(client)
    }
}

impl DevClient {
    pub fn new(name: &str, spiffe_id: &str) -> DevClient {
        DevClient {
            name: name.to_string(),
            spiffe_id: spiffe_id.to_string(),
        }
    }

    fn check(&self) -> Result<(), CertsError> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CertsError::ClientName {
                name: self.name.clone(),
            });
        }
        parse_spiffe_id(&self.spiffe_id).map_err(|source| CertsError::ClientId {
            name: self.name.clone(),
            source,
        })?;
        Ok(())
    }
}

/// The demo's clients: one the example policies allow, one they deny, and
/// one they allow with the customers' personal fields masked.
pub fn demo_clients() -> Vec<DevClient> {
    vec![
        DevClient::new("reporting", "spiffe://mesh.local/ns/finance/sa/reporting"),
        DevClient::new("campaigns", "spiffe://mesh.local/ns/marketing/sa/campaigns"),
        DevClient::new("analytics", "spiffe://mesh.local/ns/marketing/sa/analytics"),
    ]
}

/// `DIR/hash.key`, a dev key for `hash`-masked fields (32 random bytes as
/// 64 hex digits, mode 0600), written when missing; its path.
pub fn dev_hash_key(dir: &Path) -> Result<std::path::PathBuf, CertsError> {
    let path = dir.join("hash.key");
    if !path.is_file() {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key).map_err(|_| CertsError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("no random bytes"),
        })?;
        write_private(&path, &crate::base::hex::hex(&key))?;
    }
    Ok(path)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_public(path: &Path, pem: &str) -> Result<(), CertsError> {
    fs::write(path, pem).map_err(io_err(path))
}

fn write_private(path: &Path, pem: &str) -> Result<(), CertsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    // An existing file keeps its old mode on open: set it explicitly.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    f.write_all(pem.as_bytes()).map_err(io_err(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Writes `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem` and, per client,
/// `NAME.pem` and `NAME-key.pem` into `out`. Key files are mode 0600.
pub fn generate_dev(out: &Path, clients: &[DevClient]) -> Result<(), CertsError> {
    for c in clients {
        c.check()?;
    }
    fs::create_dir_all(out).map_err(io_err(out))?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "meshgate dev CA");
    dn.push(DnType::OrganizationName, "meshgate");
    ca.distinguished_name = dn;
    validity(&mut ca, 365);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate()?;
    let mut server =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut server, 90);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    write_public(&out.join("ca.pem"), &ca_cert.pem())?;
    write_private(&out.join("ca-key.pem"), &ca_key.serialize_pem())?;
    write_public(&out.join("server.pem"), &server_cert.pem())?;
    write_private(&out.join("server-key.pem"), &server_key.serialize_pem())?;

    for c in clients {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(c.spiffe_id.as_str().try_into()?)];
        params
            .distinguished_name
            .push(DnType::CommonName, c.name.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, 90);
        let cert = params.signed_by(&key, &issuer)?;
        write_public(&out.join(format!("{}.pem", c.name)), &cert.pem())?;
        write_private(
            &out.join(format!("{}-key.pem", c.name)),
            &key.serialize_pem(),
        )?;
    }
    Ok(())
}

/// True when `dir` holds the CA, server and client files and none expires within a day.
pub fn dev_certs_usable(dir: &Path, clients: &[DevClient]) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use x509_parser::prelude::{FromDer, X509Certificate};

    let mut names = vec!["ca".to_string(), "server".to_string()];
    names.extend(clients.iter().map(|c| c.name.clone()));
    let horizon = OffsetDateTime::now_utc() + Duration::days(1);
    names.iter().all(|n| {
        let key_ok = n == "ca" || dir.join(format!("{n}-key.pem")).is_file();
        let cert_ok = CertificateDer::from_pem_file(dir.join(format!("{n}.pem")))
            .ok()
            .and_then(|der| {
                X509Certificate::from_der(&der)
                    .ok()
                    .map(|(_, c)| c.validity().not_after.to_datetime() > horizon)
            })
            .unwrap_or(false);
        key_ok && cert_ok
    })
}
