//! Finding the next byte a masker must look at. Most of a body is text
//! inside strings or cells, copied as it is; the maskers hand such a run
//! over whole and stop only at the bytes that end it. The test is made 16
//! bytes at a time ([`find`]). String text, where
//! most runs are short (a key, a code, a name), is searched a word at a
//! time instead ([`json_text`]).

use crate::base::bytes::find;

/// Where a run of a JSON string's own text ends: a quote, a backslash or
/// a control character (which JSON forbids in a string).
///
/// Eight bytes at a time in a word: a byte that is `"` or `\\` is a zero
/// byte of the word XORed with it, a control character a byte less than
/// 0x20, and both are found by the borrow a subtraction makes in that byte
/// (`(v - 0x01…) & !v & 0x80…`). A borrow can flag bytes above a hit too,
/// never one below, so the lowest flag of the three tests is the first
/// byte that ends the run. Short runs end in their first word, at a dozen
/// operations, where a 16-byte block test then a byte search took five
/// times that.
#[inline]
pub fn json_text(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let mut at = 0;
    for word in s.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let v = u64::from_le_bytes(word);
        let quote = zero(v ^ (ONES * u64::from(b'"')));
        let backslash = zero(v ^ (ONES * u64::from(b'\\')));
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let hits = (quote | backslash | control) & HIGH;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    let rest = &s[at..];
    at + rest
        .iter()
        .position(|&b| (b == b'"') | (b == b'\\') | (b < 0x20))
        .unwrap_or(rest.len())
}

/// Where a run of bytes that may stand in a JSON number ends (the number
/// itself is validated over the run).
#[inline]
pub fn json_number(s: &[u8]) -> usize {
    find(s, |b| {
        !(b.is_ascii_digit() | (b == b'.') | (b == b'e') | (b == b'E') | (b == b'+') | (b == b'-'))
    })
}

/// Where a run of JSON whitespace ends.
#[inline]
pub fn json_space(s: &[u8]) -> usize {
    find(s, |b| {
        !((b == b' ') | (b == b'\n') | (b == b'\r') | (b == b'\t'))
    })
}

/// Where an unquoted CSV cell's text ends.
#[inline]
pub fn csv_plain(s: &[u8]) -> usize {
    find(s, |b| {
        (b == b',') | (b == b'"') | (b == b'\r') | (b == b'\n')
    })
}

/// Where a quoted CSV cell's text ends (at its next quote).
#[inline]
pub fn csv_quoted(s: &[u8]) -> usize {
    find(s, |b| b == b'"')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A search, and the byte-by-byte test it must agree with.
    type Case = (fn(&[u8]) -> usize, fn(u8) -> bool);

    /// Every length and every position of the stopping byte, against the
    /// byte-by-byte answer.
    #[test]
    fn runs_end_where_a_byte_by_byte_search_says() {
        let stops: [Case; 5] = [
            (json_text, |b| b == b'"' || b == b'\\' || b < 0x20),
            (json_number, |b| !b"0123456789.eE+-".contains(&b)),
            (json_space, |b| !b" \n\r\t".contains(&b)),
            (csv_plain, |b| b",\"\r\n".contains(&b)),
            (csv_quoted, |b| b == b'"'),
        ];
        for (found, stop) in stops {
            for filler in [b'a', b'7', b' '] {
                for len in 0..70 {
                    let plain = vec![filler; len];
                    let expect = plain.iter().position(|&b| stop(b)).unwrap_or(len);
                    assert_eq!(found(&plain), expect);
                    for at in 0..len {
                        for special in [b'"', b'\\', 0x1f, b',', b'\n', b'x', b'e'] {
                            let mut s = plain.clone();
                            s[at] = special;
                            let expect = s.iter().position(|&b| stop(b)).unwrap_or(len);
                            assert_eq!(found(&s), expect, "{s:?}");
                        }
                    }
                }
            }
        }
    }

    /// Bytes of every value, two or more stopping ones in a word among
    /// them (the word-at-a-time search must take the first).
    #[test]
    fn string_text_ends_at_its_first_stop_among_any_bytes() {
        let stop = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        let mut seed = 0x9e37_79b9_u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        };
        for _ in 0..20_000 {
            let len = usize::from(next() % 64);
            let s: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    // Bytes next to the stopping ones too.
                    0 => [
                        b'"', b'\\', 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x00, 0xa2, 0xdc,
                    ][usize::from(next() % 11)],
                    _ => next(),
                })
                .collect();
            let expect = s.iter().position(|&b| stop(b)).unwrap_or(len);
            assert_eq!(json_text(&s), expect, "{s:?}");
        }
    }
}
