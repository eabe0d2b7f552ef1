//! `meshgate test`: policy tests in two formats.
//!
//! - `*.test.json` / `*.tests.json`: Cedar's own `run-tests` format (a list of
//!   `{name?, request, entities, decision, reason, num_errors?}`), so the same
//!   files work with the `cedar` CLI. Evaluated against the whole policy set.
//! - `*.test.yaml` / `*.tests.yaml`: HTTP cases (client identity, method, path,
//!   headers -> expected decision, status, policy ids), decided through the same
//!   route table and request building as the proxy.
//!
//! An HTTP case acts for an end user with one of `user:` (the user as a
//! verified token maps to it), `claims:` (a token's claims, mapped by the
//! configured issuer) or `token:` (a JWT, verified with `--config`'s issuers,
//! at the real time: a committed token fails once it expires, so committed
//! cases use `claims:`).
//!
//! The policy set comes from `--config`, or else from the nearest directory
//! above the test file that holds `schema.cedarschema`, laid out like this
//! repository's `policies/` (`entities.json`, `mesh/`, `domains/*/`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cedar_policy::{Context, Entities, EntityUid, Request};
use serde::Deserialize;

use crate::decision::authz::{HttpFacts, PolicyConfig, PolicyInputs, Snapshot};
use crate::decision::jwt::{User, UsersConfig, Verifier};
use crate::model::identity::Principal;
use crate::pipeline::error::ProxyError;

/// The outcome of one test case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The test file, as named on the command line or found under it.
    pub file: String,
    /// The case's `name` (Cedar tests without one: `test #N`).
    pub name: String,
    /// Why it failed; `None`: it passed.
    pub failure: Option<String>,
    /// How long deciding it took.
    pub time: Duration,
}

/// Every case run, in file order.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// The failed cases, `file: name: reason` each.
    pub fn failures(&self) -> impl Iterator<Item = String> + '_ {
        self.cases.iter().filter_map(|c| {
            c.failure
                .as_ref()
                .map(|f| format!("{}: {}: {f}", c.file, c.name))
        })
    }

    fn record(&mut self, file: &str, name: String, started: Instant, problems: Vec<String>) {
        self.cases.push(CaseResult {
            file: file.to_string(),
            name,
            failure: (!problems.is_empty()).then(|| problems.join("; ")),
            time: started.elapsed(),
        });
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CedarTest {
    #[serde(default)]
    name: Option<String>,
    request: CedarRequest,
    #[serde(default)]
    entities: serde_json::Value,
    decision: String,
    #[serde(default)]
    reason: Vec<String>,
    #[serde(default)]
    num_errors: Option<usize>,
    #[serde(default)]
    has_error: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CedarRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    cases: Vec<HttpCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpCase {
    name: String,
    principal: String,
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    /// RFC 3339; default: now. Policies see it rounded down to the second.
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    source_ip: Option<std::net::IpAddr>,
    /// The end user the caller acts for (as a verified token would give it).
    #[serde(default)]
    user: Option<crate::decision::jwt::UserSpec>,
    /// The end user as a token's claims, mapped like the proxy maps them.
    #[serde(default)]
    claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The end user as a JWT, verified with the configuration's issuers.
    #[serde(default)]
    token: Option<String>,
    expect: Expect,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    policies: Option<Vec<String>>,
    /// Fields (paths in the dataset, `shipping/city`) the caller's field
    /// plan must hide.
    #[serde(default)]
    hidden: Option<Vec<String>>,
    /// Fields the plan must leave visible.
    #[serde(default)]
    visible: Option<Vec<String>>,
}

/// Where each test file's policy set comes from.
pub enum PolicySource<'a> {
    Config(&'a PolicyConfig),
    Discover,
}

/// Turns a case's `claims:` and `token:` into users: with the `users`
/// section of `--config` when there is one; a verifier (fetching keys) is
/// started only for the first `token:`.
struct Users<'a> {
    config: Option<&'a UsersConfig>,
    verifier: Option<(tokio::runtime::Runtime, Arc<Verifier>)>,
}

impl Users<'_> {
    fn verify(&mut self, token: &str) -> Result<User, String> {
        let config = self
            .config
            .ok_or("token: needs --config with a users section (the issuers that verify it)")?;
        if self.verifier.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let v = rt.block_on(Verifier::start(config, None))?;
            self.verifier = Some((rt, v));
        }
        let (rt, v) = self.verifier.as_ref().ok_or("token: no verifier")?;
        rt.block_on(v.verify(token))
            .map(|u| (*u).clone())
            .map_err(|e| format!("token refused ({}): {e}", e.reason()))
    }
}

