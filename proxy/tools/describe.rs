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
    #[error("--base-url `{0}`: {1}")]
    BaseUrl(String, String),
    #[error(transparent)]
    Render(#[from] DescribeError),
}

/// Checks a `--base-url`: `http(s)://host[:port]` and nothing more; the
/// links' prefix, without a trailing slash.
pub fn base_url(url: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::BaseUrl(url.to_string(), why.to_string());
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("https" | "http")) => s,
        _ => return Err(bad("the scheme must be https or http")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user information"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(
            "only a scheme and an authority: the paths are the node's own",
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The documents of `snapshot` in `format`; `product`: one ODPS id only;
/// `origin`: what links start with (from [`base_url`]; empty: relative).
pub fn generate(
    snapshot: &Snapshot,
    format: Format,
    product: Option<&str>,
    origin: &str,
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
        Format::Linkset => text(describe::render(&described.linkset(&all, origin), false)?),
        Format::OdpsJson if product.is_some() => text(describe::render(
            &described.descriptor(groups[0], &all, origin),
            false,
        )?),
        Format::OdpsJson => {
            let docs: Vec<describe::Odps> = groups
                .iter()
                .map(|&g| described.descriptor(g, &all, origin))
                .collect();
            text(describe::render(&docs, false)?)
        }
        Format::OdpsYaml => {
            let mut out = String::new();
            for &g in &groups {
                out.push_str("---\n");
                out.push_str(&text(describe::render(
                    &described.descriptor(g, &all, origin),
                    true,
                )?));
            }
            out
        }
    })
}
