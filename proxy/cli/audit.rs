//! `meshgate audit verify`: check the hash chain of audit files.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, given oldest first
    /// (FILE.N .. FILE.1 FILE). Reports the first edited, deleted, inserted
    /// or reordered line as FILE:LINE; exit 1 if the chain is broken.
    Verify {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify { files } = args.command;
    let v = crate::observe::audit::verify(&files)?;
    let range = match (v.first_seq, v.last_seq) {
        (Some(a), Some(b)) => format!(", seq {a}..{b}"),
        _ => String::new(),
    };
    println!(
        "ok: {} events{range}, {} reported dropped, {} chain restart(s)",
        v.events, v.dropped, v.restarts
    );
    Ok(ExitCode::SUCCESS)
}
