//! Conformance alerts (`meshgate slo-rules`): per product whose responses
//! are checked against their contract (a dataset that declares fields, and
//! a `sample` above 0 after `meshgateConformance` over the mesh's
//! `conformance`), an alert when, over [`RANGE`], more than [`THRESHOLD`]
//! of the checked responses of one of its datasets show one kind of
//! violation, for [`FOR`].
//!
//! The signal is `meshgate_contract_violations_total{product,dataset,kind}`
//! (a checked response adds one per kind it showed) over
//! `meshgate_contract_checks_total{product,dataset}` (the checked
//! responses): a ratio of samples, whatever the sample rate. Under
//! `observe` the consumers got the data anyway: a ticket; under `enforce`
//! they got 502s: a page.

use std::collections::BTreeMap;

use crate::decision::contract::Product;
use crate::decision::fields::{ConformanceSettings, Mode};

use super::slo::{comment, literal, quoted, Rule, RuleGroup};

/// The alert's name (one rule per product; dataset and kind are labels).
pub const ALERT: &str = "MeshgateContractViolations";

/// The range the ratio is taken over.
pub const RANGE: &str = "10m";

/// How long the ratio must stay above the threshold.
pub const FOR: &str = "10m";

/// The share of checked responses with one kind of violation above which
/// the alert fires.
pub const THRESHOLD: f64 = 0.01;

/// A product whose responses are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub product: String,
    pub domain: String,
    pub sample: f64,
    pub mode: Mode,
}

/// The products whose responses are checked, sorted by product id.
pub fn watched(products: &[&Product], mesh: ConformanceSettings) -> Vec<Watched> {
    let mut out: Vec<Watched> = products
        .iter()
        .filter(|p| p.fields.iter().any(|d| !d.fields.is_empty()))
        .filter_map(|p| {
            let c = p.conformance.over(mesh);
            (c.sample.ratio() > 0.0).then(|| Watched {
                product: p.id.clone(),
                domain: p.domain.clone(),
                sample: c.sample.ratio(),
                mode: c.mode,
            })
        })
        .collect();
    out.sort_by(|a, b| a.product.cmp(&b.product));
    out
}

impl Watched {
    fn expr(&self) -> String {
        let p = quoted(&self.product);
        format!(
            "sum by (product, dataset, kind) (rate(meshgate_contract_violations_total{{product={p}}}[{RANGE}]))\n/ ignoring (kind) group_left ()\nsum by (product, dataset) (rate(meshgate_contract_checks_total{{product={p}}}[{RANGE}]))\n> {THRESHOLD}"
        )
    }

    fn rule(&self) -> Rule {
        let (severity, effect) = match self.mode {
            Mode::Observe => (
                "ticket",
                "Under observe the responses were passed as they were, so consumers may be reading data the contract does not describe.",
            ),
            Mode::Enforce => (
                "page",
                "Under enforce each of them was refused (502 contract_violation, or a cut transfer), so consumers are failing.",
            ),
        };
        // Contract text only as literal text of the templates.
        let (product, domain) = (literal(&self.product), literal(&self.domain));
        let labels = BTreeMap::from([
            ("severity".to_string(), severity.to_string()),
            ("domain".to_string(), domain.clone()),
            ("product".to_string(), product.clone()),
            ("mode".to_string(), self.mode.as_str().to_string()),
        ]);
        let annotations = BTreeMap::from([
            (
                "summary".to_string(),
                format!(
                    "{{{{ $value | humanizePercentage }}}} of the checked responses of {product}/{{{{ $labels.dataset }}}} violate its contract ({{{{ $labels.kind }}}})",
                ),
            ),
            (
                "description".to_string(),
                format!(
                    "Over the last {RANGE}, more than {}% of the responses of dataset {{{{ $labels.dataset }}}} of {product} (domain {domain}) checked against the contract showed a `{{{{ $labels.kind }}}}` violation (one in {} responses is checked). {effect}",
                    THRESHOLD * 100.0,
                    sample_text(self.sample),
                ),
            ),
            (
                "runbook".to_string(),
                format!(
                    "The sidecar logs `a response violates its contract` with the kind (at most once a second); the audit events of those responses carry `violations`. Either the product's server changed what it sends (fix it, or publish a new contract version), or the contract is wrong. sum by (dataset, kind) (increase(meshgate_contract_violations_total{{product={}}}[1h])) shows which.",
                    literal(&quoted(&self.product))
                ),
            ),
        ]);
        Rule {
            record: None,
            alert: Some(ALERT.to_string()),
            expr: self.expr(),
            for_: Some(FOR.to_string()),
            labels,
            annotations,
        }
    }
}

/// `1/sample`, as a whole number where it is one.
fn sample_text(sample: f64) -> String {
    let every = 1.0 / sample;
    if (every - every.round()).abs() < 1e-9 {
        format!("{}", every.round() as u64)
    } else {
        format!("{every:.2}")
    }
}

/// The group of conformance alerts; none without a checked product.
pub fn group(watched: &[Watched]) -> Option<RuleGroup> {
    (!watched.is_empty()).then(|| RuleGroup {
        name: "meshgate-conformance".into(),
        interval: None,
        rules: watched.iter().map(Watched::rule).collect(),
    })
}

/// The rule file's header lines about the checked products.
pub fn header(watched: &[Watched]) -> String {
    let mut out = String::new();
    if !watched.is_empty() {
        out.push_str(&format!(
            "#\n# Conformance: {ALERT} fires when more than {}% of a dataset's checked\n# responses show one kind of contract violation over {RANGE}, for {FOR}:\n",
            THRESHOLD * 100.0
        ));
    }
    for w in watched {
        out.push_str(&format!(
            "#   {} (domain {}): sample {}, {}\n",
            comment(&w.product),
            comment(&w.domain),
            w.sample,
            w.mode.as_str()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::fields::Sample;

    fn product(id: &str, conformance: &str) -> Product {
        let yaml = format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\ndomain: sales\nteam: [{{ username: owner@acme.example, role: owner }}]\nschema:\n  - name: orders\n    properties:\n      - {{ name: id, logicalType: string, required: true }}\ncustomProperties:\n  - {{ property: classification, value: internal }}\n{conformance}"
        );
        crate::decision::contract::parse(&yaml, "t.yaml").expect("contract")
    }

    #[test]
    fn each_checked_product_gets_one_alert_severe_by_its_mode() {
        let observed = product("a.observed", "");
        let enforced = product(
            "b.enforced",
            "  - { property: meshgateConformance, value: { mode: enforce } }\n",
        );
        let off = product(
            "c.off",
            "  - { property: meshgateConformance, value: { sample: 0 } }\n",
        );
        let mesh = ConformanceSettings {
            sample: Some(Sample::new(0.5).expect("ratio")),
            mode: None,
        };
        let w = watched(&[&off, &enforced, &observed], mesh);
        let names: Vec<&str> = w.iter().map(|w| w.product.as_str()).collect();
        assert_eq!(names, ["a.observed", "b.enforced"]);
        let rules = group(&w).expect("a group").rules;
        assert_eq!(rules[0].labels["severity"], "ticket");
        assert_eq!(rules[1].labels["severity"], "page");
        assert_eq!(rules[1].labels["mode"], "enforce");
        assert!(rules[0]
            .expr
            .contains("meshgate_contract_checks_total{product=\"a.observed\"}[10m]"));
        assert!(rules[0].annotations["description"].contains("one in 2 responses"));
        assert!(group(&[]).is_none());
    }
}
