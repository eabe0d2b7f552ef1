//! Cedar authorization: the policy snapshot (schema, policies, entities,
//! products, routes) and the per-request decision.
//!
//! A snapshot is immutable and built whole: every file is parsed and validated
//! in strict mode against the schema, or the snapshot is not built at all.
//! Policies are named by their `@id("…")` annotation, which must be unique
//! across all sources; that name is what decisions, audit and tests report.
//!
//! Decisions evaluate only candidate policies: at build time every policy is
//! filed under the (resource, action) pairs its scope can match, so the cost of
//! a decision does not grow with policies that cannot apply. For each caller,
//! resource and action the candidates are specialised once per thread: their
//! scopes are known to hold, so they are evaluated without them, and those
//! whose conditions never read `context` are decided once and remembered; a
//! request then evaluates only the conditions that depend on it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Deserialize;

use crate::decision::contract::{self, Action, Product, UserToken};
use crate::decision::routes::Lookup;
use crate::decision::routes::{RouteTable, Target};
use crate::model::identity::Principal;
use crate::model::path::NormalPath;
use crate::FastMap;

/// The `policy` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The Cedar schema (`*.cedarschema`).
    pub schema: PathBuf,
    /// Static entities (Cedar entities JSON): domains, teams, groups, services.
    #[serde(default)]
    pub entities: Option<PathBuf>,
    /// Policy files or directories of `*.cedar`, mesh baseline first.
    pub sources: Vec<PathBuf>,
    /// ODCS contracts: files or directories of `*.odcs.yaml`.
    #[serde(default)]
    pub contracts: Vec<PathBuf>,
    /// A complete alternative policy set evaluated beside the enforced one and
    /// never enforced: disagreements are logged and counted.
    #[serde(default)]
    pub shadow: Vec<PathBuf>,
}

impl PolicyConfig {
    pub(crate) fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| crate::base::paths::resolve(base, p);
        fix(&mut self.schema);
        if let Some(e) = self.entities.as_mut() {
            fix(e);
        }
        self.sources.iter_mut().for_each(fix);
        self.contracts.iter_mut().for_each(fix);
        self.shadow.iter_mut().for_each(fix);
    }

    /// Every path named, for the file watcher.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.schema.clone()];
        v.extend(self.entities.clone());
        v.extend(self.sources.iter().cloned());
        v.extend(self.contracts.iter().cloned());
        v.extend(self.shadow.iter().cloned());
        v
    }
}

/// One input file's name and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Everything a snapshot is built from.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub schema: Source,
    pub entities: Option<Source>,
    pub policies: Vec<Source>,
    pub contracts: Vec<Source>,
    pub shadow: Vec<Source>,
}

/// Everything that was wrong, one `file:line:col: message` per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<String>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("policy: unknown error"),
            [one] => f.write_str(one),
            [first, rest @ ..] => write!(
                f,
                "{first} (and {} more error{})",
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for LoadErrors {}

fn read_source(path: &Path) -> Result<Source, String> {
    std::fs::read_to_string(path)
        .map(|text| Source {
            name: path.display().to_string(),
            text,
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A file as is, or a directory's files ending in `suffix`, sorted by name.
fn expand(path: &Path, suffixes: &[&str]) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
        })
        .collect();
    files.sort();
    Ok(files)
}

impl PolicyInputs {
    /// Reads every file the configuration names.
    pub fn read(cfg: &PolicyConfig) -> Result<PolicyInputs, LoadErrors> {
        let mut errors = Vec::new();
        let mut read_all = |paths: &[PathBuf], suffix: &[&str]| -> Vec<Source> {
            let mut out = Vec::new();
            for p in paths {
                match expand(p, suffix) {
                    Ok(files) => {
                        for f in files {
                            match read_source(&f) {
                                Ok(s) => out.push(s),
                                Err(e) => errors.push(e),
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            out
        };
        let policies = read_all(&cfg.sources, &[".cedar", LINKS]);
        let contracts = read_all(&cfg.contracts, &[".odcs.yaml"]);
        let shadow = read_all(&cfg.shadow, &[".cedar", LINKS]);
        let schema = read_source(&cfg.schema);
        let entities = cfg.entities.as_deref().map(read_source).transpose();
        match (schema, entities) {
            (Ok(schema), Ok(entities)) if errors.is_empty() => Ok(PolicyInputs {
                schema,
                entities,
                policies,
                contracts,
                shadow,
            }),
            (s, e) => {
                errors.extend(s.err());
                errors.extend(e.err());
                Err(LoadErrors(errors))
            }
        }
    }

    /// SHA-256 over every input's name and text: the snapshot's version.
    pub fn version(&self) -> String {
        let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut add = |tag: &str, s: &Source| {
            for part in [tag, s.name.as_str(), s.text.as_str()] {
                h.update(&(part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
        };
        add("schema", &self.schema);
        if let Some(e) = &self.entities {
            add("entities", e);
        }
        self.policies.iter().for_each(|s| add("policy", s));
        self.contracts.iter().for_each(|s| add("contract", s));
        self.shadow.iter().for_each(|s| add("shadow", s));
        h.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `file:line:col` for a byte offset into `text` (1-based).
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

/// Formats a Cedar diagnostic as `file:line:col: message`.
fn diag(file: &str, text: &str, d: &(dyn Diagnostic + Send + Sync)) -> String {
    let mut msg = d.to_string();
    if let Some(help) = d.help() {
        msg.push_str(&format!(" ({help})"));
    }
    match d.labels().and_then(|mut l| l.next()) {
        Some(label) => {
            let (line, col) = position(text, label.offset());
            format!("{file}:{line}:{col}: {msg}")
        }
        None => format!("{file}: {msg}"),
    }
}

const NS: &str = "Mesh";

fn type_name(t: &str) -> EntityTypeName {
    // Our own fixed names always parse.
    EntityTypeName::from_str(&format!("{NS}::{t}"))
        .unwrap_or_else(|_| unreachable!("valid type name {t}"))
}

fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

/// The attributes products and datasets share (see the schema).
fn resource_attrs(
    p: &Product,
    domain: &EntityUid,
    classification: &str,
) -> HashMap<String, RestrictedExpression> {
    HashMap::from([
        (
            "product_id".to_string(),
            RestrictedExpression::new_string(p.id.clone()),
        ),
        (
            "domain".to_string(),
            RestrictedExpression::new_string(p.domain.clone()),
        ),
        (
            "owning_domain".to_string(),
            RestrictedExpression::new_entity_uid(domain.clone()),
        ),
        (
            "classification".to_string(),
            RestrictedExpression::new_string(classification.to_string()),
        ),
        (
            "allowed_purposes".to_string(),
            string_set(&p.allowed_purposes),
        ),
    ])
}

/// Candidate policies (positions in `Index::policies`), one list per action.
type PerAction = [Box<[u32]>; 5];

/// Resource types: products and datasets.
const PRODUCT: usize = 0;
const DATASET: usize = 1;

/// A resource (product or dataset) with what a decision about it needs.
#[derive(Debug)]
struct Resource {
    uid: EntityUid,
    /// Its id for decision records: `<product>` or `<product>/<dataset>`.
    id: Arc<str>,
    /// Position in the candidate index.
    index: usize,
    /// `PRODUCT` or `DATASET`.
    kind: usize,
    /// The resource entity and its ancestors' entities (product, domain).
    entities: Vec<Entity>,
}

/// Policies filed by the resources and actions their scope can match.
///
/// - `open`: resource scope open (`resource`, `resource is T`), per type;
/// - `groups`: `in` (or `is T in`) an entity that is not itself a resource,
///   such as a domain, per that entity and type;
/// - `scoped`: `==` a resource, or `in` a resource (a product and its
///   datasets), per resource.
///
/// A decision takes the few lists for its resource and action, keeps the
/// policies whose principal scope can match the caller, and evaluates them as
/// one set (merged once per thread for each caller, resource and action).
#[derive(Debug)]
struct Index {
    /// Every policy of the set, static or linked.
    policies: Vec<Policy>,
    open: [PerAction; 2],
    groups: Vec<[PerAction; 2]>,
    scoped: Vec<PerAction>,
    /// Per resource: the groups it belongs to.
    member_of: Vec<Vec<usize>>,
    /// Every policy's scope-free form, made on first use (by position).
    specialized: Vec<OnceLock<Option<Specialized>>>,
}

impl Index {
    /// `resources[i]`: (uid, kind, ancestors) of the resource with index `i`.
    fn build(
        set: &PolicySet,
        resources: &[(EntityUid, usize, HashSet<EntityUid>)],
        types: &[EntityTypeName; 2],
        actions: &[EntityUid; 5],
    ) -> Index {
        let by_uid: HashMap<&EntityUid, usize> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (&r.0, i))
            .collect();
        // Resources in (or equal to) a resource: a product and its datasets.
        let mut under: HashMap<&EntityUid, Vec<usize>> = HashMap::new();
        let mut group_of: HashMap<&EntityUid, usize> = HashMap::new();
        let mut member_of: Vec<Vec<usize>> = vec![Vec::new(); resources.len()];
        for (i, (uid, _, ancestors)) in resources.iter().enumerate() {
            under.entry(uid).or_default().push(i);
            for a in ancestors {
                if by_uid.contains_key(a) {
                    under.entry(a).or_default().push(i);
                } else {
                    let n = group_of.len();
                    let g = *group_of.entry(a).or_insert(n);
                    member_of[i].push(g);
                }
            }
        }
        type Bucket = [Vec<u32>; 5];
        let mut open: [Bucket; 2] = Default::default();
        let mut groups: Vec<[Bucket; 2]> =
            (0..group_of.len()).map(|_| Default::default()).collect();
        let mut scoped: Vec<Bucket> = (0..resources.len()).map(|_| Default::default()).collect();
        let policies: Vec<Policy> = set.policies().cloned().collect();
        for (at, p) in policies.iter().enumerate() {
            let Ok(at) = u32::try_from(at) else { break };
            let acts: [bool; 5] = match p.action_constraint() {
                ActionConstraint::Any => [true; 5],
                ActionConstraint::Eq(a) => actions.each_ref().map(|x| *x == a),
                ActionConstraint::In(list) => actions.each_ref().map(|x| list.contains(x)),
            };
            let file = |bucket: &mut Bucket| {
                for (i, on) in acts.iter().enumerate() {
                    if *on {
                        bucket[i].push(at);
                    }
                }
            };
            let kind = |t: &EntityTypeName| types.iter().position(|x| x == t);
            match p.resource_constraint() {
                ResourceConstraint::Any => open.iter_mut().for_each(file),
                // A type with no resources here can never match.
                ResourceConstraint::Is(t) => {
                    if let Some(k) = kind(&t) {
                        file(&mut open[k]);
                    }
                }
                ResourceConstraint::Eq(u) => {
                    if let Some(&i) = by_uid.get(&u) {
                        file(&mut scoped[i]);
                    }
                }
                ResourceConstraint::In(u) => {
                    if let Some(list) = under.get(&u) {
                        list.iter().for_each(|&i| file(&mut scoped[i]));
                    } else if let Some(&g) = group_of.get(&u) {
                        groups[g].iter_mut().for_each(file);
                    }
                }
                ResourceConstraint::IsIn(t, u) => {
                    let Some(k) = kind(&t) else { continue };
                    if let Some(list) = under.get(&u) {
                        list.iter()
                            .filter(|&&i| resources[i].1 == k)
                            .for_each(|&i| file(&mut scoped[i]));
                    } else if let Some(&g) = group_of.get(&u) {
                        file(&mut groups[g][k]);
                    }
                }
            }
        }
        let finish = |b: Bucket| -> PerAction { b.map(Vec::into_boxed_slice) };
        Index {
            specialized: policies.iter().map(|_| OnceLock::new()).collect(),
            policies,
            open: open.map(finish),
            groups: groups.into_iter().map(|g| g.map(finish)).collect(),
            scoped: scoped.into_iter().map(finish).collect(),
            member_of,
        }
    }

    /// The candidates for one resource and action: their positions in
    /// `policies`, list by list.
    fn candidates(
        &self,
        resource: usize,
        kind: usize,
        action: usize,
    ) -> impl Iterator<Item = usize> + '_ {
        let groups = self
            .member_of
            .get(resource)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        std::iter::once(self.open[kind][action].as_ref())
            .chain(
                groups
                    .iter()
                    .map(move |&g| self.groups[g][kind][action].as_ref()),
            )
            .chain(self.scoped.get(resource).map(|s| s[action].as_ref()))
            .flatten()
            .map(|&at| at as usize)
    }
}

#[derive(Debug)]
struct ProductEntry {
    product: Product,
    resource: Resource,
    datasets: Vec<Resource>,
}

/// Adds `p` (static, or linked from a template of `from`) to `to`. Ids are
/// unique in the full set, so adding to a subset of it cannot clash.
fn add_policy(to: &mut PolicySet, p: &Policy, from: &PolicySet) {
    match (p.template_id(), p.template_links()) {
        (Some(tid), Some(links)) => {
            if to.template(tid).is_none() {
                if let Some(t) = from.template(tid) {
                    let _ = to.add_template(t.clone());
                }
            }
            let _ = to.link(tid.clone(), p.id().clone(), links);
        }
        _ => {
            let _ = to.add(p.clone());
        }
    }
}

/// A policy whose scope is known to hold, as Cedar evaluates it: the same id,
/// effect and conditions over `(principal, action, resource)`.
#[derive(Debug)]
struct Specialized {
    policy: Policy,
    forbid: bool,
    /// Whether any condition reads `context`; if not, the policy's outcome
    /// for a given caller, resource and action is the same for every request.
    reads_context: bool,
    /// For a policy that reads the context: the few-valued context
    /// attributes it reads (bits of `FEW_VALUED`), or `None` if it reads
    /// anything else of the request (the path, the source address, the
    /// user, the context as a whole).
    reads: Option<u8>,
    /// The conditions in Cedar's JSON form: policies with equal conditions
    /// hold or fail together.
    conditions: String,
    /// The same conditions as a `permit` with the same id: evaluated, Cedar
    /// names it if and only if the conditions hold.
    test: Policy,
}

impl Specialized {
    /// Through Cedar's JSON form (EST): the scope replaced by `All`, the
    /// conditions kept as they are. `None` if Cedar refuses either step; the
    /// original policy is then evaluated as it is.
    fn of(p: &Policy) -> Option<Specialized> {
        let mut est = p.to_json().ok()?;
        let conditions = est.get("conditions")?;
        let reads_context = mentions_context(conditions) || mentions_user(conditions);
        let mut mask = 0;
        let reads =
            (!mentions_user(conditions) && context_reads(conditions, &mut mask)).then_some(mask);
        let conditions = conditions.to_string();
        let obj = est.as_object_mut()?;
        for part in ["principal", "action", "resource"] {
            obj.insert(part.into(), serde_json::json!({ "op": "All" }));
        }
        let forbid = p.effect() == cedar_policy::Effect::Forbid;
        let test = if forbid {
            let mut permit = est.clone();
            permit
                .as_object_mut()?
                .insert("effect".into(), "permit".into());
            Policy::from_json(Some(p.id().clone()), permit).ok()?
        } else {
            Policy::from_json(Some(p.id().clone()), est.clone()).ok()?
        };
        let policy = Policy::from_json(Some(p.id().clone()), est).ok()?;
        Some(Specialized {
            policy,
            forbid,
            reads_context,
            reads,
            conditions,
            test,
        })
    }
}

/// Whether an EST expression names a `Mesh::User` entity: users join a
/// decision's entities per request, so such a policy is decided per request.
fn mentions_user(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "type" && v.as_str() == Some("Mesh::User")) || mentions_user(v)),
        serde_json::Value::Array(items) => items.iter().any(mentions_user),
        _ => false,
    }
}

/// The context attributes with few distinct values (and so few outcomes per
/// caller, resource and action for a condition that reads only them), as
/// bits: `1 << position`.
const FEW_VALUED: [&str; 5] = ["method", "time", "purpose", "tls", "has_user"];
const READS_METHOD: u8 = 1;
const READS_TIME: u8 = 1 << 1;
const READS_PURPOSE: u8 = 1 << 2;
const READS_TLS: u8 = 1 << 3;
const READS_HAS_USER: u8 = 1 << 4;

/// Adds to `mask` the `FEW_VALUED` attributes an EST expression reads as
/// `context.<attr>` or `context has <attr>`; false if it reads the context in
/// any other way (another attribute, or the record as a whole).
fn context_reads(v: &serde_json::Value, mask: &mut u8) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| {
            let attr_of_context = (k == "." || k == "has")
                .then(|| v.as_object())
                .flatten()
                .filter(|inner| {
                    inner
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context")
                })
                .map(|inner| inner.get("attr").and_then(Value::as_str));
            match attr_of_context {
                Some(attr) => match FEW_VALUED.iter().position(|a| Some(*a) == attr) {
                    Some(bit) => {
                        *mask |= 1 << bit;
                        true
                    }
                    None => false,
                },
                None => !(k == "Var" && v.as_str() == Some("context")) && context_reads(v, mask),
            }
        }),
        Value::Array(items) => items.iter().all(|v| context_reads(v, mask)),
        _ => true,
    }
}

/// Whether an EST expression contains the variable `context` anywhere.
fn mentions_context(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "Var" && v.as_str() == Some("context")) || mentions_context(v)),
        serde_json::Value::Array(items) => items.iter().any(mentions_context),
        _ => false,
    }
}

