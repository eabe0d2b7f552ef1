//! What is known about a client connection once its handshake is done.

use std::net::SocketAddr;

use http::HeaderValue;

use super::identity::PeerIdentity;

/// The connection's verified peer, computed once and shared by every
/// request on it.
#[derive(Debug)]
pub struct ConnInfo {
    pub identity: PeerIdentity,
    pub peer: SocketAddr,
    /// The peer's IP address as a header value (`x-forwarded-for`).
    pub peer_ip: HeaderValue,
    pub tls_version: &'static str,
}
