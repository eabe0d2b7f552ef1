//! `meshgate slo-rules` over every domain's contracts, through the real
//! binary and promtool: the mesh operator loads the one rule file it makes,
//! so no product may name a rule group another product's group has
//! (Prometheus refuses a file that repeats a group name, and with it every
//! domain's alerts).

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
        "meshgate-slo-sales.orders/period",
        "meshgate-slo-sales.orders-period",
        "meshgate-slo-sales.orders-period/period",
    ] {
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{names:?}");
    }
    let n: usize = rules.groups.iter().map(|g| g.rules.len()).sum();
    if let Some(found) = promtool_rules(&yaml) {
        assert_eq!(found, n);
    }
}
