//! `meshgate describe`: the documents a node serves under
//! `/.well-known/data-product` and `/.well-known/api-catalog`, written
//! offline from the configuration's contracts, so that a domain's CI can
//! publish them to a catalog. Offline there is no caller: every contract
//! is described.

use std::path::Path;

use crate::decision::authz::{PolicyConfig, Snapshot};
use crate::decision::describe::{self, DescribeError};
use crate::runtime::config::{Config, ConfigError};

/// What `meshgate describe` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The ODPS descriptors as JSON: one object with `--product`, else an
    /// array, one per product.
    OdpsJson,
    /// The ODPS descriptors as YAML, one document per product.
    OdpsYaml,
    /// The RFC 9727 api-catalog (an RFC 9264 linkset).
    Linkset,
}

/// The `policy` section of a configuration file, its paths resolved.
pub fn policy_section(path: &Path) -> Result<PolicyConfig, ConfigError> {
    let config: Config = crate::base::yaml::read_yaml(path)?;
    let mut policy = config.policy.ok_or_else(|| ConfigError::Invalid {
        file: path.display().to_string(),
        field: "policy",
        message: "missing: the descriptors come from the contracts of the policy section".into(),
    })?;
    policy.resolve(&crate::base::paths::dir_of(path));
    Ok(policy)
}

/// Why the documents cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no data product `{0}`; the contracts describe: {1}")]
    UnknownProduct(String, String),
    #[error(transparent)]
    Render(#[from] DescribeError),
}

/// The documents of `snapshot` in `format`; `product`: one ODPS id only.
pub fn generate(
    snapshot: &Snapshot,
    format: Format,
    product: Option<&str>,
) -> Result<String, Error> {
    let described = snapshot.described();
    let all = described.all();
    let groups: Vec<usize> = match product {
        None => described
            .product_ids()
            .enumerate()
            .map(|(i, _)| i)
            .collect(),
        Some(id) => vec![described.product(id).ok_or_else(|| {
            let known: Vec<&str> = described.product_ids().collect();
            Error::UnknownProduct(id.to_string(), known.join(", "))
        })?],
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(match format {
        Format::Linkset => text(describe::render(&described.linkset(&all), false)?),
        Format::OdpsJson if product.is_some() => text(describe::render(
            &described.descriptor(groups[0], &all),
            false,
        )?),
        Format::OdpsJson => {
            let docs: Vec<describe::Odps> = groups
                .iter()
                .map(|&g| described.descriptor(g, &all))
                .collect();
            text(describe::render(&docs, false)?)
        }
        Format::OdpsYaml => {
            let mut out = String::new();
            for &g in &groups {
                out.push_str("---\n");
                out.push_str(&text(describe::render(
                    &described.descriptor(g, &all),
                    true,
                )?));
            }
            out
        }
    })
}
