//! SLA quotas: a GCRA bucket (governor) per (product, consumer), its size set
//! by the consumer's tier.
//!
//! A consumer's tier, first match wins: the product's own consumer rules, then
//! the mesh-wide ones (in each list an exact identity beats a group, a group
//! beats the longest matching prefix); then the product's `tier`; then the
//! tier its contract implies (`slaProperties` throughput × `sla_share`, a
//! second's worth of burst); else no quota. Buckets live in one limiter per
//! distinct (rate, burst), so a policy reload that leaves a quota unchanged
//! keeps its live buckets.

mod config;
mod shared;

pub use config::*;
use shared::*;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// Contract-derived limiters by (period in ns, burst).
type DerivedLimiters<C> = HashMap<(u64, u32), Arc<Limiter<C>>>;

type Limiter<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, StateInformationMiddleware>;

/// One bucket size and the limiter holding every bucket of that size.
struct Bucket<C: Clock> {
    name: Arc<str>,
    quota: Quota,
    limiter: Arc<Limiter<C>>,
    max_in_flight: Option<u32>,
}

/// What a quota says about one request; the values of the IETF
/// `RateLimit-Policy` and `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaState {
    /// The tier's name (`sla` for one derived from the contract).
    pub tier: Arc<str>,
    /// Requests the quota allows in `window` (`q`): what the rate gives
    /// back in it, at least a full bucket.
    pub quota: u32,
    /// Seconds in which an empty bucket fills again, rounded up (`w`).
    pub window: u64,
    /// Requests still allowed at once.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

impl QuotaState {
    /// `RateLimit-Policy: "gold";q=400;w=2`
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w={}", self.tier, self.quota, self.window)
    }

    /// `RateLimit: "gold";r=12;t=1`
    pub fn header(&self) -> String {
        format!("\"{}\";r={};t={}", self.tier, self.remaining, self.reset)
    }

    /// Sets `RateLimit-Policy` and `RateLimit` (replacing any the upstream sent).
    pub fn set_headers(&self, h: &mut http::HeaderMap) {
        for (name, value) in [
            (RATELIMIT_POLICY, self.policy_header()),
            (RATELIMIT, self.header()),
        ] {
            // (Tier names are tokens: a value is always one.)
            match http::HeaderValue::from_str(&value) {
                Ok(v) => h.insert(name, v),
                Err(_) => h.remove(name),
            };
        }
    }

    /// Removes `RateLimit-Policy` and `RateLimit`: a request under a quota
    /// that the failure mode let through unmetered has no figures to send,
    /// and the upstream's own would be taken for the quota's.
    pub fn remove_headers(h: &mut http::HeaderMap) {
        h.remove(RATELIMIT_POLICY);
        h.remove(RATELIMIT);
    }
}

/// The `q` and `w` a quota advertises: `w` the seconds a full bucket takes
/// to come back (burst × interval), rounded up; `q` what the rate gives
/// back in `w`, so that `q / w` is the rate (a bucket of one at 1000/s
/// says 1000 in 1 s, not 1 in 1 s), and at least the burst.
fn advertised(quota: &Quota) -> (u32, u64) {
    let burst = quota.burst_size().get();
    let period = quota.replenish_interval();
    let window = ceil_secs(period * burst).max(1);
    let given_back = u128::from(window) * 1_000_000_000 / period.as_nanos().max(1);
    let q = u32::try_from(given_back).unwrap_or(u32::MAX).max(burst);
    (q, window)
}

/// The outcome of one quota check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No quota applies.
    Unlimited,
    Allowed(QuotaState),
    /// Over quota: retry after this many seconds (at least 1).
    Limited(QuotaState, u64),
}

