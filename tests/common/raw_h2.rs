//! A hand-written HTTP/2 client over mTLS: frames as written, so that a test
//! can do what a client library would not (open a stream after a GOAWAY,
//! answer the server's PING only when it chooses) and see every frame the
//! server sends.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{tls_connect_alpn, Pki};

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const NO_ERROR: u32 = 0;
pub const REFUSED_STREAM: u32 = 7;
/// The last stream id of a graceful shutdown's first GOAWAY.
pub const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// How long a wait for the server's next frame may take: a bound on a wait
/// for an event, for a loaded machine, not a window it must fall into.
pub const WAIT: Duration = Duration::from_secs(60);

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's last stream id and error code.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        let p = self.payload.get(..8).filter(|_| self.kind == GOAWAY)?;
        let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & MAX_STREAM_ID;
        Some((last, u32::from_be_bytes([p[4], p[5], p[6], p[7]])))
    }

    /// An RST_STREAM's error code.
    pub fn reset(&self) -> Option<u32> {
        let p = self.payload.get(..4).filter(|_| self.kind == RST_STREAM)?;
        Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
    }

    /// A response head with `:status 200` (HPACK's static entry 8, which is
    /// how the h2 crate writes it).
    pub fn is_ok_head(&self) -> bool {
        self.kind == HEADERS && self.payload.first() == Some(&0x88)
    }

    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, DATA | HEADERS) && self.flags & END_STREAM != 0
    }
}

/// A frame as written on the wire.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & MAX_STREAM_ID).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET's header block: literal fields without indexing, no Huffman.
fn request_block(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
    ] {
        out.push(0);
        for s in [name, value] {
            out.push(
                u8::try_from(s.len())
                    .ok()
                    .filter(|n| *n < 127)
                    .expect("short"),
            );
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

/// One HTTP/2 connection, written and read frame by frame.
pub struct RawH2 {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    inbuf: Vec<u8>,
    /// The payloads of the server's PINGs not answered yet.
    pub pings: Vec<Vec<u8>>,
    /// The server closed the connection.
    pub closed: bool,
}

impl RawH2 {
    /// Connects as `who` (ALPN h2) and sends the preface and SETTINGS.
    pub async fn connect(pki: &Pki, who: &str, addr: SocketAddr) -> RawH2 {
        let tls = tls_connect_alpn(pki, who, addr, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut c = RawH2 {
            tls,
            inbuf: Vec::new(),
            pings: Vec::new(),
            closed: false,
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        c.send(&hello).await;
        c
    }

    /// Writes `bytes` (a write error is left for the next read to see).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    /// `GET path` on `stream`, its request ended.
    pub async fn get(&mut self, stream: u32, path: &str) {
        let f = frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &request_block(path),
        );
        self.send(&f).await;
    }

    /// Answers the server's PINGs received so far.
    pub async fn answer_pings(&mut self) {
        let out: Vec<u8> = self
            .pings
            .drain(..)
            .flat_map(|p| frame(PING, ACK, 0, &p))
            .collect();
        self.send(&out).await;
    }

    /// The server's next frame, its SETTINGS acknowledged and its PINGs
    /// kept for [`RawH2::answer_pings`] on the way; None once the server
    /// has closed the connection. Fails the test after [`WAIT`].
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.parse() {
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                } else if f.kind == PING && f.flags & ACK == 0 {
                    self.pings.push(f.payload.clone());
                }
                return Some(f);
            }
            if self.closed {
                return None;
            }
            let mut buf = [0u8; 16 * 1024];
            match tokio::time::timeout(WAIT, self.tls.read(&mut buf)).await {
                Err(_) => panic!("no frame from the server in {WAIT:?}"),
                // A close without close_notify is a close too.
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.inbuf.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Frames until one satisfies `pred`; every frame read on the way
    /// (that one last). Fails the test when the connection closes first.
    pub async fn until(&mut self, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        loop {
            let Some(f) = self.next().await else {
                panic!("the connection closed before the frame awaited; saw {seen:?}");
            };
            let done = pred(&f);
            seen.push(f);
            if done {
                return seen;
            }
        }
    }

    /// Every frame until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        while let Some(f) = self.next().await {
            seen.push(f);
        }
        seen
    }

    fn parse(&mut self) -> Option<Frame> {
        let head = self.inbuf.get(..9)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let payload = self.inbuf.get(9..9 + len)?.to_vec();
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & MAX_STREAM_ID,
            payload,
        };
        self.inbuf.drain(..9 + len);
        Some(f)
    }
}
