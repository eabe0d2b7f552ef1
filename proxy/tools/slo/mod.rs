//! SLO rules: a Prometheus rule file generated from the products' contracts
//! (`meshgate slo-rules`).
//!
//! Each product's `slaProperties` become up to two SLOs over a 30-day period:
//!
//! - **availability**: the share of allowed (or shed) requests answered
//!   with a 5xx, against the contract's `availability`; requests whose own
//!   body failed (the client's fault, 400/499) count neither way;
//! - **latency**: the share of allowed requests slower than the contract's
//!   `latency`, read from the request-duration histogram at the first bucket
//!   bound at or above it, against [`LATENCY_OBJECTIVE`] (ODCS gives a latency
//!   but no percentile).
//!
//! For every SLO: recording rules `slo:sli_error:ratio_rate<window>` over the
//! windows of the alerts, and multiwindow, multi-burn-rate alerts as in the
//! Google SRE workbook (chapter 5): page when the 1h and 5m error ratios are
//! above 14.4× the budget or the 6h and 30m ones above 6×; ticket at 3× over
//! 1d and 2h or 1× over 3d and 6h. A slower group records the 30-day ratio
//! and the error budget left, for dashboards. One more group holds alerts
//! that do not depend on contracts: certificates about to expire, failing
//! policy reloads, dropped audit events, a spike of refused TLS handshakes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decision::authz::PolicyConfig;
use crate::decision::contract::Product;
use crate::runtime::config::{Config, ConfigError};

/// The SLO period: error budgets are counted over 30 days.
pub const PERIOD: &str = "30d";

/// The share of allowed requests that must be faster than the contract's
/// latency.
pub const LATENCY_OBJECTIVE: f64 = 0.99;

/// Every window an SLI is recorded over: the alerts' short and long windows.
pub const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];

/// How often the period (30-day) rules are evaluated: they read a month of
/// samples, and dashboards need no fresher value.
pub const PERIOD_INTERVAL: &str = "5m";

/// One burn-rate condition: the error ratio over both windows is above
/// `factor` × the error budget.
struct Burn {
    long: &'static str,
    short: &'static str,
    factor: f64,
}

/// An alert of one severity: any of its conditions.
struct BurnAlert {
    severity: &'static str,
    conditions: [Burn; 2],
    /// What firing means, for the description.
    meaning: &'static str,
}

const BURN_ALERTS: [BurnAlert; 2] = [
    BurnAlert {
        severity: "page",
        conditions: [
            Burn {
                long: "1h",
                short: "5m",
                factor: 14.4,
            },
            Burn {
                long: "6h",
                short: "30m",
                factor: 6.0,
            },
        ],
        meaning: "2% of the 30-day error budget spent in an hour (14.4x over 1h and 5m) or 5% in six hours (6x over 6h and 30m)",
    },
    BurnAlert {
        severity: "ticket",
        conditions: [
            Burn {
                long: "1d",
                short: "2h",
                factor: 3.0,
            },
            Burn {
                long: "3d",
                short: "6h",
                factor: 1.0,
            },
        ],
        meaning: "10% of the 30-day error budget spent in a day (3x over 1d and 2h) or in three days (1x over 3d and 6h)",
    },
];

/// A Prometheus rule file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub rules: Vec<Rule>,
}

/// A recording rule (`record`) or an alerting rule (`alert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    fn record(name: &str, expr: String, labels: BTreeMap<String, String>) -> Rule {
        Rule {
            record: Some(name.to_string()),
            alert: None,
            expr,
            for_: None,
            labels,
            annotations: BTreeMap::new(),
        }
    }

    fn alert(
        name: &str,
        expr: String,
        for_: Option<&str>,
        labels: &[(&str, &str)],
        annotations: &[(&str, String)],
    ) -> Rule {
        Rule {
            record: None,
            alert: Some(name.to_string()),
            expr,
            for_: for_.map(str::to_string),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }
}

/// The latency SLO's threshold: a bucket bound of the duration histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyThreshold {
    /// What the contract promises.
    pub contract: Duration,
    /// The bucket bound used, in seconds (at or above `contract`).
    pub bound: f64,
    /// The bound as the `le` label value of the exposition.
    pub le: String,
}

