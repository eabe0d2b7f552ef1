//! `meshgate demo`: dev certificates, the sample product and the sidecar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::process::{init_logging, runtime, shutdown_signal};
use crate::devkit::demo::{self, DemoOptions};
use crate::runtime::config::{LogConfig, LogFormat};

#[derive(clap::Args)]
pub struct Args {
    /// Where the dev certificates are kept (created when missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    certs: PathBuf,
    /// Data (mTLS) listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Admin listener.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(&LogConfig {
        level: None,
        format: LogFormat::Text,
    });
    let rt = runtime(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    )?;
    // The signal handlers are installed in the runtime, before the demo
    // reports ready.
    let stop = {
        let _in_runtime = rt.enter();
        shutdown_signal()
    };
    rt.block_on(demo::run(
        DemoOptions {
            certs: args.certs,
            listen: args.listen,
            admin: args.admin,
        },
        stop,
    ))?;
    Ok(ExitCode::SUCCESS)
}
