//! Accepting TCP connections, the one loop every listener of ours uses (the
//! sidecar's data and admin ports, the webhook's two, the sample product).
//!
//! An accept error is most often the process out of file descriptors
//! (EMFILE, ENFILE): it lasts until some connection closes, so retrying at
//! once would spin a core and flood the log. The pause doubles with each
//! failure in a row, from 50 ms up to 1 s (as the audit writer's retries
//! do), and a connection accepted resets it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// A listener whose `accept` only returns connections.
pub struct Acceptor {
    listener: TcpListener,
    /// Which listener, for the log.
    name: &'static str,
    pause: Duration,
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str) -> Acceptor {
        Acceptor {
            listener,
            name,
            pause: FIRST_PAUSE,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection; errors are logged and waited out. Cancel safe
    /// (for `select!` against shutdown): dropped while waiting, no
    /// connection is lost.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause = FIRST_PAUSE;
                    return accepted;
                }
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, retry_in = ?self.pause, "accept failed");
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(LONGEST_PAUSE);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_and_reports_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut acceptor = Acceptor::new(listener, "test");
        let addr = acceptor.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (_server, peer) = acceptor.accept().await;
        assert_eq!(peer, client.local_addr().expect("client addr"));
    }
}