impl LatencyThreshold {
    /// The first of `buckets` (`metrics.duration_buckets`) at or above
    /// `latency`; `None` above the last one.
    pub fn for_latency(latency: Duration, buckets: &[f64]) -> Option<LatencyThreshold> {
        let ns = latency.as_nanos();
        let bound = buckets
            .iter()
            .copied()
            .find(|b| (b * 1e9).round() as u128 >= ns)?;
        Some(LatencyThreshold {
            contract: latency,
            bound,
            le: le_label(bound),
        })
    }

    /// Whether the contract's latency is not itself a bucket bound.
    pub fn rounded(&self) -> bool {
        (self.bound * 1e9).round() as u128 != self.contract.as_nanos()
    }
}

/// A bucket bound as prometheus-client writes it in `le`: shortest
/// round-trip decimal, integers with `.0` (`0.25`, `1.0`, `10.0`).
pub fn le_label(bound: f64) -> String {
    format!("{bound:?}")
}

/// The SLOs of one product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductSlos {
    pub product: String,
    pub domain: String,
    pub version: String,
    /// Objective, e.g. 0.999.
    pub availability: Option<f64>,
    pub latency: Option<LatencyThreshold>,
}

/// The generated rules and what the operator should know about them.
#[derive(Debug, Clone)]
pub struct Generated {
    pub slos: Vec<ProductSlos>,
    pub sunsets: Vec<super::sunset::Sunset>,
    pub conformance: Vec<super::conformance::Watched>,
    pub rules: RuleFile,
    /// Contract SLAs that could not become (complete) SLOs.
    pub warnings: Vec<String>,
}

/// The `policy` section of a sidecar configuration file, its paths resolved
/// against the file's directory as `meshgate run` does. Only that section is
/// read: the TLS files need not exist where rules are generated (CI of the
/// policy repository holds no keys).
pub fn policy_section(path: &Path) -> Result<PolicyConfig, ConfigError> {
    let config: Config = crate::base::yaml::read_yaml(path)?;
    let mut policy = config.policy.ok_or_else(|| ConfigError::Invalid {
        file: path.display().to_string(),
        field: "policy",
        message: "missing: the SLOs come from the contracts of the policy section".into(),
    })?;
    policy.resolve(&crate::base::paths::dir_of(path));
    Ok(policy)
}

/// The SLOs of each product, sorted by product id, and warnings for SLAs
/// that cannot be watched.
pub fn slos<'a>(
    products: impl IntoIterator<Item = &'a Product>,
    buckets: &[f64],
) -> (Vec<ProductSlos>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut out: Vec<ProductSlos> = products
        .into_iter()
        .map(|p| {
            let availability = match p.sla.availability {
                Some(a) if a >= 100.0 => {
                    warnings.push(format!(
                        "{}: availability {a}% leaves no error budget; no availability SLO (promise e.g. 99.99)",
                        p.id
                    ));
                    None
                }
                Some(a) if a <= 0.0 => {
                    warnings.push(format!(
                        "{}: availability {a}% promises nothing; no availability SLO",
                        p.id
                    ));
                    None
                }
                Some(a) => Some(a / 100.0),
                None => None,
            };
            let latency = p.sla.latency.and_then(|l| {
                let t = LatencyThreshold::for_latency(l, buckets);
                if t.is_none() {
                    warnings.push(format!(
                        "{}: latency {} is above the largest bucket of meshgate_request_duration_seconds ({}s); no latency SLO (add a bucket to metrics.duration_buckets)",
                        p.id,
                        humantime::format_duration(l),
                        buckets.last().map_or_else(String::new, |b| le_label(*b)),
                    ));
                }
                t
            });
            if let Some(o) = availability {
                let budget = 1.0 - o;
                if BURN_ALERTS[0].conditions[0].factor * budget >= 1.0 {
                    warnings.push(format!(
                        "{}: with an error budget of {}%, a 14.4x burn needs more than 100% errors: the 1h/5m page condition can never fire",
                        p.id,
                        number(budget * 100.0)
                    ));
                }
            }
            ProductSlos {
                product: p.id.clone(),
                domain: p.domain.clone(),
                version: p.version.clone(),
                availability,
                latency,
            }
        })
        .collect();
    out.sort_by(|a, b| a.product.cmp(&b.product));
    (out, warnings)
}

