//! The shared store: GCRA in Redis (one Lua script), leases of local capacity.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// GCRA over Redis: `KEYS[1]` the bucket, `ARGV[1]` the emission interval
/// (µs), `ARGV[2]` the burst, `ARGV[3]` how many requests to take at most.
/// Time is Redis's own. Answers `{taken (>= 1), remaining, µs until full}`
/// or `{0, µs until a request may pass, µs until full}`.
pub(super) const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = emission * tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local fit = math.floor((tolerance - (tat - now)) / emission)
if fit < 1 then
  return {0, tat + emission - tolerance - now, tat - now}
end
local took = math.min(want, fit)
local new_tat = tat + took * emission
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {took, math.floor((tolerance - (new_tat - now)) / emission), new_tat - now}
";

/// Failed checks in a row after which Redis is left alone: one timeout (a
/// blip, a slow command) is not an outage, and must not put every
/// consumer into the failure mode; three in a row are.
pub(super) const FAILURES_TO_REST: u32 = 3;

/// While Redis is left alone, one check in this interval asks it (a probe):
/// the failure mode ends within it of Redis answering again, and at most
/// a few checks a second wait on a dead store (each for at most `timeout`).
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Why a check did not ask Redis (in its failure's log line).
pub(super) const RESTING: &str = "resting after failures in a row";

/// A circuit breaker over the store: closed (every check asks Redis) until
/// [`FAILURES_TO_REST`] checks in a row fail, then open (the failure mode
/// applies at once) but for one probe each [`PROBE_INTERVAL`]; any answer
/// closes it.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    /// Checks that asked Redis and failed since it last answered.
    failures: u32,
    /// Open: until when no check asks Redis (the next one after it probes).
    open_until: Option<std::time::Instant>,
}

impl Breaker {
    /// Whether a check at `now` asks Redis: always while closed; while
    /// open, the first check after the interval (which starts the next).
    pub(super) fn ask(&mut self, now: std::time::Instant) -> bool {
        match self.open_until {
            None => true,
            Some(t) if now < t => false,
            Some(_) => {
                self.open_until = Some(now + PROBE_INTERVAL);
                true
            }
        }
    }

    /// Redis answered: closed.
    pub(super) fn answered(&mut self) {
        *self = Breaker::default();
    }

    /// A check that asked Redis failed at `now`; whether that opened it.
    pub(super) fn failed(&mut self, now: std::time::Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        if self.failures < FAILURES_TO_REST {
            return false;
        }
        let opened = self.open_until.is_none();
        self.open_until = Some(now + PROBE_INTERVAL);
        opened
    }
}

/// What checking a consumer's local lease found: a leased request spent, or
/// how busy the consumer is (how many to ask Redis for).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LeaseCheck {
    /// A leased request was spent: the state to report.
    Took { remaining: u32, reset: u64 },
    /// Seen within the last second and no lease on its way: worth leasing
    /// several. The caller fetches them and then calls [`SharedStore::fetched`].
    Busy,
    /// Not seen lately, or a lease is already on its way: ask for one.
    Quiet,
}

/// Requests a replica took from Redis ahead of use, per consumer key.
pub(super) struct Leased {
    pub(super) left: u32,
    pub(super) remaining: u32,
    pub(super) reset: u64,
    /// Until when the leased requests may be spent.
    pub(super) until: std::time::Instant,
    /// When the key was last asked for.
    pub(super) seen: std::time::Instant,
    /// A lease is being fetched from Redis: one at a time per key, so that
    /// concurrent requests cannot each lease a share and together hold more
    /// than this replica's share of the burst.
    pub(super) fetching: bool,
}

/// The Redis connection and what this process remembers of it.
pub(super) struct SharedStore {
    pub(super) config: RedisConfig,
    pub(super) conn: redis::aio::ConnectionManager,
    pub(super) script: redis::Script,
    /// The local pre-check: keys Redis refused, and until when.
    pub(super) refused: Mutex<HashMap<String, std::time::Instant>>,
    /// Requests leased from Redis for busy consumers.
    pub(super) leases: Mutex<HashMap<String, Leased>>,
    /// Whether the last call was answered (to log changes, not every failure).
    pub(super) up: std::sync::atomic::AtomicBool,
    /// Whether checks ask Redis, after failures.
    pub(super) breaker: Mutex<Breaker>,
    pub(super) errors: prometheus_client::metrics::counter::Counter,
}

