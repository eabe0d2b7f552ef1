//! A test OIDC identity provider over HTTPS (rcgen certificates): its
//! discovery document and the JWKS the test publishes, with a count of
//! JWKS fetches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::jwk::Jwk;
use serde_json::json;

use super::Pki;

/// An OIDC identity provider over HTTPS: `/.well-known/openid-configuration`
/// names `/jwks`, which serves whatever keys the test publishes. Stopped (its
/// port closed) by `stop` or on drop.
pub struct Idp {
    addr: SocketAddr,
    keys: Arc<Mutex<Vec<Jwk>>>,
    jwks_fetches: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Idp {
    pub fn start(pki: &Pki, keys: Vec<Jwk>) -> Idp {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.path("server.pem"))
                .expect("server cert")
                .map(|c| c.expect("cert"))
                .collect();
        let key = PrivateKeyDer::from_pem_file(pki.path("server-key.pem")).expect("server key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind idp");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let keys = Arc::new(Mutex::new(keys));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (served_keys, fetches) = (keys.clone(), jwks_fetches.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, keys, fetches) =
                            (acceptor.clone(), served_keys.clone(), fetches.clone());
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let svc = hyper::service::service_fn(move |req| {
                                let body = idp_route(req.uri().path(), addr, &keys, &fetches);
                                async move { Ok::<_, std::convert::Infallible>(body) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {},
                    _ = stop_rx => {},
                }
            });
        });
        Idp {
            addr,
            keys,
            jwks_fetches,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn publish(&self, keys: Vec<Jwk>) {
        *self.keys.lock().expect("lock") = keys;
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Closes the port: every later fetch fails to connect.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn idp_route(
    path: &str,
    addr: SocketAddr,
    keys: &Mutex<Vec<Jwk>>,
    fetches: &AtomicUsize,
) -> http::Response<Full<Bytes>> {
    let base = format!("https://localhost:{}", addr.port());
    let body = match path {
        "/.well-known/openid-configuration" => {
            json!({ "issuer": base, "jwks_uri": format!("{base}/jwks") })
        }
        "/jwks" => {
            fetches.fetch_add(1, Ordering::SeqCst);
            json!({ "keys": *keys.lock().expect("lock") })
        }
        _ => {
            let mut r = http::Response::new(Full::new(Bytes::from_static(b"not found")));
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            return r;
        }
    };
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl Idp {
    /// The `users.issuers` entry for this IdP (for [`super::Sidecar::issuer`]):
    /// audience `meshgate`, keys found by discovery and fetched trusting the
    /// PKI's CA, ES256 and RS256, then `fields` as written.
    pub fn issuer_yaml(&self, pki: &Pki, fields: &str) -> String {
        format!(
            "issuer: {}\naudiences: [meshgate]\ndiscovery: true\nca: {}\nalgorithms: [ES256, RS256]\n{fields}",
            self.issuer(),
            pki.path("ca.pem").display()
        )
    }
}
