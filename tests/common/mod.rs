//! Test harness: real certificates (rcgen), a real upstream server, the real
//! meshgate binary on OS-chosen ports, and real clients (curl, openssl, rustls).
#![allow(dead_code)]

pub mod chain;
pub mod fields;
pub mod grpc;
pub mod held;
pub mod idp;
pub mod json_upstream;
pub mod reply;
pub mod stream_upstream;
pub mod tokens;
pub mod trail;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

pub const REPORTING: &str = "spiffe://mesh.local/ns/finance/sa/reporting";

/// A CA able to issue leaf certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
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

/// The upstream: a real HTTP server the tests control.
///
/// - `/headers` answers the request headers as a JSON list of [name, value]
/// - `/bytes/N` streams N deterministic bytes
/// - `/upload` answers `<len> <sha256>` of the body it received
/// - `/slow/MS` reports arrival on `arrivals`, waits MS, answers `slow done`
/// - anything else answers `{"upstream_path": "<target as received>"}`, after
///   reporting arrival and waiting MS when the query has `slow=MS`
pub struct Upstream {
    pub addr: SocketAddr,
    pub arrivals: Mutex<mpsc::Receiver<String>>,
    /// Every request that arrived, in order (recorded before it is answered).
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    arrivals_tx: mpsc::Sender<String>,
    server: Option<UpstreamServer>,
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target as received (path and query).
    pub target: String,
    /// Every header line, in order, value bytes as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Seen {
    /// Every value of header `name` (lower case), lossily as text.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
            .collect()
    }
}

/// One run of the upstream's server thread: dropping `stop` ends it.
struct UpstreamServer {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

struct PatternBody {
    sent: u64,
    total: u64,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent >= self.total {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let n = (self.total - self.sent).min(64 * 1024);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern_byte).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

type UpBody = http_body_util::Either<Full<Bytes>, PatternBody>;

pub fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Upstream {
    pub fn start() -> Upstream {
        let std_listener = StdListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = std_listener.local_addr().expect("addr");
        let (arrivals_tx, arr_rx) = mpsc::channel();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let server = UpstreamServer::spawn(
            std_listener,
            arrivals_tx.clone(),
            seen.clone(),
            connections.clone(),
        );
        Upstream {
            addr,
            arrivals: Mutex::new(arr_rx),
            seen,
            connections,
            arrivals_tx,
            server: Some(server),
        }
    }

    /// Stops the server as a killed process would: the listener and every
    /// open connection are closed (in-flight requests get no answer), and
    /// the port refuses connections until [`Upstream::restart`].
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop.send(());
            server.thread.join().expect("upstream thread");
        }
    }

    /// Serves again on the same port after [`Upstream::kill`].
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "the upstream is running");
        let std_listener = StdListener::bind(self.addr).expect("bind the upstream's port again");
        self.server = Some(UpstreamServer::spawn(
            std_listener,
            self.arrivals_tx.clone(),
            self.seen.clone(),
            self.connections.clone(),
        ));
    }

    /// The requests that arrived so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a `/slow` request reached the upstream.
    pub fn wait_arrival(&self) -> String {
        self.arrivals
            .lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(20))
            .expect("request reached the upstream")
    }
}

impl UpstreamServer {
    fn spawn(
        std_listener: StdListener,
        arr_tx: mpsc::Sender<String>,
        record: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
    ) -> UpstreamServer {
        std_listener.set_nonblocking(true).expect("nonblocking");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let arr_tx = Arc::new(Mutex::new(arr_tx));
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        connections.fetch_add(1, Ordering::SeqCst);
                        let arr_tx = arr_tx.clone();
                        let record = record.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let arr_tx = arr_tx.clone();
                                record_request(&record, &req);
                                async move {
                                    Ok::<_, std::convert::Infallible>(
                                        upstream_route(req, arr_tx).await,
                                    )
                                }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {},
                    _ = stop_rx => {},
                }
            });
            // Dropping the runtime drops every connection task: their sockets close.
            drop(rt);
        });
        UpstreamServer {
            stop: stop_tx,
            thread,
        }
    }
}

fn record_request<B>(seen: &Mutex<Vec<Seen>>, req: &http::Request<B>) {
    let entry = Seen {
        method: req.method().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    };
    seen.lock().expect("lock").push(entry);
}