/// The rule file for these products' SLAs (latency thresholds on `buckets`,
/// `metrics.duration_buckets`), the sunset alerts of their deprecated
/// versions (from `sunset_window` before), and the static alerts.
pub fn generate<'a>(
    products: impl IntoIterator<Item = &'a Product>,
    buckets: &[f64],
    sunset_window: Duration,
    conformance: crate::decision::fields::ConformanceSettings,
) -> Result<Generated, GroupTwice> {
    let products: Vec<&Product> = products.into_iter().collect();
    let (slos, mut warnings) = slos(products.iter().copied(), buckets);
    let sunsets = super::sunset::sunsets(&products, sunset_window, &mut warnings);
    let mut groups = Vec::new();
    // Who each group is for, to name both when a name comes twice.
    let mut owners = Vec::new();
    for s in &slos {
        let own = product_groups(s);
        let file = products.iter().find(|p| p.id == s.product).map(|p| &p.file);
        let owner = format!("product `{}` of {}", s.product, file.map_or("?", |f| f));
        owners.extend(own.iter().map(|_| owner.clone()));
        groups.extend(own);
    }
    groups.extend(super::sunset::group(&sunsets));
    let conformance = super::conformance::watched(&products, conformance);
    groups.extend(super::conformance::group(&conformance));
    groups.push(static_group());
    owners.resize(groups.len(), "meshgate's own alerts".to_string());
    once_each(&groups, &owners)?;
    Ok(Generated {
        slos,
        sunsets,
        conformance,
        rules: RuleFile { groups },
        warnings,
    })
}

/// A rule group name that would be written twice: Prometheus refuses a
/// file that repeats one, and with it every domain's alerts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rule group `{name}` would be written twice, for {first} and for {second}: Prometheus refuses a rule file that repeats a group name")]
pub struct GroupTwice {
    pub name: String,
    pub first: String,
    pub second: String,
}

/// Each group name once (`owners[i]`: who group `i` is for).
fn once_each(groups: &[RuleGroup], owners: &[String]) -> Result<(), GroupTwice> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        if let Some(&first) = seen.get(g.name.as_str()) {
            return Err(GroupTwice {
                name: g.name.clone(),
                first: owners[first].clone(),
                second: owners[i].clone(),
            });
        }
        seen.insert(&g.name, i);
    }
    Ok(())
}

/// The names of a product's two groups: its SLIs and alerts, and its
/// period rules (`@`, not `/`: Cortex-family rulers put group names in
/// URL paths). A product id holds no `@` (nor any character outside
/// `A-Z a-z 0-9 . _ - :`), so no product's names are another's: the period
/// group was once `meshgate-slo-<id>-period`, the name of the first group of
/// a product `<id>-period`.
pub fn group_names(product: &str) -> [String; 2] {
    [
        format!("meshgate-slo-{product}"),
        format!("meshgate-slo-{product}@period"),
    ]
}

/// Contract text as literal text in an alert's label or annotation, which
/// Prometheus expands as a Go template: each `{` is written as the action
/// `{{ "{" }}`, which prints it. So no contract text, whatever it holds,
/// opens an action (`{{ with query "…" }}` would run PromQL of the
/// contract's choosing and put other domains' series in the alert; an
/// unclosed `{{` makes Prometheus refuse the whole file), nor makes one
/// with a `{` of the template around it.
pub(super) fn literal(s: &str) -> String {
    s.replace('{', "{{ \"{\" }}")
}

/// Contract text in a comment of the rule file: printable ASCII, every
/// other character escaped (`\n`), so that it cannot end the comment.
pub(super) fn comment(s: &str) -> String {
    crate::base::text::ascii(s)
}

impl Generated {
    /// The rule file as YAML, with a header saying where it came from and
    /// what each SLO measures.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let body = serde_yaml_ng::to_string(&self.rules)?;
        let mut out = String::new();
        for line in HEADER.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if self.slos.is_empty() {
            out.push_str("#   (no products)\n");
        }
        for s in &self.slos {
            out.push_str(&format!(
                "#   {} {} (domain {}):\n",
                comment(&s.product),
                comment(&s.version),
                comment(&s.domain)
            ));
            match s.availability {
                Some(o) => out.push_str(&format!(
                    "#     availability {}% of allowed requests without 5xx (error budget {}%)\n",
                    number(o * 100.0),
                    number((1.0 - o) * 100.0)
                )),
                None => out.push_str("#     availability: none promised\n"),
            }
            match &s.latency {
                Some(t) if t.rounded() => out.push_str(&format!(
                    "#     latency {}% of allowed requests within {}s: the contract's {} rounded up to the bucket le=\"{}\"\n",
                    number(LATENCY_OBJECTIVE * 100.0),
                    t.le,
                    humantime::format_duration(t.contract),
                    t.le
                )),
                Some(t) => out.push_str(&format!(
                    "#     latency {}% of allowed requests within {} (bucket le=\"{}\")\n",
                    number(LATENCY_OBJECTIVE * 100.0),
                    humantime::format_duration(t.contract),
                    t.le
                )),
                None => out.push_str("#     latency: none promised (or above the largest bucket)\n"),
            }
        }
        out.push_str(&super::sunset::header(&self.sunsets));
        out.push_str(&super::conformance::header(&self.conformance));
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }
}

