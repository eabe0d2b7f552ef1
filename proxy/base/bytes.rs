//! Searching bytes a block at a time: the test is made on 16 bytes at
//! once, which the compiler turns into vector compares (SSE2 on every
//! x86-64, NEON on aarch64), so a run of bytes that pass costs about a
//! cycle per 16 instead of a compare and a branch per byte.

const BLOCK: usize = 16;

/// The index of the first byte of `s` that `stop` picks, or `s.len()`.
/// `stop` should be branch-free (`|` rather than `||`) for the block test
/// to become vector compares.
#[inline(always)]
pub fn find(s: &[u8], stop: impl Fn(u8) -> bool + Copy) -> usize {
    let mut at = 0;
    for block in s.chunks_exact(BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        if block.iter().fold(false, |any, &b| any | stop(b)) {
            break;
        }
        at += BLOCK;
    }
    let rest = &s[at..];
    at + rest.iter().position(|&b| stop(b)).unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length, every position of a stopping byte, one or two of
    /// them: the first is found, as a byte-by-byte search finds it.
    #[test]
    fn the_first_stopping_byte_is_found_at_every_length_and_position() {
        let stop = |b: u8| (b == b'x') | (b < 0x20);
        for len in 0..70 {
            let plain = vec![b'a'; len];
            assert_eq!(find(&plain, stop), len);
            for at in 0..len {
                for special in [b'x', 0x1f] {
                    let mut s = plain.clone();
                    s[at] = special;
                    assert_eq!(find(&s, stop), at, "{s:?}");
                    if let Some(later) = s.get_mut(at + 17) {
                        *later = b'x';
                        assert_eq!(find(&s, stop), at, "{s:?}");
                    }
                }
            }
        }
    }
}