/// The candidates for one caller, resource and action, specialised: the
/// outcome of the policies that do not read the context, decided once, and
/// the distinct conditions of those that do, tested per request (or
/// remembered per value of the few-valued context attributes they read).
#[derive(Debug, Default)]
struct Candidates {
    /// Satisfied context-free `forbid`s and `permit`s, and their errors.
    forbids: Vec<String>,
    permits: Vec<String>,
    errors: Vec<String>,
    /// One `permit` per distinct context-reading condition, in parts by what
    /// the conditions read...
    parts: Vec<Part>,
    /// ...named by one of its policies, with every policy that has it:
    /// (is a `forbid`, id).
    members: HashMap<String, Vec<(bool, String)>>,
    /// The context-reading policies themselves: evaluated when a test errors,
    /// so that each error names its own policy, or instead of the tests when
    /// a policy could not be specialised.
    residual: PolicySet,
    untestable: bool,
}

/// The tests whose conditions read the same context attributes.
#[derive(Debug)]
struct Part {
    /// What they read (bits of `FEW_VALUED`); `None`: something with many
    /// values, so they are evaluated on every request.
    reads: Option<u8>,
    tests: PolicySet,
    /// Outcomes by the values read: the satisfied tests, `None` if the
    /// evaluation had errors. The candidates live in a per-thread cache,
    /// hence the `RefCell`.
    seen: std::cell::RefCell<Vec<(Seen, Option<Vec<String>>)>>,
}

/// The values of the few-valued context attributes of one request.
#[derive(Debug)]
struct Seen {
    method: Box<str>,
    second: u64,
    purpose: Option<Box<str>>,
    tls: Box<str>,
    has_user: bool,
}

impl Seen {
    fn of(facts: &RequestFacts<'_>) -> Seen {
        Seen {
            method: facts.method.into(),
            second: policy_second(facts.time),
            purpose: facts.purpose.map(Into::into),
            tls: facts.tls_version.into(),
            has_user: facts.user.is_some(),
        }
    }

    /// Whether `facts` has these values for the attributes in `mask`.
    fn matches(&self, mask: u8, facts: &RequestFacts<'_>) -> bool {
        let on = |bit: u8| mask & bit != 0;
        (!on(READS_METHOD) || *self.method == *facts.method)
            && (!on(READS_TIME) || self.second == policy_second(facts.time))
            && (!on(READS_PURPOSE) || self.purpose.as_deref() == facts.purpose)
            && (!on(READS_TLS) || *self.tls == *facts.tls_version)
            && (!on(READS_HAS_USER) || self.has_user == facts.user.is_some())
    }
}

impl Part {
    /// Outcomes remembered per part; beyond this, the part forgets them all.
    const REMEMBERED: usize = 16;
    /// Longest method, purpose or TLS version an outcome is remembered for.
    const LONGEST_VALUE: usize = 64;

    /// The tests of this part that hold for the request, `None` if
    /// evaluating them had errors; calls `each` with every satisfied test.
    fn satisfied(
        &self,
        authorizer: &Authorizer,
        request: &Request,
        entities: &Entities,
        facts: &RequestFacts<'_>,
        mut each: impl FnMut(&str),
    ) -> bool {
        let evaluate = || {
            let resp = authorizer.is_authorized(request, &self.tests, entities);
            let ok = resp.diagnostics().errors().next().is_none();
            ok.then(|| {
                resp.diagnostics()
                    .reason()
                    .map(|id| AsRef::<str>::as_ref(id).to_owned())
                    .collect::<Vec<_>>()
            })
        };
        // Values as long as a client may send are not worth keeping.
        let short = |v: Option<&str>| v.is_none_or(|v| v.len() <= Self::LONGEST_VALUE);
        let mask = self.reads.filter(|_| {
            short(Some(facts.method)) && short(facts.purpose) && short(Some(facts.tls_version))
        });
        let Some(mask) = mask else {
            return evaluate()
                .map(|ids| ids.iter().for_each(|id| each(id)))
                .is_some();
        };
        let mut seen = self.seen.borrow_mut();
        let hit = seen.iter().position(|(s, _)| s.matches(mask, facts));
        let at = match hit {
            Some(at) => at,
            None => {
                let before = seen.len();
                if mask & READS_TIME != 0 {
                    let now = policy_second(facts.time);
                    seen.retain(|(s, _)| s.second == now);
                }
                if seen.len() >= Self::REMEMBERED {
                    seen.clear();
                }
                forget(before - seen.len());
                seen.push((Seen::of(facts), evaluate()));
                remembered_one_more();
                seen.len() - 1
            }
        };
        match &seen[at].1 {
            Some(ids) => {
                ids.iter().for_each(|id| each(id));
                true
            }
            None => false,
        }
    }
}

impl Candidates {
    /// The decision Cedar would make over all the candidates: a satisfied
    /// `forbid` denies and every satisfied `forbid` is a reason; otherwise any
    /// satisfied `permit` allows, with every satisfied `permit` as a reason.
    fn decide(
        &self,
        authorizer: &Authorizer,
        request: &Request,
        entities: &Entities,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        let mut errors = self.errors.clone();
        let (mut forbids, mut permits) = (Vec::new(), Vec::new());
        let mut tested = false;
        if !self.untestable && !self.parts.is_empty() {
            tested = self.parts.iter().all(|part| {
                // Every test is a permit: the reasons are the conditions that hold.
                part.satisfied(authorizer, request, entities, facts, |test| {
                    for (forbid, id) in self.members.get(test).into_iter().flatten() {
                        if *forbid {
                            forbids.push(id.clone());
                        } else {
                            permits.push(id.clone());
                        }
                    }
                })
            });
            if !tested {
                forbids.clear();
                permits.clear();
            }
        }
        if !tested && !self.residual.is_empty() {
            let resp = authorizer.is_authorized(request, &self.residual, entities);
            let reasons = resp
                .diagnostics()
                .reason()
                .map(|id| AsRef::<str>::as_ref(id).to_owned());
            // Cedar names the satisfied policies of the deciding effect.
            if resp.decision() == cedar_policy::Decision::Allow {
                permits.extend(reasons);
            } else {
                forbids.extend(reasons);
            }
            errors.extend(resp.diagnostics().errors().map(|e| e.to_string()));
        }
        errors.sort_unstable();
        let (allowed, mut policies) = if self.forbids.is_empty() && forbids.is_empty() {
            permits.extend(self.permits.iter().cloned());
            (!permits.is_empty(), permits)
        } else {
            forbids.extend(self.forbids.iter().cloned());
            (false, forbids)
        };
        policies.sort_unstable();
        Decision {
            allowed,
            policies,
            errors,
        }
    }
}

/// The caller's side of a decision, cached per thread.
#[derive(Clone)]
struct DecisionEntities {
    principal: EntityUid,
    entities: Arc<Entities>,
    /// The caller and all its ancestors.
    principal_in: Arc<HashSet<EntityUid>>,
}

