//! The audit trail: one JSON line per request that reached a decision,
//! hash-chained so that an edited, deleted, inserted or reordered line is
//! found by `meshgate audit verify`.
//!
//! A request takes its place in the bounded queue *before* it is decided or
//! forwarded ([`Audit::slot`]). When the queue is full, `block` makes the
//! request wait (back-pressure, measured; past `max_wait` it is refused with
//! 503, so nothing is served unrecorded) and `drop` lets it through and counts
//! the lost event. A held place is written to without waiting, when the
//! response ends or is abandoned, so that the event carries the bytes sent.
//!
//! One writer thread owns the sink (stdout, or a file rotated by size) and
//! the chain: `chain = hex(sha256(previous chain as 64 hex chars || event))`,
//! where `event` is the line without its trailing `,"chain":"…"}` plus the
//! closing `}`. The first line of a chain, and of every file, also names the
//! `prev` chain it continues, so each file can be verified on its own and in
//! sequence with the file rotated before it.

mod cover;
mod head;
mod line;
mod verify;
mod writer;

use head::HeadCell;
pub use head::{parse_anchors, Anchor, Head};
use line::*;
pub use verify::*;
use writer::*;

use std::io::{self};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::decision::authz::AuthzOutcome;
use crate::decision::jwt::User;
use crate::model::connection::ConnInfo;
use crate::observe::metrics::AuditMetrics;

/// The all-zero chain a new chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// JSON lines on standard output (logs go to standard error).
    #[default]
    Stdout,
    /// A file, rotated by size.
    File,
    /// No audit trail (warned about at start-up).
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FullMode {
    /// The request waits for room in the queue (up to `max_wait`, then 503).
    #[default]
    Block,
    /// The event is dropped, counted and logged; the request goes on.
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub sink: SinkKind,
    /// The audit file (sink `file`); relative to the configuration file.
    pub file: Option<PathBuf>,
    /// Rotate once the file reaches this many bytes.
    pub max_file_bytes: u64,
    /// Rotated files kept: FILE.1 (newest) .. FILE.N.
    pub retain: usize,
    /// Events (and places held by requests in flight) the queue holds.
    pub queue: usize,
    pub when_full: FullMode,
    /// `block`: how long a request may wait for room before it is refused.
    #[serde(deserialize_with = "crate::base::yaml::de_duration")]
    pub max_wait: Duration,
    /// How long the writer lets events gather after it has caught up, so
    /// that it wakes once per batch rather than once per request.
    #[serde(deserialize_with = "crate::base::yaml::de_duration")]
    pub flush_interval: Duration,
    /// How often the chain's head is logged as an `audit checkpoint` line
    /// (only when it moved; also at shutdown).
    #[serde(deserialize_with = "crate::base::yaml::de_duration")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            sink: SinkKind::Stdout,
            file: None,
            max_file_bytes: 100 * 1024 * 1024,
            retain: 10,
            queue: 16 * 1024,
            when_full: FullMode::Block,
            max_wait: Duration::from_secs(5),
            flush_interval: Duration::from_millis(2),
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

impl AuditConfig {
    pub fn resolve(&mut self, base: &Path) {
        if let Some(f) = self.file.as_mut() {
            crate::base::paths::resolve(base, f);
        }
    }

    /// What starting the trail would fail on, found without starting it
    /// (`meshgate validate`): for sink `file`, the file can be appended to.
    pub fn check_sink(&self) -> Result<(), String> {
        match (self.sink, &self.file) {
            (SinkKind::File, Some(path)) => writer::check_file(path),
            _ => Ok(()),
        }
    }

    /// Problems as `field: message`.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match (self.sink, &self.file) {
            (SinkKind::File, None) => errors.push("audit.file: sink `file` needs a file".into()),
            (SinkKind::Stdout | SinkKind::Off, Some(_)) => {
                errors.push("audit.file: only used with sink `file`".into())
            }
            _ => {}
        }
        if self.queue == 0 {
            errors.push("audit.queue: must be at least 1".into());
        }
        if self.retain == 0 {
            errors.push("audit.retain: must be at least 1".into());
        }
        if self.flush_interval > Duration::from_secs(1) {
            errors.push(format!(
                "audit.flush_interval: {:?} is above the maximum of 1s",
                self.flush_interval
            ));
        }
        if self.checkpoint_interval < Duration::from_millis(10) {
            errors.push(format!(
                "audit.checkpoint_interval: {:?} is below the minimum of 10ms",
                self.checkpoint_interval
            ));
        }
        if self.max_file_bytes < 4096 {
            errors.push(format!(
                "audit.max_file_bytes: {} is below the minimum of 4096",
                self.max_file_bytes
            ));
        }
        errors
    }
}

