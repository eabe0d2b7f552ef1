//! Per-thread caches of a decision's inputs: entities and candidates per
//! caller and resource, contexts and extension values per second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use cedar_policy::{Context, RestrictedExpression};

use crate::FastMap;

use super::*;

// Building an extension value (`ip(..)`, `datetime(..)`) makes cedar-policy
// parse the function's name anew (its lexer builds a regex cache each time),
// several µs each; values repeat (a client's address, the current second),
// so each thread keeps the last ones.

/// What a thread remembers about a caller and a resource of one snapshot: the
/// decision entities and, per enforced/shadow and action, the candidates.
pub(super) struct Remembered {
    pub(super) who: DecisionEntities,
    pub(super) candidates: [[Option<Rc<Candidates>>; ACTIONS]; SLOTS],
}

/// Per-thread decision cache: caller (header form) -> (snapshot serial,
/// resource index) -> what was built. Looked up by `&str`, so a hit allocates
/// nothing; bounded by clearing it whole when full. A thread keeps two: one
/// for the resources requests name (products and datasets), one for fields
/// ([`decisions_of`]), so that building the field plans of a wide dataset
/// for many callers never empties the cache requests are decided from.
#[derive(Default)]
pub(super) struct DecisionCache {
    pub(super) callers: FastMap<String, FastMap<(u64, usize), Remembered>>,
    pub(super) len: usize,
}

impl DecisionCache {
    /// Entries of each of a thread's two caches.
    pub(super) const CAPACITY: usize = 4096;

    pub(super) fn clear(&mut self) {
        // Dropping the candidates uncounts their remembered outcomes.
        self.callers.clear();
        self.len = 0;
    }

    pub(super) fn get(&self, caller: &str, key: (u64, usize)) -> Option<&Remembered> {
        self.callers.get(caller)?.get(&key)
    }

    pub(super) fn get_mut(&mut self, caller: &str, key: (u64, usize)) -> Option<&mut Remembered> {
        self.callers.get_mut(caller)?.get_mut(&key)
    }

    pub(super) fn insert(&mut self, caller: &str, key: (u64, usize), who: DecisionEntities) {
        if self.len >= Self::CAPACITY {
            self.clear();
        }
        let entry = Remembered {
            who,
            candidates: Default::default(),
        };
        let per_caller = self.callers.entry(caller.to_string()).or_default();
        if per_caller.insert(key, entry).is_none() {
            self.len += 1;
        }
    }
}

/// Distinguishes snapshots in the per-thread caches.
pub(super) static SNAPSHOT_SERIAL: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Condition outcomes a thread may remember across all its candidates (each
/// at most a few hundred bytes: values longer than `Part::LONGEST_VALUE` are
/// not remembered) before it forgets everything it cached.
pub(super) const MEMO_LIMIT: usize = 65_536;

impl Drop for Part {
    fn drop(&mut self) {
        forget(self.seen.get_mut().len());
    }
}

/// Counts `n` remembered outcomes fewer.
pub(super) fn forget(n: usize) {
    // `try_with`: a part may be dropped while the thread's locals are torn down.
    let _ = MEMO_ENTRIES.try_with(|c| c.set(c.get().saturating_sub(n)));
}

/// Counts one more remembered outcome; past `MEMO_LIMIT`, empties the
/// thread's decision cache (the outcomes live in it), so that clients sending
/// ever new purposes cannot grow it without bound.
pub(super) fn remembered_one_more() {
    let n = MEMO_ENTRIES.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    if n > MEMO_LIMIT {
        for cache in [&DECISIONS, &FIELD_DECISIONS] {
            cache.with(|c| {
                if let Ok(mut c) = c.try_borrow_mut() {
                    c.clear();
                }
            });
        }
    }
}

/// The thread's decision cache for a resource of `kind`: fields have
/// their own. A field's entry is still worth keeping beside the plans:
/// when a plan misses (another purpose, another second), its fields'
/// entities and specialised candidates are found here, and a plan's key is
/// made from what their candidates read.
pub(super) fn decisions_of(kind: usize) -> &'static DecisionCacheKey {
    if kind == FIELD {
        &FIELD_DECISIONS
    } else {
        &DECISIONS
    }
}

/// One of a thread's decision caches.
pub(super) type DecisionCacheKey = std::thread::LocalKey<std::cell::RefCell<DecisionCache>>;

thread_local! {
    static MEMO_ENTRIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Products and datasets: what requests are decided about.
    static DECISIONS: std::cell::RefCell<DecisionCache> = std::cell::RefCell::new(DecisionCache::default());
    /// Fields: what field plans are built from.
    static FIELD_DECISIONS: std::cell::RefCell<DecisionCache> = std::cell::RefCell::new(DecisionCache::default());
    static TIME_EXPR: std::cell::RefCell<Option<(u64, RestrictedExpression)>> =
        const { std::cell::RefCell::new(None) };
    static IP_EXPRS: std::cell::RefCell<FastMap<IpAddr, RestrictedExpression>> =
        std::cell::RefCell::new(HashMap::default());
}

