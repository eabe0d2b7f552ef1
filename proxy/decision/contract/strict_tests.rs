//! What a careless or hostile contract must not get past the reader: a
//! property set twice, a field attribute of the wrong type, a setting of
//! meshgate's outside `customProperties`. Each would otherwise be read as
//! something more open than was written.

use super::tests::assert_errors_at;

const ORDERS: &str = include_str!("../../../policies/domains/sales/orders.odcs.yaml");

/// The example contract with `extra` custom properties first.
fn with_custom(extra: &str) -> String {
    ORDERS.replace(
        "customProperties:\n",
        &format!("customProperties:\n{extra}"),
    )
}

#[test]
fn a_custom_property_set_twice_is_an_error_naming_the_first() {
    // Either order: neither `public` nor `restricted` may win unseen.
    for value in ["public", "restricted"] {
        let text = with_custom(&format!(
            "  - property: classification\n    value: {value}\n"
        ));
        assert_errors_at(
            &text,
            "o.yaml",
            &[(
                "o.yaml:37:15: customProperties[1].property: ",
                "`classification` is set twice: first at o.yaml:35:15 (customProperties[0])",
            )],
        );
    }
    // Any custom property, meshgate's or not.
    let text = with_custom(
        "  - property: costCentre\n    value: a\n  - property: costCentre\n    value: b\n",
    );
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:37:15: customProperties[1].property: ",
            "`costCentre` is set twice: first at o.yaml:35:15",
        )],
    );
}

#[test]
fn an_sla_property_set_twice_is_an_error_naming_the_first() {
    let text = ORDERS.replace(
        "  - { property: errorRate, value: 0.1, unit: percent }\n",
        "  - { property: errorRate, value: 0.1, unit: percent }\n  - { property: latency, value: 5, unit: s }\n",
    );
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:34:17: slaProperties[4].property: ",
            "`latency` is set twice: first at o.yaml:31:17 (slaProperties[1])",
        )],
    );
}
