//! The entities of a snapshot: data products, datasets and fields as Cedar
//! resources, principals and end users as Cedar entities.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    ActionConstraint, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicySet,
    ResourceConstraint, RestrictedExpression, Schema,
};

use crate::decision::contract::Product;
use crate::decision::routes::{RouteTable, Target};
use crate::model::identity::Principal;
use crate::model::response::ResponseTransform;

use super::*;

pub(super) const NS: &str = "Mesh";

pub(super) fn type_name(t: &str) -> EntityTypeName {
    // Our own fixed names always parse.
    EntityTypeName::from_str(&format!("{NS}::{t}"))
        .unwrap_or_else(|_| unreachable!("valid type name {t}"))
}

pub(super) fn uid(t: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
}

pub(super) fn string_set(items: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

/// The attributes products and datasets share (see the schema): a
/// dataset is of its product's version, and has its status (the
/// contract's `status` in lower case, `active` when it has none).
pub(super) fn resource_attrs(
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
        (
            "version".to_string(),
            RestrictedExpression::new_string(p.version.clone()),
        ),
        (
            "status".to_string(),
            RestrictedExpression::new_string(p.lifecycle.status.as_str().to_string()),
        ),
    ])
}

/// Candidate policies (positions in `Index::policies`), one list per action.
pub(super) type PerAction = [Box<[u32]>; ACTIONS];

/// Resource types: products, datasets and fields.
pub(super) const PRODUCT: usize = 0;
pub(super) const DATASET: usize = 1;
pub(super) const FIELD: usize = 2;
pub(super) const KINDS: usize = 3;

/// A resource (product, dataset or field) with what a decision about it needs.
#[derive(Debug)]
pub(super) struct Resource {
    pub(super) uid: EntityUid,
    /// Its id for decision records: `<product>`, `<product>/<dataset>` or
    /// `<product>/<dataset>/<field path>`.
    pub(super) id: Arc<str>,
    /// Position in the candidate index.
    pub(super) index: usize,
    /// `PRODUCT`, `DATASET` or `FIELD`.
    pub(super) kind: usize,
    /// The resource entity...
    pub(super) entity: Entity,
    /// ...and its ancestors' entities (enclosing fields, dataset, product,
    /// domain), shared by every resource they enclose: 50,000 fields each
    /// with copies of theirs took 1.27 GB.
    pub(super) up: Arc<[Entity]>,
}

impl Resource {
    /// The resource entity and its ancestors' entities.
    pub(super) fn entities(&self) -> impl Iterator<Item = &Entity> {
        std::iter::once(&self.entity).chain(self.up.iter())
    }

