//! The data listener: bind, accept (each connection's life is in
//! `connection`), reloads on file changes and SIGHUP, shutdown; what the
//! admin port says of the sidecar.

mod connection;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::base::watch::{Change, Changes};
use crate::decision::authz::PolicyInputs;
use crate::decision::store::{Origin, PolicyStore};
use crate::observe::metrics::Metrics;
use crate::pipeline::{Gate, RequestIds};
use crate::runtime::admin::{self, Admin, Probes};
use crate::runtime::config::Config;
use crate::transport::listener::Acceptor;
use crate::transport::tls::{TlsError, TlsStore};
use crate::transport::upstream::{Upstream, UpstreamSettings};

/// How a sidecar's shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The audit sink took every queued event within
    /// `timeouts.shutdown_grace` (true without a trail). When it did not,
    /// it takes nothing more in time: nobody should wait for its writer.
    pub audit_flushed: bool,
}

/// Errors that stop the sidecar from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{field}: cannot bind {addr}: {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot watch files for changes: {0}")]
    Watch(#[from] notify::Error),
    #[error(transparent)]
    Policy(#[from] crate::decision::authz::LoadErrors),
    #[error("{0}")]
    Users(String),
    #[error("quotas: {0}")]
    Quotas(String),
    #[error("{0}")]
    Audit(String),
    #[error("fields.hash_key_file: {0}")]
    Fields(String),
    #[error("{0}")]
    Tracing(String),
}

/// At most this long at shutdown for the spans still queued.
const SPAN_FLUSH: Duration = Duration::from_secs(5);

/// Everything the running sidecar shares between connections. Immutable but for
/// the atomically swapped snapshots inside.
pub struct Sidecar {
    pub config: Config,
    pub tls: TlsStore,
    /// What the request path is handed.
    pub gate: Gate,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Admin for Sidecar {
    const PROBES: Probes = Probes {
        live: "live\n",
        ready: "ready\n",
        not_ready: "not ready\n",
    };

    /// Everything is loaded and we are not draining.
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    fn metrics(&self) -> String {
        self.gate.metrics.encode()
    }

    fn route(&self, path: &str) -> Option<http::Response<Full<Bytes>>> {
        match path {
            "/policy" => Some(self.policy()),
            "/audit/head" => Some(self.audit_head()),
            _ => None,
        }
    }
}

impl Sidecar {
    /// `GET /audit/head`: the audit chain's head, to hold outside the trail
    /// (`meshgate audit verify --expect`); 404 when the trail is off.
    fn audit_head(&self) -> http::Response<Full<Bytes>> {
        let Some(audit) = &self.gate.audit else {
            let mut resp = http::Response::new(Full::new(Bytes::from_static(
                b"{\"error\":\"audit.sink is off: there is no audit trail\"}",
            )));
            *resp.status_mut() = http::StatusCode::NOT_FOUND;
            return admin::with_type(resp, "application/json");
        };
        let body = crate::observe::audit::Head::to_json(audit.head().as_ref());
        admin::with_type(
            http::Response::new(Full::new(Bytes::from(body.to_string()))),
            "application/json",
        )
    }

    /// `GET /policy`: which snapshot is live, and the last reload error.
    fn policy(&self) -> http::Response<Full<Bytes>> {
        let body = match &self.gate.policy {
            None => serde_json::json!({ "mode": "authenticated", "version": null }),
            Some(store) => {
                let s = store.current();
                let last_error = store.last_error().map(|e| {
                    serde_json::json!({
                        "at": humantime::format_rfc3339_seconds(e.at).to_string(),
                        "errors": e.errors,
                    })
                });
                serde_json::json!({
                    "mode": "enforcing",
                    "version": &*s.version,
                    "loaded_at": humantime::format_rfc3339_seconds(s.loaded_at).to_string(),
                    "policies": s.policy_count(),
                    "shadow_policies": s.shadow_policy_count(),
                    "routes": s.routes().len(),
                    "last_error": last_error,
                })
            }
        };
        admin::with_type(
            http::Response::new(Full::new(Bytes::from(body.to_string()))),
            "application/json",
        )
    }
}

/// A write past the file size limit (RLIMIT_FSIZE: `ulimit -f`, a limit set
/// by the platform) raises SIGXFSZ, whose default action kills the process:
/// every audit event still queued (of requests already answered) would be
/// lost with it. With a handler installed the write fails with EFBIG
/// instead, like a full disk, and the audit writer's retry and the
/// configured `audit.when_full` mode apply. The handler stays for the life
/// of the process (tokio never uninstalls one); the first signal is logged.
fn survive_file_size_limit() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut sigs) => {
            tokio::spawn(async move {
                if sigs.recv().await.is_some() {
                    // Once: the log itself may be a file past the limit.
                    tracing::warn!(
                        "SIGXFSZ: a write went past the file size limit (RLIMIT_FSIZE); \
                         such writes fail (EFBIG) and are retried or counted"
                    );
                }
                while sigs.recv().await.is_some() {}
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGXFSZ: a write past the file size limit will stop the process");
        }
    }
}

/// A sidecar with its listeners bound, not yet serving.
pub struct Bound {
    sidecar: Arc<Sidecar>,
    data: TcpListener,
    admin: TcpListener,
    audit_writer: Option<crate::observe::audit::WriterThread>,
}

/// Loads TLS material and policies and binds both listeners. Nothing is served
/// yet. `embedded` overrides the configuration's policy files (the demo).
pub async fn bind(config: Config, embedded: Option<PolicyInputs>) -> Result<Bound, StartError> {
    survive_file_size_limit();
    let metrics = Metrics::with_config(&config.metrics);
    let tls = TlsStore::load(config.tls.clone(), &metrics)?;
    let origin = match (embedded, &config.policy) {
        (Some(inputs), _) => Some(Origin::Embedded(Box::new(inputs))),
        (None, Some(cfg)) => Some(Origin::Files(cfg.clone())),
        (None, None) => None,
    };
    let policy = origin.map(PolicyStore::load).transpose()?;
    if let Some(store) = &policy {
        metrics.policy_loaded(&store.current().version);
    }
    let users = match &config.users {
        None => None,
        Some(u) => {
            if let Some(store) = &policy {
                let errors = store.current().check_user_mapping(u);
                if !errors.is_empty() {
                    return Err(StartError::Users(errors.join("\n")));
                }
            }
            let verifier = crate::decision::jwt::Verifier::start(u, Some(metrics.jwt()))
                .await
                .map_err(StartError::Users)?;
            verifier.spawn_refresh();
            Some(verifier)
        }
    };
    let quotas = match config.quotas.clone() {
        None => None,
        Some(q) => {
            // What `validate` warns of, of the same snapshot.
            if let Some(store) = &policy {
                let snapshot = store.current();
                let is_contract = |id: &str| snapshot.products().any(|p| p.id == id);
                for (field, message) in q.warnings(is_contract) {
                    tracing::warn!("{field}: {message}");
                }
            }
            let mut quotas = crate::decision::quota::Quotas::new(q).map_err(StartError::Quotas)?;
            quotas.count_store_errors_in(metrics.quota_store_errors.clone());
            Some(quotas)
        }
    };
    let (audit, audit_writer) =
        match crate::observe::audit::Audit::start(&config.audit, metrics.audit.clone())
            .map_err(StartError::Audit)?
        {
            Some((a, w)) => (Some(a), Some(w)),
            None => {
                tracing::warn!("audit.sink is off: requests leave no audit trail");
                (None, None)
            }
        };
    let data = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            field: "listen",
            addr: config.listen,
            source,
        })?;
    let admin = TcpListener::bind(config.admin)
        .await
        .map_err(|source| StartError::Bind {
            field: "admin",
            addr: config.admin,
            source,
        })?;

    let (h1, h2) = http_builders(&config);

    let mask_key = match &config.fields {
        None => None,
        Some(f) => Some(
            crate::pipeline::mask::HashKeys::load(&f.hash_key_file).map_err(StartError::Fields)?,
        ),
    };
    let gate = Gate {
        tracer: start_tracer(&config, &metrics)?,
        mask_key,
        conformance: config.conformance,
        policy,
        users,
        quotas,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.limits.max_in_flight)),
        audit,
        upstream: Upstream::new(&UpstreamSettings {
            authority: &config.upstream.authority,
            protocol: config.upstream_protocol,
            connect_timeout: config.timeouts.upstream_connect,
            response_timeout: config.timeouts.upstream_response,
        }),
        request_ids: RequestIds::new(),
        latency_factor: config.timeouts.latency_factor,
        linger: config.limits.linger,
        strip_extra: config.headers.strip_overrides_extra.clone(),
        metrics,
    };
    let sidecar = Sidecar {
        gate,
        tls,
        h1,
        h2,
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        config,
    };
    Ok(Bound {
        sidecar: Arc::new(sidecar),
        data,
        admin,
        audit_writer,
    })
}

