use super::*;

const ORDERS: &str = include_str!("../../../policies/domains/sales/orders.odcs.yaml");

/// The errors of a contract that does not parse, one line each.
fn errors(text: &str) -> Vec<String> {
    parse(text, "o.yaml")
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// `text` (read as the contract file `file`) is refused with exactly the
/// errors `expect`, in order: each at its `file:line:column`, saying what.
pub(super) fn assert_errors_at(text: &str, file: &str, expect: &[(&str, &str)]) {
    let errors = read(text, file).expect_err("refused").0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    for (line, (at, what)) in shown.iter().zip(expect) {
        assert!(
            line.starts_with(at) && line.contains(what),
            "{line} vs {at} {what}"
        );
    }
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e[0].clone()
}

#[test]
fn reads_the_example_contract() {
    let c = read(ORDERS, "orders.odcs.yaml").expect("parses");
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let p = c.product;
    assert_eq!(p.id, "sales.orders");
    assert_eq!(p.domain, "sales");
    assert_eq!(p.classification, "internal");
    assert_eq!(p.owner, "sales-data-team@acme.example");
    assert_eq!(p.allowed_purposes, vec!["reporting", "fulfilment"]);
    assert_eq!(p.sla.availability, Some(99.9));
    assert_eq!(p.sla.latency, Some(Duration::from_millis(250)));
    assert_eq!(p.sla.throughput, Some(200.0));
    assert_eq!(
        p.datasets,
        vec![("orders".to_string(), "internal".to_string())]
    );
    assert!(p
        .routes
        .iter()
        .any(|r| r.path == "/orders/{id}" && r.action == Action::Read));
}

/// A latency too large for a `Duration` made contract loading panic
/// (found by the `contract` fuzz target, kept in fuzz/regressions/);
/// one that is zero in nanoseconds, an infinity or NaN is refused too.
#[test]
fn an_unrepresentable_latency_is_an_error() {
    let too_large = "too large a latency to be a duration";
    let not_a_number = "value must be a positive number";
    for (value, unit, why) in [
        ("1e300", "m", too_large),
        ("2e19", "s", too_large),
        (
            "1e-12",
            "s",
            "too small a latency: it is zero in nanoseconds",
        ),
        (".inf", "s", not_a_number),
        ("\"inf\"", "ms", not_a_number),
        (".nan", "ms", not_a_number),
    ] {
        let text = ORDERS.replace(
            "{ property: latency, value: 250, unit: ms }",
            &format!("{{ property: latency, value: {value}, unit: {unit} }}"),
        );
        assert_eq!(
            one_error(&text),
            format!("o.yaml:31:33: slaProperties[1]: latency: {why}"),
            "{value} {unit}"
        );
    }
}

#[test]
fn a_throughput_that_is_zero_per_second_is_an_error() {
    let text = ORDERS.replace(
        "{ property: throughput, value: 200, unit: requests/s }",
        "{ property: throughput, value: 5e-324, unit: requests/h }",
    );
    assert_eq!(
        one_error(&text),
        "o.yaml:32:36: slaProperties[2]: throughput: too small a throughput: it is zero per second"
    );
}

#[test]
fn errors_name_the_field_at_its_position() {
    let e = one_error(&ORDERS.replace("action: query", "action: raed"));
    assert!(
        e.starts_with(
            "o.yaml:47:55: customProperties.meshgateRoutes[2].action: unknown variant `raed`"
        ),
        "{e}"
    );
    let e = one_error(&ORDERS.replace("value: internal", "value: secret"));
    assert_eq!(
        e,
        "o.yaml:36:12: customProperties.classification: `secret`: one of public, internal, confidential, restricted"
    );
    let e = one_error(&ORDERS.replace("domain: sales\n", ""));
    assert!(e.starts_with("o.yaml:2:1: domain: required"), "{e}");
    let e = errors(&ORDERS.replace("dataset: orders }", "dataset: order }"))[0].clone();
    assert!(
        e.starts_with("o.yaml:45:62: customProperties.meshgateRoutes[0].dataset: `order` is not a schema object"),
        "{e}"
    );
    let e = one_error(&ORDERS.replace("unit: ms", "unit: fortnights"));
    assert!(
        e.contains("slaProperties[1]: latency: unit `fortnights`"),
        "{e}"
    );
    let e = one_error("kind: DataContract\napiVersion: v3.0.2\nid: [\n");
    assert!(e.starts_with("o.yaml:"), "{e}");
}

/// Every mistake of a contract is reported, each at its line and column,
/// in file order: the routes after a wrong one are read too.
#[test]
fn every_error_is_reported_in_file_order() {
    let text = ORDERS
        .replace("kind: DataContract", "kind: DataContrakt")
        .replace("unit: ms", "unit: fortnights")
        .replace("path: /orders/search", "path: orders/search")
        .replace("dataset: orders }", "dataset: order }")
        .replace(
            "method: GET, path: /orders/_schema",
            "method: \"G T\", path: /orders/_schema",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 9, "{e:#?}");
    assert!(
        e[0].starts_with("o.yaml:3:7: kind: `DataContrakt`"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("o.yaml:31:33: slaProperties[1]: latency: unit `fortnights`"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("o.yaml:45:62: customProperties.meshgateRoutes[0].dataset"),
        "{e:#?}"
    );
    assert!(
        e[4].starts_with("o.yaml:47:31: customProperties.meshgateRoutes[2].path: `orders/search`"),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("meshgateRoutes[4].method: `G T` is not an HTTP method")),
        "{e:#?}"
    );
}

/// Routes that no request could ever take are refused, not loaded dead.
#[test]
fn head_and_connect_routes_are_refused() {
    for (method, says) in [
        (
            "HEAD",
            "routed, decided and audited as the path's `GET` route",
        ),
        (
            "head",
            "routed, decided and audited as the path's `GET` route",
        ),
        ("CONNECT", "meshgate answers it 400"),
    ] {
        let text = ORDERS.replace(
            "method: GET, path: /orders/_schema",
            &format!("method: {method}, path: /orders/_schema"),
        );
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|l| l.contains("meshgateRoutes[4].method:") && l.contains(says)),
            "{method}: {e:#?}"
        );
    }
}

