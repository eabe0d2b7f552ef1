//! The catalogue: the contracts' products as Cedar resources (products,
//! datasets, fields), with their routes, built one contract at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};

use crate::base::locate::{locate_all, Step};
use crate::decision::contract::{Product, RouteSpec};
use crate::decision::finding::Finding;
use crate::decision::lifecycle::TargetKind;
use crate::decision::routes::{Lookup, RouteError, RouteTable, Target};
use crate::model::response::ResponseTransform;

use super::build::{with_ancestors_in, MeshTypes};
use super::*;

/// The contracts' products as Cedar resources, with their routes: built one
/// contract at a time, in order.
#[derive(Default)]
pub(super) struct Catalogue {
    pub(super) routes: RouteTable,
    pub(super) entries: Vec<ProductEntry>,
    /// Product id -> the file that defines it.
    seen_ids: HashMap<String, String>,
    /// Every product, dataset and field entity, to check against the schema.
    pub(super) entities: Vec<Entity>,
    /// (uid, kind, ancestors) of every resource, in index order; the
    /// fields of one parent share their ancestors.
    pub(super) registry: Vec<(EntityUid, usize, Arc<HashSet<EntityUid>>)>,
}

impl Catalogue {
    /// Adds one product, its datasets and its routes; what is wrong with them
    /// goes to `errors`.
    pub(super) fn add(
        &mut self,
        p: Product,
        text: &str,
        static_entities: &Entities,
        types: &MeshTypes,
        errors: &mut Vec<String>,
    ) {
        if let Some(other) = self.seen_ids.insert(p.id.clone(), p.file.clone()) {
            errors.push(format!(
                "{}: id: product `{}` is also defined in {other}",
                p.file, p.id
            ));
            return;
        }
        let domain_uid = uid(&types.domain, &p.domain);
        let product_uid = uid(&types.product, &p.id);
        let mut product_ancestors = with_ancestors_in(static_entities, &domain_uid);
        let mut attrs = resource_attrs(&p, &domain_uid, &p.classification);
        attrs.insert(
            "owner".into(),
            RestrictedExpression::new_string(p.owner.clone()),
        );
        attrs.insert("tags".into(), string_set(&p.tags));
        let product_entity =
            match Entity::new(product_uid.clone(), attrs, product_ancestors.clone()) {
                Ok(e) => e,
                Err(e) => {
                    errors.push(format!("{}: {e}", p.file));
                    return;
                }
            };
        let up: Arc<[Entity]> = static_entities
            .get(&domain_uid)
            .cloned()
            .into_iter()
            .collect();
        let product_chain: Arc<[Entity]> = std::iter::once(product_entity.clone())
            .chain(up.iter().cloned())
            .collect();

        product_ancestors.insert(product_uid.clone());
        let datasets = self.add_datasets(
            &p,
            &domain_uid,
            &Arc::new(product_ancestors.clone()),
            &product_chain,
            types,
            errors,
        );
        let fields = self.add_fields(&p, &datasets, &domain_uid, types, errors);
        product_ancestors.remove(&product_uid);
        self.entities.push(product_entity.clone());
        self.add_routes(&p, text, errors);
        self.registry
            .push((product_uid.clone(), PRODUCT, Arc::new(product_ancestors)));
        let resource = Resource {
            id: Arc::from(p.id.as_str()),
            index: self.registry.len() - 1,
            kind: PRODUCT,
            uid: product_uid,
            entity: product_entity,
            up,
        };
        // Checked when the contract was read; a version with nothing to
        // announce has no transform.
        let response = match p.lifecycle.headers() {
            Ok(h) => h.map(|h| Arc::new(h) as Arc<dyn ResponseTransform>),
            Err(e) => {
                errors.push(format!("{}: {}: {}", p.file, e.field, e.message));
                return;
            }
        };
        self.entries.push(ProductEntry {
            version: Arc::from(p.version.as_str()),
            product: p,
            resource,
            datasets,
            response,
            fields,
        });
    }

