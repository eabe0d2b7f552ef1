//! Sunset alerts (`meshgate slo-rules`): per deprecated product version
//! with an `endOfLife`, an alert that fires while a consumer still calls it
//! within a window before its sunset, so that its owners are told to move
//! to the successor before the version starts answering 410.
//!
//! The signal is `meshgate_deprecated_requests_total{product,version,consumer}`,
//! which the sidecar counts for every request a deprecated version answers
//! (`status: deprecated`, or past its `endOfSupport`). A version that is
//! never deprecated before its end of life is never counted, so it gets no
//! alert, and a warning says why.
//!
//! `consumer` is there only with the sidecars' `metrics.consumer_label`
//! (the calling service with `service`, the quota tier with `tier`). Without
//! it the same rule fires once per version, without a `consumer` label, and
//! its annotations say that the consumers are not named and where to find
//! them (the audit trail): the rules do not depend on the sidecars' setting.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::decision::contract::Product;
use crate::decision::lifecycle::Status;

use super::slo::{comment, literal, quoted, Rule, RuleGroup};

/// The range over which a consumer counts as still calling.
pub const CALLING_RANGE: &str = "1h";

/// The alert's name (one per version; the consumer is a label).
pub const ALERT: &str = "MeshgateDeprecatedVersionCalledBeforeSunset";

/// The consumer in an annotation: its label, or `unnamed` without one
/// (`metrics.consumer_label` off on the sidecars).
fn who(unnamed: &str) -> String {
    format!("{{{{ with $labels.consumer }}}}{{{{ . }}}}{{{{ else }}}}{unnamed}{{{{ end }}}}")
}

/// A deprecated version with a sunset, and when to start alerting.
#[derive(Debug, Clone, PartialEq)]
pub struct Sunset {
    pub product: String,
    pub domain: String,
    pub version: String,
    /// `endOfLife`.
    pub at: SystemTime,
    /// How long before `at` the alert may fire.
    pub window: Duration,
    pub successor: Option<String>,
    pub deprecation_link: Option<String>,
}

