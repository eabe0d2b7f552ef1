//! `meshgate audit verify`: the chain of audit files checked line by line.
//! Each file is read as a stream of lines, each at most [`MAX_LINE_BYTES`]:
//! only regular files (a FIFO, `/dev/zero` or a directory is refused, also
//! behind a symlink), each once, and no further than its length when opened.

use serde::Deserialize;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cover::Cover;
use super::*;

/// What a line of an audit file says about the chain.
#[derive(Debug, Deserialize)]
pub(super) struct ParsedLine {
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) prev: Option<String>,
    pub(super) chain: String,
    #[serde(default, rename = "type")]
    pub(super) kind: Option<String>,
    /// Events a `dropped` record stands for.
    #[serde(default)]
    pub(super) count: Option<u64>,
}

pub(super) fn parse_line(line: &[u8]) -> Result<ParsedLine, String> {
    serde_json::from_slice::<ParsedLine>(line).map_err(|e| e.to_string())
}

/// The bytes a line's chain covers: the line up to its `,"chain":"…"` field,
/// closed with `}`. `"` never appears unescaped inside a JSON string, so the
/// last such field is the real one.
pub(super) fn chained_bytes(line: &[u8]) -> Option<Vec<u8>> {
    pub(super) const FIELD: &[u8] = b",\"chain\":\"";
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

/// The longest line verify reads, its line feed left out. The writer has
/// no cap of its own on an event, but it resumes its chain from a file's
/// last line read in a window of 1 MiB (`RESUME_WINDOW`): a longer line
/// would make the sidecar refuse to start on the file, so no trail it can
/// go on with holds one. Four times that: a longer line is refused at its
/// `FILE:LINE` once this much of it was read, never read whole.
pub const MAX_LINE_BYTES: u64 = 4 * RESUME_WINDOW;

/// How the trail may have been made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// A chain that starts again (`seq` 0 from the all-zero `prev`) is
    /// accepted and counted: the stdout of several processes, one after
    /// the other. A file sink never starts again (each start goes on from
    /// the last line the files hold), so without this a restart is a break.
    pub allow_restarts: bool,
}

/// A verified sequence of audit files.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub first_seq: Option<u64>,
    /// The `prev` of the first line: the chain of the line before it, in
    /// a file rotated away (or the genesis value).
    pub(super) first_prev: Option<String>,
    pub last_seq: Option<u64>,
    /// Chains started afresh (a process restart writing to stdout).
    pub restarts: u64,
    /// `dropped` records: events the sidecar reported lost.
    pub dropped: u64,
    /// `FILE:LINE` of each torn last line of a file the next file goes on
    /// from (a write cut short by a crash, rotated out at the restart).
    pub torn: Vec<String>,
    /// Lines no expected head vouches for ([`verify_against`]): in each
    /// chain, those after the last head found in it (all of a chain none
    /// is found in). The first [`UNCOVERED_LISTED`]; the rest counted in
    /// `uncovered_left_off`.
    pub uncovered: Vec<Uncovered>,
    pub uncovered_left_off: u64,
}

/// How many spans of lines no head covers are listed.
pub const UNCOVERED_LISTED: usize = 8;

/// Consecutive lines of one chain that no expected head vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncovered {
    /// `FILE:LINE` of the first and the last of them.
    pub from: String,
    pub to: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The chain they are in: 1 for the trail's first, one more after each
    /// restart.
    pub chain: u64,
}

