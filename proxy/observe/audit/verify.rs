//! `meshgate audit verify`: the chain of audit files checked line by line.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

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
    /// The chain of the last line of each watched sequence number.
    pub(super) watched: Vec<(u64, Option<String>)>,
}

/// The first break in the chain: `file:line: message`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ChainBreak {
    pub file: String,
    pub line: usize,
    pub message: String,
}

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
    /// The line at the expected sequence number is not the one published.
    #[error(
        "seq {seq} has hash {found}, expected {expected} \
         (the trail was cut and written on, or rewritten)"
    )]
    Differs {
        seq: u64,
        found: String,
        expected: String,
    },
}

/// Checks files given oldest first (FILE.N .. FILE.1 FILE).
pub fn verify(files: &[PathBuf]) -> Result<Verified, ChainBreak> {
    verify_watching(files, Vec::new())
}

/// [`verify`], then the trail against heads the sidecar published: it must
/// reach each one's sequence number, and hold the same chain there. The
/// head just before the first line is checked against that line's `prev`.
/// A head older still was rotated away: it is passed over when a newer
/// head with a hash is checked (that one vouches for every line before
/// it), and refused when it is the newest ([`VerifyError::NotCovered`]).
/// A head given by its number alone is checked for its number.
pub fn verify_against(files: &[PathBuf], anchors: &[Anchor]) -> Result<Verified, VerifyError> {
    let watch = anchors.iter().map(|a| (a.seq, None)).collect();
    let v = verify_watching(files, watch)?;
    let newest_hashed = anchors
        .iter()
        .filter(|a| a.hash.is_some())
        .map(|a| a.seq)
        .max();
    for a in anchors {
        let Some(last) = v.last_seq else {
            return Err(VerifyError::Empty { expected: a.seq });
        };
        if last < a.seq {
            return Err(VerifyError::Short {
                last,
                expected: a.seq,
            });
        }
        let Some(expected) = &a.hash else {
            continue;
        };
        let found = v
            .watched
            .iter()
            .find(|(s, _)| *s == a.seq)
            .and_then(|(_, c)| c.as_ref())
            .or_else(|| {
                let before_first = v.first_seq.and_then(|f| f.checked_sub(1));
                v.first_prev
                    .as_ref()
                    .filter(|_| before_first == Some(a.seq))
            });
        match found {
            Some(found) if found != expected => {
                return Err(VerifyError::Differs {
                    seq: a.seq,
                    found: found.clone(),
                    expected: expected.clone(),
                });
            }
            Some(_) => {}
            None if Some(a.seq) == newest_hashed => {
                return Err(VerifyError::NotCovered {
                    seq: a.seq,
                    first: v.first_seq.unwrap_or(0),
                });
            }
            None => {}
        }
    }
    Ok(v)
}

