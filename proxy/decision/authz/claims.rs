//! What a domain's contracts may claim. A contract read from a domain's
//! source (`policy.contracts: [{ path, domain }]`) must be of that domain,
//! and its product ids must not lie in another domain's namespace: an `id`
//! (or the product id its `domain` and `dataProduct` make, which names its
//! descriptor) that begins with `<other>.`, where `<other>` is another
//! domain the snapshot knows (named by a source, by a contract's `domain`
//! or by a `Mesh::Domain` of entities.json). Otherwise finance could
//! publish `sales.returns`: own `Mesh::DataProduct::"sales.returns"` and
//! its descriptor, have sales's policies naming it refused, and fail the
//! whole snapshot the day sales publishes it.
//!
//! ODCS ids may be UUIDs: an id in no domain's namespace is any domain's.
//! Where domains nest (`sales`, `sales.eu`), the longest one an id begins
//! with is its namespace. The mesh baseline's contract sources are not
//! limited.

use std::collections::BTreeSet;

use crate::base::locate::{locate, Step};
use crate::decision::contract::Product;

use super::*;

/// `file:line:col: field` of a top-level key of a contract.
fn place(src: &Source, field: &str) -> String {
    match locate(&src.text, &[Step::Key(field.to_string())]) {
        Some((l, c)) => format!("{}:{l}:{c}: {field}", src.name),
        None => format!("{}: {field}", src.name),
    }
}

/// Why `p`, read from the domain source `src`, is not that domain's to
/// publish: of another domain.
pub(super) fn foreign_contract(src: &Source, p: &Product) -> Option<String> {
    let theirs = src.domain.as_deref()?;
    (p.domain != theirs).then(|| {
        format!(
            "{}: the contract is of domain `{}`, but its source belongs to domain `{theirs}`; a domain publishes only its own products",
            place(src, "domain"),
            p.domain
        )
    })
}

/// The domains a snapshot knows: those its sources are declared for, its
/// contracts' `domain`s, and the `Mesh::Domain`s of entities.json.
pub(super) fn known_domains<'a>(
    inputs: &'a PolicyInputs,
    products: &'a [(&'a Source, Product)],
    entities: &Entities,
) -> BTreeSet<String> {
    let sources = inputs
        .policies
        .iter()
        .chain(&inputs.contracts)
        .chain(&inputs.shadow);
    let mut known: BTreeSet<String> = sources.filter_map(|s| s.domain.clone()).collect();
    known.extend(products.iter().map(|(_, p)| p.domain.clone()));
    let domain = type_name("Domain");
    known.extend(
        entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| u.type_name() == &domain)
            .map(|u| u.id().unescaped().to_string()),
    );
    known
}

/// The domain whose namespace `id` lies in: the longest known domain `d`
/// such that `id` begins with `d.`.
fn namespace<'k>(id: &str, known: &'k BTreeSet<String>) -> Option<&'k str> {
    known
        .iter()
        .filter(|d| {
            id.strip_prefix(d.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
        })
        .max_by_key(|d| d.len())
        .map(String::as_str)
}