async fn upstream_route(
    req: http::Request<hyper::body::Incoming>,
    arrivals: Arc<Mutex<mpsc::Sender<String>>>,
) -> http::Response<UpBody> {
    let path = req.uri().path().to_string();
    let full = |s: String| http::Response::new(UpBody::Left(Full::new(Bytes::from(s))));
    if path == "/headers" {
        let list: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": list,
        });
        return full(body.to_string());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        return http::Response::new(UpBody::Right(PatternBody {
            sent: 0,
            total,
            trailers: None,
        }));
    }
    if path == "/trailers" {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        t.insert("grpc-message", http::HeaderValue::from_static("all good"));
        let te = req.headers().get("te").map(|v| v.as_bytes().to_vec());
        let mut resp = http::Response::new(UpBody::Right(PatternBody {
            sent: 0,
            total: 5,
            trailers: Some(t),
        }));
        if let Some(te) = te.and_then(|v| http::HeaderValue::from_bytes(&v).ok()) {
            resp.headers_mut().insert("x-seen-te", te);
        }
        resp.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        return resp;
    }
    if path == "/upload" {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0usize;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                len += d.len();
                ctx.update(d);
            }
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        return full(format!("{len} {hex}"));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        let _ = arrivals.lock().map(|tx| tx.send(path.clone()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return full("slow done".into());
    }
    // Anything else: say exactly which target arrived; `?slow=MS` first
    // reports the arrival and waits MS (for routed paths under policies).
    let slow = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("slow=")))
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = slow {
        let _ = arrivals.lock().map(|tx| tx.send(path.clone()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    full(serde_json::json!({ "upstream_path": req.uri().to_string() }).to_string())
}

/// A free loopback port nobody listens on (bound then released).
pub fn unused_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Collected log lines of a child process, with a way to wait for one.
#[derive(Clone, Default)]
pub struct Logs(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Logs {
    fn push(&self, line: String) {
        let (m, c) = &*self.0;
        m.lock().expect("lock").push(line);
        c.notify_all();
    }

    /// Waits until a line satisfying `pred` appears after index `from`; returns it.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let (m, c) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut lines = m.lock().expect("lock");
        loop {
            if let Some(l) = lines.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = c.wait_timeout(lines, deadline - now).expect("lock").0;
        }
    }

    pub fn len(&self) -> usize {
        self.0 .0.lock().expect("lock").len()
    }

    pub fn dump(&self) -> String {
        self.0 .0.lock().expect("lock").join("\n")
    }
}

/// The real meshgate binary, killed on drop.
pub struct Meshgate {
    pub child: Child,
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Logs,
    pub config_path: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshgate")
}

/// What a sidecar forwards to: a test [`Upstream`] or any URL.
pub trait Target {
    fn target_url(&self) -> String;
}

impl Target for Upstream {
    fn target_url(&self) -> String {
        self.url()
    }
}

impl Target for str {
    fn target_url(&self) -> String {
        self.to_string()
    }
}

impl Target for String {
    fn target_url(&self) -> String {
        self.clone()
    }
}

/// A sidecar configuration under construction, from [`Meshgate::builder`]:
/// `pki`'s certificates, OS-chosen ports, two workers, JSON logs at
/// `info,meshgate=debug`, and the sections a test adds. [`Sidecar::start`]
/// writes it to `DIR/meshgate.yaml` and runs it; [`Sidecar::yaml`] is the
/// text, for tests that run other commands on it.
#[derive(Clone)]
pub struct Sidecar {
    dir: PathBuf,
    upstream: String,
    /// cert, key, client CA.
    tls: [String; 3],
    workers: Option<u32>,
    log_level: Option<String>,
    /// The copied example policy tree, and what is added to its section.
    policies: Option<PathBuf>,
    more_sources: Vec<PathBuf>,
    shadow: Vec<PathBuf>,
    timeouts: Vec<String>,
    limits: Vec<String>,
    audit: Vec<String>,
    issuers: Vec<String>,
    extra: String,
    stdout_piped: bool,
}

impl Sidecar {
    /// Writes the configuration to `DIR/NAME` and runs `meshgate run` and
    /// `meshgate validate` on it, each of which must refuse it; their
    /// stderr, for the test to look for the reason in.
    pub fn refusals(&self, name: &str) -> Vec<(&'static str, String)> {
        let cfg = self.dir.join(name);
        std::fs::write(&cfg, self.yaml()).expect("write config");
        ["run", "validate"]
            .into_iter()
            .map(|cmd| {
                let out = Command::new(bin())
                    .args([cmd, "--config"])
                    .arg(&cfg)
                    .output()
                    .expect("meshgate runs");
                let err = String::from_utf8_lossy(&out.stderr).to_string();
                assert!(
                    !out.status.success(),
                    "{cmd} accepted {}: {err}",
                    cfg.display()
                );
                (cmd, err)
            })
            .collect()
    }

    /// Copies the example policy tree of this repository into the
    /// sidecar's directory now (a test may edit it before starting) and
    /// names it in the `policy` section.
    pub fn policies(mut self) -> Sidecar {
        let root = self.dir.join("policies");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            &root,
        );
        self.policies = Some(root);
        self
    }

    /// Writes the configuration (and copies policies) into `dir` instead of
    /// the PKI's directory; call it before [`Sidecar::policies`].
    pub fn dir(mut self, dir: &Path) -> Sidecar {
        assert!(self.policies.is_none(), "dir() must come before policies()");
        self.dir = dir.to_path_buf();
        self
    }

    /// One more policy source after the example's own.
    pub fn policy_source(mut self, dir: &Path) -> Sidecar {
        self.more_sources.push(dir.to_path_buf());
        self
    }

    /// Shadow policy sources: evaluated, never enforced.
    pub fn shadow(mut self, dirs: &[PathBuf]) -> Sidecar {
        self.shadow.extend(dirs.iter().cloned());
        self
    }

    /// TLS files other than the PKI's (paths as written, e.g. relative to
    /// a mounted volume).
    pub fn tls(mut self, cert: &str, key: &str, client_ca: &str) -> Sidecar {
        self.tls = [cert.into(), key.into(), client_ca.into()];
        self
    }

    /// No `workers` line: the sidecar's default.
    pub fn default_workers(mut self) -> Sidecar {
        self.workers = None;
        self
    }

    /// The log filter (`info`: quiet under load).
    pub fn log_level(mut self, level: &str) -> Sidecar {
        self.log_level = Some(level.into());
        self
    }

    /// No log level: the sidecar's default.
    pub fn default_log_level(mut self) -> Sidecar {
        self.log_level = None;
        self
    }

    /// A line of the `timeouts` section (`upstream_response: 300ms`).
    pub fn timeout(mut self, line: &str) -> Sidecar {
        self.timeouts.push(line.into());
        self
    }

    /// A line of the `limits` section (`max_header_bytes: 16384`).
    pub fn limit(mut self, line: &str) -> Sidecar {
        self.limits.push(line.into());
        self
    }

    /// Audit events to `file` (the default sink is stdout).
    pub fn audit_file(self, file: &Path) -> Sidecar {
        self.audit("sink: file")
            .audit(&format!("file: {}", file.display()))
    }

    /// A line of the `audit` section (`queue: 1`).
    pub fn audit(mut self, line: &str) -> Sidecar {
        self.audit.push(line.into());
        self
    }

    /// One entry of `users.issuers`, its fields one a line, unindented.
    pub fn issuer(mut self, fields: &str) -> Sidecar {
        self.issuers.push(fields.into());
        self
    }

    /// Top-level YAML appended as written (`quotas`, `metrics`, ...).
    pub fn extra(mut self, yaml: &str) -> Sidecar {
        self.extra.push_str(yaml);
        self
    }

    /// The sidecar's stdout (the audit sink `stdout`) left in a pipe in
    /// [`Meshgate::child`]; otherwise it is discarded.
    pub fn stdout_piped(mut self) -> Sidecar {
        self.stdout_piped = true;
        self
    }

    /// The configuration's text.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nupstream: {}\n",
            self.upstream
        );
        if let Some(n) = self.workers {
            y += &format!("workers: {n}\n");
        }
        let [cert, key, ca] = &self.tls;
        y += &format!("tls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\nlog:\n");
        if let Some(level) = &self.log_level {
            y += &format!("  level: {level}\n");
        }
        y += "  format: json\n";
        if let Some(d) = &self.policies {
            let d = d.display();
            y += &format!(
                "policy:\n  schema: {d}/schema.cedarschema\n  entities: {d}/entities.json\n  sources:\n    - {d}/mesh\n    - {{ path: {d}/domains/sales, domain: sales }}\n    - {{ path: {d}/domains/finance, domain: finance }}\n"
            );
            for s in &self.more_sources {
                y += &format!("    - {}\n", s.display());
            }
            y += &format!("  contracts:\n    - {{ path: {d}/domains/sales, domain: sales }}\n    - {{ path: {d}/domains/finance, domain: finance }}\n");
            if !self.shadow.is_empty() {
                y += "  shadow:\n";
                for s in &self.shadow {
                    y += &format!("    - {}\n", s.display());
                }
            }
        }
        for (name, lines) in [
            ("timeouts", &self.timeouts),
            ("limits", &self.limits),
            ("audit", &self.audit),
        ] {
            if !lines.is_empty() {
                y += &format!("{name}:\n");
                for l in lines.iter() {
                    y += &format!("  {l}\n");
                }
            }
        }
        if !self.issuers.is_empty() {
            y += "users:\n  issuers:\n";
            for issuer in &self.issuers {
                for (i, l) in issuer.lines().enumerate() {
                    y += if i == 0 { "    - " } else { "      " };
                    y += l;
                    y += "\n";
                }
            }
        }
        y + &self.extra
    }

    /// Writes the configuration to `DIR/meshgate.yaml`, starts `meshgate
    /// run` on it and waits for its ready line.
    pub fn start(self) -> Meshgate {
        let stdout = if self.stdout_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        Meshgate::start_with_stdout(&self.dir, &self.yaml(), stdout)
    }
}