/// Runs every test file under `paths`; `users` maps `claims:` and verifies
/// `token:` in HTTP cases.
pub fn run(
    paths: &[PathBuf],
    source: PolicySource<'_>,
    users: Option<&UsersConfig>,
) -> Result<Report, String> {
    let mut users = Users {
        config: users,
        verifier: None,
    };
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err(
            "no test files (*.test.json, *.tests.json, *.test.yaml, *.tests.yaml) found".into(),
        );
    }
    let mut snapshots: HashMap<PathBuf, Snapshot> = HashMap::new();
    let mut report = Report::default();
    for file in files {
        let key = match &source {
            PolicySource::Config(_) => PathBuf::new(),
            PolicySource::Discover => discover_root(&file)?,
        };
        if !snapshots.contains_key(&key) {
            let inputs = match &source {
                PolicySource::Config(cfg) => PolicyInputs::read(cfg),
                PolicySource::Discover => PolicyInputs::read(&tree_config(&key)),
            };
            let snapshot = inputs
                .and_then(|i| Snapshot::build(&i))
                .map_err(|e| e.lines().join("\n"))?;
            snapshots.insert(key.clone(), snapshot);
        }
        let snapshot = &snapshots[&key];
        let name = file.display().to_string();
        let text = crate::base::paths::read_file(&file).map_err(|e| format!("{name}: {e}"))?;
        if name.ends_with(".json") {
            run_cedar(snapshot, &name, &text, &mut report)?;
        } else {
            run_http(snapshot, &mut users, &name, &text, &mut report)?;
        }
    }
    Ok(report)
}

fn is_test_file(p: &Path) -> bool {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    [
        ".test.json",
        ".tests.json",
        ".test.yaml",
        ".tests.yaml",
        ".test.yml",
        ".tests.yml",
    ]
    .iter()
    .any(|s| n.ends_with(s))
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.is_file() {
        out.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, out)?;
        } else if is_test_file(&e) {
            out.push(e);
        }
    }
    Ok(())
}

fn discover_root(file: &Path) -> Result<PathBuf, String> {
    let abs = std::fs::canonicalize(file).map_err(|e| format!("{}: {e}", file.display()))?;
    abs.ancestors()
        .skip(1)
        .find(|d| d.join("schema.cedarschema").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            format!(
                "{}: no schema.cedarschema in any directory above it; pass --config",
                file.display()
            )
        })
}

