//! TLS material for the data listener: load, validate, swap atomically on change.
//!
//! The server certificate chain, its key and the client-CA trust bundle are one
//! snapshot. A change on disk (cert-manager and the kubelet swap files through
//! symlinks) builds a new snapshot; one that does not load keeps the old one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::observe::metrics::{CertLabels, Metrics, ResultLabels};

/// Server certificate, its key, and the bundle of CAs trusted for client certificates.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// SPIFFE trust domain -> its own bundle: a certificate with a SPIFFE
    /// ID is then verified against its trust domain's bundle only, and
    /// refused for a trust domain not listed.
    #[serde(default)]
    pub trust_domains: BTreeMap<String, PathBuf>,
}

impl TlsPaths {
    pub(crate) fn resolve(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.client_ca]
            .into_iter()
            .chain(self.trust_domains.values_mut())
        {
            crate::base::paths::resolve(base, p);
        }
    }

    /// Every file of the snapshot, with the field it is named by.
    pub(crate) fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut files = vec![
            ("tls.cert", self.cert.as_path()),
            ("tls.key", self.key.as_path()),
            ("tls.client_ca", self.client_ca.as_path()),
        ];
        files.extend(
            self.trust_domains
                .values()
                .map(|p| ("tls.trust_domains", p.as_path())),
        );
        files
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: {path}: {message}")]
    File {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error("tls: {0}")]
    Config(String),
}

fn file_error(field: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        field,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// One loaded, validated set of TLS material.
pub struct TlsMaterial {
    pub server_config: Arc<ServerConfig>,
    /// SHA-256 over the three files' bytes: equal hash, nothing to reload.
    pub content_hash: [u8; 32],
    /// (label, notAfter as Unix seconds) for the server leaf and each trusted CA.
    pub expiries: Vec<(String, i64)>,
    /// The server leaf's validity period.
    pub leaf: Validity,
}

impl TlsMaterial {
    /// What of the material is out of date now, one line each: the server
    /// certificate outside its validity period (clients refuse every
    /// handshake), a trusted CA expired (every chain through it is
    /// refused). `meshgate validate` warns with them.
    pub fn out_of_date(&self) -> Vec<String> {
        let now = unix_now();
        let mut out = Vec::new();
        if !self.leaf.holds_at(now) {
            out.push(format!(
                "tls.cert: the server certificate is valid from {} to {}, not now: clients will refuse every handshake",
                date(self.leaf.not_before),
                date(self.leaf.not_after)
            ));
        }
        for (label, not_after) in self.expiries.iter().filter(|(l, _)| l != "server") {
            if *not_after < now {
                out.push(format!(
                    "{label}: this CA expired on {}: every client chain through it is refused",
                    date(*not_after)
                ));
            }
        }
        out
    }
}

/// A certificate's validity period, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Whether `now` (Unix seconds) is within the period.
    pub fn holds_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether the period holds now.
    pub fn holds_now(&self) -> bool {
        self.holds_at(unix_now())
    }

    /// Whether a new certificate may replace a valid one: not expired, and
    /// valid within [`NOT_BEFORE_SKEW`] (an issuer sets `notBefore` to its
    /// own now, and its clock may run ahead of this node's; clients judge
    /// it by their own clocks anyway).
    pub fn may_replace(&self) -> bool {
        let now = unix_now();
        self.not_before <= now.saturating_add(NOT_BEFORE_SKEW) && now <= self.not_after
    }
}

/// How far in the future a rotated server certificate's `notBefore` may be
/// and still replace the current one (seconds).
const NOT_BEFORE_SKEW: i64 = 300;

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds as an RFC 3339 date, for a log line.
fn date(t: i64) -> String {
    use std::time::{Duration, UNIX_EPOCH};
    // humantime writes years up to 9999.
    const YEAR_10000: i64 = 253_402_300_800;
    let at = u64::try_from(t)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    match at {
        Some(at) if t < YEAR_10000 => humantime::format_rfc3339_seconds(at).to_string(),
        _ => format!("{t} (Unix seconds)"),
    }
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("expiries", &self.expiries)
            .finish_non_exhaustive()
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::base::paths::read_file_bytes(path).map_err(|e| file_error(field, path, e))
}

