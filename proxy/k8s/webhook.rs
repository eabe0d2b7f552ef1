//! `meshgate inject serve`: the MutatingAdmissionWebhook server.
//!
//! HTTPS (rustls) on `webhook.listen`: `POST /inject` (pods of opted-in
//! namespaces) and `POST /inject-pod` (pods labelled for injection elsewhere)
//! take an AdmissionReview v1 and answer with the same decision `meshgate inject -f` makes, as a
//! JSONPatch. A body that is not an AdmissionReview gets 400; a review the
//! webhook cannot honour, or one that does not parse but whose
//! `request.uid` can be read, gets `allowed: false` with the reason. The
//! certificate and key are re-read when their directory changes (cert-manager
//! and the kubelet swap Secret volumes through a `..data` symlink) or on
//! SIGHUP; a pair that does not load keeps the previous one.
//!
//! Connections: at most 64 per source address while half the places or
//! more are taken (more are then closed at accept; transport/places.rs)
//! and 1,024 in all (more wait in the backlog); the TLS handshake within
//! 3 s; no request in progress for 3 s and the connection is closed. One
//! client can then no longer hold every place while the API server's
//! reviews, with `failurePolicy: Fail`, wait.
//!
//! Plain HTTP on `webhook.admin`: `/ready`, `/live`, `/metrics`, served by
//! the sidecar's admin server (`runtime::admin`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::base::watch::Changes;
use crate::k8s::inject::{InjectorConfig, Outcome, WebhookConfig, WebhookTls};
use crate::runtime::admin::{Admin, Probes};
use crate::transport::listener::Acceptor;
use crate::transport::places::Places;
use crate::transport::streams::{Streams, Verdict, Watch};