const HEADER: &str = "\
# Prometheus rules for the SLOs of the data products' contracts.
# Generated by `meshgate slo-rules`: do not edit; change the contracts and
# generate again.
#
# Period: 30 days. Availability SLI: 5xx answers / requests allowed or shed,
# from meshgate_requests_total, less those whose own body failed (the
# client's fault, meshgate_request_body_errors_total). Latency SLI: allowed requests slower than the
# threshold / allowed requests, from the buckets of
# meshgate_request_duration_seconds (ODCS has no latency percentile: 99% of
# requests must be within it). Alerts: multiwindow, multi-burn-rate (Google
# SRE workbook, ch. 5): page at 14.4x the budget over 1h and 5m or 6x over 6h
# and 30m; ticket at 3x over 1d and 2h or 1x over 3d and 6h.
#
# Products:
";

/// A number in PromQL or prose: at most 12 decimals, no trailing zeros.
fn number(x: f64) -> String {
    let s = format!("{x:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A PromQL string literal.
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if crate::base::text::is_unsafe(c) => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Availability,
    Latency,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Availability => "availability",
            Kind::Latency => "latency",
        }
    }
}

/// One SLO of one product, with everything its rules need.
struct Slo<'a> {
    s: &'a ProductSlos,
    kind: Kind,
    objective: f64,
}

