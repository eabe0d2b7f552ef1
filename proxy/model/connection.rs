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
    /// The peer's IP address as a header value (`x-forwarded-for`,
    /// `x-real-ip`).
    pub peer_ip: HeaderValue,
    /// `Forwarded` (RFC 7239) for the peer: made once per connection.
    pub forwarded: HeaderValue,
    pub tls_version: &'static str,
}

/// `Forwarded` (RFC 7239) for a verified peer: `for=` quoted and bracketed
/// when IPv6.
pub fn forwarded_for(peer: std::net::IpAddr) -> HeaderValue {
    let value = match peer {
        std::net::IpAddr::V4(ip) => format!("for={ip};proto=https"),
        std::net::IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=https"),
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("proto=https"))
}
