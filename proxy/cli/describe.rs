//! `meshgate describe`: the node's well-known documents, offline.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::load_policy;
use crate::tools::describe::{self, Format};

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    /// ODPS v1.1.0 descriptors as JSON (an array; one object with --product).
    OdpsJson,
    /// ODPS v1.1.0 descriptors as YAML, one document per product.
    OdpsYaml,
    /// The RFC 9727 api-catalog, an RFC 9264 linkset (application/linkset+json).
    Linkset,
}

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration file (its `policy` section is used).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "odps-json")]
    format: FormatArg,
    /// Only this data product (its ODPS id, `<domain>.<dataProduct>`).
    #[arg(long, value_name = "ID")]
    product: Option<String>,
    /// Where clients reach the node (`https://orders.sales.example:8443`):
    /// links start with it. Without it they are relative to the node.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let origin = match &args.base_url {
        Some(url) => describe::base_url(url)?,
        None => String::new(),
    };
    let policy = describe::policy_section(&args.config)?;
    let snapshot = load_policy(&policy)?;
    let format = match args.format {
        FormatArg::OdpsJson => Format::OdpsJson,
        FormatArg::OdpsYaml => Format::OdpsYaml,
        FormatArg::Linkset => Format::Linkset,
    };
    print!(
        "{}",
        describe::generate(&snapshot, format, args.product.as_deref(), &origin)?
    );
    Ok(ExitCode::SUCCESS)
}
