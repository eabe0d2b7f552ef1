//! The command line: one file per subcommand. `main.rs` hands off to
//! [`main`]; every subcommand returns its exit code, so destructors run (the
//! audit writer is joined) before the process exits.

mod audit;
mod authorize;
mod certs;
mod demo;
mod describe;
mod init;
mod inject;
mod process;
mod run;
mod sample;
mod slo_rules;
mod test;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    ///
    /// Without --config the configuration is the YAML text of the
    /// MESHGATE_CONFIG environment variable (what the Kubernetes injector
    /// sets); its relative paths are resolved against the working directory.
    Run(run::Args),
    /// Check a configuration file and everything it names, then exit.
    Validate(validate::Args),
    /// Decide one request offline, through the same routes and request
    /// building as the proxy. Exit 0 allow, 2 deny, 1 error.
    Authorize(authorize::Args),
    /// Run policy tests: Cedar `run-tests` JSON (*.test.json) and HTTP cases
    /// (*.test.yaml). Ends with `N passed, M failed`; non-zero on any failure.
    Test(test::Args),
    /// Write Prometheus SLO rules for every product's contract SLA.
    ///
    /// Recording rules and multiwindow, multi-burn-rate alerts per product,
    /// plus the sidecar's own alerts. Reads only the configuration's `policy`
    /// section; warnings go to standard error.
    SloRules(slo_rules::Args),
    /// Print the ODPS descriptors or the api-catalog linkset the node serves
    /// under /.well-known/, for every contract (to publish to a catalog).
    Describe(describe::Args),
    /// Inject the sidecar into Kubernetes manifests (like `linkerd inject`),
    /// or serve the admission webhook that injects pods as they are created.
    ///
    /// Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
    /// CronJobs and Lists of them are injected; other documents pass
    /// through untouched. Output: YAML documents on standard output, one
    /// line per injectable document on standard error.
    #[command(args_conflicts_with_subcommands = true)]
    Inject(inject::Args),
    /// Write the skeleton of a domain or a data product (contract, policies,
    /// tests, kustomization) that `validate` and `test` pass as written.
    Init(init::Args),
    /// Run the demo: dev certificates, a sample data product and the sidecar.
    Demo(demo::Args),
    /// Certificate tooling.
    Certs(certs::Args),
    /// Audit trail tooling.
    Audit(audit::Args),
    /// Serve the demo's sample data product alone (used by the benchmarks).
    SampleUpstream(sample::Args),
}

/// The stack of the thread every subcommand runs on: room for a policy at
/// the bounds of `decision/authz/depth.rs` (a one-worker runtime decides
/// requests on this thread, `authorize` and `test` decide here).
const STACK_BYTES: usize = crate::decision::authz::DECIDING_STACK;

/// Runs the subcommand on a thread of its own, not on the process's main
/// thread: Cedar measures the stack it has left before it goes deeper
/// (`stacker`), and under musl (a static build, as the image was until
/// 2026-12-06) the main thread's stack reads as only the part already used,
/// so every evaluation there failed with "recursion limit reached" and
/// every request was denied (one worker runs the runtime on the calling
/// thread). A thread made with a size reports it under any C library.
pub fn main() -> ExitCode {
    let spawned = std::thread::Builder::new()
        .name("meshgate".into())
        .stack_size(STACK_BYTES)
        .spawn(command);
    match spawned {
        // A panic has been printed by the hook; 101 as Rust's own exit.
        Ok(thread) => thread.join().unwrap_or(ExitCode::from(101)),
        Err(e) => {
            eprintln!("meshgate: cannot start a thread: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line and runs the subcommand; an error is printed as
/// one line, `meshgate: REASON`, with exit code 1.
fn command() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Authorize(a) => authorize::run(a),
        Command::Test(a) => test::run(a),
        Command::SloRules(a) => slo_rules::run(a),
        Command::Describe(a) => describe::run(a),
        Command::Inject(a) => inject::run(a),
        Command::Init(a) => init::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Certs(a) => certs::run(a),
        Command::Audit(a) => audit::run(a),
        Command::SampleUpstream(a) => sample::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshgate: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: …`, each cause said
/// once: many errors already end their own message with their cause
/// (`{file}: cannot read: {source}`), which the chain would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !line.ends_with(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errors_causes_are_said_once() {
        let read = crate::base::yaml::ConfigError::Read {
            file: "mg.yaml".into(),
            source: std::io::Error::other("is a FIFO"),
        };
        assert_eq!(
            one_line(&anyhow::Error::new(read)),
            "mg.yaml: cannot read: is a FIFO"
        );
        let wrapped = anyhow::Error::new(std::io::Error::other("refused")).context("--upstream");
        assert_eq!(one_line(&wrapped), "--upstream: refused");
        // A cause that the message holds elsewhere is still said.
        let wrapped = anyhow::Error::new(std::io::Error::other("refused")).context("refused twice");
        assert_eq!(one_line(&wrapped), "refused twice: refused");
    }
}