    /// The datasets of `p` as resources in the product (`ancestors`: the
    /// product and its own), each with its product's entities.
    fn add_datasets(
        &mut self,
        p: &Product,
        domain_uid: &EntityUid,
        ancestors: &Arc<HashSet<EntityUid>>,
        product_entities: &Arc<[Entity]>,
        types: &MeshTypes,
        errors: &mut Vec<String>,
    ) -> Vec<Resource> {
        let mut datasets = Vec::new();
        for (name, classification) in &p.datasets {
            let ds_uid = uid(&types.dataset, &format!("{}/{name}", p.id));
            let mut attrs = resource_attrs(p, domain_uid, classification);
            attrs.insert(
                "name".into(),
                RestrictedExpression::new_string(name.clone()),
            );
            match Entity::new(ds_uid.clone(), attrs, (**ancestors).clone()) {
                Ok(ds) => {
                    self.entities.push(ds.clone());
                    self.registry
                        .push((ds_uid.clone(), DATASET, ancestors.clone()));
                    datasets.push(Resource {
                        id: Arc::from(format!("{}/{name}", p.id)),
                        index: self.registry.len() - 1,
                        kind: DATASET,
                        uid: ds_uid,
                        entity: ds,
                        up: product_entities.clone(),
                    });
                }
                Err(e) => errors.push(format!("{}: dataset {name}: {e}", p.file)),
            }
        }
        datasets
    }

    /// A route of `p` that overlaps one of another domain's products,
    /// whatever the two methods: at lookup the more literal pattern takes a
    /// path both match before the method is looked at, so a domain could
    /// take another's paths (and decide them with its own policies) or make
    /// them answer 405.
    fn foreign_overlap(&self, p: &Product, r: &RouteSpec) -> Option<String> {
        let own = self.entries.len();
        let other = self
            .routes
            .overlapping(&r.path)
            .into_iter()
            .filter(|(_, t)| t.product != own)
            .filter_map(|(m, t)| {
                let e = self.entries.get(t.product)?;
                (e.product.domain != p.domain).then_some((m, t, e))
            })
            // The same one named whatever the route table's order.
            .min_by(|a, b| (&*a.1.pattern, a.0.as_str()).cmp(&(&*b.1.pattern, b.0.as_str())));
        other.map(|(m, t, e)| {
            format!(
                "{} {} overlaps `{m} {}` of {} (domain `{}`): routes of different domains must not match the same path, whatever their methods",
                r.method,
                r.path,
                t.pattern,
                e.product.file,
                e.product.domain
            )
        })
    }

    /// The routes of `p` (read from `text`), the next product entry. What
    /// is wrong with them is located in one read of `text`, at the end.
    fn add_routes(&mut self, p: &Product, text: &str, errors: &mut Vec<String>) {
        let mut wrong: Vec<(&RouteSpec, String)> = Vec::new();
        for r in &p.routes {
            let target = Target::of(self.entries.len(), p, r);
            match self.routes.insert(r.method.clone(), &r.path, target) {
                Ok(()) => wrong.extend(self.foreign_overlap(p, r).map(|m| (r, m))),
                // Two contracts claiming one route: both files are named.
                Err(RouteError::Taken {
                    route,
                    by_product,
                    by_pattern,
                }) if by_product != self.entries.len() => {
                    let other = self
                        .entries
                        .get(by_product)
                        .map_or("another contract", |e| e.product.file.as_str());
                    let m =
                        format!("{route} is already routed by {other} (pattern `{by_pattern}`)");
                    wrong.push((r, m));
                }
                Err(e) => wrong.push((r, e.to_string())),
            }
        }
        let nodes: Vec<&[Step]> = wrong.iter().map(|(r, _)| r.at.as_slice()).collect();
        for ((r, m), at) in wrong.iter().zip(locate_all(text, &nodes)) {
            errors.push(match at {
                Some((l, c)) => format!("{}:{l}:{c}: {}: {m}", p.file, r.field),
                None => format!("{}: {}: {m}", p.file, r.field),
            });
        }
    }
}

