//! Bytes in and out: accepting connections, the TLS store and the upstream
//! connection pool. Never imports the decision, the pipeline, the runtime or
//! the audit trail.

pub mod frames;
pub mod listener;
pub mod places;
pub mod streams;
pub mod tls;
pub mod trust_domains;
pub mod turns;
pub mod upstream;