impl Meshgate {
    /// A sidecar with `pki`'s certificates in front of `upstream`, its
    /// configuration written to `pki`'s directory; see [`Sidecar`].
    pub fn builder(pki: &Pki, upstream: &(impl Target + ?Sized)) -> Sidecar {
        Sidecar {
            dir: pki.dir.path().to_path_buf(),
            upstream: upstream.target_url(),
            tls: ["server.pem", "server-key.pem", "ca.pem"]
                .map(|f| pki.path(f).display().to_string()),
            workers: Some(2),
            log_level: Some("info,meshgate=debug".into()),
            policies: None,
            more_sources: Vec::new(),
            shadow: Vec::new(),
            timeouts: Vec::new(),
            limits: Vec::new(),
            audit: Vec::new(),
            issuers: Vec::new(),
            extra: String::new(),
            stdout_piped: false,
        }
    }

    /// Starts `meshgate run` with `yaml` (written to `dir/meshgate.yaml`),
    /// its stdout (the audit sink `stdout`) going to `stdout`, and waits
    /// for its ready line.
    fn start_with_stdout(dir: &Path, yaml: &str, stdout: Stdio) -> Meshgate {
        let config_path = dir.join("meshgate.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        Meshgate::spawn(cmd, config_path)
    }

    /// Spawns `cmd` (a `meshgate run` with its stderr piped) and waits for
    /// its ready line, which names the listeners' addresses.
    pub fn spawn(cmd: Command, config_path: PathBuf) -> Meshgate {
        Meshgate::spawn_ready(cmd, config_path, "meshgate ready", "data")
    }

    /// Like [`Meshgate::spawn`] for a process whose ready log line is
    /// `message`, with the data address in the field `data_field` and the
    /// admin address in `admin` (`meshgate inject serve`).
    pub fn spawn_ready(
        mut cmd: Command,
        config_path: PathBuf,
        message: &str,
        data_field: &str,
    ) -> Meshgate {
        let needle = format!("\"{message}\"");
        let mut child = cmd.spawn().expect("spawn meshgate");
        let logs = Logs::default();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.push(line);
            }
        });
        let ready = logs.wait_for(0, Duration::from_secs(30), |l| l.contains(&needle));
        let Some(ready) = ready else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshgate did not become ready:\n{}", logs.dump());
        };
        let v: serde_json::Value = serde_json::from_str(&ready).expect("json log line");
        let addr = |k: &str| -> SocketAddr {
            v[k].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in {ready}"))
        };
        Meshgate {
            data: addr(data_field),
            admin: addr("admin"),
            child,
            logs,
            config_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.data.port(), path)
    }

    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{}/metrics", self.admin))
            .output()
            .expect("curl metrics");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The value of one sample line (`name{labels}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics(), sample)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
        self.child.wait().expect("wait")
    }

    /// Sends SIGHUP (reload policies and certificates).
    pub fn sighup(&self) {
        let hup = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(hup.success());
    }

    /// Waits (up to 20 s) until the sample's value reaches `at_least`,
    /// looking again at each new log line.
    pub fn wait_metric(&self, sample: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.metric(sample) < at_least {
            assert!(
                Instant::now() < deadline,
                "{sample} < {at_least}:\n{}",
                self.metrics()
            );
            self.logs
                .wait_for(self.logs.len(), Duration::from_millis(200), |_| true);
        }
    }
}

pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl against the sidecar as client `who` (`None`: no client certificate).
pub fn curl(pki: &Pki, who: Option<&str>, args: &[&str]) -> Output {
    curl_command(pki, who, args).output().expect("curl runs")
}

/// The curl command `curl` runs, for callers that spawn it themselves.
pub fn curl_command(pki: &Pki, who: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(pki.path("ca.pem"));
    if let Some(who) = who {
        cmd.arg("--cert")
            .arg(pki.path(&format!("{who}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{who}-key.pem")));
    }
    cmd.args(args);
    cmd
}

/// `curl -w '%{http_code}'` for a GET; "000" when no HTTP response came.
pub fn status_of(pki: &Pki, who: Option<&str>, url: &str) -> String {
    let out = curl(pki, who, &["-o", "/dev/null", "-w", "%{http_code}", url]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Requires a command-line tool; under CI its absence fails the test.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required (CI=true); .ci/run installs it");
        }
        eprintln!("\n*** SKIPPING: {tool} is not installed ***\n");
    }
    found
}

/// A rustls client config presenting `who`'s certificate.
pub fn rustls_client(pki: &Pki, who: &str) -> Arc<rustls::ClientConfig> {
    rustls_client_alpn(pki, who, &[])
}

/// The same, offering the given ALPN protocols.
pub fn rustls_client_alpn(pki: &Pki, who: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add root");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.path(&format!("{who}.pem")))
            .expect("cert")
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{who}-key.pem"))).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens one TLS connection to the sidecar as `who`.
pub async fn tls_connect(
    pki: &Pki,
    who: &str,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_connect_alpn(pki, who, addr, &[]).await
}

pub async fn tls_connect_alpn(
    pki: &Pki,
    who: &str,
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(rustls_client_alpn(pki, who, alpn));
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("tls handshake")
}

/// An HTTP/1.1 client bound to one TLS connection.
pub async fn h1_client(
    pki: &Pki,
    who: &str,
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    Vec<u8>,
) {
    let tls = tls_connect(pki, who, addr).await;
    let server_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    (sender, server_cert)
}

/// GET `path` on an open connection; returns (status, body).
pub async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    sender.ready().await.expect("connection usable");
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Copies the directory tree `src` to `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// A fixture of tests/fixtures/k8s (real `kubectl create --dry-run=client -o json` output).
pub fn k8s_fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Kubernetes version manifests are validated against (native sidecars are GA in 1.33).
pub const K8S_VERSION: &str = "1.33.0";

/// Validates the manifests of `file` strictly (unknown fields are errors)
/// against the Kubernetes 1.33 schemas with kubernetes-validate; returns how
/// many resources passed, None when the tool is missing (outside CI; in CI
/// a missing tool fails). Only the CRD kinds in `crd_kinds` (cert-manager,
/// Prometheus Operator: no schema in kubernetes-validate) may go unchecked.
pub fn kubernetes_validate(file: &Path, crd_kinds: &[&str]) -> Option<usize> {
    if !require_tool("kubernetes-validate") {
        return None;
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", K8S_VERSION])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}: kubernetes-validate failed:\n{text}",
        file.display()
    );
    let mut passed = 0;
    for line in text.lines() {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
            let kind = rest.split_whitespace().next().unwrap_or_default();
            assert!(
                crd_kinds.contains(&kind),
                "{}: no schema for {kind}:\n{text}",
                file.display()
            );
        } else if !line.trim().is_empty() {
            panic!(
                "{}: unexpected kubernetes-validate output:\n{text}",
                file.display()
            );
        }
    }
    Some(passed)
}

/// `meshgate audit verify FILES...`: whether the chain verifies, and what it
/// printed (stdout, then stderr).
pub fn audit_verify(files: &[&Path]) -> (bool, String) {
    let out = Command::new(bin())
        .args(["audit", "verify"])
        .args(files)
        .output()
        .expect("meshgate audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Resident set size of a process, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The values of header `name` in `(name, value)` pairs, in order.
pub fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