/// A consumer's quota, resolved for one request.
struct Resolved<C: Clock> {
    tier: Arc<str>,
    quota: Quota,
    limiter: Arc<Limiter<C>>,
    max_in_flight: Option<u32>,
    /// `<product>\0<consumer>`
    key: String,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 429: the bucket is empty; retry after this many seconds.
    OverQuota(QuotaState, u64),
    /// 503: the product's or the consumer's in-flight limit is reached.
    Overloaded(&'static str),
    /// 503: the shared bucket store cannot answer (failure mode `deny`).
    Unavailable,
}

/// An admitted request: the quota state for its response headers, and its
/// places in the in-flight counts.
pub struct Admitted {
    pub state: Option<QuotaState>,
    /// A quota applies (`state` is `None` when the failure mode let the
    /// request through unmetered).
    pub metered: bool,
    /// Held until the request is over: its response body has ended or was
    /// dropped (the pipeline moves them into the body).
    pub places: Places,
}

/// A request's places in the product's and the consumer's in-flight
/// counts, given back on drop; none (no allocation, no lock) where neither
/// is limited.
#[derive(Default)]
pub struct Places(Option<Box<InFlight>>);

impl Places {
    /// Gives the places back now (dropping them does too).
    pub fn release(&mut self) {
        self.0.take();
    }
}

/// Requests in flight: per product (configured products only, so the map
/// stays small and its entries are kept) and per consumer (an entry lives
/// while the consumer has requests in flight).
#[derive(Default)]
struct Counts {
    products: HashMap<Arc<str>, u32>,
    consumers: HashMap<String, u32>,
}

/// Places taken in the in-flight counts, given back on drop.
struct InFlight {
    counts: Arc<Mutex<Counts>>,
    product: Option<Arc<str>>,
    consumer: Option<String>,
}

impl InFlight {
    /// Takes a place under both limits, or neither (one lock for both).
    fn enter(
        counts: &Arc<Mutex<Counts>>,
        product: Option<(&str, u32)>,
        consumer: Option<(&str, u32)>,
    ) -> Result<Places, Refusal> {
        if product.is_none() && consumer.is_none() {
            return Ok(Places(None));
        }
        let mut guard = InFlight {
            counts: counts.clone(),
            product: None,
            consumer: None,
        };
        let mut c = counts.lock().map_err(|_| Refusal::Overloaded("product"))?;
        if let Some((p, max)) = product {
            if c.products.get(p).copied().unwrap_or(0) >= max {
                return Err(Refusal::Overloaded("product"));
            }
        }
        if let Some((k, max)) = consumer {
            if c.consumers.get(k).copied().unwrap_or(0) >= max {
                return Err(Refusal::Overloaded("consumer"));
            }
        }
        if let Some((p, _)) = product {
            let key = match c.products.get_key_value(p) {
                Some((k, _)) => k.clone(),
                None => Arc::from(p),
            };
            *c.products.entry(key.clone()).or_insert(0) += 1;
            guard.product = Some(key);
        }
        if let Some((k, _)) = consumer {
            *c.consumers.entry(k.to_string()).or_insert(0) += 1;
            guard.consumer = Some(k.to_string());
        }
        Ok(Places(Some(Box::new(guard))))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        if let Some(n) = self.product.as_deref().and_then(|p| c.products.get_mut(p)) {
            *n = n.saturating_sub(1);
        }
        if let Some(k) = &self.consumer {
            if let Some(n) = c.consumers.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.consumers.remove(k);
                }
            }
        }
    }
}

/// Who is asking, as quotas see it.
pub struct Consumer<'a> {
    /// The calling service's identity (`x-meshgate-principal` form).
    pub service: &'a str,
    /// The end user, when the request carries a verified token.
    pub user: Option<&'a crate::decision::jwt::User>,
    /// The service's `Mesh::Group`s (asked for only when `uses_groups`).
    pub service_groups: &'a [String],
}

/// The quotas of a running sidecar (the clock is a parameter for tests).
pub struct Quotas<C: Clock = DefaultClock> {
    config: QuotasConfig,
    clock: C,
    tiers: HashMap<String, Bucket<C>>,
    /// Contract-derived buckets by (period in ns, burst).
    derived: Mutex<DerivedLimiters<C>>,
    /// The name of contract-derived tiers.
    sla: Arc<str>,
    checks: AtomicU64,
    /// Requests in flight per product and per consumer, where limited.
    in_flight: Arc<Mutex<Counts>>,
    /// The shared store, with the `redis` backend.
    redis: Option<SharedStore>,
    /// Whether any rule names a group (fixed by the configuration).
    uses_groups: bool,
}