/// The policy layout of a `policies/` tree: `mesh/` is the baseline, each
/// `domains/<name>/` belongs to domain `<name>`.
pub fn tree_config(root: &Path) -> PolicyConfig {
    let mut domains: Vec<PathBuf> = std::fs::read_dir(root.join("domains"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                // Hidden directories (`.cache`, a volume's `..data`) are
                // no domains.
                .filter(|p| {
                    p.is_dir()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    domains.sort();
    let mut sources = Vec::new();
    if root.join("mesh").is_dir() {
        sources.push(root.join("mesh").into());
    }
    // `domains/<name>/` speaks with the authority of domain `<name>`, and
    // holds only its contracts.
    let domains: Vec<crate::decision::authz::PolicySource> = domains
        .iter()
        .map(|d| crate::decision::authz::PolicySource {
            path: d.clone(),
            domain: d.file_name().map(|n| n.to_string_lossy().into_owned()),
        })
        .collect();
    sources.extend(domains.iter().cloned());
    let entities = root.join("entities.json");
    PolicyConfig {
        schema: root.join("schema.cedarschema"),
        entities: entities.is_file().then_some(entities),
        sources,
        contracts: domains,
        shadow: Vec::new(),
    }
}

fn run_cedar(s: &Snapshot, file: &str, text: &str, report: &mut Report) -> Result<(), String> {
    let tests: Vec<CedarTest> = serde_json::from_str(text)
        .map_err(|e| format!("{file}:{}:{}: {e}", e.line(), e.column()))?;
    for (i, t) in tests.into_iter().enumerate() {
        let started = Instant::now();
        let name = t.name.clone().unwrap_or_else(|| format!("test #{}", i + 1));
        let problems = match cedar_case(s, &t) {
            Err(e) => vec![e],
            Ok((allowed, reason, errors)) => cedar_problems(&t, allowed, reason, &errors),
        };
        report.record(file, name, started, problems);
    }
    Ok(())
}

/// How a Cedar test's outcome differs from what it expects.
fn cedar_problems(
    t: &CedarTest,
    allowed: bool,
    mut reason: Vec<String>,
    errors: &[String],
) -> Vec<String> {
    let mut want_reason = t.reason.clone();
    want_reason.sort();
    reason.sort();
    let want_allow = t.decision.eq_ignore_ascii_case("allow");
    let mut problems = Vec::new();
    if allowed != want_allow {
        problems.push(format!(
            "expected decision {}, got {}",
            t.decision.to_lowercase(),
            if allowed { "allow" } else { "deny" }
        ));
    }
    if reason != want_reason {
        problems.push(format!("expected reason {want_reason:?}, got {reason:?}"));
    }
    if let Some(n) = t.num_errors {
        if n != errors.len() {
            problems.push(format!(
                "expected {n} errors, got {}: {errors:?}",
                errors.len()
            ));
        }
    }
    if let Some(h) = t.has_error {
        if h == errors.is_empty() {
            problems.push(format!("expected has_error {h}, got errors {errors:?}"));
        }
    }
    problems
}

fn cedar_case(s: &Snapshot, t: &CedarTest) -> Result<(bool, Vec<String>, Vec<String>), String> {
    let uid =
        |what: &str, v: &str| EntityUid::from_str(v).map_err(|e| format!("request.{what}: {e}"));
    let principal = uid("principal", &t.request.principal)?;
    let action = uid("action", &t.request.action)?;
    let resource = uid("resource", &t.request.resource)?;
    let context_json = match &t.request.context {
        serde_json::Value::Null => serde_json::json!({}),
        v => v.clone(),
    };
    let context = Context::from_json_value(context_json, Some((s.schema(), &action)))
        .map_err(|e| format!("request.context: {e}"))?;
    // Without `entities`, the caller and the resource as the snapshot makes
    // them (contracts, entities.json); with them, the case's own.
    let entities = match &t.entities {
        serde_json::Value::Null => s.case_entities(&principal, &resource)?,
        v => Entities::from_json_value(v.clone(), Some(s.schema()))
            .map_err(|e| format!("entities: {e}"))?,
    };
    let request = Request::new(principal, action, resource, context, Some(s.schema()))
        .map_err(|e| format!("request: {e}"))?;
    let d = s.authorize_request(&request, &entities);
    Ok((d.allowed, d.policies, d.errors))
}

fn run_http(
    s: &Snapshot,
    users: &mut Users<'_>,
    file: &str,
    text: &str,
    report: &mut Report,
) -> Result<(), String> {
    let parsed: HttpFile = crate::base::yaml::parse_yaml(text, file).map_err(|e| e.to_string())?;
    for case in parsed.cases {
        let started = Instant::now();
        let problems = http_case(s, users, &case).unwrap_or_else(|e| vec![e]);
        report.record(file, case.name, started, problems);
    }
    Ok(())
}

fn http_case(s: &Snapshot, users: &mut Users<'_>, c: &HttpCase) -> Result<Vec<String>, String> {
    let principal = Principal::from_str(&c.principal).map_err(|e| format!("principal: {e}"))?;
    let method = http::Method::from_bytes(c.method.as_bytes())
        .map_err(|_| format!("method: `{}`", c.method))?;
    let mut headers = http::HeaderMap::new();
    for (k, v) in &c.headers {
        let name =
            http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: `{k}`"))?;
        let value = http::HeaderValue::from_str(v).map_err(|_| format!("headers: {k}: `{v}`"))?;
        headers.insert(name, value);
    }
    let time = match &c.time {
        None => SystemTime::now(),
        Some(t) => humantime::parse_rfc3339_weak(t).map_err(|e| format!("time: `{t}`: {e}"))?,
    };
    let user = match (&c.user, &c.claims, &c.token) {
        (None, None, None) => None,
        (Some(u), None, None) => Some(u.to_user().map_err(|e| format!("user: {e}"))?),
        (None, Some(claims), None) => Some(User::from_claims(users.config, claims)?),
        (None, None, Some(token)) => Some(users.verify(token)?),
        _ => return Err("give one of user, claims or token".into()),
    };
    let (status, decision) = match crate::model::path::normalize(&c.path) {
        Err(e) => (ProxyError::from(e).status().as_u16(), None),
        Ok(path) => {
            let facts = HttpFacts {
                method: &method,
                path: &path,
                headers: &headers,
                source_ip: c
                    .source_ip
                    .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
                tls_version: "TLSv1.3",
                time,
                user: user.as_ref(),
            };
            match s.decide_http(&principal, &facts) {
                Err(e) => (ProxyError::from(e).status().as_u16(), None),
                Ok(o) if o.decision.allowed => (200, Some((o.decision, o.fields))),
                Ok(o) => (403, Some((o.decision, None))),
            }
        }
    };
    let (decision, plan) = match decision {
        Some((d, p)) => (Some(d), p),
        None => (None, None),
    };
    let mut problems = Vec::new();
    let got_decision = decision
        .as_ref()
        .map(|d| if d.allowed { "allow" } else { "deny" });
    if let Some(want) = &c.expect.decision {
        if Some(want.to_lowercase().as_str()) != got_decision {
            problems.push(format!(
                "expected decision {want}, got {}",
                got_decision.unwrap_or("none (not routed)")
            ));
        }
    }
    if let Some(want) = c.expect.status {
        if want != status {
            problems.push(format!("expected status {want}, got {status}"));
        }
    }
    if let Some(want) = &c.expect.policies {
        let mut want = want.clone();
        want.sort();
        let got = decision
            .as_ref()
            .map(|d| d.policies.clone())
            .unwrap_or_default();
        if want != got {
            problems.push(format!("expected policies {want:?}, got {got:?}"));
        }
    }
    problems.extend(field_problems(&c.expect, plan.as_deref()));
    let e = &c.expect;
    if e.decision.is_none()
        && e.status.is_none()
        && e.policies.is_none()
        && e.hidden.is_none()
        && e.visible.is_none()
    {
        return Err(
            "expect: names nothing to check (decision, status, policies, hidden or visible)".into(),
        );
    }
    Ok(problems)
}

/// How a case's field plan differs from its `hidden:` and `visible:`.
fn field_problems(
    expect: &Expect,
    plan: Option<&crate::decision::fields::FieldPlan>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (list, want_hidden) in [(&expect.hidden, true), (&expect.visible, false)] {
        let Some(list) = list else { continue };
        let Some(plan) = plan else {
            problems.push(
                "expected a field plan, got none (denied, or the dataset declares no fields)"
                    .into(),
            );
            continue;
        };
        for f in list {
            let hidden = plan.hidden.iter().any(|h| *h.path == **f);
            let visible = plan.visible.iter().any(|v| **v == **f);
            match (hidden || visible, hidden == want_hidden) {
                (false, _) => {
                    problems.push(format!("`{f}` is not a declared field of {}", plan.dataset))
                }
                (true, true) => {}
                (true, false) if want_hidden => {
                    problems.push(format!("expected `{f}` hidden, it is visible"))
                }
                (true, false) => problems.push(format!("expected `{f}` visible, it is hidden")),
            }
        }
    }
    problems
}