fn verify_watching(
    files: &[PathBuf],
    watched: Vec<(u64, Option<String>)>,
) -> Result<Verified, ChainBreak> {
    let mut state: Option<ChainState> = None;
    let mut out = Verified {
        events: 0,
        first_seq: None,
        first_prev: None,
        last_seq: None,
        restarts: 0,
        dropped: 0,
        torn: Vec::new(),
        watched,
    };
    for (i, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| ChainBreak {
            file: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let newest = i + 1 == files.len();
        verify_file(&name, &text, newest, &mut state, &mut out)?;
    }
    Ok(out)
}

/// The lines of one file, continuing the chain of the files before it.
/// A torn last line is a break in the newest file; in an older one it is
/// the mark of a crash: a later line, if any, must go on from the last
/// complete line before it (a fragment that reads as an event must have
/// the number that line takes). With no later line (the sidecar restarted
/// and has written nothing yet) it ends the trail, where only a head held
/// outside can tell a crash from a cut, as for any last line.
fn verify_file(
    name: &str,
    text: &[u8],
    newest: bool,
    state: &mut Option<ChainState>,
    out: &mut Verified,
) -> Result<(), ChainBreak> {
    if text.is_empty() {
        // A fresh file (just rotated, or nothing written yet).
        return Ok(());
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
        let checked = if !complete && n == count {
            if !newest {
                match (state.as_ref().map(|s| s.next_seq), parse_line(raw)) {
                    (Some(expected), Ok(p)) if expected != p.seq => Err(format!(
                        "a torn last line numbered {} where {expected} was expected",
                        p.seq
                    )),
                    _ => {
                        out.torn.push(format!("{name}:{n}"));
                        continue;
                    }
                }
            } else {
                Err("incomplete last line (a write cut short, or the line was edited)".into())
            }
        } else {
            verify_line(raw, n, &lines[n..count], &mut seen, state, out)
        };
        checked.map_err(|message| ChainBreak {
            file: name.to_string(),
            line: n,
            message,
        })?;
    }
    Ok(())
}

/// Line `n` of a file (`later`: the lines after it): it links to the line
/// before and its chain covers it; counted in `out`.
fn verify_line(
    raw: &[u8],
    n: usize,
    later: &[&[u8]],
    seen: &mut HashMap<u64, usize>,
    state: &mut Option<ChainState>,
    out: &mut Verified,
) -> Result<(), String> {
    let parsed = parse_line(raw)
        .map_err(|e| format!("not a meshgate audit event ({e}): edited or inserted"))?;
    let body =
        chained_bytes(raw).ok_or("the chain field is missing or malformed: edited or inserted")?;
    let expected_seq = state.as_ref().map(|s| s.next_seq);
    let prev = link(&parsed, state.as_ref(), n, out)?;
    let computed = chain_hash(&prev, &body);
    let restart = parsed.prev.as_deref() == Some(GENESIS) && parsed.seq == 0 && state.is_some();
    if computed != parsed.chain {
        return Err(explain(&parsed, expected_seq, seen, later));
    }
    if let Some(e) = expected_seq {
        if parsed.seq != e && !restart {
            return Err(explain(&parsed, expected_seq, seen, later));
        }
    }
    // No line can follow the largest sequence number: the writer
    // never reaches it, so the line was made by hand.
    let next_seq = parsed.seq.checked_add(1).ok_or_else(|| {
        format!(
            "seq {} is the largest there is: not written by meshgate",
            parsed.seq
        )
    })?;
    if parsed.kind.as_deref() == Some("dropped") {
        // Counts that no longer fit say "at least this many".
        out.dropped = out.dropped.saturating_add(parsed.count.unwrap_or(0));
    } else {
        out.events += 1;
    }
    for (seq, chain) in out.watched.iter_mut() {
        if *seq == parsed.seq {
            *chain = Some(parsed.chain.clone());
        }
    }
    if out.first_seq.is_none() {
        out.first_seq = Some(parsed.seq);
        out.first_prev = parsed.prev.clone();
    }
    out.last_seq = Some(parsed.seq);
    seen.insert(parsed.seq, n);
    *state = Some(ChainState {
        next_seq,
        prev: parsed.chain,
    });
    Ok(())
}

/// The chain value line `n` continues: its own `prev` where the chain
/// starts (or starts afresh, counted in `out`), else the line before's.
fn link(
    parsed: &ParsedLine,
    state: Option<&ChainState>,
    n: usize,
    out: &mut Verified,
) -> Result<String, String> {
    match (&parsed.prev, state) {
        (Some(p), None) => Ok(p.clone()),
        (None, None) => {
            Err("the file starts mid-chain (no `prev`): lines before it were deleted".into())
        }
        (Some(p), Some(s)) if *p == s.prev => Ok(s.prev.clone()),
        (Some(p), Some(_)) if p == GENESIS && parsed.seq == 0 => {
            out.restarts += 1;
            Ok(p.clone())
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
        (None, Some(s)) => Ok(s.prev.clone()),
    }
}

/// Why a line does not chain: from its sequence number and the lines around it.
pub(super) fn explain(
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