/// The versions that sunset, sorted by product id; products whose
/// lifecycle cannot be watched add a warning.
pub fn sunsets(products: &[&Product], window: Duration, warnings: &mut Vec<String>) -> Vec<Sunset> {
    let mut out: Vec<Sunset> = products
        .iter()
        .filter_map(|p| {
            let l = &p.lifecycle;
            let at = l.end_of_life?;
            if l.status == Status::Retired {
                return None;
            }
            if l.status != Status::Deprecated && l.end_of_support.is_none() {
                warnings.push(format!(
                    "{}: endOfLife {} without status `deprecated` or an endOfSupport: its requests are never counted as deprecated, so no sunset alert",
                    p.id,
                    date(at)
                ));
                return None;
            }
            Some(Sunset {
                product: p.id.clone(),
                domain: p.domain.clone(),
                version: p.version.clone(),
                at,
                window,
                successor: l.successor.clone(),
                deprecation_link: l.deprecation_link.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.product.cmp(&b.product));
    out
}

/// Seconds since the Unix epoch (contract dates are never before it).
fn epoch(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Sunset {
    /// When the alert may start firing: `window` before the sunset, or the
    /// epoch for a window longer than the time since it.
    pub fn alert_from(&self) -> SystemTime {
        self.at
            .checked_sub(self.window)
            .filter(|t| *t >= SystemTime::UNIX_EPOCH)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Requests per consumer over the last hour, kept while the time is
    /// inside the window. Past the sunset the version answers 410, which is
    /// not counted as deprecated: the alert clears within the hour.
    fn expr(&self) -> String {
        format!(
            "sum by (consumer) (increase(meshgate_deprecated_requests_total{{product={},version={}}}[{CALLING_RANGE}])) > 0\nand on () (vector(time()) > {})",
            quoted(&self.product),
            quoted(&self.version),
            epoch(self.alert_from()),
        )
    }

    /// The alert; contract text in its labels and annotations only as
    /// literal text of the templates ([`literal`]).
    fn rule(&self) -> Rule {
        let sunset = date(self.at);
        let (product, domain, version) = (
            literal(&self.product),
            literal(&self.domain),
            literal(&self.version),
        );
        let successor = self
            .successor
            .as_deref()
            .map_or_else(|| "none named".to_string(), literal);
        let mut labels = BTreeMap::from([
            ("severity".to_string(), "ticket".to_string()),
            ("domain".to_string(), domain.clone()),
            ("product".to_string(), product.clone()),
            ("version".to_string(), version.clone()),
            ("sunset".to_string(), sunset.clone()),
        ]);
        if self.successor.is_some() {
            labels.insert("successor".to_string(), successor.clone());
        }
        let read = self
            .deprecation_link
            .as_deref()
            .map(|l| format!(" The deprecation is explained at {}.", literal(l)))
            .unwrap_or_default();
        let annotations = BTreeMap::from([
            (
                "summary".to_string(),
                format!(
                    "{} still calls {product} {version}, which stops answering at {sunset}",
                    who("A consumer"),
                ),
            ),
            (
                "description".to_string(),
                format!(
                    "{{{{ $value | humanize }}}} requests in the last hour from {} to the deprecated version {version} of {product} (domain {domain}). It sunsets at {sunset} (alerting from {}, {} before), and answers 410 Gone from then on. Successor: {successor}.{read}",
                    who("consumers the sidecars do not name (metrics.consumer_label is off)"),
                    date(self.alert_from()),
                    humantime::format_duration(self.window),
                ),
            ),
            (
                "runbook".to_string(),
                format!(
                    "Tell the owners of {} to move to {successor} before {sunset}. sum by (consumer) (increase(meshgate_deprecated_requests_total{{product={}}}[1d])) shows every consumer still calling (with metrics.consumer_label: service on the sidecars); the audit trail has their requests. Moving the sunset means a new endOfLife in the contract and regenerating these rules.",
                    who(&format!("the services calling it (the audit trail names them: its events for product {product}; metrics.consumer_label: service names them here)")),
                    literal(&quoted(&self.product))
                ),
            ),
        ]);
        Rule {
            record: None,
            alert: Some(ALERT.to_string()),
            expr: self.expr(),
            for_: None,
            labels,
            annotations,
        }
    }
}

/// The group of sunset alerts; none without a version that sunsets.
pub fn group(sunsets: &[Sunset]) -> Option<RuleGroup> {
    (!sunsets.is_empty()).then(|| RuleGroup {
        name: "meshgate-sunset".into(),
        interval: None,
        rules: sunsets.iter().map(Sunset::rule).collect(),
    })
}

/// The rule file's header lines about the sunsets.
pub fn header(sunsets: &[Sunset]) -> String {
    let mut out = String::new();
    if let Some(s) = sunsets.first() {
        out.push_str(&format!(
            "#\n# Sunsets: {ALERT} fires from {} before\n# a deprecated version's endOfLife while a consumer called it in the last {CALLING_RANGE}:\n",
            humantime::format_duration(s.window)
        ));
    }
    for s in sunsets {
        out.push_str(&format!(
            "#   {} {} sunsets at {}: alert from {} (successor {})\n",
            comment(&s.product),
            comment(&s.version),
            date(s.at),
            date(s.alert_from()),
            s.successor
                .as_deref()
                .map_or_else(|| "none named".into(), comment),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: &str, lifecycle: &str) -> Product {
        let yaml = format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\ndomain: sales\nteam: [{{ username: owner@acme.example, role: owner }}]\ncustomProperties:\n  - {{ property: classification, value: internal }}\n  - {{ property: successorVersion, value: /v2 }}\n{lifecycle}"
        );
        crate::decision::contract::parse(&yaml, "test.odcs.yaml").expect("contract")
    }

    #[test]
    fn only_deprecated_versions_with_a_sunset_get_an_alert_from_the_window_on() {
        let deprecated = product(
            "sales.v1",
            "status: deprecated\nslaProperties:\n  - { property: endOfSupport, value: \"1970-01-01\" }\n  - { property: endOfLife, value: \"1970-01-03\" }\n",
        );
        let no_sunset = product(
            "sales.v2",
            "status: deprecated\nslaProperties:\n  - { property: endOfSupport, value: \"1970-01-01\" }\n",
        );
        let never_deprecated = product(
            "sales.v3",
            "slaProperties:\n  - { property: endOfLife, value: \"2030-01-01\" }\n",
        );
        let retired = product(
            "sales.v0",
            "status: retired\nslaProperties:\n  - { property: endOfSupport, value: \"1970-01-01\" }\n  - { property: endOfLife, value: \"1970-01-02\" }\n",
        );
        let mut warnings = Vec::new();
        let all = [&deprecated, &no_sunset, &never_deprecated, &retired];
        let s = sunsets(&all, Duration::from_secs(86_400), &mut warnings);
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("sales.v3: endOfLife 2030-01-01T00:00:00Z"),
            "{warnings:?}"
        );
        let rule = s[0].rule();
        assert_eq!(
            rule.expr,
            "sum by (consumer) (increase(meshgate_deprecated_requests_total{product=\"sales.v1\",version=\"1.0.0\"}[1h])) > 0\nand on () (vector(time()) > 86400)"
        );
        assert_eq!(rule.labels["sunset"], "1970-01-03T00:00:00Z");
        assert_eq!(rule.labels["successor"], "/v2");
        assert!(
            rule.annotations["summary"].starts_with(
                "{{ with $labels.consumer }}{{ . }}{{ else }}A consumer{{ end }} still calls sales.v1 1.0.0"
            ),
            "{:?}",
            rule.annotations
        );
        // A window longer than the time since the epoch starts at it.
        let long = sunsets(&all, Duration::from_secs(30 * 86_400), &mut Vec::new());
        assert_eq!(long[0].alert_from(), SystemTime::UNIX_EPOCH);
        assert!(group(&[]).is_none());
        assert!(header(&s).contains("sales.v1 1.0.0 sunsets at 1970-01-03T00:00:00Z"));
    }
}
