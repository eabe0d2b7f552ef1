//! The declared fields of the contracts' datasets as Cedar resources:
//! `Mesh::Field::"<product>/<dataset>/<path>"`, in its enclosing field (if
//! nested) and its dataset, filed in the candidate index like products and
//! datasets, so that `read_field` decisions are made as requests are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, RestrictedExpression};

use crate::decision::contract::Product;
use crate::decision::fields::{DatasetFields, Undeclared};

use super::build::MeshTypes;
use super::catalogue::Catalogue;
use super::*;

/// What the fields of one parent have above them: their ancestors, and
/// their ancestors' entities.
#[derive(Clone)]
struct Above {
    ancestors: Arc<HashSet<EntityUid>>,
    up: Arc<[Entity]>,
}

/// One dataset's declared fields: as the contract declares them, and as
/// resources (`resources[i]` is `specs.fields[i]`).
#[derive(Debug)]
pub(super) struct FieldSet {
    pub(super) specs: Arc<DatasetFields>,
    pub(super) resources: Vec<Resource>,
    pub(super) undeclared: Undeclared,
    /// `<product>/<dataset>`.
    pub(super) dataset: Arc<str>,
}

impl Catalogue {
    /// The fields of each of `datasets` (the resources of `p.datasets`, in
    /// order), added to the catalogue's entities and registry.
    pub(super) fn add_fields(
        &mut self,
        p: &Product,
        datasets: &[Resource],
        domain_uid: &EntityUid,
        types: &MeshTypes,
        errors: &mut Vec<String>,
    ) -> Vec<Option<FieldSet>> {
        let undeclared = p
            .undeclared
            .unwrap_or_else(|| Undeclared::default_for(&p.classification));
        p.datasets
            .iter()
            .zip(datasets)
            .map(|((name, classification), ds)| {
                let specs = p
                    .fields
                    .iter()
                    .find(|f| *f.dataset == **name && !f.fields.is_empty())?;
                let resources =
                    self.field_resources(p, specs, ds, classification, domain_uid, types, errors);
                Some(FieldSet {
                    specs: Arc::new(specs.clone()),
                    resources,
                    undeclared,
                    dataset: ds.id.clone(),
                })
            })
            .collect()
    }

    /// The resources of one dataset's fields, parents before children.
    #[allow(clippy::too_many_arguments)]
    fn field_resources(
        &mut self,
        p: &Product,
        specs: &DatasetFields,
        ds: &Resource,
        ds_classification: &str,
        domain_uid: &EntityUid,
        types: &MeshTypes,
        errors: &mut Vec<String>,
    ) -> Vec<Resource> {
        let mut out: Vec<Resource> = Vec::with_capacity(specs.fields.len());
        // What the fields of one parent (the dataset, `None`, or a field)
        // have above them, made once and shared by all of them.
        let mut above: HashMap<Option<usize>, Above> = HashMap::new();
        for spec in &specs.fields {
            let id: Arc<str> = Arc::from(format!("{}/{}", ds.id, spec.path));
            let field_uid = uid(&types.field, &id);
            let classification = spec.classification.as_deref().unwrap_or(ds_classification);
            let mut attrs = resource_attrs(p, domain_uid, classification);
            let text = |s: &str| RestrictedExpression::new_string(s.to_string());
            attrs.insert("name".into(), text(&spec.name));
            attrs.insert("path".into(), text(&spec.path));
            attrs.insert("dataset".into(), text(&specs.dataset));
            attrs.insert("tags".into(), string_set(&spec.tags));
            attrs.insert("pii".into(), RestrictedExpression::new_bool(spec.pii));
            attrs.insert(
                "logical_type".into(),
                text(spec.logical_type.as_deref().unwrap_or("")),
            );
            // The enclosing field (and its ancestors), or the dataset (and its).
            let parent = spec.parent.filter(|&i| i < out.len());
            let Above { ancestors, up } = above
                .entry(parent)
                .or_insert_with(|| {
                    let r = parent.and_then(|i| out.get(i)).unwrap_or(ds);
                    let mut a = self
                        .registry
                        .get(r.index)
                        .map(|r| HashSet::clone(&r.2))
                        .unwrap_or_default();
                    a.insert(r.uid.clone());
                    Above {
                        ancestors: Arc::new(a),
                        up: r.chain(),
                    }
                })
                .clone();
            let (entity, ancestors) =
                match Entity::new(field_uid.clone(), attrs, (*ancestors).clone()) {
                    Ok(e) => (e, ancestors),
                    Err(e) => {
                        errors.push(format!("{}: field {id}: {e}", p.file));
                        // Keeps `out` parallel to the specs; the build fails anyway.
                        (Entity::with_uid(field_uid.clone()), Arc::default())
                    }
                };
            self.entities.push(entity.clone());
            self.registry.push((field_uid.clone(), FIELD, ancestors));
            out.push(Resource {
                uid: field_uid,
                id,
                index: self.registry.len() - 1,
                kind: FIELD,
                entity,
                up,
            });
        }
        out
    }
}
