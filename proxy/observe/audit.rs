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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};
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
        }
    }
}

impl AuditConfig {
    pub fn resolve(&mut self, base: &Path) {
        if let Some(f) = self.file.as_mut() {
            crate::base::paths::resolve(base, f);
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
    pub status: u16,
    pub upstream: Option<Duration>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The response body was sent to its end (false: the client went away).
    pub complete: bool,
}

enum Msg {
    Event(Box<Event>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// A place in the queue, held by a request until its event is written.
pub struct Slot(mpsc::OwnedPermit<Msg>);

impl Slot {
    pub fn send(self, event: Event) {
        self.0.send(Msg::Event(Box::new(event)));
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
        let chain = match &sink {
            Sink::File(f) => f.resumed.clone(),
            Sink::Stdout(_) => None,
        };
        let start_of_file = match &sink {
            Sink::File(f) => f.size == 0,
            Sink::Stdout(_) => true,
        };
        let (tx, rx) = mpsc::channel(config.queue);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let unrecorded_drops = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            sink,
            chain: chain.unwrap_or_else(ChainState::genesis),
            start_of_file,
            pending: Vec::with_capacity(64 * 1024),
            ends: Vec::with_capacity(1024),
            line: Vec::with_capacity(2048),
            node: node_name().into(),
            pod: pod_name().map(Arc::from),
            last_error_log: None,
            metrics: metrics.clone(),
            mode: config.when_full,
            unrecorded_drops: unrecorded_drops.clone(),
            flush_interval: config.flush_interval,
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
            },
            WriterThread { done },
        )))
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

/// Where the chain stands: the last written line's sequence number and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainState {
    /// The next line's sequence number.
    next_seq: u64,
    prev: String,
}

impl ChainState {
    fn genesis() -> ChainState {
        ChainState {
            next_seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

enum Sink {
    Stdout(io::Stdout),
    File(FileSink),
}

struct FileSink {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    retain: usize,
    /// The chain found at the end of an existing file.
    resumed: Option<ChainState>,
}

impl FileSink {
    fn open(path: &Path, max_bytes: u64, retain: usize) -> Result<FileSink, String> {
        let shown = path.display();
        let mut resumed = None;
        let mut rotate_first = false;
        if let Ok(mut f) = File::open(path) {
            match last_line(&mut f) {
                Err(e) => return Err(format!("audit.file: {shown}: {e}")),
                Ok(Tail::Empty) => {}
                Ok(Tail::Complete(line)) => {
                    resumed = Some(chain_of(&line).ok_or_else(|| {
                        format!(
                            "audit.file: {shown}: its last line is not a meshgate audit event; \
                             move the file away or name another"
                        )
                    })?);
                }
                Ok(Tail::Torn(previous)) => {
                    // A write cut short (crash, full disk): start a new file so
                    // the torn line stays where verification will report it.
                    tracing::error!(
                        file = %shown,
                        "audit file ends in an incomplete line; rotating it out"
                    );
                    resumed = previous.as_deref().and_then(chain_of);
                    rotate_first = true;
                }
            }
        }
        if rotate_first {
            rotate_files(path, retain).map_err(|e| format!("audit.file: {shown}: {e}"))?;
        }
        let file = open_append(path).map_err(|e| format!("audit.file: {shown}: {e}"))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(FileSink {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            retain,
            resumed,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        // After a rotation whose reopen failed, FILE is already FILE.1:
        // only the reopen is retried, nothing is shifted again.
        if self.path.exists() {
            rotate_files(&self.path, self.retain)?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// FILE -> FILE.1 -> ... -> FILE.retain (the oldest is removed).
fn rotate_files(path: &Path, retain: usize) -> io::Result<()> {
    let numbered = |n: usize| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    };
    match std::fs::remove_file(numbered(retain)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..retain).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, numbered(1))
}

enum Tail {
    Empty,
    Complete(Vec<u8>),
    /// The file does not end in a newline; the last complete line, if any.
    Torn(Option<Vec<u8>>),
}

/// The last line of a file, read from its end.
fn last_line(f: &mut File) -> io::Result<Tail> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    // Events are far smaller than this; a longer last line is not ours.
    let window = len.min(1024 * 1024);
    f.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::with_capacity(window as usize);
    f.take(window).read_to_end(&mut buf)?;
    let torn = buf.last() != Some(&b'\n');
    let body = if torn {
        &buf[..]
    } else {
        &buf[..buf.len() - 1]
    };
    let (before, last) = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => (Some(&body[..i]), &body[i + 1..]),
        None => (None, body),
    };
    if !torn {
        return Ok(Tail::Complete(last.to_vec()));
    }
    let previous = before.map(|b| match b.iter().rposition(|&c| c == b'\n') {
        Some(i) => b[i + 1..].to_vec(),
        None => b.to_vec(),
    });
    Ok(Tail::Torn(previous))
}

/// The chain state after `line`, if it is an audit event.
fn chain_of(line: &[u8]) -> Option<ChainState> {
    let parsed = parse_line(line).ok()?;
    Some(ChainState {
        next_seq: parsed.seq.checked_add(1)?,
        prev: parsed.chain,
    })
}

struct Writer {
    sink: Sink,
    chain: ChainState,
    /// The next line is the first of its file (or of the stream).
    start_of_file: bool,
    /// Lines chained but not yet written, and where each ends.
    pending: Vec<u8>,
    ends: Vec<(usize, LineKind)>,
    line: Vec<u8>,
    node: Arc<str>,
    pod: Option<Arc<str>>,
    metrics: AuditMetrics,
    mode: FullMode,
    unrecorded_drops: Arc<AtomicU64>,
    last_error_log: Option<Instant>,
    flush_interval: Duration,
}

#[derive(Debug, Clone, Copy)]
enum LineKind {
    Request,
    /// A `dropped` record.
    Dropped,
}

/// Write what is pending once this much has gathered, even mid-burst.
const BATCH_BYTES: usize = 256 * 1024;

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        while let Some(msg) = rx.blocking_recv() {
            let mut acks = Vec::new();
            self.take(msg, &mut acks);
            let mut caught_up = false;
            while self.pending.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut acks),
                    Err(_) => {
                        caught_up = true;
                        break;
                    }
                }
            }
            // Losses happen only while the queue is full, so a batch follows
            // each of them: recorded here at the latest.
            self.record_drops();
            self.write_pending();
            for ack in acks {
                let _ = ack.send(());
            }
            // Waking this thread per event costs the request threads more
            // than the event itself: under load, let the next batch gather.
            // (An idle writer waits in `blocking_recv`: the first event
            // wakes it at once.)
            if caught_up && !self.flush_interval.is_zero() {
                std::thread::sleep(self.flush_interval);
            }
        }
        self.record_drops();
        self.write_pending();
    }

