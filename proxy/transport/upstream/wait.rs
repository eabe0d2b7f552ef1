//! How long the sidecar waits for the upstream's response headers: the
//! configured timeout (`timeouts.upstream_response`, or a product's
//! latency-derived one) from when the request is sent, or a client's own
//! deadline (gRPC's `grpc-timeout`) when that comes first.
//!
//! Not yet: a timeout that counts only time without progress (restarted
//! each time the upstream takes a chunk of the request body, so that an
//! upload the upstream is reading is not cut). A first version of it, a
//! loop re-arming the timer from the body's last progress, made a refused
//! gRPC call on another connection of the same sidecar intermittently
//! never end its stream (tests/grpc.rs, about 1 run in 4); it was taken
//! out until that is understood.

use std::future::Future;
use std::time::{Duration, Instant};

use super::BodyWatch;

/// The bounds of one wait for response headers.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Longest wait from when the request is sent.
    pub timeout: Duration,
    /// The latest instant (a gRPC client's deadline).
    pub deadline: Option<Instant>,
}

/// Runs `fut` until it completes (`Some`) or the wait runs out (`None`).
pub(super) async fn within<F: Future>(wait: Wait, _watch: &BodyWatch, fut: F) -> Option<F::Output> {
    // A timeout too large to add to now (an absurd configuration) is no
    // bound, rather than a panic.
    let until = match (Instant::now().checked_add(wait.timeout), wait.deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    };
    match until {
        Some(until) => tokio::time::timeout_at(tokio::time::Instant::from_std(until), fut)
            .await
            .ok(),
        None => Some(fut.await),
    }
}
