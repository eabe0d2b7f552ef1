//! Unit tests of the SLO rules.

use super::*;
use crate::observe::metrics::DURATION_BUCKETS;

/// Without sunsets (see tools::sunset for those).
fn generate<'a>(products: impl IntoIterator<Item = &'a Product>, buckets: &[f64]) -> Generated {
    super::generate(products, buckets, Duration::ZERO, Default::default()).expect("generated")
}

fn product(id: &str, availability: Option<f64>, latency_ms: Option<u64>) -> Product {
    let yaml = format!(
        "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\ndomain: {domain}\nteam: [{{ username: owner@acme.example, role: owner }}]\ncustomProperties:\n  - {{ property: classification, value: internal }}\nslaProperties:\n{a}{l}  - {{ property: throughput, value: 10, unit: requests/s }}\n",
        domain = id.split('.').next().unwrap_or("d"),
        a = availability
            .map(|a| format!("  - {{ property: availability, value: {a}, unit: percent }}\n"))
            .unwrap_or_default(),
        l = latency_ms
            .map(|l| format!("  - {{ property: latency, value: {l}, unit: ms }}\n"))
            .unwrap_or_default(),
    );
    crate::decision::contract::parse(&yaml, "test.odcs.yaml").expect("contract")
}

#[test]
fn le_labels_are_written_as_prometheus_client_writes_bucket_bounds() {
    use prometheus_client::metrics::histogram::Histogram;
    let h = Histogram::new(DURATION_BUCKETS);
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("d", "d", h);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let written: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("le=\"")?.1.split_once('"').map(|(v, _)| v))
        .filter(|v| *v != "+Inf")
        .collect();
    let ours: Vec<String> = DURATION_BUCKETS.iter().map(|b| le_label(*b)).collect();
    assert_eq!(written, ours);
    assert!(ours.contains(&"1.0".to_string()) && ours.contains(&"0.25".to_string()));
}

#[test]
fn latency_rounds_up_to_a_bucket_bound_and_says_so() {
    let exact = LatencyThreshold::for_latency(Duration::from_millis(250), &DURATION_BUCKETS)
        .expect("bucket");
    assert_eq!(
        (exact.bound, exact.le.as_str(), exact.rounded()),
        (0.25, "0.25", false)
    );
    let up = LatencyThreshold::for_latency(Duration::from_millis(300), &DURATION_BUCKETS)
        .expect("bucket");
    assert_eq!((up.bound, up.le.as_str(), up.rounded()), (0.5, "0.5", true));
    let tiny =
        LatencyThreshold::for_latency(Duration::from_micros(1), &DURATION_BUCKETS).expect("bucket");
    assert_eq!(tiny.le, "0.0001");
    let top =
        LatencyThreshold::for_latency(Duration::from_secs(10), &DURATION_BUCKETS).expect("bucket");
    assert_eq!((top.le.as_str(), top.rounded()), ("10.0", false));
    assert_eq!(
        LatencyThreshold::for_latency(Duration::from_millis(10_001), &DURATION_BUCKETS),
        None
    );

    let g = generate(
        [&product("sales.slow", Some(99.0), Some(300))],
        &DURATION_BUCKETS,
    );
    let yaml = g.to_yaml().expect("yaml");
    assert!(
        yaml.contains("the contract's 300ms rounded up to the bucket le=\"0.5\""),
        "{yaml}"
    );
    let latency_alert = g.rules.groups[0]
        .rules
        .iter()
        .find(|r| r.alert.as_deref() == Some("MeshgateLatencyBudgetBurn"))
        .expect("latency alert");
    assert!(latency_alert.annotations["description"].contains("rounded up"));
    let sli = &g.rules.groups[0]
        .rules
        .iter()
        .find(|r| {
            r.record.as_deref() == Some("slo:sli_error:ratio_rate5m")
                && r.labels["slo"] == "latency"
        })
        .expect("latency sli")
        .expr;
    assert!(sli.contains("le=\"0.5\"}[5m]"), "{sli}");
}

