//! `meshgate inject`: inject manifests, or serve the admission webhook.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::{init_logging, runtime, shutdown_signal};
use crate::k8s::inject::{inject_stream, DocOutcome, InjectorConfig};
use crate::runtime::config::{LogConfig, LogFormat};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Option<InjectCommand>,
    /// Manifests (YAML or JSON, one or more documents); `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The injector configuration (sidecar image and defaults); default: built in.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum InjectCommand {
    /// Serve the MutatingAdmissionWebhook (HTTPS) and its admin port.
    Serve {
        /// The injector configuration, with its `webhook` section.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(InjectCommand::Serve { config }) => serve(&config),
        None => inject(args.file, args.config),
    }
}

fn serve(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = InjectorConfig::load(config)?;
    init_logging(&LogConfig {
        level: None,
        format: LogFormat::Json,
    });
    let rt = runtime(2)?;
    rt.block_on(async {
        let bound = crate::k8s::webhook::bind(cfg).await?;
        bound.serve(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn inject(file: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let cfg = match config {
        Some(c) => InjectorConfig::load(&c)?,
        None => InjectorConfig::default(),
    };
    let file = file.ok_or_else(|| {
        anyhow::anyhow!("give -f FILE (or -f - for standard input), or use `inject serve`")
    })?;
    let (name, input) = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| anyhow::anyhow!("standard input: {e}"))?;
        ("-".to_string(), s)
    } else {
        let s = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        (file.display().to_string(), s)
    };
    let (out, outcomes) =
        inject_stream(&cfg, &input).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    print!("{out}");
    for (doc, o) in &outcomes {
        match o {
            DocOutcome::Injected(s) => {
                eprintln!(
                    "{doc} injected: {} sidecar serves port {}, app moved to {}",
                    s.mode, s.port, s.upstream
                );
                for w in &s.warnings {
                    eprintln!("{doc} warning: {w}");
                }
            }
            DocOutcome::Skipped(r) => {
                eprintln!("{doc} skipped: {}", r.as_str());
                if let Some(advice) = r.advice() {
                    eprintln!("{doc} warning: {advice}");
                }
            }
            DocOutcome::NotApplicable => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
