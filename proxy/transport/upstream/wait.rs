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
use std::pin::Pin;
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
/// progress read from the body's `watch`. (`fut` comes pinned: an async
/// fn's future holds a parameter twice, as passed and as pinned, and the
/// sending's is near 1 KB, copied with every future that holds it.)
pub(super) async fn within<F: Future>(
    wait: Wait,
    watch: &BodyWatch,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    let sent = Instant::now();
    loop {
        let Some(until) = wait.until(sent, watch.last_taken()) else {
            return Some(fut.await);
        };
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

impl Wait {
    /// When the wait runs out, for a request sent at `sent` whose body the
    /// upstream last took at `taken`: `idle` after the later of the two,
    /// never past the deadline. `None`: no bound (a timeout too large to
    /// add, an absurd configuration, and no deadline), rather than a panic.
    fn until(&self, sent: Instant, taken: Option<Instant>) -> Option<Instant> {
        let progress = taken.map_or(sent, |t| t.max(sent));
        match (progress.checked_add(self.idle), self.deadline) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (t, d) => t.or(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_timeout_runs_from_the_sending_and_again_from_each_frame_taken() {
        let sent = Instant::now();
        let wait = Wait {
            idle: 3 * SEC,
            deadline: None,
        };
        assert_eq!(wait.until(sent, None), Some(sent + 3 * SEC));
        assert_eq!(
            wait.until(sent, Some(sent + 10 * SEC)),
            Some(sent + 13 * SEC)
        );
        // A stamp from before the sending (a body taken on a retry) counts
        // from the sending.
        let earlier = sent.checked_sub(SEC).unwrap_or(sent);
        assert_eq!(wait.until(sent, Some(earlier)), Some(sent + 3 * SEC));
    }

    #[test]
    fn a_client_deadline_is_a_fixed_instant_progress_does_not_move() {
        let sent = Instant::now();
        let wait = Wait {
            idle: 3 * SEC,
            deadline: Some(sent + SEC),
        };
        assert_eq!(wait.until(sent, None), Some(sent + SEC));
        assert_eq!(wait.until(sent, Some(sent + 10 * SEC)), Some(sent + SEC));
    }

    #[test]
    fn a_timeout_too_large_to_add_is_no_bound_but_the_deadline_still_is() {
        let sent = Instant::now();
        let mut wait = Wait {
            idle: Duration::MAX,
            deadline: None,
        };
        assert_eq!(wait.until(sent, None), None);
        wait.deadline = Some(sent + SEC);
        assert_eq!(wait.until(sent, Some(sent)), Some(sent + SEC));
    }
}
