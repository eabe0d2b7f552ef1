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
    ///
    /// Without --config the configuration is the YAML text of the
    /// MESHGATE_CONFIG environment variable (what the Kubernetes injector
    /// sets); its relative paths are resolved against the working directory.
    Run {
        /// The YAML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and everything it names, then exit.
    Validate {
        /// The YAML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Decide one request offline, through the same routes and request
    /// building as the proxy. Exit 0 allow, 2 deny, 1 error.
    Authorize {
        /// The YAML configuration file (its `policy` section is used).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The caller: a SPIFFE id, `dns:NAME` or `cn:NAME`.
        #[arg(long)]
        principal: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Request path as sent (it is normalised like the proxy does).
        #[arg(long)]
        path: String,
        /// A request header, e.g. `x-data-purpose: fraud-investigation`. Repeatable.
        #[arg(long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// Request time, RFC 3339 (default: now); policies see it rounded
        /// down to the second, as the proxy gives it.
        #[arg(long, value_name = "RFC3339")]
        time: Option<String>,
        #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
        source_ip: std::net::IpAddr,
        /// The end user the caller acts for, as JSON: {"issuer", "subject",
        /// "groups", "scopes", "attributes"}.
        #[arg(long, value_name = "JSON", conflicts_with_all = ["claims", "token"])]
        user: Option<String>,
        /// The end user as a token's claims (JSON with `iss`, `sub`, ...),
        /// mapped by the configuration's issuer for `iss`; no signature.
        #[arg(long, value_name = "JSON", conflicts_with = "token")]
        claims: Option<String>,
        /// An end-user JWT, verified with the configuration's `users` issuers.
        #[arg(long, value_name = "JWT")]
        token: Option<String>,
    },
    /// Run policy tests: Cedar `run-tests` JSON (*.test.json) and HTTP cases
    /// (*.test.yaml). Ends with `N passed, M failed`; non-zero on any failure.
    Test {
        /// Take the policy set from this configuration; default: the nearest
        /// directory above each test holding schema.cedarschema.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Test files or directories (searched recursively).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write Prometheus SLO rules for every product's contract SLA.
    ///
    /// Recording rules and multiwindow, multi-burn-rate alerts per product,
    /// plus the sidecar's own alerts. Reads only the configuration's `policy`
    /// section; warnings go to standard error.
    SloRules {
        /// The YAML configuration file (its `policy` section is used).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Write the rules to this file instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Inject the sidecar into Kubernetes manifests (like `linkerd inject`),
    /// or serve the admission webhook that injects pods as they are created.
    ///
    /// Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
    /// CronJobs and Lists of them are injected; other documents pass
    /// through untouched. Output: YAML documents on standard output, one
    /// line per injectable document on standard error.
    #[command(args_conflicts_with_subcommands = true)]
    Inject {
        #[command(subcommand)]
        command: Option<InjectCommand>,
        /// Manifests (YAML or JSON, one or more documents); `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: Option<PathBuf>,
        /// The injector configuration (sidecar image and defaults); default: built in.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
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
    /// Audit trail tooling.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Serve the demo's sample data product alone (used by the benchmarks).
    SampleUpstream {
        /// Address to listen on (plain HTTP).
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum InjectCommand {
    /// Serve the MutatingAdmissionWebhook (HTTPS) and its admin port.
    Serve {
        /// The injector configuration, with its `webhook` section.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, given oldest first
    /// (FILE.N .. FILE.1 FILE). Reports the first edited, deleted, inserted
    /// or reordered line as FILE:LINE; exit 1 if the chain is broken.
    Verify {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
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

/// The environment variable `meshgate run` reads its YAML from without --config.
const CONFIG_ENV: &str = meshgate::inject::CONFIG_ENV;

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
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => {
                    let text = std::env::var(CONFIG_ENV).map_err(|_| {
                        anyhow::anyhow!("give --config FILE or set {CONFIG_ENV} to the YAML text")
                    })?;
                    Config::from_text(&text, CONFIG_ENV, std::path::Path::new(""))?
                }
            };
            init_logging(&config.log);
            let rt = runtime(config.worker_threads().map_err(anyhow::Error::msg)?)?;
            let writer = rt.block_on(async {
                let mut bound = meshgate::server::bind(config, None).await?;
                let writer = bound.take_audit_writer();
                bound.serve(shutdown_signal()).await?;
                anyhow::Ok(writer)
            })?;
            // Stopping the runtime ends the requests still open after the
            // grace period; their events are written before the process exits.
            drop(rt);
            if let Some(w) = writer {
                if !w.join(std::time::Duration::from_secs(10)) {
                    anyhow::bail!("the audit writer did not finish within 10 s");
                }
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => {
            let v = meshgate::audit::verify(&files)?;
            let range = match (v.first_seq, v.last_seq) {
                (Some(a), Some(b)) => format!(", seq {a}..{b}"),
                _ => String::new(),
            };
            println!(
                "ok: {} events{range}, {} reported dropped, {} chain restart(s)",
                v.events, v.dropped, v.restarts
            );
            Ok(())
        }
        Command::Validate { config } => {
            let path = config.display().to_string();
            let config = Config::load(&config)?;
            meshgate::tls::TlsMaterial::load(&config.tls)?;
            match &config.policy {
                None => println!("{path}: ok (no policy section: authenticated mode)"),
                Some(p) => {
                    let snapshot = load_policy(p)?;
                    if let Some(users) = &config.users {
                        let errors = snapshot.check_user_mapping(users);
                        if !errors.is_empty() {
                            anyhow::bail!("{path}: {}", errors.join("; "));
                        }
                    }
                    println!(
                        "{path}: ok ({} policies, {} routes, version {})",
                        snapshot.policy_count,
                        snapshot.routes().len(),
                        snapshot.version
                    );
                }
            }
            Ok(())
        }
        Command::Test { config, paths } => {
            let config = config.map(|c| Config::load(&c)).transpose()?;
            let source = match config.as_ref().map(|c| c.policy.as_ref()) {
                Some(Some(p)) => meshgate::policytest::PolicySource::Config(p),
                Some(None) => anyhow::bail!("the configuration has no policy section"),
                None => meshgate::policytest::PolicySource::Discover,
            };
            let users = config.as_ref().and_then(|c| c.users.as_ref());
            let report = meshgate::policytest::run(&paths, source, users).map_err(|e| {
                for line in e.lines().skip(1) {
                    eprintln!("{line}");
                }
                anyhow::anyhow!("{}", e.lines().next().unwrap_or_default())
            })?;
            for f in &report.failures {
                println!("FAIL {f}");
            }
            println!("{} passed, {} failed", report.passed, report.failures.len());
            if report.failures.is_empty() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Authorize {
            config,
            principal,
            method,
            path,
            headers,
            time,
            source_ip,
            user,
            claims,
            token,
        } => {
            let config = Config::load(&config)?;
            let user = match (user, claims, token) {
                (Some(json), _, _) => Some(
                    serde_json::from_str::<meshgate::jwt::UserSpec>(&json)
                        .map_err(|e| anyhow::anyhow!("--user: {e}"))?
                        .to_user()
                        .map_err(|e| anyhow::anyhow!("--user: {e}"))?,
                ),
                (None, Some(json), _) => {
                    let claims: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&json)
                            .map_err(|e| anyhow::anyhow!("--claims: {e}"))?;
                    Some(
                        meshgate::jwt::User::from_claims(config.users.as_ref(), &claims)
                            .map_err(|e| anyhow::anyhow!("--{e}"))?,
                    )
                }
                (None, None, Some(jwt)) => {
                    let users = config.users.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("--token: the configuration has no users section")
                    })?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let verified = rt.block_on(async {
                        let v = meshgate::jwt::Verifier::start(users, None)
                            .await
                            .map_err(anyhow::Error::msg)?;
                        v.verify(&jwt)
                            .await
                            .map_err(|e| anyhow::anyhow!("--token refused ({}): {e}", e.reason()))
                    })?;
                    Some((*verified).clone())
                }
                (None, None, None) => None,
            };
            let policy = config
                .policy
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the configuration has no policy section"))?;
            let snapshot = load_policy(policy)?;
            let principal: meshgate::identity::Principal = principal
                .parse()
                .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
            let method = http::Method::from_bytes(method.as_bytes())
                .map_err(|_| anyhow::anyhow!("--method: `{method}` is not an HTTP method"))?;
            let mut map = http::HeaderMap::new();
            for h in &headers {
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected NAME:VALUE"))?;
                let name = http::HeaderName::from_bytes(k.trim().as_bytes())
                    .map_err(|_| anyhow::anyhow!("--header `{h}`: bad header name"))?;
                let value = http::HeaderValue::from_str(v.trim())
                    .map_err(|_| anyhow::anyhow!("--header `{h}`: bad header value"))?;
                map.append(name, value);
            }
            let time = match time {
                None => std::time::SystemTime::now(),
                Some(t) => humantime::parse_rfc3339_weak(&t).map_err(|e| {
                    anyhow::anyhow!("--time `{t}`: {e} (use RFC 3339, e.g. 2026-11-20T10:00:00Z)")
                })?,
            };
            let normal = meshgate::path::normalize(&path)
                .map_err(|e| anyhow::anyhow!("--path: {e} (400)"))?;
            let outcome = snapshot
                .decide_http(
                    &principal,
                    &meshgate::authz::HttpFacts {
                        method: &method,
                        path: &normal,
                        headers: &map,
                        source_ip,
                        tls_version: "TLSv1.3",
                        time,
                        user: user.as_ref(),
                    },
                )
                .map_err(|e| anyhow::anyhow!("{e} ({})", e.status()))?;
            let d = &outcome.decision;
            let list = |v: &[String]| {
                if v.is_empty() {
                    "(none)".to_string()
                } else {
                    v.join(", ")
                }
            };
            println!("decision: {}", if d.allowed { "allow" } else { "deny" });
            println!("product: {}", outcome.product);
            println!("action: {}", outcome.action.as_str());
            println!("resource: {}", outcome.resource);
            println!("policies: {}", list(&d.policies));
            println!("errors: {}", list(&d.errors));
            if let Some(s) = &outcome.shadow {
                println!(
                    "shadow: {} ({})",
                    if s.allowed { "allow" } else { "deny" },
                    list(&s.policies)
                );
            }
            if d.allowed {
                Ok(())
            } else {
                std::process::exit(2)
            }
        }
        Command::SloRules { config, out } => {
            let policy = meshgate::slo::policy_section(&config)?;
            let snapshot = load_policy(&policy)?;
            let generated = meshgate::slo::generate(snapshot.products());
            for w in &generated.warnings {
                eprintln!("meshgate: warning: {w}");
            }
            let yaml = generated.to_yaml()?;
            match out {
                None => print!("{yaml}"),
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    let n: usize = generated.rules.groups.iter().map(|g| g.rules.len()).sum();
                    let watched = generated
                        .slos
                        .iter()
                        .filter(|s| s.availability.is_some() || s.latency.is_some())
                        .count();
                    println!("{}: {n} rules, SLOs for {watched} products", path.display());
                }
            }
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
        Command::Inject {
            command: Some(InjectCommand::Serve { config }),
            ..
        } => {
            let cfg = meshgate::inject::InjectorConfig::load(&config)?;
            init_logging(&LogConfig {
                level: None,
                format: LogFormat::Json,
            });
            let rt = runtime(2)?;
            rt.block_on(async {
                let bound = meshgate::webhook::bind(cfg).await?;
                bound.serve(shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        Command::Inject {
            command: None,
            file,
            config,
        } => {
            let cfg = match config {
                Some(c) => meshgate::inject::InjectorConfig::load(&c)?,
                None => meshgate::inject::InjectorConfig::default(),
            };
            let file = file.ok_or_else(|| {
                anyhow::anyhow!("give -f FILE (or -f - for standard input), or use `inject serve`")
            })?;
            let (name, input) = if file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| anyhow::anyhow!("standard input: {e}"))?;
                ("-".to_string(), s)
            } else {
                let s = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                (file.display().to_string(), s)
            };
            let (out, outcomes) = meshgate::inject::inject_stream(&cfg, &input)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            print!("{out}");
            for (doc, o) in &outcomes {
                match o {
                    meshgate::inject::DocOutcome::Injected(s) => {
                        eprintln!(
                            "{doc} injected: {} sidecar serves port {}, app moved to {}",
                            s.mode, s.port, s.upstream
                        );
                        for w in &s.warnings {
                            eprintln!("{doc} warning: {w}");
                        }
                    }
                    meshgate::inject::DocOutcome::Skipped(r) => {
                        eprintln!("{doc} skipped: {}", r.as_str());
                        if let Some(advice) = r.advice() {
                            eprintln!("{doc} warning: {advice}");
                        }
                    }
                    meshgate::inject::DocOutcome::NotApplicable => {}
                }
            }
            Ok(())
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

/// Loads a policy snapshot; on failure prints every error on its own line.
fn load_policy(p: &meshgate::authz::PolicyConfig) -> anyhow::Result<meshgate::authz::Snapshot> {
    let built =
        meshgate::authz::PolicyInputs::read(p).and_then(|i| meshgate::authz::Snapshot::build(&i));
    built.map_err(|e| {
        for line in &e.0 {
            eprintln!("{line}");
        }
        let n = e.0.len();
        anyhow::anyhow!("policy: {n} error{}", if n == 1 { "" } else { "s" })
    })
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
