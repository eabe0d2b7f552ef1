//! `meshgate test`: policy tests, Cedar JSON and HTTP cases.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runtime::config::Config;
use crate::tools::junit;
use crate::tools::policytest::{self, PolicySource};

/// How results are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `FAIL file: case: reason` lines, then `N passed, M failed`.
    Text,
    /// JUnit XML on stdout (one `testcase` per case, failures with the
    /// reason); the `N passed, M failed` line goes to stderr.
    Junit,
}

#[derive(clap::Args)]
pub struct Args {
    /// Take the policy set from this configuration; default: the nearest
    /// directory above each test holding schema.cedarschema.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Test files or directories (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let junit = args.format == Format::Junit;
    let config = match args.config.map(|c| Config::load(&c)).transpose() {
        Ok(c) => c,
        Err(e) if junit => return load_failed(&e.to_string()),
        Err(e) => return Err(e.into()),
    };
    let source = match config.as_ref().map(|c| c.policy.as_ref()) {
        Some(Some(p)) => PolicySource::Config(p),
        Some(None) if junit => return load_failed("the configuration has no policy section"),
        Some(None) => anyhow::bail!("the configuration has no policy section"),
        None => PolicySource::Discover,
    };
    let users = config.as_ref().and_then(|c| c.users.as_ref());
    let report = match policytest::run(&args.paths, source, users) {
        Ok(r) => r,
        Err(e) if junit => return load_failed(&e),
        Err(e) => {
            for line in e.lines().skip(1) {
                eprintln!("{line}");
            }
            anyhow::bail!("{}", e.lines().next().unwrap_or_default())
        }
    };
    let summary = format!("{} passed, {} failed", report.passed(), report.failed());
    if junit {
        print!("{}", junit::render(&report));
        eprintln!("{summary}");
    } else {
        for f in report.failures() {
            println!("FAIL {f}");
        }
        println!("{summary}");
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The run could not start: a JUnit document with one errored case saying
/// why (so the CI's report shows it), and on stderr as without `--format`.
fn load_failed(why: &str) -> anyhow::Result<ExitCode> {
    print!("{}", junit::render_error(why));
    for line in why.lines().skip(1) {
        eprintln!("{line}");
    }
    eprintln!("meshgate: {}", why.lines().next().unwrap_or_default());
    Ok(ExitCode::FAILURE)
}
