//! Building a snapshot: policies parsed (in pieces of whole statements,
//! large files on every CPU; `parse.rs`), grants linked, the whole
//! validated in strict mode, then assembled.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema,
    ValidationMode, Validator,
};
use serde::Deserialize;

use crate::base::locate::{locate_json, Step};
use crate::decision::contract::{self, Action, Product};
use crate::decision::finding::{first_reported, Finding};

use super::catalogue::Catalogue;
use super::claims;
use super::parse::parse_in_pieces;
use super::*;

/// Policies and templates parsed from sources: the set, named by `@id`;
/// the source each id comes from (`origin`: its index) and the offset in
/// that source of the piece it was parsed from (`at`: Cedar's positions in
/// it are relative to the piece, see `parse.rs`).
pub(super) struct Parsed {
    pub(super) set: PolicySet,
    pub(super) origin: HashMap<String, usize>,
    pub(super) at: HashMap<String, usize>,
}

/// Finds where policies and links are written in their files: each text
/// looked for from the piece its id was parsed from (not from the file's
/// start: 16,000 warnings in one file took 10 s), each file's lines found
/// once.
pub(super) struct Locator<'a> {
    parsed: &'a Parsed,
    sources: &'a [Source],
    lines: HashMap<usize, Lines>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(parsed: &'a Parsed, sources: &'a [Source]) -> Locator<'a> {
        Locator {
            parsed,
            sources,
            lines: HashMap::new(),
        }
    }

    /// `line:col` of `needle` (a policy's or template's own text, or a
    /// link's quoted id) in the source of `id`.
    pub(super) fn locate(&mut self, id: &str, needle: &str) -> Option<(usize, usize)> {
        let i = *self.parsed.origin.get(id)?;
        let text = &self.sources.get(i)?.text;
        let from = self.parsed.at.get(id).copied().unwrap_or(0);
        let offset = match text.get(from..).and_then(|rest| rest.find(needle)) {
            Some(o) => from + o,
            None => text.find(needle)?,
        };
        let lines = self.lines.entry(i).or_insert_with(|| Lines::of(text));
        Some(lines.position(offset))
    }
}

/// Parses policy sources into one set named by `@id`, collecting every error.
pub(super) fn parse_policies(sources: &[Source], errors: &mut Vec<String>) -> Parsed {
    let mut set = PolicySet::new();
    // @id -> index of the source that defines it
    let mut origin: HashMap<String, usize> = HashMap::new();
    // @id -> offset of its piece in that source
    let mut at: HashMap<String, usize> = HashMap::new();
    // Policies and templates first, then the links that instantiate them.
    for (i, src) in sources.iter().enumerate() {
        if src.name.ends_with(LINKS) {
            continue;
        }
        // Before Cedar reads it: a policy too deep for the stacks it is
        // handled on is refused (see `depth.rs`).
        let too_deep = super::depth::check(&src.name, &src.text);
        if !too_deep.is_empty() {
            errors.extend(too_deep);
            continue;
        }
        let parsed = match parse_in_pieces(&src.text) {
            Ok(p) => p,
            Err(errs) => {
                let lines = Lines::of(&src.text);
                errors.extend(errs.iter().map(|e| diag_at(&src.name, &lines, 0, e)));
                continue;
            }
        };
        // Cedar keeps each policy's own text: find it to report a position
        // (only for errors). Policies come in file order: each is looked
        // for after the last one found, not from the file's start.
        let lines = std::cell::OnceCell::new();
        let from = std::cell::Cell::new(0);
        let at_of = |text: String| {
            let after = src.text.get(from.get()..).and_then(|rest| rest.find(&text));
            let offset = match after {
                Some(o) => Some(from.get() + o),
                None => src.text.find(&text),
            };
            offset.map_or((1, 1), |o| {
                from.set(o + text.len());
                lines.get_or_init(|| Lines::of(&src.text)).position(o)
            })
        };
        let templates = parsed
            .iter()
            .flat_map(|p| p.set.templates().map(|t| (p.at, t)));
        for (piece, t) in templates {
            let added =
                claim_id(t.annotation("id"), "template", &origin, sources, &set).and_then(|id| {
                    set.add_template(t.new_id(PolicyId::new(&id)))
                        .map(|()| id)
                        .map_err(|e| e.to_string())
                });
            if let Ok(id) = &added {
                at.insert(id.clone(), piece);
            }
            settle(
                added,
                i,
                &src.name,
                || at_of(t.to_string()),
                &mut origin,
                errors,
            );
        }
        // Templates first, then policies: each in file order.
        from.set(0);
        let policies = parsed
            .iter()
            .flat_map(|p| p.set.policies().map(|q| (p.at, q)));
        for (piece, p) in policies {
            let added =
                claim_id(p.annotation("id"), "policy", &origin, sources, &set).and_then(|id| {
                    set.add(p.new_id(PolicyId::new(&id)))
                        .map(|()| id)
                        .map_err(|e| e.to_string())
                });
            if let Ok(id) = &added {
                at.insert(id.clone(), piece);
            }
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
            link_grants(&mut set, &mut origin, sources, i, errors);
        }
    }
    Parsed { set, origin, at }
}

