//! Cedar policy text parsed in pieces of whole statements, each piece
//! remembered at its offset in the file.
//!
//! Why pieces: every Cedar policy keeps the text it was parsed from, and
//! Cedar's validator hashes and compares that whole text for each error it
//! collects. Parsed from one 400 KB file, 4,000 policies with an error each
//! took 6 s to validate (1,000: 0.3 s), a 4 MiB file minutes, and every
//! other domain's reload waited behind it. Parsed in pieces of about
//! [`PIECE`] bytes, an error costs its piece's length, not its file's.
//! A large text's pieces are also parsed on every CPU.

use std::str::FromStr;

use cedar_policy::PolicySet;

use super::depth::{joined, spawn_build};

/// Statements are parsed in pieces of at least this many bytes (the last
/// may be shorter, a single longer statement is a piece of its own).
pub(super) const PIECE: usize = 16 * 1024;

/// Policy text longer than this is parsed on several threads.
pub(super) const PARSE_PART: usize = 256 * 1024;

/// Statements parsed from one piece of a file.
pub(super) struct Piece {
    /// The byte offset of the piece in its file: Cedar's positions in the
    /// piece's policies are relative to it.
    pub(super) at: usize,
    pub(super) set: PolicySet,
}

/// Parses Cedar policy text in pieces of whole statements. Any error
/// parses the whole text again, so that errors are reported exactly as
/// Cedar reports them for the file (and a piece cut wrongly could not pass
/// unnoticed).
pub(super) fn parse_in_pieces(text: &str) -> Result<Vec<Piece>, Box<cedar_policy::ParseErrors>> {
    let whole = || {
        PolicySet::from_str(text)
            .map(|set| vec![Piece { at: 0, set }])
            .map_err(Box::new)
    };
    let cuts = statement_cuts(text, PIECE);
    if cuts.is_empty() {
        return whole();
    }
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for cut in cuts.into_iter().chain([text.len()]) {
        pieces.push((from, &text[from..cut]));
        from = cut;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = threads.min(text.len() / PARSE_PART + 1);
    let parse = |group: &[(usize, &str)]| -> Option<Vec<Piece>> {
        group
            .iter()
            .map(|&(at, piece)| PolicySet::from_str(piece).ok().map(|set| Piece { at, set }))
            .collect()
    };
    let parsed = if parts > 1 {
        let per_part = pieces.len().div_ceil(parts);
        std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .chunks(per_part)
                .map(|group| (group, spawn_build(scope, move || parse(group))))
                .collect();
            // A part whose thread did not start is parsed here.
            handles
                .into_iter()
                .map(|(group, h)| joined(h, "parsing").unwrap_or_else(|_| parse(group)))
                .collect::<Option<Vec<_>>>()
                .map(|groups| groups.into_iter().flatten().collect())
        })
    } else {
        parse(&pieces)
    };
    match parsed {
        Some(pieces) => Ok(pieces),
        None => whole(),
    }
}

/// Byte offsets that cut Cedar text into pieces of at least `step` bytes,
/// each just after a `;` that ends a statement: outside string literals and
/// `//` comments. Empty if the text has no statement end past `step`.
pub(super) fn statement_cuts(text: &str, step: usize) -> Vec<usize> {
    let step = step.max(1);
    let mut cuts = Vec::new();
    let (mut in_string, mut escaped, mut in_comment) = (false, false, false);
    let bytes = text.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_comment {
            // As Cedar's lexer: a comment ends at either line-break character.
            in_comment = b != b'\n' && b != b'\r';
        } else if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            in_comment = true;
        } else if b == b';' && i + 1 >= last + step && i + 1 < bytes.len() {
            last = i + 1;
            cuts.push(last);
        }
    }
    cuts
}
