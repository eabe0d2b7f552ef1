//! Writes gathered over one poll of a connection's task (a "turn") and sent
//! at its end, in one piece.
//!
//! The h2 crate flushes its writer before it buffers a frame behind a DATA
//! frame it holds by reference, which is any DATA frame of more than 256
//! bytes: on a connection carrying many streams, every response body went
//! to TLS and to the socket on its own, one TLS record and one `writev` per
//! response, several of them back to back in the same poll. [`TurnIo`]
//! takes the writes (and flushes) of a turn into a buffer; the task that
//! drives the connection calls [`TurnFlush::poll_flush`] after every poll
//! of the connection, which hands the buffer to the stream below (TLS: one
//! record of up to 16 KiB instead of one per response) and flushes that.
//!
//! Until [`TurnFlush::defer`] is called, a flush goes through at once (for
//! a handshake, which has no driving task of ours). Past [`TurnIo::LIMIT`]
//! buffered bytes a write sends what is buffered first, and waits if the
//! stream below does: the bytes a connection buffers here stay bounded.
//!
//! It carries HTTP/2 and nothing else, and follows its frames both ways
//! ([`Frames`]): when meshgate cuts a connection, [`TurnFlush::go_away`]
//! ends it with a GOAWAY of meshgate's own where one can be written.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frames::Frames;

/// The IO a connection's HTTP server is given; see the module's docs.
pub struct TurnIo<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

/// What flushes a [`TurnIo`]'s writes from outside the HTTP server.
pub struct TurnFlush<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

struct Shared<T> {
    io: T,
    /// Written by the server, not yet handed to `io`.
    out: Vec<u8>,
    /// How much of `out`, from its start, `io` has taken.
    sent: usize,
    /// Flushes wait for `TurnFlush::poll_flush`.
    deferred: bool,
    /// Bytes have been written since `io` last finished a flush (TLS may
    /// hold some of them after a write the socket took only in part).
    unflushed: bool,
    /// A write to `io` failed outside the server's own calls: reported to
    /// the server at its next call.
    failed: Option<io::ErrorKind>,
    /// The HTTP/2 frames read and written so far.
    frames: Frames,
    /// `io` is being shut down (or was): nothing more may be written.
    shut: bool,
}

/// A `TurnIo` and the handle that flushes it.
pub fn turn_io<T>(io: T) -> (TurnIo<T>, TurnFlush<T>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        out: Vec::new(),
        sent: 0,
        deferred: false,
        unflushed: false,
        failed: None,
        frames: Frames::default(),
        shut: false,
    }));
    (
        TurnIo {
            shared: shared.clone(),
        },
        TurnFlush { shared },
    )
}

fn lock<T>(m: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // A panic while the lock was held leaves nothing half-done that a later
    // call could not cope with: the buffer and its offset are updated
    // together.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T: AsyncWrite + Unpin> Shared<T> {
    /// Hands the buffer to `io` until it is empty (Ready) or `io` waits.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Keep what is left at the front, so that the buffer does
                    // not grow by what has been sent.
                    self.out.drain(..self.sent);
                    self.sent = 0;
                    return Poll::Pending;
                }
            };
            self.sent += n;
        }
        // A connection between turns keeps no more than a small buffer: the
        // 32 KiB a busy turn may gather, kept by each of 1,000 idle
        // connections, would be 32 MB.
        if self.out.capacity() > TURN_START {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Room in the buffer for `n` more bytes (at least `TURN_START` at a
    /// turn's first write, so that a few responses need no regrowth).
    fn reserve(&mut self, n: usize) {
        self.out
            .reserve(n.max(TURN_START.saturating_sub(self.out.len())));
    }

    /// The buffer handed over and `io` flushed.
    fn poll_send_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let r = match self.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_flush(cx),
            other => other,
        };
        match &r {
            Poll::Ready(Ok(())) => self.unflushed = false,
            Poll::Ready(Err(e)) => self.failed = Some(e.kind()),
            Poll::Pending => {}
        }
        r
    }

    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }

    /// Room for more: below the limit, or made by handing the buffer over.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        if self.out.len() - self.sent < TurnIo::<T>::LIMIT {
            return Poll::Ready(Ok(()));
        }
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => {
                self.failed = Some(e.kind());
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending if self.out.len() - self.sent < TurnIo::<T>::LIMIT => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The buffer a turn starts with, and the most a connection keeps between
/// turns.
const TURN_START: usize = 4 * 1024;

impl<T> TurnIo<T> {
    /// Buffered bytes past which a write first hands the buffer over: two
    /// full TLS records.
    pub const LIMIT: usize = 32 * 1024;
}

impl<T> TurnFlush<T> {
    /// From now on flushes wait for [`TurnFlush::poll_flush`].
    pub fn defer(&self) {
        lock(&self.shared).deferred = true;
    }

    /// Calls `f` with the stream below.
    #[cfg(test)]
    fn with_io<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&lock(&self.shared).io)
    }
}

