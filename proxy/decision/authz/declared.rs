//! What entities.json declares, and what the other inputs name without it:
//! a domain, team or group in a policy's scope or a contract's `domain`
//! that is not declared is a warning (a caller is never in it, but for a
//! token's group; a resource only when it is a contract's domain); and
//! entities.json errors that name the entity and attribute at fault, at
//! their line.
//!
//! Services are not checked: a caller's `Mesh::Service` entity is made from
//! its certificate, so `principal == Mesh::Service::"spiffe://…"` matches
//! whether or not entities.json declares it (it only adds parents).
//!
//! Undeclared names are warnings, not load errors: a mesh may rely on
//! namespaces alone for callers, and one that loads today must go on
//! loading. `meshgate validate --strict` makes them fail CI.

use std::collections::HashSet;

use cedar_policy::{Entities, EntityUid, PrincipalConstraint, ResourceConstraint, Schema};

use super::*;
use crate::base::locate::{locate, locate_json, Step};
use crate::decision::contract::Product;
use crate::decision::finding::Finding;

/// The kinds of entity that only entities.json makes (a group also comes
/// from a user's token).
const DECLARED_KINDS: [&str; 3] = ["Domain", "Group", "Team"];

/// The domains, groups and teams entities.json declares.
pub(super) struct Declared {
    uids: HashSet<EntityUid>,
    /// The contracts' domains: a product is in its domain, declared or not.
    contract_domains: HashSet<EntityUid>,
    /// Whether an entities file is configured at all.
    configured: bool,
}

fn declared_kind(u: &EntityUid) -> bool {
    let t = u.type_name().to_string();
    DECLARED_KINDS
        .iter()
        .any(|k| t.strip_prefix(NS).and_then(|r| r.strip_prefix("::")) == Some(*k))
}

impl Declared {
    pub(super) fn of(entities: &Entities, configured: bool, products: &[Product]) -> Declared {
        let domain = type_name("Domain");
        Declared {
            uids: entities
                .iter()
                .map(|e| e.uid())
                .filter(declared_kind)
                .collect(),
            contract_domains: products.iter().map(|p| uid(&domain, &p.domain)).collect(),
            configured,
        }
    }

    /// Why `u`, in a scope on `side`, matches nothing; `None` if it may.
    /// A caller is in a domain, team or group only through entities.json
    /// (or a token's groups); a resource is in its contract's domain.
    fn missing(&self, u: &EntityUid, side: &str) -> Option<String> {
        if !declared_kind(u) || self.uids.contains(u) {
            return None;
        }
        if side == "resource" && self.contract_domains.contains(u) {
            return None;
        }
        let not = if self.configured {
            "is not declared in entities.json"
        } else {
            "is named but no entities file is configured"
        };
        Some(match side {
            "resource" => {
                format!("{u} {not} and is no contract's domain: the scope matches nothing")
            }
            _ => format!("{u} {not}: the scope matches nothing"),
        })
    }

    /// A warning for each undeclared domain, group or team named in
    /// the scope of a policy of `set` (static or linked), at the policy (or
    /// the link).
    pub(super) fn in_policies(&self, parsed: &Parsed, sources: &[Source]) -> Vec<Finding> {
        let mut found = Vec::new();
        let mut locator = Locator::new(parsed, sources);
        for p in parsed.set.policies() {
            let principal = match p.principal_constraint() {
                PrincipalConstraint::In(u)
                | PrincipalConstraint::Eq(u)
                | PrincipalConstraint::IsIn(_, u) => Some(u),
                _ => None,
            };
            let resource = match p.resource_constraint() {
                ResourceConstraint::In(u)
                | ResourceConstraint::Eq(u)
                | ResourceConstraint::IsIn(_, u) => Some(u),
                _ => None,
            };
            for (side, u) in [("principal", principal), ("resource", resource)] {
                let Some(message) = u.as_ref().and_then(|u| self.missing(u, side)) else {
                    continue;
                };
                let id = p.id().to_string();
                let src = parsed.origin.get(&id).and_then(|&i| sources.get(i));
                let (file, at) = match src {
                    Some(s) => (s.name.clone(), policy_position(&mut locator, p, &id)),
                    None => (format!("policy {id}"), None),
                };
                found.push(Finding {
                    file,
                    at,
                    field: format!("@id(\"{id}\") {side}"),
                    message,
                    stands_for: 1,
                });
            }
        }
        found
    }
}

