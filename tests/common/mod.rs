//! Test harness: real certificates (rcgen), a real upstream server, the real
//! meshgate binary on OS-chosen ports, and real clients (curl, openssl, rustls).
//! One module per concern; everything is re-exported here, so a test says
//! `use common::*;`. A new helper goes in a new file with its `pub mod` line.
#![allow(dead_code, unused_imports)]

pub mod chain;
pub mod clients;
pub mod coded;
pub mod fields;
pub mod flight;
pub mod golden;
pub mod grpc;
pub mod heavy;
pub mod held;
pub mod idp;
pub mod json_upstream;
pub mod memory;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod python;
pub mod raw_h2;
pub mod redis;
pub mod reply;
pub mod sidecar;
pub mod skip;
pub mod stream_upstream;
pub mod tokens;
pub mod tools;
pub mod trail;
pub mod upstream;

pub use clients::*;
pub use golden::*;
pub use heavy::*;
pub use pki::*;
pub use process::*;
pub use sidecar::*;
pub use skip::*;
pub use tools::*;
pub use upstream::*;

pub const REPORTING: &str = "spiffe://mesh.local/ns/finance/sa/reporting";