/// What `Snapshot::assemble` builds besides the policies.
struct Parts {
    /// (uid, kind, ancestors) of every resource, in index order.
    registry: Vec<(EntityUid, usize, HashSet<EntityUid>)>,
    types: [EntityTypeName; 2],
    products: Vec<ProductEntry>,
    routes: RouteTable,
    service_parents: HashMap<String, HashSet<EntityUid>>,
    namespace_parents: HashMap<String, HashSet<EntityUid>>,
    group_parents: HashMap<String, HashSet<EntityUid>>,
    action_uids: [EntityUid; 5],
    service_type: EntityTypeName,
}

/// One immutable, validated policy snapshot.
pub struct Snapshot {
    pub version: Arc<str>,
    /// Unique per built snapshot (keys the per-thread caches).
    serial: u64,
    pub loaded_at: SystemTime,
    pub policy_count: usize,
    pub shadow_policy_count: usize,
    schema: Schema,
    all: PolicySet,
    shadow_all: Option<PolicySet>,
    index: Index,
    shadow_index: Option<Index>,
    products: Vec<ProductEntry>,
    routes: RouteTable,
    /// Transitive static parents of services named in entities.json.
    service_parents: HashMap<String, HashSet<EntityUid>>,
    /// Namespace -> its domain and the domain's ancestors.
    namespace_parents: HashMap<String, HashSet<EntityUid>>,
    /// Transitive static parents of groups named in entities.json.
    group_parents: HashMap<String, HashSet<EntityUid>>,
    action_uids: [EntityUid; 5],
    authorizer: Authorizer,
    service_type: EntityTypeName,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("policy_count", &self.policy_count)
            .field("products", &self.products.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `@id`s of the determining policies.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errors does not apply).
    pub errors: Vec<String>,
}

impl Decision {
    /// A deny that no policy made: the request could not be built.
    fn denied(error: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error.into()],
        }
    }

    /// Policy ids and errors sorted, so that decisions compare and print stably.
    fn from_response(resp: &cedar_policy::Response) -> Decision {
        let mut policies: Vec<String> = resp
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort_unstable();
        let mut errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        errors.sort_unstable();
        Decision {
            allowed: resp.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        }
    }
}

/// The facts of one request that a decision needs besides the route.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The normalised, decoded path.
    pub path: &'a str,
    pub source_ip: IpAddr,
    pub purpose: Option<&'a str>,
    pub tls_version: &'a str,
    pub time: SystemTime,
    /// The verified end user the calling service acts for, if any.
    pub user: Option<&'a crate::decision::jwt::User>,
}

/// Policy text longer than this is parsed in parts on several threads.
const PARSE_PART: usize = 256 * 1024;

/// Parses Cedar policy text. A large text is cut into parts at statement
/// ends, one per CPU, and the parts are parsed in parallel (a reload of
/// 10,000 policies in one file would otherwise spend most of its time in one
/// thread). Any error reparses the whole text, so that errors are reported
/// exactly as Cedar reports them for the file.
fn parse_in_parts(
    text: &str,
    split: bool,
) -> Result<Vec<PolicySet>, Box<cedar_policy::ParseErrors>> {
    let whole = || {
        PolicySet::from_str(text)
            .map(|set| vec![set])
            .map_err(Box::new)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = if split {
        threads.min(text.len() / PARSE_PART + 1)
    } else {
        1
    };
    let cuts = if parts > 1 {
        statement_cuts(text, parts)
    } else {
        Vec::new()
    };
    if cuts.is_empty() {
        return whole();
    }
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut from = 0;
    for &cut in &cuts {
        pieces.push(&text[from..cut]);
        from = cut;
    }
    pieces.push(&text[from..]);
    let parsed: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = pieces
            .iter()
            .map(|piece| scope.spawn(move || PolicySet::from_str(piece).ok()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    match parsed.into_iter().collect::<Option<Vec<_>>>() {
        Some(sets) => Ok(sets),
        None => whole(),
    }
}

/// Up to `parts - 1` byte offsets that cut Cedar text into about equal parts,
/// each just after a `;` that ends a statement: outside string literals and
/// `//` comments. Empty if the text has too few statements.
fn statement_cuts(text: &str, parts: usize) -> Vec<usize> {
    let step = text.len() / parts.max(1);
    let mut cuts = Vec::new();
    let (mut in_string, mut escaped, mut in_comment) = (false, false, false);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && cuts.len() + 1 < parts {
        let b = bytes[i];
        if in_comment {
            // As Cedar's lexer: a comment ends at either line-break character.
            in_comment = b != b'\n' && b != b'\r';
        } else if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            in_comment = true;
        } else if b == b';' && i + 1 >= step * (cuts.len() + 1) {
            cuts.push(i + 1);
        }
        i += 1;
    }
    cuts
}

/// Parses policy sources into one set named by `@id`, collecting every error.
fn parse_policies(
    sources: &[Source],
    split: bool,
    errors: &mut Vec<String>,
) -> (PolicySet, HashMap<String, usize>) {
    let mut set = PolicySet::new();
    // @id -> index of the source that defines it
    let mut origin: HashMap<String, usize> = HashMap::new();
    // Policies and templates first, then the links that instantiate them.
    for (i, src) in sources.iter().enumerate() {
        if src.name.ends_with(LINKS) {
            continue;
        }
        let parsed = match parse_in_parts(&src.text, split) {
            Ok(p) => p,
            Err(errs) => {
                for e in errs.iter() {
                    errors.push(diag(&src.name, &src.text, e));
                }
                continue;
            }
        };
        // Cedar keeps each policy's own text: find it to report a position
        // (only for errors: searching is linear in the file).
        let at_of = |text: String| {
            src.text
                .find(&text)
                .map(|o| position(&src.text, o))
                .unwrap_or((1, 1))
        };
        for t in parsed.iter().flat_map(PolicySet::templates) {
            let added = claim_id(t.annotation("id"), "template", &origin, sources).and_then(|id| {
                set.add_template(t.new_id(PolicyId::new(&id)))
                    .map(|()| id)
                    .map_err(|e| e.to_string())
            });
            settle(
                added,
                i,
                &src.name,
                || at_of(t.to_string()),
                &mut origin,
                errors,
            );
        }
        for p in parsed.iter().flat_map(PolicySet::policies) {
            let added = claim_id(p.annotation("id"), "policy", &origin, sources).and_then(|id| {
                set.add(p.new_id(PolicyId::new(&id)))
                    .map(|()| id)
                    .map_err(|e| e.to_string())
            });
            settle(
                added,
                i,
                &src.name,
                || at_of(p.to_string()),
                &mut origin,
                errors,
            );
        }
    }
    for (i, src) in sources.iter().enumerate() {
        if src.name.ends_with(LINKS) {
            link_grants(&mut set, &mut origin, i, src, errors);
        }
    }
    (set, origin)
}

/// Records a policy's or template's `@id` as defined in source `i`, or the
/// reason it was not added, at its position.
fn settle(
    added: Result<String, String>,
    i: usize,
    file: &str,
    at: impl FnOnce() -> (usize, usize),
    origin: &mut HashMap<String, usize>,
    errors: &mut Vec<String>,
) {
    match added {
        Ok(id) => {
            origin.insert(id, i);
        }
        Err(m) => {
            let (l, c) = at();
            errors.push(format!("{file}:{l}:{c}: {m}"));
        }
    }
}

/// The `@id` a policy or template is known by: present, and not taken yet.
fn claim_id(
    annotation: Option<&str>,
    what: &str,
    origin: &HashMap<String, usize>,
    sources: &[Source],
) -> Result<String, String> {
    let id = match annotation {
        Some(id) if !id.trim().is_empty() => id.to_string(),
        _ => return Err(format!("{what} has no @id(\"…\") annotation")),
    };
    match origin.get(&id) {
        Some(&j) => Err(format!(
            "@id(\"{id}\") is already used in {}",
            sources[j].name
        )),
        None => Ok(id),
    }
}

/// Template-link files: Cedar's template-links JSON (what `cedar -k` reads).
pub const LINKS: &str = ".links.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    template_id: String,
    link_id: String,
    args: HashMap<String, String>,
}

/// Instantiates the templates of `set` with the grants in one links file.
fn link_grants(
    set: &mut PolicySet,
    origin: &mut HashMap<String, usize>,
    i: usize,
    src: &Source,
    errors: &mut Vec<String>,
) {
    let links: Vec<Link> = match serde_json::from_str(&src.text) {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("{}:{}:{}: {e}", src.name, e.line(), e.column()));
            return;
        }
    };
    for (n, link) in links.into_iter().enumerate() {
        let at = format!("{}: [{n}] `{}`", src.name, link.link_id);
        let mut env = HashMap::new();
        for (slot, value) in &link.args {
            let slot_id = match slot.as_str() {
                "?principal" => cedar_policy::SlotId::principal(),
                "?resource" => cedar_policy::SlotId::resource(),
                other => {
                    errors.push(format!(
                        "{at}: unknown slot `{other}` (?principal or ?resource)"
                    ));
                    continue;
                }
            };
            match EntityUid::from_str(value) {
                Ok(uid) => {
                    env.insert(slot_id, uid);
                }
                Err(e) => errors.push(format!("{at}: {slot}: {e}")),
            }
        }
        if let Err(e) = set.link(
            PolicyId::new(&link.template_id),
            PolicyId::new(&link.link_id),
            env,
        ) {
            errors.push(format!("{at}: {e}"));
            continue;
        }
        origin.insert(link.link_id, i);
    }
}

/// Static policies at or above which validation is split in two.
const SPLIT_VALIDATION_AT: usize = 2000;

/// Two sets that together hold every policy of `all`, to validate in
/// parallel: (`all` without the second half of its static policies, that
/// half). `(None, None)`: small enough to validate whole.
fn split_for_validation(all: &PolicySet) -> (Option<PolicySet>, Option<PolicySet>) {
    let statics: Vec<&Policy> = all.policies().filter(|p| p.is_static()).collect();
    if statics.len() < SPLIT_VALIDATION_AT {
        return (None, None);
    }
    let mut first = all.clone();
    let mut second = PolicySet::new();
    for p in &statics[statics.len() / 2..] {
        // Neither fails for a static policy of `all`; if one did, validate whole.
        let Ok(p) = first.remove_static(p.id().clone()) else {
            return (None, None);
        };
        if second.add(p).is_err() {
            return (None, None);
        }
    }
    (Some(first), Some(second))
}

fn validate(
    schema: &Schema,
    set: &PolicySet,
    sources: &[Source],
    origin: &HashMap<String, usize>,
    errors: &mut Vec<String>,
) {
    let result = Validator::new(schema.clone()).validate(set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let src = origin
            .get(e.policy_id().to_string().as_str())
            .map(|&i| &sources[i]);
        match src {
            Some(s) => errors.push(diag(&s.name, &s.text, e)),
            None => errors.push(format!("policy {}: {e}", e.policy_id())),
        }
    }
    for w in result.validation_warnings() {
        tracing::warn!(warning = %w, "policy validation warning");
    }
}

impl Snapshot {
    /// Builds and validates a complete snapshot, or reports every error found.
    pub fn build(inputs: &PolicyInputs) -> Result<Snapshot, LoadErrors> {
        let large = |s: &Source| s.text.len() > PARSE_PART;
        match Self::build_with(inputs, true) {
            // Cedar places a policy parsed from a part within that part:
            // errors are located against whole files, so build again unsplit.
            Err(_) if inputs.policies.iter().chain(&inputs.shadow).any(large) => {
                Self::build_with(inputs, false)
            }
            built => built,
        }
    }

