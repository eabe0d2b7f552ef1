//! Where an HTTP/2 connection's two byte streams are, frame by frame, so
//! that meshgate can end a connection it cuts with a GOAWAY of its own
//! (hyper's server offers a graceful shutdown only; the connection it drops
//! would end without one). Such a GOAWAY may only follow a whole frame
//! outside a header block, after the server's preface, and names the last
//! stream the client opened, never more than a GOAWAY already sent (RFC
//! 9113, section 6.8: the last stream id must not grow).
//!
//! [`Frames`] is fed what the connection reads and writes
//! (`transport/turns.rs`): a few comparisons per frame, no allocation.

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
/// The highest stream id: a GOAWAY's last stream id has 31 bits.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;
/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, the client's first bytes.
const CLIENT_PREFACE: usize = 24;

/// HTTP/2 error codes meshgate sends in a GOAWAY of its own.
pub const NO_ERROR: u32 = 0x0;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame's 9-byte head.
type Head = [u8; 9];

/// A walk along one direction's frames.
#[derive(Default)]
struct Walk {
    head: Head,
    /// Bytes of `head` seen so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// Payload bytes of the current frame seen so far.
    at: usize,
    /// Inside a header block: HEADERS or PUSH_PROMISE without END_HEADERS,
    /// until the CONTINUATION with it.
    in_block: bool,
    /// A whole frame head has been seen.
    started: bool,
}

impl Walk {
    /// Walks `bytes`, calling `head` at each frame's head and `payload` with
    /// each piece of its payload and where in the payload it begins.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut head: impl FnMut(&Head),
        mut payload: impl FnMut(&Head, usize, &[u8]),
    ) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len());
                payload(&self.head, self.at, &bytes[..n]);
                (self.at, self.left) = (self.at + n, self.left - n);
                bytes = &bytes[n..];
                continue;
            }
            let n = (self.head.len() - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.head.len() {
                let h = self.head;
                (self.have, self.at, self.started) = (0, 0, true);
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                if matches!(h[3], HEADERS | PUSH_PROMISE | CONTINUATION) {
                    self.in_block = h[4] & END_HEADERS == 0;
                }
                head(&h);
            }
        }
    }

    /// Between two frames, outside a header block, after at least one frame.
    fn at_edge(&self) -> bool {
        self.started && self.have == 0 && self.left == 0 && !self.in_block
    }
}

fn stream_id(h: &Head) -> u32 {
    u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_STREAM_ID
}

/// One HTTP/2 connection's frames, as far as a GOAWAY of meshgate's own
/// needs to know them.
pub struct Frames {
    /// Client preface bytes still to come.
    preface: usize,
    from_client: Walk,
    to_client: Walk,
    /// The highest stream id of the client's HEADERS frames.
    last_opened: u32,
    /// The last stream id of the last GOAWAY the server sent, as its bytes
    /// arrive.
    goaway_id: [u8; 4],
    sent_last: Option<u32>,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            preface: CLIENT_PREFACE,
            from_client: Walk::default(),
            to_client: Walk::default(),
            last_opened: 0,
            goaway_id: [0; 4],
            sent_last: None,
        }
    }
}

impl Frames {
    /// Bytes read from the client.
    pub fn read(&mut self, bytes: &[u8]) {
        let skip = self.preface.min(bytes.len());
        self.preface -= skip;
        let last = &mut self.last_opened;
        self.from_client.feed(
            &bytes[skip..],
            |h| {
                if h[3] == HEADERS {
                    *last = (*last).max(stream_id(h));
                }
            },
            |_, _, _| {},
        );
    }

    /// Bytes the server wrote to the client.
    pub fn wrote(&mut self, bytes: &[u8]) {
        let (id, sent) = (&mut self.goaway_id, &mut self.sent_last);
        self.to_client.feed(
            bytes,
            |_| {},
            |h, at, piece| {
                if h[3] != GOAWAY || at >= id.len() {
                    return;
                }
                for (slot, b) in id[at..].iter_mut().zip(piece) {
                    *slot = *b;
                }
                if at + piece.len() >= id.len() {
                    *sent = Some(u32::from_be_bytes(*id) & MAX_STREAM_ID);
                }
            },
        );
    }