impl Slo<'_> {
    fn budget(&self) -> f64 {
        1.0 - self.objective
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("domain".to_string(), self.s.domain.clone()),
            ("product".to_string(), self.s.product.clone()),
            ("slo".to_string(), self.kind.as_str().to_string()),
        ])
    }

    /// The series of this SLO's recording rule `name`.
    fn series(&self, name: &str) -> String {
        format!(
            "{name}{{product={},slo=\"{}\"}}",
            quoted(&self.s.product),
            self.kind.as_str()
        )
    }

    /// The error ratio over `window`, from the raw metrics.
    fn error_ratio(&self, window: &str) -> String {
        let p = quoted(&self.s.product);
        match self.kind {
            // Errors are a subset of the total (5xx of allowed or shed
            // requests); `or vector(0)`: no 5xx series yet means no errors.
            // A request whose own body failed (400/499, the client's fault)
            // is neither: it leaves the total too.
            Kind::Availability => format!(
                "(\n  sum(rate(meshgate_requests_total{{product={p},decision=~\"allow|shed\",class=\"5xx\"}}[{window}]))\n  or vector(0)\n)\n/\n(\n  sum(rate(meshgate_requests_total{{product={p},decision=~\"allow|shed\"}}[{window}]))\n  -\n  (sum(rate(meshgate_request_body_errors_total{{product={p}}}[{window}])) or vector(0))\n)"
            ),
            Kind::Latency => {
                let le = self.s.latency.as_ref().map(|t| t.le.as_str()).unwrap_or("+Inf");
                format!(
                    "(\n  sum(rate(meshgate_request_duration_seconds_count{{product={p},decision=\"allow\"}}[{window}]))\n  -\n  sum(rate(meshgate_request_duration_seconds_bucket{{product={p},decision=\"allow\",le=\"{le}\"}}[{window}]))\n)\n/\nsum(rate(meshgate_request_duration_seconds_count{{product={p},decision=\"allow\"}}[{window}]))"
                )
            }
        }
    }

    fn describe(&self) -> String {
        match self.kind {
            Kind::Availability => format!(
                "{}% of allowed and shed requests answered without 5xx over {PERIOD}",
                number(self.objective * 100.0)
            ),
            Kind::Latency => {
                let t = self.s.latency.as_ref();
                let within = t.map(|t| format!("{}s", t.le)).unwrap_or_default();
                let rounded = match t {
                    Some(t) if t.rounded() => format!(
                        "; the contract's {} rounded up to the bucket le=\"{}\"",
                        humantime::format_duration(t.contract),
                        t.le
                    ),
                    _ => String::new(),
                };
                format!(
                    "{}% of allowed requests within {within} over {PERIOD}{rounded}",
                    number(self.objective * 100.0)
                )
            }
        }
    }

    /// An annotation: the product's PromQL string as literal text.
    fn runbook(&self) -> String {
        let p = literal(&quoted(&self.s.product));
        match self.kind {
            Kind::Availability => format!(
                "Split the 5xx by decision: sum by (decision) (rate(meshgate_requests_total{{product={p},class=\"5xx\"}}[5m])). decision=\"allow\": the product's server fails or times out (502/504; its sidecar logs say which, meshgate_upstream_duration_seconds how slow). decision=\"shed\": an in-flight limit is reached (meshgate_load_shed_total by scope): scale the product or raise its limits."
            ),
            Kind::Latency => format!(
                "Compare histogram_quantile(0.99, sum by (le) (rate(meshgate_upstream_duration_seconds_bucket{{product={p}}}[5m]))) with the same over meshgate_request_duration_seconds_bucket{{product={p},decision=\"allow\"}}: when the upstream accounts for the time, the product's server is slow; otherwise look at the sidecar (meshgate_authorization_duration_seconds, CPU, the quota store)."
            ),
        }
    }

    fn alert_name(&self) -> &'static str {
        match self.kind {
            Kind::Availability => "MeshgateAvailabilityBudgetBurn",
            Kind::Latency => "MeshgateLatencyBudgetBurn",
        }
    }

    fn burn_alert(&self, a: &BurnAlert) -> Rule {
        let budget = number(self.budget());
        let cond = |b: &Burn| {
            let factor = number(b.factor);
            format!(
                "(\n  {} > ({factor} * {budget})\n  and\n  {} > ({factor} * {budget})\n)",
                self.series(&format!("slo:sli_error:ratio_rate{}", b.long)),
                self.series(&format!("slo:sli_error:ratio_rate{}", b.short)),
            )
        };
        let expr = format!("{}\nor\n{}", cond(&a.conditions[0]), cond(&a.conditions[1]));
        let speed = if a.severity == "page" {
            "fast"
        } else {
            "steadily"
        };
        let what = match self.kind {
            Kind::Availability => "allowed and shed requests failed with 5xx",
            Kind::Latency => "allowed requests were slower than the threshold",
        };
        // Contract text only as literal text of the templates.
        let (product, domain) = (literal(&self.s.product), literal(&self.s.domain));
        Rule::alert(
            self.alert_name(),
            expr,
            None,
            &[
                ("domain", &domain),
                ("product", &product),
                ("severity", a.severity),
                ("slo", self.kind.as_str()),
            ],
            &[
                (
                    "summary",
                    format!(
                        "{product} ({domain}) is burning its {} error budget {speed}",
                        self.kind.as_str()
                    ),
                ),
                (
                    "description",
                    format!(
                        "{{{{ $value | humanizePercentage }}}} of {product}'s {what} over the alert's long window: {}. SLO: {}; error budget {}%.",
                        a.meaning,
                        self.describe(),
                        number(self.budget() * 100.0),
                    ),
                ),
                ("runbook", self.runbook()),
            ],
        )
    }
}

/// A product's groups: SLIs and burn-rate alerts, then the period rules.
fn product_groups(s: &ProductSlos) -> Vec<RuleGroup> {
    let mut slos = Vec::new();
    if let Some(o) = s.availability {
        slos.push(Slo {
            s,
            kind: Kind::Availability,
            objective: o,
        });
    }
    if s.latency.is_some() {
        slos.push(Slo {
            s,
            kind: Kind::Latency,
            objective: LATENCY_OBJECTIVE,
        });
    }
    if slos.is_empty() {
        return Vec::new();
    }
    let mut sli = Vec::new();
    let mut alerts = Vec::new();
    let mut period = Vec::new();
    for slo in &slos {
        for w in WINDOWS {
            sli.push(Rule::record(
                &format!("slo:sli_error:ratio_rate{w}"),
                slo.error_ratio(w),
                slo.labels(),
            ));
        }
        for a in &BURN_ALERTS {
            alerts.push(slo.burn_alert(a));
        }
        period.push(Rule::record(
            "slo:objective:ratio",
            format!("vector({})", number(slo.objective)),
            slo.labels(),
        ));
        period.push(Rule::record(
            "slo:error_budget:ratio",
            format!("vector({})", number(slo.budget())),
            slo.labels(),
        ));
        period.push(Rule::record(
            &format!("slo:sli_error:ratio_rate{PERIOD}"),
            slo.error_ratio(PERIOD),
            slo.labels(),
        ));
        // 1 with no errors, 0 when the budget is spent, negative beyond.
        period.push(Rule::record(
            "slo:error_budget_remaining:ratio",
            format!(
                "1 - {} / {}",
                slo.series(&format!("slo:sli_error:ratio_rate{PERIOD}")),
                number(slo.budget())
            ),
            slo.labels(),
        ));
    }
    sli.extend(alerts);
    let [name, period_name] = group_names(&s.product);
    vec![
        RuleGroup {
            name,
            interval: None,
            rules: sli,
        },
        RuleGroup {
            name: period_name,
            interval: Some(PERIOD_INTERVAL.to_string()),
            rules: period,
        },
    ]
}

