//! `meshgate run`: the sidecar.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::{init_logging, runtime, shutdown_signal};
use crate::k8s::inject::CONFIG_ENV;
use crate::runtime::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match args.config {
        Some(path) => Config::load(&path)?,
        None => {
            let text = std::env::var(CONFIG_ENV).map_err(|_| {
                anyhow::anyhow!("give --config FILE or set {CONFIG_ENV} to the YAML text")
            })?;
            Config::from_text(&text, CONFIG_ENV, std::path::Path::new(""))?
        }
    };
    init_logging(&config.log);
    let rt = runtime(config.worker_threads().map_err(anyhow::Error::msg)?)?;
    let grace = config.timeouts.shutdown_grace;
    let (writer, stopped) = rt.block_on(async {
        let mut bound = crate::runtime::sidecar::bind(config, None).await?;
        let writer = bound.take_audit_writer();
        let stopped = bound.serve(shutdown_signal()).await?;
        anyhow::Ok((writer, stopped))
    })?;
    // Stopping the runtime ends the requests still open after the grace
    // period; their events are written before the process exits.
    drop(rt);
    if let Some(w) = writer {
        // A sink that took nothing within the grace will not take these
        // either: `shutdown_grace` bounds the wait for it, once.
        if !stopped.audit_flushed {
            anyhow::bail!(
                "the audit sink did not take the queued events within timeouts.shutdown_grace ({}); \
                 they were not written",
                humantime::format_duration(grace)
            );
        }
        if !w.join(std::time::Duration::from_secs(10)) {
            anyhow::bail!("the audit writer did not finish within 10 s");
        }
    }
    Ok(ExitCode::SUCCESS)
}
