//! Keep-alive connections to an HTTP/1.1 upstream, over hyper's connection
//! API. A request takes an idle connection (or dials one) and holds it, as a
//! [`Lease`], until the response body has been read to its end; only then does
//! the connection go back to the pool. A request that finds its pooled
//! connection closed before the request was written is sent again on another.
//!
//! hyper-util's general-purpose client does the same for any number of hosts
//! and protocols; for the sidecar's single HTTP/1.1 upstream this does less
//! per request (no per-host map, no task spawned to return each connection).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::body::{BodyWatch, CountedBody};
use super::Dialer;

/// Idle connections kept at most; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// An idle connection unused for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    dialer: Dialer,
    idle: Mutex<Vec<Idle>>,
    /// Whether the task that closes expired idle connections runs.
    sweeping: AtomicBool,
}

struct Idle {
    sender: SendRequest<CountedBody>,
    since: Instant,
}

/// A connection in use by one request; [`Lease::release`] returns it.
/// Dropped instead (the response did not end cleanly), it is closed; so is
/// one whose request body failed on the client's side.
pub struct Lease {
    sender: SendRequest<CountedBody>,
    pool: Weak<Inner>,
    body: BodyWatch,
}

impl Lease {
    /// The response has been read to its end: the connection can be reused
    /// once its request has been written to the end too. An upstream may
    /// answer before it has read the whole request body (a 413, a 401); such
    /// a connection waits, in a task of its own, until hyper reports it
    /// ready, so that no other request queues behind the rest of an upload.
    pub fn release(self) {
        if self.body.fault().is_some() {
            return;
        }
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut sender = self.sender;
        let body = self.body;
        if sender.is_ready() {
            return pool.put(sender);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(&pool);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() && body.fault().is_none() {
                if let Some(pool) = pool.upgrade() {
                    pool.put(sender);
                }
            }
        });
    }
}

#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect,
    /// The exchange failed on a connection.
    Failed(hyper::Error),
}

impl Inner {
    fn put(&self, sender: SendRequest<CountedBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// The most recently used idle connection that is still open and not
    /// expired.
    fn take(&self) -> Option<SendRequest<CountedBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT {
                return Some(i.sender);
            }
        }
        None
    }

    fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT);
        }
    }
}

impl Pool {
    /// A pool for the upstream; nothing is dialled until the first request.
    pub(super) fn new(dialer: Dialer) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                dialer,
                idle: Mutex::new(Vec::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    async fn dial(&self) -> Result<SendRequest<CountedBody>, SendError> {
        let stream = self
            .inner
            .dialer
            .connect()
            .await
            .ok_or(SendError::Connect)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            let pool = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(IDLE_TIMEOUT / 4);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    match pool.upgrade() {
                        Some(p) => p.sweep(),
                        None => return,
                    }
                }
            });
        }
        Ok(sender)
    }

    /// Sends `req` (origin-form target, `Host` set) on a pooled or new
    /// connection. The lease must be released when the response body ends.
    /// (An async block, not an async fn, which would hold `req` twice.)
    pub fn send(
        &self,
        req: Request<CountedBody>,
    ) -> impl Future<Output = Result<(Response<Incoming>, Lease), SendError>> + '_ {
        let mut req = req;
        async move {
            let body = req.body().watch();
            loop {
                let (mut sender, pooled) = match self.inner.take() {
                    Some(s) => (s, true),
                    None => (self.dial().await?, false),
                };
                // A returned connection may still be finishing its last exchange.
                if let Err(e) = sender.ready().await {
                    if pooled {
                        continue;
                    }
                    return Err(SendError::Failed(e));
                }
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        let lease = Lease {
                            sender,
                            pool: Arc::downgrade(&self.inner),
                            body,
                        };
                        return Ok((resp, lease));
                    }
                    Err(mut e) => match e.take_message() {
                        // Not written: the pooled connection had closed. Again, on another.
                        Some(again) if pooled => req = again,
                        _ => return Err(SendError::Failed(e.into_error())),
                    },
                }
            }
        }
    }
}