/// The first break in the chain: `file:line: message` (`file: message`
/// for what is wrong with the file itself).
#[derive(Debug, PartialEq, Eq)]
pub struct ChainBreak {
    pub file: String,
    /// 1 for the first line; 0 when the file itself is refused.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            n => write!(f, "{}:{n}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ChainBreak {}

/// Why a trail does not reach, or does not agree with, an expected head.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Chain(#[from] ChainBreak),
    /// The trail ends before the expected head: its tail was cut.
    #[error("trail ends at seq {last}, expected at least {expected} (the tail was cut?)")]
    Short { last: u64, expected: u64 },
    /// No line at all, where a head was expected.
    #[error("trail holds no event, expected at least seq {expected} (the tail was cut?)")]
    Empty { expected: u64 },
    /// The newest expected head lies before the trail's first line: its
    /// line was rotated away, and nothing in these files can show that
    /// they continue it (a wholly forged trail numbered above it would
    /// pass a check of the number alone).
    #[error(
        "seq {seq} is before the trail's first line (seq {first}): its line is in a \
         rotated file; verify with the rotated files too (FILE.N .. FILE.1 FILE), \
         or against a later head"
    )]
    NotCovered { seq: u64, first: u64 },
    /// The line at the expected sequence number (`at`, `FILE:LINE`) is not
    /// the one published, in any chain of the trail.
    #[error(
        "{at}: seq {seq} has hash {found}, expected {expected} \
         (the trail was cut and written on, or rewritten)"
    )]
    Differs {
        at: String,
        seq: u64,
        found: String,
        expected: String,
    },
    /// The chains of a trail that restarts that hold the head's `seq` are
    /// other heads' chains: the head's own is cut before it, rewritten, or
    /// in a file not given.
    #[error(
        "seq {seq} with hash {expected} is in none of the trail's {chains} chains (each that \
         reaches seq {seq} holds another head): its chain was cut or rewritten, or its file \
         not given"
    )]
    InNoChain {
        seq: u64,
        expected: String,
        chains: u64,
    },
}

/// Checks files given oldest first (FILE.N .. FILE.1 FILE): one chain, as
/// a file sink writes it.
pub fn verify(files: &[PathBuf]) -> Result<Verified, ChainBreak> {
    verify_with(files, Options::default())
}

/// [`verify`], with restarts accepted when `options` says so.
pub fn verify_with(files: &[PathBuf], options: Options) -> Result<Verified, ChainBreak> {
    let mut walk = Walk::new(options, Cover::new(&[]));
    walk.files(files)?;
    Ok(walk.out)
}

/// [`verify_with`], then the trail against heads the sidecar published.
/// A head with a hash must be found: the line at its `seq`, in one of the
/// trail's chains, holds its hash (a trail of several processes' stdout
/// holds one chain per process, each from seq 0). It vouches for the lines
/// of that chain up to it, not for another chain's: the lines no head
/// covers are listed in [`Verified::uncovered`]. The head just before the
/// first line is checked against that line's `prev`. A head older still was
/// rotated away: it is passed over when a newer head with a hash is found
/// in the same chain, and refused otherwise ([`VerifyError::NotCovered`]).
/// A head given by its number alone is checked for its number: the
/// trail's last chain must reach it.
pub fn verify_against(
    files: &[PathBuf],
    anchors: &[Anchor],
    options: Options,
) -> Result<Verified, VerifyError> {
    let mut walk = Walk::new(options, Cover::new(anchors));
    walk.files(files)?;
    let (uncovered, left_off) = walk.cover.finish(&walk.names);
    walk.cover.check(&walk.out, &walk.names)?;
    walk.out.uncovered = uncovered;
    walk.out.uncovered_left_off = left_off;
    Ok(walk.out)
}

/// Where a line is: the index of its file among those given, and its
/// number there (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) file: usize,
    pub(super) line: usize,
}

impl Place {
    pub(super) fn show(self, names: &[String]) -> String {
        let name = names.get(self.file).map_or("?", String::as_str);
        format!("{name}:{}", self.line)
    }
}

/// A break at a place (not always the line being read: a torn line
/// before it may be the one at fault).
struct Break {
    place: Place,
    message: String,
}

/// A whole event that ended an older file without its line feed.
struct TornEvent {
    seq: u64,
    chain: String,
    place: Place,
}

/// A line that chains on: what it says, and whether it starts a new chain.
struct Checked {
    parsed: ParsedLine,
    restart: bool,
}

/// The state of a verification, file after file.
struct Walk<'a> {
    options: Options,
    state: Option<ChainState>,
    out: Verified,
    /// The files given so far, as named.
    names: Vec<String>,
    /// The device and inode of each file read: a file given twice (by two
    /// names, a symlink, a hard link) would pass as a restart or a copy.
    ids: HashMap<(u64, u64), usize>,
    /// The start of each chain (its first line's chain, cut to 128 bits),
    /// where restarts are allowed: a chain copied in twice is refused.
    starts: HashMap<u128, Place>,
    torn_event: Option<TornEvent>,
    cover: Cover<'a>,
}

