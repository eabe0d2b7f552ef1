//! Request ids: unique per process, 32 hex digits.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// Unique request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        // If the system RNG fails, ids are still unique within this process.
        let _ = aws_lc_rs::rand::fill(&mut seed);
        RequestIds {
            prefix: u64::from_be_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix.to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        let mut hex = [0u8; 32];
        crate::base::hex::hex_into(&id, &mut hex);
        HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
    }
}

/// `id` as a header (of the response, or of the request to an h2c
/// upstream): marked never to be indexed, so that HTTP/2's header
/// compression (HPACK) sends it as a literal instead of adding it to the
/// connection's table, where a value that never repeats would only push out
/// the ones that do (`content-type`, `date`, the caller's identity headers)
/// and cost an insertion and an eviction per message. HTTP/1.1 ignores the
/// mark.
pub fn unindexed(id: &HeaderValue) -> HeaderValue {
    let mut v = id.clone();
    v.set_sensitive(true);
    v
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .to_str()
            .is_ok_and(|s| s.bytes().all(|c| c.is_ascii_hexdigit())));
    }
}