impl Catalogue {
    /// A warning for each product whose `successorVersion` is a path from
    /// the node's root (`/v2/orders`) that no route of these products
    /// matches (the well-known documents aside): its `Link` header and its
    /// 410 would send clients to a 404. `texts`: each contract's text, to
    /// place the warning.
    pub(super) fn unrouted_successors(&self, texts: &HashMap<&str, &str>) -> Vec<Finding> {
        let mut out = Vec::new();
        for e in &self.entries {
            let p = &e.product;
            let Some(TargetKind::Rooted(path)) =
                p.lifecycle.successor.as_deref().map(TargetKind::of)
            else {
                continue;
            };
            let routed = path.starts_with("/.well-known/")
                || crate::model::path::normalize(path).is_ok_and(|n| {
                    !matches!(self.routes.lookup(&http::Method::GET, &n), Lookup::NotFound)
                });
            if routed {
                continue;
            }
            let text = texts.get(p.file.as_str()).copied().unwrap_or("");
            out.push(Finding {
                file: p.file.clone(),
                at: successor_at(text),
                field: "customProperties.successorVersion".into(),
                message: format!(
                    "`{path}` matches no route of the contracts loaded with this one: its Link header and its 410 would send clients to a 404"
                ),
                stands_for: 1,
            });
        }
        out
    }
}

