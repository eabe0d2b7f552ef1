//! What the exchanges of one HTTP/2 client connection are doing, for the
//! connection's driver: how many are in progress, which response has a
//! frame waiting for the client to take it (the client's window is shut, or
//! it does not read), and how many the client reset before their answer.
//!
//! The request path pays a few atomic operations per exchange and two
//! relaxed stores per response frame, and allocates nothing: each exchange
//! claims a place in a table made with the connection, sized by its stream
//! limit. The driver reads the table on its timer ([`Streams::check`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Places beyond the stream limit: a reset stream's exchange may end a
/// moment after the stream has made room for the next one.
const SPARE_PLACES: usize = 64;

/// One connection's exchanges.
pub struct Streams {
    /// Exchanges started (high 32 bits; fewer than 2^31 stream ids exist on
    /// a connection) and in progress (low 32 bits), in one word: one
    /// operation when an exchange starts.
    state: AtomicU64,
    /// Exchanges the client gave up before their answer was out.
    premature: AtomicU32,
    /// How many of those (and at least half of all) end the connection.
    premature_limit: u32,
    /// Set (and `cut` told) once the client has reset too many.
    abusive: AtomicBool,
    cut: Notify,
    /// Per place: a count, odd while a frame of its response waits for the
    /// client (handed to hyper, which has not come back for the next).
    places: Box<[AtomicU32]>,
    /// Which places are taken, a bit each.
    taken: Box<[AtomicU64]>,
}

/// Why the driver ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Fine,
    /// A response has had a frame waiting for the client for `timeouts.send`.
    SendStalled,
    /// No exchange for `timeouts.idle`, whatever bytes moved (pings).
    Quiet,
}

/// What the driver remembers between two looks at the table.
#[derive(Default)]
pub struct Watch {
    /// Per place: the count last seen, and since when it has been that.
    seen: Vec<(u32, Instant)>,
    /// The number of exchanges started when none was first seen in progress,
    /// and when.
    quiet: Option<(u32, Instant)>,
}

