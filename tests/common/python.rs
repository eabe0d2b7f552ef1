//! Python programs beside the tests (tests/grpc/, tests/flight/): a module
//! they need, a server script that runs for the length of a test, a client
//! script that reads its calls as JSON on stdin and prints its results as
//! JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use super::{output_fed, output_of, Logs, Meshgate, Pki, EXIT_DEADLINE};

/// `tests/<dir>/<name>` of this repository.
pub fn script(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir)
        .join(name)
}

/// Whether python3 can import `module`; under a non-empty `CI` its absence
/// fails the test (tests/run.sh installs the pip package `pip`).
pub fn require_module(module: &str, pip: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|c| {
            output_of(c, EXIT_DEADLINE, "python3 -c import")
                .status
                .success()
        })
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
            panic!("python3 with {pip} is required under CI; tests/run.sh installs it (pip install {pip})");
        }
        eprintln!("\n*** SKIPPING: python3 -c 'import {module}' fails (pip install {pip}) ***\n");
    }
    found
}

/// A server script on an OS-chosen port, killed on drop. It prints
/// `PORT <n>` once it listens; every line it prints is kept in `lines`.
pub struct PyServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub lines: Logs,
}

impl PyServer {
    /// Runs `python3 script args…` and waits (up to `ready_within`) for its
    /// `PORT` line.
    pub fn start(script: PathBuf, args: &[&str], ready_within: Duration) -> PyServer {
        let mut server = PyServer::spawn(&script, args);
        let ready = server
            .lines
            .wait_for(0, ready_within, |l| l.starts_with("PORT "));
        server.port = ready
            .and_then(|l| l["PORT ".len()..].trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed no port: {}",
                    script.display(),
                    server.lines.dump()
                )
            });
        server
    }

    /// Runs `python3 script args…` without waiting for anything (`port`
    /// 0): a script that talks over its stdin and stdout lines.
    pub fn spawn(script: &std::path::Path, args: &[&str]) -> PyServer {
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
        let lines = Logs::default();
        lines.collect(child.stdout.take().expect("stdout"));
        let stdin = child.stdin.take();
        PyServer {
            child,
            stdin,
            port: 0,
            lines,
        }
    }

    /// Its address as the sidecar's `upstream` (h2c).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The first line after the first `from` that starts with `prefix`,
    /// waited for up to 30 s.
    pub fn wait_line(&self, from: usize, prefix: &str) -> String {
        self.lines
            .wait_for(from, Duration::from_secs(30), |l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line `{prefix}…`: {}", self.lines.dump()))
    }

    /// How many lines so far start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines
            .dump()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Writes `line` to its stdin.
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a client script may take: it starts Python and its library
/// (pyarrow takes seconds on a loaded machine) and makes a test's calls.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// Runs a client script with `spec` on its stdin, at most
/// [`CLIENT_DEADLINE`]; what it printed, as JSON.
pub fn run_json(script: PathBuf, spec: &serde_json::Value) -> serde_json::Value {
    let out = output_fed(
        Command::new("python3").arg(&script),
        Some(spec.to_string().as_bytes()),
        CLIENT_DEADLINE,
    );
    assert!(
        out.status.success(),
        "{} failed ({}): {}\nit printed: {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("the client script prints JSON")
}

/// Runs `tests/<dir>/client.py` (grpc, flight) with `calls` on one
/// connection to `sidecar` at `scheme` + `localhost:PORT`, over mTLS with
/// `who`'s client certificate: the spec both client scripts read. One
/// result per call.
pub fn client_calls(
    dir: &str,
    scheme: &str,
    pki: &Pki,
    who: &str,
    sidecar: &Meshgate,
    calls: serde_json::Value,
) -> Vec<serde_json::Value> {
    let spec = serde_json::json!({
        "target": format!("{scheme}localhost:{}", sidecar.data.port()),
        "ca": pki.path("ca.pem"),
        "cert": pki.path(&format!("{who}.pem")),
        "key": pki.path(&format!("{who}-key.pem")),
        "calls": calls,
    });
    match run_json(script(dir, "client.py"), &spec) {
        serde_json::Value::Array(results) => results,
        other => panic!("tests/{dir}/client.py printed {other}"),
    }
}