/// Warnings for a version of a product (the contracts that share `domain`
/// and `dataProduct`) that declares in none of its datasets a field another
/// version declares personal (`pii`), `confidential` or `restricted` (its
/// own classification, else its dataset's), while it passes undeclared
/// fields: if its server still sends that field (an older version, whose
/// contract was written before the field was classified), no field rule
/// reaches it and every caller allowed the version sees it as sent,
/// whatever the baseline's purpose rules say. Fields are matched by name at
/// any depth (versions may shape their records differently).
pub(super) fn unprotected_in_a_version(
    entries: &[ProductEntry],
    texts: &HashMap<&str, &str>,
) -> Vec<Finding> {
    let mut versions: HashMap<(&str, &str), Vec<&Product>> = HashMap::new();
    for e in entries {
        if let Some(group) = e.product.data_product.as_deref() {
            let key = (e.product.domain.as_str(), group);
            versions.entry(key).or_default().push(&e.product);
        }
    }
    let mut out = Vec::new();
    for e in entries {
        let p = &e.product;
        let Some(group) = p.data_product.as_deref() else {
            continue;
        };
        if !crate::decision::fields::passes(p.undeclared) {
            continue;
        }
        // (A product of one version has nothing to compare.)
        let group = versions.get(&(p.domain.as_str(), group));
        let Some(group) = group.filter(|g| g.len() > 1) else {
            continue;
        };
        let others = group.iter().filter(|o| o.id != p.id);
        let declared: HashSet<&str> = p
            .fields
            .iter()
            .flat_map(|d| d.fields.iter().map(|f| f.name.as_str()))
            .collect();
        // Each name once, with the first other version that protects it.
        let mut missing: std::collections::BTreeMap<&str, &Product> = Default::default();
        for o in others {
            for d in &o.fields {
                let dataset = o.datasets.iter().find(|(n, _)| n.as_str() == &*d.dataset);
                let inherited = dataset.map(|(_, c)| c.as_str());
                for f in &d.fields {
                    let class = f.classification.as_deref().or(inherited);
                    let protected = f.pii || matches!(class, Some("confidential" | "restricted"));
                    if protected && !declared.contains(f.name.as_str()) {
                        missing.entry(f.name.as_str()).or_insert(o);
                    }
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        let text = texts.get(p.file.as_str()).copied().unwrap_or("");
        let at = crate::base::locate::locate(text, &[Step::Key("schema".into())]);
        for (name, o) in missing {
            out.push(Finding {
                file: p.file.clone(),
                at,
                field: "schema".into(),
                message: format!(
                    "`{name}` is personal, confidential or restricted in version {} of this product (`{}`, {}), but no dataset of this version declares it: if its server sends it, no field rule hides it, and it passes as an undeclared field (`meshgateUndeclared: pass`); declare it, or set `meshgateUndeclared: omit`",
                    o.version, o.id, o.file
                ),
                stands_for: 1,
            });
        }
    }
    out
}

/// Where a contract's `successorVersion` value is.
fn successor_at(text: &str) -> Option<(usize, usize)> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    let i = doc
        .get("customProperties")?
        .as_sequence()?
        .iter()
        .position(|c| c.get("property").and_then(|p| p.as_str()) == Some("successorVersion"))?;
    let at = [
        Step::Key("customProperties".into()),
        Step::Index(i),
        Step::Key("value".into()),
    ];
    crate::base::locate::locate(text, &at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::path::normalize;
    use http::Method;

    /// A minimal contract of `domain` with one route.
    fn contract(id: &str, domain: &str, method: &str, path: &str) -> String {
        format!(
            "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\ndomain: {domain}\nschema:\n  - {{ name: rows, classification: internal }}\ncustomProperties:\n  - {{ property: owner, value: team@example }}\n  - property: meshgateRoutes\n    value:\n      - {{ method: {method}, path: \"{path}\", action: write, dataset: rows }}\n"
        )
    }

    /// The example mesh with one more contract, from `domain`'s source.
    fn with_contract(name: &str, domain: &str, text: String) -> Result<Snapshot, LoadErrors> {
        let mut inputs = crate::decision::authz::examples::example_inputs();
        inputs.contracts.push(Source {
            name: name.into(),
            text,
            domain: Some(domain.into()),
        });
        Snapshot::build(&inputs)
    }

    #[test]
    fn a_contracts_errors_not_shown_count_in_the_loads() {
        let routes: String = (0..80)
            .map(|i| format!("      - {{ method: \"B@D\", path: \"/bad/{i}\", action: read, dataset: rows }}\n"))
            .collect();
        let text = contract("finance.bad", "finance", "GET", "/bad")
            .replace("    value:\n", &format!("    value:\n{routes}"));
        let err = with_contract("finance/bad.odcs.yaml", "finance", text).expect_err("refused");
        // The contract's first 50, then its own line for the rest.
        assert_eq!(err.shown.len(), 51, "{:#?}", err.shown);
        assert_eq!(
            err.shown[50],
            "finance/bad.odcs.yaml: and 30 more errors not shown"
        );
        assert_eq!((err.not_shown, err.total()), (0, 80), "{:#?}", err.shown);
        assert_eq!(err.lines(), err.shown);
        assert!(err.to_string().ends_with("(and 79 more errors)"), "{err}");
    }

    #[test]
    fn another_domain_cannot_take_a_path_by_another_method() {
        let vip = contract("finance.vip", "finance", "DELETE", "/orders/vip");
        let err = with_contract("finance/vip.odcs.yaml", "finance", vip).expect_err("refused");
        assert_eq!(err.shown.len(), 1, "{:#?}", err.shown);
        let want = "finance/vip.odcs.yaml:12:33: customProperties.meshgateRoutes[0].path: DELETE /orders/vip overlaps `GET /orders/{id}` of policies/domains/sales/orders.odcs.yaml (domain `sales`): routes of different domains must not match the same path, whatever their methods";
        assert_eq!(err.shown[0], want);
        // A parameter over another domain's literal, by another method, too.
        let any = contract("sales.any", "sales", "DELETE", "/ledger/{entry}");
        let err = with_contract("sales/any.odcs.yaml", "sales", any).expect_err("refused");
        assert!(
            err.shown[0].contains("DELETE /ledger/{entry} overlaps `GET /ledger/entries"),
            "{:#?}",
            err.shown
        );
    }

    #[test]
    fn a_successor_path_no_route_matches_is_a_warning_at_it() {
        let successor = |target: &str| {
            let text = format!(
                "{}  - {{ property: successorVersion, value: \"{target}\" }}\n",
                contract("sales.old", "sales", "GET", "/old/{id}")
            );
            let s = with_contract("sales/old.odcs.yaml", "sales", text).expect("loads");
            let w: Vec<String> = s
                .warnings()
                .iter()
                .filter(|w| w.field == "customProperties.successorVersion")
                .map(|w| w.warning())
                .collect();
            w
        };
        assert_eq!(
            successor("/v9/orders?x=1"),
            ["sales/old.odcs.yaml:13:42: warning: customProperties.successorVersion: `/v9/orders` matches no route of the contracts loaded with this one: its Link header and its 410 would send clients to a 404"]
        );
        // Another product's route, by any method; the well-known documents;
        // a URI elsewhere: nothing to say.
        for routed in [
            "/orders/42",
            "/orders/search",
            "/.well-known/data-product/sales.orders",
            "https://elsewhere.example/v9",
        ] {
            assert_eq!(successor(routed), Vec::<String>::new(), "{routed}");
        }
    }

    #[test]
    fn a_version_that_leaves_out_another_versions_personal_field_is_a_warning() {
        // The example's two versions of orders declare the same personal
        // fields: nothing to say.
        let s = with_contract(
            "sales/none.odcs.yaml",
            "sales",
            contract("sales.none", "sales", "GET", "/none"),
        )
        .expect("loads");
        let about = |s: &Snapshot| -> Vec<String> {
            s.warnings()
                .iter()
                .filter(|w| w.field == "schema")
                .map(|w| w.warning())
                .collect()
        };
        assert_eq!(about(&s), Vec::<String>::new());
        // A third version that declares only the id.
        let v3 = |undeclared: &str| {
            format!(
                "apiVersion: v3.0.2\nkind: DataContract\nid: sales.orders.v3\nversion: 3.0.0\ndomain: sales\ndataProduct: orders\nschema:\n  - name: orders\n    classification: internal\n    properties:\n      - {{ name: id, logicalType: string }}\ncustomProperties:\n  - {{ property: owner, value: team@example }}{undeclared}\n  - property: meshgateRoutes\n    value:\n      - {{ method: GET, path: /v3/orders, action: read, dataset: orders }}\n"
            )
        };
        let s = with_contract("sales/v3.odcs.yaml", "sales", v3("")).expect("loads");
        let w = about(&s);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert_eq!(
            w[0],
            "sales/v3.odcs.yaml:8:3: warning: schema: `customer_email` is personal, confidential or restricted in version 2.0.0 of this product (`sales.orders`, policies/domains/sales/orders.odcs.yaml), but no dataset of this version declares it: if its server sends it, no field rule hides it, and it passes as an undeclared field (`meshgateUndeclared: pass`); declare it, or set `meshgateUndeclared: omit`"
        );
        assert!(w[1].contains("`customer_phone`"), "{}", w[1]);
        // A field restricted by its dataset's classification, which the
        // other two versions do not declare: each of them is told.
        let restricted = v3("").replace(
            "classification: internal\n    properties:\n      - { name: id, logicalType: string }",
            "classification: restricted\n    properties:\n      - { name: id, logicalType: string }\n      - { name: note, logicalType: string }",
        );
        assert!(restricted.contains("name: note"), "{restricted}");
        let s = with_contract("sales/v3.odcs.yaml", "sales", restricted).expect("loads");
        let mut told: Vec<String> = about(&s)
            .into_iter()
            .filter(|w| w.contains("`note`"))
            .map(|w| w.split(':').next().unwrap_or_default().to_string())
            .collect();
        told.sort_unstable();
        assert_eq!(
            told,
            [
                "policies/domains/sales/orders-v1.odcs.yaml",
                "policies/domains/sales/orders.odcs.yaml"
            ],
            "{:#?}",
            about(&s)
        );
        // Undeclared fields left out: nothing passes unmasked.
        let omit = "\n  - { property: meshgateUndeclared, value: omit }";
        let s = with_contract("sales/v3.odcs.yaml", "sales", v3(omit)).expect("loads");
        assert_eq!(about(&s), Vec::<String>::new());
    }

    #[test]
    fn within_a_domain_the_most_literal_path_wins_whatever_the_method() {
        let vip = contract("sales.vip", "sales", "DELETE", "/orders/vip");
        let s = with_contract("sales/vip.odcs.yaml", "sales", vip).expect("loads");
        let at = |m: Method| {
            s.routes()
                .lookup(&m, &normalize("/orders/vip").expect("path"))
        };
        assert!(matches!(at(Method::DELETE), Lookup::Found(t) if t.pattern == "/orders/vip"));
        // As in axum (matchit): the literal node is chosen, and it has no GET.
        assert_eq!(at(Method::GET), Lookup::MethodNotAllowed);
        assert_eq!(at(Method::HEAD), Lookup::MethodNotAllowed);
        let other = s
            .routes()
            .lookup(&Method::GET, &normalize("/orders/42").expect("path"));
        assert!(matches!(other, Lookup::Found(t) if t.pattern == "/orders/{id}"));
    }
}
