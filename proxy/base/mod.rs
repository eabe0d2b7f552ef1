//! Leaf helpers that know nothing of meshgate's own types: YAML files read
//! with positioned errors, configured paths made absolute, file watching,
//! hex, byte searches, HTTPS fetches. Nothing here imports another module of the crate.

pub mod bytes;
pub mod fetch;
pub mod hex;
pub mod locate;
pub mod paths;
pub mod pem;
pub mod text;
pub mod watch;
pub mod yaml;
