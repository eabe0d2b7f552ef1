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

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::Deserialize;

pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// The `quotas` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// Named tiers, e.g. `gold: { rate: 200/s, burst: 400 }`.
    #[serde(default)]
    pub tiers: BTreeMap<String, TierConfig>,
    /// Mesh-wide consumer -> tier rules.
    #[serde(default)]
    pub consumers: Vec<ConsumerRule>,
    /// Per product (contract `id`): its default tier and its own rules.
    #[serde(default)]
    pub products: BTreeMap<String, ProductQuota>,
    /// The share of a contract's `throughput` one consumer may use when no
    /// tier applies (0 < share <= 1).
    #[serde(default = "default_sla_share")]
    pub sla_share: f64,
    /// Buckets a tier keeps before dropping those that are full again.
    #[serde(default = "default_max_buckets")]
    pub max_buckets: usize,
    /// Where buckets live: `local` (this process) or `redis` (shared by every
    /// replica of the product, so N pods enforce one quota).
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// The shared bucket store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`
    pub url: String,
    /// When Redis cannot answer: `local` (each replica enforces the quota
    /// divided by `replicas`), `deny` (503) or `allow`.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Replicas sharing the quota (for the `local` failure mode).
    #[serde(default = "one_replica")]
    pub replicas: u32,
    /// How long a check may wait for Redis before the failure mode applies.
    #[serde(
        default = "default_redis_timeout",
        deserialize_with = "crate::base::yaml::de_duration"
    )]
    pub timeout: Duration,
    /// Prefix of every key meshgate writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Requests a replica takes from Redis at once for a consumer it saw
    /// within the last second (at most its share of the burst), spent
    /// locally within a second; 1: one round trip per request.
    #[serde(default = "default_lease")]
    pub lease: u32,
}

fn default_lease() -> u32 {
    8
}

fn one_replica() -> u32 {
    1
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_key_prefix() -> String {
    "meshgate:quota:".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    #[default]
    Local,
    Deny,
    Allow,
}

fn default_sla_share() -> f64 {
    1.0
}

fn default_max_buckets() -> usize {
    100_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Sustained rate: `N/s`, `N/m` or `N/h`.
    pub rate: Rate,
    /// Requests allowed at once on a full bucket (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Requests of one consumer to one product being handled at once.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// Requests per second, from `N/s`, `N/m` or `N/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("`{s}`: a rate like 200/s, 30/m or 1000/h"));
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(bad());
        }
        Ok(Rate(n / per))
    }
}

