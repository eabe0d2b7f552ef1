//! The example policy tree (`policies/`), compiled into the binary so that
//! `meshgate demo` runs from anywhere with no set-up.

use crate::decision::authz::{PolicyInputs, Source};

macro_rules! source {
    ($path:literal) => {
        Source {
            name: $path.to_string(),
            text: include_str!(concat!("../../../", $path)).to_string(),
            domain: None,
        }
    };
    // A domain's file: its policies speak only about the domain's resources,
    // its contracts are only the domain's.
    ($path:literal, $domain:literal) => {
        Source {
            domain: Some($domain.to_string()),
            ..source!($path)
        }
    };
}

/// The whole example mesh: baseline, the sales and finance domains (each
/// domain's policies and grants under its own authority).
pub fn example_inputs() -> PolicyInputs {
    PolicyInputs {
        schema: source!("policies/schema.cedarschema"),
        entities: Some(source!("policies/entities.json")),
        policies: vec![
            source!("policies/mesh/baseline.cedar"),
            source!("policies/domains/sales/policies.cedar", "sales"),
            source!("policies/domains/sales/fields.cedar", "sales"),
            source!("policies/domains/sales/grants.links.json", "sales"),
            source!("policies/domains/finance/policies.cedar", "finance"),
        ],
        contracts: vec![
            source!("policies/domains/sales/orders.odcs.yaml", "sales"),
            source!("policies/domains/sales/orders-v1.odcs.yaml", "sales"),
            source!("policies/domains/sales/customers.odcs.yaml", "sales"),
            source!("policies/domains/finance/ledger.odcs.yaml", "finance"),
        ],
        shadow: vec![],
    }
}

/// What the demo's sidecar, in front of a sales node, enforces: the mesh
/// baseline and the sales domain's policies, grants and contracts.
pub fn demo_inputs() -> PolicyInputs {
    let mut inputs = example_inputs();
    let sales_or_mesh = |s: &Source| {
        !s.name.starts_with("policies/domains/") || s.name.starts_with("policies/domains/sales/")
    };
    inputs.policies.retain(sales_or_mesh);
    inputs.contracts.retain(sales_or_mesh);
    inputs
}