/// Where policy `p` is written: its text in a policy file, its link id in
/// a links file.
fn policy_position(
    locator: &mut Locator,
    p: &cedar_policy::Policy,
    id: &str,
) -> Option<(usize, usize)> {
    if p.is_static() {
        locator.locate(id, &p.to_string())
    } else {
        locator.locate(id, &format!("\"{id}\""))
    }
}

/// A warning when a contract's domain is not a `Mesh::Domain` of entities.json.
pub(super) fn contract_domain(p: &Product, text: &str, entities: &Entities) -> Option<Finding> {
    let domain = uid(&type_name("Domain"), &p.domain);
    if entities.get(&domain).is_some() {
        return None;
    }
    Some(Finding {
        file: p.file.clone(),
        at: locate(text, &[Step::Key("domain".into())]),
        field: "domain".into(),
        message: format!(
            "{domain} is not declared in entities.json: no caller is in this domain (it has no namespaces) and it has no parents"
        ),
        stands_for: 1,
    })
}

/// The errors of an entities file Cedar refused, each naming the entity
/// (and the attribute, when Cedar's message names one of its own) at its
/// line: every entity is checked on its own against the schema.
pub(super) fn entity_errors(
    src: &Source,
    schema: &Schema,
    whole: &(dyn miette::Diagnostic + Send + Sync),
) -> Vec<String> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&src.text) else {
        return vec![diag(&src.name, &src.text, whole)];
    };
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let one = serde_json::Value::Array(vec![item.clone()]);
        let Err(e) = Entities::from_json_value(one, Some(schema)) else {
            continue;
        };
        let message = chain(&e);
        let name = match (item.pointer("/uid/type"), item.pointer("/uid/id")) {
            (Some(t), Some(id)) => format!("entity {}::{id}", t.as_str().unwrap_or("?")),
            _ => format!("entity [{i}]"),
        };
        // The attribute the message is about, if it names one.
        let attr = item
            .get("attrs")
            .and_then(serde_json::Value::as_object)
            .and_then(|attrs| {
                attrs
                    .keys()
                    .find(|k| message.contains(&format!("`{k}`")))
                    .cloned()
            });
        let mut path = vec![Step::Index(i)];
        let mut what = name;
        match (&attr, named_attribute(&message)) {
            (Some(a), _) => {
                path.extend([Step::Key("attrs".into()), Step::KeyName(a.clone())]);
                what.push_str(&format!(", attribute `{a}`"));
            }
            // An attribute that is missing is named, at its entity.
            (None, Some(a)) => what.push_str(&format!(", attribute `{a}`")),
            (None, None) => {}
        }
        let place = match locate_json(&src.text, &path) {
            Some((l, c)) => format!("{}:{l}:{c}", src.name),
            None => src.name.clone(),
        };
        errors.push(format!("{place}: {what}: {message}"));
    }
    if errors.is_empty() {
        // Each entity is fine alone: the error is between them (a duplicate).
        errors.push(diag(&src.name, &src.text, whole));
    }
    errors
}

/// The attribute Cedar's message is about (`… attribute `name` …`).
fn named_attribute(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("attribute `")?;
    rest.split_once('`').map(|(a, _)| a)
}

/// An error with its causes and Cedar's help, on one line.
fn chain(e: &(dyn miette::Diagnostic + Send + Sync + 'static)) -> String {
    let mut msg = super::build::with_causes(e);
    if let Some(help) = e.help() {
        msg.push_str(&format!(" ({help})"));
    }
    msg
}