/// What is known about a request when its event is written.
#[derive(Debug)]
pub struct Event {
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub trace_id: [u8; 16],
    pub conn: Arc<ConnInfo>,
    pub user: Option<Arc<User>>,
    pub tier: Option<Arc<str>>,
    pub outcome: Option<Arc<AuthzOutcome>>,
    pub policy_version: Option<Arc<str>>,
    pub method: Method,
    /// The normalised path (as forwarded), or the path as sent when it was refused.
    pub path: String,
    pub decision: &'static str,
    /// The error code of a refused or failed request.
    pub error: Option<&'static str>,
    /// Why, more precisely, where the error has a reason of its own: the
    /// refused end-user token's (`expired`, `unknown_kid`, `malformed_claim`, ...).
    pub reason: Option<&'static str>,
    pub status: u16,
    /// A gRPC call's status: meshgate's own refusal's, or the one the
    /// upstream's trailers (or trailers-only headers) carried.
    pub grpc_status: Option<u8>,
    pub upstream: Option<Duration>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The response body was sent to its end (false: the client went away).
    pub complete: bool,
    /// The contract violations a response checked for conformance showed.
    pub violations: crate::model::conformance::Kinds,
}

enum Msg {
    /// A request's members ([`write_request_members`]), for the writer to
    /// number, chain and write.
    Request(Box<[u8]>),
    /// A request whose members could not be written (a clock outside the
    /// years 1970 to 9999): recorded as dropped.
    Unwritable(serde_json::Error),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// A place in the queue, held by a request until its event is written.
pub struct Slot(mpsc::OwnedPermit<Msg>);

impl Slot {
    /// Writes the event's members here, on the request's thread, and queues
    /// them: the writer thread's share of a request is then its number, its
    /// hash and the write, so that its batches hold the request threads'
    /// core for less time (on one core they wait for it). The event is
    /// dropped here; only the members' bytes cross to the writer, in a box
    /// of their size (a full queue holds about 700 bytes per event).
    pub fn send(self, event: Event) {
        thread_local! {
            static MEMBERS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let msg = MEMBERS.with_borrow_mut(|members| {
            members.clear();
            match write_request_members(members, &event) {
                Ok(()) => Msg::Request(Box::from(members.as_slice())),
                Err(e) => Msg::Unwritable(e),
            }
        });
        self.0.send(msg);
    }
}

/// Why a request cannot get a place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// `block` and the queue stayed full for `max_wait`, or the writer is gone.
    Unavailable,
}

/// The running audit trail.
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    mode: FullMode,
    max_wait: Duration,
    metrics: AuditMetrics,
    /// Events lost since the writer last recorded the loss in the chain.
    unrecorded_drops: Arc<AtomicU64>,
    last_drop_log: AtomicU64,
    head: HeadCell,
    checkpoint_interval: Duration,
}

/// The writer thread; [`WriterThread::join`] waits for it to write every
/// queued event once every handle and place is gone.
pub struct WriterThread {
    done: std::sync::mpsc::Receiver<()>,
}

impl WriterThread {
    /// Waits up to `limit` for the writer to finish; false if it did not.
    pub fn join(self, limit: Duration) -> bool {
        self.done.recv_timeout(limit).is_ok()
    }
}

impl Audit {
    /// Opens the sink and starts the writer thread. `None` for sink `off`.
    pub fn start(
        config: &AuditConfig,
        metrics: AuditMetrics,
    ) -> Result<Option<(Audit, WriterThread)>, String> {
        let sink = match (config.sink, &config.file) {
            (SinkKind::Off, _) => return Ok(None),
            (SinkKind::Stdout, _) => Sink::Stdout(io::stdout()),
            (SinkKind::File, Some(path)) => {
                Sink::File(FileSink::open(path, config.max_file_bytes, config.retain)?)
            }
            (SinkKind::File, None) => return Err("audit.file: sink `file` needs a file".into()),
        };
        let resumed = match &sink {
            Sink::File(f) => f.resumed.clone(),
            Sink::Stdout(_) => None,
        };
        let chain = resumed.as_ref().map(|(c, _)| c.clone());
        let file = head_file_of(&sink);
        // Logged for stdout too: each process's stdout is a new chain, and
        // a log of several runs says where each begins.
        match (&chain, &file) {
            (None, Some(f)) => {
                tracing::info!(file = %f.display(), "audit trail starts a new chain")
            }
            (None, None) => tracing::info!(sink = "stdout", "audit trail starts a new chain"),
            (Some(_), _) => {}
        }
        let head = HeadCell::new(metrics.chain_seq.clone(), file);
        if let Some((c, in_file)) = resumed {
            // Where the chain goes on from, on the log stream: published
            // only once the file holding it is on disk (the process before
            // may have been killed between a write and its sync).
            match std::fs::File::open(&in_file).and_then(|f| f.sync_data()) {
                Ok(()) => head.resumed(c.next_seq.saturating_sub(1), &c.prev, in_file),
                Err(e) => tracing::error!(
                    file = %in_file.display(),
                    error = %e,
                    "audit trail resumed, but its last lines could not be synced; no head published until the next sync"
                ),
            }
        }
        let start_of_file = match &sink {
            Sink::File(f) => f.size == 0,
            Sink::Stdout(_) => true,
        };
        let (tx, rx) = mpsc::channel(config.queue);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let unrecorded_drops = Arc::new(AtomicU64::new(0));
        let node = node_name();
        let mut writer = Writer {
            sink,
            chain: chain.unwrap_or_else(ChainState::genesis),
            start_of_file,
            pending: Vec::with_capacity(64 * 1024),
            ends: Vec::with_capacity(1024),
            line: Vec::with_capacity(2048),
            line_end: line_end(&node, pod_name().as_deref())?,
            node: node.into(),
            last_error_log: None,
            metrics: metrics.clone(),
            mode: config.when_full,
            unrecorded_drops: unrecorded_drops.clone(),
            flush_interval: config.flush_interval,
            head: head.clone(),
            unsynced: None,
            head_frozen: false,
            last_sync: Instant::now(),
        };
        std::thread::Builder::new()
            .name("meshgate-audit".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("audit: cannot start the writer thread: {e}"))?;
        Ok(Some((
            Audit {
                tx,
                mode: config.when_full,
                max_wait: config.max_wait,
                metrics,
                unrecorded_drops,
                last_drop_log: AtomicU64::new(0),
                head,
                checkpoint_interval: config.checkpoint_interval,
            },
            WriterThread { done },
        )))
    }

