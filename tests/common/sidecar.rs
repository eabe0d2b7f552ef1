//! The real meshgate binary: its configuration (`Sidecar`), the running
//! process (`Meshgate`, killed on drop) and its collected log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::tools::copy_dir;
use super::{output_within, wait_within, Pki, Upstream};

/// Collected log lines of a child process, with a way to wait for one.
#[derive(Clone, Default)]
pub struct Logs(Arc<(Mutex<Lines>, Condvar)>);

/// The lines so far, and whether the stream they come from has ended.
#[derive(Default)]
pub struct Lines {
    lines: Vec<String>,
    /// The process closed the stream (it exited, or will print no more).
    closed: bool,
}

impl Logs {
    pub fn push(&self, line: String) {
        let (m, c) = &*self.0;
        m.lock().expect("lock").lines.push(line);
        c.notify_all();
    }

    /// The stream ended: no line will come any more, and a waiter returns.
    pub fn close(&self) {
        let (m, c) = &*self.0;
        m.lock().expect("lock").closed = true;
        c.notify_all();
    }

    /// Whether the stream has ended.
    pub fn closed(&self) -> bool {
        self.0 .0.lock().expect("lock").closed
    }

    /// Reads `stream` line by line into these logs on a thread of its own,
    /// closing them at its end.
    pub fn collect(&self, stream: impl std::io::Read + Send + 'static) {
        let sink = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.push(line);
            }
            sink.close();
        });
    }

    /// Waits until a line satisfying `pred` appears after index `from`;
    /// returns it. None at the deadline, or at once when the stream has
    /// ended without such a line (the process is gone: no line can come).
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let (m, c) = &*self.0;
        let deadline = Instant::now() + timeout;
        let mut state = m.lock().expect("lock");
        loop {
            if let Some(l) = state.lines.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                return None;
            }
            state = c.wait_timeout(state, deadline - now).expect("lock").0;
        }
    }

    pub fn len(&self) -> usize {
        self.0 .0.lock().expect("lock").lines.len()
    }

    pub fn dump(&self) -> String {
        self.0 .0.lock().expect("lock").lines.join("\n")
    }
}

