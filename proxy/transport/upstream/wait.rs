//! How long the sidecar waits for the upstream's response headers.
//!
//! The configured timeout (`timeouts.upstream_response`, or a product's
//! latency-derived one) bounds how long the upstream may keep the request
//! without progress: it runs from the moment the request is sent, and again
//! from each frame of the request body the upstream takes. A small request
//! waits as before, the timeout from when it was sent whole; an upload the
//! upstream is reading (an Arrow Flight `DoPut` of a large table, a gRPC
//! client stream, a large REST upload) is not cut for lasting longer than
//! the timeout, which is meant for an upstream late to answer. An upstream
//! that stops reading the body, or a client that stops sending it, makes no
//! progress and times out as before (504, or 408 when the body waited on
//! the client). A client's own deadline (gRPC's `grpc-timeout`) is a fixed
//! instant that progress does not move.

use std::future::Future;
use std::time::{Duration, Instant};

use super::BodyWatch;

/// The bounds of one wait for response headers.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Longest time without progress: since the request was sent, or since
    /// the upstream last took a frame of its body.
    pub idle: Duration,
    /// The latest instant, whatever the progress (a gRPC client's deadline).
    pub deadline: Option<Instant>,
}

/// Runs `fut` until it completes (`Some`) or the wait runs out (`None`),
/// progress read from the body's `watch`.
pub(super) async fn within<F: Future>(wait: Wait, watch: &BodyWatch, fut: F) -> Option<F::Output> {
    let sent = Instant::now();
    let mut fut = std::pin::pin!(fut);
    loop {
        let progress = watch.last_taken().map_or(sent, |t| t.max(sent));
        let mut until = progress + wait.idle;
        if let Some(deadline) = wait.deadline {
            until = until.min(deadline);
        }
        if until <= Instant::now() {
            return None;
        }
        let timer = tokio::time::Instant::from_std(until);
        if let Ok(out) = tokio::time::timeout_at(timer, fut.as_mut()).await {
            return Some(out);
        }
        // Time is up unless the body moved meanwhile: look again.
    }
}