#[test]
fn each_slo_has_every_window_and_both_severities_with_the_workbook_factors() {
    let g = generate(
        [&product("sales.orders", Some(99.9), Some(250))],
        &DURATION_BUCKETS,
    );
    let group = &g.rules.groups[0];
    assert_eq!(group.name, "meshgate-slo-sales.orders");
    for slo in ["availability", "latency"] {
        let windows: Vec<&str> = group
            .rules
            .iter()
            .filter(|r| r.record.is_some() && r.labels["slo"] == slo)
            .filter_map(|r| {
                r.record
                    .as_deref()?
                    .strip_prefix("slo:sli_error:ratio_rate")
            })
            .collect();
        assert_eq!(windows, WINDOWS);
        let alerts: Vec<&Rule> = group
            .rules
            .iter()
            .filter(|r| r.alert.is_some() && r.labels["slo"] == slo)
            .collect();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].labels["severity"], "page");
        assert_eq!(alerts[1].labels["severity"], "ticket");
        for a in &alerts {
            assert_eq!(a.labels["product"], "sales.orders");
            assert_eq!(a.labels["domain"], "sales");
        }
    }
    let page = &group
        .rules
        .iter()
        .find(|r| r.alert.is_some() && r.labels["slo"] == "availability")
        .expect("page")
        .expr;
    assert!(
        page.contains("slo:sli_error:ratio_rate1h{product=\"sales.orders\",slo=\"availability\"} > (14.4 * 0.001)"),
        "{page}"
    );
    assert!(page.contains("slo:sli_error:ratio_rate5m{product=\"sales.orders\",slo=\"availability\"} > (14.4 * 0.001)"));
    assert!(
        page.contains("ratio_rate6h{product=\"sales.orders\",slo=\"availability\"} > (6 * 0.001)")
    );
    assert!(
        page.contains("ratio_rate30m{product=\"sales.orders\",slo=\"availability\"} > (6 * 0.001)")
    );
    let period = &g.rules.groups[1];
    assert_eq!(period.interval.as_deref(), Some(PERIOD_INTERVAL));
    let remaining = period
        .rules
        .iter()
        .find(|r| {
            r.record.as_deref() == Some("slo:error_budget_remaining:ratio")
                && r.labels["slo"] == "latency"
        })
        .expect("budget remaining");
    assert_eq!(
        remaining.expr,
        "1 - slo:sli_error:ratio_rate30d{product=\"sales.orders\",slo=\"latency\"} / 0.01"
    );
    assert_eq!(
        g.rules.groups.last().map(|g| g.name.as_str()),
        Some("meshgate")
    );
}

#[test]
fn slas_that_cannot_be_watched_are_warned_about_not_generated() {
    let g = generate(
        [
            &product("a.none", None, None),
            &product("a.perfect", Some(100.0), Some(20_000)),
            &product("a.loose", Some(90.0), None),
        ],
        &DURATION_BUCKETS,
    );
    // a.none and a.perfect get no groups; a.loose its SLI and period groups.
    let names: Vec<&str> = g.rules.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "meshgate-slo-a.loose",
            "meshgate-slo-a.loose@period",
            "meshgate"
        ]
    );
    let w = g.warnings.join("\n");
    assert!(
        w.contains("a.perfect: availability 100% leaves no error budget"),
        "{w}"
    );
    assert!(
        w.contains("a.perfect: latency 20s is above the largest bucket"),
        "{w}"
    );
    assert!(w.contains("a.loose: with an error budget of 10%"), "{w}");
    assert_eq!(g.warnings.len(), 3, "{w}");
}

