//! Contract text a domain team writes, through the real binary and
//! promtool. The mesh operator runs `meshgate slo-rules` over every
//! domain's contracts and loads the one rule file it makes, so no domain's
//! text may end a comment of it, start a YAML document of its own, open a
//! Go template action in an alert, or name a rule group another product's
//! group has: each of these made Prometheus read other rules than were
//! generated, run PromQL of the domain's choosing, or refuse the file and
//! with it every domain's alerts. And `validate` prints what it quotes of a
//! contract on the line of its finding.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

fn meshgate(args: &[&str]) -> Output {
    output_within(Command::new(bin()).args(args))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The example policy tree copied beside `pki`'s certificates, and the
/// configuration that names it.
fn tree(pki: &Pki) -> PathBuf {
    let sidecar = Meshgate::builder(pki, "http://127.0.0.1:8080").policies();
    let config = pki.path("meshgate.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("write config");
    config
}

fn edit(pki: &Pki, file: &str, from: &str, to: &str) {
    let path = pki.path(file);
    let t = std::fs::read_to_string(&path).expect("read");
    assert!(t.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, t.replacen(from, to, 1)).expect("write");
}

/// `promtool check rules` of `yaml`: how many rules it found; `None`
/// without promtool (outside CI; under CI its absence fails).
fn promtool_rules(yaml: &str) -> Option<usize> {
    if !require_tool("promtool") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yml");
    std::fs::write(&file, yaml).expect("write rules");
    let out = output_within(Command::new("promtool").args(["check", "rules"]).arg(&file));
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "promtool check rules: {report}\n{yaml}"
    );
    let n = report
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok());
    Some(n.unwrap_or_else(|| panic!("no rule count: {report}")))
}

const ORDERS: &str = "policies/domains/sales/orders.odcs.yaml";
const LEDGER: &str = "policies/domains/finance/ledger.odcs.yaml";

#[test]
fn contract_text_that_would_break_the_rule_file_is_refused_at_its_place() {
    let pki = Pki::new();
    let config = tree(&pki);
    let config = config.to_str().expect("utf-8 path");
    let forged = "x\\n::error file=finance/ledger.odcs.yaml::forged\\ny";
    edit(
        &pki,
        LEDGER,
        "version: 3.1.0\n",
        "version: \"1.0.0\\ngroups: [{name: meshgate, rules: [{alert: AllQuiet, expr: vector(0) > 1}]}]\\n---\\n#\"\n",
    );
    edit(
        &pki,
        LEDGER,
        "customProperties:\n",
        "customProperties:\n  - { property: successorVersion, value: \"/{{.}}\" }\n",
    );
    edit(
        &pki,
        LEDGER,
        "dataset: entries }",
        &format!("dataset: entries, \"{forged}\": 1 }}"),
    );
    edit(&pki, ORDERS, "id: sales.orders\n", "id: \"sales.x{{\"\n");
    edit(
        &pki,
        ORDERS,
        "customProperties:\n",
        "customProperties:\n  - { property: deprecationLink, value: \"javascript:alert(1)\" }\n",
    );
    edit(
        &pki,
        ORDERS,
        "version: 2.0.0\n",
        "version: '1 {{ with query \"finance_secret\" }}{{ . | first | label \"consumer\" }}{{ end }}'\n",
    );

    let out = meshgate(&["validate", "--config", config]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for want in [
        "ledger.odcs.yaml:6:10: version: `1.0.0\\ngroups: [{name: meshgate, rules: [{alert: AllQuiet, expr: vector(0) > 1}]}]\\n---\\n#` holds `\\n`: a version is 1 to 64 of SemVer's characters",
        "ledger.odcs.yaml:36:42: customProperties.successorVersion: `/{{.}}`: holds `{`: not a URI character",
        &format!("ledger.odcs.yaml:43:79: customProperties.meshgateRoutes[0].{forged}: unknown field"),
        "orders.odcs.yaml:4:5: id: `sales.x{{` holds `{`: a product id is 1 to 128 ASCII letters",
        "orders.odcs.yaml:6:10: version: `1 {{ with query \\\"finance_secret\\\" }}",
        "orders.odcs.yaml:35:41: customProperties.deprecationLink: `javascript:alert(1)`: scheme `javascript:`",
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(want)),
            "no `{want}` in:\n{stderr}"
        );
    }
    // Every line a finding: nothing the contracts quote starts a line.
    for line in stderr.lines() {
        assert!(
            line.starts_with(pki.path("policies").to_str().expect("utf-8"))
                || line.starts_with("meshgate: "),
            "a line of its own: {line:?}\n{stderr}"
        );
    }
    assert!(stderr.ends_with("6 errors, 0 warnings\n"), "{stderr}");

    // slo-rules refuses them alike, and writes nothing.
    let out = meshgate(&["slo-rules", "--config", config]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("orders.odcs.yaml:4:5: id: `sales.x{{` holds `{`")
            && stderr.ends_with("meshgate: policy: 6 errors\n"),
        "{stderr}"
    );
}

