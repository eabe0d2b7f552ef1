//! What a hidden value becomes: `redact`'s placeholders, and the methods
//! that read the whole value (`hash`, `last4`, `year`).

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
    let text = string_value(raw);
    match mask {
        Mask::Omit | Mask::Null => Some(b"null".to_vec()),
        Mask::Redact => Some(placeholder(raw.first().copied().unwrap_or(b'n')).to_vec()),
        Mask::Hash => {
            // A string is keyed by its text, so that escapes do not matter.
            let tag = hmac::sign(key?, text.as_deref().map_or(raw, str::as_bytes));
            let mut out = String::with_capacity(HASH_PREFIX.len() + 66);
            out.push('"');
            out.push_str(HASH_PREFIX);
            out.push_str(&crate::base::hex::hex(tag.as_ref()));
            out.push('"');
            Some(out.into_bytes())
        }
        Mask::Last4 => {
            let digits = match (&text, raw.first()) {
                (Some(t), _) => t.clone(),
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

/// A JSON string's text, or `None` for another value.
fn string_value(raw: &[u8]) -> Option<String> {
    if raw.first() != Some(&b'"') {
        return None;
    }
    serde_json::from_slice(raw).ok()
}