#[test]
fn misspelt_keys_are_errors_and_ignored_ones_warnings() {
    let text = ORDERS
        .replace("slaProperties:", "slaPropertes:")
        .replace("property: meshgateRoutes", "property: meshgateRoute")
        .replace("tenant: acme", "tenant: acme\nreviewBoard: data-council");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(
        e[0],
        "o.yaml:30:1: slaPropertes: unknown key: did you mean `slaProperties`?"
    );
    assert_eq!(
        e[1],
        "o.yaml:44:15: customProperties[3].property: `meshgateRoute` is not a property meshgate reads: did you mean `meshgateRoutes`?"
    );

    let text = ORDERS
        .replace("tenant: acme", "tenant: acme\nreviewBoard: data-council")
        .replace(
            "  - property: owner",
            "  - property: costCentre\n    value: cc-17\n  - property: owner",
        );
    let c = read(&text, "o.yaml").expect("warnings only");
    let w: Vec<String> = c.warnings.iter().map(Finding::warning).collect();
    assert_eq!(
        w,
        vec![
            "o.yaml:11:1: warning: reviewBoard: not an ODCS v3 key: meshgate ignores it".to_string(),
            "o.yaml:38:15: warning: customProperties[1].property: `costCentre`: meshgate does not read this custom property and ignores it".to_string(),
        ]
    );
}

/// 4,000 ignored custom properties took 15 s to validate and 8,000 took
/// 60 s: each warning read the whole document again to find its line.
/// Now the document is read once, and a file reports its first 50.
#[test]
fn fifty_thousand_ignored_custom_properties_are_located_at_once_and_capped() {
    let extra: String = (0..50_000)
        .map(|i| format!("  - property: note{i}\n    value: v\n"))
        .collect();
    let text = ORDERS.replace(
        "customProperties:\n",
        &format!("customProperties:\n{extra}"),
    );
    let c = read(&text, "o.yaml").expect("warnings only");
    let w: Vec<String> = c.warnings.iter().map(Finding::warning).collect();
    assert_eq!(w.len(), REPORTED + 1, "{w:#?}");
    assert_eq!(
        w[0],
        "o.yaml:35:15: warning: customProperties[0].property: `note0`: meshgate does not read this custom property and ignores it"
    );
    assert!(
        w[REPORTED - 1].starts_with("o.yaml:133:15: warning: customProperties[49].property"),
        "{}",
        w[REPORTED - 1]
    );
    assert_eq!(
        w[REPORTED],
        "o.yaml: warning: and 49950 more warnings not shown"
    );
}

#[test]
fn a_product_with_no_routes_or_no_sla_is_a_warning() {
    let start = ORDERS.find("  - property: meshgateRoutes").expect("routes");
    let text = ORDERS[..start]
        .replace("slaProperties:\n", "")
        .lines()
        .filter(|l| !l.trim_start().starts_with("- { property:"))
        .collect::<Vec<_>>()
        .join("\n");
    let c = read(&text, "o.yaml").expect("warnings only");
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w.iter()
            .any(|w| w.contains("customProperties.meshgateRoutes: no routes")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|w| w.contains("slaProperties: no SLA")),
        "{w:#?}"
    );
}

