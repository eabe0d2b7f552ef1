//! Arrow Flight with real clients and servers: Python `pyarrow.flight`
//! (pip `pyarrow`). The server and client scripts are in `tests/flight/`.

use std::time::Duration;

use super::python::{client_calls, require_module, script, PyServer};
use super::{Meshgate, Pki};

/// Whether Python's `pyarrow.flight` can be imported; under a non-empty
/// `CI` its absence fails the test (tests/run.sh installs pyarrow).
pub fn require_pyarrow() -> bool {
    require_module("pyarrow.flight", "pyarrow")
}

/// The table a [`FlightServer`] serves, as it reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub rows: u64,
    /// Its size in memory (pyarrow's `Table.nbytes`).
    pub bytes: u64,
    /// SHA-256 of its record batches' IPC messages, in order.
    pub sha256: String,
}

/// `tests/flight/server.py`: the risk domain's exposures over h2c on an
/// OS-chosen port, killed on drop.
pub struct FlightServer {
    pub server: PyServer,
    pub table: Table,
}

impl FlightServer {
    /// A server of a table of `rows` rows (about 33 bytes a row).
    pub fn start(rows: u64) -> FlightServer {
        let server = PyServer::start(
            script("flight", "server.py"),
            &[&rows.to_string()],
            Duration::from_secs(120),
        );
        let line = server.wait_line(0, "TABLE ");
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_string()
        };
        let number = |name: &str| field(name).parse().expect("a number");
        let table = Table {
            rows: number("rows"),
            bytes: number("bytes"),
            sha256: field("sha256"),
        };
        FlightServer { server, table }
    }

    /// The sidecar's `upstream`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The principals (`x-meshgate-principal`) of the calls of `rpc` that
    /// reached a handler.
    pub fn arrivals(&self, rpc: &str) -> Vec<String> {
        let prefix = format!("ARRIVED {rpc} principal=");
        self.server
            .lines
            .dump()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

/// Makes `calls` (see `tests/flight/client.py`) with one Flight client
/// connected to the sidecar over mTLS with `who`'s client certificate; one
/// result per call: `ok` with what it returned, or `error` (the class of
/// the exception pyarrow raised) and `message`.
pub fn flight_calls(
    pki: &Pki,
    who: &str,
    sidecar: &Meshgate,
    calls: serde_json::Value,
) -> Vec<serde_json::Value> {
    client_calls("flight", "grpc+tls://", pki, who, sidecar, calls)
}