/// The longest period between two requests a quota can have, and the
/// longest a full bucket may take to come back: governor counts in u64
/// nanoseconds (it overflows past 584 years).
pub(super) const MAX_PERIOD: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `None` for rates no quota can express: slower than one request per
/// [`MAX_PERIOD`], or faster than one per nanosecond.
pub(super) fn quota_of(rate: f64, burst: u32) -> Option<Quota> {
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| *p <= MAX_PERIOD)?;
    Quota::with_period(period)
        .map(|q| q.allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN)))
}

pub(super) fn one_second_of(rate: f64) -> u32 {
    (rate.ceil() as u32).max(1)
}

impl Quotas {
    pub fn new(config: QuotasConfig) -> Result<Quotas, String> {
        Quotas::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Quotas<C> {
    pub fn with_clock(config: QuotasConfig, clock: C) -> Result<Quotas<C>, String> {
        let errors = config.check();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let uses_groups = config
            .consumers
            .iter()
            .chain(config.products.values().flat_map(|p| &p.consumers))
            .any(|r| r.group.is_some());
        let redis = match (config.backend, &config.redis) {
            (Backend::Redis, Some(rc)) => {
                let client = redis::Client::open(rc.url.as_str())
                    .map_err(|e| format!("quotas.redis.url: `{}`: {e}", rc.url))?;
                let settings = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(rc.timeout.max(Duration::from_millis(100))))
                    .set_response_timeout(Some(rc.timeout))
                    .set_number_of_retries(1);
                // Connects on first use: a sidecar starts without Redis and
                // applies the failure mode until it answers.
                let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, settings)
                    .map_err(|e| format!("quotas.redis: {e}"))?;
                Some(SharedStore {
                    config: rc.clone(),
                    conn,
                    script: redis::Script::new(GCRA_LUA),
                    refused: Mutex::new(HashMap::new()),
                    leases: Mutex::new(HashMap::new()),
                    up: std::sync::atomic::AtomicBool::new(true),
                    breaker: Mutex::new(Breaker::default()),
                    errors: Default::default(),
                })
            }
            _ => None,
        };
        let mut tiers = HashMap::new();
        for (name, t) in &config.tiers {
            // `check` refused a tier without one.
            let quota = t
                .quota()
                .map_err(|(field, message)| format!("quotas.tiers.{name}.{field}: {message}"))?;
            let limiter = RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>();
            tiers.insert(
                name.clone(),
                Bucket {
                    name: Arc::from(name.as_str()),
                    max_in_flight: t.max_in_flight,
                    quota,
                    limiter: Arc::new(limiter),
                },
            );
        }
        Ok(Quotas {
            config,
            clock,
            tiers,
            derived: Mutex::new(HashMap::new()),
            sla: Arc::from("sla"),
            checks: AtomicU64::new(0),
            in_flight: Arc::new(Mutex::new(Counts::default())),
            redis,
            uses_groups,
        })
    }

    /// Counts failed calls to the shared store in `c` (a registered metric).
    pub fn count_store_errors_in(&mut self, c: prometheus_client::metrics::counter::Counter) {
        if let Some(r) = self.redis.as_mut() {
            r.errors = c;
        }
    }

    /// Whether any rule names a group (so a service's groups are worth looking up).
    pub fn uses_groups(&self) -> bool {
        self.uses_groups
    }

    /// The product's consumer kind (who is counted).
    pub fn consumer_kind(&self, product: &str) -> ConsumerKind {
        self.config
            .products
            .get(product)
            .map(|p| p.consumer)
            .unwrap_or_default()
    }

    /// The tier named by the rules for this consumer of `product`.
    fn tier_for(&self, product: &str, id: &str, groups: &[String]) -> Option<&Bucket<C>> {
        let own = self.config.products.get(product);
        let name = own
            .and_then(|p| pick(&p.consumers, id, groups))
            .or_else(|| pick(&self.config.consumers, id, groups))
            .or_else(|| own.and_then(|p| p.tier.as_deref()))?;
        self.tiers.get(name)
    }

