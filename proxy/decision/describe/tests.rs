//! Unit tests of the well-known documents.

use super::*;

const ORDERS: &str = include_str!("../../../policies/domains/sales/orders.odcs.yaml");
const LEDGER: &str = include_str!("../../../policies/domains/finance/ledger.odcs.yaml");

/// The orders contract as another version of the same product.
fn version(id: &str, version: &str) -> String {
    ORDERS
        .replace("id: sales.orders\n", &format!("id: {id}\n"))
        .replace("version: 2.0.0\n", &format!("version: {version}\n"))
        .replace("  - property: meshgateRoutes", "  - property: unused")
}

fn described(texts: &[(&str, String)]) -> Result<Described, Vec<String>> {
    let products: Vec<(Product, Bytes)> = texts
        .iter()
        .map(|(file, text)| {
            let p = crate::decision::contract::parse(text, file).expect("contract");
            (p, Bytes::from(text.clone()))
        })
        .collect();
    Described::new(products.iter().map(|(p, t)| (p, t.clone())))
}

#[test]
fn contracts_of_one_domain_and_data_product_are_one_product_newest_version_first() {
    let d = described(&[
        ("orders.yaml", ORDERS.to_string()),
        ("v2.yaml", version("sales.orders.v2", "2.9.1")),
        ("v3.yaml", version("sales.orders.v3", "2.10.0")),
        ("ledger.yaml", LEDGER.to_string()),
    ])
    .expect("described");
    assert_eq!(
        d.product_ids().collect::<Vec<_>>(),
        ["finance.ledger", "sales.orders"]
    );
    let orders = d.product("sales.orders").expect("orders");
    let odps = d.descriptor(orders, &d.all(), "");
    let ports: Vec<(&str, &str)> = odps
        .output_ports
        .iter()
        .map(|p| (p.contract_id.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(
        ports,
        [
            ("sales.orders.v3", "2.10.0"),
            ("sales.orders.v2", "2.9.1"),
            ("sales.orders", "2.0.0")
        ]
    );
    assert_eq!(odps.version.as_deref(), Some("2.10.0"));
    // Only the contracts the caller may describe are ports.
    let only_v1 = d.descriptor(orders, &d.allowed([0]), "https://n:8443");
    assert_eq!(only_v1.output_ports.len(), 1);
    assert_eq!(only_v1.version.as_deref(), Some("2.0.0"));
    // The scope of a descriptor is its product's contracts, the scope
    // of a listing every contract.
    assert_eq!(d.scope(Ask::Descriptor(orders)).len(), 3);
    assert_eq!(d.scope(Ask::Index).len(), 4);
}

#[test]
fn paths_name_the_index_a_descriptor_the_caller_view_and_contracts_by_id_and_version() {
    let d = described(&[
        ("orders.yaml", ORDERS.to_string()),
        ("v2.yaml", version("sales.orders.v2", "3.0.0")),
    ])
    .expect("described");
    let p = d.product("sales.orders").expect("product");
    assert_eq!(d.ask(PREFIX), Ok(Ask::Index));
    assert_eq!(d.ask(API_CATALOG), Ok(Ask::Catalog));
    assert_eq!(d.ask(&product_path("sales.orders")), Ok(Ask::Descriptor(p)));
    assert_eq!(
        d.ask(&format!("{PREFIX}/sales.orders/caller")),
        Ok(Ask::Caller(p))
    );
    assert_eq!(
        d.ask(&format!("{PREFIX}/sales.orders/contracts/sales.orders.v2")),
        Ok(Ask::Contract(p, 1))
    );
    assert_eq!(
        d.ask(&contract_path("sales.orders", "sales.orders", "2.0.0")),
        Ok(Ask::Contract(p, 0))
    );
    for unknown in [
        format!("{PREFIX}/sales.orders/contracts/sales.orders/1.2.0"),
        format!("{PREFIX}/sales.orders/contracts"),
        format!("{PREFIX}/sales.orders/"),
        format!("{PREFIX}/sales"),
        format!("{PREFIX}x"),
        format!("{API_CATALOG}/x"),
    ] {
        assert_eq!(d.ask(&unknown), Err(DescribeError::Unknown), "{unknown}");
    }
    assert!(is_well_known(PREFIX) && is_well_known(&format!("{PREFIX}/a")));
    assert!(is_well_known(API_CATALOG));
    assert!(!is_well_known("/.well-known/data-products") && !is_well_known("/orders"));
}

#[test]
fn a_route_under_the_well_known_prefixes_is_refused_naming_the_file_and_route() {
    let text = ORDERS.replace(
        "      - { method: GET, path: /orders/_schema, action: describe }",
        "      - { method: GET, path: /.well-known/api-catalog, action: describe }",
    );
    let errors = described(&[("o.yaml", text)]).expect_err("refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "o.yaml: customProperties.meshgateRoutes: [4].path: `/.well-known/api-catalog`"
        ),
        "{errors:?}"
    );
    // A data product named with a `/` is refused where the contract is read.
    let text = ORDERS.replace("dataProduct: orders", "dataProduct: a/b");
    let e = crate::decision::contract::parse(&text, "o.yaml").expect_err("refused");
    assert!(
        e.to_string()
            .starts_with("o.yaml:9:14: dataProduct: `a/b` holds `/`"),
        "{e}"
    );
}

#[test]
fn ids_are_percent_encoded_in_links_and_versions_order_by_their_numbers() {
    assert_eq!(encode("sales.orders_v-2~"), "sales.orders_v-2~");
    assert_eq!(encode("a b%é"), "a%20b%25%C3%A9");
    assert!(version_key("2.10.0") > version_key("2.9.1"));
    assert!(version_key("v3") > version_key("2.0.0"));
    assert!(version_key("1.0.0-rc1") < version_key("1.0.0"));
    assert!(version_key("1.0.0-rc2") > version_key("1.0.0-rc1"));
    assert_eq!(version_key("1.0.0+build.7"), version_key("1.0.0"));
}

#[test]
fn data_product_must_be_a_string_and_the_rest_is_read_leniently() {
    let e = Extra::read(b"dataProduct: [orders]\n", "o.yaml").expect_err("refused");
    assert_eq!(e, "o.yaml: dataProduct: must be a string");
    let x = Extra::read(b"dataProduct: ''\ntenant: 7\nsupport: nope\n", "o.yaml").expect("read");
    assert_eq!(
        x.data_product, None,
        "empty: the contract's own id groups it"
    );
    assert_eq!(x.tenant, None);
    assert!(support_of(x.support.as_ref()).is_empty());
}

/// A contract without `dataProduct` is a product of its own, by its id: an
/// id that is another product's (domain and dataProduct) would merge two
/// products into one descriptor, and is refused.
#[test]
fn a_contract_id_that_is_another_products_id_is_refused() {
    let ledger = LEDGER
        .replace("id: finance.ledger\n", "id: sales.orders\n")
        .replace("dataProduct: ledger\n", "");
    let Err(e) = described(&[("orders.yaml", ORDERS.to_string()), ("ledger.yaml", ledger)]) else {
        panic!("two products under one id were accepted");
    };
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "ledger.yaml: id: `sales.orders` is also the product id of other contracts"
        ),
        "{e:?}"
    );
}

/// A version of SemVer's characters is a path segment the node answers:
/// its `+` is sent encoded and decoded once, where a `/` (now refused in a
/// version) made a link the node answered 400.
#[test]
fn a_version_with_build_metadata_has_a_contract_path_the_node_answers() {
    let v = "3.0.0-rc.1+build.5";
    let d = described(&[
        ("orders.yaml", ORDERS.to_string()),
        ("v3.yaml", version("sales.orders.v3", v)),
    ])
    .expect("described");
    let p = d.product("sales.orders").expect("product");
    let path = contract_path("sales.orders", "sales.orders.v3", v);
    assert!(
        path.ends_with("/sales.orders.v3/3.0.0-rc.1%2Bbuild.5"),
        "{path}"
    );
    let n = crate::model::path::normalize(&path).expect("a path the node takes");
    assert_eq!(d.ask(&n.decoded()), Ok(Ask::Contract(p, 1)));
}
