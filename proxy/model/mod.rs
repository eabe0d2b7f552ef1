//! Nouns every layer shares: the peer's identity and what is known of its
//! connection, the normalised request path, the trace context. Imports only
//! `base`.

pub mod connection;
pub mod identity;
pub mod path;
pub mod trace;
