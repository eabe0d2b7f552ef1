//! `meshgate certs dev`: development certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::tools::certs::{generate_dev, DevClient};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand)]
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let CertsCommand::Dev { out, clients } = args.command;
    generate_dev(&out, &clients)?;
    println!("wrote dev certificates to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
