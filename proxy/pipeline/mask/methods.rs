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
/// `mask`; `key` is the mesh's hash key. `None`: it cannot be made (no
/// key for `hash`).
pub fn replace(mask: Mask, raw: &[u8], key: Option<&hmac::Key>) -> Option<Vec<u8>> {
    match mask {
        Mask::Omit | Mask::Null => Some(b"null".to_vec()),
        Mask::Redact => Some(placeholder(raw.first().copied().unwrap_or(b'n')).to_vec()),
        Mask::Hash => {
            // A string is keyed by its text, so that escapes do not matter.
            let text = string_value(raw);
            let tag = hmac::sign(key?, text.as_deref().map_or(raw, str::as_bytes));
            let tag = tag.as_ref();
            let mut out = Vec::with_capacity(HASH_PREFIX.len() + 2 * tag.len() + 2);
            out.push(b'"');
            out.extend_from_slice(HASH_PREFIX.as_bytes());
            let at = out.len();
            out.resize(at + 2 * tag.len(), 0);
            crate::base::hex::hex_into(tag, &mut out[at..]);
            out.push(b'"');
            Some(out)
        }
        Mask::Last4 => {
            let text = string_value(raw);
            let digits = match (&text, raw.first()) {
                (Some(t), _) => t.to_string(),
                (None, Some(b'-' | b'0'..=b'9')) => String::from_utf8_lossy(raw).into_owned(),
                _ => return Some(placeholder(raw.first().copied().unwrap_or(b'n')).to_vec()),
            };
            let n = digits.chars().count();
            let shown: String = digits
                .chars()
                .enumerate()
                .map(|(i, c)| if n > 4 && i >= n - 4 { c } else { '*' })
                .collect();
            serde_json::to_vec(&shown).ok()
        }
        Mask::Year => {
            let text = string_value(raw);
            let year = text.as_deref().and_then(|t| {
                let y = t.get(..4)?;
                let dated = y.bytes().all(|b| b.is_ascii_digit())
                    && matches!(t.as_bytes().get(4), None | Some(b'-'));
                dated.then(|| y.to_string())
            });
            match year {
                Some(y) => serde_json::to_vec(&y).ok(),
                None => Some(placeholder(raw.first().copied().unwrap_or(b'n')).to_vec()),
            }
        }
    }
}

/// A JSON string's text, or `None` for another value (or one that is not
/// valid). Without a copy when it has no escape (most values).
fn string_value(raw: &[u8]) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // What JSON lets stand in a string as it is.
    if inner.iter().all(|&b| b != b'\\' && b != b'"' && b >= 0x20) {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}
