//! `meshgate inject`: inject manifests, or serve the admission webhook.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::{init_logging, runtime, shutdown_signal};
use crate::k8s::inject::{
    inject_stream, DocOutcome, InjectorConfig, SkipReason, UPSTREAM_ADDR_ENV,
};
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
    /// Fail (exit 2, nothing on standard output) when any workload is skipped
    /// (other than already injected) or warned about, so that
    /// `meshgate inject --strict -f x.yaml | kubectl apply -f -` applies nothing
    /// rather than a product without its sidecar.
    #[arg(long)]
    strict: bool,
}

/// The exit code of `--strict` when a workload was skipped or warned about.
const STRICT_FAILED: u8 = 2;

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
        None => inject(args.file, args.config, args.strict),
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

fn inject(
    file: Option<PathBuf>,
    config: Option<PathBuf>,
    strict: bool,
) -> anyhow::Result<ExitCode> {
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
    let mut flagged = Vec::new();
    for (doc, o) in &outcomes {
        if report(doc, o) {
            flagged.push(doc.as_str());
        }
    }
    if strict && !flagged.is_empty() {
        eprintln!(
            "error: --strict: {} workload(s) skipped or warned about ({}); nothing written",
            flagged.len(),
            flagged.join(", ")
        );
        return Ok(ExitCode::from(STRICT_FAILED));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr what happened to one document; true when it was skipped
/// (other than already injected) or warned about, which `--strict` refuses.
fn report(doc: &str, o: &DocOutcome) -> bool {
    match o {
        DocOutcome::Injected(s) => {
            let also = match &s.upstream_env {
                Some(v) => format!(" (and its port through {v})"),
                None => String::new(),
            };
            eprintln!(
                "{doc} injected: {} sidecar serves port {} with mTLS and forwards to {}; container `{}` is told that address through {UPSTREAM_ADDR_ENV}{also} and must listen there (the injector cannot move it)",
                s.mode, s.port, s.upstream, s.app
            );
            for w in &s.warnings {
                eprintln!("{doc} warning: {w}");
            }
            !s.warnings.is_empty()
        }
        DocOutcome::Skipped(r) => {
            eprintln!("{doc} skipped: {}", r.as_str());
            if let Some(advice) = r.advice() {
                eprintln!("{doc} warning: {advice}");
            }
            *r != SkipReason::AlreadyInjected
        }
        DocOutcome::NotApplicable => false,
    }
}
