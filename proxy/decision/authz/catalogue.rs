//! The catalogue: the contracts' products as Cedar resources (products,
//! datasets, fields), with their routes, built one contract at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};

use crate::decision::contract::{Product, RouteSpec};
use crate::decision::routes::{RouteError, RouteTable, Target};
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
    /// (uid, kind, ancestors) of every resource, in index order.
    pub(super) registry: Vec<(EntityUid, usize, HashSet<EntityUid>)>,
}

impl Catalogue {
    /// Adds one product, its datasets and its routes; what is wrong with them
    /// goes to `errors`.
    pub(super) fn add(
        &mut self,
        p: Product,
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
        let mut base_entities = vec![product_entity.clone()];
        base_entities.extend(static_entities.get(&domain_uid).cloned());

        product_ancestors.insert(product_uid.clone());
        let datasets = self.add_datasets(
            &p,
            &domain_uid,
            &product_ancestors,
            &base_entities,
            types,
            errors,
        );
        let fields = self.add_fields(&p, &datasets, &domain_uid, types, errors);
        product_ancestors.remove(&product_uid);
        self.entities.push(product_entity);
        self.add_routes(&p, errors);
        self.registry
            .push((product_uid.clone(), PRODUCT, product_ancestors));
        let resource = Resource {
            id: Arc::from(p.id.as_str()),
            index: self.registry.len() - 1,
            kind: PRODUCT,
            uid: product_uid,
            entities: base_entities,
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
        ancestors: &HashSet<EntityUid>,
        product_entities: &[Entity],
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
            match Entity::new(ds_uid.clone(), attrs, ancestors.clone()) {
                Ok(ds) => {
                    let mut ents = vec![ds.clone()];
                    ents.extend(product_entities.iter().cloned());
                    self.entities.push(ds);
                    self.registry
                        .push((ds_uid.clone(), DATASET, ancestors.clone()));
                    datasets.push(Resource {
                        id: Arc::from(format!("{}/{name}", p.id)),
                        index: self.registry.len() - 1,
                        kind: DATASET,
                        uid: ds_uid,
                        entities: ents,
                    });
                }
                Err(e) => errors.push(format!("{}: dataset {name}: {e}", p.file)),
            }
        }
        datasets
    }

    /// A route of `p` that overlaps one of another domain's products: a path
    /// both match would go to the more literal one, so a domain could take
    /// another's paths and decide them with its own policies.
    fn foreign_overlap(&self, p: &Product, r: &RouteSpec, errors: &mut Vec<String>) {
        let own = self.entries.len();
        let other = self
            .routes
            .overlapping(&r.method, &r.path)
            .into_iter()
            .filter(|t| t.product != own)
            .find_map(|t| {
                let e = self.entries.get(t.product)?;
                (e.product.domain != p.domain).then_some((t, e))
            });
        if let Some((t, e)) = other {
            errors.push(format!(
                "{}: customProperties.meshgateRoutes: {} {} overlaps `{} {}` of {} (domain `{}`): routes of different domains must not match the same path",
                p.file, r.method, r.path, r.method, t.pattern, e.product.file, e.product.domain
            ));
        }
    }

    /// The routes of `p`, the next product entry.
    fn add_routes(&mut self, p: &Product, errors: &mut Vec<String>) {
        for r in &p.routes {
            let dataset = r
                .dataset
                .as_ref()
                .and_then(|d| p.datasets.iter().position(|(n, _)| n == d));
            let target = Target {
                product: self.entries.len(),
                action: r.action,
                dataset,
                pattern: r.path.clone(),
                user_token: r.user_token.unwrap_or(p.user_token),
            };
            match self.routes.insert(r.method.clone(), &r.path, target) {
                Ok(()) => self.foreign_overlap(p, r, errors),
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
                    errors.push(format!(
                        "{}: customProperties.meshgateRoutes: {route} is already routed by {other} (pattern `{by_pattern}`)",
                        p.file
                    ));
                }
                Err(e) => {
                    errors.push(format!("{}: customProperties.meshgateRoutes: {e}", p.file));
                }
            }
        }
    }
}