/// Which consumers a rule matches: exactly one of `id`, `prefix`, `group`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerRule {
    /// An exact identity: a SPIFFE id (`dns:`/`cn:` forms for others), or
    /// `<issuer>|<sub>` for users.
    #[serde(default)]
    pub id: Option<String>,
    /// An identity prefix, e.g. `spiffe://mesh.local/ns/marketing/`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A group of the end user (from the token's groups claim).
    #[serde(default)]
    pub group: Option<String>,
    pub tier: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductQuota {
    /// The tier of consumers no rule names.
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub consumers: Vec<ConsumerRule>,
    /// Who the consumer is: the calling `service` (default), or the `user`
    /// on whose behalf it calls (on routes that require a user token).
    #[serde(default)]
    pub consumer: ConsumerKind,
    /// Requests to this product being handled at once (all consumers).
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsumerKind {
    #[default]
    Service,
    User,
}

impl QuotasConfig {
    /// Every problem as `quotas.field: message`.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, t) in &self.tiers {
            if t.burst == Some(0) {
                errors.push(format!("quotas.tiers.{name}.burst: at least 1"));
            }
            if t.max_in_flight == Some(0) {
                errors.push(format!("quotas.tiers.{name}.max_in_flight: at least 1"));
            }
        }
        match (self.backend, &self.redis) {
            (Backend::Redis, None) => {
                errors.push("quotas.redis: the redis backend needs redis.url".into())
            }
            (_, Some(r)) => {
                if !r.url.starts_with("redis://") {
                    errors.push(format!(
                        "quotas.redis.url: `{}`: a redis://host:port URL",
                        r.url
                    ));
                }
                if r.replicas == 0 {
                    errors.push("quotas.redis.replicas: at least 1".into());
                }
            }
            _ => {}
        }
        if !(self.sla_share > 0.0 && self.sla_share <= 1.0) {
            errors.push(format!(
                "quotas.sla_share: {} is not in (0, 1]",
                self.sla_share
            ));
        }
        let mut rules = |field: String, list: &[ConsumerRule]| {
            for (i, r) in list.iter().enumerate() {
                let given = [&r.id, &r.prefix, &r.group]
                    .iter()
                    .filter(|x| x.is_some())
                    .count();
                if given != 1 {
                    errors.push(format!("{field}[{i}]: exactly one of id, prefix or group"));
                }
                if !self.tiers.contains_key(&r.tier) {
                    errors.push(format!("{field}[{i}].tier: no tier `{}`", r.tier));
                }
            }
        };
        rules("quotas.consumers".into(), &self.consumers);
        for (id, p) in &self.products {
            rules(format!("quotas.products.{id}.consumers"), &p.consumers);
        }
        for (id, p) in &self.products {
            if p.max_in_flight == Some(0) {
                errors.push(format!("quotas.products.{id}.max_in_flight: at least 1"));
            }
            if let Some(t) = &p.tier {
                if !self.tiers.contains_key(t) {
                    errors.push(format!("quotas.products.{id}.tier: no tier `{t}`"));
                }
            }
        }
        errors
    }
}

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
    /// Requests a full bucket holds.
    pub burst: u32,
    /// Seconds in which an empty bucket fills again.
    pub window: u64,
    /// Requests still allowed at once.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

impl QuotaState {
    /// `RateLimit-Policy: "gold";q=400;w=2`
    pub fn policy_header(&self) -> String {
        format!("\"{}\";q={};w={}", self.tier, self.burst, self.window)
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
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
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
/// places in the in-flight counts (given back on drop).
pub struct Admitted {
    pub state: Option<QuotaState>,
    _in_flight: InFlight,
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
    ) -> Result<InFlight, Refusal> {
        let mut guard = InFlight {
            counts: counts.clone(),
            product: None,
            consumer: None,
        };
        if product.is_none() && consumer.is_none() {
            return Ok(guard);
        }
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
        Ok(guard)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.product.is_none() && self.consumer.is_none() {
            return;
        }
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

/// GCRA over Redis: `KEYS[1]` the bucket, `ARGV[1]` the emission interval
/// (µs), `ARGV[2]` the burst, `ARGV[3]` how many requests to take at most.
/// Time is Redis's own. Answers `{taken (>= 1), remaining, µs until full}`
/// or `{0, µs until a request may pass, µs until full}`.
const GCRA_LUA: &str = r"
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

/// What the local lease of a consumer says.
enum Lease {
    /// A leased request was spent: the state to report.
    Took { remaining: u32, reset: u64 },
    /// Seen within the last second: worth leasing several.
    Busy,
    /// Not seen lately: ask for one.
    Quiet,
}

/// Requests a replica took from Redis ahead of use, per consumer key.
struct Leased {
    left: u32,
    remaining: u32,
    reset: u64,
    /// Until when the leased requests may be spent.
    until: std::time::Instant,
    /// When the key was last asked for.
    seen: std::time::Instant,
}

/// The Redis connection and what this process remembers of it.
struct SharedStore {
    config: RedisConfig,
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    /// The local pre-check: keys Redis refused, and until when.
    refused: Mutex<HashMap<String, std::time::Instant>>,
    /// Requests leased from Redis for busy consumers.
    leases: Mutex<HashMap<String, Leased>>,
    /// Whether the last call was answered (to log changes, not every failure).
    up: std::sync::atomic::AtomicBool,
    /// Until when Redis is not asked, after a failure.
    rest_until: Mutex<Option<std::time::Instant>>,
    errors: prometheus_client::metrics::counter::Counter,
}

impl SharedStore {
    /// Spends a leased request of `key` if one is left; otherwise says
    /// whether the key is busy (asked for within the last second).
    fn leased(&self, key: &str, max: usize) -> Lease {
        let Ok(mut leases) = self.leases.lock() else {
            return Lease::Quiet;
        };
        let now = std::time::Instant::now();
        let second = Duration::from_secs(1);
        if let Some(l) = leases.get_mut(key) {
            let busy = now.duration_since(l.seen) < second;
            l.seen = now;
            if l.left > 0 && now < l.until {
                l.left -= 1;
                return Lease::Took {
                    remaining: l.remaining.saturating_add(l.left),
                    reset: l.reset,
                };
            }
            l.left = 0;
            return if busy { Lease::Busy } else { Lease::Quiet };
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
                },
            );
        }
        Lease::Quiet
    }

    fn lease(&self, key: &str, left: u32, remaining: u32, reset: u64, valid: Duration) {
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

    fn refused_until(&self, key: &str) -> Option<Duration> {
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

    fn refuse(&self, key: &str, wait: Duration, max: usize) {
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

    fn answered(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.config.url, "quota store answers");
        }
    }

    /// Whether Redis failed less than a second ago.
    fn resting(&self) -> bool {
        self.rest_until
            .lock()
            .map(|r| r.is_some_and(|t| std::time::Instant::now() < t))
            .unwrap_or(false)
    }

    fn failed(&self, why: &str) {
        self.errors.inc();
        if let Ok(mut r) = self.rest_until.lock() {
            let now = std::time::Instant::now();
            if r.is_none_or(|t| now >= t) {
                *r = Some(now + Duration::from_secs(1));
            }
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(url = %self.config.url, error = %why, failure_mode = ?self.config.failure_mode, "quota store does not answer; applying the failure mode");
        } else {
            tracing::debug!(error = %why, "quota store still does not answer");
        }
    }
}

/// The longest period between two requests a quota can have: governor
/// counts in u64 nanoseconds (it panics past 584 years).
const MAX_PERIOD: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `None` for rates no quota can express: slower than one request per
/// [`MAX_PERIOD`], or faster than one per nanosecond.
fn quota_of(rate: f64, burst: u32) -> Option<Quota> {
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| *p <= MAX_PERIOD)?;
    Quota::with_period(period)
        .map(|q| q.allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN)))
}