#[test]
fn the_yaml_reads_back_as_the_same_rules_and_numbers_are_exact() {
    let g = generate(
        [
            &product("sales.orders", Some(99.9), Some(250)),
            &product("finance.ledger", Some(99.95), Some(1000)),
        ],
        &DURATION_BUCKETS,
    );
    let yaml = g.to_yaml().expect("yaml");
    let back: RuleFile = serde_yaml_ng::from_str(&yaml).expect("parses");
    assert_eq!(back, g.rules);
    // Sorted by product id; budgets without floating-point noise.
    assert_eq!(back.groups[0].name, "meshgate-slo-finance.ledger");
    assert!(yaml.contains("(14.4 * 0.0005)"), "{yaml}");
    assert!(yaml.contains("vector(0.9995)"));
    assert!(
        yaml.contains("availability 99.95% of allowed requests without 5xx (error budget 0.05%)")
    );
    assert_eq!(number(1.0 - 0.999), "0.001");
    assert_eq!(number(14.4), "14.4");
    assert_eq!(number(6.0), "6");
    assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
}

#[test]
fn a_product_named_like_another_products_period_group_gets_groups_of_its_own() {
    let g = generate(
        [
            &product("sales.orders-period", Some(99.9), None),
            &product("sales.orders", Some(99.9), None),
        ],
        &DURATION_BUCKETS,
    );
    let names: Vec<&str> = g.rules.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "meshgate-slo-sales.orders",
            "meshgate-slo-sales.orders@period",
            "meshgate-slo-sales.orders-period",
            "meshgate-slo-sales.orders-period@period",
            "meshgate"
        ]
    );
}

#[test]
fn a_group_name_that_would_be_written_twice_fails_naming_both_contracts() {
    // Only an id that validation refuses (it holds a `/`) can do it.
    let first = product("a.x", Some(99.0), None);
    let mut second = product("a.y", Some(99.0), None);
    second.id = "a.x@period".into();
    second.file = "other.odcs.yaml".into();
    let e = super::generate(
        [&second, &first],
        &DURATION_BUCKETS,
        Duration::ZERO,
        Default::default(),
    )
    .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "rule group `meshgate-slo-a.x@period` would be written twice, for product `a.x` of test.odcs.yaml and for product `a.x@period` of other.odcs.yaml: Prometheus refuses a rule file that repeats a group name"
    );
}

#[test]
fn contract_text_is_literal_text_in_alert_templates_and_escaped_in_comments() {
    let mut p = product("sales.orders", Some(99.9), Some(250));
    p.id = "sales.x{{".into();
    p.domain = "{{ with query \"finance_secret\" }}{{ . }}{{ end }}".into();
    p.version = "1.0.0\ngroups: [{name: meshgate, rules: []}]\n---\n#".into();
    let g = generate([&p], &DURATION_BUCKETS);
    let yaml = g.to_yaml().expect("yaml");
    assert!(
        yaml.contains("#   sales.x{{ 1.0.0\\ngroups: [{name: meshgate, rules: []}]\\n---\\n# (domain {{ with query \\\"finance_secret\\\" }}{{ . }}{{ end }}):\n"),
        "{yaml}"
    );
    let docs = serde_yaml_ng::Deserializer::from_str(&yaml).count();
    assert_eq!(docs, 1, "{yaml}");
    let back: RuleFile = serde_yaml_ng::from_str(&yaml).expect("parses");
    assert_eq!(back, g.rules);
    let alert = g.rules.groups[0]
        .rules
        .iter()
        .find(|r| r.alert.is_some())
        .expect("an alert");
    assert_eq!(alert.labels["product"], "sales.x{{ \"{\" }}{{ \"{\" }}");
    assert!(alert.labels["domain"].starts_with("{{ \"{\" }}{{ \"{\" }} with query"));
    assert!(alert.annotations["summary"].starts_with("sales.x{{ \"{\" }}{{ \"{\" }} ({{ \"{\" }}"));
    // The product's PromQL strings are quoted, a control character too.
    assert!(alert
        .expr
        .contains("{product=\"sales.x{{\",slo=\"availability\"}"));
    assert_eq!(quoted("a\u{2028}b\rc"), "\"a\\u2028b\\u000dc\"");
}