    /// Takes one request from the consumer's bucket for `product`.
    /// `throughput` is the product contract's, requests per second.
    pub fn check(&self, product: &str, throughput: Option<f64>, who: &Consumer<'_>) -> Verdict {
        match self.resolve(product, throughput, who) {
            Some(r) => self.take(&r),
            None => Verdict::Unlimited,
        }
    }

    /// The quota a consumer of `product` is held to, as a full bucket
    /// (`remaining` = `burst`), without taking from it; `None`: no quota.
    /// What the caller view (`/.well-known/data-product/{id}/caller`) shows.
    pub fn policy(
        &self,
        product: &str,
        throughput: Option<f64>,
        who: &Consumer<'_>,
    ) -> Option<QuotaState> {
        let r = self.resolve(product, throughput, who)?;
        let (quota, window) = advertised(&r.quota);
        Some(QuotaState {
            tier: r.tier,
            quota,
            window,
            remaining: r.quota.burst_size().get(),
            reset: 0,
        })
    }

    /// Admits one request: the product's and the consumer's in-flight limits
    /// first (a shed request takes nothing from the bucket), then the bucket.
    /// The returned places are held until dropped: with the response body.
    pub async fn admit(
        &self,
        product: &str,
        throughput: Option<f64>,
        who: &Consumer<'_>,
    ) -> Result<Admitted, Refusal> {
        let resolved = self.resolve(product, throughput, who);
        let product_limit = self
            .config
            .products
            .get(product)
            .and_then(|p| p.max_in_flight)
            .map(|max| (product, max));
        let consumer_limit = resolved
            .as_ref()
            .and_then(|r| r.max_in_flight.map(|max| (r.key.as_str(), max)));
        let places = InFlight::enter(&self.in_flight, product_limit, consumer_limit)?;
        let verdict = match (&resolved, &self.redis) {
            (None, _) => Verdict::Unlimited,
            (Some(r), None) => self.take(r),
            // Boxed: the Redis call's state machine is large, and the local
            // path (most sidecars) should not carry its size in every request.
            (Some(r), Some(redis)) => Box::pin(self.take_shared(redis, r)).await?,
        };
        let state = match verdict {
            Verdict::Unlimited => None,
            Verdict::Allowed(state) => Some(state),
            Verdict::Limited(state, retry) => return Err(Refusal::OverQuota(state, retry)),
        };
        Ok(Admitted {
            state,
            metered: resolved.is_some(),
            places,
        })
    }

    /// The consumer's tier, bucket and key for `product`; `None`: no quota.
    fn resolve(
        &self,
        product: &str,
        throughput: Option<f64>,
        who: &Consumer<'_>,
    ) -> Option<Resolved<C>> {
        let (id, groups): (&str, &[String]) = match (self.consumer_kind(product), who.user) {
            (ConsumerKind::User, Some(u)) => (&u.id, &u.groups),
            _ => (who.service, who.service_groups),
        };
        let (tier, quota, limiter, max_in_flight) = match self.tier_for(product, id, groups) {
            Some(b) => (b.name.clone(), b.quota, b.limiter.clone(), b.max_in_flight),
            None => {
                let rate = throughput? * self.config.sla_share;
                let burst = one_second_of(rate);
                let quota = match quota_of(rate, burst) {
                    Some(q) => q,
                    // Slower than any quota: the slowest, not none.
                    None if rate < 1.0 => Quota::with_period(MAX_PERIOD)?,
                    // Faster than one request a nanosecond: no limit to keep.
                    None => return None,
                };
                (self.sla.clone(), quota, self.limiter_for(quota)?, None)
            }
        };
        Some(Resolved {
            tier,
            quota,
            limiter,
            max_in_flight,
            key: format!("{product}\u{0}{id}"),
        })
    }

