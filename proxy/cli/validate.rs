//! `meshgate validate`: check a configuration and everything it names, as
//! `run` would, and report every mistake at its position.
//!
//! Exit codes: 0 clean (warnings are printed but pass), 1 errors, 2 with
//! `--strict` when there are warnings and no errors.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::decision::authz::{PolicyInputs, Snapshot};
use crate::decision::finding::Finding;
use crate::runtime::config::Config;

/// Exit code of `validate --strict` when there are warnings and no errors.
pub const WARNINGS_EXIT: u8 = 2;

#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Fail on warnings too (exit code 2 when there are warnings and no
    /// errors): ignored keys and properties, a product with no routes or no
    /// SLA, undeclared domains, teams and groups.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.display().to_string();
    let config = Config::load(&args.config)?;
    let mut errors = Vec::new();
    // What `run` opens before it serves: the TLS material and the trail.
    let mut warnings: Vec<Finding> = Vec::new();
    match crate::transport::tls::TlsMaterial::load(&config.tls) {
        Err(e) => errors.push(format!("{path}: {e:#}")),
        Ok(tls) => warnings.extend(tls.out_of_date().into_iter().map(|message| Finding {
            file: path.clone(),
            at: None,
            field: String::new(),
            message,
            stands_for: 1,
        })),
    }
    if let Err(e) = config.audit.check_sink() {
        errors.push(format!("{path}: {e}"));
    }
    // The JWKS files, as `run` reads them (URLs are not fetched here).
    for (i, issuer) in config
        .users
        .iter()
        .flat_map(|u| u.issuers.iter())
        .enumerate()
    {
        let Some(file) = &issuer.jwks_file else {
            continue;
        };
        match crate::decision::jwt::check_jwks_file(file) {
            Ok(ignored) => warnings.extend(ignored.into_iter().map(|message| Finding {
                file: file.display().to_string(),
                at: None,
                field: String::new(),
                message,
                stands_for: 1,
            })),
            Err(e) => errors.push(format!("{path}: users.issuers[{i}].jwks_file: {e}")),
        }
    }
    let mut not_shown = 0;
    let summary = match &config.policy {
        None => "no policy section: authenticated mode".to_string(),
        Some(p) => match PolicyInputs::read(p).and_then(|i| Snapshot::build(&i)) {
            Err(e) => {
                // Past the cap, one line stands for the errors not shown:
                // the count is of errors, not of lines.
                let lines = e.lines();
                not_shown = e.total() - lines.len();
                errors.extend(lines);
                String::new()
            }
            Ok(snapshot) => {
                warnings.extend(snapshot.warnings().iter().cloned());
                // What `run` logs when it starts, of the same snapshot.
                if let Some(q) = &config.quotas {
                    let is_contract = |id: &str| snapshot.products().any(|p| p.id == id);
                    warnings.extend(q.warnings(is_contract).into_iter().map(|(field, message)| {
                        Finding {
                            file: path.clone(),
                            at: None,
                            field,
                            message,
                            stands_for: 1,
                        }
                    }));
                }
                if let Some(users) = &config.users {
                    let mapping = snapshot.check_user_mapping(users);
                    errors.extend(mapping.into_iter().map(|e| format!("{path}: {e}")));
                }
                format!(
                    "{} policies, {} routes, version {}",
                    snapshot.policy_count(),
                    snapshot.routes().len(),
                    snapshot.version
                )
            }
        },
    };
    for w in &warnings {
        eprintln!("{}", w.warning());
    }
    for e in &errors {
        eprintln!("{e}");
    }
    let counted = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if !errors.is_empty() {
        eprintln!(
            "meshgate: {path}: {}, {}",
            counted(errors.len() + not_shown, "error"),
            counted(finding_count(&warnings), "warning")
        );
        return Ok(ExitCode::FAILURE);
    }
    if warnings.is_empty() {
        println!("{path}: ok ({summary})");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{path}: ok ({summary}; {})",
        counted(finding_count(&warnings), "warning")
    );
    Ok(if args.strict {
        ExitCode::from(WARNINGS_EXIT)
    } else {
        ExitCode::SUCCESS
    })
}

/// How many findings `findings` stand for: the one that closes a capped
/// list stands for those not shown.
fn finding_count(findings: &[Finding]) -> usize {
    findings.iter().map(|f| f.stands_for).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_for_the_findings_not_shown_counts_them() {
        let findings = (1..=150)
            .map(|line| Finding {
                file: "o.yaml".into(),
                at: Some((line, 1)),
                field: "name".into(),
                message: "and 3 more warnings not shown".into(),
                stands_for: 1,
            })
            .collect();
        let reported = crate::decision::finding::first_reported(findings, "o.yaml", "warning", 100);
        assert_eq!(reported.len(), 101);
        assert_eq!(reported[100].message, "and 50 more warnings not shown");
        // A message that reads like the closing line is one finding.
        assert_eq!(finding_count(&reported), 150);
    }
}
