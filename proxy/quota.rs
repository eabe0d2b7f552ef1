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
}

/// An admitted request: the quota state for its response headers, and its
/// places in the in-flight counts (given back on drop).
pub struct Admitted {
    pub state: Option<QuotaState>,
    _in_flight: InFlight,
}

/// Places taken in the in-flight counts; a count at zero is removed, so only
/// keys with requests in flight are held.
struct InFlight {
    counts: Arc<Mutex<HashMap<String, u32>>>,
    keys: Vec<String>,
}

impl InFlight {
    fn enter(&mut self, key: String, max: u32, what: &'static str) -> Result<(), Refusal> {
        let mut counts = self.counts.lock().map_err(|_| Refusal::Overloaded(what))?;
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&key);
            }
            return Err(Refusal::Overloaded(what));
        }
        *n += 1;
        drop(counts);
        self.keys.push(key);
        Ok(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        for key in &self.keys {
            if let Some(n) = counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(key);
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
    pub user: Option<&'a crate::jwt::User>,
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
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

fn quota_of(rate: f64, burst: u32) -> Option<Quota> {
    let period = Duration::from_secs_f64(1.0 / rate);
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
        let mut tiers = HashMap::new();
        for (name, t) in &config.tiers {
            let burst = t.burst.unwrap_or_else(|| one_second_of(t.rate.0));
            let quota = quota_of(t.rate.0, burst)
                .ok_or_else(|| format!("quotas.tiers.{name}.rate: too fast"))?;
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
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        })
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
    pub fn admit(
        &self,
        product: &str,
        throughput: Option<f64>,
        who: &Consumer<'_>,
    ) -> Result<Admitted, Refusal> {
        let resolved = self.resolve(product, throughput, who);
        let mut guard = InFlight {
            counts: self.in_flight.clone(),
            keys: Vec::new(),
        };
        if let Some(max) = self
            .config
            .products
            .get(product)
            .and_then(|p| p.max_in_flight)
        {
            guard.enter(format!("p\u{0}{product}"), max, "product")?;
        }
        if let Some(r) = &resolved {
            if let Some(max) = r.max_in_flight {
                guard.enter(format!("c\u{0}{}", r.key), max, "consumer")?;
            }
        }
        let state = match resolved.as_ref().map(|r| self.take(r)) {
            None | Some(Verdict::Unlimited) => None,
            Some(Verdict::Allowed(state)) => Some(state),
            Some(Verdict::Limited(state, retry)) => return Err(Refusal::OverQuota(state, retry)),
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
            _ => (who.service, &[]),
        };
        let (tier, quota, limiter, max_in_flight) = match self.tier_for(product, id, groups) {
            Some(b) => (b.name.clone(), b.quota, b.limiter.clone(), b.max_in_flight),
            None => {
                let rate = throughput? * self.config.sla_share;
                let burst = one_second_of(rate);
                let quota = quota_of(rate, burst)?;
                let key = (quota.replenish_interval().as_nanos() as u64, burst);
                let limiter = self
                    .derived
                    .lock()
                    .ok()?
                    .entry(key)
                    .or_insert_with(|| {
                        Arc::new(
                            RateLimiter::dashmap_with_clock(quota, self.clock.clone())
                                .with_middleware::<StateInformationMiddleware>(),
                        )
                    })
                    .clone();
                (self.sla.clone(), quota, limiter, None)
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
            r.limiter.retain_recent();
            r.limiter.shrink_to_fit();
        }
        verdict
    }

    /// Requests in flight under product or consumer limits now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .map(|m| m.values().map(|&n| n as usize).sum())
            .unwrap_or(0)
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
        crate::config::parse_yaml(yaml, "quotas.yaml").expect("quotas config")
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
        let user = crate::jwt::User {
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
        };
        assert_eq!(tier(&q.check("p2", None, &who)), "e");
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