impl SharedStore {
    /// Spends a leased request of `key` if one is left; otherwise says
    /// whether the key is busy (asked for within the last second).
    pub(super) fn check_lease(&self, key: &str, max: usize) -> LeaseCheck {
        let Ok(mut leases) = self.leases.lock() else {
            return LeaseCheck::Quiet;
        };
        let now = std::time::Instant::now();
        let second = Duration::from_secs(1);
        if let Some(l) = leases.get_mut(key) {
            let busy = now.duration_since(l.seen) < second;
            l.seen = now;
            if l.left > 0 && now < l.until {
                l.left -= 1;
                return LeaseCheck::Took {
                    remaining: l.remaining.saturating_add(l.left),
                    reset: l.reset,
                };
            }
            l.left = 0;
            return if busy && !l.fetching {
                l.fetching = true;
                LeaseCheck::Busy
            } else {
                LeaseCheck::Quiet
            };
        }
        if leases.len() >= max {
            leases.retain(|_, l| now.duration_since(l.seen) < second);
        }
        if leases.len() < max {
            leases.insert(
                key.to_string(),
                Leased {
                    left: 0,
                    remaining: 0,
                    reset: 0,
                    until: now,
                    seen: now,
                    fetching: false,
                },
            );
        }
        LeaseCheck::Quiet
    }

    /// The lease fetch [`LeaseCheck::Busy`] started for `key` is over
    /// (answered, failed or abandoned): the next busy check may fetch again.
    pub(super) fn fetched(&self, key: &str) {
        if let Ok(mut leases) = self.leases.lock() {
            if let Some(l) = leases.get_mut(key) {
                l.fetching = false;
            }
        }
    }

    pub(super) fn lease(&self, key: &str, left: u32, remaining: u32, reset: u64, valid: Duration) {
        if let Ok(mut leases) = self.leases.lock() {
            if let Some(l) = leases.get_mut(key) {
                // Concurrent fetches add up: nothing taken from Redis is lost.
                let now = std::time::Instant::now();
                l.left = if l.until > now { l.left + left } else { left };
                l.remaining = remaining;
                l.reset = reset;
                l.until = l.until.max(now + valid);
            }
        }
    }

    pub(super) fn refused_until(&self, key: &str) -> Option<Duration> {
        let mut refused = self.refused.lock().ok()?;
        let until = *refused.get(key)?;
        let now = std::time::Instant::now();
        if until > now {
            Some(until - now)
        } else {
            refused.remove(key);
            None
        }
    }

    pub(super) fn refuse(&self, key: &str, wait: Duration, max: usize) {
        let Ok(mut refused) = self.refused.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        if refused.len() >= max {
            refused.retain(|_, until| *until > now);
        }
        if refused.len() < max {
            refused.insert(key.to_string(), now + wait);
        }
    }

    pub(super) fn answered(&self) {
        if let Ok(mut b) = self.breaker.lock() {
            b.answered();
        }
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.config.url, "quota store answers");
        }
    }

    /// Whether this check asks Redis (the breaker is closed, or this check
    /// is its probe).
    pub(super) fn ask(&self) -> bool {
        self.breaker
            .lock()
            .map(|mut b| b.ask(std::time::Instant::now()))
            .unwrap_or(true)
    }

    /// A check found no answer: `asked`, Redis failed it; otherwise the
    /// breaker was open and it did not ask.
    pub(super) fn failed(&self, why: &str, asked: bool) {
        self.errors.inc();
        if asked {
            let opened = self
                .breaker
                .lock()
                .is_ok_and(|mut b| b.failed(std::time::Instant::now()));
            if opened {
                tracing::warn!(url = %self.config.url, failures = FAILURES_TO_REST, "quota store failed checks in a row; asking it again once every {PROBE_INTERVAL:?} until it answers");
            }
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(url = %self.config.url, error = %why, failure_mode = ?self.config.failure_mode, "quota store does not answer; applying the failure mode");
        } else {
            tracing::debug!(error = %why, "quota store still does not answer");
        }
    }
}

/// Ends a lease fetch when dropped: also when the request is abandoned
/// while Redis has not answered.
pub(super) struct Fetching<'a> {
    pub(super) store: &'a SharedStore,
    pub(super) key: &'a str,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.store.fetched(self.key);
    }
}