/// Largest AdmissionReview accepted: a CREATE review carries the object
/// once, and the API server refuses request bodies over 3 MiB.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// The review bodies held at once, all connections and HTTP/2 streams
/// together, in bytes: a body takes its share as its bytes arrive (byte
/// for byte, so many small frames take no more than their bytes) and waits
/// when none is left, so memory follows what clients have sent, never what
/// they announce, and a client that stalls holds only what it sent.
const BODY_BUDGET: usize = 32 * 1024 * 1024;
/// How long a review's body may take to arrive (a wait for budget
/// included): the API server sends it at once and gives up after the
/// webhook's `timeoutSeconds` (10 by default).
const REVIEW_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once, from all sources; more wait in the listen
/// backlog. A connection holds its place only while it carries requests:
/// idle, it is closed after [`IDLE_TIMEOUT`] (a silent one after
/// [`HANDSHAKE_TIMEOUT`]), so a full house frees within seconds. Sized
/// for many sources at their share each ([`MAX_CONNECTIONS_PER_SOURCE`]:
/// sixteen of them are needed to fill it). An idle TLS connection costs
/// about 30 KiB (1,024 idle HTTP/2 ones from 16 addresses: +30 MB RSS), so
/// a full house and [`BODY_BUDGET`] stay within the 128 MiB limit.
const MAX_CONNECTIONS: usize = 1024;
/// Connections from one address at once; beyond them a connection is
/// closed as soon as it is accepted. Since Kubernetes 1.16 the API server
/// calls admission webhooks over HTTP/1.1, one connection per review in
/// progress, and keeps at most 25 idle per webhook host (client-go's
/// transport): its reviews in progress at one replica of the injector, a
/// few milliseconds each, stay far below this even in a burst of pod
/// creations, while one client alone can no longer hold every place (at
/// 256, 256 idle connections from one address refused every review).
const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// How long the TLS handshake may take from the accept (the API server's
/// takes a round trip or two); until it is done the connection has a place.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection may go with no request in progress, from its
/// handshake or its last answer, before it is closed (HTTP/1.1: at once;
/// HTTP/2: GOAWAY, and dropped if still idle at the next look, a quarter
/// of this later). The API server reuses an idle connection for the next
/// review (client-go keeps them 90 s) and opens another whenever it has
/// none: the reviews of a burst of pod creations, milliseconds apart,
/// still share connections, and a review after a pause costs a handshake.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 streams at once on one connection (the API server speaks
/// HTTP/1.1 to webhooks; this bounds any other client's).
const MAX_STREAMS: u32 = 64;
/// HTTP/2 streams a client may reset before their answer, and half of all
/// it opened at least, before its connection is dropped (rapid reset).
const MAX_PREMATURE_RESETS: u32 = 100;
/// How long one connection is served before it is closed gracefully (the
/// API server opens another), however busy: its place is shared in turn.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a connection closing gracefully (its lifetime over, or the
/// process stopping) may finish its open requests.
const CONNECTION_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the injector configuration has no webhook section (listen, admin, tls)")]
    NotConfigured,
    #[error("webhook.tls.{field}: {path}: {message}")]
    Tls {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("watching the certificate: {0}")]
    Watch(#[from] notify::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The injector's metrics.
pub struct InjectorMetrics {
    registry: Registry,
    injected: Counter,
    skipped: Family<ReasonLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    connections_cut: Family<CutLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabels {
    reason: &'static str,
}

impl InjectorMetrics {
    fn new() -> InjectorMetrics {
        let mut registry = Registry::with_prefix("meshgate_injector");
        let injected = Counter::default();
        let skipped = Family::<ReasonLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        let connections_cut = Family::<CutLabels, Counter>::default();
        registry.register(
            "connections_cut",
            "Webhook connections the injector closed, by reason (source_limit: the address held its share of the connections; handshake: TLS failed or took over 3 s; idle: no request in progress for 3 s; premature_resets: HTTP/2 streams reset before their answer)",
            connections_cut.clone(),
        );
        for reason in ["source_limit", "handshake", "idle", "premature_resets"] {
            let _ = connections_cut.get_or_create(&CutLabels { reason });
        }
        registry.register(
            "injected",
            "Pods injected with the sidecar",
            injected.clone(),
        );
        registry.register("skipped", "Pods left alone, by reason", skipped.clone());
        registry.register(
            "errors",
            "Reviews refused (refused: the pod cannot be injected as asked; unsupported: not a Pod CREATE; invalid: not a well-formed AdmissionReview)",
            errors.clone(),
        );
        registry.register(
            "tls_reloads",
            "Webhook certificate reloads",
            tls_reloads.clone(),
        );
        // Present from the start, so a rate over them exists before the first error.
        for r in ["refused", "unsupported", "invalid"] {
            let _ = errors.get_or_create(&ReasonLabels { reason: r.into() });
        }
        InjectorMetrics {
            registry,
            injected,
            skipped,
            errors,
            tls_reloads,
            connections_cut,
        }
    }

    fn cut(&self, reason: &'static str) {
        self.connections_cut
            .get_or_create(&CutLabels { reason })
            .inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

fn tls_error(field: &'static str, path: &std::path::Path, message: impl ToString) -> WebhookError {
    WebhookError::Tls {
        field,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Loads the serving certificate chain and key.
/// The pair is read as one generation (a Secret volume swaps both under
/// `..data`; see `base::paths::read_whole`).
pub fn load_tls(tls: &WebhookTls) -> Result<Arc<ServerConfig>, WebhookError> {
    let pair = [tls.cert.clone(), tls.key.clone()];
    let read = || -> Result<_, WebhookError> {
        let pem = crate::base::pem::describe;
        let bytes = |field, path: &std::path::Path| {
            crate::base::paths::read_file_bytes(path).map_err(|e| tls_error(field, path, e))
        };
        let chain = CertificateDer::pem_slice_iter(&bytes("cert", &tls.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error("cert", &tls.cert, pem(&e)))?;
        let key = PrivateKeyDer::from_pem_slice(&bytes("key", &tls.key)?)
            .map_err(|e| tls_error("key", &tls.key, pem(&e)))?;
        Ok((chain, key))
    };
    let (chain, key) = crate::base::paths::read_whole(&pair, read).unwrap_or_else(|replaced| {
        let path = replaced.0.first().unwrap_or(&tls.cert);
        let field = if *path == tls.key { "key" } else { "cert" };
        Err(tls_error(field, path, &replaced))
    })?;
    if chain.is_empty() {
        return Err(tls_error("cert", &tls.cert, "holds no CERTIFICATE block"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| tls_error("cert", &tls.cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("key", &tls.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct State {
    cfg: InjectorConfig,
    metrics: InjectorMetrics,
    tls: ArcSwap<ServerConfig>,
    /// Set on SIGTERM: `/ready` answers 503 while reviews are still served.
    draining: std::sync::atomic::AtomicBool,
    /// What is left of `BODY_BUDGET`.
    body_budget: tokio::sync::Semaphore,
}

/// A bound webhook server, ready to serve.
pub struct Bound {
    state: Arc<State>,
    listener: TcpListener,
    admin: TcpListener,
    webhook: WebhookConfig,
}

/// Loads the certificate and binds both listeners.
pub async fn bind(cfg: InjectorConfig) -> Result<Bound, WebhookError> {
    let webhook = cfg.webhook.clone().ok_or(WebhookError::NotConfigured)?;
    let tls = load_tls(&webhook.tls)?;
    let listener =
        TcpListener::bind(webhook.listen)
            .await
            .map_err(|source| WebhookError::Bind {
                addr: webhook.listen,
                source,
            })?;
    let admin = TcpListener::bind(webhook.admin)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: webhook.admin,
            source,
        })?;
    Ok(Bound {
        state: Arc::new(State {
            cfg,
            metrics: InjectorMetrics::new(),
            tls: ArcSwap::new(tls),
            draining: std::sync::atomic::AtomicBool::new(false),
            body_budget: tokio::sync::Semaphore::new(BODY_BUDGET),
        }),
        listener,
        admin,
        webhook,
    })
}

impl Bound {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), WebhookError> {
        let Bound {
            state,
            listener,
            admin,
            webhook,
        } = self;
        let pair = [webhook.tls.cert.clone(), webhook.tls.key.clone()];
        let mut changes = Changes::new().watch((), &pair, Duration::from_millis(200))?;
        let reload_state = state.clone();
        let reload_tls = webhook.tls.clone();
        tokio::spawn(async move {
            // A change of the pair or SIGHUP: re-read it.
            while let Some(change) = changes.next().await {
                changes.rearm(change);
                reload(&reload_state, &reload_tls);
            }
        });
        let admin_addr = admin
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tokio::spawn(crate::runtime::admin::serve(admin, state.clone()));
        let mut listener = Acceptor::new(listener, "webhook");
        tracing::info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = %admin_addr,
            "meshgate injector ready"
        );
        let (drain, draining) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        // Serve until SIGTERM; then report not ready and keep serving for
        // `shutdown_delay`, while the endpoint leaves the Service (the API
        // server would otherwise meet a closed port and, with failurePolicy
        // Fail, refuse pods); then drain the open requests.
        let mut delay: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let places = Places::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE);
        // A place of the total, kept across connections its source could not take.
        let mut vacancy = None;
        loop {
            let (free, (tcp, peer)) = tokio::select! {
                biased;
                _ = &mut shutdown, if delay.is_none() => {
                    state.draining.store(true, std::sync::atomic::Ordering::Release);
                    tracing::info!(delay = ?webhook.shutdown_delay, "shutting down: not ready, still serving");
                    delay = Some(Box::pin(tokio::time::sleep(webhook.shutdown_delay)));
                    continue;
                }
                _ = async { if let Some(d) = delay.as_mut() { d.await } else { std::future::pending().await } } => break,
                accepted = async {
                    let free = match vacancy.take() {
                        Some(v) => v,
                        None => places.vacancy().await,
                    };
                    (free, listener.accept().await)
                } => accepted,
            };
            let place = match free.claim(&places, peer.ip()) {
                Ok(place) => place,
                Err(free) => {
                    // Closed at once: the fd is back before the next accept.
                    vacancy = Some(free);
                    state.metrics.cut("source_limit");
                    tracing::debug!(%peer, "webhook connection refused: its address holds its share");
                    continue;
                }
            };
            let state = state.clone();
            let draining = draining.clone();
            tokio::spawn(async move {
                connection(state, tcp, draining).await;
                drop(place);
            });
        }
        drop(listener);
        // Every connection closes gracefully; all have when every place is back.
        let _ = drain.send(true);
        drop(vacancy);
        if !places.all_free(CONNECTION_GRACE).await {
            tracing::warn!("requests still open after 10 s; closing them");
        }
        tracing::info!("meshgate injector stopped");
        Ok(())
    }
}

/// One API server connection: TLS within [`HANDSHAKE_TIMEOUT`], then
/// HTTP/1.1 or HTTP/2 until it closes, it has had no request in progress
/// for [`IDLE_TIMEOUT`], or it closes gracefully at the end of its
/// lifetime or at shutdown.
async fn connection(
    state: Arc<State>,
    tcp: tokio::net::TcpStream,
    draining: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(state.tls.load_full());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            state.metrics.cut("handshake");
            tracing::debug!(error = %e, "webhook handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.cut("handshake");
            tracing::debug!("webhook handshake not done in time");
            return;
        }
    };
    // The requests in progress, for the idle timeout (transport/streams.rs).
    let streams = Streams::new(MAX_STREAMS, MAX_PREMATURE_RESETS);
    let svc_streams = streams.clone();
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        let state = svc_state.clone();
        let exchange = svc_streams.open();
        async move {
            let resp = handle(&state, req).await;
            exchange.answered();
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(Some(MAX_PREMATURE_RESETS as usize));
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    if let Some(reason) = drive(conn, &streams, draining).await {
        state.metrics.cut(reason);
    }
}

/// Runs a connection until it ends; closes it gracefully when it has had
/// no request in progress for [`IDLE_TIMEOUT`], at the end of its lifetime
/// and at shutdown, and drops it when a graceful close is not done within
/// [`CONNECTION_GRACE`], or still idle a look later (a GOAWAY unanswered).
/// Some reason when the injector cut it.
async fn drive<C: hyper_util::server::graceful::GracefulConnection>(
    conn: C,
    streams: &Streams,
    mut draining: tokio::sync::watch::Receiver<bool>,
) -> Option<&'static str> {
    use tokio::time::{sleep_until, Instant};
    tokio::pin!(conn);
    let every = IDLE_TIMEOUT / 4;
    let mut look_at = Instant::now() + every;
    let end_of_life = Instant::now() + CONNECTION_LIFETIME;
    // When a graceful close began, and whether for idleness.
    let mut closing: Option<(Instant, bool)> = None;
    let mut watch = Watch::default();
    loop {
        let give_up = closing.map_or(end_of_life, |(at, _)| at + CONNECTION_GRACE);
        tokio::select! {
            _ = conn.as_mut() => return closing.and_then(|(_, idle)| idle.then_some("idle")),
            () = streams.abusive() => return Some("premature_resets"),
            _ = sleep_until(look_at) => {
                let now = Instant::now();
                look_at = now + every;
                // No reply is ever held for the client here: no send stall.
                if streams.check(&mut watch, now, Duration::MAX, IDLE_TIMEOUT) != Verdict::Quiet {
                    continue;
                }
                match closing {
                    None => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((now, true));
                    }
                    // Idle still, a look after the graceful close began.
                    Some((_, idle)) => return idle.then_some("idle"),
                }
            }
            _ = sleep_until(give_up), if closing.is_some() => return None,
            _ = sleep_until(end_of_life), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now(), false));
            }
            _ = draining.wait_for(|d| *d), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now(), false));
            }
        }
    }
}