    /// What the resources inside this one have above them.
    pub(super) fn chain(&self) -> Arc<[Entity]> {
        self.entities().cloned().collect()
    }
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
pub(super) struct Index {
    /// Every policy of the set, static or linked.
    pub(super) policies: Vec<Policy>,
    pub(super) open: [PerAction; KINDS],
    pub(super) groups: Vec<[PerAction; KINDS]>,
    pub(super) scoped: Vec<PerAction>,
    /// Per resource: the groups it belongs to.
    pub(super) member_of: Vec<Vec<usize>>,
    /// Every policy's scope-free form, made on first use (by position).
    pub(super) specialized: Vec<OnceLock<Option<Specialized>>>,
}

impl Index {
    /// `resources[i]`: (uid, kind, ancestors) of the resource with index `i`.
    pub(super) fn build(
        set: &PolicySet,
        resources: &[(EntityUid, usize, Arc<HashSet<EntityUid>>)],
        types: &[EntityTypeName; KINDS],
        actions: &[EntityUid; ACTIONS],
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
            for a in ancestors.iter() {
                if by_uid.contains_key(a) {
                    under.entry(a).or_default().push(i);
                } else {
                    let n = group_of.len();
                    let g = *group_of.entry(a).or_insert(n);
                    member_of[i].push(g);
                }
            }
        }
        type Bucket = [Vec<u32>; ACTIONS];
        let mut open: [Bucket; KINDS] = Default::default();
        let mut groups: Vec<[Bucket; KINDS]> =
            (0..group_of.len()).map(|_| Default::default()).collect();
        let mut scoped: Vec<Bucket> = (0..resources.len()).map(|_| Default::default()).collect();
        let policies: Vec<Policy> = set.policies().cloned().collect();
        for (at, p) in policies.iter().enumerate() {
            let Ok(at) = u32::try_from(at) else { break };
            let acts: [bool; ACTIONS] = match p.action_constraint() {
                ActionConstraint::Any => [true; ACTIONS],
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
    pub(super) fn candidates(
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
pub(super) struct ProductEntry {
    pub(super) product: Product,
    pub(super) resource: Resource,
    pub(super) datasets: Vec<Resource>,
    /// The contract's `version`, as metrics label it.
    pub(super) version: Arc<str>,
    /// What the response stage does to its responses (today: lifecycle
    /// headers); `None` for most products, and then nothing runs.
    pub(super) response: Option<Arc<dyn ResponseTransform>>,
    /// Per dataset (as `datasets`): its declared fields as resources, if
    /// it declares any.
    pub(super) fields: Vec<Option<super::fields::FieldSet>>,
}

/// Adds `p` (static, or linked from a template of `from`) to `to`. Ids are
/// unique in the full set, so adding to a subset of it cannot clash.
pub(super) fn add_policy(to: &mut PolicySet, p: &Policy, from: &PolicySet) {
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

impl Snapshot {
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The version and lifecycle of the product `target` leads to.
    pub fn lifecycle(
        &self,
        target: &Target,
    ) -> Option<(&Arc<str>, &crate::decision::lifecycle::Lifecycle)> {
        self.products
            .get(target.product)
            .map(|p| (&p.version, &p.product.lifecycle))
    }

    /// The response transform of what `target` leads to, chosen when the
    /// request is routed.
    pub fn response_transform(&self, target: &Target) -> Option<&Arc<dyn ResponseTransform>> {
        self.products.get(target.product)?.response.as_ref()
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn has_shadow(&self) -> bool {
        self.shadow.is_some()
    }

    /// Policies enforced, static and linked.
    pub fn policy_count(&self) -> usize {
        self.enforced.count
    }

    /// Policies of the shadow set; 0 without one.
    pub fn shadow_policy_count(&self) -> usize {
        self.shadow.as_ref().map_or(0, |s| s.count)
    }

    /// The product a route target names.
    pub fn product(&self, target: &Target) -> Option<&Product> {
        self.products.get(target.product).map(|p| &p.product)
    }

    /// Every product of the snapshot's contracts.
    pub fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.iter().map(|p| &p.product)
    }

    /// The products and contracts as the well-known documents show them.
    pub fn described(&self) -> &crate::decision::describe::Described {
        &self.described
    }

    pub(super) fn resource(&self, target: &Target) -> Option<&Resource> {
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

    pub(super) fn principal_parents(
        &self,
        principal: &Principal,
        name: &str,
    ) -> HashSet<EntityUid> {
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

    /// The entities a Cedar policy test decides with when it gives none:
    /// the caller as the sidecar builds it from its certificate's id (its
    /// domain by namespace, its parents from `entities.json`) and the
    /// resource with its product and domain as the contracts make them. A
    /// case filled in this way cannot drift from the real setup.
    pub fn case_entities(
        &self,
        principal: &EntityUid,
        resource: &EntityUid,
    ) -> Result<Entities, String> {
        if principal.type_name() != &self.service_type {
            return Err(format!(
                "request.principal: `{principal}`: only a {} is built from the snapshot; give the case its own entities",
                self.service_type
            ));
        }
        let id = principal.id().unescaped();
        let caller =
            Principal::from_str(id).map_err(|e| format!("request.principal: `{id}`: {e}"))?;
        let found = self
            .products
            .iter()
            .flat_map(|p| {
                std::iter::once(&p.resource)
                    .chain(&p.datasets)
                    .chain(p.fields.iter().flatten().flat_map(|f| &f.resources))
            })
            .find(|r| &r.uid == resource)
            .ok_or_else(|| {
                format!("request.resource: `{resource}` is no product, dataset or field of the contracts; give the case its own entities")
            })?;
        let mut entities = Vec::with_capacity(found.up.len() + 2);
        entities.push(self.principal_entity(&caller)?);
        entities.extend(found.entities().cloned());
        Entities::from_entities(entities, None).map_err(|e| e.to_string())
    }

    /// The entities of one decision: the caller and the resource with its
    /// ancestors. Building them (Cedar computes their transitive closure) costs
    /// more than most decisions, and a client asks for the same few resources
    /// again and again, so each thread keeps recent sets for this snapshot.
    pub(super) fn entities_for(
        &self,
        principal: &Principal,
        name: &str,
        resource: &Resource,
    ) -> Result<DecisionEntities, String> {
        let key = (self.serial, resource.index);
        let cache = decisions_of(resource.kind);
        let cached = cache.with(|c| c.borrow().get(name, key).map(|e| e.who.clone()));
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let principal_entity = self.principal_entity(principal)?;
        let uid = principal_entity.uid();
        let mut keys = self.principal_parents(principal, name);
        keys.insert(uid.clone());
        let mut ents = Vec::with_capacity(resource.up.len() + 2);
        ents.push(principal_entity);
        ents.extend(resource.entities().cloned());
        let entities = Arc::new(Entities::from_entities(ents, None).map_err(|e| e.to_string())?);
        let found = DecisionEntities {
            principal: uid,
            entities,
            principal_in: Arc::new(keys),
        };
        cache.with(|c| c.borrow_mut().insert(name, key, found.clone()));
        Ok(found)
    }
}