    /// The limiter of buckets of this size (made on first use).
    fn limiter_for(&self, quota: Quota) -> Option<Arc<Limiter<C>>> {
        let key = (
            quota.replenish_interval().as_nanos() as u64,
            quota.burst_size().get(),
        );
        Some(
            self.derived
                .lock()
                .ok()?
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(
                        RateLimiter::dashmap_with_clock(quota, self.clock.clone())
                            .with_middleware::<StateInformationMiddleware>(),
                    )
                })
                .clone(),
        )
    }

    /// The consumer's bucket in Redis: GCRA in one atomic script on Redis's
    /// clock, so every replica takes from the same bucket. A key Redis
    /// refused is refused here until its retry time without asking again.
    async fn take_shared(&self, redis: &SharedStore, r: &Resolved<C>) -> Result<Verdict, Refusal> {
        let burst = r.quota.burst_size().get();
        let period = r.quota.replenish_interval();
        let (quota, window) = advertised(&r.quota);
        let state = |remaining: u32, reset: u64| QuotaState {
            tier: r.tier.clone(),
            quota,
            window,
            remaining,
            reset,
        };
        // A busy consumer takes several requests from Redis at once and
        // spends them here: no round trip per request for a hot key. Leased
        // requests were taken from Redis already: they are spent before the
        // local refusal below, which would otherwise leave them to expire.
        let busy = match redis.check_lease(&r.key, self.config.max_buckets) {
            LeaseCheck::Took { remaining, reset } => {
                return Ok(Verdict::Allowed(state(remaining.min(burst), reset)));
            }
            LeaseCheck::Busy => true,
            LeaseCheck::Quiet => false,
        };
        // The one lease fetch of this key, ended however this call ends.
        let _fetching = busy.then_some(Fetching {
            store: redis,
            key: &r.key,
        });
        if let Some(retry) = redis.refused_until(&r.key) {
            return Ok(Verdict::Limited(state(0, window), ceil_secs(retry).max(1)));
        }
        // At most a replica's share of the burst, so the replicas' leases
        // together never exceed one burst, and what refills in the second a
        // lease lasts: held leases add at most one second's worth of the
        // rate per replica to what Redis hands out.
        let want = if busy {
            redis
                .config
                .lease
                .min(burst / redis.config.replicas.max(1))
                .min((Duration::from_secs(1).as_nanos() / period.as_nanos().max(1)) as u32)
                .max(1)
        } else {
            1
        };
        let emission_us = redis_emission_us(period);
        let mut conn = redis.conn.clone();
        let mut invocation = redis
            .script
            .key(format!("{}{}", redis.config.key_prefix, r.key));
        invocation.arg(emission_us).arg(burst).arg(want);
        // After failures in a row, the failure mode applies at once but for
        // a probe now and then: no request waits for a dead store.
        let asked = redis.ask();
        let answer = if !asked {
            None
        } else {
            let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
            Some(tokio::time::timeout(redis.config.timeout, call).await)
        };
        match answer {
            Some(Ok(Ok((took, n, full_us)))) => {
                redis.answered();
                let full = Duration::from_micros(full_us.max(0) as u64);
                let reset = ceil_secs(full);
                if took >= 1 {
                    let took = u32::try_from(took).unwrap_or(1);
                    let remaining = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
                    let left = took - 1;
                    if left > 0 {
                        redis.lease(&r.key, left, remaining, reset, Duration::from_secs(1));
                    }
                    Ok(Verdict::Allowed(state(
                        remaining.saturating_add(left).min(burst),
                        reset,
                    )))
                } else {
                    let wait = Duration::from_micros(n.max(0) as u64);
                    redis.refuse(&r.key, wait, self.config.max_buckets);
                    Ok(Verdict::Limited(state(0, reset), ceil_secs(wait).max(1)))
                }
            }
            failed => {
                let why = match failed {
                    // The client's own response timeout is the same bound.
                    Some(Ok(Err(e))) if !e.is_timeout() => e.to_string(),
                    Some(_) => format!("no answer within {:?}", redis.config.timeout),
                    None => RESTING.to_string(),
                };
                redis.failed(&why, asked);
                match redis.config.failure_mode {
                    FailureMode::Allow => Ok(Verdict::Unlimited),
                    FailureMode::Deny => Err(Refusal::Unavailable),
                    FailureMode::Local => self.take_local_share(r, redis.config.replicas),
                }
            }
        }
    }

    /// The `local` failure mode: this replica's share of the quota (rate and
    /// burst divided by `replicas`), in its own buckets.
    fn take_local_share(&self, r: &Resolved<C>, replicas: u32) -> Result<Verdict, Refusal> {
        let replicas = replicas.max(1);
        let burst =
            NonZeroU32::new(r.quota.burst_size().get() / replicas).unwrap_or(NonZeroU32::MIN);
        let period = r
            .quota
            .replenish_interval()
            .checked_mul(replicas)
            .map_or(MAX_PERIOD, |p| p.min(MAX_PERIOD));
        let quota = Quota::with_period(period)
            .map(|q| q.allow_burst(burst))
            .ok_or(Refusal::Unavailable)?;
        let limiter = self.limiter_for(quota).ok_or(Refusal::Unavailable)?;
        Ok(self.take(&Resolved {
            tier: r.tier.clone(),
            quota,
            limiter,
            max_in_flight: None,
            key: r.key.clone(),
        }))
    }

    fn take(&self, r: &Resolved<C>) -> Verdict {
        let burst = r.quota.burst_size().get();
        let period = r.quota.replenish_interval();
        let (quota, window) = advertised(&r.quota);
        let verdict = match r.limiter.check_key(&r.key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Verdict::Allowed(QuotaState {
                    tier: r.tier.clone(),
                    quota,
                    window,
                    remaining,
                    reset: ceil_secs(period * (burst - remaining.min(burst))),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Verdict::Limited(
                    QuotaState {
                        tier: r.tier.clone(),
                        quota,
                        window,
                        remaining: 0,
                        reset: ceil_secs(period * burst),
                    },
                    ceil_secs(wait).max(1),
                )
            }
        };
        // Now and then (a length costs a look at every shard): past the
        // bound, forget the buckets that are full again (a fresh bucket is
        // exactly what a forgotten key gets, so nobody gains by eviction).
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(256)
            && r.limiter.len() > self.config.max_buckets
        {
            let before = r.limiter.len();
            r.limiter.retain_recent();
            if r.limiter.len() < before {
                r.limiter.shrink_to_fit();
            }
        }
        verdict
    }

    /// Keys held over all limiters.
    pub fn keys(&self) -> usize {
        let derived: usize = self
            .derived
            .lock()
            .map(|m| m.values().map(|l| l.len()).sum())
            .unwrap_or(0);
        self.tiers.values().map(|b| b.limiter.len()).sum::<usize>() + derived
    }
}

/// The tier of the first rule matching `id`: exact identity, else group,
/// else the longest prefix.
fn pick<'a>(rules: &'a [ConsumerRule], id: &str, groups: &[String]) -> Option<&'a str> {
    let exact = rules.iter().find(|r| r.id.as_deref() == Some(id));
    let group = || {
        rules
            .iter()
            .find(|r| r.group.as_ref().is_some_and(|g| groups.contains(g)))
    };
    let prefix = || {
        rules
            .iter()
            .filter(|r| {
                r.prefix
                    .as_ref()
                    .is_some_and(|p| id.starts_with(p.as_str()))
            })
            .max_by_key(|r| r.prefix.as_ref().map(String::len))
    };
    exact
        .or_else(group)
        .or_else(prefix)
        .map(|r| r.tier.as_str())
}

/// The interval between two requests as the Redis script counts it: whole
/// microseconds (its clock is Redis's `TIME`), rounded up so that a rate
/// whose interval is not whole is enforced a little below it, never above
/// (600,000/s, 1.67 µs, as 500,000/s; rounded down it had been 1,000,000/s).
fn redis_emission_us(period: Duration) -> u64 {
    u64::try_from(period.as_nanos().div_ceil(1_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

#[cfg(test)]
mod tests;
