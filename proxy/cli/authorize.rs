//! `meshgate authorize`: decide one request offline, through the same
//! routes and request building as the proxy.

use std::path::PathBuf;
use std::process::ExitCode;

use super::process::load_policy;
use crate::decision::authz::HttpFacts;
use crate::decision::jwt::{User, UserSpec, Verifier};
use crate::model::identity::Principal;
use crate::runtime::config::Config;

#[derive(clap::Args)]
pub struct Args {
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
}

/// Exit 0 allow, 2 deny, 1 error.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let user = end_user(&config, args.user, args.claims, args.token)?;
    let policy = config
        .policy
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the configuration has no policy section"))?;
    let snapshot = load_policy(policy)?;
    let principal: Principal = args
        .principal
        .parse()
        .map_err(|e| anyhow::anyhow!("--principal: {e}"))?;
    let method = http::Method::from_bytes(args.method.as_bytes())
        .map_err(|_| anyhow::anyhow!("--method: `{}` is not an HTTP method", args.method))?;
    let headers = header_map(&args.headers)?;
    let time = match args.time {
        None => std::time::SystemTime::now(),
        Some(t) => humantime::parse_rfc3339_weak(&t).map_err(|e| {
            anyhow::anyhow!("--time `{t}`: {e} (use RFC 3339, e.g. 2026-11-20T10:00:00Z)")
        })?,
    };
    let normal = crate::model::path::normalize(&args.path)
        .map_err(|e| anyhow::anyhow!("--path: {e} (400)"))?;
    let outcome = snapshot
        .decide_http(
            &principal,
            &HttpFacts {
                method: &method,
                path: &normal,
                headers: &headers,
                source_ip: args.source_ip,
                tls_version: "TLSv1.3",
                time,
                user: user.as_ref(),
            },
        )
        .map_err(|e| {
            let e = crate::pipeline::error::ProxyError::from(e);
            anyhow::anyhow!("{e} ({})", e.status())
        })?;
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
    if let Some(plan) = &outcome.fields {
        print!("{}", plan.describe());
    }
    Ok(if d.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The end user from `--user`, `--claims` or `--token`.
fn end_user(
    config: &Config,
    user: Option<String>,
    claims: Option<String>,
    token: Option<String>,
) -> anyhow::Result<Option<User>> {
    Ok(match (user, claims, token) {
        (Some(json), _, _) => Some(
            serde_json::from_str::<UserSpec>(&json)
                .map_err(|e| anyhow::anyhow!("--user: {e}"))?
                .to_user()
                .map_err(|e| anyhow::anyhow!("--user: {e}"))?,
        ),
        (None, Some(json), _) => {
            let claims: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&json).map_err(|e| anyhow::anyhow!("--claims: {e}"))?;
            Some(
                User::from_claims(config.users.as_ref(), &claims)
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
                let v = Verifier::start(users, None)
                    .await
                    .map_err(anyhow::Error::msg)?;
                v.verify(&jwt)
                    .await
                    .map_err(|e| anyhow::anyhow!("--token refused ({}): {e}", e.reason()))
            })?;
            Some((*verified).clone())
        }
        (None, None, None) => None,
    })
}

fn header_map(headers: &[String]) -> anyhow::Result<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected NAME:VALUE"))?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| anyhow::anyhow!("--header `{h}`: bad header name"))?;
        let value = http::HeaderValue::from_str(v.trim())
            .map_err(|_| anyhow::anyhow!("--header `{h}`: bad header value"))?;
        map.append(name, value);
    }
    Ok(map)
}