/// Every product id of a domain's contract that lies in another domain's
/// namespace, as an error naming the file, the line and the field.
pub(super) fn squatted(
    products: &[(&Source, Product)],
    known: &BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    for (src, p) in products {
        if src.domain.is_none() {
            continue;
        }
        let own = p.domain.as_str();
        let grouped = p.data_product.as_ref().map(|dp| format!("{own}.{dp}"));
        let names = [("id", Some(p.id.clone())), ("dataProduct", grouped)];
        for (field, name) in names {
            let Some(name) = name else { continue };
            let Some(other) = namespace(&name, known).filter(|d| *d != own) else {
                continue;
            };
            let what = match field {
                "id" => format!("`{name}`"),
                _ => format!("the product id `{name}` (`domain` and `dataProduct`)"),
            };
            errors.push(format!(
                "{}: {what} lies in the namespace of domain `{other}` (`{other}.`), but the contract is of domain `{own}`; a domain's product ids may not begin with another domain's name and a dot",
                place(src, field)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(domains: &[&str]) -> BTreeSet<String> {
        domains.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn an_id_lies_in_the_longest_domain_it_begins_with() {
        let k = known(&["sales", "sales.eu", "finance"]);
        assert_eq!(namespace("sales.orders", &k), Some("sales"));
        assert_eq!(namespace("sales.eu.orders", &k), Some("sales.eu"));
        assert_eq!(namespace("salesforce.leads", &k), None);
        assert_eq!(namespace("sales.", &k), None);
        assert_eq!(namespace("sales", &k), None);
        assert_eq!(
            namespace("0b6c1e8e-3f0a-4c1e-9a43-2d5e8f1b7c90", &k),
            None,
            "a UUID is in no domain's namespace"
        );
    }

    /// A minimal contract; `more` adds top-level keys.
    fn contract(id: &str, domain: &str, route: &str, more: &str) -> String {
        format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\ndomain: {domain}\n{more}schema:\n  - {{ name: rows, classification: internal }}\ncustomProperties:\n  - {{ property: owner, value: team@example }}\n  - property: meshgateRoutes\n    value:\n      - {{ method: GET, path: \"{route}\", action: read, dataset: rows }}\n"
        )
    }

    /// The example mesh with more contracts: (name, source's domain, text).
    fn with_contracts(extra: &[(&str, Option<&str>, String)]) -> Result<Snapshot, LoadErrors> {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        for (name, domain, text) in extra {
            inputs.contracts.push(Source {
                name: name.to_string(),
                text: text.clone(),
                domain: domain.map(str::to_string),
            });
        }
        Snapshot::build(&inputs)
    }

    #[test]
    fn a_domain_cannot_take_a_product_id_of_another_domains_namespace() {
        let returns = contract("sales.returns", "finance", "/returns", "");
        let err = with_contracts(&[(
            "finance/returns.odcs.yaml",
            Some("finance"),
            returns.clone(),
        )])
        .expect_err("refused");
        assert_eq!(
            err.shown,
            ["finance/returns.odcs.yaml:3:5: id: `sales.returns` lies in the namespace of domain `sales` (`sales.`), but the contract is of domain `finance`; a domain's product ids may not begin with another domain's name and a dot"]
        );
        // A domain known only from entities.json (no source here) counts too.
        let campaigns = contract("marketing.campaigns", "finance", "/campaigns", "");
        let err = with_contracts(&[("finance/c.odcs.yaml", Some("finance"), campaigns)])
            .expect_err("refused");
        assert!(
            err.shown[0].contains("namespace of domain `marketing`"),
            "{err:?}"
        );
        // The mesh baseline's contract sources are not limited; an id in no
        // domain's namespace (a UUID) is any domain's.
        let baseline = with_contracts(&[("mesh/returns.odcs.yaml", None, returns)]);
        assert!(baseline.is_ok(), "{:?}", baseline.err());
        let uuid = contract("0b6c1e8e-3f0a-4c1e-9a43-2d5e8f1b7c90", "finance", "/u", "");
        let loaded = with_contracts(&[("finance/u.odcs.yaml", Some("finance"), uuid)]);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn nested_domains_keep_to_their_own_namespaces() {
        let eu = contract("sales.eu.orders", "sales.eu", "/eu/orders", "");
        let ok = with_contracts(&[("eu/orders.odcs.yaml", Some("sales.eu"), eu.clone())]);
        assert!(ok.is_ok(), "{:?}", ok.err());
        // `sales` may not publish into `sales.eu`, by its id or by the
        // product id its dataProduct makes (`sales.` + `eu.refunds`).
        let taken = contract("sales.eu.returns", "sales", "/r", "");
        let grouped = contract("sales.refunds", "sales", "/f", "dataProduct: eu.refunds\n");
        let err = with_contracts(&[
            ("eu/orders.odcs.yaml", Some("sales.eu"), eu),
            ("sales/returns.odcs.yaml", Some("sales"), taken),
            ("sales/refunds.odcs.yaml", Some("sales"), grouped),
        ])
        .expect_err("refused");
        assert_eq!(err.shown.len(), 2, "{:#?}", err.shown);
        assert!(
            err.shown[0].starts_with("sales/returns.odcs.yaml:3:5: id: `sales.eu.returns` lies in the namespace of domain `sales.eu`"),
            "{:#?}",
            err.shown
        );
        assert!(
            err.shown[1].starts_with("sales/refunds.odcs.yaml:6:14: dataProduct: the product id `sales.eu.refunds` (`domain` and `dataProduct`) lies in the namespace of domain `sales.eu`"),
            "{:#?}",
            err.shown
        );
    }
}