/// A route that answers with data but names no dataset of a product
/// that declares fields gets no field plan: a warning at the route. A
/// `describe` route (its contract, not its data) gets none.
#[test]
fn a_data_route_without_a_dataset_is_a_warning() {
    let c = read(ORDERS, "o.yaml").expect("parses");
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let text = ORDERS.replace(
        "{ method: POST, path: /orders/search, action: query, dataset: orders }",
        "{ method: POST, path: /orders/search, action: query }",
    );
    let c = read(&text, "o.yaml").expect("warnings only");
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].starts_with("o.yaml:47:") &&
        w[0].contains("customProperties.meshgateRoutes[2].path: POST /orders/search names no `dataset`: no field plan"),
        "{w:#?}"
    );
}

#[test]
fn an_unquoted_pattern_in_a_flow_mapping_gets_a_hint() {
    let text = ORDERS.replace("path: \"/orders/{id}\"", "path: /orders/{id}");
    let e = one_error(&text);
    assert!(e.starts_with("o.yaml:46:"), "{e}");
    assert!(
        e.ends_with("(a path pattern with `{…}` inside a flow mapping `{ … }` must be quoted: path: \"/orders/{id}\")"),
        "{e}"
    );
    // A line past the end (found by the `contract` fuzz target) is no hint.
    assert!(!sections::unquoted_braces("a: b", 3));
    // Another syntax error gets no hint.
    let e = one_error(&ORDERS.replace("tags: [sales, orders]", "tags: [sales, orders"));
    assert!(!e.contains("must be quoted"), "{e}");
}

#[test]
fn misspelt_sla_properties_and_route_keys_are_errors() {
    let text = ORDERS
        .replace("property: latency,", "property: latncy,")
        .replace("action: describe }", "action: describe, datset: orders }")
        .replace("property: classification", "property: clasification");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!(
        e[0],
        "o.yaml:31:17: slaProperties[1].property: `latncy`: did you mean `latency`?"
    );
    assert!(
        e[1].starts_with("o.yaml:35:15: customProperties[0].property: `clasification` is not a property meshgate reads: did you mean `classification`?"),
        "{e:#?}"
    );
    assert_eq!(
        e[2],
        "o.yaml:49:65: customProperties.meshgateRoutes[4].datset: unknown field: did you mean `dataset`?"
    );
}

#[test]
fn a_wrong_value_is_one_error_and_a_missing_one_is_required() {
    let e = one_error(&ORDERS.replace("domain: sales", "domain: [sales]"));
    assert!(
        e.starts_with("o.yaml:8:9: domain: invalid type: sequence"),
        "{e}"
    );
    let e = one_error(&ORDERS.replace("domain: sales", "domain:"));
    assert!(e.starts_with("o.yaml:2:1: domain: required"), "{e}");
    let e = one_error(&ORDERS.replace("version: 2.0.0\n", ""));
    assert_eq!(e, "o.yaml:2:1: version: required");
}

#[test]
fn a_method_override_is_read_and_a_bad_one_named_with_its_place() {
    let with = |value: &str| {
        ORDERS.replace(
            "customProperties:\n",
            &format!(
                "customProperties:\n  - property: meshgateAllowOverride\n    value: {value}\n"
            ),
        )
    };
    assert_eq!(
        read(ORDERS, "o.yaml")
            .expect("parses")
            .product
            .method_override,
        None
    );
    let p = read(&with("{ methodHeader: X-HTTP-Method-Override }"), "o.yaml")
        .expect("parses")
        .product;
    assert_eq!(
        p.method_override.as_ref().map(|h| h.as_str()),
        Some("x-http-method-override")
    );
    let e = one_error(&with("{ methodHeader: \"X Verb\" }"));
    assert!(
        e.starts_with("o.yaml:")
            && e.contains("customProperties.meshgateAllowOverride.methodHeader")
            && e.contains("`X Verb` is not a header name"),
        "{e}"
    );
    for other in ["X_Forwarded_For", "Content-Type", "X-Verb"] {
        let e = one_error(&with(&format!("{{ methodHeader: {other} }}")));
        assert!(
            e.contains("is not a method-override header"),
            "{other}: {e}"
        );
    }
    let e = one_error(&with("{ pathHeader: X-Original-URL }"));
    assert!(e.contains("pathHeader"), "{e}");
}

/// An allowed purpose no request can declare (`x-data-purpose` carries one
/// token) is a warning at it; the product still loads.
#[test]
fn an_allowed_purpose_that_is_not_a_token_is_a_warning() {
    let text = ORDERS.replace(
        "value: [reporting, fulfilment]",
        "value: [reporting, \"research/clinical\", \"gdpr:art6\"]",
    );
    assert_ne!(text, ORDERS, "the example's purposes changed");
    let c = read(&text, "o.yaml").expect("warnings only");
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].contains("customProperties.allowedPurposes[1]: `research/clinical` is not one token"),
        "{w:#?}"
    );
    // (`:` is no token character either.)
    assert!(
        w[1].starts_with("o.yaml:40:45: customProperties.allowedPurposes[2]: `gdpr:art6`"),
        "{w:#?}"
    );
    assert_eq!(c.product.allowed_purposes.len(), 3);
}