    /// `split`: whether large policy files may be parsed in parts.
    fn build_with(inputs: &PolicyInputs, split: bool) -> Result<Snapshot, LoadErrors> {
        let mut errors = Vec::new();
        let schema = match Schema::from_cedarschema_str(&inputs.schema.text) {
            Ok((schema, warnings)) => {
                for w in warnings {
                    tracing::warn!(file = %inputs.schema.name, warning = %w, "schema warning");
                }
                schema
            }
            Err(e) => {
                return Err(LoadErrors(vec![diag(
                    &inputs.schema.name,
                    &inputs.schema.text,
                    &e,
                )]));
            }
        };

        // The products, routes and entities do not depend on the policies:
        // they are built while the policies are parsed.
        let (all, origin, shadow, parts) = std::thread::scope(|scope| {
            let parts = scope.spawn(|| Self::assemble(inputs, &schema));
            let (all, origin) = parse_policies(&inputs.policies, split, &mut errors);
            let shadow = if inputs.shadow.is_empty() {
                None
            } else {
                Some(parse_policies(&inputs.shadow, split, &mut errors))
            };
            let parts = parts
                .join()
                .unwrap_or_else(|_| Err(vec!["building the products failed unexpectedly".into()]));
            (all, origin, shadow, parts)
        });
        // Strict validation runs beside the candidate index (both are CPU
        // work; a reload of 10,000 policies should take well under a second).
        // A large set is validated in two halves on two threads (policies
        // validate independently), so a 2-core sidecar uses both cores.
        let (first, second) = split_for_validation(&all);
        let (schema_ref, origin_ref) = (&schema, &origin);
        let (validation, indexes) = std::thread::scope(|scope| {
            let halves = second.map(|second| {
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    validate(
                        schema_ref,
                        &second,
                        &inputs.policies,
                        origin_ref,
                        &mut errors,
                    );
                    errors
                })
            });
            let validation = scope.spawn(|| {
                let mut errors = Vec::new();
                validate(
                    &schema,
                    first.as_ref().unwrap_or(&all),
                    &inputs.policies,
                    &origin,
                    &mut errors,
                );
                if let Some((set, origin)) = &shadow {
                    validate(&schema, set, &inputs.shadow, origin, &mut errors);
                }
                errors
            });
            let indexes = match &parts {
                Ok(p) if errors.is_empty() => {
                    let index_of =
                        |set: &PolicySet| Index::build(set, &p.registry, &p.types, &p.action_uids);
                    Some((
                        index_of(&all),
                        shadow.as_ref().map(|(set, _)| index_of(set)),
                    ))
                }
                _ => None,
            };
            let failed = || vec!["policy validation failed unexpectedly".to_string()];
            let mut validation = validation.join().unwrap_or_else(|_| failed());
            if let Some(h) = halves {
                validation.extend(h.join().unwrap_or_else(|_| failed()));
            }
            (validation, indexes)
        });
        let mut all_errors = validation;
        all_errors.append(&mut errors);
        let (parts, (index, shadow_index)) = match (parts, indexes) {
            (Ok(p), Some(indexes)) if all_errors.is_empty() => (p, indexes),
            (Ok(_), _) => return Err(LoadErrors(all_errors)),
            (Err(more), _) => {
                all_errors.extend(more);
                return Err(LoadErrors(all_errors));
            }
        };
        let shadow_all = shadow.map(|(set, _)| set);
        Ok(Snapshot {
            serial: SNAPSHOT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            version: Arc::from(inputs.version()),
            loaded_at: SystemTime::now(),
            policy_count: all.policies().count(),
            shadow_policy_count: shadow_all
                .as_ref()
                .map(|s| s.policies().count())
                .unwrap_or(0),
            schema,
            all,
            shadow_all,
            index,
            shadow_index,
            products: parts.products,
            routes: parts.routes,
            service_parents: parts.service_parents,
            namespace_parents: parts.namespace_parents,
            group_parents: parts.group_parents,
            action_uids: parts.action_uids,
            authorizer: Authorizer::new(),
            service_type: parts.service_type,
        })
    }

    /// Everything but the policies: entities, contracts, routes, and the
    /// resources the candidate index files policies by.
    fn assemble(inputs: &PolicyInputs, schema: &Schema) -> Result<Parts, Vec<String>> {
        let mut errors = Vec::new();
        let static_entities = match &inputs.entities {
            None => Entities::empty(),
            Some(src) => match Entities::from_json_str(&src.text, Some(schema)) {
                Ok(e) => e,
                Err(e) => {
                    errors.push(diag(&src.name, &src.text, &e));
                    Entities::empty()
                }
            },
        };

        let mut products = Vec::new();
        for src in &inputs.contracts {
            match contract::parse(&src.text, &src.name) {
                Ok(p) => products.push(p),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let domain_t = type_name("Domain");
        let product_t = type_name("DataProduct");
        let dataset_t = type_name("Dataset");
        let service_t = type_name("Service");
        let action_t = type_name("Action");
        let action_uids = Action::ALL.map(|a| uid(&action_t, a.as_str()));

        let ancestors_of = |u: &EntityUid| -> HashSet<EntityUid> {
            static_entities
                .ancestors(u)
                .map(|it| it.cloned().collect())
                .unwrap_or_default()
        };
        let with_ancestors = |u: &EntityUid| -> HashSet<EntityUid> {
            let mut s = ancestors_of(u);
            s.insert(u.clone());
            s
        };

        // Groups declared in entities.json: a user in a group is in its ancestors too.
        let group_t = type_name("Group");
        let group_parents: HashMap<String, HashSet<EntityUid>> = static_entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| u.type_name() == &group_t)
            .map(|u| (u.id().unescaped().to_string(), ancestors_of(&u)))
            .collect();

        // Services declared in entities.json, and namespaces of domains.
        let mut service_parents = HashMap::new();
        let mut namespace_parents: HashMap<String, HashSet<EntityUid>> = HashMap::new();
        for e in static_entities.iter() {
            let u = e.uid();
            if u.type_name() == &service_t {
                service_parents.insert(u.id().unescaped().to_string(), ancestors_of(&u));
            }
            if u.type_name() == &domain_t {
                if let Some(Ok(cedar_policy::EvalResult::Set(set))) = e.attr("namespaces") {
                    for v in set.iter() {
                        if let cedar_policy::EvalResult::String(ns) = v {
                            namespace_parents
                                .entry(ns.clone())
                                .or_default()
                                .extend(with_ancestors(&u));
                        }
                    }
                }
            }
        }

        // Product and dataset entities, validated against the schema together.
        let mut routes = RouteTable::new();
        let mut entries = Vec::new();
        let mut seen_ids: HashMap<String, String> = HashMap::new();
        let mut all_entities: Vec<Entity> = Vec::new();
        // (uid, kind, ancestors) of every resource, in index order.
        let mut registry: Vec<(EntityUid, usize, HashSet<EntityUid>)> = Vec::new();
        for (pi, p) in products.into_iter().enumerate() {
            if let Some(other) = seen_ids.insert(p.id.clone(), p.file.clone()) {
                errors.push(format!(
                    "{}: id: product `{}` is also defined in {other}",
                    p.file, p.id
                ));
                continue;
            }
            let domain_uid = uid(&domain_t, &p.domain);
            let product_uid = uid(&product_t, &p.id);
            let mut product_ancestors = with_ancestors(&domain_uid);
            let mut attrs = resource_attrs(&p, &domain_uid, &p.classification);
            attrs.insert(
                "owner".into(),
                RestrictedExpression::new_string(p.owner.clone()),
            );
            attrs.insert(
                "version".into(),
                RestrictedExpression::new_string(p.version.clone()),
            );
            attrs.insert("tags".into(), string_set(&p.tags));
            let product_entity =
                match Entity::new(product_uid.clone(), attrs, product_ancestors.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        errors.push(format!("{}: {e}", p.file));
                        continue;
                    }
                };
            let domain_entity = static_entities.get(&domain_uid).cloned();
            let mut base_entities = vec![product_entity.clone()];
            base_entities.extend(domain_entity.clone());

            let mut datasets = Vec::new();
            product_ancestors.insert(product_uid.clone());
            for (name, classification) in &p.datasets {
                let ds_uid = uid(&dataset_t, &format!("{}/{name}", p.id));
                let mut attrs = resource_attrs(&p, &domain_uid, classification);
                attrs.insert(
                    "name".into(),
                    RestrictedExpression::new_string(name.clone()),
                );
                match Entity::new(ds_uid.clone(), attrs, product_ancestors.clone()) {
                    Ok(ds) => {
                        let mut ents = vec![ds.clone()];
                        ents.extend(base_entities.iter().cloned());
                        all_entities.push(ds);
                        registry.push((ds_uid.clone(), DATASET, product_ancestors.clone()));
                        datasets.push(Resource {
                            id: Arc::from(format!("{}/{name}", p.id)),
                            index: registry.len() - 1,
                            kind: DATASET,
                            uid: ds_uid,
                            entities: ents,
                        });
                    }
                    Err(e) => errors.push(format!("{}: dataset {name}: {e}", p.file)),
                }
            }
            product_ancestors.remove(&product_uid);
            all_entities.push(product_entity);

            for r in &p.routes {
                let dataset = r
                    .dataset
                    .as_ref()
                    .and_then(|d| p.datasets.iter().position(|(n, _)| n == d));
                let target = Target {
                    product: entries.len(),
                    action: r.action,
                    dataset,
                    pattern: r.path.clone(),
                    user_token: r.user_token.unwrap_or(p.user_token),
                };
                if let Err(e) = routes.insert(r.method.clone(), &r.path, target) {
                    errors.push(format!("{}: customProperties.meshgateRoutes: {e}", p.file));
                }
            }
            registry.push((product_uid.clone(), PRODUCT, product_ancestors.clone()));
            let resource = Resource {
                id: Arc::from(p.id.as_str()),
                index: registry.len() - 1,
                kind: PRODUCT,
                uid: product_uid,
                entities: base_entities,
            };
            let _ = pi;
            entries.push(ProductEntry {
                product: p,
                resource,
                datasets,
            });
        }
        // The constructed entities must conform to the schema like any other.
        let mut check = all_entities;
        check.extend(static_entities.iter().cloned());
        if let Err(e) = Entities::from_entities(check, Some(schema)) {
            errors.push(format!(
                "contracts: entities built from the contracts do not match the schema: {e}"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        Ok(Parts {
            registry,
            types: [product_t, dataset_t],
            products: entries,
            routes,
            service_parents,
            namespace_parents,
            group_parents,
            action_uids,
            service_type: service_t,
        })
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn has_shadow(&self) -> bool {
        self.shadow_all.is_some()
    }

    /// The product a route target names.
    pub fn product(&self, target: &Target) -> Option<&Product> {
        self.products.get(target.product).map(|p| &p.product)
    }

    /// Every product of the snapshot's contracts.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.iter().map(|p| &p.product)
    }

    fn resource(&self, target: &Target) -> Option<&Resource> {
        let p = self.products.get(target.product)?;
        match target.dataset {
            Some(d) => p.datasets.get(d),
            None => Some(&p.resource),
        }
    }

    /// The Cedar entity for a caller.
    /// A caller's parents, transitively: what entities.json declares for it
    /// and the domain owning its namespace.
    /// The `Mesh::User` entity of a verified token: its groups (and their
    /// static ancestors) as parents, its mapped claims as attributes.
    pub fn user_entity(&self, user: &crate::decision::jwt::User) -> Result<Entity, String> {
        use crate::decision::jwt::AttrValue;
        let group_t = type_name("Group");
        let mut parents: HashSet<EntityUid> = HashSet::new();
        for g in &user.groups {
            parents.insert(uid(&group_t, g));
            if let Some(up) = self.group_parents.get(g) {
                parents.extend(up.iter().cloned());
            }
        }
        let mut attrs: HashMap<String, RestrictedExpression> = HashMap::from([
            (
                "subject".to_string(),
                RestrictedExpression::new_string(user.subject.clone()),
            ),
            (
                "issuer".to_string(),
                RestrictedExpression::new_string(user.issuer.clone()),
            ),
            ("scopes".to_string(), string_set(&user.scopes)),
        ]);
        for (name, value) in &user.attributes {
            let v = match value {
                AttrValue::String(s) => RestrictedExpression::new_string(s.clone()),
                AttrValue::Long(n) => RestrictedExpression::new_long(*n),
                AttrValue::Bool(b) => RestrictedExpression::new_bool(*b),
                AttrValue::Set(items) => string_set(items),
            };
            attrs.insert(name.clone(), v);
        }
        Entity::new(uid(&type_name("User"), &user.id), attrs, parents).map_err(|e| e.to_string())
    }

    /// Checks that the configured claim mapping yields users the schema
    /// accepts: every mapped attribute declared, with the configured type.
    pub fn check_user_mapping(&self, users: &crate::decision::jwt::UsersConfig) -> Vec<String> {
        use crate::decision::jwt::{AttrValue, AttributeType, User};
        let mut errors = Vec::new();
        for (i, issuer) in users.issuers.iter().enumerate() {
            let attributes = issuer
                .attributes
                .iter()
                .map(|(name, spec)| {
                    let v = match spec.kind {
                        AttributeType::String => AttrValue::String("x".into()),
                        AttributeType::Long => AttrValue::Long(1),
                        AttributeType::Bool => AttrValue::Bool(true),
                        AttributeType::StringSet => AttrValue::Set(vec!["x".into()]),
                    };
                    (name.clone(), v)
                })
                .collect();
            let sample = User {
                id: format!("{}|sample", issuer.issuer),
                issuer: issuer.issuer.clone(),
                subject: "sample".into(),
                groups: Vec::new(),
                scopes: vec!["x".into()],
                attributes,
                expires_at: 0,
            };
            let checked = self.user_entity(&sample).and_then(|e| {
                Entities::from_entities([e], Some(&self.schema))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = checked {
                errors.push(format!(
                    "users.issuers[{i}].attributes: the mapped user does not match the schema's Mesh::User: {e}"
                ));
            }
        }
        errors
    }

    fn principal_parents(&self, principal: &Principal, name: &str) -> HashSet<EntityUid> {
        let mut parents = self.service_parents.get(name).cloned().unwrap_or_default();
        if let Principal::Spiffe(s) = principal {
            if let Some(p) = s
                .namespace
                .as_ref()
                .and_then(|ns| self.namespace_parents.get(ns))
            {
                parents.extend(p.iter().cloned());
            }
        }
        parents
    }

    /// The `Mesh::Group`s a service belongs to in `entities.json` (with their
    /// ancestors), by id: what quota `group` rules match for services.
    pub fn service_groups(&self, principal: &Principal) -> Vec<String> {
        let name = principal.header_form();
        let mut groups: Vec<String> = self
            .principal_parents(principal, &name)
            .into_iter()
            .filter(|u| u.type_name().basename() == "Group")
            .map(|u| u.id().unescaped().to_string())
            .collect();
        groups.sort_unstable();
        groups
    }

    pub fn principal_entity(&self, principal: &Principal) -> Result<Entity, String> {
        let name = principal.header_form();
        let mut attrs = HashMap::from([(
            "name".to_string(),
            RestrictedExpression::new_string(name.clone()),
        )]);
        let parents = self.principal_parents(principal, &name);
        match principal {
            Principal::Spiffe(s) => {
                attrs.insert(
                    "kind".into(),
                    RestrictedExpression::new_string("spiffe".into()),
                );
                attrs.insert(
                    "trust_domain".into(),
                    RestrictedExpression::new_string(s.trust_domain.clone()),
                );
                if let Some(ns) = &s.namespace {
                    attrs.insert(
                        "namespace".into(),
                        RestrictedExpression::new_string(ns.clone()),
                    );
                }
                if let Some(sa) = &s.service_account {
                    attrs.insert(
                        "service_account".into(),
                        RestrictedExpression::new_string(sa.clone()),
                    );
                }
            }
            Principal::Dns(_) => {
                attrs.insert(
                    "kind".into(),
                    RestrictedExpression::new_string("dns".into()),
                );
            }
            Principal::CommonName(_) => {
                attrs.insert("kind".into(), RestrictedExpression::new_string("cn".into()));
            }
        }
        Entity::new(uid(&self.service_type, &name), attrs, parents).map_err(|e| e.to_string())
    }

    /// The entities of one decision: the caller and the resource with its
    /// ancestors. Building them (Cedar computes their transitive closure) costs
    /// more than most decisions, and a client asks for the same few resources
    /// again and again, so each thread keeps recent sets for this snapshot.
    fn entities_for(
        &self,
        principal: &Principal,
        name: &str,
        resource: &Resource,
    ) -> Result<DecisionEntities, String> {
        let key = (self.serial, resource.index);
        let cached = DECISIONS.with(|c| c.borrow().get(name, key).map(|e| e.who.clone()));
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let principal_entity = self.principal_entity(principal)?;
        let uid = principal_entity.uid();
        let mut keys = self.principal_parents(principal, name);
        keys.insert(uid.clone());
        let mut ents = Vec::with_capacity(resource.entities.len() + 1);
        ents.push(principal_entity);
        ents.extend(resource.entities.iter().cloned());
        let entities = Arc::new(Entities::from_entities(ents, None).map_err(|e| e.to_string())?);
        let found = DecisionEntities {
            principal: uid,
            entities,
            principal_in: Arc::new(keys),
        };
        DECISIONS.with(|c| c.borrow_mut().insert(name, key, found.clone()));
        Ok(found)
    }

    /// The specialised candidates for a caller, resource and action: the
    /// index's candidates whose principal scope can match this caller. Built
    /// once per thread for each (snapshot, caller, resource, action); the
    /// context-free ones are decided with this request, which is valid for
    /// every request with the same key.
    #[allow(clippy::too_many_arguments)]
    fn candidate_set(
        &self,
        index: &Index,
        shadow: bool,
        name: &str,
        resource: &Resource,
        action: usize,
        who: &DecisionEntities,
        request: &Request,
    ) -> Rc<Candidates> {
        let key = (self.serial, resource.index);
        let slot = (usize::from(shadow), action);
        let cached = DECISIONS.with(|c| {
            c.borrow()
                .get(name, key)
                .and_then(|e| e.candidates[slot.0][slot.1].clone())
        });
        if let Some(hit) = cached {
            return hit;
        }
        let mut found = Candidates::default();
        let mut free = [PolicySet::new(), PolicySet::new()];
        // condition -> the id naming its test
        let mut tests: HashMap<&str, String> = HashMap::new();
        // Where linked policies' templates are.
        let from = match (shadow, &self.shadow_all) {
            (true, Some(set)) => set,
            _ => &self.all,
        };
        for pos in index.candidates(resource.index, resource.kind, action) {
            let Some(p) = index.policies.get(pos) else {
                continue;
            };
            let admits = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => u == who.principal,
                PrincipalConstraint::In(u) => who.principal_in.contains(&u),
                PrincipalConstraint::Is(t) => t == self.service_type,
                PrincipalConstraint::IsIn(t, u) => {
                    t == self.service_type && who.principal_in.contains(&u)
                }
            };
            if !admits {
                continue;
            }
            let special = index
                .specialized
                .get(pos)
                .and_then(|cell| cell.get_or_init(|| Specialized::of(p)).as_ref());
            let Some(sp) = special else {
                // Not specialised: evaluated as written, on every request.
                add_policy(&mut found.residual, p, from);
                found.untestable = true;
                continue;
            };
            if !sp.reads_context {
                let _ = free[usize::from(sp.forbid)].add(sp.policy.clone());
                continue;
            }
            let _ = found.residual.add(sp.policy.clone());
            let id = AsRef::<str>::as_ref(sp.policy.id()).to_owned();
            let test = tests.entry(sp.conditions.as_str()).or_insert_with(|| {
                let at = match found.parts.iter().position(|p| p.reads == sp.reads) {
                    Some(at) => at,
                    None => {
                        found.parts.push(Part {
                            reads: sp.reads,
                            tests: PolicySet::new(),
                            seen: Default::default(),
                        });
                        found.parts.len() - 1
                    }
                };
                let _ = found.parts[at].tests.add(sp.test.clone());
                id.clone()
            });
            found
                .members
                .entry(test.clone())
                .or_default()
                .push((sp.forbid, id));
        }
        // One evaluation per effect, so that each names all its satisfied policies.
        let [permit_set, forbid_set] = free;
        for (set, into_forbids) in [(permit_set, false), (forbid_set, true)] {
            if set.is_empty() {
                continue;
            }
            let resp = self.authorizer.is_authorized(request, &set, &who.entities);
            let reasons = resp
                .diagnostics()
                .reason()
                .map(|id| AsRef::<str>::as_ref(id).to_owned());
            if into_forbids {
                found.forbids.extend(reasons);
            } else {
                found.permits.extend(reasons);
            }
            found
                .errors
                .extend(resp.diagnostics().errors().map(|e| e.to_string()));
        }
        let found = Rc::new(found);
        DECISIONS.with(|c| {
            if let Some(e) = c.borrow_mut().get_mut(name, key) {
                e.candidates[slot.0][slot.1] = Some(found.clone());
            }
        });
        found
    }

    fn context(facts: &RequestFacts<'_>) -> Result<Context, String> {
        let mut pairs = vec![
            (
                "method".to_string(),
                RestrictedExpression::new_string(facts.method.to_string()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(facts.path.to_string()),
            ),
            ("source_ip".to_string(), ip_expr(facts.source_ip)),
            ("time".to_string(), time_expr(facts.time)),
            (
                "tls".to_string(),
                RestrictedExpression::new_record([(
                    "version".to_string(),
                    RestrictedExpression::new_string(facts.tls_version.to_string()),
                )])
                .map_err(|e| e.to_string())?,
            ),
            (
                "has_user".to_string(),
                RestrictedExpression::new_bool(facts.user.is_some()),
            ),
        ];
        if let Some(u) = facts.user {
            pairs.push((
                "user".to_string(),
                RestrictedExpression::new_entity_uid(uid(&type_name("User"), &u.id)),
            ));
        }
        if let Some(p) = facts.purpose {
            pairs.push((
                "purpose".to_string(),
                RestrictedExpression::new_string(p.to_string()),
            ));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }

    /// Decides one request. Anything that goes wrong building it denies.
    pub fn authorize_with_shadow(
        &self,
        principal: &Principal,
        target: &Target,
        facts: &RequestFacts<'_>,
    ) -> (Decision, Option<Decision>) {
        self.decide(principal, target, facts, true)
    }

    /// Decides one request with the enforced set only.
    pub fn authorize(
        &self,
        principal: &Principal,
        target: &Target,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        self.decide(principal, target, facts, false).0
    }

    /// Decides with the enforced index and, when asked and configured, the
    /// shadow index, building the Cedar request and entities once.
    fn decide(
        &self,
        principal: &Principal,
        target: &Target,
        facts: &RequestFacts<'_>,
        with_shadow: bool,
    ) -> (Decision, Option<Decision>) {
        let deny = |e: String| {
            let d = Decision::denied(e);
            (
                d.clone(),
                (with_shadow && self.shadow_index.is_some()).then_some(d),
            )
        };
        let Some(resource) = self.resource(target) else {
            return deny("route names an unknown product".into());
        };
        let name = principal.header_form();
        let who = match self.entities_for(principal, &name, resource) {
            Ok(x) => x,
            Err(e) => return deny(e),
        };
        let context = match cached_context(facts) {
            Ok(c) => c,
            Err(e) => return deny(e),
        };
        let action = target.action.index();
        let request = match Request::new(
            who.principal.clone(),
            self.action_uids[action].clone(),
            resource.uid.clone(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return deny(e.to_string()),
        };
        // A user joins the cached entities for this request only. Context-free
        // policies cannot see it (a policy naming a user is context-dependent).
        let with_user;
        let entities: &Entities = match facts.user {
            None => &who.entities,
            Some(u) => {
                let added = self.user_entity(u).and_then(|e| {
                    (*who.entities)
                        .clone()
                        .add_entities([e], None)
                        .map_err(|e| e.to_string())
                });
                match added {
                    Ok(e) => {
                        with_user = e;
                        &with_user
                    }
                    Err(e) => return deny(e),
                }
            }
        };
        let eval = |index: &Index, shadow: bool| {
            self.candidate_set(index, shadow, &name, resource, action, &who, &request)
                .decide(&self.authorizer, &request, entities, facts)
        };
        let enforced = eval(&self.index, false);
        let shadow = match (&self.shadow_index, with_shadow) {
            (Some(index), true) => Some(eval(index, true)),
            _ => None,
        };
        (enforced, shadow)
    }

    /// A Cedar request with its own entities, against the whole policy set
    /// (Cedar's `run-tests` semantics).
    pub fn authorize_request(&self, request: &Request, entities: &Entities) -> Decision {
        Decision::from_response(&self.authorizer.is_authorized(request, &self.all, entities))
    }

    /// The same decision with the plain `Authorizer` over every policy; the
    /// reference the candidate index is tested against.
    pub fn authorize_unindexed(
        &self,
        principal: &Principal,
        target: &Target,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        let Some(resource) = self.resource(target) else {
            return Decision::denied("unknown product");
        };
        let (Ok(principal_entity), Ok(context)) =
            (self.principal_entity(principal), Self::context(facts))
        else {
            return Decision::denied("request");
        };
        let principal_uid = principal_entity.uid();
        let mut ents = vec![principal_entity];
        ents.extend(resource.entities.iter().cloned());
        if let Some(u) = facts.user {
            match self.user_entity(u) {
                Ok(e) => ents.push(e),
                Err(e) => return Decision::denied(e),
            }
        }
        let (Ok(entities), Ok(request)) = (
            Entities::from_entities(ents, None),
            Request::new(
                principal_uid,
                self.action_uids[target.action.index()].clone(),
                resource.uid.clone(),
                context,
                Some(&self.schema),
            ),
        ) else {
            return Decision::denied("request");
        };
        let resp = self
            .authorizer
            .is_authorized(&request, &self.all, &entities);
        Decision::from_response(&resp)
    }
}

/// What authorization decided for a request; attached to the request (as an
/// extension) for later layers and the audit record.
#[derive(Debug, Clone)]
pub struct AuthzOutcome {
    pub product: Arc<str>,
    pub action: Action,
    /// `DataProduct` or `Dataset` id.
    pub resource: Arc<str>,
    pub decision: Decision,
    pub shadow: Option<Decision>,
    pub policy_version: Arc<str>,
    /// The product contract's SLA throughput, requests per second.
    pub throughput: Option<f64>,
    /// The product contract's SLA latency.
    pub latency: Option<std::time::Duration>,
}

/// An HTTP request as authorization sees it.
#[derive(Debug)]
pub struct HttpFacts<'a> {
    pub method: &'a http::Method,
    pub path: &'a NormalPath,
    pub headers: &'a http::HeaderMap,
    pub source_ip: IpAddr,
    pub tls_version: &'a str,
    pub time: SystemTime,
    /// The verified end user (see [`Snapshot::route`]); ignored on
    /// routes that take no token.
    pub user: Option<&'a crate::decision::jwt::User>,
}

/// Header that declares the purpose of a request (`context.purpose`).
pub const X_DATA_PURPOSE: &str = "x-data-purpose";

/// Why a request could not be decided; the pipeline chooses its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("the route requires an end-user token and none was given")]
    UserTokenMissing,
    #[error("more than one x-data-purpose header")]
    DuplicatePurpose,
    #[error("x-data-purpose is empty or not printable ASCII")]
    InvalidPurpose,
}

impl Snapshot {
    /// The route of a request: what it names (product, action, dataset)
    /// and whether it takes an end-user token. The proxy routes once and
    /// decides with the same snapshot ([`Snapshot::decide_routed`]).
    pub fn route(&self, method: &http::Method, path: &NormalPath) -> Result<&Target, DecideError> {
        match self.routes.lookup(method, path) {
            Lookup::Found(t) => Ok(t),
            Lookup::MethodNotAllowed => Err(DecideError::MethodNotAllowed),
            Lookup::NotFound => Err(DecideError::NoRoute),
        }
    }

    /// Routes an HTTP request and decides it: the one path shared by the proxy,
    /// `meshgate authorize` and `meshgate test`.
    pub fn decide_http(
        &self,
        principal: &Principal,
        req: &HttpFacts<'_>,
    ) -> Result<AuthzOutcome, DecideError> {
        let target = self.route(req.method, req.path)?;
        self.decide_routed(principal, target, req)
    }

    /// Decides a request already routed (by [`Snapshot::route`] of this
    /// snapshot) to `target`.
    pub fn decide_routed(
        &self,
        principal: &Principal,
        target: &Target,
        req: &HttpFacts<'_>,
    ) -> Result<AuthzOutcome, DecideError> {
        let user = match target.user_token {
            UserToken::None => None,
            UserToken::Optional => req.user,
            UserToken::Required => Some(req.user.ok_or(DecideError::UserTokenMissing)?),
        };
        // One declared purpose: with two, policy would see the first and
        // the upstream both (a conflict between what was authorised and
        // what is served), so that is refused too.
        let mut purposes = req.headers.get_all(X_DATA_PURPOSE).iter();
        let purpose = match (purposes.next(), purposes.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(DecideError::DuplicatePurpose),
            (Some(v), None) => Some(
                v.to_str()
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(DecideError::InvalidPurpose)?,
            ),
        };
        let decoded = req.path.decoded();
        let facts = RequestFacts {
            method: req.method.as_str(),
            path: &decoded,
            source_ip: req.source_ip,
            purpose,
            tls_version: req.tls_version,
            time: req.time,
            user,
        };
        let (decision, shadow) = self.authorize_with_shadow(principal, target, &facts);
        let (product, resource, sla) = match self.products.get(target.product) {
            Some(entry) => (
                entry.resource.id.clone(),
                self.resource(target)
                    .map(|r| r.id.clone())
                    .unwrap_or_else(|| entry.resource.id.clone()),
                (entry.product.sla.throughput, entry.product.sla.latency),
            ),
            None => (Arc::from(""), Arc::from(""), (None, None)),
        };
        Ok(AuthzOutcome {
            product,
            action: target.action,
            resource,
            decision,
            shadow,
            policy_version: self.version.clone(),
            throughput: sla.0,
            latency: sla.1,
        })
    }
}

// Building an extension value (`ip(..)`, `datetime(..)`) makes cedar-policy
// parse the function's name anew (its lexer builds a regex cache each time),
// several µs each; values repeat (a client's address, the current second),
// so each thread keeps the last ones.

/// What a thread remembers about a caller and a resource of one snapshot: the
/// decision entities and, per enforced/shadow and action, the candidates.
struct Remembered {
    who: DecisionEntities,
    candidates: [[Option<Rc<Candidates>>; 5]; 2],
}

/// Per-thread decision cache: caller (header form) -> (snapshot serial,
/// resource index) -> what was built. Looked up by `&str`, so a hit allocates
/// nothing; bounded by clearing it whole when full.
#[derive(Default)]
struct DecisionCache {
    callers: FastMap<String, FastMap<(u64, usize), Remembered>>,
    len: usize,
}

impl DecisionCache {
    const CAPACITY: usize = 4096;

    fn clear(&mut self) {
        // Dropping the candidates uncounts their remembered outcomes.
        self.callers.clear();
        self.len = 0;
    }

    fn get(&self, caller: &str, key: (u64, usize)) -> Option<&Remembered> {
        self.callers.get(caller)?.get(&key)
    }

    fn get_mut(&mut self, caller: &str, key: (u64, usize)) -> Option<&mut Remembered> {
        self.callers.get_mut(caller)?.get_mut(&key)
    }

    fn insert(&mut self, caller: &str, key: (u64, usize), who: DecisionEntities) {
        if self.len >= Self::CAPACITY {
            self.clear();
        }
        let entry = Remembered {
            who,
            candidates: Default::default(),
        };
        let per_caller = self.callers.entry(caller.to_string()).or_default();
        if per_caller.insert(key, entry).is_none() {
            self.len += 1;
        }
    }
}

/// Distinguishes snapshots in the per-thread caches.
static SNAPSHOT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Condition outcomes a thread may remember across all its candidates (each
/// at most a few hundred bytes: values longer than `Part::LONGEST_VALUE` are
/// not remembered) before it forgets everything it cached.
const MEMO_LIMIT: usize = 65_536;

impl Drop for Part {
    fn drop(&mut self) {
        forget(self.seen.get_mut().len());
    }
}

/// Counts `n` remembered outcomes fewer.
fn forget(n: usize) {
    // `try_with`: a part may be dropped while the thread's locals are torn down.
    let _ = MEMO_ENTRIES.try_with(|c| c.set(c.get().saturating_sub(n)));
}

/// Counts one more remembered outcome; past `MEMO_LIMIT`, empties the
/// thread's decision cache (the outcomes live in it), so that clients sending
/// ever new purposes cannot grow it without bound.
fn remembered_one_more() {
    let n = MEMO_ENTRIES.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    if n > MEMO_LIMIT {
        DECISIONS.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                c.clear();
            }
        });
    }
}

thread_local! {
    static MEMO_ENTRIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static DECISIONS: std::cell::RefCell<DecisionCache> = std::cell::RefCell::new(DecisionCache::default());
    static TIME_EXPR: std::cell::RefCell<Option<(u64, RestrictedExpression)>> =
        const { std::cell::RefCell::new(None) };
    static IP_EXPRS: std::cell::RefCell<FastMap<IpAddr, RestrictedExpression>> =
        std::cell::RefCell::new(HashMap::default());
}

/// What a request's Cedar context is made of (besides the second), borrowed
/// from the request: hashed and compared without copying.
#[derive(Hash, PartialEq, Eq)]
struct ContextFacts<'a> {
    method: &'a str,
    path: &'a str,
    source_ip: IpAddr,
    tls_version: &'a str,
    purpose: Option<&'a str>,
    user: Option<&'a str>,
}

impl<'a> ContextFacts<'a> {
    fn of(facts: &RequestFacts<'a>) -> Self {
        ContextFacts {
            method: facts.method,
            path: facts.path,
            source_ip: facts.source_ip,
            tls_version: facts.tls_version,
            purpose: facts.purpose,
            user: facts.user.map(|u| u.id.as_str()),
        }
    }
}

/// The same facts, owned: kept with a cached context to confirm a hit.
struct ContextKey {
    method: String,
    path: String,
    source_ip: IpAddr,
    tls_version: String,
    purpose: Option<String>,
    user: Option<String>,
}

impl ContextKey {
    fn new(f: &ContextFacts<'_>) -> Self {
        ContextKey {
            method: f.method.to_string(),
            path: f.path.to_string(),
            source_ip: f.source_ip,
            tls_version: f.tls_version.to_string(),
            purpose: f.purpose.map(str::to_string),
            user: f.user.map(str::to_string),
        }
    }

    fn facts(&self) -> ContextFacts<'_> {
        ContextFacts {
            method: &self.method,
            path: &self.path,
            source_ip: self.source_ip,
            tls_version: &self.tls_version,
            purpose: self.purpose.as_deref(),
            user: self.user.as_deref(),
        }
    }
}

