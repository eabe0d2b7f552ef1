//! What a careless or hostile contract must not get past the reader: a
//! property set twice, a field attribute of the wrong type, a setting of
//! meshgate's outside `customProperties`. Each would otherwise be read as
//! something more open than was written.

use super::tests::assert_errors_at;
use super::*;

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

/// The `customer_email` property (line 25) with `from` replaced by `to`.
fn email(from: &str, to: &str) -> String {
    let line = "      - { name: customer_email, logicalType: string, classification: confidential, tags: [pii], customProperties: [{ property: meshgateMask, value: hash }] }";
    assert!(ORDERS.contains(line));
    assert!(line.contains(from), "{from}");
    ORDERS.replace(line, &line.replacen(from, to, 1))
}

#[test]
fn a_field_attribute_of_the_wrong_type_is_an_error_at_it() {
    let field = "schema[0].properties[7]";
    for (from, to, at, says) in [
        (
            "tags: [pii]",
            "tags: pii",
            "o.yaml:25:90: schema[0].properties[7].tags: ",
            "customer_email: tags are a list: `tags: [pii]`, not `tags: pii`",
        ),
        (
            "tags: [pii]",
            "tags: [pii, 3]",
            "o.yaml:25:96: schema[0].properties[7].tags[1]: ",
            "customer_email: a tag is a string",
        ),
        (
            "classification: confidential",
            "classification: [confidential]",
            "o.yaml:25:70: schema[0].properties[7].classification: ",
            "customer_email: a classification is a string",
        ),
        (
            "customProperties: [{ property: meshgateMask, value: hash }]",
            "customProperties: { property: meshgateMask, value: hash }",
            "o.yaml:25:115: schema[0].properties[7].customProperties: ",
            "customer_email: customProperties is a list",
        ),
        (
            "{ property: meshgateMask, value: hash }",
            "{ name: meshgateMask, value: hash }",
            "o.yaml:25:116: schema[0].properties[7].customProperties[0]: ",
            "customer_email: a custom property is `{ property: NAME, value: … }`",
        ),
        (
            "{ property: meshgateMask, value: hash }",
            "{ property: pii, value: true }, { property: pii, value: false }",
            "o.yaml:25:160: schema[0].properties[7].customProperties[1].property: ",
            "customer_email: `pii` is set twice: first at o.yaml:25:128 (schema[0].properties[7].customProperties[0].property)",
        ),
        (
            "logicalType: string",
            "logicalType: 5",
            "o.yaml:25:46: schema[0].properties[7].logicalType: ",
            "customer_email: a logical type",
        ),
        (
            "logicalType: string",
            "required: yes",
            "o.yaml:25:43: schema[0].properties[7].required: ",
            "customer_email: required is true or false",
        ),
        (
            "logicalType: string",
            "quality: { metric: invalidValues }",
            "o.yaml:25:42: schema[0].properties[7].quality: ",
            "customer_email: quality is a list of rules",
        ),
        (
            "logicalType: string",
            "items: [a]",
            "o.yaml:25:40: schema[0].properties[7].items: ",
            "customer_email: items is a mapping",
        ),
        (
            "logicalType: string",
            "properties: [{ name: a }], items: { properties: [{ name: b }] }",
            "o.yaml:25:81: schema[0].properties[7].items.properties: ",
            "customer_email: a property is an object (`properties`) or an array (`items.properties`), not both",
        ),
        (
            "logicalType: string",
            "pii: true",
            "o.yaml:25:33: schema[0].properties[7].pii: ",
            "customer_email: `pii` is read only under the property's customProperties",
        ),
        (
            "logicalType: string",
            "meshgateMask: hash",
            "o.yaml:25:33: schema[0].properties[7].meshgateMask: ",
            "customer_email: `meshgateMask` is read only under the property's customProperties",
        ),
    ] {
        assert!(at.contains(field));
        assert_errors_at(&email(from, to), "o.yaml", &[(at, says)]);
    }
    let text = email("name: customer_email", "name: 42");
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:25:17: schema[0].properties[7].name: ",
            "a property's name is a string",
        )],
    );
    let text = ORDERS.replace(
        "      - { name: id, logicalType: string, primaryKey: true }",
        "      - id",
    );
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:18:9: schema[0].properties[0]: ",
            "a property is a mapping with a `name`",
        )],
    );
}

#[test]
fn a_well_typed_field_is_read_as_before() {
    let c = read(&email("tags: [pii]", "tags: [pii, \"\"]"), "o.yaml").expect("parses");
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let f = &c.product.fields[0].fields[7];
    assert_eq!(f.name, "customer_email");
    assert!(f.pii);
    assert_eq!(f.tags, ["pii"]);
    assert_eq!(f.classification.as_deref(), Some("confidential"));
    // `key:` with no value is as good as no key.
    let text = email("tags: [pii]", "tags: ").replace(
        "customer_email, logicalType: string, classification: confidential",
        "customer_email, logicalType: string, classification: ",
    );
    let c = read(&text, "o.yaml");
    assert!(c.is_ok(), "{:?}", c.err());
}

#[test]
fn a_setting_of_meshgates_at_the_top_level_is_an_error() {
    for (key, section) in [
        ("meshgateUndeclared: refuse", "customProperties"),
        ("classification: restricted", "customProperties"),
        ("allowedPurposes: [fraud]", "customProperties"),
        ("Owner: someone", "customProperties"),
        ("meshgateWhatever: 1", "customProperties"),
        ("latency: 5s", "slaProperties"),
    ] {
        let text = ORDERS.replace("tenant: acme", &format!("tenant: acme\n{key}"));
        let name = key.split(':').next().unwrap_or_default();
        assert_errors_at(
            &text,
            "o.yaml",
            &[(
                &format!("o.yaml:11:1: {name}: "),
                &format!("`{name}` is read only under `{section}`"),
            )],
        );
    }
    // Another key outside ODCS is still only ignored.
    let text = ORDERS.replace("tenant: acme", "tenant: acme\nreviewBoard: x");
    let c = read(&text, "o.yaml").expect("warnings only");
    assert_eq!(c.warnings.len(), 1, "{:#?}", c.warnings);
}

/// A key written twice is reported at the second, naming the first (it
/// was reported at the mapping's start: `o.yaml:2:1: (document)`).
#[test]
fn a_key_written_twice_is_an_error_at_the_second() {
    let text = ORDERS.replace("tenant: acme", "tenant: acme\nstatus: retired");
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:11:1: status: ",
            "`status` is written twice in this mapping (first at o.yaml:7:1)",
        )],
    );
    let text = ORDERS.replace(
        "    physicalType: table\n",
        "    physicalType: table\n    name: again\n",
    );
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:16:5: schema[0].name: ",
            "`name` is written twice in this mapping (first at o.yaml:14:5)",
        )],
    );
    let text = ORDERS.replace(
        "    value: internal\n",
        "    value: internal\n    value: public\n",
    );
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:37:5: customProperties[0].value: ",
            "`value` is written twice in this mapping (first at o.yaml:36:5)",
        )],
    );
    // An empty key (found by the `contract` fuzz target) is the document's.
    let text = "? >\n? >\n";
    assert_errors_at(
        text,
        "o.yaml",
        &[(
            "o.yaml:2:3: (document): ",
            "`` is written twice in this mapping (first at o.yaml:1:3)",
        )],
    );
    let text = email("tags: [pii]", "tags: [pii], tags: []");
    assert_errors_at(
        &text,
        "o.yaml",
        &[(
            "o.yaml:25:97: schema[0].properties[7].tags: ",
            "`tags` is written twice in this mapping (first at o.yaml:25:84)",
        )],
    );
}