    /// A GOAWAY frame with `code` and `debug` data that may be written
    /// now; `None` while the server's bytes end inside a frame or a header
    /// block, or before its first frame.
    pub fn goaway(&self, code: u32, debug: &[u8]) -> Option<Vec<u8>> {
        if !self.to_client.at_edge() {
            return None;
        }
        let last = self
            .sent_last
            .map_or(self.last_opened, |sent| sent.min(self.last_opened));
        let len = u32::try_from(8 + debug.len())
            .ok()
            .filter(|n| *n < 1 << 14)?;
        let mut out = Vec::with_capacity(17 + debug.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[GOAWAY, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&last.to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(debug);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;

    /// The GOAWAY's (last stream id, code, debug).
    fn parts(goaway: &[u8]) -> (u32, u32, &[u8]) {
        assert_eq!(goaway[3], GOAWAY);
        assert_eq!(&goaway[5..9], &[0; 4], "stream 0");
        let len = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!(goaway.len(), 9 + len);
        let word =
            |i: usize| u32::from_be_bytes([goaway[i], goaway[i + 1], goaway[i + 2], goaway[i + 3]]);
        (word(9), word(13), &goaway[17..])
    }

    #[test]
    fn a_goaway_waits_for_the_edge_of_a_frame_and_of_a_header_block() {
        let mut f = Frames::default();
        // Nothing written yet: the server's preface (SETTINGS) comes first.
        assert_eq!(f.goaway(NO_ERROR, b""), None);
        let mut out = frame(SETTINGS, 0, 0, &[0; 6]);
        out.extend(frame(HEADERS, 0, 1, b"head"));
        out.extend(frame(CONTINUATION, END_HEADERS, 1, b"ers"));
        out.extend(frame(DATA, 1, 1, &[7; 40]));
        // Byte by byte: only at the ends of SETTINGS, CONTINUATION and DATA.
        let mut edges = Vec::new();
        for (i, b) in out.iter().enumerate() {
            f.wrote(std::slice::from_ref(b));
            if f.goaway(NO_ERROR, b"").is_some() {
                edges.push(i + 1);
            }
        }
        let settings = 15;
        let headers = settings + 13;
        let continuation = headers + 12;
        assert_eq!(edges, [settings, continuation, out.len()]);
    }

    #[test]
    fn the_last_stream_is_the_clients_last_headers_and_never_above_a_goaway_sent() {
        let mut f = Frames::default();
        f.wrote(&frame(SETTINGS, 0, 0, &[]));
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[]));
        input.extend(frame(HEADERS, END_HEADERS, 1, b"a"));
        input.extend(frame(HEADERS, END_HEADERS, 7, b"b"));
        // A trailer block on stream 1 and a reset: no new stream.
        input.extend(frame(HEADERS, END_HEADERS | 1, 1, b"t"));
        input.extend(frame(0x3, 0, 9, &[0, 0, 0, 8]));
        // In odd pieces, the preface split too.
        for piece in input.chunks(5) {
            f.read(piece);
        }
        let g = f
            .goaway(ENHANCE_YOUR_CALM, b"premature_resets")
            .expect("at an edge");
        assert_eq!(parts(&g), (7, ENHANCE_YOUR_CALM, &b"premature_resets"[..]));
        // The server's graceful GOAWAY (2^31-1) bounds nothing; its final
        // one (5) does.
        f.wrote(&frame(GOAWAY, 0, 0, &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
        assert_eq!(parts(&f.goaway(NO_ERROR, b"").expect("edge")).0, 7);
        let last = frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]);
        f.wrote(&last[..11]);
        f.wrote(&last[11..]);
        f.read(&frame(HEADERS, END_HEADERS, 11, b"c"));
        assert_eq!(parts(&f.goaway(NO_ERROR, b"").expect("edge")).0, 5);
    }
}
