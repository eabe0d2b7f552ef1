//! Python programs beside the tests (tests/grpc/, tests/flight/): a module
//! they need, a server script that runs for the length of a test, a client
//! script that reads its calls as JSON on stdin and prints its results as
//! JSON.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use super::Logs;

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
        .output()
        .map(|o| o.status.success())
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
        let stdout = child.stdout.take().expect("stdout");
        let lines = Logs::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.push(line);
            }
        });
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

/// Runs a client script with `spec` on its stdin; what it printed, as JSON.
pub fn run_json(script: PathBuf, spec: &serde_json::Value) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("write the calls");
    let out = child.wait_with_output().expect("the client script");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client script prints JSON")
}