/// Alerts that hold for every sidecar, whatever the contracts say.
fn static_group() -> RuleGroup {
    let rules = vec![
        Rule::alert(
            "MeshgateCertificateExpiringSoon",
            "meshgate_certificate_expiry_timestamp_seconds - time() < 7 * 86400".into(),
            Some("15m"),
            &[("severity", "ticket")],
            &[
                (
                    "summary",
                    "Certificate {{ $labels.cert }} of {{ $labels.instance }} expires in {{ $value | humanizeDuration }}".into(),
                ),
                (
                    "description",
                    "A certificate loaded by the sidecar (the server certificate, or a CA of the client trust bundle) expires within 7 days. Rotation should have replaced it long before: once it expires, handshakes fail.".into(),
                ),
                (
                    "runbook",
                    "Check the issuer (cert-manager Certificate, csi-driver-spiffe, SPIRE) of the pod's certificate files. meshgate reloads them when they change (or on SIGHUP): meshgate_tls_reloads_total{result=\"error\"} and the `tls reload failed` log line say when a replacement did not load.".into(),
                ),
            ],
        ),
        Rule::alert(
            "MeshgatePolicyReloadFailing",
            "meshgate_policy_last_reload_successful == 0".into(),
            None,
            &[("severity", "ticket")],
            &[
                (
                    "summary",
                    "Policy reload failing on {{ $labels.instance }}".into(),
                ),
                (
                    "description",
                    "The last reload of the policies, contracts or entities did not build into a valid snapshot, and no later one has. The sidecar keeps enforcing its last good snapshot: the change (a new grant, or a revocation) is not in force until the files are fixed.".into(),
                ),
                (
                    "runbook",
                    "GET /policy on the admin port shows last_error with file:line:col; `meshgate validate --config FILE` reproduces it. meshgate_policy_info{version} shows which snapshot each sidecar enforces.".into(),
                ),
            ],
        ),
        Rule::alert(
            "MeshgateAuditEventsDropped",
            "increase(meshgate_audit_dropped_total[5m]) > 0".into(),
            None,
            &[("severity", "page")],
            &[
                (
                    "summary",
                    "{{ $labels.instance }} dropped audit events".into(),
                ),
                (
                    "description",
                    "The audit queue was full and, in `drop` mode, events were discarded: decisions were made that no record proves.".into(),
                ),
                (
                    "runbook",
                    "The audit sink cannot keep up (disk full or slow, stdout not drained). Fix the sink, or enlarge the queue; `block` mode slows requests instead of losing events.".into(),
                ),
            ],
        ),
        Rule::alert(
            "MeshgateTLSHandshakeFailureSpike",
            "sum without (reason) (rate(meshgate_tls_handshake_failures_total[5m])) > 0.5".into(),
            Some("5m"),
            &[("severity", "ticket")],
            &[
                (
                    "summary",
                    "{{ $labels.instance }} refuses {{ $value | humanize }} TLS handshakes per second".into(),
                ),
                (
                    "description",
                    "More than 0.5 refused handshakes a second (averaged over 5 minutes) for 5 minutes: clients whose certificates expired, are not trusted (a trust bundle out of step) or lack clientAuth, or someone probing the port.".into(),
                ),
                (
                    "runbook",
                    "sum by (reason) (rate(meshgate_tls_handshake_failures_total[5m])) tells which; the sidecar logs each refused handshake (`tls handshake refused`) with the peer's address.".into(),
                ),
            ],
        ),
    ];
    RuleGroup {
        name: "meshgate".into(),
        interval: None,
        rules,
    }
}

#[cfg(test)]
mod tests;
