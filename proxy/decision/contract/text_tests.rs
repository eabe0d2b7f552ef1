//! Contract text that would break what meshgate makes of it: a version that
//! ends a YAML comment and starts a document of its own in the mesh's rule
//! file, a template action in an id or a version, a name that is not one,
//! a link to `javascript:`, a key that forges a line of CI output. Each is
//! refused (or escaped) where it is read, at its `file:line:col`.

use super::tests::assert_errors_at;
use super::*;

const ORDERS: &str = include_str!("../../../policies/domains/sales/orders.odcs.yaml");

/// The example contract with `from` replaced by `to` once.
fn edited(from: &str, to: &str) -> String {
    assert!(ORDERS.contains(from), "{from}");
    ORDERS.replacen(from, to, 1)
}

#[test]
fn a_version_outside_semvers_characters_is_refused_at_it() {
    for (version, holds) in [
        (
            "\"1.0.0\\ngroups: [{name: meshgate, rules: [{alert: AllQuiet, expr: vector(0) > 1}]}]\\n---\\n#\"",
            "holds `\\n`",
        ),
        (
            "'1 {{ with query \"finance_secret\" }}{{ . | first | label \"consumer\" }}{{ end }}'",
            "holds ` `",
        ),
        ("9.0/beta", "holds `/`"),
    ] {
        let text = edited("version: 2.0.0\n", &format!("version: {version}\n"));
        assert_errors_at(
            &text,
            "o.yaml",
            &[(
                "o.yaml:6:10: version: ",
                &format!("{holds}: a version is 1 to 64 of SemVer's characters"),
            )],
        );
    }
    // SemVer's pre-release and build metadata are versions.
    let text = edited("version: 2.0.0\n", "version: 2.0.0-rc.1+build.5\n");
    assert_eq!(
        parse(&text, "o.yaml").expect("parses").version,
        "2.0.0-rc.1+build.5"
    );
}

#[test]
fn names_and_free_text_outside_their_characters_are_refused_at_them() {
    for (from, to, at, what) in [
        (
            "id: sales.orders\n",
            "id: \"sales.x{{\"\n",
            "o.yaml:4:5: id: ",
            "`sales.x{{` holds `{`: a product id is 1 to 128 ASCII letters",
        ),
        (
            "domain: sales\n",
            "domain: \"sales\\u2028x\"\n",
            "o.yaml:8:9: domain: ",
            "holds `\\u{2028}`: a domain is",
        ),
        (
            "dataProduct: orders\n",
            "dataProduct: orders/v2\n",
            "o.yaml:9:14: dataProduct: ",
            "holds `/`: a data product is",
        ),
        (
            "name: Sales orders\n",
            "name: \"Sales\\norders\"\n",
            "o.yaml:5:7: name: ",
            "`Sales\\norders` holds `\\n`: control characters",
        ),
        (
            "tags: [sales, orders]",
            "tags: [sales, \"or\\u202Eders\"]",
            "o.yaml:12:15: tags[1]: ",
            "holds `\\u{202e}`",
        ),
        (
            "value: [reporting, fulfilment]",
            "value: [reporting, \"ful\\rfilment\"]",
            "o.yaml:40:24: customProperties.allowedPurposes[1]: ",
            "holds `\\r`",
        ),
        (
            "value: sales-data-team@acme.example",
            "value: \"sales\\u0085team\"",
            "o.yaml:38:12: customProperties.owner: ",
            "holds `\\u{85}`",
        ),
        (
            "{ name: region,",
            "{ name: \"re\\egion\",",
            "o.yaml:20:17: schema[0].properties[2].name: ",
            "holds `\\u{1b}`",
        ),
    ] {
        assert_errors_at(&edited(from, to), "o.yaml", &[(at, what)]);
    }
    // A dataset's name becomes a label and an entity id: a name.
    let text = "apiVersion: v3.0.2\nkind: DataContract\nid: sales.x\nversion: 1.0.0\ndomain: sales\nschema:\n  - name: \"orders\\n\"\n    classification: internal\nteam: [{ username: o@acme.example, role: owner }]\n";
    assert_errors_at(
        text,
        "o.yaml",
        &[(
            "o.yaml:7:11: schema[0].name: ",
            "holds `\\n`: a dataset name is 1 to 128",
        )],
    );
}

#[test]
fn link_targets_that_leave_http_or_the_uri_characters_are_refused_at_them() {
    let with_link = |property: &str, value: &str| {
        edited(
            "customProperties:\n",
            &format!("customProperties:\n  - property: {property}\n    value: '{value}'\n"),
        )
    };
    for (value, what) in [
        ("/{{.}}", "holds `{`: not a URI character"),
        ("/orders/é", "holds `é`: a link is ASCII"),
        ("javascript:alert(1)", "scheme `javascript:`"),
        ("mailto:owner@acme.example", "scheme `mailto:`"),
        ("//evil.example/x", "scheme-relative"),
        ("https://docs@evil.example/x", "user information"),
        ("v3/orders", "a relative path"),
    ] {
        for property in ["successorVersion", "deprecationLink"] {
            assert_errors_at(
                &with_link(property, value),
                "o.yaml",
                &[(
                    &format!("o.yaml:36:12: customProperties.{property}: "),
                    what,
                )],
            );
        }
    }
    // An absolute http(s) URI may name any host (a docs site).
    let c = read(
        &with_link("deprecationLink", "https://docs.example/orders%C3%A9"),
        "o.yaml",
    )
    .expect("parses");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
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