fn reload(state: &State, tls: &WebhookTls) {
    match load_tls(tls) {
        Ok(c) => {
            state.tls.store(c);
            state
                .metrics
                .tls_reloads
                .get_or_create(&ResultLabels { result: "ok" })
                .inc();
            tracing::info!("webhook certificate reloaded");
        }
        Err(e) => {
            state
                .metrics
                .tls_reloads
                .get_or_create(&ResultLabels { result: "error" })
                .inc();
            tracing::warn!(error = %e, "webhook certificate reload failed; keeping the previous one");
        }
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let selected = match req.uri().path() {
        "/inject" => crate::k8s::inject::Selected::Namespace,
        "/inject-pod" => crate::k8s::inject::Selected::Pod,
        _ => return respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    if req.method() != Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST an AdmissionReview\n",
        );
    }
    let mut held = None;
    let read = read_body(&state.body_budget, req.into_body(), &mut held);
    let body = match tokio::time::timeout(REVIEW_READ_TIMEOUT, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            state.metrics.error("invalid");
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("cannot read the body: {e}\n"),
            );
        }
        Err(_) => {
            state.metrics.error("invalid");
            return respond(
                StatusCode::REQUEST_TIMEOUT,
                "text/plain",
                format!(
                    "the review did not arrive within {} s\n",
                    REVIEW_READ_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let answer = match crate::k8s::inject::review(&state.cfg, &body, selected) {
        Ok(a) => a,
        Err(e) => {
            state.metrics.error("invalid");
            tracing::warn!(error = %e, "invalid admission review");
            return respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"));
        }
    };
    let uid = answer.response.uid.clone();
    match &answer.outcome {
        Outcome::Injected(status) => {
            state.metrics.injected.inc();
            tracing::info!(uid, mode = %status.mode, port = %status.port, "injected");
        }
        Outcome::Skipped(reason) => {
            state
                .metrics
                .skipped
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str().into(),
                })
                .inc();
            tracing::debug!(uid, reason = reason.as_str(), "skipped");
        }
        Outcome::Refused(why) => {
            state.metrics.error("refused");
            tracing::warn!(uid, reason = %why, "refused: cannot inject as asked");
        }
        Outcome::Unsupported(why) => {
            state.metrics.error("unsupported");
            tracing::warn!(uid, reason = %why, "refused: unsupported review");
        }
        Outcome::Invalid(why) => {
            state.metrics.error("invalid");
            tracing::warn!(uid, reason = %why, "refused: invalid admission review");
        }
    }
    match review_json(answer.response) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => {
            state.metrics.error("invalid");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            )
        }
    }
}