fn parse_certs(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let why = crate::base::pem::describe(&e);
            file_error(field, path, format!("not valid PEM: {why}"))
        })?;
    if certs.is_empty() {
        return Err(file_error(field, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn not_after(field: &'static str, path: &Path, der: &[u8]) -> Result<(String, i64), TlsError> {
    validity(field, path, der).map(|(subject, v)| (subject, v.not_after))
}

/// A certificate's subject and validity period.
fn validity(field: &'static str, path: &Path, der: &[u8]) -> Result<(String, Validity), TlsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| file_error(field, path, format!("certificate does not parse: {e}")))?;
    Ok((
        cert.subject().to_string(),
        Validity {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        },
    ))
}

impl TlsMaterial {
    /// Loads and validates the three files; any problem names the field and file.
    pub fn load(paths: &TlsPaths) -> Result<TlsMaterial, TlsError> {
        // All of one generation: a kubelet or csi-driver-spiffe volume
        // swaps them together under a `..data` symlink.
        let files = paths.files();
        let all: Vec<PathBuf> = files.iter().map(|(_, p)| p.to_path_buf()).collect();
        let mut contents = crate::base::paths::read_whole(&all, || {
            files
                .iter()
                .map(|(field, path)| read(field, path))
                .collect::<Result<Vec<_>, TlsError>>()
        })
        .unwrap_or_else(|replaced| {
            let (field, path) = files
                .iter()
                .find(|(_, p)| replaced.0.first().map(|r| r.as_path()) == Some(*p))
                .unwrap_or(&files[0]);
            Err(file_error(field, path, replaced))
        })?;
        let bundles = contents.split_off(3);
        let [cert_pem, key_pem, ca_pem]: [Vec<u8>; 3] = contents
            .try_into()
            .map_err(|_| TlsError::Config("the certificate, key and client CA files".into()))?;

        let chain = parse_certs("tls.cert", &paths.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let why = crate::base::pem::describe(&e);
            file_error(
                "tls.key",
                &paths.key,
                format!("no usable private key: {why}"),
            )
        })?;
        let cas = parse_certs("tls.client_ca", &paths.client_ca, &ca_pem)?;

        let (_, leaf) = validity("tls.cert", &paths.cert, &chain[0])?;
        let mut expiries = vec![("server".to_string(), leaf.not_after)];
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_ca = chain_verifier(
            "tls.client_ca",
            &paths.client_ca,
            "client_ca",
            cas,
            &provider,
            &mut expiries,
        )?;
        let verifier: Arc<dyn ClientCertVerifier> = if paths.trust_domains.is_empty() {
            client_ca
        } else {
            let mut by_domain = HashMap::new();
            for ((domain, path), pem) in paths.trust_domains.iter().zip(&bundles) {
                if !super::trust_domains::is_trust_domain_name(domain) {
                    return Err(file_error(
                        "tls.trust_domains",
                        path,
                        format!("`{domain}` is not a SPIFFE trust domain name (lowercase letters, digits, '.', '-', '_')"),
                    ));
                }
                let cas = parse_certs("tls.trust_domains", path, pem)?;
                let label = format!("trust_domain:{domain}");
                let v = chain_verifier(
                    "tls.trust_domains",
                    path,
                    &label,
                    cas,
                    &provider,
                    &mut expiries,
                )?;
                by_domain.insert(domain.clone(), v);
            }
            Arc::new(super::trust_domains::TrustDomainVerifier::new(
                client_ca, by_domain,
            ))
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => file_error(
                    "tls.key",
                    &paths.key,
                    format!("does not match the certificate in {}", paths.cert.display()),
                ),
                other => file_error("tls.key", &paths.key, other),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ignore_client_order = true;

        let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [&cert_pem, &key_pem, &ca_pem].into_iter().chain(&bundles) {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let mut content_hash = [0u8; 32];
        content_hash.copy_from_slice(hasher.finish().as_ref());

        Ok(TlsMaterial {
            server_config: Arc::new(config),
            content_hash,
            expiries,
            leaf,
        })
    }
}

/// The live TLS snapshot, swapped atomically.
pub struct TlsStore {
    paths: TlsPaths,
    current: ArcSwap<TlsMaterial>,
}

impl TlsStore {
    /// Loads the material. A server certificate outside its validity
    /// period does not stop start-up (as with Envoy: the process comes up,
    /// serves its admin port and picks up the renewed certificate as soon
    /// as it is written), but is logged as an error: clients refuse every
    /// handshake until then.
    pub fn load(paths: TlsPaths, metrics: &Metrics) -> Result<TlsStore, TlsError> {
        let material = TlsMaterial::load(&paths)?;
        if !material.leaf.holds_now() {
            tracing::error!(
                file = %paths.cert.display(),
                not_before = %date(material.leaf.not_before),
                not_after = %date(material.leaf.not_after),
                "the server certificate is not valid now (expired or not yet valid): clients will refuse every handshake until it is replaced"
            );
        }
        publish_expiries(metrics, None, &material);
        Ok(TlsStore {
            paths,
            current: ArcSwap::from_pointee(material),
        })
    }

    /// The server config for a new handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().server_config.clone()
    }

    /// Re-reads the files; keeps the old material when the new one fails,
    /// or when its server certificate is outside its validity period while
    /// the one in force is within its own (a rotation to an expired or
    /// not yet valid certificate would fail every handshake).
    pub fn reload(&self, metrics: &Metrics) {
        match TlsMaterial::load(&self.paths) {
            Ok(m) if m.content_hash == self.current.load().content_hash => {}
            Ok(m) if self.current.load().leaf.holds_now() && !m.leaf.may_replace() => {
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                tracing::warn!(
                    file = %self.paths.cert.display(),
                    not_before = %date(m.leaf.not_before),
                    not_after = %date(m.leaf.not_after),
                    current_not_after = %date(self.current.load().leaf.not_after),
                    "tls reload refused: the new server certificate is not valid now (expired or not yet valid); keeping the current certificate, key and trust bundle"
                );
            }
            Ok(m) => {
                publish_expiries(metrics, Some(&self.current.load()), &m);
                self.current.store(Arc::new(m));
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                tracing::info!("tls material reloaded");
            }
            Err(e) => {
                metrics
                    .tls_reloads
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                tracing::warn!(error = %e, "tls reload failed; keeping the previous certificate, key and trust bundle");
            }
        }
    }

    /// The files to watch.
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        self.paths
            .files()
            .into_iter()
            .map(|(_, p)| p.to_path_buf())
            .collect()
    }
}

/// Sets the new material's expiries, then removes the series only the old
/// material had: a scrape during a reload sees the old or the new value of
/// every series both have, never a gap (an alert on the expiry would
/// otherwise see the series vanish for a moment).
fn publish_expiries(metrics: &Metrics, old: Option<&TlsMaterial>, new: &TlsMaterial) {
    for (cert, ts) in &new.expiries {
        metrics
            .cert_expiry
            .get_or_create(&CertLabels { cert: cert.clone() })
            .set(*ts);
    }
    let gone = old
        .into_iter()
        .flat_map(|o| o.expiries.iter())
        .filter(|(cert, _)| !new.expiries.iter().any(|(c, _)| c == cert));
    for (cert, _) in gone {
        metrics
            .cert_expiry
            .remove(&CertLabels { cert: cert.clone() });
    }
}

/// A verifier of client chains against `cas`, each CA's expiry recorded
/// as `label:subject`.
fn chain_verifier(
    field: &'static str,
    path: &Path,
    label: &str,
    cas: Vec<CertificateDer<'static>>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    expiries: &mut Vec<(String, i64)>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        let (subject, exp) = not_after(field, path, &ca)?;
        expiries.push((format!("{label}:{subject}"), exp));
        roots
            .add(ca)
            .map_err(|e| file_error(field, path, format!("not a usable CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| file_error(field, path, e))
}

/// Whether every certificate of a client's chain is within its validity
/// period now. A resumed TLS session is not verified again: rustls keeps
/// the chain of the full handshake that made it, whose certificate may
/// have expired since (and TLS 1.3 tickets beget new tickets).
pub fn chain_valid_now(chain: &[CertificateDer<'_>]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    !chain.is_empty()
        && chain.iter().all(|der| {
            X509Certificate::from_der(der).is_ok_and(|(_, cert)| cert.validity().is_valid())
        })
}

/// The earliest notAfter of the intermediate certificates a client sent
/// (its chain past the leaf) among those valid now; `None`: none sent, or
/// none valid. One that does not parse or is out of its validity period now
/// cannot be on the path the handshake verified (webpki checks every
/// certificate of the path), so it bounds nothing; one the path did not use
/// and that is valid now is counted all the same: the connection may then
/// close earlier than it had to, never later.
pub fn intermediates_not_after(intermediates: &[CertificateDer<'_>]) -> Option<SystemTime> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    intermediates
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok())
        .filter(|(_, cert)| cert.validity().is_valid())
        .map(|(_, cert)| crate::model::identity::not_after(&cert))
        .min()
}

/// Why a handshake was refused, as a metric label.
pub fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "closed",
            _ => "io",
        };
    };
    match tls {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => "untrusted",
            C::Expired | C::ExpiredContext { .. } => "expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "not_yet_valid",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "bad_usage",
            C::Revoked => "revoked",
            _ => "bad_certificate",
        },
        E::PeerIncompatible(_) => "incompatible",
        E::AlertReceived(_) => "alert_received",
        _ => "protocol_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate valid from an hour ago for `secs` (negative:
    /// expired that long ago).
    fn cert(secs: i64) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::default();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(2);
        p.not_after = now + time::Duration::seconds(secs);
        p.self_signed(&key).expect("cert").der().clone()
    }

    #[test]
    fn the_earliest_intermediate_valid_now_bounds_the_connection() {
        assert_eq!(intermediates_not_after(&[]), None);
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let expired = cert(-60);
        assert_eq!(
            intermediates_not_after(&[garbage.clone(), expired.clone()]),
            None
        );
        let later = cert(7200);
        let sooner = cert(3600);
        let got = intermediates_not_after(&[later, garbage, expired, sooner])
            .expect("a bound")
            .duration_since(SystemTime::now())
            .expect("in the future");
        // The sooner one's, to the second.
        assert!((3590..=3600).contains(&got.as_secs()), "{got:?} from now");
    }
}