/// Contexts by the hash of their facts, with the facts to confirm a hit.
type ContextCache = FastMap<u64, (ContextKey, Context)>;

thread_local! {
    /// Seeded per thread: clients choose most of what is hashed.
    static CONTEXT_HASHER: foldhash::fast::RandomState = foldhash::fast::RandomState::default();
    /// The contexts of the current second, by the hash of their facts:
    /// requests repeat (same client, same path), and evaluating a context's
    /// expressions costs microseconds. A hash collision replaces the entry.
    static CONTEXTS: std::cell::RefCell<(u64, ContextCache)> =
        std::cell::RefCell::new((0, HashMap::default()));
}

fn cached_context(facts: &RequestFacts<'_>) -> Result<Context, String> {
    let second = policy_second(facts.time);
    let wanted = ContextFacts::of(facts);
    let hash = CONTEXT_HASHER.with(|b| std::hash::BuildHasher::hash_one(b, &wanted));
    let hit = CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            c.0 = second;
            c.1.clear();
        }
        c.1.get(&hash)
            .filter(|(key, _)| key.facts() == wanted)
            .map(|(_, ctx)| ctx.clone())
    });
    if let Some(ctx) = hit {
        return Ok(ctx);
    }
    let ctx = Snapshot::context(facts)?;
    CONTEXTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.1.len() < 1024 || c.1.contains_key(&hash) {
            c.1.insert(hash, (ContextKey::new(&wanted), ctx.clone()));
        }
    });
    Ok(ctx)
}