/// Records a policy's or template's `@id` as defined in source `i`, or the
/// reason it was not added, at its position.
pub(super) fn settle(
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

/// The `@id` a policy or template is known by: present, and not taken yet
/// (a duplicate names where the first one is, `file:line:col`).
pub(super) fn claim_id(
    annotation: Option<&str>,
    what: &str,
    origin: &HashMap<String, usize>,
    sources: &[Source],
    set: &PolicySet,
) -> Result<String, String> {
    let id = match annotation {
        Some(id) if !id.trim().is_empty() => id.to_string(),
        _ => return Err(format!("{what} has no @id(\"…\") annotation")),
    };
    match origin.get(&id) {
        Some(&j) => {
            let first = &sources[j];
            // Cedar keeps a parsed policy's text: it is found in its file.
            let pid = PolicyId::new(&id);
            let text = set
                .policy(&pid)
                .map(ToString::to_string)
                .or_else(|| set.template(&pid).map(ToString::to_string));
            let at = text
                .and_then(|t| first.text.find(&t))
                .map(|o| position(&first.text, o));
            Err(match at {
                Some((l, c)) => format!("@id(\"{id}\") is already used in {}:{l}:{c}", first.name),
                None => format!("@id(\"{id}\") is already used in {}", first.name),
            })
        }
        None => Ok(id),
    }
}

/// Template-link files: Cedar's template-links JSON (what `cedar -k` reads).
pub const LINKS: &str = ".links.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Link {
    pub(super) template_id: String,
    pub(super) link_id: String,
    pub(super) args: HashMap<String, String>,
}

/// Instantiates the templates of `set` with the grants in links file
/// `sources[i]`. A grant links a template of its own authority: a domain's
/// grant its domain's templates or the mesh baseline's, a baseline grant the
/// baseline's only. A template of another authority could be changed by its
/// owner into a `forbid`, or widened, on products that are not its owner's.
pub(super) fn link_grants(
    set: &mut PolicySet,
    origin: &mut HashMap<String, usize>,
    sources: &[Source],
    i: usize,
    errors: &mut Vec<String>,
) {
    let src = &sources[i];
    let links: Vec<Link> = match serde_json::from_str(&src.text) {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("{}:{}:{}: {e}", src.name, e.line(), e.column()));
            return;
        }
    };
    for (n, link) in links.into_iter().enumerate() {
        // `file:line:col` of a key of this grant.
        let place = |k: &str| {
            let path = [Step::Index(n), Step::Key(k.to_string())];
            match locate_json(&src.text, &path) {
                Some((l, c)) => format!("{}:{l}:{c}", src.name),
                None => src.name.clone(),
            }
        };
        let at = format!("{}: [{n}] `{}`", place("link_id"), link.link_id);
        if let Some(why) = foreign_template(set, origin, sources, src, &link.template_id) {
            let whose = match &src.domain {
                Some(d) => format!("of domain `{d}`"),
                None => "of the mesh baseline".to_string(),
            };
            errors.push(format!(
                "{}: [{n}].template_id: grant `{}` {whose} is refused: {why}",
                place("template_id"),
                link.link_id
            ));
            continue;
        }
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
                Err(e) => errors.push(format!("{at}: {slot}: {}", with_causes(&e))),
            }
        }
        if let Err(e) = set.link(
            PolicyId::new(&link.template_id),
            PolicyId::new(&link.link_id),
            env,
        ) {
            errors.push(format!("{at}: {}", with_causes(&e)));
            continue;
        }
        origin.insert(link.link_id, i);
    }
}

