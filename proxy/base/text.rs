//! Text read from input files, made safe to show: on a terminal, in a CI
//! log (where a line of its own can be a workflow command such as GitHub's
//! `::error file=…::`), in a YAML comment.

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

/// `s` as printable ASCII: every other character, quotes and the backslash
/// escaped as Rust writes them (`\n`, `\u{e9}`, `\\`). For text put where
/// any line break ends it, such as a YAML comment (YAML parsers also break
/// lines at NEL, U+2028 and U+2029).
pub fn ascii(s: &str) -> String {
    s.chars().flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_text_keeps_to_its_line_and_ascii_text_to_printable_ascii() {
        let forged = "x\n::error file=finance/ledger.odcs.yaml::forged\u{2028}\u{202E}y";
        let s = shown(forged);
        assert_eq!(
            s,
            "x\\n::error file=finance/ledger.odcs.yaml::forged\\u{2028}\\u{202e}y"
        );
        assert!(matches!(shown("sales.orders é"), Cow::Borrowed(_)));
        assert!(shown("\u{85}").lines().count() == 1 && !shown("\u{85}").contains('\u{85}'));
        let a = ascii("1.0\n---\ngroups: é {{ \\");
        assert_eq!(a, "1.0\\n---\\ngroups: \\u{e9} {{ \\\\");
        assert!(a.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
}
