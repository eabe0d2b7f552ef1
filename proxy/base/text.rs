//! Text read from input files, made safe to show: on a terminal, in a CI
//! log (where a line of its own can be a workflow command such as GitHub's
//! `::error file=…::`).

use std::borrow::Cow;

/// Whether `c` could make shown text start a line of its own or read in
/// another order than it is written: control characters (C0, DEL and C1,
/// NEL among them), the line and paragraph separators, byte-order mark, and
/// the bidirectional marks, embeddings, overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `s` with each [unsafe](is_unsafe) character escaped as Rust writes it
/// (`\n`, `\u{2028}`), the rest as it is: a message that quotes input stays
/// on its line.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_keeps_to_its_line() {
        let forged = "x\n::error file=finance/ledger.odcs.yaml::forged\u{2028}\u{202E}y";
        let s = shown(forged);
        assert_eq!(
            s,
            "x\\n::error file=finance/ledger.odcs.yaml::forged\\u{2028}\\u{202e}y"
        );
        assert!(matches!(shown("sales.orders é"), Cow::Borrowed(_)));
        assert!(shown("\u{85}").lines().count() == 1 && !shown("\u{85}").contains('\u{85}'));
    }
}
