//! TLS material for the data listener: load, validate, swap atomically on change.
//!
//! The server certificate chain, its key and the client-CA trust bundle are one
//! snapshot. A change on disk (cert-manager and the kubelet swap files through
//! symlinks) builds a new snapshot; one that does not load keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

use crate::config::TlsPaths;
use crate::metrics::{CertLabels, Metrics, ResultLabels};

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
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("expiries", &self.expiries)
            .finish_non_exhaustive()
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(field, path, e))
}

fn parse_certs(
    field: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(field, path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(field, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn not_after(field: &'static str, path: &Path, der: &[u8]) -> Result<(String, i64), TlsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| file_error(field, path, format!("certificate does not parse: {e}")))?;
    Ok((
        cert.subject().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

impl TlsMaterial {
    /// Loads and validates the three files; any problem names the field and file.
    pub fn load(paths: &TlsPaths) -> Result<TlsMaterial, TlsError> {
        let cert_pem = read("tls.cert", &paths.cert)?;
        let key_pem = read("tls.key", &paths.key)?;
        let ca_pem = read("tls.client_ca", &paths.client_ca)?;

        let chain = parse_certs("tls.cert", &paths.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            file_error("tls.key", &paths.key, format!("no usable private key: {e}"))
        })?;
        let cas = parse_certs("tls.client_ca", &paths.client_ca, &ca_pem)?;

        let mut expiries = vec![(
            "server".to_string(),
            not_after("tls.cert", &paths.cert, &chain[0])?.1,
        )];
        let mut roots = RootCertStore::empty();
        for ca in cas {
            let (subject, exp) = not_after("tls.client_ca", &paths.client_ca, &ca)?;
            expiries.push((format!("client_ca:{subject}"), exp));
            roots.add(ca).map_err(|e| {
                file_error(
                    "tls.client_ca",
                    &paths.client_ca,
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| file_error("tls.client_ca", &paths.client_ca, e))?;
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
        for part in [&cert_pem, &key_pem, &ca_pem] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let mut content_hash = [0u8; 32];
        content_hash.copy_from_slice(hasher.finish().as_ref());

        Ok(TlsMaterial {
            server_config: Arc::new(config),
            content_hash,
            expiries,
        })
    }
}

/// The live TLS snapshot, swapped atomically.
pub struct TlsStore {
    paths: TlsPaths,
    current: ArcSwap<TlsMaterial>,
}

impl TlsStore {
    pub fn load(paths: TlsPaths, metrics: &Metrics) -> Result<TlsStore, TlsError> {
        let material = TlsMaterial::load(&paths)?;
        publish_expiries(metrics, &material);
        Ok(TlsStore {
            paths,
            current: ArcSwap::from_pointee(material),
        })
    }

    /// The server config for a new handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().server_config.clone()
    }

    /// Re-reads the files; keeps the old material when the new one fails.
    pub fn reload(&self, metrics: &Metrics) {
        match TlsMaterial::load(&self.paths) {
            Ok(m) if m.content_hash == self.current.load().content_hash => {}
            Ok(m) => {
                publish_expiries(metrics, &m);
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

    /// The directories to watch: a file's own directory, where atomic swaps happen.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.paths.cert, &self.paths.key, &self.paths.client_ca]
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

fn publish_expiries(metrics: &Metrics, m: &TlsMaterial) {
    metrics.cert_expiry.clear();
    for (cert, ts) in &m.expiries {
        metrics
            .cert_expiry
            .get_or_create(&CertLabels { cert: cert.clone() })
            .set(*ts);
    }
}

/// Watches `dirs` and sends a tick (debounced) whenever something in them changes.
/// The returned watcher must be kept alive.
///
/// A watch on a directory reached through a symlink (`policies -> wt/abc`,
/// as git-sync lays a checkout out) is on the directory the link pointed to
/// when it was set: swapping the link changes nothing there. So for every
/// symlink on a watched directory's path, the directory holding the link is
/// watched too, for events on the link itself.
///
/// Events carry absolute paths, so the directories are compared made
/// absolute: a relative `policies` never matched `/srv/policies/x.cedar`.
pub fn watch(
    dirs: &[PathBuf],
    debounce: Duration,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| crate::paths::absolute(d)).collect();
    let dirs = dirs.as_slice();
    let links: Vec<PathBuf> = dirs.iter().flat_map(|d| symlinks_on(d)).collect();
    let link_dirs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = links
            .iter()
            .filter_map(|l| l.parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty() && !dirs.contains(p))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let watched = dirs.to_vec();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let relevant = ev.paths.is_empty()
                || ev
                    .paths
                    .iter()
                    .any(|p| links.contains(p) || watched.iter().any(|d| p.starts_with(d)));
            if !ev.kind.is_access() && relevant {
                let _ = raw_tx.send(());
            }
        }
    })?;
    for d in dirs.iter().chain(&link_dirs) {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Let a burst of events (several files swapped) settle, then reload once.
            tokio::time::sleep(debounce).await;
            while raw_rx.try_recv().is_ok() {}
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok((watcher, rx))
}

/// `path` and its ancestors that are symlinks.
fn symlinks_on(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|a| {
            !a.as_os_str().is_empty()
                && std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
        })
        .map(Path::to_path_buf)
        .collect()
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

    fn swap_link(link: &Path, to: &str) {
        let tmp = link.with_extension("tmp");
        std::os::unix::fs::symlink(to, &tmp).expect("symlink");
        std::fs::rename(&tmp, link).expect("atomic swap");
    }

    /// git-sync's layout: the configured directory is a symlink to one
    /// checkout, swapped to the next one, the old one removed later. Before,
    /// the watch stayed on the first checkout: the first swap went unseen
    /// (the removal of the old checkout triggered a late reload), and every
    /// later one too.
    #[tokio::test]
    async fn swapping_a_symlinked_directory_is_seen_each_time() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["v1", "v2", "v3"] {
            std::fs::create_dir(root.path().join(v)).expect("mkdir");
            std::fs::write(root.path().join(v).join("p.cedar"), v).expect("write");
        }
        let link = root.path().join("current");
        std::os::unix::fs::symlink("v1", &link).expect("symlink");
        let (_w, mut ticks) =
            watch(std::slice::from_ref(&link), Duration::from_millis(10)).expect("watch");
        for v in ["v2", "v3"] {
            swap_link(&link, v);
            tokio::time::timeout(Duration::from_secs(5), ticks.recv())
                .await
                .unwrap_or_else(|_| panic!("the swap to {v} was not seen"))
                .expect("tick");
        }
        // Unrelated files beside the link do not count.
        std::fs::write(root.path().join("audit.log"), "x").expect("write");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), ticks.recv())
                .await
                .is_err(),
            "a change beside the link counted"
        );
    }
}
