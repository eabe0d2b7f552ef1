//! HTTPS GET for small documents (JWKS, OIDC discovery): rustls with the
//! system's roots plus an optional PEM bundle, a time limit and a size limit.
//! Its roots and TLS client settings also serve the span exporter's
//! collector connection (`observe::trace`).

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest document accepted.
const MAX_BYTES: usize = 1024 * 1024;
/// Whole request, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<HttpConnector>,
        Empty<bytes::Bytes>,
    >,
}

/// The system's roots and the CAs in `ca` (PEM), if given: a file that
/// cannot be read or holds no certificate is an error.
pub fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        use rustls_pki_types::pem::PemObject;
        let why = |e: rustls_pki_types::pem::Error| {
            format!("{}: {}", path.display(), crate::base::pem::describe(&e))
        };
        let pem = crate::base::paths::read_file_bytes(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut n = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(why)?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("{}: no certificate", path.display()));
        }
    }
    Ok(roots)
}

/// A TLS client (rustls with aws-lc-rs, its safe defaults) trusting `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    /// Trusts the system's roots and the CAs in `ca` (PEM), if given.
    pub fn new(ca: Option<&Path>) -> Result<Client, String> {
        let roots = roots(ca)?;
        if roots.is_empty() {
            return Err("no trusted roots: give a ca bundle".into());
        }
        let tls = client_config(roots)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        Ok(Client { inner })
    }

    /// The body of a 200 response to `GET url`.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let fetch = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if response.status() != http::StatusCode::OK {
                return Err(format!("{url}: status {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(TIMEOUT, fetch)
            .await
            .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
    }
}
