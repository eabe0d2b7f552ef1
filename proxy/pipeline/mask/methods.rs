//! What a hidden value becomes: `redact`'s placeholders, and the methods
//! that read the whole value (`hash`, `last4`, `year`).

use std::borrow::Cow;

use aws_lc_rs::hmac;

use crate::decision::fields::Mask;

/// The prefix of a `hash`ed value.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// `redact`'s placeholder for a value that starts with `first`: of the
/// same JSON type.
pub fn placeholder(first: u8) -> &'static [u8] {
    match first {
        b'"' => b"\"***\"",
        b'{' => b"{}",
        b'[' => b"[]",
        b't' | b'f' => b"false",
        b'n' => b"null",
        _ => b"0",
    }
}

/// The replacement of a whole value (`raw`: its JSON text, valid) by
/// `mask`, appended to `out`; `unescaped`: the caller knows that `raw`, if
/// a string, holds no escape and no control character (were it wrong, an
/// escaped string would be read by its raw text: `a\u0040b` would not
/// hash as `a@b` does); `key` is the mesh's hash key. `None`: it cannot be
/// made (no key for `hash`), and the stream must be cut.
pub fn replace(
    mask: Mask,
    raw: &[u8],
    unescaped: bool,
    key: Option<&hmac::Key>,
    out: &mut Vec<u8>,
) -> Option<()> {
    let first = raw.first().copied().unwrap_or(b'n');
    match mask {
        Mask::Omit | Mask::Null => out.extend_from_slice(b"null"),
        Mask::Redact => out.extend_from_slice(placeholder(first)),
        Mask::Hash => {
            // A string is keyed by its text, so that escapes do not matter.
            let key = key?;
            let text = string_value(raw, unescaped);
            out.push(b'"');
            hash_into(key, text.as_deref().map_or(raw, str::as_bytes), out);
            out.push(b'"');
        }
        Mask::Last4 => match string_value(raw, unescaped) {
            Some(t) => last4_into(&t, out)?,
            // A number: its digits as sent.
            None if matches!(first, b'-' | b'0'..=b'9') => {
                last4_into(&String::from_utf8_lossy(raw), out)?;
            }
            None => out.extend_from_slice(placeholder(first)),
        },
        Mask::Year => match string_value(raw, unescaped).as_deref().and_then(year) {
            Some(y) => json_string(y, out)?,
            None => out.extend_from_slice(placeholder(first)),
        },
    }
    Some(())
}

/// `hash`: the pseudonym of `text` under `key` (the prefix and the hex
/// of its HMAC-SHA256), appended to `out`.
pub fn hash_into(key: &hmac::Key, text: &[u8], out: &mut Vec<u8>) {
    let tag = hmac::sign(key, text);
    let tag = tag.as_ref();
    out.extend_from_slice(HASH_PREFIX.as_bytes());
    let at = out.len();
    out.resize(at + 2 * tag.len(), 0);
    crate::base::hex::hex_into(tag, &mut out[at..]);
}

/// `last4`: every character but the last four replaced by `*` (all of
/// them when there are four or fewer).
pub fn last4(text: &str) -> String {
    let (masked, tail) = last4_parts(text);
    let mut shown = String::with_capacity(masked + tail.len());
    shown.extend(std::iter::repeat_n('*', masked));
    shown.push_str(tail);
    shown
}

/// How many characters `last4` hides, and the tail it shows.
fn last4_parts(text: &str) -> (usize, &str) {
    let n = text.chars().count();
    let masked = if n > 4 { n - 4 } else { n };
    let tail = text
        .char_indices()
        .nth(masked)
        .map_or("", |(at, _)| &text[at..]);
    (masked, tail)
}

/// `last4` of `text` as a JSON string, appended to `out`: the stars and
/// the tail written straight in when the tail needs no escape (most).
fn last4_into(text: &str, out: &mut Vec<u8>) -> Option<()> {
    let (masked, tail) = last4_parts(text);
    if !tail.bytes().all(plain) {
        return json_string(&last4(text), out);
    }
    out.push(b'"');
    out.resize(out.len() + masked, b'*');
    out.extend_from_slice(tail.as_bytes());
    out.push(b'"');
    Some(())
}

/// `year`: the year of a date or timestamp (`YYYY`, `YYYY-MM`,
/// `YYYY-MM-DD` alone or followed by `T` or a space and a time, or by a
/// zone: `Z`, `+01:00`, `-05:00`), or `None`
/// when the text is not one: digits that only begin like a year (a card
/// number written `1234-5678-…`) give nothing of themselves away.
pub fn year(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let two = |at: usize| (b[at] - b'0') * 10 + (b[at + 1] - b'0');
    if !digits(0..4) {
        return None;
    }
    let dated = match b.len() {
        4 => true,
        7 => b[4] == b'-' && digits(5..7) && (1..=12).contains(&two(5)),
        n if n >= 10 => {
            b[4] == b'-'
                && b[7] == b'-'
                && digits(5..7)
                && digits(8..10)
                && (1..=12).contains(&two(5))
                && (1..=31).contains(&two(8))
                && matches!(
                    b.get(10),
                    None | Some(b'T' | b't' | b' ' | b'Z' | b'z' | b'+' | b'-')
                )
        }
        _ => false,
    };
    dated.then(|| &text[..4])
}

/// `text` as a JSON string, appended to `out`.
fn json_string(text: &str, out: &mut Vec<u8>) -> Option<()> {
    if text.bytes().all(plain) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return Some(());
    }
    // Only the escapes need serde_json.
    serde_json::to_writer(out, text).ok()
}

/// A byte that stands in a JSON string as it is.
fn plain(b: u8) -> bool {
    b != b'\\' && b != b'"' && b >= 0x20
}

/// A JSON string's text, or `None` for another value (or one that is not
/// valid). Without a copy when it has no escape (most values; `unescaped`:
/// the caller knows it has none).
fn string_value(raw: &[u8], unescaped: bool) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // What JSON lets stand in a string as it is.
    debug_assert!(!unescaped || inner.iter().all(|&b| plain(b)));
    if unescaped || inner.iter().all(|&b| plain(b)) {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}
