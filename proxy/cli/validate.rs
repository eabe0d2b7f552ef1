//! `meshgate validate`: check a configuration and everything it names.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::load_policy;
use crate::runtime::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.display().to_string();
    let config = Config::load(&args.config)?;
    crate::transport::tls::TlsMaterial::load(&config.tls)?;
    match &config.policy {
        None => println!("{path}: ok (no policy section: authenticated mode)"),
        Some(p) => {
            let snapshot = load_policy(p)?;
            if let Some(users) = &config.users {
                let errors = snapshot.check_user_mapping(users);
                if !errors.is_empty() {
                    anyhow::bail!("{path}: {}", errors.join("; "));
                }
            }
            println!(
                "{path}: ok ({} policies, {} routes, version {})",
                snapshot.policy_count(),
                snapshot.routes().len(),
                snapshot.version
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