/// The HTTP/1.1 and HTTP/2 server settings of the data listener.
fn http_builders(
    config: &Config,
) -> (
    hyper::server::conn::http1::Builder,
    hyper::server::conn::http2::Builder<TokioExecutor>,
) {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.header_read)
        .max_buf_size(config.limits.max_header_bytes)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(config.limits.max_h2_streams)
        // Rapid reset (CVE-2023-44487) and error floods: set here rather than
        // left to hyper's and h2's defaults, which have changed between releases.
        .max_pending_accept_reset_streams(config.limits.max_h2_pending_resets)
        .max_local_error_reset_streams(config.limits.max_h2_error_resets)
        .max_send_buf_size(config.limits.max_h2_send_buffer_bytes)
        // No keep-alive pings: a client answers every one, and those bytes
        // would keep an idle connection from ever reaching `timeouts.idle`
        // (which closes a dead peer's connection as well).
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
}

/// The span exporter (`tracing.otlp`), started on this runtime; `None`: off.
fn start_tracer(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<crate::observe::trace::Tracer>, StartError> {
    let Some(otlp) = &config.tracing.otlp else {
        return Ok(None);
    };
    let h2c = config.upstream_protocol == crate::runtime::config::UpstreamProtocol::H2c;
    let peer = crate::observe::trace::UpstreamPeer::new(&config.upstream.authority, h2c);
    crate::observe::trace::Tracer::start(otlp, peer, metrics.trace.clone())
        .map(Some)
        .map_err(StartError::Tracing)
}

impl Bound {
    pub fn data_addr(&self) -> io::Result<SocketAddr> {
        self.data.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The audit writer thread, to wait for after the runtime has stopped:
    /// events of requests cut off at shutdown are written then.
    pub fn take_audit_writer(&mut self) -> Option<crate::observe::audit::WriterThread> {
        self.audit_writer.take()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for up to
    /// the configured grace period.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<Stopped, StartError> {
        let Bound {
            sidecar: sc,
            data,
            admin,
            ..
        } = self;
        let data_addr = data.local_addr().ok();
        let admin_addr = admin.local_addr().ok();
        tokio::spawn(crate::runtime::admin::serve(admin, sc.clone()));
        let policy_paths = match sc.gate.policy.as_ref().map(|p| p.origin()) {
            Some(Origin::Files(cfg)) => cfg.watch_targets(),
            _ => Vec::new(),
        };
        let mut changes = Changes::new()
            .watch(
                Watched::Tls,
                &sc.tls.watch_paths(),
                Duration::from_millis(100),
            )?
            .watch(Watched::Policy, &policy_paths, Duration::from_millis(250))?;
        if let Some(keys) = &sc.gate.mask_key {
            let paths = keys.watch_paths();
            changes = changes.watch(Watched::HashKey, &paths, Duration::from_millis(100))?;
        }
        tokio::spawn(reload_on_change(sc.clone(), changes));
        if let Some(audit) = &sc.gate.audit {
            tokio::spawn(audit.checkpoints());
        }

        sc.ready.store(true, Ordering::Release);
        tracing::info!(
            data = %data_addr.map(|a| a.to_string()).unwrap_or_default(),
            admin = %admin_addr.map(|a| a.to_string()).unwrap_or_default(),
            upstream = %sc.config.upstream.authority,
            "meshgate ready"
        );
        match sc.gate.policy.as_ref().map(|p| p.current()) {
            Some(s) => {
                tracing::info!(
                    version = %s.version,
                    policies = s.policy_count(),
                    routes = s.routes().len(),
                    "policy snapshot loaded"
                );
                let hashed = crate::pipeline::mask::hashed_fields(s.products());
                if sc.gate.mask_key.is_none() && !hashed.is_empty() {
                    tracing::warn!(fields = ?hashed, "contracts hash these fields but fields.hash_key_file is not set: a response that hides one of them is cut");
                }
            }
            None => tracing::warn!(
                "no policy configured: running in authenticated mode, every verified client is let through"
            ),
        }

        accept_loop(sc.clone(), data, shutdown).await;
        let mut audit_flushed = true;
        if let Some(audit) = &sc.gate.audit {
            audit_flushed = audit.flush(sc.config.timeouts.shutdown_grace).await;
            if !audit_flushed {
                tracing::error!(
                    grace = ?sc.config.timeouts.shutdown_grace,
                    "the audit sink did not take the queued events in time; exiting without them"
                );
            }
            audit.checkpoint();
        }
        if let (Some(tracer), Some(otlp)) = (&sc.gate.tracer, &sc.config.tracing.otlp) {
            // Bounded: a dead collector must not hold the exit up for long.
            if !tracer.flush(otlp.timeout.min(SPAN_FLUSH)).await {
                let spans = tracer.abandon();
                tracing::warn!(
                    spans,
                    "the span exporter did not send the queued spans in time; exiting without them (meshgate_trace_spans_dropped_total{{reason=\"shutdown\"}})"
                );
            }
        }
        Ok(Stopped { audit_flushed })
    }
}

/// What the sidecar watches for changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watched {
    Tls,
    Policy,
    /// `fields.hash_key_file`.
    HashKey,
}

/// Reloads the TLS material, the policies or the hash key when their files
/// change, all on SIGHUP. Policies are built on a task of their own: a
/// certificate rotation never waits behind a snapshot build, and changes
/// met during a build are coalesced into one more.
async fn reload_on_change(sc: Arc<Sidecar>, mut changes: Changes<Watched>) {
    let policy_due = Arc::new(tokio::sync::Notify::new());
    if sc.gate.policy.is_some() {
        tokio::spawn(reload_policies(sc.clone(), policy_due.clone()));
        // The files were read before the watches were set: an edit in
        // between is read now (unchanged files cost a read and a hash).
        policy_due.notify_one();
    }
    sc.tls.reload(&sc.gate.metrics);
    while let Some(change) = changes.next().await {
        // Before the files are read: a watched directory removed and made
        // again is watched again, and a change after this is seen.
        changes.rearm(change);
        let (tls, policy, key) = match change {
            Change::Files(Watched::Tls) => (true, false, false),
            Change::Files(Watched::Policy) => (false, true, false),
            Change::Files(Watched::HashKey) => (false, false, true),
            Change::Hangup => {
                tracing::info!("SIGHUP: reloading TLS material, policies and the hash key");
                (true, true, true)
            }
        };
        if policy {
            policy_due.notify_one();
        }
        if tls {
            sc.tls.reload(&sc.gate.metrics);
        }
        if let Some(keys) = sc.gate.mask_key.as_ref().filter(|_| key) {
            keys.reload(&sc.gate.metrics.fields);
        }
    }
}

/// Rebuilds the policy snapshot each time `due` is notified (a change met
/// during a build stores one notification: one build more).
async fn reload_policies(sc: Arc<Sidecar>, due: Arc<tokio::sync::Notify>) {
    loop {
        due.notified().await;
        // Building a snapshot is CPU work: keep it off the request threads.
        let sc = sc.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(p) = sc.gate.policy.as_ref() {
                let reload = p.reload();
                sc.gate.metrics.policy_reloaded(&reload);
                reload.log();
                reload.retire();
            }
        })
        .await;
    }
}