    /// The chain's head: the last line written (`GET /audit/head`).
    pub fn head(&self) -> Option<Head> {
        self.head.get()
    }

    /// Logs the head as an `audit checkpoint` line if it moved since the last.
    pub fn checkpoint(&self) {
        self.head.checkpoint();
    }

    /// A task that logs a checkpoint every `audit.checkpoint_interval`.
    pub fn checkpoints(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.head.clone().checkpoints(self.checkpoint_interval)
    }

    /// A place for the request's event. `Ok(None)`: mode `drop` and the queue
    /// is full; the event is counted as dropped.
    pub async fn slot(&self) -> Result<Option<Slot>, SlotError> {
        match self.tx.clone().try_reserve_owned() {
            Ok(p) => return Ok(Some(Slot(p))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped(1, "the audit writer has stopped");
                return match self.mode {
                    FullMode::Block => Err(SlotError::Unavailable),
                    FullMode::Drop => Ok(None),
                };
            }
            Err(mpsc::error::TrySendError::Full(_)) => {}
        }
        if self.mode == FullMode::Drop {
            self.dropped(1, "the audit queue is full (when_full: drop)");
            return Ok(None);
        }
        let t0 = Instant::now();
        self.metrics.backpressure_waiting.inc();
        let r = tokio::time::timeout(self.max_wait, self.tx.clone().reserve_owned()).await;
        self.metrics.backpressure_waiting.dec();
        self.metrics.backpressure_waits.inc();
        self.metrics
            .backpressure_seconds
            .inc_by(t0.elapsed().as_secs_f64());
        match r {
            Ok(Ok(p)) => Ok(Some(Slot(p))),
            Ok(Err(_)) | Err(_) => {
                self.dropped(
                    1,
                    "the audit queue stayed full (when_full: block); request refused",
                );
                Err(SlotError::Unavailable)
            }
        }
    }

    fn dropped(&self, n: u64, why: &str) {
        self.metrics.dropped.inc_by(n);
        self.unrecorded_drops.fetch_add(n, Ordering::Relaxed);
        // Loud, but at most once a second.
        let now = crate::observe::metrics::unix_seconds();
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now != last
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                dropped_total = self.metrics.dropped.get(),
                "AUDIT EVENTS LOST: {why}"
            );
        }
    }

    /// Waits (up to `limit`) until every event queued before this call is
    /// written; false if the writer did not get there (a sink that takes
    /// nothing: a full disk, an unread pipe).
    pub async fn flush(&self, limit: Duration) -> bool {
        let (ack_tx, ack) = std::sync::mpsc::sync_channel(1);
        let deadline = Instant::now() + limit;
        match tokio::time::timeout(limit, self.tx.send(Msg::Flush(ack_tx))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
        let rest = deadline.saturating_duration_since(Instant::now());
        tokio::task::spawn_blocking(move || ack.recv_timeout(rest).is_ok())
            .await
            .unwrap_or(false)
    }
}

fn head_file_of(sink: &Sink) -> Option<PathBuf> {
    match sink {
        Sink::File(f) => Some(f.path.clone()),
        Sink::Stdout(_) => None,
    }
}

/// The members every line ends with, `,"node":…,"pod":…}`.
fn line_end(node: &str, pod: Option<&str>) -> Result<Vec<u8>, String> {
    let mut end = Vec::new();
    write_line_end(&mut end, node, pod)
        .map_err(|e| format!("audit: the node and pod names cannot be written: {e}"))?;
    Ok(end)
}

fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(hostname)
}

fn pod_name() -> Option<String> {
    let pod = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
    Some(match std::env::var("POD_NAMESPACE") {
        Ok(ns) if !ns.is_empty() => format!("{ns}/{pod}"),
        _ => pod,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod shadow_tests;
#[cfg(test)]
mod tests;