#[test]
fn a_key_meshgate_ignores_is_warned_of_on_one_line() {
    let pki = Pki::new();
    let config = tree(&pki);
    let forged = "x\\n::error file=finance/ledger.odcs.yaml::forged\\ny";
    edit(
        &pki,
        LEDGER,
        "dataProduct: ledger\n",
        &format!("dataProduct: ledger\n\"{forged}\": 1\n"),
    );
    let out = meshgate(&[
        "validate",
        "--config",
        config.to_str().expect("utf-8"),
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let warning = format!(
        "{}:10:1: warning: {forged}: not an ODCS v3 key: meshgate ignores it",
        pki.path(LEDGER).display()
    );
    assert_eq!(stderr.lines().collect::<Vec<_>>(), [warning.as_str()]);
}

#[test]
fn a_product_named_like_another_products_period_group_gets_groups_of_its_own() {
    let pki = Pki::new();
    let config = tree(&pki);
    let orders = std::fs::read_to_string(pki.path(ORDERS)).expect("orders");
    let period = orders
        .replace("id: sales.orders\n", "id: sales.orders-period\n")
        .replace("dataProduct: orders\n", "dataProduct: orders-period\n")
        .replace(
            "  - property: meshgateRoutes",
            "  - property: routesElsewhere",
        );
    std::fs::write(pki.path("policies/domains/sales/period.odcs.yaml"), period).expect("write");
    let out = meshgate(&["slo-rules", "--config", config.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let rules: meshgate::RuleFile = serde_yaml_ng::from_str(&yaml).expect("rule file");
    let names: Vec<&str> = rules.groups.iter().map(|g| g.name.as_str()).collect();
    for name in [
        "meshgate-slo-sales.orders",
        "meshgate-slo-sales.orders@period",
        "meshgate-slo-sales.orders-period",
        "meshgate-slo-sales.orders-period@period",
    ] {
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{names:?}");
    }
    let n: usize = rules.groups.iter().map(|g| g.rules.len()).sum();
    if let Some(found) = promtool_rules(&yaml) {
        assert_eq!(found, n);
    }
}

#[test]
fn rules_of_text_that_never_passed_validation_are_one_document_promtool_loads_whole() {
    // The generator over text validation refuses (each input is checked
    // in-process too: one YAML document that reads back as the rules made,
    // a header of comments, no template action but meshgate's own).
    let (plain, rules) = meshgate::fuzzing::slo_rules_file([None; 5]);
    let expected = promtool_rules(&plain);
    if let Some(found) = expected {
        assert_eq!(found, rules);
    }
    let hostile: [[Option<&str>; 5]; 4] = [
        [
            None,
            None,
            Some("1.0.0\ngroups: [{name: meshgate, rules: [{alert: AllQuiet, expr: vector(0) > 1}]}]\n---\n#"),
            Some("/{{.}}\n---\n"),
            Some("https://docs.example/{{ query \"up\" }}"),
        ],
        [
            Some("sales.x{{"),
            Some("sales}}{{"),
            Some("1 {{ with query \"finance_secret\" }}{{ . | first | label \"consumer\" }}{{ end }}"),
            Some("x\" }}{{ query \"y"),
            Some("{{- /* */ -}}"),
        ],
        [
            Some("{"),
            Some("{{"),
            Some("\r\n\u{85}\u{2028}---\n..."),
            Some("'\"\\"),
            Some("# not a comment\n- groups"),
        ],
        [
            Some("a@period"),
            Some(""),
            Some("\u{0}\u{1b}[31m"),
            None,
            None,
        ],
    ];
    for text in hostile {
        let (yaml, n) = meshgate::fuzzing::slo_rules_file(text);
        assert_eq!(n, rules, "{text:?}");
        assert!(
            !yaml.contains("AllQuiet\n") && !yaml.contains("\n---"),
            "{yaml}"
        );
        if expected.is_some() {
            assert_eq!(promtool_rules(&yaml), Some(n), "{text:?}");
        }
    }
}
