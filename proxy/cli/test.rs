//! `meshgate test`: policy tests, Cedar JSON and HTTP cases.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runtime::config::Config;
use crate::tools::policytest::{self, PolicySource};

#[derive(clap::Args)]
pub struct Args {
    /// Take the policy set from this configuration; default: the nearest
    /// directory above each test holding schema.cedarschema.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Test files or directories (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.map(|c| Config::load(&c)).transpose()?;
    let source = match config.as_ref().map(|c| c.policy.as_ref()) {
        Some(Some(p)) => PolicySource::Config(p),
        Some(None) => anyhow::bail!("the configuration has no policy section"),
        None => PolicySource::Discover,
    };
    let users = config.as_ref().and_then(|c| c.users.as_ref());
    let report = policytest::run(&args.paths, source, users).map_err(|e| {
        for line in e.lines().skip(1) {
            eprintln!("{line}");
        }
        anyhow::anyhow!("{}", e.lines().next().unwrap_or_default())
    })?;
    for f in &report.failures {
        println!("FAIL {f}");
    }
    println!("{} passed, {} failed", report.passed, report.failures.len());
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
