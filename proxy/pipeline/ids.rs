//! Request ids: 32 hex digits, random per request.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

thread_local! {
    /// A per-thread CSPRNG seeded from the OS (a call into aws-lc's RNG
    /// per request costs far more); `None` if the OS could not seed it.
    static ID_RNG: std::cell::RefCell<Option<rand::rngs::StdRng>> =
        std::cell::RefCell::new(rand::SeedableRng::try_from_os_rng().ok());
}

/// Request ids. Each is 128 random bits, so that an id says nothing of the
/// requests served before it: a counter, even behind a random prefix, let
/// any caller (a refused one too) count the node's requests between two of
/// its own, other consumers' traffic. Ids of random bits collide with a
/// chance of about n²/2¹²⁹ for n requests. Where the OS cannot seed the
/// generator, a random per-process prefix and a counter keep them unique.
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
        let random: Option<[u8; 16]> =
            ID_RNG.with(|rng| rng.borrow_mut().as_mut().map(rand::Rng::random));
        let id = random.unwrap_or_else(|| {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.prefix.to_be_bytes());
            id[8..].copy_from_slice(&n.to_be_bytes());
            id
        });
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
    fn request_ids_are_unique_hex_and_count_nothing() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .to_str()
            .is_ok_and(|s| s.bytes().all(|c| c.is_ascii_hexdigit())));
        // Not a shared prefix and a counter: two ids in a row share no
        // half (a chance of 2^-63 that one does by accident).
        assert_ne!(a.as_bytes()[..16], b.as_bytes()[..16]);
        assert_ne!(a.as_bytes()[16..], b.as_bytes()[16..]);
    }
}
