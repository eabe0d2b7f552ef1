#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate::certs::DevClient;
use meshgate::config::{Config, LogConfig, LogFormat};

/// meshgate: a policy-enforcing mTLS sidecar for zero-trust access to data products.
#[derive(Parser)]
#[command(name = "meshgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar with a configuration file.
    Run {
        /// The YAML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a configuration file and everything it names, then exit.
    Validate {
        /// The YAML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the demo: dev certificates, a sample data product and the sidecar.
    Demo {
        /// Where the dev certificates are kept (created when missing).
        #[arg(long, value_name = "DIR", default_value = "certs")]
        certs: PathBuf,
        /// Data (mTLS) listener.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Certificate tooling.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Serve the demo's sample data product alone (used by the benchmarks).
    SampleUpstream {
        /// Address to listen on (plain HTTP).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a development CA, a server certificate (localhost, 127.0.0.1) and client certificates.
    Dev {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A client certificate to issue, e.g. reporting=spiffe://mesh.local/ns/finance/sa/reporting.
        #[arg(long = "client", value_name = "NAME=SPIFFE_ID")]
        clients: Vec<DevClient>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            init_logging(&config.log);
            let rt = runtime(config.worker_threads().map_err(anyhow::Error::msg)?)?;
            rt.block_on(async {
                let bound = meshgate::server::bind(config, None).await?;
                bound.serve(shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Validate { config } => {
            let path = config.display().to_string();
            let config = Config::load(&config)?;
            meshgate::tls::TlsMaterial::load(&config.tls)?;
            println!("{path}: ok");
            Ok(())
        }
        Command::Demo {
            certs,
            listen,
            admin,
        } => {
            init_logging(&LogConfig {
                level: None,
                format: LogFormat::Text,
            });
            let rt = runtime(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            )?;
            rt.block_on(meshgate::demo::run(
                meshgate::demo::DemoOptions {
                    certs,
                    listen,
                    admin,
                },
                shutdown_signal(),
            ))
        }
        Command::Certs {
            command: CertsCommand::Dev { out, clients },
        } => {
            meshgate::certs::generate_dev(&out, &clients)?;
            println!("wrote dev certificates to {}", out.display());
            Ok(())
        }
        Command::SampleUpstream { listen } => {
            let rt = runtime(1)?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                eprintln!("sample data product on http://{}", listener.local_addr()?);
                tokio::select! {
                    _ = meshgate::sample::serve(listener) => {},
                    _ = shutdown_signal() => {},
                }
                Ok(())
            })
        }
    }
}

fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| {
            log.level
                .as_deref()
                .and_then(|l| EnvFilter::try_new(l).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