impl Streams {
    /// The table of a connection that takes at most `max_streams` streams at
    /// once; `premature_limit`: see [`Streams::premature_limit`].
    pub fn new(max_streams: u32, premature_limit: u32) -> Arc<Streams> {
        let places = (max_streams as usize).saturating_add(SPARE_PLACES);
        let words = places.div_ceil(64);
        Arc::new(Streams {
            state: AtomicU64::new(0),
            premature: AtomicU32::new(0),
            premature_limit: premature_limit.max(1),
            abusive: AtomicBool::new(false),
            cut: Notify::new(),
            places: (0..words * 64).map(|_| AtomicU32::new(0)).collect(),
            taken: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// An exchange begins (a request has arrived).
    pub fn open(self: &Arc<Self>) -> Exchange {
        self.state.fetch_add((1 << 32) | 1, Ordering::Relaxed);
        Exchange {
            streams: self.clone(),
            place: self.claim(),
            answered: false,
        }
    }

    fn claim(&self) -> Option<usize> {
        for (w, word) in self.taken.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match word.compare_exchange_weak(
                    cur,
                    cur | (1 << bit),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(w * 64 + bit as usize),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Exchanges in progress.
    #[cfg(test)]
    fn open_count(&self) -> u32 {
        self.state.load(Ordering::Relaxed) as u32
    }

    /// Resolves once the client has reset too many exchanges before their
    /// answer: at least the limit, and at least half of all it started.
    pub async fn abusive(&self) {
        if self.abusive.load(Ordering::Acquire) {
            return;
        }
        self.cut.notified().await;
    }

    fn gave_up(&self) {
        let premature = self.premature.fetch_add(1, Ordering::Relaxed) + 1;
        if premature < self.premature_limit {
            return;
        }
        let started = (self.state.load(Ordering::Relaxed) >> 32) as u32;
        if u64::from(premature) * 2 >= u64::from(started)
            && !self.abusive.swap(true, Ordering::AcqRel)
        {
            // A stored permit: the driver may not be waiting at this instant.
            self.cut.notify_one();
        }
    }

    /// Looks at the table: a response that has had a frame waiting for the
    /// client since `send` ago (seen at two looks at least `send` apart),
    /// or no exchange in progress, nor any started, since `idle` ago.
    pub fn check(
        &self,
        watch: &mut Watch,
        now: Instant,
        send: Duration,
        idle: Duration,
    ) -> Verdict {
        let state = self.state.load(Ordering::Relaxed);
        let (started, open) = ((state >> 32) as u32, state as u32);
        if open == 0 {
            match watch.quiet {
                Some((at, since)) if at == started => {
                    if now.saturating_duration_since(since) >= idle {
                        return Verdict::Quiet;
                    }
                }
                _ => watch.quiet = Some((started, now)),
            }
            return Verdict::Fine;
        }
        watch.quiet = None;
        if watch.seen.len() != self.places.len() {
            watch.seen = vec![(0, now); self.places.len()];
        }
        for (w, word) in self.taken.iter().enumerate() {
            let mut bits = word.load(Ordering::Relaxed);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let count = self.places[i].load(Ordering::Relaxed);
                let (last, since) = &mut watch.seen[i];
                if count.is_multiple_of(2) {
                    continue;
                }
                if *last != count {
                    (*last, *since) = (count, now);
                } else if now.saturating_duration_since(*since) >= send {
                    return Verdict::SendStalled;
                }
            }
        }
        Verdict::Fine
    }
}

/// One exchange of the connection, from its request to the end of its
/// response: dropped before [`Exchange::answered`], the client gave it up
/// (it reset the stream, or the connection ended).
pub struct Exchange {
    streams: Arc<Streams>,
    place: Option<usize>,
    answered: bool,
}

impl Exchange {
    fn count(&self) -> Option<&AtomicU32> {
        self.place.map(|i| &self.streams.places[i])
    }

    /// A frame of the response (or its head) is with hyper: it waits for
    /// the client from now until [`Exchange::taken`].
    pub fn handed(&self) {
        if let Some(c) = self.count() {
            let n = c.load(Ordering::Relaxed);
            if n.is_multiple_of(2) {
                c.store(n.wrapping_add(1), Ordering::Relaxed);
            }
        }
    }

    /// hyper has come back for the next frame: the last one is taken (or
    /// has room in the client's window).
    pub fn taken(&self) {
        if let Some(c) = self.count() {
            let n = c.load(Ordering::Relaxed);
            if !n.is_multiple_of(2) {
                c.store(n.wrapping_add(1), Ordering::Relaxed);
            }
        }
    }

    /// The response is out to its end (or ended by the upstream or by
    /// meshgate): not given up by the client.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.taken();
        if let Some(i) = self.place {
            self.streams.taken[i / 64].fetch_and(!(1u64 << (i % 64)), Ordering::Release);
        }
        self.streams.state.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            self.streams.gave_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(300);

    #[test]
    fn a_frame_the_client_does_not_take_for_the_send_timeout_is_a_stall() {
        let s = Streams::new(2, 100);
        let mut w = Watch::default();
        let t0 = Instant::now();
        let x = s.open();
        x.handed();
        assert_eq!(s.check(&mut w, t0, SEND, IDLE), Verdict::Fine);
        assert_eq!(s.check(&mut w, t0 + SEND / 2, SEND, IDLE), Verdict::Fine);
        // Taken and handed again in between: a new wait.
        x.taken();
        x.handed();
        assert_eq!(s.check(&mut w, t0 + SEND, SEND, IDLE), Verdict::Fine);
        assert_eq!(
            s.check(&mut w, t0 + SEND * 2, SEND, IDLE),
            Verdict::SendStalled
        );
        // Waiting on the upstream (taken, nothing handed) is no stall.
        x.taken();
        assert_eq!(s.check(&mut w, t0 + SEND * 9, SEND, IDLE), Verdict::Fine);
        x.answered();
        assert_eq!(s.open_count(), 0);
    }

    #[test]
    fn a_place_given_back_is_taken_again_and_its_old_wait_is_forgotten() {
        let s = Streams::new(1, 100);
        let mut w = Watch::default();
        let t0 = Instant::now();
        let many: Vec<Exchange> = (0..SPARE_PLACES + 1).map(|_| s.open()).collect();
        assert!(many.iter().all(|x| x.place.is_some()));
        many[0].handed();
        assert_eq!(s.check(&mut w, t0, SEND, IDLE), Verdict::Fine);
        drop(many);
        let next = s.open();
        assert_eq!(next.place, Some(0));
        next.handed();
        assert_eq!(s.check(&mut w, t0 + SEND, SEND, IDLE), Verdict::Fine);
        next.answered();
    }

    #[test]
    fn a_connection_without_exchanges_for_idle_is_quiet_and_one_started_is_not() {
        let s = Streams::new(4, 100);
        let mut w = Watch::default();
        let t0 = Instant::now();
        assert_eq!(s.check(&mut w, t0, SEND, IDLE), Verdict::Fine);
        // One came and went between two looks: quiet only from the second.
        s.open().answered();
        assert_eq!(s.check(&mut w, t0 + IDLE, SEND, IDLE), Verdict::Fine);
        assert_eq!(s.check(&mut w, t0 + IDLE * 2, SEND, IDLE), Verdict::Quiet);
    }

    #[tokio::test]
    async fn many_exchanges_given_up_and_half_of_all_make_the_connection_abusive() {
        let s = Streams::new(128, 10);
        for _ in 0..20 {
            s.open().answered();
        }
        // 10 given up of 30 started: many, but not half.
        for _ in 0..10 {
            drop(s.open());
        }
        assert!(!s.abusive.load(Ordering::Relaxed));
        for _ in 0..10 {
            drop(s.open());
        }
        assert!(s.abusive.load(Ordering::Relaxed));
        // The driver, looking later, is told.
        tokio::time::timeout(Duration::from_secs(5), s.abusive())
            .await
            .expect("told");
    }
}
