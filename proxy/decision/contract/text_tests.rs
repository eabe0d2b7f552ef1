//! Contract text that would break what meshgate makes of it: a key that
//! forges a line of CI output is echoed escaped, on its finding's line.

use super::*;

const ORDERS: &str = include_str!("../../../policies/domains/sales/orders.odcs.yaml");

/// The example contract with `from` replaced by `to` once.
fn edited(from: &str, to: &str) -> String {
    assert!(ORDERS.contains(from), "{from}");
    ORDERS.replacen(from, to, 1)
}

#[test]
fn key_names_are_echoed_escaped_on_the_line_of_their_finding() {
    let forged = "x\\n::error file=finance/ledger.odcs.yaml::forged\\ny";
    let text = edited(
        "tenant: acme\n",
        &format!(
            "tenant: acme\n\"{forged}\": 1\n\"meshgate{forged}\": 1\n\"slaPropertes\\n\": []\n"
        ),
    )
    .replace(
        "  - { property: errorRate,",
        "  - { property: \"latenc\\ny\", value: 1 }\n  - { property: errorRate,",
    )
    .replace(
        "action: describe }",
        &format!("action: describe, \"{forged}\": 1 }}"),
    );
    let e = read(&text, "o.yaml").expect_err("refused");
    let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 4, "{shown:#?}");
    for line in &shown {
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.starts_with("o.yaml:"), "{line}");
    }
    assert!(shown[0].starts_with(&format!("o.yaml:12:1: meshgate{forged}: `meshgate{forged}` is read only under `customProperties`")), "{shown:#?}");
    assert!(
        shown[1].starts_with(
            "o.yaml:13:1: slaPropertes\\n: unknown key: did you mean `slaProperties`?"
        ),
        "{shown:#?}"
    );
    assert!(
        shown[2].contains("slaProperties[3].property: `latenc\\ny`: did you mean `latency`?"),
        "{shown:#?}"
    );
    assert!(
        shown[3].contains(&format!(
            "customProperties.meshgateRoutes[4].{forged}: unknown field"
        )),
        "{shown:#?}"
    );
    // The warning of the key meshgate ignores, too.
    let text = edited(
        "tenant: acme\n",
        &format!("tenant: acme\n\"{forged}\": 1\n"),
    );
    let c = read(&text, "o.yaml").expect("parses");
    let w = c.warnings[0].warning();
    assert_eq!(
        w,
        format!("o.yaml:11:1: warning: {forged}: not an ODCS v3 key: meshgate ignores it")
    );
}
