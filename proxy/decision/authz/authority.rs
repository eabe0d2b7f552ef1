//! Domain-scoped policy authority: a policy source declared as a domain's
//! (`policy.sources: [{ path, domain }]`) may speak only about that domain's
//! own resources.
//!
//! Every `permit`, `forbid` and template of a domain's file must scope its
//! resource to the domain: `resource == E`, `resource in E` or
//! `resource is T in E`, where `E` is the domain's `Mesh::Domain`, one of
//! the products its contracts declare (a contract's `domain`) or one of their
//! datasets. A template may leave the resource to a slot (`?resource`): each
//! link of it in a domain's `*.links.json` is checked with the value it
//! fills in. An open scope, `resource is T` alone, another domain's entity,
//! or an entity not known to belong to the domain is refused, with the
//! file's position, the policy id, the domain and the reason. The mesh
//! baseline (a source without a domain) is not limited.
//!
//! Only the scope is read: a condition (`when`, `unless`) can narrow a
//! policy but never widens what its scope lets it match, so the scope alone
//! decides which resources a policy can speak about.

use std::collections::HashMap;

use cedar_policy::{
    EntityUid, Policy, PolicySet, ResourceConstraint, Template, TemplateResourceConstraint,
};

use super::*;

/// Which domain each known resource belongs to: products by their contract's
/// `domain`, datasets by their product's.
struct Owners<'a> {
    by_uid: HashMap<&'a EntityUid, &'a str>,
    domain_type: EntityTypeName,
}

impl<'a> Owners<'a> {
    fn of(products: &'a [ProductEntry]) -> Owners<'a> {
        let mut by_uid = HashMap::new();
        for p in products {
            let domain = p.product.domain.as_str();
            by_uid.insert(&p.resource.uid, domain);
            for d in &p.datasets {
                by_uid.insert(&d.uid, domain);
            }
        }
        Owners {
            by_uid,
            domain_type: type_name("Domain"),
        }
    }

    /// The domain `e` belongs to, if known: a `Mesh::Domain` is its own.
    fn owner<'e>(&'e self, e: &'e EntityUid) -> Option<&'e str> {
        if e.type_name() == &self.domain_type {
            return Some(e.id().unescaped());
        }
        self.by_uid.get(e).copied()
    }

    /// Why a scope naming `e` (written `scope`) is not `domain`'s to give,
    /// or `None` when it is.
    fn refuse(&self, domain: &str, scope: &str, e: &EntityUid) -> Option<String> {
        match self.owner(e) {
            Some(d) if d == domain => None,
            Some(other) => Some(format!(
                "`{scope}` names a resource of domain `{other}`; a domain's policies may name only its own Mesh::Domain, products and datasets"
            )),
            None => Some(format!(
                "`{scope}` names {e}, which is not known to belong to domain `{domain}` (neither its Mesh::Domain nor a product or dataset of its contracts)"
            )),
        }
    }
}

/// A resource scope that is not tied to one entity.
fn unscoped(domain: &str, scope: &str) -> String {
    format!(
        "its resource scope `{scope}` could match another domain's resources; scope it to `resource in Mesh::Domain::\"{domain}\"`, or `==`/`in` one of the domain's products or datasets"
    )
}

/// Why a policy's (or a link's) resource scope oversteps `domain`.
fn check_policy(owners: &Owners<'_>, domain: &str, p: &Policy) -> Option<String> {
    match p.resource_constraint() {
        ResourceConstraint::Any => Some(unscoped(domain, "resource")),
        ResourceConstraint::Is(t) => Some(unscoped(domain, &format!("resource is {t}"))),
        ResourceConstraint::Eq(e) => owners.refuse(domain, &format!("resource == {e}"), &e),
        ResourceConstraint::In(e) => owners.refuse(domain, &format!("resource in {e}"), &e),
        ResourceConstraint::IsIn(t, e) => {
            owners.refuse(domain, &format!("resource is {t} in {e}"), &e)
        }
    }
}

/// Why a template's resource scope oversteps `domain`; a slot is left to
/// the links that fill it.
fn check_template(owners: &Owners<'_>, domain: &str, t: &Template) -> Option<String> {
    match t.resource_constraint() {
        TemplateResourceConstraint::Any => Some(unscoped(domain, "resource")),
        TemplateResourceConstraint::Is(ty) => Some(unscoped(domain, &format!("resource is {ty}"))),
        TemplateResourceConstraint::Eq(Some(e)) => {
            owners.refuse(domain, &format!("resource == {e}"), &e)
        }
        TemplateResourceConstraint::In(Some(e)) => {
            owners.refuse(domain, &format!("resource in {e}"), &e)
        }
        TemplateResourceConstraint::IsIn(ty, Some(e)) => {
            owners.refuse(domain, &format!("resource is {ty} in {e}"), &e)
        }
        TemplateResourceConstraint::Eq(None)
        | TemplateResourceConstraint::In(None)
        | TemplateResourceConstraint::IsIn(_, None) => None,
    }
}

/// `line:col` of a policy or template in its file (found by its own text),
/// or of a link (found by its quoted `link_id`); `1:1` if not found.
fn locate(src: &Source, needle: &str) -> (usize, usize) {
    src.text
        .find(needle)
        .map(|o| position(&src.text, o))
        .unwrap_or((1, 1))
}

/// Checks every policy, template and link of `set` that comes from a
/// domain's source (`origin`: id -> index into `sources`) against the
/// resources `products` give each domain. Every violation is added to
/// `errors`, in file order.
pub(super) fn check(
    set: &PolicySet,
    origin: &HashMap<String, usize>,
    sources: &[Source],
    products: &[ProductEntry],
    errors: &mut Vec<String>,
) {
    if sources.iter().all(|s| s.domain.is_none()) {
        return;
    }
    let owners = Owners::of(products);
    let domain_of = |id: &str| {
        let i = *origin.get(id)?;
        let src = &sources[i];
        Some((i, src, src.domain.as_deref()?))
    };
    // (source index, line, col, message): sorted so that errors come in file order.
    let mut found: Vec<(usize, usize, usize, String)> = Vec::new();
    for t in set.templates() {
        let id = t.id().to_string();
        let Some((i, src, domain)) = domain_of(&id) else {
            continue;
        };
        if let Some(why) = check_template(&owners, domain, t) {
            let (l, c) = locate(src, &t.to_string());
            found.push((i, l, c, refusal(src, l, c, "template", &id, domain, &why)));
        }
    }
    for p in set.policies() {
        let id = p.id().to_string();
        let Some((i, src, domain)) = domain_of(&id) else {
            continue;
        };
        let Some(why) = check_policy(&owners, domain, p) else {
            continue;
        };
        let (what, (l, c)) = match p.template_id() {
            None => ("policy".to_string(), locate(src, &p.to_string())),
            Some(t) => (
                format!("grant (link of template `{t}`)"),
                locate(src, &serde_json::Value::String(id.clone()).to_string()),
            ),
        };
        found.push((i, l, c, refusal(src, l, c, &what, &id, domain, &why)));
    }
    found.sort();
    errors.extend(found.into_iter().map(|(.., m)| m));
}

fn refusal(
    src: &Source,
    line: usize,
    col: usize,
    what: &str,
    id: &str,
    domain: &str,
    why: &str,
) -> String {
    format!(
        "{}:{line}:{col}: {what} `{id}` of domain `{domain}` is refused: {why}",
        src.name
    )
}