fn one_second_of(rate: f64) -> u32 {
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
                    rest_until: Mutex::new(None),
                    errors: Default::default(),
                })
            }
            _ => None,
        };
        let mut tiers = HashMap::new();
        for (name, t) in &config.tiers {
            let burst = t.burst.unwrap_or_else(|| one_second_of(t.rate.0));
            let quota = quota_of(t.rate.0, burst)
                .ok_or_else(|| format!("quotas.tiers.{name}.rate: too fast or too slow"))?;
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

    /// Admits one request: the product's and the consumer's in-flight limits
    /// first (a shed request takes nothing from the bucket), then the bucket.
    /// The returned guard holds the in-flight places until dropped.
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
        let guard = InFlight::enter(&self.in_flight, product_limit, consumer_limit)?;
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
            _in_flight: guard,
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
        let window = ceil_secs(period * burst);
        let state = |remaining: u32, reset: u64| QuotaState {
            tier: r.tier.clone(),
            burst,
            window,
            remaining,
            reset,
        };
        if let Some(retry) = redis.refused_until(&r.key) {
            return Ok(Verdict::Limited(state(0, window), ceil_secs(retry).max(1)));
        }
        // A busy consumer takes several requests from Redis at once and
        // spends them here: no round trip per request for a hot key.
        let want = match redis.leased(&r.key, self.config.max_buckets) {
            Lease::Took { remaining, reset } => {
                return Ok(Verdict::Allowed(state(remaining.min(burst), reset)));
            }
            // At most a replica's share of the burst, so the replicas'
            // leases together never exceed one burst.
            // At most a replica's share of the burst and what refills in the
            // second a lease lasts: held leases add at most one second's
            // worth of the rate per replica to what Redis hands out.
            Lease::Busy => redis
                .config
                .lease
                .min(burst / redis.config.replicas.max(1))
                .min((Duration::from_secs(1).as_nanos() / period.as_nanos().max(1)) as u32)
                .max(1),
            Lease::Quiet => 1,
        };
        let emission_us = period.as_micros().max(1) as u64;
        let mut conn = redis.conn.clone();
        let mut invocation = redis
            .script
            .key(format!("{}{}", redis.config.key_prefix, r.key));
        invocation.arg(emission_us).arg(burst).arg(want);
        // After a failure, the failure mode applies at once for a second
        // before Redis is tried again: no request waits for a dead store.
        let answer = if redis.resting() {
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
                    Some(Ok(Err(e))) => e.to_string(),
                    Some(_) => format!("no answer within {:?}", redis.config.timeout),
                    None => "resting after a failure".to_string(),
                };
                redis.failed(&why);
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
        let window = ceil_secs(period * burst);
        let verdict = match r.limiter.check_key(&r.key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Verdict::Allowed(QuotaState {
                    tier: r.tier.clone(),
                    burst,
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
                        burst,
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

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn config(yaml: &str) -> QuotasConfig {
        crate::base::yaml::parse_yaml(yaml, "quotas.yaml").expect("quotas config")
    }

    fn tier(v: &Verdict) -> &str {
        match v {
            Verdict::Unlimited => "-",
            Verdict::Allowed(s) | Verdict::Limited(s, _) => &s.tier,
        }
    }

    fn service(id: &str) -> Consumer<'_> {
        Consumer {
            service: id,
            user: None,
            service_groups: &[],
        }
    }

    #[test]
    fn tiers_resolve_exact_then_group_then_longest_prefix_product_first() {
        let q = Quotas::new(config(
            r#"
tiers: { a: { rate: 10/s }, b: { rate: 10/s }, c: { rate: 10/s }, d: { rate: 10/s }, e: { rate: 10/s } }
consumers:
  - { prefix: "spiffe://m/ns/", tier: a }
  - { prefix: "spiffe://m/ns/x/", tier: b }
  - { id: "spiffe://m/ns/x/sa/exact", tier: c }
products:
  p1: { tier: d, consumers: [ { prefix: "spiffe://m/ns/y/", tier: e } ] }
  p2: { consumer: user, consumers: [ { group: analysts, tier: e } ] }
"#,
        ))
        .expect("quotas");
        let t = |product: &str, id: &str, thr: Option<f64>| {
            tier(&q.check(product, thr, &service(id))).to_string()
        };
        assert_eq!(t("p0", "spiffe://m/ns/z/sa/s", None), "a");
        assert_eq!(t("p0", "spiffe://m/ns/x/sa/s", None), "b");
        assert_eq!(t("p0", "spiffe://m/ns/x/sa/exact", None), "c");
        // A product's own rules come first, then the mesh's, then its tier.
        assert_eq!(t("p1", "spiffe://m/ns/y/sa/s", None), "e");
        assert_eq!(t("p1", "spiffe://m/ns/x/sa/s", None), "b");
        assert_eq!(t("p1", "spiffe://other/sa/s", None), "d");
        // No rule: the contract's throughput, else no quota.
        assert_eq!(t("p0", "spiffe://other/sa/s", Some(50.0)), "sla");
        assert_eq!(t("p0", "spiffe://other/sa/s", None), "-");
        // A user-keyed product counts the user and matches their groups.
        let user = crate::decision::jwt::User {
            id: "https://idp|alice".into(),
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into()],
            scopes: vec![],
            attributes: vec![],
            expires_at: u64::MAX,
        };
        let who = Consumer {
            service: "spiffe://other/sa/s",
            user: Some(&user),
            service_groups: &[],
        };
        assert_eq!(tier(&q.check("p2", None, &who)), "e");
    }

    /// Rates no quota can express: a contract's throughput so slow that
    /// its period overflows governor's nanoseconds got no quota at all (and
    /// a tier that slow panicked); now the slowest quota, and a config error.
    #[test]
    fn rates_too_slow_for_a_quota_are_limited_or_refused() {
        let q = Quotas::new(config("tiers: {}")).expect("quotas");
        for (n, throughput) in [1e-12, 1e-200, 5e-324].into_iter().enumerate() {
            let who = format!("svc{n}");
            let first = q.check("p", Some(throughput), &service(&who));
            assert!(
                matches!(first, Verdict::Allowed(_)),
                "{throughput}: {first:?}"
            );
            let second = q.check("p", Some(throughput), &service(&who));
            assert!(
                matches!(second, Verdict::Limited(..)),
                "{throughput}: {second:?}"
            );
        }
        // Faster than one a nanosecond: nothing to limit.
        assert!(matches!(
            q.check("p", Some(1e12), &service("svc")),
            Verdict::Unlimited | Verdict::Allowed(_)
        ));
        let e = Quotas::new(config("tiers: { slow: { rate: 1e-12/h } }"))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, "quotas.tiers.slow.rate: too fast or too slow");
    }

    #[test]
    fn a_burst_then_refusal_with_an_exact_retry_after() {
        let clock = FakeRelativeClock::default();
        let q = Quotas::with_clock(
            config(
                "tiers: { t: { rate: 2/s, burst: 4 } }\nconsumers: [ { prefix: s, tier: t } ]\n",
            ),
            clock.clone(),
        )
        .expect("quotas");
        for left in [3, 2, 1, 0] {
            match q.check("p", None, &service("svc")) {
                Verdict::Allowed(s) => {
                    assert_eq!(s.remaining, left);
                    assert_eq!(s.policy_header(), "\"t\";q=4;w=2");
                }
                other => panic!("{other:?}"),
            }
        }
        let Verdict::Limited(state, retry) = q.check("p", None, &service("svc")) else {
            panic!("the fifth request must be refused")
        };
        assert_eq!((state.remaining, retry), (0, 1));
        // Half a second later one request has come back, exactly one.
        clock.advance(Duration::from_millis(500));
        assert!(matches!(
            q.check("p", None, &service("svc")),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            q.check("p", None, &service("svc")),
            Verdict::Limited(..)
        ));
        // Another consumer is untouched.
        assert!(matches!(
            q.check("p", None, &service("svc2")),
            Verdict::Allowed(_)
        ));
    }

    /// 1,000,000 identities, one request each, at a simulated million requests
    /// a second, through one tier (1,000/s, burst 5: a bucket is full again
    /// 1 ms after its last request), with one abuser among them sending every
    /// hundredth request. The store never holds more than `max_buckets` plus the
    /// 256 checks between two evictions, and eviction never gives the abuser
    /// more than GCRA allows.
    #[test]
    fn a_million_identities_keep_the_store_bounded_and_the_abuser_limited() {
        let clock = FakeRelativeClock::default();
        let q = Quotas::with_clock(
            config("max_buckets: 10000\ntiers: { t: { rate: 1000/s, burst: 5 } }\nconsumers: [ { prefix: \"\", tier: t } ]\n"),
            clock.clone(),
        )
        .expect("quotas");
        let (mut most, mut abuser_allowed, mut abuser_sent) = (0, 0u64, 0u64);
        for i in 0..1_000_000u32 {
            clock.advance(Duration::from_micros(1));
            let id = format!("spiffe://mesh/ns/flood/sa/{i}");
            assert!(!matches!(
                q.check("p", None, &service(&id)),
                Verdict::Limited(..)
            ));
            if i % 100 == 0 {
                abuser_sent += 1;
                if matches!(
                    q.check("p", None, &service("spiffe://mesh/ns/x/sa/abuser")),
                    Verdict::Allowed(_)
                ) {
                    abuser_allowed += 1;
                }
            }
            if i % 1000 == 0 {
                most = most.max(q.keys());
            }
        }
        most = most.max(q.keys());
        assert!(most <= 10_000 + 256 + 1, "{most} keys held");
        // One simulated second at 1,000/s plus the burst: at most 1,005.
        assert_eq!(abuser_sent, 10_000);
        assert!(abuser_allowed <= 1_005, "{abuser_allowed}");
        assert!(abuser_allowed >= 900, "{abuser_allowed}");
    }
}