impl<'a> Walk<'a> {
    fn new(options: Options, cover: Cover<'a>) -> Walk<'a> {
        Walk {
            options,
            state: None,
            out: Verified {
                events: 0,
                first_seq: None,
                first_prev: None,
                last_seq: None,
                restarts: 0,
                dropped: 0,
                torn: Vec::new(),
                uncovered: Vec::new(),
                uncovered_left_off: 0,
            },
            names: Vec::new(),
            ids: HashMap::new(),
            starts: HashMap::new(),
            torn_event: None,
            cover,
        }
    }

    fn files(&mut self, files: &[PathBuf]) -> Result<(), ChainBreak> {
        for (i, path) in files.iter().enumerate() {
            self.names.push(path.display().to_string());
            let refused = |message: String| ChainBreak {
                file: path.display().to_string(),
                line: 0,
                message,
            };
            let (file, meta) = crate::base::paths::open_regular(path)
                .map_err(|e| refused(format!("cannot read: {e}")))?;
            if let Some(first) = self.ids.insert((meta.dev(), meta.ino()), i) {
                return Err(refused(format!(
                    "is the same file as {} (given twice, or a link to it): \
                     each file of a trail is given once",
                    self.names[first]
                )));
            }
            // No further than its length now: a file written on meanwhile
            // (the live trail) is read as it was, not chased.
            let mut lines = BufReader::with_capacity(64 * 1024, file.take(meta.len()));
            let newest = i + 1 == files.len();
            self.file(i, path, &mut lines, newest)
                .map_err(|b| ChainBreak {
                    file: self.names[b.place.file].clone(),
                    line: b.place.line,
                    message: b.message,
                })?;
        }
        Ok(())
    }

    /// The lines of one file, continuing the chain of the files before it.
    /// A torn last line is a break in the newest file; in an older one it
    /// is the mark of a crash (see [`Walk::torn`]).
    fn file(
        &mut self,
        index: usize,
        path: &Path,
        lines: &mut dyn BufRead,
        newest: bool,
    ) -> Result<(), Break> {
        let mut raw = Vec::new();
        for n in 1.. {
            let place = Place {
                file: index,
                line: n,
            };
            raw.clear();
            let read = next_line(lines, &mut raw).map_err(|e| Break {
                place,
                message: format!("cannot read: {e}"),
            })?;
            if read == 0 {
                break;
            }
            if raw.last() == Some(&b'\n') {
                raw.pop();
                self.line(&raw, place, path, lines)?;
            } else if raw.len() as u64 > MAX_LINE_BYTES {
                return Err(Break {
                    place,
                    message: format!(
                        "a line longer than {MAX_LINE_BYTES} bytes ({} MiB): \
                         not one meshgate wrote",
                        MAX_LINE_BYTES / (1024 * 1024)
                    ),
                });
            } else if newest {
                return Err(Break {
                    place,
                    message: "incomplete last line (a write cut short, or the line was edited)"
                        .into(),
                });
            } else {
                self.torn(&raw, place, path)?;
            }
        }
        Ok(())
    }

    /// A complete line: it links to the line before and its chain covers it.
    fn line(
        &mut self,
        raw: &[u8],
        place: Place,
        path: &Path,
        rest: &mut dyn BufRead,
    ) -> Result<(), Break> {
        let torn = self.torn_event.take();
        match self.check(raw, place.line, path, rest) {
            Ok(c) => self.commit(c, place),
            Err(message) => match torn.filter(|t| goes_on_from(raw, t)) {
                Some(t) => Err(Break {
                    place: t.place,
                    message: "a whole event without its line feed, and the next file goes \
                              on from it: the line feed was removed (after a crash the next \
                              file goes on from the line before a torn one)"
                        .into(),
                }),
                None => Err(Break { place, message }),
            },
        }
    }

    /// The last line of an older file, without its line feed. A fragment
    /// that does not read as an event is the mark of a crash: the later
    /// lines, if any, must go on from the last complete line before it.
    /// (With no later line it ends the trail, where only a head held outside
    /// can tell a crash from a cut, as for any last line.) A whole event
    /// (a crash can cut just its line feed) must chain on as any line does,
    /// and is not part of the chain either: the writer goes on from the
    /// line before it, numbering the next line as it was numbered.
    fn torn(&mut self, raw: &[u8], place: Place, path: &Path) -> Result<(), Break> {
        self.torn_event = None;
        if let Ok(p) = parse_line(raw) {
            if let Some(expected) = self.state.as_ref().map(|s| s.next_seq) {
                if p.seq != expected {
                    return Err(Break {
                        place,
                        message: format!(
                            "a torn last line numbered {} where {expected} was expected",
                            p.seq
                        ),
                    });
                }
            }
            let c = self
                .check(raw, place.line, path, &mut std::io::empty())
                .map_err(|message| Break { place, message })?;
            self.torn_event = Some(TornEvent {
                seq: c.parsed.seq,
                chain: c.parsed.chain,
                place,
            });
        }
        self.out.torn.push(place.show(&self.names));
        Ok(())
    }

    /// Line `n` of a file (`rest`: the lines after it) links to the line
    /// before, and its chain covers it.
    fn check(
        &self,
        raw: &[u8],
        n: usize,
        path: &Path,
        rest: &mut dyn BufRead,
    ) -> Result<Checked, String> {
        let parsed = parse_line(raw)
            .map_err(|e| format!("not a meshgate audit event ({e}): edited or inserted"))?;
        let body = chained_bytes(raw)
            .ok_or("the chain field is missing or malformed: edited or inserted")?;
        let expected_seq = self.state.as_ref().map(|s| s.next_seq);
        let (prev, restart) = link(&parsed, self.state.as_ref(), n, self.options)?;
        if chain_hash(&prev, &body) != parsed.chain {
            return Err(explain(&parsed, expected_seq, n, path, rest));
        }
        if let Some(e) = expected_seq {
            if parsed.seq != e && !restart {
                return Err(explain(&parsed, expected_seq, n, path, rest));
            }
        }
        // No line can follow the largest sequence number: the writer
        // never reaches it, so the line was made by hand.
        if parsed.seq == u64::MAX {
            return Err(format!(
                "seq {} is the largest there is: not written by meshgate",
                parsed.seq
            ));
        }
        Ok(Checked { parsed, restart })
    }

    /// Counts a line that chains on, and moves the chain to it.
    fn commit(&mut self, c: Checked, place: Place) -> Result<(), Break> {
        let p = c.parsed;
        if c.restart || self.state.is_none() {
            self.chain_starts(&p.chain, place)?;
        }
        if c.restart {
            self.out.restarts += 1;
        }
        if p.kind.as_deref() == Some("dropped") {
            // Counts that no longer fit say "at least this many".
            self.out.dropped = self.out.dropped.saturating_add(p.count.unwrap_or(0));
        } else {
            self.out.events += 1;
        }
        self.cover.line(place, p.seq, &p.chain, c.restart);
        if self.out.first_seq.is_none() {
            self.out.first_seq = Some(p.seq);
            self.out.first_prev = p.prev;
        }
        self.out.last_seq = Some(p.seq);
        self.state = Some(ChainState {
            next_seq: p.seq + 1,
            prev: p.chain,
        });
        Ok(())
    }

    /// A chain starts at `place` (the trail's first line, or a restart):
    /// where restarts are allowed, no other chain may start with the same
    /// line, as a copy of one process's stdout would.
    fn chain_starts(&mut self, chain: &str, place: Place) -> Result<(), Break> {
        if !self.options.allow_restarts {
            return Ok(());
        }
        let key = chain
            .get(..32)
            .and_then(|h| u128::from_str_radix(h, 16).ok())
            .unwrap_or_default();
        match self.starts.insert(key, place) {
            Some(first) => Err(Break {
                place,
                message: format!(
                    "this chain starts with the same line as the one at {}: \
                     a copy of it",
                    first.show(&self.names)
                ),
            }),
            None => Ok(()),
        }
    }
}

/// The next line of `lines` into `raw`, its line feed included, reading no
/// more than [`MAX_LINE_BYTES`] and one byte; the bytes read (0 at the end).
fn next_line(lines: &mut dyn BufRead, raw: &mut Vec<u8>) -> std::io::Result<usize> {
    lines.take(MAX_LINE_BYTES + 1).read_until(b'\n', raw)
}

/// Whether `raw` goes on from the torn event `t` (names it as its `prev`,
/// or chains from it).
fn goes_on_from(raw: &[u8], t: &TornEvent) -> bool {
    let Ok(p) = parse_line(raw) else {
        return false;
    };
    let chains = chained_bytes(raw).is_some_and(|body| chain_hash(&t.chain, &body) == p.chain);
    p.prev.as_deref() == Some(t.chain.as_str()) || (chains && p.seq == t.seq + 1)
}

/// The chain value line `n` continues: its own `prev` where the chain
/// starts (or starts afresh, where `options` allow it: then `true`), else
/// the line before's.
fn link(
    parsed: &ParsedLine,
    state: Option<&ChainState>,
    n: usize,
    options: Options,
) -> Result<(String, bool), String> {
    match (&parsed.prev, state) {
        (Some(p), None) => Ok((p.clone(), false)),
        (None, None) => {
            Err("the file starts mid-chain (no `prev`): lines before it were deleted".into())
        }
        (Some(p), Some(s)) if *p == s.prev => Ok((s.prev.clone(), false)),
        (Some(p), Some(s)) if p == GENESIS && parsed.seq == 0 => {
            if options.allow_restarts {
                return Ok((p.clone(), true));
            }
            Err(format!(
                "a new chain starts here (seq 0 from the all-zero `prev`) where seq {} was \
                 expected: a file sink never starts again (each start goes on from its last \
                 line), so lines before it were replaced, or files of two trails were given; \
                 the stdout of several processes does start again: verify it with \
                 --allow-restarts",
                s.next_seq
            ))
        }
        (Some(_), Some(s)) if n == 1 => Err(if parsed.seq > s.next_seq {
            format!(
                "starts at seq {} where {} was expected: the end of the \
                 previous file was cut, or a file is missing between them",
                parsed.seq, s.next_seq
            )
        } else {
            "does not continue the chain of the previous file: \
             they are out of order, or one was edited"
                .to_string()
        }),
        (Some(p), Some(s)) => Err(format!(
            "names prev {p} but the line before ends at {}: edited or inserted",
            s.prev
        )),
        (None, Some(_)) if n == 1 => Err(
            "the file starts without `prev`, which the writer names on the first line of \
             every file: lines before it were deleted, or the file was split by hand"
                .into(),
        ),
        (None, Some(s)) => Ok((s.prev.clone(), false)),
    }
}

/// Why line `n` of `path` does not chain: from its sequence number and the
/// lines around it (those before it read again, those after it from `rest`).
fn explain(
    parsed: &ParsedLine,
    expected: Option<u64>,
    n: usize,
    path: &Path,
    rest: &mut dyn BufRead,
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
    if let Some(at) = line_of_seq(path, n, parsed.seq) {
        return format!(
            "seq {} already appeared on line {at}: inserted or reordered",
            parsed.seq
        );
    }
    if parsed.seq > expected {
        if comes_later(rest, expected) {
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

/// The last of lines 1 to `before - 1` of `path` numbered `seq`.
fn line_of_seq(path: &Path, before: usize, seq: u64) -> Option<usize> {
    let (file, meta) = crate::base::paths::open_regular(path).ok()?;
    let mut lines = BufReader::new(file.take(meta.len()));
    let mut raw = Vec::new();
    let mut found = None;
    for n in 1..before {
        raw.clear();
        if next_line(&mut lines, &mut raw).ok()? == 0 {
            break;
        }
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        if parse_line(line).is_ok_and(|p| p.seq == seq) {
            found = Some(n);
        }
    }
    found
}

/// Whether a complete line of `rest` is numbered `seq`.
fn comes_later(rest: &mut dyn BufRead, seq: u64) -> bool {
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match next_line(rest, &mut raw) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let Some(line) = raw.strip_suffix(b"\n") else {
            return false;
        };
        if parse_line(line).is_ok_and(|p| p.seq == seq) {
            return true;
        }
    }
}
