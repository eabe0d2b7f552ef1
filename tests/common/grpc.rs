//! gRPC with real clients and servers: Python `grpcio` (pip), no generated
//! stubs. The server and client scripts are in `tests/grpc/`.

use std::path::PathBuf;
use std::time::Duration;

use super::python::{client_calls, require_module, script, PyServer};
use super::{Logs, Meshgate, Pki};

/// Whether Python's `grpcio` can be imported; under a non-empty `CI` its
/// absence fails the test (tests/run.sh installs it).
pub fn require_grpcio() -> bool {
    require_module("grpc", "grpcio")
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
    server: PyServer,
    pub port: u16,
    /// Its stdout: `PORT n`, then `ARRIVED <method> remaining=<s>` per call.
    pub lines: Logs,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        let server = PyServer::start(script("grpc", "server.py"), &[], Duration::from_secs(30));
        GrpcServer {
            port: server.port,
            lines: server.lines.clone(),
            server,
        }
    }

    /// The sidecar's `upstream`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Waits for a call of `method` to reach its handler, after the
    /// first `from` lines (`lines.len()` before the call); the client's
    /// deadline left then, in seconds (`None`: no deadline).
    pub fn wait_arrival(&self, method: &str, from: usize) -> Option<f64> {
        let line = self.server.wait_line(from, &format!("ARRIVED {method} "));
        line.rsplit("remaining=").next()?.parse().ok()
    }

    /// How many calls of `method` reached the server.
    pub fn arrivals(&self, method: &str) -> usize {
        self.server.count(&format!("ARRIVED {method} "))
    }

    /// Lets every waiting `Slow` call answer.
    pub fn release(&mut self) {
        self.server.send_line("release");
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
    client_calls("grpc", "", pki, who, sidecar, calls)
}

/// The value of metadata `key` in a call result's `initial` or `trailing` list.
pub fn metadata<'v>(result: &'v serde_json::Value, list: &str, key: &str) -> Option<&'v str> {
    result[list].as_array()?.iter().find_map(|kv| {
        (kv[0].as_str() == Some(key))
            .then(|| kv[1].as_str())
            .flatten()
    })
}
