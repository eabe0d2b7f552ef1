//! gRPC with real clients and servers: Python `grpcio` (pip), no generated
//! stubs. The server and client scripts are in `tests/grpc/`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use super::{Logs, Meshgate, Pki};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
}

/// Whether Python's `grpcio` can be imported; under a non-empty `CI` its
/// absence fails the test (tests/run.sh installs it).
pub fn require_grpcio() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
            panic!("python3 with grpcio is required under CI; tests/run.sh installs it (pip install grpcio)");
        }
        eprintln!("\n*** SKIPPING: python3 -c 'import grpc' fails (pip install grpcio) ***\n");
    }
    found
}

/// Adds the gRPC product of `tests/fixtures/grpc` (`meshgate.test.Orders`,
/// its contract and policies) to the sales domain of `pki`'s copy of the
/// policies (`Sidecar::policies`).
pub fn add_orders_rpc(pki: &Pki) {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc");
    let sales = pki.path("policies/domains/sales");
    for f in ["orders-rpc.odcs.yaml", "orders-rpc.cedar"] {
        std::fs::copy(fixtures.join(f), sales.join(f)).expect("copy fixture");
    }
}

/// `tests/grpc/server.py`: the service `meshgate.test.Orders` over h2c on
/// an OS-chosen port, killed on drop.
pub struct GrpcServer {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    /// Its stdout: `PORT n`, then `ARRIVED <method> remaining=<s>` per call.
    pub lines: Logs,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        let mut child = Command::new("python3")
            .arg(script("server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/grpc/server.py");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Logs::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.push(line);
            }
        });
        let stdin = child.stdin.take();
        let mut server = GrpcServer {
            child,
            stdin,
            port: 0,
            lines,
        };
        let ready = server
            .lines
            .wait_for(0, Duration::from_secs(30), |l| l.starts_with("PORT "));
        server.port = ready
            .and_then(|l| l["PORT ".len()..].trim().parse().ok())
            .expect("the gRPC server printed its port");
        server
    }

    /// The sidecar's `upstream`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for a call of `method` to reach its handler, after the
    /// first `from` lines (`lines.len()` before the call); the client's
    /// deadline left then, in seconds (`None`: no deadline).
    pub fn wait_arrival(&self, method: &str, from: usize) -> Option<f64> {
        let prefix = format!("ARRIVED {method} ");
        let line = self
            .lines
            .wait_for(from, Duration::from_secs(30), |l| l.starts_with(&prefix))
            .expect("the call reached the server");
        line.rsplit("remaining=").next()?.parse().ok()
    }

    /// How many calls of `method` reached the server.
    pub fn arrivals(&self, method: &str) -> usize {
        let prefix = format!("ARRIVED {method} ");
        self.lines
            .dump()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .count()
    }

    /// Lets every waiting `Slow` call answer.
    pub fn release(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "release");
            let _ = stdin.flush();
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes `calls` (see `tests/grpc/client.py`) on one mTLS channel to the
/// sidecar with `who`'s client certificate; one result per call.
pub fn grpc_calls(
    pki: &Pki,
    who: &str,
    sidecar: &Meshgate,
    calls: serde_json::Value,
) -> Vec<serde_json::Value> {
    let spec = serde_json::json!({
        "target": format!("localhost:{}", sidecar.data.port()),
        "ca": pki.path("ca.pem"),
        "cert": pki.path(&format!("{who}.pem")),
        "key": pki.path(&format!("{who}-key.pem")),
        "calls": calls,
    });
    let mut child = Command::new("python3")
        .arg(script("client.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 tests/grpc/client.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("write the calls");
    let out = child.wait_with_output().expect("client.py");
    assert!(
        out.status.success(),
        "client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client.py prints JSON")
}

/// The value of metadata `key` in a call result's `initial` or `trailing` list.
pub fn metadata<'v>(result: &'v serde_json::Value, list: &str, key: &str) -> Option<&'v str> {
    result[list].as_array()?.iter().find_map(|kv| {
        (kv[0].as_str() == Some(key))
            .then(|| kv[1].as_str())
            .flatten()
    })
}