/// The key of a cached context, borrowed from the request: what its Cedar
/// context is made of besides the second (the cache holds one second's
/// contexts). Hashed and compared without copying.
#[derive(Hash, PartialEq, Eq)]
pub(super) struct ContextKeyRef<'a> {
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) source_ip: IpAddr,
    pub(super) tls_version: &'a str,
    pub(super) purpose: Option<&'a str>,
    pub(super) user: Option<&'a str>,
}

impl<'a> ContextKeyRef<'a> {
    pub(super) fn of(parsed: &ParsedRequest<'a>) -> Self {
        ContextKeyRef {
            method: parsed.method,
            path: parsed.path,
            source_ip: parsed.source_ip,
            tls_version: parsed.tls_version,
            purpose: parsed.purpose,
            user: parsed.user.map(|u| u.id.as_str()),
        }
    }
}

/// The same key, owned: kept with a cached context to confirm a hit.
pub(super) struct ContextKey {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) source_ip: IpAddr,
    pub(super) tls_version: String,
    pub(super) purpose: Option<String>,
    pub(super) user: Option<String>,
}

impl ContextKey {
    pub(super) fn new(f: &ContextKeyRef<'_>) -> Self {
        ContextKey {
            method: f.method.to_string(),
            path: f.path.to_string(),
            source_ip: f.source_ip,
            tls_version: f.tls_version.to_string(),
            purpose: f.purpose.map(str::to_string),
            user: f.user.map(str::to_string),
        }
    }

    pub(super) fn borrowed(&self) -> ContextKeyRef<'_> {
        ContextKeyRef {
            method: &self.method,
            path: &self.path,
            source_ip: self.source_ip,
            tls_version: &self.tls_version,
            purpose: self.purpose.as_deref(),
            user: self.user.as_deref(),
        }
    }
}

/// Contexts by the hash of their key, with the key to confirm a hit.
pub(super) type ContextCache = FastMap<u64, (ContextKey, Context)>;

thread_local! {
    /// Seeded per thread: clients choose most of what is hashed.
    static CONTEXT_HASHER: foldhash::fast::RandomState = foldhash::fast::RandomState::default();
    /// The contexts of the current second, by the hash of their key:
    /// requests repeat (same client, same path), and evaluating a context's
    /// expressions costs microseconds. A hash collision replaces the entry.
    static CONTEXTS: std::cell::RefCell<(u64, ContextCache)> =
        std::cell::RefCell::new((0, HashMap::default()));
}

pub(super) fn cached_context(parsed: &ParsedRequest<'_>) -> Result<Context, String> {
    let second = policy_second(parsed.time);
    let wanted = ContextKeyRef::of(parsed);
    let hash = CONTEXT_HASHER.with(|b| std::hash::BuildHasher::hash_one(b, &wanted));
    let hit = CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            c.0 = second;
            c.1.clear();
        }
        c.1.get(&hash)
            .filter(|(key, _)| key.borrowed() == wanted)
            .map(|(_, ctx)| ctx.clone())
    });
    if let Some(ctx) = hit {
        return Ok(ctx);
    }
    let ctx = Snapshot::context(parsed)?;
    CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.1.len() < 1024 || c.1.contains_key(&hash) {
            c.1.insert(hash, (ContextKey::new(&wanted), ctx.clone()));
        }
    });
    Ok(ctx)
}

/// The whole second of `t` since the epoch: policies see the request's
/// time rounded down to the second. Cedar parses the `datetime` extension's
/// name each time such a value is made (several µs), so a finer clock would
/// cost every request that much at low rates, and rebuild the contexts every
/// millisecond at high ones.
pub(super) fn policy_second(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `context.time`: the request's time, truncated to the second.
pub(super) fn time_expr(t: SystemTime) -> RestrictedExpression {
    let second = policy_second(t);
    TIME_EXPR.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((at, e)) if *at == second => e.clone(),
            _ => {
                let e = datetime_expr(&cedar_datetime(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second),
                ));
                *slot = Some((second, e.clone()));
                e
            }
        }
    })
}

/// `datetime("<text>")` as a restricted expression: the same expression
/// `RestrictedExpression::new_datetime` builds (a test holds them equal),
/// made from the name parsed once ([`DATETIME_NAME`]). cedar-policy's
/// `RestrictedExpression::new_datetime` parses it on every call, and a parse
/// builds the whole lexer (its regex caches) anew: 46,000 of the 113,000
/// instructions of a decision in a new second at 10,000 policies (callgrind,
/// 2026-12-04). The conversion from cedar-policy-core's
/// expression is public but hidden from cedar-policy's docs; the core is
/// pinned to the version cedar-policy itself pins, so a mismatch is a build
/// error, never a silent change.
pub(super) fn datetime_expr(text: &str) -> RestrictedExpression {
    use cedar_policy_core::ast::RestrictedExpr;
    match &*DATETIME_NAME {
        Some(name) => {
            RestrictedExpr::call_extension_fn(name.clone(), [RestrictedExpr::val(text)]).into()
        }
        None => RestrictedExpression::new_datetime(text),
    }
}

pub(super) fn ip_expr(ip: IpAddr) -> RestrictedExpression {
    IP_EXPRS.with(|cell| {
        let mut map = cell.borrow_mut();
        if let Some(e) = map.get(&ip) {
            return e.clone();
        }
        if map.len() >= 4096 {
            map.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        map.insert(ip, e.clone());
        e
    })
}
