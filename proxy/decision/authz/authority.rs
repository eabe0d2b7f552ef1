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

use std::collections::{BTreeSet, HashMap};

use cedar_policy::{EntityUid, Policy, ResourceConstraint, Template, TemplateResourceConstraint};

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
            for f in p.fields.iter().flatten().flat_map(|f| &f.resources) {
                by_uid.insert(&f.uid, domain);
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
                "`{scope}` names a resource of domain `{other}`; a domain's policies may name only its own Mesh::Domain, products, datasets and fields"
            )),
            None => Some(format!(
                "`{scope}` names {e}, which is not known to belong to domain `{domain}` (neither its Mesh::Domain nor a product, dataset or field of its contracts)"
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

/// The domains the policy sources are declared for and the contracts name.
fn known_domains<'a>(sources: &'a [Source], products: &'a [ProductEntry]) -> BTreeSet<&'a str> {
    let mut known: BTreeSet<&str> = sources.iter().filter_map(|s| s.domain.as_deref()).collect();
    known.extend(products.iter().map(|p| p.product.domain.as_str()));
    known
}

/// Whether `id` lies in domain `d`'s namespace: `d`, a dot, and more.
fn in_namespace(id: &str, d: &str) -> bool {
    id.strip_prefix(d)
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
}

/// Why `id`, of a policy, template or grant from `domain`'s source, is not
/// the domain's to take: an id names the policy that decided in
/// `authorize`, the audit and test reasons, so a domain's are its own
/// (`<domain>.…`, and not a nested domain's `<domain>.eu.…`), and `mesh.`
/// is the mesh baseline's. Otherwise a domain could pass its permit off as
/// a baseline exception, or take an id the baseline or another domain
/// will use.
fn foreign_id(known: &BTreeSet<&str>, domain: &str, id: &str) -> Option<String> {
    const BASELINE: &str = "mesh";
    if in_namespace(id, BASELINE) {
        return Some(format!(
            "its id lies in the mesh baseline's namespace (`{BASELINE}.`); a domain's ids begin with `{domain}.`"
        ));
    }
    if !in_namespace(id, domain) {
        return Some(format!(
            "its id must begin with `{domain}.`: a domain's ids are its own, so that decisions and the audit name who wrote the policy and no domain takes an id the baseline or another domain will use"
        ));
    }
    let deeper = known
        .iter()
        .filter(|d| d.len() > domain.len() && in_namespace(id, d))
        .max_by_key(|d| d.len())?;
    Some(format!(
        "its id lies in the namespace of domain `{deeper}` (`{deeper}.`); a domain's ids begin with its own name and a dot, and not a nested domain's"
    ))
}

/// Checks every policy, template and link of `set` that comes from a
/// domain's source (`origin`: id -> index into `sources`) against the
/// resources `products` give each domain. Every violation is added to
/// `errors`, in file order.
pub(super) fn check(
    parsed: &Parsed,
    sources: &[Source],
    products: &[ProductEntry],
    errors: &mut Vec<String>,
) {
    if sources.iter().all(|s| s.domain.is_none()) {
        return;
    }
    let (set, origin) = (&parsed.set, &parsed.origin);
    // `line:col` of a policy or template in its file (found by its own
    // text), or of a link (found by its quoted `link_id`); `1:1` if not found.
    let mut locator = Locator::new(parsed, sources);
    let mut locate = |id: &str, needle: &str| locator.locate(id, needle).unwrap_or((1, 1));
    let owners = Owners::of(products);
    let domain_of = |id: &str| {
        let i = *origin.get(id)?;
        let src = &sources[i];
        Some((i, src, src.domain.as_deref()?))
    };
    let known = known_domains(sources, products);
    // (source index, line, col, message): sorted so that errors come in file order.
    let mut found: Vec<(usize, usize, usize, String)> = Vec::new();
    for t in set.templates() {
        let id = t.id().to_string();
        let Some((i, src, domain)) = domain_of(&id) else {
            continue;
        };
        let why = [
            foreign_id(&known, domain, &id),
            check_template(&owners, domain, t),
        ];
        let mut why = why.into_iter().flatten().peekable();
        if why.peek().is_some() {
            let (l, c) = locate(&id, &t.to_string());
            found.extend(why.map(|w| (i, l, c, refusal(src, l, c, "template", &id, domain, &w))));
        }
    }
    for p in set.policies() {
        let id = p.id().to_string();
        let Some((i, src, domain)) = domain_of(&id) else {
            continue;
        };
        let why = [
            foreign_id(&known, domain, &id),
            check_policy(&owners, domain, p),
        ];
        let mut why = why.into_iter().flatten().peekable();
        if why.peek().is_none() {
            continue;
        }
        let (what, (l, c)) = match p.template_id() {
            None => ("policy".to_string(), locate(&id, &p.to_string())),
            Some(t) => (
                format!("grant (link of template `{t}`)"),
                locate(&id, &serde_json::Value::String(id.clone()).to_string()),
            ),
        };
        found.extend(why.map(|w| (i, l, c, refusal(src, l, c, &what, &id, domain, &w))));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(name: &str, text: &str, domain: Option<&str>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
            domain: domain.map(str::to_string),
        }
    }

    /// The example mesh with one more policy source.
    fn build_with(extra: Source) -> Result<Snapshot, LoadErrors> {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        inputs.policies.push(extra);
        Snapshot::build(&inputs)
    }

    const OVERSTEPPING: &str = r#"// line 1
@id("sales.ok.domain")
permit (principal, action, resource in Mesh::Domain::"sales");

@id("sales.open")
permit (principal, action, resource);

@id("sales.type-only")
forbid (principal, action, resource is Mesh::DataProduct);

@id("sales.finance-ledger")
permit (principal, action, resource in Mesh::DataProduct::"finance.ledger");

@id("sales.unknown")
permit (principal, action, resource == Mesh::DataProduct::"sales.nonexistent");

@id("sales.other-domain")
forbid (principal, action, resource is Mesh::Dataset in Mesh::Domain::"finance");

@id("sales.template.finance")
permit (principal == ?principal, action, resource in Mesh::DataProduct::"finance.ledger");

@id("sales.ok.dataset")
permit (principal, action, resource == Mesh::Dataset::"sales.orders/orders");
"#;

    #[test]
    fn every_overstepping_policy_is_refused_with_its_place_id_domain_and_reason() {
        let err = build_with(owned("sales/extra.cedar", OVERSTEPPING, Some("sales")))
            .expect_err("refused");
        let e = &err.shown;
        assert_eq!(e.len(), 6, "{e:#?}");
        let expect = [
            ("sales/extra.cedar:5:1: policy `sales.open` of domain `sales` is refused: its resource scope `resource` could match another domain's resources", ""),
            ("sales/extra.cedar:8:1: policy `sales.type-only` of domain `sales` is refused: its resource scope `resource is Mesh::DataProduct`", ""),
            ("sales/extra.cedar:11:1: policy `sales.finance-ledger` of domain `sales` is refused: `resource in Mesh::DataProduct::\"finance.ledger\"` names a resource of domain `finance`", ""),
            ("sales/extra.cedar:14:1: policy `sales.unknown` of domain `sales` is refused: `resource == Mesh::DataProduct::\"sales.nonexistent\"` names Mesh::DataProduct::\"sales.nonexistent\", which is not known to belong to domain `sales`", ""),
            ("sales/extra.cedar:17:1: policy `sales.other-domain` of domain `sales` is refused: `resource is Mesh::Dataset in Mesh::Domain::\"finance\"` names a resource of domain `finance`", ""),
            ("sales/extra.cedar:20:1: template `sales.template.finance` of domain `sales` is refused: `resource in Mesh::DataProduct::\"finance.ledger\"` names a resource of domain `finance`", ""),
        ];
        for ((want, _), got) in expect.iter().zip(e) {
            assert!(got.starts_with(want), "want {want}\n got {got}");
        }
    }

    #[test]
    fn the_same_file_loads_as_the_mesh_baseline() {
        let snapshot = build_with(owned("mesh/extra.cedar", OVERSTEPPING, None));
        assert!(snapshot.is_ok(), "{:?}", snapshot.err());
    }

    #[test]
    fn grants_are_checked_by_the_resource_they_fill_in() {
        let links = r#"[
  {
    "template_id": "sales.grant.read",
    "link_id": "sales.grant.ok",
    "args": {
      "?principal": "Mesh::Service::\"a\"",
      "?resource": "Mesh::Dataset::\"sales.customers/customers\""
    }
  },
  {
    "template_id": "sales.grant.read",
    "link_id": "sales.grant.ledger",
    "args": {
      "?principal": "Mesh::Service::\"a\"",
      "?resource": "Mesh::DataProduct::\"finance.ledger\""
    }
  }
]"#;
        let err =
            build_with(owned("sales/more.links.json", links, Some("sales"))).expect_err("refused");
        assert_eq!(err.shown.len(), 1, "{:#?}", err.shown);
        assert!(
            err.shown[0].starts_with("sales/more.links.json:12:16: grant (link of template `sales.grant.read`) `sales.grant.ledger` of domain `sales` is refused: `resource in Mesh::DataProduct::\"finance.ledger\"` names a resource of domain `finance`"),
            "{}",
            err.shown[0]
        );
    }

    /// One grant of `template` for `resource`, as a links file.
    fn grant(template: &str, link: &str, resource: &str) -> String {
        serde_json::json!([{
            "template_id": template,
            "link_id": link,
            "args": {
                "?principal": "Mesh::Service::\"spiffe://mesh.local/ns/marketing/sa/campaigns\"",
                "?resource": resource,
            }
        }])
        .to_string()
    }

    const ORDERS: &str = "Mesh::DataProduct::\"sales.orders\"";

    /// The example mesh with more policy sources.
    fn build_with_all(extra: Vec<Source>) -> Result<Snapshot, LoadErrors> {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        inputs.policies.extend(extra);
        Snapshot::build(&inputs)
    }

    #[test]
    fn a_domain_links_only_its_own_templates_or_the_baselines() {
        let template = |id: &str| {
            format!("@id(\"{id}\")\npermit (principal == ?principal, action == Mesh::Action::\"read\", resource in ?resource);\n")
        };
        let finance = owned(
            "finance/tpl.cedar",
            &template("finance.tpl.grant"),
            Some("finance"),
        );
        let baseline = owned("mesh/tpl.cedar", &template("mesh.tpl.grant"), None);
        // Sales's grant, on sales's own product, of finance's template:
        // finance could make it a forbid, or widen it, on sales.orders.
        let links = grant("finance.tpl.grant", "sales.grant.via-finance", ORDERS);
        let err = build_with_all(vec![
            finance.clone(),
            owned("sales/more.links.json", &links, Some("sales")),
        ])
        .expect_err("refused");
        assert_eq!(err.shown.len(), 1, "{:#?}", err.shown);
        assert_eq!(
            err.shown[0],
            "sales/more.links.json:1:35: [0].template_id: grant `sales.grant.via-finance` of domain `sales` is refused: `finance.tpl.grant` is a template of domain `finance` (finance/tpl.cedar:1:1); a domain's grants may link only its own templates or the mesh baseline's (another domain could turn the grant into a forbid, or widen it)"
        );
        // The mesh baseline's templates are every domain's to link.
        let links = grant("mesh.tpl.grant", "sales.grant.via-mesh", ORDERS);
        let loaded = build_with_all(vec![
            finance.clone(),
            baseline.clone(),
            owned("sales/more.links.json", &links, Some("sales")),
        ]);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
        // The baseline links only its own: a domain's template would let
        // the domain decide what the baseline grants, on any product.
        let links = grant(
            "sales.grant.read",
            "mesh.grant.ledger",
            "Mesh::DataProduct::\"finance.ledger\"",
        );
        let err =
            build_with_all(vec![owned("mesh/more.links.json", &links, None)]).expect_err("refused");
        assert!(
            err.shown[0].starts_with("mesh/more.links.json:1:34: [0].template_id: grant `mesh.grant.ledger` of the mesh baseline is refused: `sales.grant.read` is a template of domain `sales` (policies/domains/sales/policies.cedar:"),
            "{:#?}",
            err.shown
        );
        let links = grant(
            "mesh.tpl.grant",
            "mesh.grant.ledger",
            "Mesh::DataProduct::\"finance.ledger\"",
        );
        let loaded = build_with_all(vec![baseline, owned("mesh/more.links.json", &links, None)]);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn a_shadow_set_is_held_to_the_same_rules() {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        inputs.shadow = inputs.policies.clone();
        inputs.shadow.push(owned(
            "shadow/finance.cedar",
            "@id(\"finance.reads-orders\")\npermit (principal, action, resource in Mesh::DataProduct::\"sales.orders\");\n",
            Some("finance"),
        ));
        let err = Snapshot::build(&inputs).expect_err("refused");
        assert_eq!(err.shown.len(), 1, "{:#?}", err.shown);
        assert!(
            err.shown[0].starts_with(
                "shadow/finance.cedar:1:1: policy `finance.reads-orders` of domain `finance` is refused"
            ),
            "{}",
            err.shown[0]
        );
    }

    /// A domain's policy, template or grant takes no id but its own: a
    /// sales permit named `mesh.…` would be reported by `authorize` and
    /// the audit as the baseline's, one named `finance.…` as finance's.
    #[test]
    fn a_domains_ids_begin_with_its_name_and_a_dot() {
        let policies = r#"@id("mesh.baseline-approved-exception")
permit (principal, action, resource in Mesh::Domain::"sales");

@id("finance.ledger.later")
permit (principal, action, resource in Mesh::Domain::"sales");

@id("salesforce.x")
permit (principal, action, resource in Mesh::Domain::"sales");

@id("sales.eu.x")
permit (principal, action, resource in Mesh::Domain::"sales");

@id("mesh.template")
permit (principal == ?principal, action, resource in ?resource);

@id("sales.fine")
permit (principal, action, resource in Mesh::Domain::"sales");
"#;
        let links = grant("sales.grant.read", "mesh.grant.x", ORDERS);
        let err = build_with_all(vec![
            owned("sales/ids.cedar", policies, Some("sales")),
            owned("sales/ids.links.json", &links, Some("sales")),
            // Only to make `sales.eu` a domain the snapshot knows.
            owned("eu/none.cedar", "", Some("sales.eu")),
        ])
        .expect_err("refused");
        let own = "a domain's ids begin with `sales.`";
        let must = "its id must begin with `sales.`: a domain's ids are its own";
        let expect = [
            ("sales/ids.cedar:1:1: policy `mesh.baseline-approved-exception` of domain `sales` is refused: its id lies in the mesh baseline's namespace (`mesh.`)", own),
            ("sales/ids.cedar:4:1: policy `finance.ledger.later` of domain `sales` is refused: ", must),
            ("sales/ids.cedar:7:1: policy `salesforce.x` of domain `sales` is refused: ", must),
            ("sales/ids.cedar:10:1: policy `sales.eu.x` of domain `sales` is refused: its id lies in the namespace of domain `sales.eu` (`sales.eu.`)", ""),
            ("sales/ids.cedar:13:1: template `mesh.template` of domain `sales` is refused: its id lies in the mesh baseline's namespace", own),
            ("sales/ids.links.json:1:46: grant (link of template `sales.grant.read`) `mesh.grant.x` of domain `sales` is refused: its id lies in the mesh baseline's namespace", own),
        ];
        assert_eq!(err.shown.len(), expect.len(), "{:#?}", err.shown);
        for ((start, has), got) in expect.iter().zip(&err.shown) {
            assert!(
                got.starts_with(start) && got.contains(has),
                "want {start} … {has}\n got {got}"
            );
        }
    }

    /// The shadow set's domain sources are held to the same ids.
    #[test]
    fn a_shadow_domain_source_takes_only_its_own_ids() {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        inputs.shadow = inputs.policies.clone();
        inputs.shadow.push(owned(
            "shadow/sales.cedar",
            "@id(\"mesh.shadow-exception\")\npermit (principal, action, resource in Mesh::Domain::\"sales\");\n",
            Some("sales"),
        ));
        let err = Snapshot::build(&inputs).expect_err("refused");
        assert_eq!(err.shown.len(), 1, "{:#?}", err.shown);
        assert!(
            err.shown[0].starts_with("shadow/sales.cedar:1:1: policy `mesh.shadow-exception` of domain `sales` is refused: its id lies in the mesh baseline's namespace"),
            "{}",
            err.shown[0]
        );
    }

    #[test]
    fn a_source_is_a_path_or_a_path_with_its_domain() {
        let parse = |sources: &str| {
            crate::base::yaml::parse_yaml::<PolicyConfig>(
                &format!("schema: s.cedarschema\nsources: {sources}\n"),
                "cfg.yaml",
            )
        };
        let cfg = parse("[mesh/, { path: domains/sales/, domain: sales }]").expect("parses");
        assert_eq!(
            cfg.sources[0],
            PolicySource::from(std::path::PathBuf::from("mesh/"))
        );
        assert_eq!(cfg.sources[1].domain.as_deref(), Some("sales"));
        let typo = parse("[{ path: d/, domian: sales }]").expect_err("refused");
        assert!(
            typo.to_string().contains("unknown field `domian`"),
            "{typo}"
        );
        let empty = parse("[{ path: d/, domain: \"\" }]").expect_err("refused");
        assert!(empty.to_string().contains("is not a domain id"), "{empty}");
        let missing = parse("[{ domain: sales }]").expect_err("refused");
        assert!(
            missing.to_string().contains("missing field `path`"),
            "{missing}"
        );
    }
}
