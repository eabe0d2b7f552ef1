//! `meshgate audit verify`: check the hash chain of audit files, and that
//! they reach the head the sidecar published (`--expect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, given oldest first
    /// (FILE.N .. FILE.1 FILE). Reports the first edited, deleted, inserted
    /// or reordered line as FILE:LINE; exit 1 if the chain is broken, or if
    /// the trail ends before (or disagrees with) an expected head.
    Verify {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// A head the trail must reach, held outside it: SEQ or SEQ:HASH,
        /// the JSON of the admin port's `GET /audit/head`, or an `audit
        /// checkpoint` log line; or a file holding one of these (of a log,
        /// every checkpoint line counts). Repeatable.
        #[arg(long, value_name = "SEQ[:HASH]|JSON|LINE|FILE")]
        expect: Vec<String>,
        /// Accept chains that start again (seq 0 from the all-zero prev):
        /// the stdout of several processes, one after the other. Never
        /// needed for a file sink, which goes on from its last line at every
        /// start; without this flag a restart is a break.
        #[arg(long)]
        allow_restarts: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify {
        files,
        expect,
        allow_restarts,
    } = args.command;
    let mut anchors = Vec::new();
    for e in &expect {
        anchors.extend(anchor(e)?);
    }
    // The highest first: a trail that ends early is told against it.
    anchors.sort_by_key(|a| std::cmp::Reverse(a.seq));
    let options = crate::observe::audit::Options { allow_restarts };
    let v = crate::observe::audit::verify_against(&files, &anchors, options)?;
    let range = match (v.first_seq, v.last_seq) {
        (Some(a), Some(b)) => format!(", seq {a}..{b}"),
        _ => String::new(),
    };
    let reached = match anchors.iter().map(|a| a.seq).max() {
        Some(seq) => format!("; reaches the expected head (seq {seq})"),
        None => "; no expected head given: a cut tail cannot be seen (--expect)".into(),
    };
    let torn = match v.torn.as_slice() {
        [] => String::new(),
        lines => format!(
            ", {} line(s) cut short by a crash and gone on from ({})",
            lines.len(),
            lines.join(", ")
        ),
    };
    println!(
        "ok: {} events{range}, {} reported dropped, {} chain restart(s){torn}{reached}{}",
        v.events,
        v.dropped,
        v.restarts,
        uncovered(&v)
    );
    Ok(ExitCode::SUCCESS)
}

/// `; no expected head covers …`: the lines of each chain after its last
/// head found (a whole chain where none is), when heads were given.
fn uncovered(v: &crate::observe::audit::Verified) -> String {
    if v.uncovered.is_empty() {
        return String::new();
    }
    let spans: Vec<String> = v
        .uncovered
        .iter()
        .map(|u| {
            let lines = if u.from == u.to {
                u.from.clone()
            } else {
                // `FILE:A..B` within one file, else both in full.
                match (u.from.rsplit_once(':'), u.to.rsplit_once(':')) {
                    (Some((f, _)), Some((t, line))) if f == t => format!("{}..{line}", u.from),
                    _ => format!("{}..{}", u.from, u.to),
                }
            };
            let seqs = if u.first_seq == u.last_seq {
                format!("seq {}", u.first_seq)
            } else {
                format!("seq {}..{}", u.first_seq, u.last_seq)
            };
            let chain = if v.restarts > 0 {
                format!(", chain {} of {}", u.chain, v.restarts + 1)
            } else {
                String::new()
            };
            format!("{lines} ({seqs}{chain})")
        })
        .collect();
    let more = match v.uncovered_left_off {
        0 => String::new(),
        n => format!(" and {n} more chain(s)"),
    };
    format!(
        "; no expected head covers {}{more}: a rewrite of these lines cannot be seen",
        spans.join(", ")
    )
}

/// The heads of an `--expect` value, or of the file it names.
fn anchor(value: &str) -> anyhow::Result<Vec<crate::observe::audit::Anchor>> {
    let path = Path::new(value);
    let looks_like_file = !value.trim_start().starts_with('{') && path.is_file();
    let (text, shown) = if looks_like_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--expect {}: cannot read", path.display()))?;
        (text, path.display().to_string())
    } else {
        (value.to_string(), value.to_string())
    };
    crate::observe::audit::parse_anchors(&text)
        .map_err(|e| anyhow::anyhow!("--expect {shown}: {e}"))
}