    fn take(&mut self, msg: Msg, acks: &mut Vec<std::sync::mpsc::SyncSender<()>>) {
        match msg {
            Msg::Flush(ack) => acks.push(ack),
            Msg::Event(event) => {
                self.record_drops();
                self.append(Line::Request(&event), LineKind::Request);
            }
        }
    }

    /// Chains a `dropped` record for the events lost since the last one.
    fn record_drops(&mut self) {
        let lost = self.unrecorded_drops.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.append(Line::Dropped(lost), LineKind::Dropped);
        }
    }

    /// Chains one record and appends its line to what is pending.
    fn append(&mut self, record: Line<'_>, kind: LineKind) {
        if let Sink::File(f) = &self.sink {
            let would_be = f.size + self.pending.len() as u64;
            if would_be >= f.max_bytes {
                self.write_pending();
                if let Sink::File(f) = &mut self.sink {
                    match f.rotate() {
                        Ok(()) => self.start_of_file = true,
                        Err(e) => {
                            self.metrics.write_errors.inc();
                            tracing::error!(error = %e, "cannot rotate the audit file; writing on");
                        }
                    }
                }
            }
        }
        self.line.clear();
        let seq = self.chain.next_seq;
        let prev = self.start_of_file.then_some(self.chain.prev.as_str());
        let written = match record {
            Line::Request(e) => write_request(
                &mut self.line,
                seq,
                prev,
                e,
                &self.node,
                self.pod.as_deref(),
            ),
            Line::Dropped(count) => write_dropped(&mut self.line, seq, prev, count, &self.node),
        };
        if let Err(e) = written {
            // Only a clock outside 1970..9999 gets here; the loss is still
            // recorded (a `dropped` line counts it), never silent.
            let lost = match record {
                Line::Request(_) => {
                    self.metrics.dropped.inc();
                    1
                }
                Line::Dropped(count) => count,
            };
            self.unrecorded_drops.fetch_add(lost, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot write an audit line; counted as dropped");
            return;
        }
        let chain = chain_hash(&self.chain.prev, &self.line);
        // Replace the closing brace with the chain field.
        self.line.pop();
        self.line.extend_from_slice(b",\"chain\":\"");
        self.line.extend_from_slice(chain.as_bytes());
        self.line.extend_from_slice(b"\"}\n");
        self.pending.extend_from_slice(&self.line);
        self.ends.push((self.pending.len(), kind));
        self.chain = ChainState {
            next_seq: self.chain.next_seq + 1,
            prev: chain,
        };
        self.start_of_file = false;
    }

    /// Writes what is pending, retrying a failed write (a full disk) with
    /// back-off until it succeeds: a chained line is never thrown away, so
    /// the file stays verifiable. Meanwhile the queue fills, and the mode
    /// applies there: `block` makes requests wait, `drop` counts their
    /// events as lost (recorded in the chain once writing resumes).
    fn write_pending(&mut self) {
        let mut written = 0;
        let mut lines_done = 0;
        let mut backoff = Duration::from_millis(50);
        loop {
            while let Some(&(end, kind)) = self.ends.get(lines_done) {
                if end > written {
                    break;
                }
                if let LineKind::Request = kind {
                    self.metrics.events.inc();
                }
                lines_done += 1;
            }
            if written == self.pending.len() {
                break;
            }
            let r = match &mut self.sink {
                Sink::Stdout(s) => s.lock().write(&self.pending[written..]),
                Sink::File(f) => f.file.write(&self.pending[written..]),
            };
            let e = match r {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    written += n;
                    if let Sink::File(f) = &mut self.sink {
                        f.size += n as u64;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            self.metrics.write_errors.inc();
            let now = Instant::now();
            if self
                .last_error_log
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last_error_log = Some(now);
                tracing::error!(error = %e, mode = ?self.mode, "AUDIT WRITE FAILED");
            }
            // The writer's own thread: waiting here is the back-pressure.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        if let Sink::Stdout(s) = &mut self.sink {
            let _ = s.lock().flush();
        }
        self.pending.clear();
        self.ends.clear();
    }
}

/// Compact JSON with every non-ASCII character written as a `\uXXXX`
/// escape (serde_json already escapes control characters, `"` and `\`).
/// An audit line is then plain ASCII: no reader finds a line break inside it
/// (U+2028, U+2029 and U+0085 are line breaks to some, e.g. Python's
/// `splitlines`), whatever a client put in a path, a token or a certificate.
struct AsciiJson;

impl serde_json::ser::Formatter for AsciiJson {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

fn chain_hash(prev: &str, event: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(event);
    crate::base::hex::hex(ctx.finish().as_ref())
}

/// What the writer chains next.
enum Line<'a> {
    Request(&'a Event),
    /// Events lost before this line (queue full or write failure in mode `drop`).
    Dropped(u64),
}

#[derive(Serialize)]
struct DroppedLine<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    count: u64,
    node: &'a str,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allow"
    } else {
        "deny"
    }
}

