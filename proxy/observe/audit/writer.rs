//! The writer thread: the chain state, the file sink (append, rotate, the
//! chain resumed from the last line), batches of lines written, synced to
//! disk before the head names them.

use crate::observe::metrics::AuditMetrics;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::*;

/// Where the chain stands: the last written line's sequence number and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainState {
    /// The next line's sequence number.
    pub(super) next_seq: u64,
    pub(super) prev: String,
}

impl ChainState {
    pub(super) fn genesis() -> ChainState {
        ChainState {
            next_seq: 0,
            prev: GENESIS.to_string(),
        }
    }
}

pub(super) enum Sink {
    Stdout(io::Stdout),
    File(FileSink),
}

pub(super) struct FileSink {
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) size: u64,
    pub(super) max_bytes: u64,
    pub(super) retain: usize,
    /// The chain found at the end of an existing file, and the file its
    /// line is in (FILE, or FILE.1 just after a rotation).
    pub(super) resumed: Option<(ChainState, PathBuf)>,
}

impl FileSink {
    pub(super) fn open(path: &Path, max_bytes: u64, retain: usize) -> Result<FileSink, String> {
        let shown = path.display();
        let mut resumed = None;
        let mut rotate_first = false;
        if let Ok(mut f) = File::open(path) {
            match last_line(&mut f) {
                Err(e) => return Err(format!("audit.file: {shown}: {e}")),
                Ok(Tail::Empty) => {}
                Ok(Tail::Complete(line)) => {
                    let chain = chain_of(&line).ok_or_else(|| {
                        format!(
                            "audit.file: {shown}: its last line is not a meshgate audit event; \
                             move the file away or name another"
                        )
                    })?;
                    resumed = Some((chain, path.to_path_buf()));
                }
                Ok(Tail::Torn(previous)) => {
                    // A write cut short (crash, full disk): start a new file so
                    // the torn line stays where verification will report it.
                    tracing::error!(
                        file = %shown,
                        "audit file ends in an incomplete line; rotating it out"
                    );
                    // Rotated out below: the line is in FILE.1 then. A file
                    // of one torn line goes on from the file rotated before
                    // it (FILE.2 then), as an empty one would.
                    resumed = match previous.as_deref() {
                        Some(line) => {
                            let chain = chain_of(line).ok_or_else(|| {
                                format!(
                                    "audit.file: {shown}: its last complete line is not a \
                                     meshgate audit event; move the file away or name another"
                                )
                            })?;
                            Some((chain, rotated_name(path)))
                        }
                        None => rotated_head(path).map(|c| (c, rotated_nth(path, 2))),
                    };
                    rotate_first = true;
                }
            }
        }
        if resumed.is_none() && !rotate_first {
            // An empty or missing file just after a rotation: the chain
            // goes on from the end of the file rotated before it.
            resumed = rotated_head(path).map(|c| (c, rotated_name(path)));
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

    pub(super) fn rotate(&mut self) -> io::Result<()> {
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

/// What [`FileSink::open`] would fail on, changing nothing in the trail:
/// an existing file opens for appending and ends in an audit event (or a
/// torn line, which `run` rotates out); otherwise its directory exists and
/// a file can be made in it (one is made and removed at once).
pub(super) fn check_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let fail = |e: &dyn std::fmt::Display| format!("audit.file: {shown}: {e}");
    match OpenOptions::new().read(true).append(true).open(path) {
        Ok(mut f) => match last_line(&mut f).map_err(|e| fail(&e))? {
            Tail::Complete(line) if chain_of(&line).is_none() => Err(fail(
                &"its last line is not a meshgate audit event; move the file away or name another",
            )),
            Tail::Torn(Some(line)) if chain_of(&line).is_none() => Err(fail(
                &"its last complete line is not a meshgate audit event; move the file away or name another",
            )),
            _ => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(fail(&format!("directory {} does not exist", dir.display())));
            }
            let probe = dir.join(format!(".meshgate-validate-{}", std::process::id()));
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map_err(|e| fail(&format!("cannot create a file in {}: {e}", dir.display())))?;
            std::fs::remove_file(&probe).map_err(|e| fail(&e))
        }
        Err(e) => Err(fail(&e)),
    }
}

/// The chain at the end of FILE.1, if it ends in an audit event (or in a
/// torn line after one: a torn file rotated out just before a stop).
fn rotated_head(path: &Path) -> Option<ChainState> {
    let mut f = File::open(rotated_name(path)).ok()?;
    match last_line(&mut f).ok()? {
        Tail::Complete(line) => chain_of(&line),
        Tail::Torn(previous) => previous.as_deref().and_then(chain_of),
        Tail::Empty => None,
    }
}

/// FILE.1, the newest file rotated out of FILE.
fn rotated_name(path: &Path) -> PathBuf {
    rotated_nth(path, 1)
}

/// FILE.N.
fn rotated_nth(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

pub(super) fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// FILE -> FILE.1 -> ... -> FILE.retain (the oldest is removed).
pub(super) fn rotate_files(path: &Path, retain: usize) -> io::Result<()> {
    let numbered = |n: usize| rotated_nth(path, n);
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

pub(super) enum Tail {
    Empty,
    Complete(Vec<u8>),
    /// The file does not end in a newline; the last complete line, if any.
    Torn(Option<Vec<u8>>),
}

/// How much of a file's end [`last_line`] reads to find its last line:
/// events are far smaller (a few hundred bytes; their longest values, the
/// path and the user, come from request headers, 16 KiB in all by default:
/// `limits.max_header_bytes`). A longer last line is not taken as ours:
/// the sidecar refuses to start on the file. Not a cap on what is written.
pub(super) const RESUME_WINDOW: u64 = 1024 * 1024;

/// The last line of a file, read from its end.
pub(super) fn last_line(f: &mut File) -> io::Result<Tail> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let window = len.min(RESUME_WINDOW);
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
pub(super) fn chain_of(line: &[u8]) -> Option<ChainState> {
    let parsed = parse_line(line).ok()?;
    Some(ChainState {
        next_seq: parsed.seq.checked_add(1)?,
        prev: parsed.chain,
    })
}

pub(super) struct Writer {
    pub(super) sink: Sink,
    pub(super) chain: ChainState,
    /// The next line is the first of its file (or of the stream).
    pub(super) start_of_file: bool,
    /// Lines chained but not yet written, and where each ends.
    pub(super) pending: Vec<u8>,
    pub(super) ends: Vec<(usize, LineKind)>,
    pub(super) line: Vec<u8>,
    pub(super) node: Arc<str>,
    /// What every request's line ends with: its node and pod members.
    pub(super) line_end: Vec<u8>,
    pub(super) metrics: AuditMetrics,
    pub(super) mode: FullMode,
    pub(super) unrecorded_drops: Arc<AtomicU64>,
    pub(super) last_error_log: Option<Instant>,
    pub(super) flush_interval: Duration,
    /// The head published outside the trail, moved once what it names
    /// is on disk.
    pub(super) head: HeadCell,
    /// The head written but not yet synced: (seq, chain).
    pub(super) unsynced: Option<(u64, String)>,
    /// A sync failed: the head is not moved again by this process.
    pub(super) head_frozen: bool,
    pub(super) last_sync: Instant,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum LineKind {
    Request,
    /// A `dropped` record.
    Dropped,
}

/// Write what is pending once this much has gathered, even mid-burst.
pub(super) const BATCH_BYTES: usize = 256 * 1024;

/// A file sink is synced at least this often under load: the head never
/// names a line a crash of the node could still take away.
pub(super) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// And when the writer finds nothing more to write, but not sooner than
/// this after the last sync (a sync per batch would cost a busy node
/// hundreds a second).
pub(super) const SYNC_GAP: Duration = Duration::from_millis(50);

impl Writer {
    pub(super) fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let msg = match rx.try_recv() {
                Ok(msg) => msg,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                // Nothing to write: what was written goes to disk first
                // (once SYNC_GAP has passed; until then new events are
                // still written every `flush_interval`), then the writer
                // waits.
                Err(mpsc::error::TryRecvError::Empty) if self.unsynced.is_some() => {
                    let since = self.last_sync.elapsed();
                    if since < SYNC_GAP {
                        let step = self.flush_interval.max(Duration::from_millis(1));
                        std::thread::sleep(step.min(SYNC_GAP - since));
                    } else {
                        self.sync();
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                },
            };
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
            if !acks.is_empty() {
                self.sync();
            }
            for ack in acks {
                let _ = ack.send(());
            }
            // Waking this thread per event costs the request threads more
            // than the event itself: under load, let the next batch gather.
            // (An idle writer, everything synced, waits in `blocking_recv`:
            // the first event wakes it at once.)
            if caught_up && !self.flush_interval.is_zero() {
                std::thread::sleep(self.flush_interval);
            }
            if self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
        }
        self.record_drops();
        self.write_pending();
        self.sync();
        // The last head of this process, on the log stream too.
        self.head.checkpoint();
    }

    /// Syncs a file sink's data to disk, then publishes the head of what
    /// it holds. After a failed sync nothing written since the last good
    /// one can be taken as on disk (Linux may drop the pages and report the
    /// next sync clean): the head stays where it is until a restart, which
    /// resumes from what the file really holds.
    pub(super) fn sync(&mut self) {
        let Some((seq, hash)) = self.unsynced.take() else {
            return;
        };
        if let Sink::File(f) = &self.sink {
            if let Err(e) = f.file.sync_data() {
                self.metrics.write_errors.inc();
                self.head_frozen = true;
                tracing::error!(
                    error = %e,
                    head = ?self.head.get().map(|h| h.seq),
                    "AUDIT SYNC FAILED: lines written since the last sync may not be on disk; \
                     the published head stays where it is until a restart"
                );
                return;
            }
        }
        self.last_sync = Instant::now();
        self.head.moved(seq, &hash);
    }

    pub(super) fn take(&mut self, msg: Msg, acks: &mut Vec<std::sync::mpsc::SyncSender<()>>) {
        match msg {
            Msg::Flush(ack) => acks.push(ack),
            Msg::Request(members) => {
                self.record_drops();
                self.append(Line::Request(&members), LineKind::Request);
            }
            Msg::Unwritable(e) => {
                self.metrics.dropped.inc();
                self.unrecorded_drops.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot write an audit line; counted as dropped");
            }
        }
    }

    /// Chains a `dropped` record for the events lost since the last one.
    pub(super) fn record_drops(&mut self) {
        let lost = self.unrecorded_drops.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.append(Line::Dropped(lost), LineKind::Dropped);
        }
    }

    /// Chains one record and appends its line to what is pending.
    pub(super) fn append(&mut self, record: Line<'_>, kind: LineKind) {
        if let Sink::File(f) = &self.sink {
            let would_be = f.size + self.pending.len() as u64;
            if would_be >= f.max_bytes {
                self.write_pending();
                // The file rotated out is whole on disk first.
                self.sync();
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
            Line::Request(members) => write_line_start(&mut self.line, seq, prev).map(|()| {
                self.line.extend_from_slice(members);
                self.line.extend_from_slice(&self.line_end);
            }),
            Line::Dropped(count) => write_dropped(&mut self.line, seq, prev, count, &self.node),
        };
        if let Err(e) = written {
            // Only a clock outside 1970..9999 gets here, in a `dropped`
            // line's time (a request's members, the time among them, were
            // written on its thread: `Msg::Unwritable`); the loss is still
            // recorded, never silent.
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
    pub(super) fn write_pending(&mut self) {
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
        if !self.pending.is_empty() && !self.head_frozen {
            self.unsynced = Some((
                self.chain.next_seq.saturating_sub(1),
                self.chain.prev.clone(),
            ));
            // A pipe or terminal has nothing to sync.
            if matches!(self.sink, Sink::Stdout(_)) {
                self.sync();
            }
        }
        self.pending.clear();
        self.ends.clear();
    }
}