async fn accept_loop(sc: Arc<Sidecar>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let mut listener = Acceptor::new(listener, "data");
    // `true` once draining; every connection holds a receiver until it ends.
    let (draining, _) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(sc.config.limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let watcher = draining.subscribe();
        let sc = sc.clone();
        tokio::spawn(async move {
            connection::connection(sc, tcp, peer, watcher).await;
            drop(permit);
        });
    }
    drop(listener);
    sc.draining.store(true, Ordering::Release);
    // Every connection is told (an error: there are none), then announced.
    let _ = draining.send(true);
    let grace = sc.config.timeouts.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
    match tokio::time::timeout(grace, draining.closed()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the handler the kernel's SIGXFSZ kills the process at the
    /// first write past `ulimit -f` (meshgate died that way, with its queued
    /// audit events, when the audit file reached the limit). The test runs
    /// itself again under the limit: there the write must fail with EFBIG.
    #[test]
    fn a_write_past_the_file_size_limit_fails_instead_of_killing_the_process() {
        const CHILD: &str = "MESHGATE_TEST_FSIZE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async { survive_file_size_limit() });
            let dir = tempfile::tempdir().expect("tempdir");
            let mut f = std::fs::File::create(dir.path().join("big")).expect("create");
            let e = std::io::Write::write_all(&mut f, &[0u8; 64 * 1024])
                .expect_err("a write past the limit");
            assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
            println!("EFBIG as expected");
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -f 16 && exec \"$0\" \"$@\"")
            .arg(exe)
            .arg("--exact")
            // This test's name as the harness knows it (the module path
            // without the crate), so a move of the module cannot break it.
            .arg(format!(
                "{}::a_write_past_the_file_size_limit_fails_instead_of_killing_the_process",
                module_path!().split_once("::").map_or("", |(_, m)| m)
            ))
            .arg("--nocapture")
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("EFBIG as expected"),
            "{:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