impl<T: AsyncWrite + Unpin> TurnFlush<T> {
    /// Hands the turn's writes to the stream below and flushes it. Pending
    /// while the stream waits (the task is woken when it can go on). An
    /// error is returned once, and reported to the server at its next read
    /// or write.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        // A failure is returned once, when it happens; the server sees it at
        // its next read or write.
        if !s.unflushed || s.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        s.poll_send_flush(cx)
    }
}

impl<T: AsyncWrite + Unpin> TurnFlush<T> {
    /// After the server is gone, dropped with its connection open (meshgate
    /// cut it): a GOAWAY with `code` and `debug` data appended to what it
    /// wrote, when that ends between frames and the server had not begun
    /// to shut the stream down; then everything handed to the stream below,
    /// and that shut down (TLS: close_notify). One attempt that waits for
    /// nothing: a client that does not read is not waited for. Whether the
    /// GOAWAY was handed over whole.
    pub fn go_away(&self, code: u32, debug: &[u8]) -> bool {
        let mut s = lock(&self.shared);
        if s.shut || s.failed.is_some() {
            return false;
        }
        let Some(goaway) = s.frames.goaway(code, debug) else {
            return false;
        };
        s.out.extend_from_slice(&goaway);
        (s.unflushed, s.shut) = (true, true);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if !matches!(s.poll_send_flush(&mut cx), Poll::Ready(Ok(()))) {
            return false;
        }
        let _ = Pin::new(&mut s.io).poll_shutdown(&mut cx);
        true
    }
}

/// One poll of a connection's server, then its turn's writes sent; see
/// [`turn`].
pub struct Turn<'a, C, T> {
    conn: Pin<&'a mut C>,
    flush: Option<&'a TurnFlush<T>>,
}

/// Polls `conn` (e.g. hyper's connection future), then flushes what it wrote
/// during that poll through `flush`; `None`: just polls `conn`. Ready when
/// `conn` is.
pub fn turn<'a, C: Future, T>(
    conn: Pin<&'a mut C>,
    flush: Option<&'a TurnFlush<T>>,
) -> Turn<'a, C, T> {
    Turn { conn, flush }
}

