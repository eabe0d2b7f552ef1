//! The request body on its way into an HTTP/2 stream, sent as the upstream
//! grants window. Until the response headers come, what was sent is kept
//! (up to [`REPLAY_LIMIT`] bytes; the chunks are shared, not copied), so
//! that a stream the upstream refused unprocessed can go again, whole, on
//! another connection: what a gRPC client does by itself for a call that
//! never reached the server (its transparent retry).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::{Body, Frame};

use super::super::body::CountedBody;

/// The most of a request body kept for a replay; a longer one cannot go
/// again (its stream's refusal fails the request).
pub(super) const REPLAY_LIMIT: usize = 64 * 1024;

/// The client's body and what of it went out so far.
pub(super) struct Outgoing {
    body: CountedBody,
    /// The frames read from the client, in order: all of them while
    /// `keeping`; after that, only those this stream has yet to send
    /// again (a replay the response overtook).
    kept: Vec<Frame<Bytes>>,
    /// Every frame read so far is in `kept`: the body can go again whole.
    /// False once more than [`REPLAY_LIMIT`] bytes were read, or once the
    /// response came.
    keeping: bool,
    kept_bytes: usize,
    /// How many of `kept` this stream has been sent.
    replayed: usize,
    /// The client's body has ended: what is left of it is in `kept`.
    ended: bool,
}

impl Outgoing {
    pub(super) fn new(body: CountedBody) -> Outgoing {
        let ended = body.is_end_stream();
        Outgoing {
            body,
            kept: Vec::new(),
            keeping: true,
            kept_bytes: 0,
            replayed: 0,
            ended,
        }
    }

    /// Nothing to send after the headers: the request ends with them.
    pub(super) fn is_empty(&self) -> bool {
        self.ended && self.kept.is_empty()
    }

    /// Everything sent so far can be sent again.
    pub(super) fn replayable(&self) -> bool {
        self.keeping
    }

    /// The next stream starts from the first byte again (no longer
    /// waiting on the client: what it sent goes first).
    pub(super) fn rewind(&mut self) {
        self.replayed = 0;
        self.body.not_waiting();
    }

    /// The response came: nothing will be replayed any more. What this
    /// stream has yet to send again stays, to go before the client's next
    /// bytes (the response can overtake a replay waiting for window).
    pub(super) fn forget(&mut self) {
        self.kept.drain(..self.replayed);
        self.replayed = 0;
        self.keeping = false;
    }

    /// Sends the body into `stream`; ready once all of it is sent, or the
    /// stream is cut (reset by the upstream, or here for a body the client
    /// broke); pending while the window is closed or the client's next
    /// bytes have not come.
    pub(super) fn poll_send(
        &mut self,
        stream: &mut SendStream<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            // Window for at least a byte before a chunk is taken: `send_data`
            // then takes the whole chunk and sends it as the window opens.
            stream.reserve_capacity(1);
            while stream.capacity() == 0 {
                match stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let (frame, last) = match self.next_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Next::Frame(f, last)) => (f, last),
                Poll::Ready(Next::End) => {
                    let _ = stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Next::Broken) => {
                    // The upstream must not take a cut body for a whole one.
                    stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
            };
            let sent = match frame.into_data() {
                Ok(data) => stream.send_data(data, last).map(|()| last),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        stream.reserve_capacity(0);
                        stream.send_trailers(trailers).map(|()| true)
                    }
                    // Neither data nor trailers: nothing to send.
                    Err(_) => Ok(false),
                },
            };
            // The end sent, or the stream gone.
            if !matches!(sent, Ok(false)) {
                return Poll::Ready(());
            }
        }
    }

    /// The next frame to send: a kept one again, else the client's next.
    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(frame) = self.kept.get(self.replayed) {
            let frame = copy(frame);
            self.replayed += 1;
            let last = self.ended && self.replayed == self.kept.len();
            if !self.keeping && self.replayed == self.kept.len() {
                // Sent again, and never to be sent a third time.
                self.kept.clear();
                self.replayed = 0;
            }
            return Poll::Ready(Next::Frame(frame, last));
        }
        if self.ended {
            return Poll::Ready(Next::End);
        }
        let frame = match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.ended = true;
                return Poll::Ready(Next::End);
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Next::Broken),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let last = frame.is_trailers() || self.body.is_end_stream();
        self.ended = last;
        self.keep(&frame);
        Poll::Ready(Next::Frame(frame, last))
    }

    /// Keeps a frame just read from the client (every kept one has been
    /// sent by then), while the body can still go again whole.
    fn keep(&mut self, frame: &Frame<Bytes>) {
        if !self.keeping {
            return;
        }
        self.kept_bytes += frame.data_ref().map_or(0, Bytes::len);
        if self.kept_bytes > REPLAY_LIMIT {
            self.keeping = false;
            self.kept.clear();
            self.replayed = 0;
            return;
        }
        self.kept.push(copy(frame));
        self.replayed = self.kept.len();
    }
}

enum Next {
    /// A frame, and whether it is the body's last.
    Frame(Frame<Bytes>, bool),
    /// The body ended after the frames sent.
    End,
    /// The client's body failed.
    Broken,
}

/// A frame again (data shares its bytes).
fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match (frame.data_ref(), frame.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}
