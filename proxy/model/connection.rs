//! What is known about a client connection once its handshake is done.

use std::net::SocketAddr;
use std::sync::OnceLock;

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
    /// The peer's address as text (`127.0.0.1:40000`, `[::1]:40000`): the
    /// audit event's `source`, formatted once per connection.
    pub peer_text: Box<str>,
    pub tls_version: &'static str,
    /// The audit line's members about this connection, as the audit trail
    /// writes them (the same on every line of its requests): written the
    /// first time one of its requests is recorded ([`ConnInfo::audited`]).
    audited: OnceLock<(Box<[u8]>, usize)>,
}

impl ConnInfo {
    /// A connection's facts, with the forms of its peer's address that its
    /// requests send on and record made once.
    pub fn new(identity: PeerIdentity, peer: SocketAddr, tls_version: &'static str) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo {
            identity,
            peer,
            peer_ip,
            forwarded: forwarded_for(peer.ip()),
            peer_text: peer.to_string().into(),
            tls_version,
            audited: OnceLock::new(),
        }
    }

    /// The connection's audit text in two parts, written by `write` the
    /// first time it succeeds: `write` returns where the second part begins.
    pub fn audited<E>(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<usize, E>,
    ) -> Result<(&[u8], &[u8]), E> {
        let (text, at) = match self.audited.get() {
            Some(done) => done,
            None => {
                let mut out = Vec::new();
                let at = write(&mut out)?;
                self.audited.get_or_init(|| (out.into_boxed_slice(), at))
            }
        };
        Ok(text.split_at((*at).min(text.len())))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::identity::Principal;

    fn identity() -> PeerIdentity {
        let id = "spiffe://mesh.local/ns/sales/sa/app";
        PeerIdentity {
            principal: id.parse::<Principal>().expect("principal"),
            principal_header: HeaderValue::from_static(id),
            xfcc: HeaderValue::from_static("x"),
            cert_sha256: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_peers_forms_are_made_for_v4_and_v6() {
        let v4 = ConnInfo::new(identity(), "10.1.2.3:40000".parse().expect("v4"), "TLSv1.3");
        assert_eq!(&*v4.peer_text, "10.1.2.3:40000");
        assert_eq!(v4.peer_ip, "10.1.2.3");
        assert_eq!(v4.forwarded, "for=10.1.2.3;proto=https");
        let v6 = ConnInfo::new(
            identity(),
            "[2001:db8::7]:443".parse().expect("v6"),
            "TLSv1.2",
        );
        assert_eq!(&*v6.peer_text, "[2001:db8::7]:443");
        assert_eq!(v6.peer_ip, "2001:db8::7");
        assert_eq!(v6.forwarded, "for=\"[2001:db8::7]\";proto=https");
        assert_eq!(v6.tls_version, "TLSv1.2");
    }

    #[test]
    fn the_audit_text_is_written_once_and_a_failure_is_not_kept() {
        let c = ConnInfo::new(identity(), "10.1.2.3:40000".parse().expect("v4"), "TLSv1.3");
        let failed: Result<_, &str> = c.audited(|_| Err("clock"));
        assert_eq!(failed, Err("clock"));
        let write = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"onetwo");
            Ok::<_, &str>(3)
        };
        assert_eq!(c.audited(write), Ok((&b"one"[..], &b"two"[..])));
        // Written: `write` is not called again.
        let again = c.audited(|_| -> Result<usize, &str> { panic!("written twice") });
        assert_eq!(again, Ok((&b"one"[..], &b"two"[..])));
    }
}