/// The whole second of `t` since the epoch: policies see the request's
/// time rounded down to the second. Cedar parses the `datetime` extension's
/// name each time such a value is made (several µs), so a finer clock would
/// cost every request that much at low rates, and rebuild the contexts every
/// millisecond at high ones.
fn policy_second(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `context.time`: the request's time, truncated to the second.
fn time_expr(t: SystemTime) -> RestrictedExpression {
    let second = policy_second(t);
    TIME_EXPR.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((at, e)) if *at == second => e.clone(),
            _ => {
                let e = RestrictedExpression::new_datetime(cedar_datetime(
                    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second),
                ));
                *slot = Some((second, e.clone()));
                e
            }
        }
    })
}

fn ip_expr(ip: IpAddr) -> RestrictedExpression {
    IP_EXPRS.with(|cell| {
        let mut map = cell.borrow_mut();
        if let Some(e) = map.get(&ip) {
            return e.clone();
        }
        if map.len() >= 4096 {
            map.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        map.insert(ip, e.clone());
        e
    })
}

/// Cedar's datetime format, UTC with milliseconds.
pub fn cedar_datetime(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::identity::parse_spiffe_id;
    use crate::model::path::normalize;
    use http::Method;

    fn spiffe(id: &str) -> Principal {
        Principal::Spiffe(parse_spiffe_id(id).expect("valid id"))
    }

    fn at(hour: u64) -> SystemTime {
        // 2026-11-20T00:00:00Z plus `hour` hours
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_132_800 + hour * 3600)
    }

    struct Ask<'a> {
        who: &'a str,
        method: Method,
        path: &'a str,
        purpose: Option<&'a str>,
        hour: u64,
    }

    fn ask(s: &Snapshot, a: Ask<'_>) -> Decision {
        let path = normalize(a.path).expect("path");
        let Lookup::Found(target) = s.routes().lookup(&a.method, &path) else {
            panic!("no route for {} {}", a.method, a.path)
        };
        let decoded = path.decoded();
        let facts = RequestFacts {
            method: a.method.as_str(),
            path: &decoded,
            source_ip: "10.1.2.3".parse().expect("ip"),
            purpose: a.purpose,
            tls_version: "TLSv1.3",
            time: at(a.hour),
            user: None,
        };
        let d = s.authorize(&spiffe(a.who), target, &facts);
        let reference = s.authorize_unindexed(&spiffe(a.who), target, &facts);
        assert_eq!(d, reference, "index and plain authorizer disagree");
        d
    }

    fn get<'a>(who: &'a str, path: &'a str) -> Ask<'a> {
        Ask {
            who,
            method: Method::GET,
            path,
            purpose: None,
            hour: 10,
        }
    }

    const REPORTING: &str = "spiffe://mesh.local/ns/finance/sa/reporting";
    const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
    const FRAUD: &str = "spiffe://mesh.local/ns/risk/sa/fraud-scanner";
    const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

    fn example() -> Snapshot {
        Snapshot::build(&crate::devkit::embedded::example_inputs()).expect("example policies load")
    }

    #[test]
    fn example_policies_decide_by_identity() {
        let s = example();
        let d = ask(&s, get(REPORTING, "/orders"));
        assert!(d.allowed);
        assert_eq!(d.policies, vec!["sales.orders.finance-may-read"]);
        let d = ask(&s, get(CAMPAIGNS, "/orders/SO-1"));
        assert!(!d.allowed);
        assert!(d.policies.is_empty() && d.errors.is_empty(), "{d:?}");
        let d = ask(&s, get(CAMPAIGNS, "/orders/_schema"));
        assert_eq!(
            (d.allowed, d.policies),
            (
                true,
                vec!["sales.orders.marketing-may-describe".to_string()]
            )
        );
        let other_td = ask(
            &s,
            get(
                "spiffe://partner.example/ns/finance/sa/reporting",
                "/orders",
            ),
        );
        assert!(!other_td.allowed);
        assert_eq!(other_td.policies, vec!["mesh.foreign-trust-domain"]);
    }

    #[test]
    fn baseline_forbid_beats_a_domain_permit() {
        let s = example();
        let write = |who| Ask {
            who,
            method: Method::POST,
            path: "/ledger/entries",
            purpose: None,
            hour: 10,
        };
        let d = ask(&s, write(SALES_ETL));
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["mesh.write-only-from-owning-domain"]);
        let d = ask(&s, write("spiffe://mesh.local/ns/finance-batch/sa/booker"));
        assert_eq!(
            (d.allowed, d.policies),
            (true, vec!["finance.ledger.finance-may-write".to_string()])
        );
    }

    #[test]
    fn restricted_data_needs_an_allowed_declared_purpose() {
        let s = example();
        let with = |purpose| Ask {
            purpose,
            ..get(FRAUD, "/customers/C-1")
        };
        let d = ask(&s, with(None));
        assert_eq!(
            (d.allowed, d.policies),
            (
                false,
                vec!["mesh.restricted-requires-allowed-purpose".to_string()]
            )
        );
        let d = ask(&s, with(Some("marketing")));
        assert!(!d.allowed);
        let d = ask(&s, with(Some("fraud-investigation")));
        assert_eq!(
            (d.allowed, d.policies),
            (
                true,
                vec!["sales.customers.fraud-investigators-may-read".to_string()]
            )
        );
    }

    #[test]
    fn one_declared_purpose_only() {
        let s = example();
        let path = normalize("/customers/C-1").expect("path");
        let decide = |purposes: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for p in purposes {
                headers.append(
                    X_DATA_PURPOSE,
                    http::HeaderValue::from_str(p).expect("value"),
                );
            }
            s.decide_http(
                &spiffe(FRAUD),
                &HttpFacts {
                    method: &Method::GET,
                    path: &path,
                    headers: &headers,
                    source_ip: "10.1.2.3".parse().expect("ip"),
                    tls_version: "TLSv1.3",
                    time: at(10),
                    user: None,
                },
            )
            .map(|o| o.decision.allowed)
        };
        assert!(matches!(decide(&["fraud-investigation"]), Ok(true)));
        assert!(matches!(decide(&["marketing"]), Ok(false)));
        // Policy would see the first, the upstream both: refused.
        for two in [
            ["fraud-investigation", "marketing"],
            ["fraud-investigation", "fraud-investigation"],
        ] {
            assert!(
                matches!(decide(&two), Err(DecideError::DuplicatePurpose)),
                "{two:?}"
            );
        }
        assert!(matches!(
            decide(&["fraud investigation"]),
            Err(DecideError::InvalidPurpose)
        ));
    }

    #[test]
    fn time_windows_use_the_request_time() {
        let s = example();
        let d = ask(
            &s,
            Ask {
                hour: 10,
                ..get(REPORTING, "/ledger/entries")
            },
        );
        assert_eq!(
            d.policies,
            vec!["finance.ledger.controlling-business-hours"]
        );
        assert!(d.allowed);
        assert!(
            !ask(
                &s,
                Ask {
                    hour: 23,
                    ..get(REPORTING, "/ledger/entries")
                }
            )
            .allowed
        );
        assert!(
            !ask(
                &s,
                Ask {
                    hour: 5,
                    ..get(REPORTING, "/ledger/entries")
                }
            )
            .allowed
        );
    }

    fn with_policy(text: &str) -> Result<Snapshot, LoadErrors> {
        let mut inputs = crate::devkit::embedded::example_inputs();
        inputs.policies.push(Source {
            name: "extra.cedar".into(),
            text: text.into(),
        });
        Snapshot::build(&inputs)
    }

    /// `context.time` is the request's time rounded down to the second: the
    /// contexts and the datetime value are cached per second, and a new
    /// second is never served a cached one.
    #[test]
    fn policies_see_the_time_rounded_down_to_the_second() {
        let s = with_policy(
            "@id(\"t.after\")\nforbid (principal, action, resource)\nwhen { context.time > datetime(\"2026-11-20T10:00:00Z\") };",
        )
        .expect("loads");
        let path = normalize("/orders").expect("path");
        let Lookup::Found(target) = s.routes().lookup(&Method::GET, &path) else {
            panic!("no route for /orders")
        };
        let decoded = path.decoded();
        let decide = |time: SystemTime| {
            let facts = RequestFacts {
                method: "GET",
                path: &decoded,
                source_ip: "10.1.2.3".parse().expect("ip"),
                purpose: None,
                tls_version: "TLSv1.3",
                time,
                user: None,
            };
            s.authorize(&spiffe(REPORTING), target, &facts)
        };
        let ms = std::time::Duration::from_millis;
        let boundary = at(10) + std::time::Duration::from_secs(1);
        // With the clock's own milliseconds this would be denied.
        assert!(
            decide(boundary - ms(1)).allowed,
            "10:00:00.999 is seen as 10:00:00"
        );
        let d = decide(boundary);
        assert!(!d.allowed);
        assert_eq!(d.policies, ["t.after"]);
        assert!(!decide(boundary + ms(999)).allowed);
        assert!(
            decide(boundary - ms(500)).allowed,
            "an earlier second again"
        );
        assert!(!decide(boundary + ms(1)).allowed);
    }

    #[test]
    fn thousands_of_template_linked_grants_decide_like_policies() {
        let mut inputs = crate::devkit::embedded::example_inputs();
        let links: Vec<serde_json::Value> = (0..3000)
            .map(|n| {
                serde_json::json!({
                    "template_id": "sales.grant.read",
                    "link_id": format!("grant.{n}"),
                    "args": {
                        "?principal": format!("Mesh::Service::\"spiffe://mesh.local/ns/partners/sa/p{n}\""),
                        "?resource": if n % 2 == 0 { "Mesh::DataProduct::\"sales.orders\"" } else { "Mesh::DataProduct::\"sales.customers\"" },
                    }
                })
            })
            .collect();
        inputs.policies.push(Source {
            name: "many.links.json".into(),
            text: serde_json::Value::Array(links).to_string(),
        });
        let s = Snapshot::build(&inputs).expect("grants load");
        assert!(s.policy_count > 3000);
        let d = ask(
            &s,
            get("spiffe://mesh.local/ns/partners/sa/p1234", "/orders/SO-1"),
        );
        assert_eq!(
            (d.allowed, d.policies),
            (true, vec!["grant.1234".to_string()])
        );
        // p1235's grant is on customers (restricted: the baseline still wants a purpose).
        let d = ask(
            &s,
            get("spiffe://mesh.local/ns/partners/sa/p1235", "/orders/SO-1"),
        );
        assert!(!d.allowed);
        let d = ask(
            &s,
            get("spiffe://mesh.local/ns/partners/sa/p1235", "/customers/C-1"),
        );
        assert_eq!(d.policies, vec!["mesh.restricted-requires-allowed-purpose"]);
    }

    #[test]
    fn bad_links_are_reported_with_their_file_and_entry() {
        let mut inputs = crate::devkit::embedded::example_inputs();
        inputs.policies.push(Source {
            name: "bad.links.json".into(),
            text: r#"[{"template_id": "no.such.template", "link_id": "x", "args": {"?principal": "Mesh::Service::\"a\"", "?resource": "Mesh::DataProduct::\"sales.orders\""}}]"#.into(),
        });
        let e = Snapshot::build(&inputs).unwrap_err();
        assert!(e.0[0].starts_with("bad.links.json: [0] `x`: "), "{e}");
    }

    #[test]
    fn load_errors_carry_file_line_and_column() {
        let e = with_policy("\n\n@id(\"x\")\npermit (principal, action, resource) when { nope };")
            .unwrap_err();
        assert!(e.0[0].starts_with("extra.cedar:4:"), "{e}");
        let e = with_policy("permit (principal, action, resource);").unwrap_err();
        assert_eq!(
            e.0,
            vec!["extra.cedar:1:1: policy has no @id(\"…\") annotation"]
        );
        let e = with_policy(
            "\n@id(\"mesh.foreign-trust-domain\")\npermit (principal, action, resource);",
        )
        .unwrap_err();
        assert!(e.0[0].starts_with("extra.cedar:2:1: @id(\"mesh.foreign-trust-domain\") is already used in policies/mesh/baseline.cedar"), "{e}");
        let e = with_policy("@id(\"bad-attr\")\npermit (principal, action, resource)\nwhen { resource.colour == \"red\" };").unwrap_err();
        assert!(e.0[0].starts_with("extra.cedar:3:"), "{e}");
        assert!(e.0[0].contains("colour"), "{e}");
        let e = with_policy(
            "@id(\"bad-type\")\npermit (principal == Mesh::Robot::\"r\", action, resource);",
        )
        .unwrap_err();
        assert!(e.0[0].starts_with("extra.cedar:2:"), "{e}");
    }

    #[test]
    fn a_large_set_validated_in_halves_reports_every_error() {
        let mut inputs = crate::devkit::synth::inputs(20, SPLIT_VALIDATION_AT + 500, 5);
        let whole = Snapshot::build(&inputs).expect("synthetic set loads");
        let (first, second) = split_for_validation(&whole.all);
        let (first, second) = (first.expect("split"), second.expect("split"));
        assert_eq!(
            first.policies().count() + second.policies().count(),
            whole.all.policies().count()
        );
        for (i, attr) in ["colour", "flavour", "texture"].iter().enumerate() {
            inputs.policies.push(Source {
                name: format!("bad{i}.cedar"),
                text: format!(
                    "@id(\"bad.{i}\")\npermit (principal, action, resource)\nwhen {{ resource.{attr} == \"x\" }};"
                ),
            });
        }
        let e = Snapshot::build(&inputs).expect_err("three invalid policies");
        for (i, attr) in ["colour", "flavour", "texture"].iter().enumerate() {
            assert!(
                e.0.iter()
                    .any(|m| m.starts_with(&format!("bad{i}.cedar:3:")) && m.contains(attr)),
                "{e}"
            );
        }
    }

    #[test]
    fn candidate_index_agrees_with_the_plain_authorizer_on_random_requests() {
        use crate::devkit::synth::{self, Rng};
        // Policies that fail at run time (overflow), with and without reading
        // the context, some only for one purpose: errors must be reported
        // like Cedar reports them, each under its own policy.
        let failing = r#"
@id("err.ctx")
permit (principal, action, resource in Mesh::DataProduct::"p1")
when { context.time.offset(duration("9223372036854775807ms")) > context.time };
@id("err.purpose")
forbid (principal, action, resource in Mesh::DataProduct::"p2")
when { context has purpose && context.purpose == "audit" && 9223372036854775807 + 1 > 0 };
@id("err.same-condition")
permit (principal, action, resource in Mesh::DataProduct::"p2")
when { context has purpose && context.purpose == "audit" && 9223372036854775807 + 1 > 0 };
@id("err.principal")
forbid (principal, action == Mesh::Action::"read", resource in Mesh::DataProduct::"p3")
when { principal has namespace && principal.namespace == "sales" && 9223372036854775807 + 1 > 0 };
"#;
        for (products, policies, seed) in [(20, 300, 7), (50, 1000, 11)] {
            let mut inputs = synth::inputs(products, policies, seed);
            inputs.policies.push(Source {
                name: "synth/failing.cedar".into(),
                text: failing.into(),
            });
            let s = Snapshot::build(&inputs).expect("synthetic set loads");
            let mut rng = Rng::new(seed * 31);
            let paths = ["rows", "rows/k1", "query", "meta", "feed", "audit"];
            let (mut allowed, mut total, mut failed) = (0, 0, HashSet::new());
            for _ in 0..3000 {
                let p = rng.below(products);
                let sub = *rng.pick(&paths);
                let method = match sub {
                    "query" => Method::POST,
                    "rows" if rng.below(3) == 0 => Method::POST,
                    _ => Method::GET,
                };
                let path = format!("/p{p}/{sub}");
                let ns = *rng.pick(&synth::DOMAINS);
                let who = format!("spiffe://mesh.local/ns/{ns}/sa/app");
                let purpose = (rng.below(2) == 0).then(|| *rng.pick(&synth::PURPOSES));
                let d = ask(
                    &s,
                    Ask {
                        who: &who,
                        method,
                        path: &path,
                        purpose,
                        // Half at one hour, so that requests repeat and
                        // remembered outcomes are reused (and must agree).
                        hour: if rng.below(2) == 0 {
                            rng.below(24) as u64
                        } else {
                            9
                        },
                    },
                );
                total += 1;
                allowed += usize::from(d.allowed);
                for e in &d.errors {
                    if let Some(id) = [
                        "err.ctx",
                        "err.purpose",
                        "err.same-condition",
                        "err.principal",
                    ]
                    .into_iter()
                    .find(|id| e.contains(id))
                    {
                        failed.insert(id);
                    }
                }
            }
            // The generator must exercise both outcomes for the comparison to mean anything.
            assert!(
                allowed > total / 20 && allowed < total * 19 / 20,
                "{allowed}/{total} allowed"
            );
            assert_eq!(failed.len(), 4, "errors seen: {failed:?}");
        }
    }

    #[test]
    fn policy_text_is_cut_only_at_statement_ends() {
        let text = concat!(
            "@id(\"a;b\") permit (principal, action, resource) when { context.path == \"/x;\\\";y\" };\n",
            "// forbid; (comment)\n",
            "@id(\"c\") permit (principal, action, resource);\n",
            "@id(\"d\") permit (principal, action, resource);\n",
        );
        let first = text.find("};").expect("first end") + 2;
        let second = text.find("resource);").expect("second end") + "resource);".len();
        // Four parts asked: only real statement ends, in order, qualify.
        let cuts = statement_cuts(text, 4);
        assert!(!cuts.is_empty());
        assert!(
            cuts.iter()
                .all(|c| [first, second, text.len() - 1].contains(c)),
            "{cuts:?}"
        );
        assert!(cuts.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            statement_cuts("permit (principal, action, resource)", 2),
            Vec::<usize>::new()
        );
        // A comment ends at a bare CR too, as in Cedar's lexer: otherwise the
        // string below would look open, its end would be looked for in the
        // comment after it, and the `;` there taken for a statement end.
        let tricky = "// c\r@id(\"a\") permit (principal, action, resource) when { context.path == \"x\ny\" };\n// \" ; @id(\"evil\") permit (principal, action, resource);\n";
        let end = tricky.find("};").expect("end") + 2;
        for parts in 2..5 {
            let cuts = statement_cuts(tricky, parts);
            assert!(cuts.iter().all(|&c| c == end), "{cuts:?}");
        }
        assert_eq!(
            PolicySet::from_str(tricky)
                .expect("parses")
                .policies()
                .count(),
            1
        );
    }

    #[test]
    fn a_large_policy_file_parses_in_parts_like_the_whole() {
        let mut rng = crate::devkit::synth::Rng::new(5);
        let text = crate::devkit::synth::policies(4000, 50, &mut rng);
        assert!(
            text.len() > 2 * PARSE_PART,
            "the text must be long enough to cut"
        );
        let ids = |sets: &[PolicySet]| {
            let mut ids: Vec<String> = sets
                .iter()
                .flat_map(PolicySet::policies)
                .filter_map(|p| p.annotation("id").map(str::to_owned))
                .collect();
            ids.sort();
            ids
        };
        let parts = parse_in_parts(&text, true).expect("parses");
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(parts.len() > 1, "parsed in one part");
        }
        let whole = PolicySet::from_str(&text).expect("parses");
        assert_eq!(ids(&parts), ids(&[whole]));
        assert_eq!(ids(&parts).len(), 4000);
        // An error late in the text is reported as for the whole file.
        let broken =
            format!("{text}\n@id(\"bad\") permit (principal, action, resource) when {{ 1 + }};\n");
        let src = Source {
            name: "big.cedar".into(),
            text: broken.clone(),
        };
        let mut errors = Vec::new();
        parse_policies(&[src], true, &mut errors);
        let line = broken.lines().count();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("big.cedar:{line}:")),
            "{}",
            errors[0]
        );

        // A validation error late in a large file: located in the whole file.
        let mut inputs = crate::devkit::synth::inputs(50, 4000, 5);
        let big = &mut inputs.policies[0];
        assert!(big.text.len() > 2 * PARSE_PART);
        big.text.push_str("\n@id(\"bad.type\")\npermit (principal, action, resource)\nwhen { context.method == 1 };\n");
        let line = big.text.lines().count();
        let name = big.name.clone();
        let errors = Snapshot::build(&inputs).expect_err("a type error").0;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{name}:{line}:")) && e.contains("bad.type")),
            "expected an error at {name}:{line}: {errors:?}"
        );
    }

    #[test]
    fn conditions_are_remembered_only_by_few_valued_context_attributes() {
        let reads = |cond: &str| {
            let text =
                format!("@id(\"t\") permit (principal, action, resource) when {{ {cond} }};");
            let p = Policy::from_str(&text).expect("policy");
            Specialized::of(&p).expect("specialised").reads
        };
        assert_eq!(
            reads(r#"context has purpose && context.purpose == "audit""#),
            Some(READS_PURPOSE)
        );
        assert_eq!(
            reads(r#"context.method == "GET" && context.time.toTime() >= duration("9h")"#),
            Some(READS_METHOD | READS_TIME)
        );
        assert_eq!(
            reads(r#"context.tls.version == "TLSv1.3" && !context.has_user"#),
            Some(READS_TLS | READS_HAS_USER)
        );
        assert_eq!(
            reads(r#"principal.namespace == "sales" && context.method == "GET""#),
            Some(READS_METHOD)
        );
        // Many-valued, or not an attribute: decided on every request.
        assert_eq!(reads(r#"context.path like "/orders/*""#), None);
        assert_eq!(reads(r#"context.source_ip.isLoopback()"#), None);
        assert_eq!(
            reads(r#"context has user && context.user in Mesh::Group::"x""#),
            None
        );
        assert_eq!(reads(r#"context == { method: "GET" }"#), None);
        assert_eq!(
            reads(r#"context.method == "GET" || context has path"#),
            None
        );
    }

    #[test]
    fn on_behalf_of_needs_the_service_and_a_user_in_the_group() {
        let s = example();
        let user = |groups: &[&str]| crate::decision::jwt::User {
            id: "https://idp.mesh.local|alice".into(),
            issuer: "https://idp.mesh.local".into(),
            subject: "alice".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            scopes: vec!["ledger:read".into()],
            attributes: vec![],
            expires_at: u64::MAX,
        };
        let decide = |who: &str, u: Option<&crate::decision::jwt::User>| {
            let path = normalize("/ledger/summary").expect("path");
            let Lookup::Found(target) = s.routes().lookup(&Method::GET, &path) else {
                panic!("routed")
            };
            let decoded = path.decoded();
            let facts = RequestFacts {
                method: "GET",
                path: &decoded,
                source_ip: "10.1.2.3".parse().expect("ip"),
                purpose: None,
                tls_version: "TLSv1.3",
                time: at(10),
                user: u,
            };
            let d = s.authorize(&spiffe(who), target, &facts);
            assert_eq!(d, s.authorize_unindexed(&spiffe(who), target, &facts));
            d
        };
        let dashboard = "spiffe://mesh.local/ns/reporting/sa/dashboard";
        let analyst = user(&["finance-analysts"]);
        let d = decide(dashboard, Some(&analyst));
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.policies, vec!["finance.ledger.dashboard-for-analysts"]);
        // Not in the group, no user, or another service with the analyst's token.
        assert!(!decide(dashboard, Some(&user(&["marketing"]))).allowed);
        assert!(!decide(dashboard, None).allowed);
        assert!(
            !decide(
                "spiffe://mesh.local/ns/marketing/sa/campaigns",
                Some(&analyst)
            )
            .allowed
        );
        // Static group hierarchy applies to token groups: finance-analysts is in finance-staff.
        let e = s.user_entity(&analyst).expect("user entity");
        let staff = uid(&type_name("Group"), "finance-staff");
        let ents = Entities::from_entities([e], None).expect("entities");
        let ancestors: Vec<_> = ents
            .ancestors(&uid(&type_name("User"), &analyst.id))
            .expect("user present")
            .cloned()
            .collect();
        assert!(ancestors.contains(&staff), "{ancestors:?}");
    }
}
