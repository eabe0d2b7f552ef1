//! Response governance fixtures: the orders contract of a copied example
//! tree with a test's own fields (personal ones hashed, cut to their last
//! four characters, cut to a year, a nested one removed, a restricted one
//! in an array redacted), a sales-domain `read_field` forbid hiding the
//! personal ones from callers outside sales, and a hash key.

use std::path::Path;

use super::{curl, Leaf, Meshgate, Pki, Sidecar, Target};

/// The orders dataset's properties as the tests declare them.
pub const FIELDS: &str = "      - { name: id, logicalType: string, primaryKey: true }
      - { name: customer, logicalType: string }
      - { name: region, logicalType: string }
      - { name: amount, logicalType: number }
      - { name: currency, logicalType: string }
      - { name: status, logicalType: string }
      - { name: placed_at, logicalType: date }
      - name: customer_email
        logicalType: string
        tags: [pii]
        customProperties:
          - { property: meshgateMask, value: hash }
      - name: customer_phone
        logicalType: string
        customProperties:
          - { property: pii, value: true }
          - { property: meshgateMask, value: last4 }
      - name: customer_since
        logicalType: date
        tags: [pii]
        customProperties:
          - { property: meshgateMask, value: year }
      - name: shipping
        logicalType: object
        properties:
          - { name: city, logicalType: string }
          - { name: street, logicalType: string, tags: [pii] }
      - name: lines
        logicalType: array
        items:
          logicalType: object
          properties:
            - { name: sku, logicalType: string }
            - { name: unit_cost, logicalType: number, classification: restricted, customProperties: [{ property: meshgateMask, value: redact }] }
";

/// The sales domain's field rule of the tests (`domains/sales/fields.cedar`).
pub const FORBID: &str = r#"@id("sales.orders.pii-for-sales-only")
forbid (principal, action == Mesh::Action::"read_field", resource in Mesh::Dataset::"sales.orders/orders")
when { resource.pii }
unless { principal in Mesh::Domain::"sales" };
"#;

/// One order as the product's server sends it.
pub const RECORD: &str = r#"{"id": "SO-1", "amount": 12.50, "customer_email": "ana@example.com", "customer_phone": "+49 170 1234567", "customer_since": "2019-04-01", "shipping": {"city": "Köln", "street": "Ring 1"}, "lines": [{"sku": "X-1", "unit_cost": 3.25}]}"#;

/// The beginning of [`RECORD`] masked for a caller outside sales.
pub const MASKED: &str = r#"{"id":"SO-1","amount":12.50,"customer_email":"hmac-sha256:"#;

/// The hash key the tests' sidecars read.
pub const KEY: &str = "0123456789abcdef0123456789abcdef-test-key";

/// The client of the sales domain (sees personal fields).
pub const ORDERS: &str = "spiffe://mesh.local/ns/sales/sa/order-service";

/// Declares [`FIELDS`] as the properties of `contract` (an orders
/// contract: one dataset, its properties listed before `team:`).
pub fn declare(contract: &Path, fields: &str) {
    let text = std::fs::read_to_string(contract).expect("read contract");
    let start = text.find("    properties:\n").expect("a properties list") + 16;
    let end = text.find("team:\n").expect("a team section");
    let text = format!("{}{fields}{}", &text[..start], &text[end..]);
    std::fs::write(contract, text).expect("write contract");
}

/// A sidecar (not started) on the example tree with [`FIELDS`] declared,
/// [`FORBID`] added and `hash.key` holding [`KEY`]; clients `reporting`
/// (finance) and `orders` (sales).
pub fn masked(pki: &Pki, up: &(impl Target + ?Sized)) -> Sidecar {
    masked_in(pki, up, pki.dir.path(), KEY)
}

/// The same with its configuration, policies and `hash.key` (holding
/// `key`) in `dir`: for several sidecars of one PKI.
pub fn masked_in(pki: &Pki, up: &(impl Target + ?Sized), dir: &Path, key: &str) -> Sidecar {
    pki.client("orders", Leaf::client_spiffe(ORDERS));
    std::fs::create_dir_all(dir).expect("mkdir");
    let sidecar = Meshgate::builder(pki, up).dir(dir).policies();
    let sales = dir.join("policies/domains/sales");
    declare(&sales.join("orders.odcs.yaml"), FIELDS);
    std::fs::write(sales.join("fields.cedar"), FORBID).expect("write");
    let key_file = dir.join("hash.key");
    std::fs::write(&key_file, key).expect("write key");
    sidecar.extra(&format!(
        "fields:\n  hash_key_file: {}\n",
        key_file.display()
    ))
}

/// `"hmac-sha256:<hex>"`: the pseudonym of the string `value` under `key`
/// (its text, whitespace around it trimmed), computed here.
pub fn pseudonym(key: &str, value: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.trim().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, value.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("hmac-sha256:{hex}")
}

/// (curl's exit code, status, body) of one GET as `who`; `args` before
/// the URL (`--http2`, headers).
pub fn get(pki: &Pki, who: &str, args: &[&str], url: &str) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["-w", "\n%{http_code}", url]);
    let out = curl(pki, Some(who), &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        status.to_string(),
        body.to_string(),
    )
}