impl<C: Future, T: AsyncWrite + Unpin> Future for Turn<'_, C, T> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        let done = this.conn.as_mut().poll(cx);
        if let Some(flush) = this.flush {
            if let Poll::Ready(Err(_)) = flush.poll_flush(cx) {
                // The server learns of it at its next read or write: poll it
                // again, so that it ends the connection its own way.
                if done.is_pending() {
                    cx.waker().wake_by_ref();
                }
            }
        }
        done
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TurnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        if let Some(kind) = s.failed {
            return Poll::Ready(Err(kind.into()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut s.io).poll_read(cx, buf);
        s.frames.read(&buf.filled()[before..]);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TurnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.shared);
        std::task::ready!(s.poll_room(cx))?;
        s.reserve(buf.len());
        s.out.extend_from_slice(buf);
        s.frames.wrote(buf);
        s.unflushed = true;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.shared);
        std::task::ready!(s.poll_room(cx))?;
        s.reserve(bufs.iter().map(|b| b.len()).sum());
        let mut n = 0;
        for b in bufs {
            s.out.extend_from_slice(b);
            s.frames.wrote(b);
            n += b.len();
        }
        s.unflushed = true;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        if s.deferred {
            // Sent at the end of the turn, by `TurnFlush::poll_flush`.
            return Poll::Ready(s.check());
        }
        s.poll_send_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        s.shut = true;
        std::task::ready!(s.poll_send_flush(cx))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A stream that records each write it takes; `blocked`: it waits.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        blocked: bool,
        /// Takes writes, but its flush waits (TLS with ciphertext the
        /// socket did not take).
        flush_blocked: bool,
        broken: bool,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.blocked {
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.blocked || self.flush_blocked {
                return Poll::Pending;
            }
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn write(io: &mut TurnIo<Recorder>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(&mut cx(), bytes)
    }

    fn flush(io: &mut TurnIo<Recorder>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(&mut cx())
    }

    #[test]
    fn a_turns_writes_and_flushes_reach_the_stream_once_at_its_end() {
        let (mut io, turn) = turn_io(Recorder::default());
        turn.defer();
        for part in [&b"one"[..], b"two", b"three"] {
            assert!(matches!(write(&mut io, part), Poll::Ready(Ok(n)) if n == part.len()));
            assert!(matches!(flush(&mut io), Poll::Ready(Ok(()))));
        }
        turn.with_io(|r| assert!(r.writes.is_empty() && r.flushes == 0));
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        turn.with_io(|r| {
            assert_eq!(r.writes, vec![b"onetwothree".to_vec()]);
            assert_eq!(r.flushes, 1);
        });
        // Nothing new: nothing written, no flush.
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        turn.with_io(|r| assert_eq!((r.writes.len(), r.flushes), (1, 1)));
    }

    #[test]
    fn between_turns_a_connection_keeps_no_large_buffer() {
        let (mut io, turn) = turn_io(Recorder::default());
        turn.defer();
        for _ in 0..3 {
            assert!(matches!(
                write(&mut io, &[1u8; 20_000]),
                Poll::Ready(Ok(20_000))
            ));
        }
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        let kept = lock(&turn.shared).out.capacity();
        assert!(kept <= TURN_START, "{kept} bytes kept after the turn");
        turn.with_io(|r| assert_eq!(r.writes.concat().len(), 60_000));
    }

    #[test]
    fn before_defer_a_flush_goes_through_at_once() {
        let (mut io, _turn) = turn_io(Recorder::default());
        assert!(matches!(write(&mut io, b"hello"), Poll::Ready(Ok(5))));
        assert!(matches!(flush(&mut io), Poll::Ready(Ok(()))));
        _turn.with_io(|r| assert_eq!((r.writes.len(), r.flushes), (1, 1)));
    }

    #[test]
    fn past_the_limit_a_write_waits_for_the_stream_below() {
        let (mut io, turn) = turn_io(Recorder {
            blocked: true,
            ..Recorder::default()
        });
        turn.defer();
        let chunk = vec![7u8; 8 * 1024];
        let mut taken = 0;
        while let Poll::Ready(Ok(n)) = write(&mut io, &chunk) {
            taken += n;
            assert!(
                taken <= TurnIo::<Recorder>::LIMIT + chunk.len(),
                "unbounded"
            );
        }
        assert!(taken >= TurnIo::<Recorder>::LIMIT);
        assert!(turn.poll_flush(&mut cx()).is_pending());
        turn.with_io(|r| assert!(r.writes.is_empty()));
        lock(&turn.shared).io.blocked = false;
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        turn.with_io(|r| assert_eq!(r.writes.concat().len(), taken));
        assert!(matches!(write(&mut io, &chunk), Poll::Ready(Ok(_))));
    }

    #[test]
    fn a_flush_the_stream_below_did_not_finish_is_finished_at_the_next_turn() {
        let (mut io, turn) = turn_io(Recorder {
            flush_blocked: true,
            ..Recorder::default()
        });
        turn.defer();
        assert!(matches!(write(&mut io, b"data"), Poll::Ready(Ok(4))));
        assert!(turn.poll_flush(&mut cx()).is_pending());
        turn.with_io(|r| assert_eq!((r.writes.len(), r.flushes), (1, 0)));
        lock(&turn.shared).io.flush_blocked = false;
        // Nothing new was written, but the stream below still holds bytes.
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        turn.with_io(|r| assert_eq!((r.writes.len(), r.flushes), (1, 1)));
    }

    #[test]
    fn a_failed_send_is_reported_at_the_servers_next_call() {
        let (mut io, turn) = turn_io(Recorder {
            broken: true,
            ..Recorder::default()
        });
        turn.defer();
        assert!(matches!(write(&mut io, b"x"), Poll::Ready(Ok(1))));
        assert!(
            matches!(turn.poll_flush(&mut cx()), Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe)
        );
        // Once: the driving task is not woken again and again for it.
        assert!(matches!(turn.poll_flush(&mut cx()), Poll::Ready(Ok(()))));
        assert!(
            matches!(write(&mut io, b"y"), Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe)
        );
        let mut buf = [0u8; 4];
        let mut rb = ReadBuf::new(&mut buf);
        assert!(matches!(
            Pin::new(&mut io).poll_read(&mut cx(), &mut rb),
            Poll::Ready(Err(_))
        ));
    }

    /// HTTP/2 frames as written: (type, flags, stream, payload).
    fn frames(list: &[(u8, u8, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, flags, stream, payload) in list {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&[*kind, *flags]);
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn a_cut_connection_ends_with_a_goaway_only_between_frames() {
        let (mut io, turn) = turn_io(Recorder::default());
        turn.defer();
        // SETTINGS, then half of a DATA frame: no GOAWAY may follow that.
        let out = frames(&[(4, 0, 0, b""), (0, 0, 1, b"0123456789")]);
        assert!(matches!(write(&mut io, &out[..14]), Poll::Ready(Ok(14))));
        assert!(!turn.go_away(crate::transport::frames::ENHANCE_YOUR_CALM, b"x"));
        assert!(matches!(write(&mut io, &out[14..]), Poll::Ready(Ok(_))));
        drop(io);
        assert!(turn.go_away(crate::transport::frames::ENHANCE_YOUR_CALM, b"x"));
        turn.with_io(|r| {
            let sent = r.writes.concat();
            assert_eq!(&sent[..out.len()], &out[..]);
            assert_eq!(
                &sent[out.len()..],
                &frames(&[(7, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0xb, b'x'])])[..]
            );
            assert!(r.shut && r.flushes == 1);
        });
        // Once: the stream is shut.
        assert!(!turn.go_away(0, b""));
    }

    #[test]
    fn no_goaway_after_the_server_began_its_own_shutdown() {
        let (mut io, turn) = turn_io(Recorder::default());
        turn.defer();
        assert!(matches!(
            write(&mut io, &frames(&[(4, 0, 0, b"")])),
            Poll::Ready(Ok(9))
        ));
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx()),
            Poll::Ready(Ok(()))
        ));
        assert!(!turn.go_away(0, b""));
        turn.with_io(|r| assert_eq!(r.writes.concat().len(), 9));
    }

    #[test]
    fn shutdown_sends_what_is_buffered_first() {
        let (mut io, turn) = turn_io(Recorder::default());
        turn.defer();
        assert!(matches!(write(&mut io, b"bye"), Poll::Ready(Ok(3))));
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx()),
            Poll::Ready(Ok(()))
        ));
        turn.with_io(|r| {
            assert_eq!(r.writes, vec![b"bye".to_vec()]);
            assert!(r.shut);
        });
    }
}
