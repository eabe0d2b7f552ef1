//! Bytes in and out: the TLS store and the upstream connection pool. Never
//! imports the decision, the pipeline, the runtime or the audit trail.

pub mod tls;
pub mod upstream;
