//! Request path normalisation: the path that is authorised is the path the
//! upstream receives.
//!
//! Percent-decoding happens exactly once. Encoded separators and NUL (`%2F`,
//! `%5C`, `%00`), raw backslashes, control characters, `;` path parameters,
//! malformed escapes and bytes that are not UTF-8 (overlong encodings included)
//! are refused. Empty segments (`//`) and `.` are dropped, `..` removes the
//! previous segment and may not climb above the root. The result is matched
//! against routes as decoded text and forwarded re-encoded.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error("malformed percent-encoding")]
    BadEscape,
    #[error("encoded `/`, `\\` or NUL in path")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("control character in path")]
    Control,
    #[error("`;` path parameters are not accepted")]
    Semicolon,
    #[error("path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("`..` climbs above the root")]
    AboveRoot,
}

/// A normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// Decoded segments, none empty, `.` or `..`.
    pub segments: Vec<String>,
    /// Whether the original path ended in `/` (kept: `/a/` is not `/a`).
    pub trailing_slash: bool,
}

impl NormalPath {
    /// The decoded path, for matching and for policies (`context.path`).
    pub fn decoded(&self) -> String {
        let mut s = String::with_capacity(64);
        for seg in &self.segments {
            s.push('/');
            s.push_str(seg);
        }
        if self.segments.is_empty() || self.trailing_slash {
            s.push('/');
        }
        s
    }

    /// The path to send upstream: each segment percent-encoded where RFC 3986
    /// requires it, so the upstream decodes exactly what was authorised.
    pub fn encoded(&self) -> String {
        let mut s = String::with_capacity(64);
        for seg in &self.segments {
            s.push('/');
            for b in seg.bytes() {
                if is_pchar(b) {
                    s.push(b as char);
                } else {
                    let _ = write!(s, "%{b:02X}");
                }
            }
        }
        if self.segments.is_empty() || self.trailing_slash {
            s.push('/');
        }
        s
    }
}

/// RFC 3986 pchar less `%` (always encoded) and `;` (refused anyway).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises the path part of a request target (no query).
pub fn normalize(raw: &str) -> Result<NormalPath, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_seg in raw[1..].split('/') {
        let seg = decode_segment(raw_seg)?;
        trailing_slash = false;
        match seg.as_str() {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            _ => segments.push(seg),
        }
    }
    Ok(NormalPath {
        segments,
        trailing_slash,
    })
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let decoded = if c == b'%' {
            let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            let v = h << 4 | l;
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(PathError::EncodedSeparator);
            }
            v
        } else {
            i += 1;
            if c == b'\\' {
                return Err(PathError::Backslash);
            }
            c
        };
        if decoded < 0x20 || decoded == 0x7f {
            return Err(PathError::Control);
        }
        if decoded == b';' {
            return Err(PathError::Semicolon);
        }
        out.push(decoded);
    }
    let segment = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    // C1 controls (U+0080..U+009F) are control characters too.
    if !segment.is_ascii() && segment.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    Ok(segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<(String, String), PathError> {
        normalize(p).map(|n| (n.decoded(), n.encoded()))
    }

    #[test]
    fn resolves_dots_and_merges_slashes() {
        assert_eq!(norm("/orders").unwrap().0, "/orders");
        assert_eq!(norm("/").unwrap().0, "/");
        assert_eq!(norm("//orders//1").unwrap().0, "/orders/1");
        assert_eq!(norm("/./orders/./1").unwrap().0, "/orders/1");
        assert_eq!(norm("/a/../orders/1").unwrap().0, "/orders/1");
        assert_eq!(norm("/orders/%2e%2e/customers").unwrap().0, "/customers");
        assert_eq!(norm("/orders/%2E/1").unwrap().0, "/orders/1");
        assert_eq!(norm("/orders/").unwrap().0, "/orders/");
        assert_eq!(norm("/orders/1/..").unwrap().0, "/orders/");
    }

    #[test]
    fn refuses_ambiguous_encodings() {
        for (p, e) in [
            ("/orders%2F1", PathError::EncodedSeparator),
            ("/orders%2f1", PathError::EncodedSeparator),
            ("/orders%5C1", PathError::EncodedSeparator),
            ("/orders%5c1", PathError::EncodedSeparator),
            ("/orders%00", PathError::EncodedSeparator),
            ("/orders\\1", PathError::Backslash),
            ("/orders%0a", PathError::Control),
            ("/orders%7F", PathError::Control),
            ("/orders%C2%85", PathError::Control),
            ("/caf%C3%A9%C2%9B", PathError::Control),
            ("/orders;jsessionid=1", PathError::Semicolon),
            ("/orders%3Bx", PathError::Semicolon),
            ("/orders%2", PathError::BadEscape),
            ("/orders%zz", PathError::BadEscape),
            ("/%c0%ae%c0%ae/x", PathError::NotUtf8),
            ("/%ff", PathError::NotUtf8),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("orders", PathError::NotAbsolute),
        ] {
            assert_eq!(norm(p), Err(e), "{p}");
        }
    }

    #[test]
    fn decodes_once_and_re_encodes_what_it_forwards() {
        // %252F is a literal "%2F" in a segment, not a separator.
        let (d, e) = norm("/orders/%252F").unwrap();
        assert_eq!(d, "/orders/%2F");
        assert_eq!(e, "/orders/%252F");
        let (d, e) = norm("/orders/a%20b/caf%C3%A9").unwrap();
        assert_eq!(d, "/orders/a b/café");
        assert_eq!(e, "/orders/a%20b/caf%C3%A9");
        let (d, e) = norm("/orders/%41bc").unwrap();
        assert_eq!((d.as_str(), e.as_str()), ("/orders/Abc", "/orders/Abc"));
        // Case is kept: paths are case-sensitive.
        assert_eq!(norm("/Orders").unwrap().0, "/Orders");
    }
}
