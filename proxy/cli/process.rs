//! What the long-running subcommands share: the tokio runtime, logging and
//! the shutdown signal.

use crate::runtime::config::{LogConfig, LogFormat};

/// A runtime of `workers` threads (1: the current thread only). Its
/// threads have the stack a decision may need (tokio's default, 2 MiB,
/// held a policy of a few hundred operators at most; see
/// `decision/authz/depth.rs`); untouched stack pages are not resident.
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_stack_size(crate::decision::authz::DECIDING_STACK)
            .enable_all()
            .build()
    }
}

/// Logs to standard error; `RUST_LOG` overrides the configured level.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| {
            log.level
                .as_deref()
                .and_then(|l| EnvFilter::try_new(l).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, not in a file or a
    // log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when
/// this is called, not when the future is first polled: a caller that
/// reports ready before it polls (the injector, the sidecar) would
/// otherwise die of a SIGTERM sent just after its ready line, by the
/// signal's default action, with no drain (tests/webhook.rs met it).
/// Must be called inside the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            (Ok(mut term), Err(_)) => {
                term.recv().await;
            }
            (Err(_), _) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Loads a policy snapshot; on failure prints every error on its own line.
pub fn load_policy(
    p: &crate::decision::authz::PolicyConfig,
) -> anyhow::Result<crate::decision::authz::Snapshot> {
    use crate::decision::authz::{PolicyInputs, Snapshot};
    let built = PolicyInputs::read(p).and_then(|i| Snapshot::build(&i));
    built.map_err(|e| {
        for line in e.lines() {
            eprintln!("{line}");
        }
        let n = e.total();
        anyhow::anyhow!("policy: {n} error{}", if n == 1 { "" } else { "s" })
    })
}