/// Writes a request's line, `{"seq":…,"prev":…,"type":"request",…}`.
/// Written member by member rather than derived with serde: the keys are
/// ours and need no escaping, and most values need none either. The line is
/// the same; the writer's work per event besides the hash is a third less
/// (callgrind: about 16,000 instructions down to 11,000).
fn write_request(
    out: &mut Vec<u8>,
    seq: u64,
    prev: Option<&str>,
    e: &Event,
    node: &str,
    pod: Option<&str>,
) -> serde_json::Result<()> {
    const NONE: &[String] = &[];
    let outcome = e.outcome.as_deref();
    let mut o = Members::open(out);
    o.num("seq", seq);
    if let Some(prev) = prev {
        o.str("prev", prev)?;
    }
    o.str("type", "request")?;
    o.key("time");
    // Neither the time nor the socket address below can hold a quote, a
    // backslash, a control or a non-ASCII character: written as they are.
    write!(o.out, "\"{}\"", rfc3339_micros(e.time)?).map_err(serde_json::Error::io)?;
    o.str("request_id", e.request_id.to_str().unwrap_or(""))?;
    let mut trace_id = [0u8; 32];
    crate::base::hex::hex_into(&e.trace_id, &mut trace_id);
    o.str("trace_id", std::str::from_utf8(&trace_id).unwrap_or(""))?;
    o.key("principal");
    let mut principal = Members::open(o.out);
    principal.str("type", "Mesh::Service")?;
    // The header form is made from a `str`: this borrows it whole,
    // non-ASCII (a UTF-8 subject CN) included.
    principal.str(
        "id",
        &String::from_utf8_lossy(e.conn.identity.principal_header.as_bytes()),
    )?;
    principal.close();
    o.opt_str("user", e.user.as_deref().map(|u| u.id.as_str()))?;
    o.opt_str("tier", e.tier.as_deref())?;
    o.opt_str("product", outcome.map(|o| &*o.product))?;
    o.opt_str("action", outcome.map(|o| o.action.as_str()))?;
    o.opt_str("resource", outcome.map(|o| &*o.resource))?;
    o.str("method", e.method.as_str())?;
    o.str("path", &e.path)?;
    o.str("decision", e.decision)?;
    o.strs("policies", outcome.map_or(NONE, |o| &o.decision.policies))?;
    o.strs("errors", outcome.map_or(NONE, |o| &o.decision.errors))?;
    o.key("shadow");
    match outcome.and_then(|o| o.shadow.as_ref()) {
        Some(s) => {
            let mut shadow = Members::open(o.out);
            shadow.str("decision", verdict(s.allowed))?;
            shadow.strs("policies", &s.policies)?;
            shadow.close();
        }
        None => o.out.extend_from_slice(b"null"),
    }
    o.num("status", u64::from(e.status));
    o.opt_str("error", e.error)?;
    o.opt_num("upstream_us", e.upstream.map(micros));
    o.num("duration_us", micros(e.duration));
    o.num("bytes_in", e.bytes_in);
    o.num("bytes_out", e.bytes_out);
    o.bool("complete", e.complete);
    o.key("source");
    write!(o.out, "\"{}\"", e.conn.peer).map_err(serde_json::Error::io)?;
    o.str("tls_version", e.conn.tls_version)?;
    o.opt_str(
        "policy_version",
        e.policy_version
            .as_deref()
            .or(outcome.map(|o| &*o.policy_version)),
    )?;
    o.str("node", node)?;
    o.opt_str("pod", pod)?;
    o.close();
    Ok(())
}

/// Writes a `dropped` line: `count` events lost before it.
fn write_dropped(
    out: &mut Vec<u8>,
    seq: u64,
    prev: Option<&str>,
    count: u64,
    node: &str,
) -> serde_json::Result<()> {
    let line = DroppedLine {
        seq,
        prev,
        kind: "dropped",
        time: rfc3339_micros(SystemTime::now())?.to_string(),
        count,
        node,
    };
    line.serialize(&mut serde_json::Serializer::with_formatter(out, AsciiJson))
}

/// RFC 3339 with microseconds. humantime writes the years 1970 to 9999 only
/// (and its `Display` fails, or panics before 1970, otherwise): a clock
/// outside them is an error, not a crash of the writer thread.
fn rfc3339_micros(t: SystemTime) -> serde_json::Result<humantime::Rfc3339Timestamp> {
    const YEAR_10000: u64 = 253_402_300_800;
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => Ok(humantime::format_rfc3339_micros(t)),
        _ => Err(serde::ser::Error::custom(
            "the clock is outside the years 1970 to 9999",
        )),
    }
}

