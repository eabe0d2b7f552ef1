//! What happened: Prometheus metrics and their exposition, the hash-chained
//! audit trail, OpenTelemetry spans. Never imports the pipeline, the
//! transport or the runtime.

pub mod audit;
pub mod exposition;
pub mod metrics;
pub mod trace;