/// How long a started process may take to print its ready line (it takes
/// milliseconds; this is for a loaded machine). One that exits first is
/// noticed at once, by its stderr closing.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How long `meshgate run` may take to exit after SIGTERM: its drain and
/// audit flush (each bounded by `timeouts.shutdown_grace`, 20 s by default),
/// with room for a loaded machine.
pub const TERMINATE_DEADLINE: Duration = Duration::from_secs(60);

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
    /// `tls.trust_domains`: (trust domain, bundle file).
    trust_domains: Vec<(String, String)>,
    workers: Option<u32>,
    log_level: Option<String>,
    /// The copied example policy tree, and what is added to its section.
    policies: Option<PathBuf>,
    /// Domains of the copied tree beyond sales and finance.
    domains: Vec<String>,
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
                let out = output_within(Command::new(bin()).args([cmd, "--config"]).arg(&cfg));
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

    /// One more domain of the copied tree (`domains/NAME/`, e.g. `risk`):
    /// its policies and contracts, with its authority.
    pub fn domain(mut self, name: &str) -> Sidecar {
        self.domains.push(name.into());
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

    /// Verifies `domain`'s certificates against `bundle` only.
    pub fn trust_domain(mut self, domain: &str, bundle: &str) -> Sidecar {
        self.trust_domains.push((domain.into(), bundle.into()));
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
        y += &format!("tls:\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n");
        if !self.trust_domains.is_empty() {
            y += "  trust_domains:\n";
            for (domain, bundle) in &self.trust_domains {
                y += &format!("    {domain}: {bundle}\n");
            }
        }
        y += "log:\n";
        if let Some(level) = &self.log_level {
            y += &format!("  level: {level}\n");
        }
        y += "  format: json\n";
        if let Some(d) = &self.policies {
            let d = d.display();
            y += &format!(
                "policy:\n  schema: {d}/schema.cedarschema\n  entities: {d}/entities.json\n  sources:\n    - {d}/mesh\n    - {{ path: {d}/domains/sales, domain: sales }}\n    - {{ path: {d}/domains/finance, domain: finance }}\n"
            );
            for n in &self.domains {
                y += &format!("    - {{ path: {d}/domains/{n}, domain: {n} }}\n");
            }
            for s in &self.more_sources {
                y += &format!("    - {}\n", s.display());
            }
            y += &format!("  contracts:\n    - {{ path: {d}/domains/sales, domain: sales }}\n    - {{ path: {d}/domains/finance, domain: finance }}\n");
            for n in &self.domains {
                y += &format!("    - {{ path: {d}/domains/{n}, domain: {n} }}\n");
            }
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
            trust_domains: Vec::new(),
            workers: Some(2),
            log_level: Some("info,meshgate=debug".into()),
            policies: None,
            domains: Vec::new(),
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
        logs.collect(child.stderr.take().expect("stderr"));
        // Returns at the ready line, or as soon as the process has closed
        // its stderr (it exited: a refused configuration, a port taken).
        let ready = logs.wait_for(0, READY_DEADLINE, |l| l.contains(&needle));
        let Some(ready) = ready else {
            let exited = wait_within(&mut child, Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            match exited {
                Some(status) => panic!(
                    "meshgate exited ({status}) before it was ready; its stderr:\n{}",
                    logs.dump()
                ),
                None => panic!(
                    "meshgate did not become ready within {READY_DEADLINE:?}; killed. Its stderr:\n{}",
                    logs.dump()
                ),
            }
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

    /// `GET /policy` on the admin port: the snapshot in force and the
    /// last reload's errors.
    pub fn policy_json(&self) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{}/policy", self.admin))
            .output()
            .expect("curl /policy");
        serde_json::from_slice(&out.stdout).expect("/policy is JSON")
    }

    /// The value of one sample line (`name{labels}`, labels as the
    /// sidecar writes them); a scrape without that sample fails the test (a
    /// misspelt name or label would otherwise read as 0 and pass).
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics(), sample)
    }

    /// A counter's value: its sample line's, or 0 when the counter exists
    /// (its `# TYPE NAME counter` line is in the scrape) and this label set
    /// was never counted (a labelled counter shows a label set only once
    /// it is incremented). A counter the scrape does not have fails the test.
    pub fn counter(&self, sample: &str) -> f64 {
        counter_value(&self.metrics(), sample)
    }

    /// The value of one sample line, None when the scrape has none (for a
    /// test that expects a sample to be absent, or not there yet).
    pub fn metric_opt(&self, sample: &str) -> Option<f64> {
        metric_value_opt(&self.metrics(), sample)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit, at most
    /// [`TERMINATE_DEADLINE`]; past it the process is killed (SIGKILL) and
    /// the test fails.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(TERMINATE_DEADLINE)
    }

    /// [`Meshgate::terminate`] with another deadline (a test that holds
    /// requests open past the drain gives it room).
    pub fn terminate_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.sigterm();
        self.exit_within(limit)
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(term.success());
    }

    /// Waits for the process to exit (after a [`Meshgate::sigterm`]), at
    /// most `limit`; past it the process is killed and the test fails.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = wait_within(&mut self.child, limit);
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "meshgate did not exit within {limit:?} of SIGTERM; killed:\n{}",
                self.logs.dump()
            )
        })
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
        while self.metric_opt(sample).is_none_or(|v| v < at_least) {
            assert!(
                !self.logs.closed(),
                "{sample} < {at_least}, and meshgate has exited:\n{}",
                self.logs.dump()
            );
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

/// The value of one sample line of a scrape; its absence fails the test.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    metric_value_opt(text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

/// [`Meshgate::counter`] on a scrape.
pub fn counter_value(text: &str, sample: &str) -> f64 {
    if let Some(v) = metric_value_opt(text, sample) {
        return v;
    }
    let name = sample.split('{').next().unwrap_or(sample);
    assert!(
        text.lines().any(|l| l == format!("# TYPE {name} counter")) || registered(name),
        "no counter {name}: not in the scrape, and registered nowhere under proxy/:\n{text}"
    );
    0.0
}

/// Whether a counter named `name` is registered in the sidecar's source: a
/// labelled family none of whose label sets was counted yet is not in the
/// scrape at all, so a misspelt name is told from it by the registration
/// (`"request_body_lingers"` for `meshgate_request_body_lingers_total`).
fn registered(name: &str) -> bool {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let source = SOURCE.get_or_init(|| {
        let mut all = String::new();
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy")];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(&dir).expect("read proxy/") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    all += &std::fs::read_to_string(&p).expect("read source");
                }
            }
        }
        all
    });
    let base = name.strip_suffix("_total").unwrap_or(name);
    ["meshgate_injector_", "meshgate_"]
        .iter()
        .filter_map(|prefix| base.strip_prefix(prefix))
        .any(|short| source.contains(&format!("\"{short}\"")))
}

/// The value of one sample line of a scrape, None when absent.
pub fn metric_value_opt(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{sample}: {v}: {e}"))
        })
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