/// The members of a JSON object being written. Keys are meshgate's own
/// (plain ASCII, written as they are); string values go through
/// [`json_string`].
struct Members<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Members<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Members { out, first: true }
    }

    fn close(self) {
        self.out.push(b'}');
    }

    fn key(&mut self, key: &str) {
        self.out
            .extend_from_slice(if self.first { b"\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) -> serde_json::Result<()> {
        self.key(key);
        json_string(self.out, value)
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) -> serde_json::Result<()> {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn opt_num(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(v) => self.num(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn strs(&mut self, key: &str, values: &[String]) -> serde_json::Result<()> {
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json_string(self.out, v)?;
        }
        self.out.push(b']');
        Ok(())
    }
}

/// A JSON string in the trail's ASCII-only form: printable ASCII without
/// `"` or `\\` is copied as it is; anything else is escaped by serde_json
/// with [`AsciiJson`].
fn json_string(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if s.bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        use serde::Serializer as _;
        serde_json::Serializer::with_formatter(out, AsciiJson).serialize_str(s)
    }
}

// ---------------------------------------------------------------------------
// Verification

/// What a line of an audit file says about the chain.
#[derive(Debug, Deserialize)]
struct ParsedLine {
    seq: u64,
    #[serde(default)]
    prev: Option<String>,
    chain: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// Events a `dropped` record stands for.
    #[serde(default)]
    count: Option<u64>,
}

fn parse_line(line: &[u8]) -> Result<ParsedLine, String> {
    serde_json::from_slice::<ParsedLine>(line).map_err(|e| e.to_string())
}

/// The bytes a line's chain covers: the line up to its `,"chain":"…"` field,
/// closed with `}`. `"` never appears unescaped inside a JSON string, so the
/// last such field is the real one.
fn chained_bytes(line: &[u8]) -> Option<Vec<u8>> {
    const FIELD: &[u8] = b",\"chain\":\"";
    let at = line.windows(FIELD.len()).rposition(|w| w == FIELD)?;
    let rest = &line[at + FIELD.len()..];
    if rest.len() != 66 || &rest[64..] != b"\"}" {
        return None;
    }
    let mut v = Vec::with_capacity(at + 1);
    v.extend_from_slice(&line[..at]);
    v.push(b'}');
    Some(v)
}

/// A verified sequence of audit files.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Chains started afresh (a process restart writing to stdout).
    pub restarts: u64,
    /// `dropped` records: events the sidecar reported lost.
    pub dropped: u64,
}

/// The first break in the chain: `file:line: message`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ChainBreak {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Checks files given oldest first (FILE.N .. FILE.1 FILE).
pub fn verify(files: &[PathBuf]) -> Result<Verified, ChainBreak> {
    let mut state: Option<ChainState> = None;
    let mut out = Verified {
        events: 0,
        first_seq: None,
        last_seq: None,
        restarts: 0,
        dropped: 0,
    };
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| ChainBreak {
            file: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        if text.is_empty() {
            // A fresh file (just rotated, or nothing written yet).
            continue;
        }
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        // `split` yields one empty piece after a final newline.
        let complete = text.last() == Some(&b'\n');
        let count = if complete {
            lines.len() - 1
        } else {
            lines.len()
        };
        // Where each sequence number sits in this file, for explanations.
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (i, raw) in lines.iter().take(count).enumerate() {
            let n = i + 1;
            let brk = |message: String| ChainBreak {
                file: name.clone(),
                line: n,
                message,
            };
            if !complete && n == count {
                return Err(brk(
                    "incomplete last line (a write cut short, or the line was edited)".into(),
                ));
            }
            let parsed = parse_line(raw).map_err(|e| {
                brk(format!(
                    "not a meshgate audit event ({e}): edited or inserted"
                ))
            })?;
            let body = chained_bytes(raw).ok_or_else(|| {
                brk("the chain field is missing or malformed: edited or inserted".into())
            })?;
            let expected_seq = state.as_ref().map(|s| s.next_seq);
            let prev = match (&parsed.prev, &state) {
                (Some(p), None) => p.clone(),
                (None, None) => {
                    return Err(brk(
                        "the file starts mid-chain (no `prev`): lines before it were deleted"
                            .into(),
                    ))
                }
                (Some(p), Some(s)) if *p == s.prev => s.prev.clone(),
                (Some(p), Some(_)) if p == GENESIS && parsed.seq == 0 => {
                    out.restarts += 1;
                    p.clone()
                }
                (Some(_), Some(s)) if n == 1 => {
                    let why = if parsed.seq > s.next_seq {
                        format!(
                            "starts at seq {} where {} was expected: the end of the \
                             previous file was cut, or a file is missing between them",
                            parsed.seq, s.next_seq
                        )
                    } else {
                        "does not continue the chain of the previous file: \
                         they are out of order, or one was edited"
                            .to_string()
                    };
                    return Err(brk(why));
                }
                (Some(p), Some(s)) => {
                    return Err(brk(format!(
                        "names prev {p} but the line before ends at {}: edited or inserted",
                        s.prev
                    )))
                }
                (None, Some(s)) => s.prev.clone(),
            };
            let computed = chain_hash(&prev, &body);
            let restart =
                parsed.prev.as_deref() == Some(GENESIS) && parsed.seq == 0 && state.is_some();
            if computed != parsed.chain {
                return Err(brk(explain(&parsed, expected_seq, &seen, &lines[n..count])));
            }
            if let Some(e) = expected_seq {
                if parsed.seq != e && !restart {
                    return Err(brk(explain(&parsed, expected_seq, &seen, &lines[n..count])));
                }
            }
            // No line can follow the largest sequence number: the writer
            // never reaches it, so the line was made by hand.
            let next_seq = parsed.seq.checked_add(1).ok_or_else(|| {
                brk(format!(
                    "seq {} is the largest there is: not written by meshgate",
                    parsed.seq
                ))
            })?;
            if parsed.kind.as_deref() == Some("dropped") {
                // Counts that no longer fit say "at least this many".
                out.dropped = out.dropped.saturating_add(parsed.count.unwrap_or(0));
            } else {
                out.events += 1;
            }
            out.first_seq.get_or_insert(parsed.seq);
            out.last_seq = Some(parsed.seq);
            seen.insert(parsed.seq, n);
            state = Some(ChainState {
                next_seq,
                prev: parsed.chain,
            });
        }
    }
    Ok(out)
}

/// Why a line does not chain: from its sequence number and the lines around it.
fn explain(
    parsed: &ParsedLine,
    expected: Option<u64>,
    seen: &HashMap<u64, usize>,
    later: &[&[u8]],
) -> String {
    let Some(expected) = expected else {
        return "the chain does not match the line: edited".into();
    };
    if parsed.seq == expected {
        return format!(
            "seq {expected}: the chain does not match the line: this line (or, if its chain \
             was rewritten too, the one before it) was edited"
        );
    }
    if let Some(at) = seen.get(&parsed.seq) {
        return format!(
            "seq {} already appeared on line {at}: inserted or reordered",
            parsed.seq
        );
    }
    if parsed.seq > expected {
        let found_later = later
            .iter()
            .filter_map(|l| parse_line(l).ok())
            .any(|p| p.seq == expected);
        if found_later {
            return format!(
                "seq {} where {expected} was expected, and {expected} comes later: reordered",
                parsed.seq
            );
        }
        return format!(
            "seq {} where {expected} was expected: {} line(s) deleted before this one",
            parsed.seq,
            parsed.seq - expected
        );
    }
    format!(
        "seq {} where {expected} was expected: inserted or reordered",
        parsed.seq
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::identity::{PeerIdentity, Principal};
    use std::pin::Pin;
    use std::task::Poll;

    fn conn() -> Arc<ConnInfo> {
        let principal: Principal = "spiffe://acme.example/ns/finance/sa/reporting"
            .parse()
            .expect("principal");
        Arc::new(ConnInfo {
            identity: PeerIdentity {
                principal_header: HeaderValue::from_static(
                    "spiffe://acme.example/ns/finance/sa/reporting",
                ),
                principal,
                xfcc: HeaderValue::from_static("x"),
                cert_sha256: String::new(),
            },
            peer: "127.0.0.1:40000".parse().expect("addr"),
            peer_ip: HeaderValue::from_static("127.0.0.1"),
            tls_version: "TLSv1.3",
        })
    }

    fn event(path: &str) -> Event {
        Event {
            time: SystemTime::now(),
            request_id: HeaderValue::from_static("0123"),
            trace_id: [7; 16],
            conn: conn(),
            user: None,
            tier: None,
            outcome: None,
            policy_version: Some(Arc::from("v1")),
            method: Method::GET,
            path: path.to_string(),
            decision: "no_route",
            error: Some("no_route"),
            status: 404,
            upstream: None,
            duration: Duration::from_micros(12),
            bytes_in: 0,
            bytes_out: 10,
            complete: true,
        }
    }

    fn config(file: &Path, max_file_bytes: u64) -> AuditConfig {
        AuditConfig {
            sink: SinkKind::File,
            file: Some(file.to_path_buf()),
            max_file_bytes,
            retain: 20,
            queue: 8,
            when_full: FullMode::Block,
            max_wait: Duration::from_secs(5),
            flush_interval: Duration::from_millis(2),
        }
    }

    fn metrics() -> AuditMetrics {
        crate::observe::metrics::Metrics::new().audit.clone()
    }

    /// A started audit trail, its metrics and a runtime to drive it.
    fn running(
        config: &AuditConfig,
    ) -> (tokio::runtime::Runtime, Audit, WriterThread, AuditMetrics) {
        let m = metrics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (audit, writer) = Audit::start(config, m.clone())
            .expect("start")
            .expect("enabled");
        (rt, audit, writer, m)
    }

    /// Writes `paths` as events through a real writer thread and waits for it.
    fn write(config: &AuditConfig, paths: &[&str]) -> AuditMetrics {
        write_events(config, paths.iter().map(|p| event(p)))
    }

    /// Writes `events` through a real writer thread and waits for it.
    fn write_events(config: &AuditConfig, events: impl Iterator<Item = Event>) -> AuditMetrics {
        let (rt, audit, writer, m) = running(config);
        rt.block_on(async {
            for e in events {
                let slot = audit.slot().await.expect("slot").expect("place");
                slot.send(e);
            }
            assert!(audit.flush(Duration::from_secs(10)).await);
        });
        drop(audit);
        assert!(writer.join(Duration::from_secs(10)));
        m
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .map(String::from)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn events_are_chained_json_lines_that_verify() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let m = write(&config(&file, 1 << 20), &["/a", "/b\n\"x", "/c"]);
        assert_eq!(m.events.get(), 3);
        let l = lines(&file);
        assert_eq!(l.len(), 3);
        let first: serde_json::Value = serde_json::from_str(&l[0]).expect("json");
        assert_eq!(first["seq"], 0);
        assert_eq!(first["prev"], GENESIS);
        assert_eq!(first["type"], "request");
        assert_eq!(first["decision"], "no_route");
        assert_eq!(first["principal"]["type"], "Mesh::Service");
        assert_eq!(first["trace_id"], "07070707070707070707070707070707");
        assert_eq!(first["source"], "127.0.0.1:40000");
        let second: serde_json::Value = serde_json::from_str(&l[1]).expect("json");
        assert_eq!(
            second["path"], "/b\n\"x",
            "control characters stay inside one line"
        );
        assert!(second.get("prev").is_none());
        let v = verify(std::slice::from_ref(&file)).expect("verifies");
        assert_eq!((v.events, v.first_seq, v.last_seq), (3, Some(0), Some(2)));

        // A restart appends and continues the chain.
        write(&config(&file, 1 << 20), &["/d"]);
        let v = verify(std::slice::from_ref(&file)).expect("verifies after restart");
        assert_eq!((v.events, v.last_seq), (4, Some(3)));
    }

    #[test]
    fn lines_are_ascii_whatever_the_values_hold() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let nasty = "/caf\u{e9}\u{2028}\u{2029}\u{85}\u{1f600}\r\n\0\"\\";
        write(&config(&file, 1 << 20), &[nasty, "/b"]);
        let text = std::fs::read(&file).expect("read");
        assert!(text.is_ascii(), "{}", String::from_utf8_lossy(&text));
        let l = lines(&file);
        assert_eq!(l.len(), 2);
        assert!(
            l[0].contains("caf\\u00e9\\u2028\\u2029\\u0085\\ud83d\\ude00\\r\\n\\u0000"),
            "{}",
            l[0]
        );
        let v: serde_json::Value = serde_json::from_str(&l[0]).expect("json");
        assert_eq!(v["path"], nasty);
        verify(std::slice::from_ref(&file)).expect("verifies");
    }

    #[test]
    fn a_principal_that_is_not_ascii_is_recorded_whole() {
        // A subject CN is UTF-8 text; the event names it as it is (it
        // used to be recorded as "" because the header form is not ASCII).
        let cn = "cn:Zoë \"q\" \\ \u{2028}end";
        let principal: Principal = cn.parse().expect("principal");
        let mut e = event("/x");
        e.conn = Arc::new(ConnInfo {
            identity: PeerIdentity {
                principal_header: HeaderValue::from_str(cn).expect("header-safe"),
                principal,
                xfcc: HeaderValue::from_static("x"),
                cert_sha256: String::new(),
            },
            peer: "127.0.0.1:40000".parse().expect("addr"),
            peer_ip: HeaderValue::from_static("127.0.0.1"),
            tls_version: "TLSv1.3",
        });
        let mut line = Vec::new();
        write_request(&mut line, 0, None, &e, "node", None).expect("written");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["principal"]["id"], cn);
    }

    #[test]
    fn an_event_that_cannot_be_written_is_recorded_as_dropped() {
        // humantime writes RFC 3339 for the years 1970 to 9999 only.
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let mut far = event("/far");
        far.time = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        let mut early = event("/early");
        early.time = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let m = write_events(
            &config(&file, 1 << 20),
            [far, early, event("/next")].into_iter(),
        );
        let l: Vec<serde_json::Value> = lines(&file)
            .iter()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        // Each loss is chained as a `dropped` line before the next event.
        let (last, dropped) = l.split_last().expect("lines");
        assert_eq!(last["path"], "/next");
        assert!(dropped.iter().all(|d| d["type"] == "dropped"), "{l:?}");
        let counted: u64 = dropped.iter().filter_map(|d| d["count"].as_u64()).sum();
        assert_eq!(counted, 2, "{l:?}");
        assert_eq!(m.dropped.get(), 2);
        verify(std::slice::from_ref(&file)).expect("verifies");
    }

    #[test]
    fn a_request_line_has_every_member_in_order_and_is_plain_ascii() {
        let nasty = "q\"b\\s\u{7}\u{7f}é\u{2028}\u{1F600}/\n";
        let mut e = event(nasty);
        e.time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_780_000_000_123_456);
        e.user = Some(Arc::new(User {
            id: format!("idp|{nasty}"),
            issuer: "idp".into(),
            subject: nasty.into(),
            groups: vec![],
            scopes: vec![],
            attributes: vec![],
            expires_at: u64::MAX,
        }));
        e.tier = Some(Arc::from("gold"));
        e.outcome = Some(Arc::new(AuthzOutcome {
            product: Arc::from("sales.orders"),
            action: crate::decision::contract::Action::Read,
            resource: Arc::from("sales.orders/orders"),
            decision: crate::decision::authz::Decision {
                allowed: true,
                policies: vec!["p\"1".into(), "p2".into()],
                errors: vec![nasty.into()],
            },
            shadow: Some(crate::decision::authz::Decision {
                allowed: false,
                policies: vec![],
                errors: vec![],
            }),
            policy_version: Arc::from("v2"),
            throughput: None,
            latency: None,
        }));
        e.policy_version = None;
        e.decision = "allow";
        e.error = None;
        e.status = 200;
        e.upstream = Some(Duration::from_micros(u64::MAX));
        e.bytes_in = u64::MAX;
        e.complete = false;
        let mut line = Vec::new();
        write_request(&mut line, u64::MAX, Some("ab"), &e, "n\"ode", Some("pod")).expect("written");
        // ASCII without control characters below DEL (so no line break of any kind).
        assert!(
            line.iter().all(|&b| b.is_ascii() && b >= b' '),
            "{}",
            String::from_utf8_lossy(&line)
        );
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        let expected = serde_json::json!({
            "seq": u64::MAX, "prev": "ab", "type": "request",
            "time": "2026-05-28T20:26:40.123456Z", "request_id": "0123",
            "trace_id": "07070707070707070707070707070707",
            "principal": {"type": "Mesh::Service", "id": "spiffe://acme.example/ns/finance/sa/reporting"},
            "user": format!("idp|{nasty}"), "tier": "gold", "product": "sales.orders",
            "action": "read", "resource": "sales.orders/orders", "method": "GET", "path": nasty,
            "decision": "allow", "policies": ["p\"1", "p2"], "errors": [nasty],
            "shadow": {"decision": "deny", "policies": []}, "status": 200, "error": null,
            "upstream_us": u64::MAX, "duration_us": 12, "bytes_in": u64::MAX, "bytes_out": 10,
            "complete": false, "source": "127.0.0.1:40000", "tls_version": "TLSv1.3",
            "policy_version": "v2", "node": "n\"ode", "pod": "pod",
        });
        assert_eq!(v, expected);
        // Members in the documented order (serde_json::Value sorts them).
        let text = String::from_utf8_lossy(&line);
        let mut at = 0;
        for k in [
            "seq",
            "prev",
            "type",
            "time",
            "request_id",
            "trace_id",
            "principal",
            "user",
            "tier",
            "product",
            "action",
            "resource",
            "method",
            "path",
            "decision",
            "policies",
            "errors",
            "shadow",
            "status",
            "error",
            "upstream_us",
            "duration_us",
            "bytes_in",
            "bytes_out",
            "complete",
            "source",
            "tls_version",
            "policy_version",
            "node",
            "pod",
        ] {
            match text[at..].find(&format!("\"{k}\":")) {
                Some(i) => at += i,
                None => panic!("{k} missing or out of order in {text}"),
            }
        }
        // No optional member is left out: absent values are null.
        let mut e = event("/x");
        e.policy_version = None;
        let mut line = Vec::new();
        write_request(&mut line, 0, None, &e, "node", None).expect("written");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        for k in [
            "user",
            "tier",
            "product",
            "action",
            "resource",
            "shadow",
            "upstream_us",
            "policy_version",
            "pod",
        ] {
            assert_eq!(v[k], serde_json::Value::Null, "{k}");
        }
        assert_eq!(v.get("prev"), None);
        assert_eq!(v.as_object().map(|o| o.len()), Some(29));
    }

    #[test]
    fn every_kind_of_tampering_is_found_with_its_line() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        write(&config(&file, 1 << 20), &["/0", "/1", "/2", "/3", "/4"]);
        let orig = lines(&file);
        let check = |edited: Vec<String>, line: usize, word: &str| {
            rewrite(&file, &edited);
            let e = verify(std::slice::from_ref(&file)).expect_err("broken");
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(word), "{e}");
        };
        let mut edited = orig.clone();
        edited[2] = edited[2].replace("\"/2\"", "\"/x\"");
        check(edited, 3, "edited");
        let mut deleted = orig.clone();
        deleted.remove(2);
        check(deleted, 3, "deleted");
        let mut reordered = orig.clone();
        reordered.swap(1, 2);
        check(reordered, 2, "reordered");
        let mut inserted = orig.clone();
        inserted.insert(3, orig[1].clone());
        check(inserted, 4, "inserted");
        let mut forged = orig.clone();
        forged.insert(
            1,
            r#"{"seq":1,"type":"request","path":"/evil"}"#.to_string(),
        );
        check(forged, 2, "inserted");
        let mut head_cut = orig.clone();
        head_cut.remove(0);
        check(head_cut, 1, "deleted");
        let mut torn = orig.clone().join("\n");
        torn.truncate(torn.len() - 10);
        std::fs::write(&file, torn).expect("write");
        let e = verify(std::slice::from_ref(&file)).expect_err("torn");
        assert_eq!(e.line, 5, "{e}");
        rewrite(&file, &orig);
        assert!(verify(std::slice::from_ref(&file)).is_ok());
    }

    #[test]
    fn rotation_keeps_the_chain_across_files() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let paths: Vec<String> = (0..40).map(|i| format!("/orders/{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        write(&config(&file, 4096), &refs);
        let mut files: Vec<PathBuf> = (1..=20)
            .rev()
            .map(|n| dir.path().join(format!("audit.log.{n}")))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        files.push(file.clone());
        let v = verify(&files).expect("the rotated files verify in order");
        assert_eq!((v.events, v.first_seq, v.last_seq), (40, Some(0), Some(39)));
        // Each file alone verifies too: its first line names its prev.
        for f in &files {
            verify(std::slice::from_ref(f)).expect("alone");
            let first: serde_json::Value = serde_json::from_str(&lines(f)[0]).expect("json");
            assert!(first["prev"].is_string(), "{f:?}");
        }
        // A missing file in the middle is found.
        let mut gap = files.clone();
        gap.remove(1);
        let e = verify(&gap).expect_err("gap");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("missing"), "{e}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_in_drop_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let mut cfg = config(&file, 1 << 20);
        cfg.queue = 2;
        cfg.when_full = FullMode::Drop;
        let (rt, audit, writer, m) = running(&cfg);
        rt.block_on(async {
            // Two places held: the queue is full.
            let a = audit.slot().await.expect("slot").expect("place");
            let b = audit.slot().await.expect("slot").expect("place");
            assert!(audit.slot().await.expect("drop mode").is_none());
            assert!(audit.slot().await.expect("drop mode").is_none());
            a.send(event("/a"));
            b.send(event("/b"));
            assert!(audit.flush(Duration::from_secs(10)).await);
            let c = audit.slot().await.expect("slot").expect("room again");
            c.send(event("/c"));
            assert!(audit.flush(Duration::from_secs(10)).await);
        });
        drop(audit);
        assert!(writer.join(Duration::from_secs(10)));
        assert_eq!(m.dropped.get(), 2);
        assert_eq!(m.events.get(), 3);
        let v = verify(std::slice::from_ref(&file)).expect("verifies");
        assert_eq!(
            (v.events, v.dropped),
            (3, 2),
            "the loss is recorded in the chain"
        );
    }

    #[test]
    fn a_full_queue_makes_requests_wait_in_block_mode() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let mut cfg = config(&file, 1 << 20);
        cfg.queue = 1;
        cfg.max_wait = Duration::from_millis(200);
        let (rt, audit, writer, m) = running(&cfg);
        rt.block_on(async {
            let held = audit.slot().await.expect("slot").expect("place");
            // Nothing frees the place: the wait ends in a refusal.
            assert_eq!(audit.slot().await.err(), Some(SlotError::Unavailable));
            assert_eq!(m.backpressure_waits.get(), 1);
            assert!(m.backpressure_seconds.get() > 0.0);
            // A place freed while waiting is taken.
            let waiter = audit.slot();
            tokio::pin!(waiter);
            assert!(futures_poll_once(&mut waiter).await.is_none(), "it waits");
            held.send(event("/held"));
            let s = waiter.await.expect("slot").expect("place");
            s.send(event("/waited"));
            assert!(audit.flush(Duration::from_secs(10)).await);
        });
        drop(audit);
        assert!(writer.join(Duration::from_secs(10)));
        assert_eq!(m.events.get(), 2);
        assert_eq!(m.dropped.get(), 1, "the refused request's event");
        let v = verify(std::slice::from_ref(&file)).expect("verifies");
        assert_eq!((v.events, v.dropped), (2, 1));
    }

    /// Polls a future once: `Some` if it is ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    #[test]
    fn an_empty_file_verifies_and_a_half_done_rotation_only_reopens() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        std::fs::write(&file, "").expect("write");
        let v = verify(std::slice::from_ref(&file)).expect("an empty file verifies");
        assert_eq!(v.events, 0);
        // FILE was renamed to FILE.1 but reopening failed: the next rotation
        // reopens FILE and shifts nothing.
        let mut sink = FileSink::open(&file, 4096, 3).expect("open");
        std::fs::rename(&file, dir.path().join("audit.log.1")).expect("rename");
        sink.rotate().expect("reopen");
        assert!(file.exists());
        assert!(dir.path().join("audit.log.1").exists());
        assert!(!dir.path().join("audit.log.2").exists());
    }

    /// A line as the writer would chain it after `prev`.
    fn chained(prev: &str, event: serde_json::Value) -> (String, String) {
        let event = event.to_string();
        let chain = chain_hash(prev, event.as_bytes());
        let line = format!("{},\"chain\":\"{chain}\"}}\n", &event[..event.len() - 1]);
        (line, chain)
    }

    /// Found by the `audit_verify` fuzz target
    /// (fuzz/regressions/audit_verify/): correctly chained lines with the
    /// largest sequence number or `dropped` counts whose sum overflows made
    /// verify panic (debug) or wrap (release).
    #[test]
    fn verify_survives_the_largest_numbers() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        let (a, c) = chained(
            GENESIS,
            serde_json::json!({"seq": 0, "prev": GENESIS, "type": "dropped", "count": 5}),
        );
        let (b, _) = chained(
            &c,
            serde_json::json!({"seq": 1, "type": "dropped", "count": u64::MAX}),
        );
        std::fs::write(&file, format!("{a}{b}")).expect("write");
        let v = verify(std::slice::from_ref(&file)).expect("verifies");
        assert_eq!((v.events, v.dropped, v.last_seq), (0, u64::MAX, Some(1)));

        let (a, c) = chained(
            GENESIS,
            serde_json::json!({"seq": u64::MAX, "prev": GENESIS, "type": "request"}),
        );
        let (b, _) = chained(&c, serde_json::json!({"seq": 0, "type": "request"}));
        std::fs::write(&file, format!("{a}{b}")).expect("write");
        let e = verify(std::slice::from_ref(&file)).expect_err("refused");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("the largest there is"), "{e}");
    }

    #[test]
    fn a_foreign_file_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        std::fs::write(&file, "hello\n").expect("write");
        let e = Audit::start(&config(&file, 1 << 20), metrics())
            .err()
            .expect("refused");
        assert!(e.contains("not a meshgate audit event"), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_rotated_out_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("audit.log");
        write(&config(&file, 1 << 20), &["/a", "/b"]);
        let mut text = std::fs::read(&file).expect("read");
        text.extend_from_slice(b"{\"seq\":2,\"ty");
        std::fs::write(&file, text).expect("write");
        write(&config(&file, 1 << 20), &["/c"]);
        let rotated = dir.path().join("audit.log.1");
        let e = verify(std::slice::from_ref(&rotated)).expect_err("torn");
        assert_eq!(e.line, 3);
        let v = verify(std::slice::from_ref(&file)).expect("the new file verifies");
        assert_eq!(v.first_seq, Some(2));
    }
}
