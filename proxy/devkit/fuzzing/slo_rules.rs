//! `meshgate slo-rules` over contract text that never passed validation:
//! whatever a product's id, domain, version, successor and deprecation link
//! hold, the rule file is one YAML document that reads back as the rules
//! generated, its header is comments, and every template action in an
//! alert's labels and annotations is one of meshgate's own.

use std::time::Duration;

use crate::decision::contract::Product;
use crate::decision::fields::conformance::Sample;
use crate::decision::fields::ConformanceSettings;
use crate::tools::slo::{self, RuleFile};

/// A contract that has every kind of rule: both SLOs, a sunset alert and a
/// conformance alert.
const BASE: &str = "apiVersion: v3.0.2\nkind: DataContract\nid: sales.orders\nversion: 1.0.0\nstatus: deprecated\ndomain: sales\nschema:\n  - name: orders\n    properties:\n      - { name: id, logicalType: string }\nteam: [{ username: owner@acme.example, role: owner }]\ncustomProperties:\n  - { property: classification, value: internal }\n  - { property: successorVersion, value: /v2/orders }\n  - { property: deprecationLink, value: \"https://docs.example/orders\" }\nslaProperties:\n  - { property: availability, value: 99.9, unit: percent }\n  - { property: latency, value: 250, unit: ms }\n  - { property: endOfSupport, value: \"2026-01-01\" }\n  - { property: endOfLife, value: \"2030-01-01\" }\n";

/// The template actions meshgate writes in labels and annotations: the
/// alerts' own, and `"{"`, the action a `{` of contract text is written as.
const OURS: [&str; 12] = [
    "$value | humanizePercentage",
    "$value | humanize",
    "$value | humanizeDuration",
    "$labels.dataset",
    "$labels.kind",
    "$labels.cert",
    "$labels.instance",
    "with $labels.consumer",
    ".",
    "else",
    "end",
    "\"{\"",
];

/// Input: the id, domain, version, successor and deprecation link of the
/// base contract's product (split at 0xFF, each read as lossy UTF-8; one
/// not given keeps the contract's).
pub fn slo_rules(data: &[u8]) {
    let parts: Vec<String> = data
        .split(|b| *b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let text: [Option<&str>; 5] = std::array::from_fn(|i| parts.get(i).map(String::as_str));
    slo_rules_file(text);
}

/// The rule file of the base contract with its product's id, domain,
/// version, successor and deprecation link replaced by `text` (`None`
/// keeps the contract's), checked as the module says (a panic names what
/// broke); the file and how many rules it has.
pub fn slo_rules_file(text: [Option<&str>; 5]) -> (String, usize) {
    let mut p = crate::decision::contract::parse(BASE, "base.odcs.yaml").expect("base contract");
    let [id, domain, version, successor, link] = text;
    let set = |field: &mut String, v: Option<&str>| {
        if let Some(v) = v {
            *field = v.to_string();
        }
    };
    set(&mut p.id, id);
    set(&mut p.domain, domain);
    set(&mut p.version, version);
    if let Some(s) = successor {
        p.lifecycle.successor = Some(s.to_string());
    }
    if let Some(l) = link {
        p.lifecycle.deprecation_link = Some(l.to_string());
    }
    let yaml = check_rules(&[p]);
    let rules: RuleFile = serde_yaml_ng::from_str(&yaml).expect("one document");
    let n = rules.groups.iter().map(|g| g.rules.len()).sum();
    (yaml, n)
}

/// Generates the rules of `products` (one rule file) and checks them; the
/// file.
pub(super) fn check_rules(products: &[Product]) -> String {
    let conformance = ConformanceSettings {
        sample: Some(Sample::ALWAYS),
        mode: None,
    };
    let buckets = crate::observe::metrics::DURATION_BUCKETS;
    let window = Duration::from_secs(30 * 86_400);
    let g = slo::generate(products, &buckets, window, conformance).expect("group names once");
    let yaml = g.to_yaml().expect("yaml");
    // One document, and it is the rules generated.
    let docs: Vec<RuleFile> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("a rule file"))
        .collect();
    assert_eq!(docs.len(), 1, "{yaml}");
    assert!(
        docs[0] == g.rules,
        "the file reads back as other rules:\n{yaml}"
    );
    // The header is comments up to the rules.
    let body = yaml.lines().find(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(body, Some("groups:"), "{yaml}");
    for group in &g.rules.groups {
        for rule in group.rules.iter().filter(|r| r.alert.is_some()) {
            for value in rule.labels.values().chain(rule.annotations.values()) {
                for action in actions(value) {
                    assert!(OURS.contains(&action), "action `{action}` in {value:?}");
                }
            }
            // The labels say what the contract said, once expanded.
            for (label, p) in [
                ("product", &products[0].id),
                ("domain", &products[0].domain),
            ] {
                if let Some(v) = rule.labels.get(label).filter(|_| products.len() == 1) {
                    assert_eq!(&v.replace("{{ \"{\" }}", "{"), p, "{label}");
                }
            }
        }
    }
    yaml
}

/// The template actions of `text` as Go's text/template reads them:
/// what is between each `{{` and the next `}}`, trimmed. An action left
/// open is a panic.
fn actions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let inside = &rest[open + 2..];
        let close = inside
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed action in {text:?}"));
        out.push(inside[..close].trim());
        rest = &inside[close + 2..];
    }
    out
}