/// Why a grant in `src` may not link template `template_id`: it is of
/// another authority than the grant's. `None` when it may, or when there
/// is no such template (linking says so).
fn foreign_template(
    set: &PolicySet,
    origin: &HashMap<String, usize>,
    sources: &[Source],
    src: &Source,
    template_id: &str,
) -> Option<String> {
    let tid = PolicyId::new(template_id);
    let template = set.template(&tid)?;
    let owner = &sources[*origin.get(template_id)?];
    let Some(theirs) = owner.domain.as_deref() else {
        // The baseline's templates are every domain's to link.
        return None;
    };
    if src.domain.as_deref() == Some(theirs) {
        return None;
    }
    let defined = owner
        .text
        .find(&template.to_string())
        .map(|o| position(&owner.text, o))
        .map_or_else(
            || owner.name.clone(),
            |(l, c)| format!("{}:{l}:{c}", owner.name),
        );
    Some(match &src.domain {
        Some(_) => format!(
            "`{template_id}` is a template of domain `{theirs}` ({defined}); a domain's grants may link only its own templates or the mesh baseline's (another domain could turn the grant into a forbid, or widen it)"
        ),
        None => format!(
            "`{template_id}` is a template of domain `{theirs}` ({defined}); the mesh baseline's grants may link only the baseline's templates (the domain could turn the grant into a forbid, or widen it, on any product)"
        ),
    })
}

/// An error with the errors that caused it: `unable to link template:
/// failed to find a template with id `x``.
pub(super) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Static policies at or above which validation is split in two.
pub(super) const SPLIT_VALIDATION_AT: usize = 2000;

/// Two sets that together hold every policy of `all`, to validate in
/// parallel: (`all` without the second half of its static policies, that
/// half). `(None, None)`: small enough to validate whole.
pub(super) fn split_for_validation(all: &PolicySet) -> (Option<PolicySet>, Option<PolicySet>) {
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

pub(super) fn validate(
    schema: &Schema,
    set: &PolicySet,
    sources: &[Source],
    parsed: &Parsed,
    errors: &mut Vec<String>,
) {
    let result = Validator::new(schema.clone()).validate(set, ValidationMode::Strict);
    // Each erring file's lines, found once.
    let mut lines: HashMap<usize, Lines> = HashMap::new();
    // In file order (Cedar's come in a hash set's), so that the errors a
    // load reports are the first ones (`LoadErrors::capped`).
    let mut found = Vec::new();
    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        match parsed.origin.get(id.as_str()) {
            Some(&i) => {
                let s = &sources[i];
                let lines = lines.entry(i).or_insert_with(|| Lines::of(&s.text));
                let piece = parsed.at.get(id.as_str()).copied().unwrap_or(0);
                let offset = miette::Diagnostic::labels(e)
                    .and_then(|mut l| l.next())
                    .map_or(0, |l| l.offset());
                found.push(((i, piece + offset), diag_at(&s.name, lines, piece, e)));
            }
            None => found.push(((usize::MAX, 0), format!("policy {}: {e}", e.policy_id()))),
        }
    }
    found.sort_by_key(|(at, _)| *at);
    errors.extend(found.into_iter().map(|(_, e)| e));
    let mut cedar_warnings = result.validation_warnings();
    for w in cedar_warnings.by_ref().take(REPORTED) {
        tracing::warn!(warning = %w, "policy validation warning");
    }
    let more = cedar_warnings.count();
    if more > 0 {
        tracing::warn!(more, "more policy validation warnings not shown");
    }
}

