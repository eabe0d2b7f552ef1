//! Nouns every layer shares: the peer's identity and what is known of its
//! connection, the normalised request path, the trace context, and the
//! response stage's transform traits. Imports only `base`.

pub mod conformance;
pub mod connection;
pub mod identity;
pub mod path;
pub mod response;
pub mod trace;
