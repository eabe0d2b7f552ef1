//! The `quotas` section: tiers, consumer rules, per-product limits, the shared store.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

use governor::Quota;

use super::{one_second_of, quota_of, MAX_PERIOD};

/// The shortest `redis.timeout`: no round trip to Redis (a script, on
/// loopback) answers in less, so below it every check would fail and the
/// failure mode would be the quota for good (with `allow`, none at all).
pub const MIN_REDIS_TIMEOUT: Duration = Duration::from_millis(1);

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
    /// How long a check may wait for Redis before the failure mode applies
    /// (at least [`MIN_REDIS_TIMEOUT`]).
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

pub(super) fn default_lease() -> u32 {
    8
}

pub(super) fn one_replica() -> u32 {
    1
}

pub(super) fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

pub(super) fn default_key_prefix() -> String {
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

pub(super) fn default_sla_share() -> f64 {
    1.0
}

pub(super) fn default_max_buckets() -> usize {
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

impl TierConfig {
    /// Requests a full bucket holds: as configured, or one second's worth.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| one_second_of(self.rate.0))
    }

    /// The tier's quota, or why its rate and burst make none: the field
    /// (`rate` or `burst`) and what is wrong with it. Governor counts in u64
    /// nanoseconds: a period or a full bucket's refill time past
    /// [`MAX_PERIOD`] would overflow it (a burst of 307445736 at `1/m`
    /// wrapped, refusing the second request).
    pub(super) fn quota(&self) -> Result<Quota, (&'static str, String)> {
        let period = Duration::try_from_secs_f64(1.0 / self.rate.0).unwrap_or(Duration::MAX);
        if period > MAX_PERIOD {
            return Err(("rate", "slower than one request in 100 years".into()));
        }
        if period.is_zero() {
            return Err(("rate", "faster than one request a nanosecond".into()));
        }
        let burst = self.burst();
        if burst == 0 {
            return Err(("burst", "at least 1".into()));
        }
        let most = MAX_PERIOD.as_nanos() / period.as_nanos();
        if u128::from(burst) > most {
            return Err((
                "burst",
                format!(
                    "{burst} requests take more than 100 years to come back at this rate (at most {most})"
                ),
            ));
        }
        quota_of(self.rate.0, burst).ok_or(("rate", "too fast or too slow".into()))
    }
}

/// Whether `name` may name a tier: it is sent as a structured-field string
/// in `RateLimit-Policy` and `RateLimit`, and is a metric label value.
fn is_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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
            if !is_tier_name(name) {
                errors.push(format!(
                    "quotas.tiers.{}: a tier name is letters, digits, `_`, `.` and `-` (it is sent in RateLimit headers)",
                    name.escape_debug()
                ));
                continue;
            }
            if let Err((field, message)) = t.quota() {
                errors.push(format!("quotas.tiers.{name}.{field}: {message}"));
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
                } else if let Err(e) = redis::Client::open(r.url.as_str()) {
                    errors.push(format!("quotas.redis.url: `{}`: {e}", r.url));
                }
                if r.timeout < MIN_REDIS_TIMEOUT {
                    errors.push(format!(
                        "quotas.redis.timeout: {:?} is below {MIN_REDIS_TIMEOUT:?}: Redis never answers that fast, so every check would apply the failure mode",
                        r.timeout
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

    /// What `validate` warns of and `run` logs when it starts, as (field,
    /// message): a failure mode that lets requests through unmetered, and a
    /// product entry that names no contract (`is_contract` tells the
    /// contract ids of the policy snapshot).
    pub fn warnings(&self, is_contract: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut warnings = Vec::new();
        if let (Backend::Redis, Some(r)) = (self.backend, &self.redis) {
            if r.failure_mode == FailureMode::Allow {
                warnings.push((
                    "quotas.redis.failure_mode".to_string(),
                    "`allow` lets every request through unmetered while Redis does not answer (down, unreachable or slower than `timeout`)".to_string(),
                ));
            }
        }
        for id in self.products.keys().filter(|id| !is_contract(id)) {
            warnings.push((
                format!("quotas.products.{}", id.escape_debug()),
                "no contract has this id: its tier, rules and max_in_flight apply to nothing"
                    .to_string(),
            ));
        }
        warnings
    }
}
