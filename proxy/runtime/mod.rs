//! The running process: configuration (composed of each module's own
//! section), the sidecar (bind, serve, reload) and its admin listener.

pub mod admin;
pub mod config;
pub mod sidecar;