/// Reads a review's body of at most `MAX_BODY` bytes, taking its share of
/// `budget` (into `held`, given back when the review is answered) as its
/// bytes arrive.
async fn read_body<'a>(
    budget: &'a tokio::sync::Semaphore,
    body: Incoming,
    held: &mut Option<tokio::sync::SemaphorePermit<'a>>,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    let mut body = Limited::new(body, MAX_BODY);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        // At most MAX_BODY bytes (`Limited` refuses more).
        let bytes = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let share = budget.acquire_many(bytes).await?;
        match held {
            Some(h) => h.merge(share),
            None => *held = Some(share),
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

/// The AdmissionReview response body. kube-core serialises the patch bytes
/// as a JSON array of numbers (kube-rs issue #1781); the API documents a
/// base64 string (Go's `[]byte`), which is what is sent here.
pub(crate) fn review_json(
    response: kube_core::admission::AdmissionResponse,
) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let patch = response.patch.clone();
    let mut v = serde_json::to_value(response.into_review())?;
    if let (Some(bytes), Some(r)) = (patch, v.get_mut("response")) {
        r["patch"] =
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&v)
}

impl Admin for State {
    const PROBES: Probes = Probes {
        live: "ok\n",
        ready: "ok\n",
        not_ready: "shutting down\n",
    };

    /// Not after SIGTERM: the endpoint is leaving the Service.
    fn is_ready(&self) -> bool {
        !self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}
