//! `meshgate sample-upstream`: the demo's sample data product alone.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::process::{runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (plain HTTP).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = runtime(1)?;
    rt.block_on(async {
        let stop = shutdown_signal();
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("sample data product on http://{}", listener.local_addr()?);
        tokio::select! {
            _ = crate::devkit::sample::serve(listener) => {},
            _ = stop => {},
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