impl Snapshot {
    /// Builds and validates a complete snapshot, or reports every error
    /// found; on threads with `depth::BUILD_STACK`, whichever thread calls it.
    pub fn build(inputs: &PolicyInputs) -> Result<Snapshot, LoadErrors> {
        on_build_thread(|| Self::build_here(inputs))
    }

    fn build_here(inputs: &PolicyInputs) -> Result<Snapshot, LoadErrors> {
        let mut errors = Vec::new();
        let schema = read_schema(&inputs.schema)?;

        // The products, routes and entities do not depend on the policies:
        // they are built while the policies are parsed.
        let (enforced, shadow, parts) = std::thread::scope(|scope| {
            let parts = spawn_build(scope, || Self::assemble(inputs, &schema));
            let enforced = parse_policies(&inputs.policies, &mut errors);
            let shadow = if inputs.shadow.is_empty() {
                None
            } else {
                Some(parse_policies(&inputs.shadow, &mut errors))
            };
            let parts = joined(parts, "building the products")
                .unwrap_or_else(|e| Err(LoadErrors::all(vec![e])));
            (enforced, shadow, parts)
        });
        let all = &enforced.set;
        // A domain's sources speak only about the domain's own resources.
        if let Ok(p) = &parts {
            super::authority::check(&enforced, &inputs.policies, &p.products, &mut errors);
            if let Some(s) = &shadow {
                super::authority::check(s, &inputs.shadow, &p.products, &mut errors);
            }
        }
        // Strict validation runs beside the candidate index (both are CPU
        // work; a reload of 10,000 policies should take well under a second).
        // A large set is validated in two halves on two threads (policies
        // validate independently), so a 2-core sidecar uses both cores.
        let (first, second) = split_for_validation(all);
        let (schema_ref, enforced_ref) = (&schema, &enforced);
        let (validation, indexes) = std::thread::scope(|scope| {
            let halves = second.map(|second| {
                spawn_build(scope, move || {
                    let mut errors = Vec::new();
                    validate(
                        schema_ref,
                        &second,
                        &inputs.policies,
                        enforced_ref,
                        &mut errors,
                    );
                    errors
                })
            });
            let validation = spawn_build(scope, || {
                let mut errors = Vec::new();
                validate(
                    &schema,
                    first.as_ref().unwrap_or(all),
                    &inputs.policies,
                    &enforced,
                    &mut errors,
                );
                if let Some(s) = &shadow {
                    validate(&schema, &s.set, &inputs.shadow, s, &mut errors);
                }
                errors
            });
            let indexes = match &parts {
                Ok(p) if errors.is_empty() => {
                    let index_of =
                        |set: &PolicySet| Index::build(set, &p.registry, &p.types, &p.action_uids);
                    Some((index_of(all), shadow.as_ref().map(|s| index_of(&s.set))))
                }
                _ => None,
            };
            let failed = |e| vec![e];
            let mut validation = joined(validation, "policy validation").unwrap_or_else(failed);
            if let Some(h) = halves {
                validation.extend(joined(h, "policy validation").unwrap_or_else(failed));
            }
            (validation, indexes)
        });
        // Parse, authority and input errors first (often the cause of the
        // rest), then the validator's: the cap keeps the first.
        let mut all_errors = errors;
        let (parts, (index, shadow_index)) = match (parts, indexes) {
            (Ok(p), Some(indexes)) if all_errors.is_empty() && validation.is_empty() => {
                (p, indexes)
            }
            (Ok(_), _) => {
                all_errors.extend(validation);
                return Err(LoadErrors::capped(all_errors));
            }
            (Err(more), _) => {
                all_errors.extend(more.shown);
                all_errors.extend(validation);
                return Err(LoadErrors::capped(all_errors).summarising(more.summarised));
            }
        };
        let mut warnings = parts.warnings;
        // One per policy at most: reported like errors, the first ones only.
        let undeclared = parts.declared.in_policies(&enforced, &inputs.policies);
        warnings.extend(first_reported(undeclared, "policy", "warning", REPORTED));
        Ok(Snapshot {
            warnings,
            serial: SNAPSHOT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            version: Arc::from(inputs.version()),
            loaded_at: SystemTime::now(),
            schema,
            enforced: IndexedPolicies::new(enforced.set, index, ENFORCED),
            shadow: (shadow.map(|s| s.set).zip(shadow_index))
                .map(|(set, index)| IndexedPolicies::new(set, index, SHADOW)),
            products: parts.products,
            routes: parts.routes,
            described: parts.described,
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
    pub(super) fn assemble(inputs: &PolicyInputs, schema: &Schema) -> Result<Parts, LoadErrors> {
        let Read {
            entities: static_entities,
            products,
            warnings,
        } = read_entities_and_contracts(inputs, schema)?;
        let types = MeshTypes::new();
        let action_t = type_name("Action");
        let action_uids = Action::ALL.map(|a| uid(&action_t, a.as_str()));
        let parents = StaticParents::of(&static_entities, &types);
        let declared =
            declared::Declared::of(&static_entities, inputs.entities.is_some(), &products);

        // Product and dataset entities, validated against the schema together.
        let mut errors = Vec::new();
        // Each contract as committed: to locate what is wrong in it, and
        // for the well-known documents.
        let texts: HashMap<&str, &str> = inputs
            .contracts
            .iter()
            .map(|s| (s.name.as_str(), s.text.as_str()))
            .collect();
        let mut catalogue = Catalogue::default();
        for p in products {
            let text = texts.get(p.file.as_str()).copied().unwrap_or("");
            catalogue.add(p, text, &static_entities, &types, &mut errors);
        }
        let mut warnings = warnings;
        warnings.extend(catalogue.unrouted_successors(&texts));
        warnings.extend(super::catalogue::unprotected_in_a_version(
            &catalogue.entries,
            &texts,
        ));
        // The constructed entities must conform to the schema like any other.
        let mut check = catalogue.entities;
        check.extend(static_entities.iter().cloned());
        if let Err(e) = Entities::from_entities(check, Some(schema)) {
            errors.push(format!(
                "contracts: entities built from the contracts do not match the schema: {e}"
            ));
        }
        let described = Described::new(catalogue.entries.iter().map(|e| {
            let text = texts.get(e.product.file.as_str()).copied().unwrap_or("");
            (&e.product, bytes::Bytes::copy_from_slice(text.as_bytes()))
        }))
        .unwrap_or_else(|more| {
            errors.extend(more);
            Described::default()
        });
        if !errors.is_empty() {
            return Err(LoadErrors::all(errors));
        }

        Ok(Parts {
            declared,
            warnings,
            registry: catalogue.registry,
            types: [types.product, types.dataset, types.field],
            products: catalogue.entries,
            routes: catalogue.routes,
            service_parents: parents.service,
            namespace_parents: parents.namespace,
            group_parents: parents.group,
            action_uids,
            service_type: types.service,
            described,
        })
    }
}

/// What entities.json and the contracts hold: the static entities, the
/// products, and the warnings found on the way.
pub(super) struct Read {
    pub(super) entities: Entities,
    pub(super) products: Vec<Product>,
    pub(super) warnings: Vec<Finding>,
}

/// The Cedar schema (its warnings logged), or its error.
fn read_schema(src: &Source) -> Result<Schema, LoadErrors> {
    match Schema::from_cedarschema_str(&src.text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                tracing::warn!(file = %src.name, warning = %w, "schema warning");
            }
            Ok(schema)
        }
        Err(e) => Err(LoadErrors::all(vec![diag(&src.name, &src.text, &e)])),
    }
}

/// The static entities (entities.json) and the parsed contracts, or every
/// error found in them.
fn read_entities_and_contracts(inputs: &PolicyInputs, schema: &Schema) -> Result<Read, LoadErrors> {
    let mut errors = Vec::new();
    // What the contracts' capped lists of errors did not show.
    let mut summarised = 0;
    let static_entities = match &inputs.entities {
        None => Entities::empty(),
        Some(src) => match Entities::from_json_str(&src.text, Some(schema)) {
            Ok(e) => e,
            Err(e) => {
                errors.extend(declared::entity_errors(src, schema, &e));
                Entities::empty()
            }
        },
    };
    let mut products = Vec::new();
    let mut warnings = Vec::new();
    for src in &inputs.contracts {
        match contract::read(&src.text, &src.name) {
            Ok(c) => {
                // A domain's source holds only the domain's contracts.
                if let Some(e) = claims::foreign_contract(src, &c.product) {
                    errors.push(e);
                    continue;
                }
                warnings.extend(c.warnings);
                if inputs.entities.is_some() && errors.is_empty() {
                    warnings.extend(declared::contract_domain(
                        &c.product,
                        &src.text,
                        &static_entities,
                    ));
                }
                products.push((src, c.product));
            }
            Err(e) => {
                summarised +=
                    e.0.iter()
                        .map(|f| f.stands_for.saturating_sub(1))
                        .sum::<usize>();
                errors.extend(e.0.iter().map(ToString::to_string));
            }
        }
    }
    // Nor ids in another domain's namespace.
    let known = claims::known_domains(inputs, &products, &static_entities);
    claims::squatted(&products, &known, &mut errors);
    let products = products.into_iter().map(|(_, p)| p).collect();
    if errors.is_empty() {
        Ok(Read {
            entities: static_entities,
            products,
            warnings,
        })
    } else {
        Err(LoadErrors::all(errors).summarising(summarised))
    }
}

/// The entity types a snapshot makes entities of.
pub(super) struct MeshTypes {
    pub(super) domain: EntityTypeName,
    pub(super) product: EntityTypeName,
    pub(super) dataset: EntityTypeName,
    pub(super) field: EntityTypeName,
    service: EntityTypeName,
    group: EntityTypeName,
}

impl MeshTypes {
    fn new() -> MeshTypes {
        MeshTypes {
            domain: type_name("Domain"),
            product: type_name("DataProduct"),
            dataset: type_name("Dataset"),
            field: type_name("Field"),
            service: type_name("Service"),
            group: type_name("Group"),
        }
    }
}

/// The static ancestors of `u` in `entities`.
fn ancestors_in(entities: &Entities, u: &EntityUid) -> HashSet<EntityUid> {
    entities
        .ancestors(u)
        .map(|it| it.cloned().collect())
        .unwrap_or_default()
}

/// `u` and its static ancestors in `entities`.
pub(super) fn with_ancestors_in(entities: &Entities, u: &EntityUid) -> HashSet<EntityUid> {
    let mut s = ancestors_in(entities, u);
    s.insert(u.clone());
    s
}

/// What entities.json says callers and users belong to, by id.
struct StaticParents {
    /// Services declared in entities.json: their ancestors.
    service: HashMap<String, HashSet<EntityUid>>,
    /// Namespaces of domains: the domain and its ancestors.
    namespace: HashMap<String, HashSet<EntityUid>>,
    /// Groups declared in entities.json: a user in a group is in its
    /// ancestors too.
    group: HashMap<String, HashSet<EntityUid>>,
}

impl StaticParents {
    fn of(entities: &Entities, types: &MeshTypes) -> StaticParents {
        let group = entities
            .iter()
            .map(|e| e.uid())
            .filter(|u| u.type_name() == &types.group)
            .map(|u| (u.id().unescaped().to_string(), ancestors_in(entities, &u)))
            .collect();
        let mut service = HashMap::new();
        let mut namespace: HashMap<String, HashSet<EntityUid>> = HashMap::new();
        for e in entities.iter() {
            let u = e.uid();
            if u.type_name() == &types.service {
                service.insert(u.id().unescaped().to_string(), ancestors_in(entities, &u));
            }
            if u.type_name() == &types.domain {
                if let Some(Ok(cedar_policy::EvalResult::Set(set))) = e.attr("namespaces") {
                    for v in set.iter() {
                        if let cedar_policy::EvalResult::String(ns) = v {
                            namespace
                                .entry(ns.clone())
                                .or_default()
                                .extend(with_ancestors_in(entities, &u));
                        }
                    }
                }
            }
        }
        StaticParents {
            service,
            namespace,
            group,
        }
    }
}
