//! `meshgate slo-rules`: Prometheus rules from the contracts' SLAs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::process::load_policy;
use crate::base::yaml::read_yaml;
use crate::runtime::config::{Config, ConfigError};
use crate::tools::slo;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration file (its `policy` section is used).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Write the rules to this file instead of standard output.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: Option<PathBuf>,
    /// How long before a deprecated version's sunset (its contract's
    /// `endOfLife`) a consumer still calling it raises an alert, e.g. 30d,
    /// 2w, 72h.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = sunset_window)]
    sunset_window: Duration,
}

/// A positive duration in humantime's form (`30d`, `2w 3d`, `72h`).
fn sunset_window(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(format!("{e} (write e.g. 30d, 2w or 72h)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (buckets, conformance) = duration_buckets(&args.config)?;
    let policy = slo::policy_section(&args.config)?;
    let snapshot = load_policy(&policy)?;
    let generated = slo::generate(
        snapshot.products(),
        &buckets,
        args.sunset_window,
        conformance,
    )?;
    for w in &generated.warnings {
        eprintln!("meshgate: warning: {w}");
    }
    // The request-duration histogram has the configured buckets: a latency
    // between two bounds is watched at the next one up, which the operator
    // should know before trusting the alert, and can change.
    for s in &generated.slos {
        if let Some(t) = s.latency.as_ref().filter(|t| t.rounded()) {
            eprintln!(
                "meshgate: note: {}: the contract's latency {} is watched as {}s, the histogram bucket le=\"{}\" at or above it (add {} to metrics.duration_buckets to watch it exactly)",
                s.product,
                humantime::format_duration(t.contract),
                t.le,
                t.le,
                t.contract.as_secs_f64()
            );
        }
    }
    let yaml = generated.to_yaml()?;
    match args.out {
        None => print!("{yaml}"),
        Some(path) => {
            std::fs::write(&path, yaml).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let n: usize = generated.rules.groups.iter().map(|g| g.rules.len()).sum();
            let watched = generated
                .slos
                .iter()
                .filter(|s| s.availability.is_some() || s.latency.is_some())
                .count();
            println!("{}: {n} rules, SLOs for {watched} products", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `metrics.duration_buckets` of the configuration (the built-in buckets
/// when absent), checked as `meshgate run` checks it: the rules must read
/// the buckets the sidecars expose; and its mesh-wide `conformance`.
fn duration_buckets(
    path: &Path,
) -> anyhow::Result<(Vec<f64>, crate::decision::fields::ConformanceSettings)> {
    let config: Config = read_yaml(path)?;
    config
        .metrics
        .check_buckets()
        .map_err(|message| ConfigError::Invalid {
            file: path.display().to_string(),
            field: "metrics.duration_buckets",
            message,
        })?;
    Ok((
        config.metrics.duration_buckets().to_vec(),
        config.conformance,
    ))
}
