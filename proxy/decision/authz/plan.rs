//! Field plans: what of an allowed response a caller sees. Each declared
//! field of the request's dataset is decided as `read_field` on its
//! `Mesh::Field` (candidates, specialisation and per-thread caches as for
//! requests); a field that is not allowed is hidden, with the forbids that
//! hid it. The plan is built once per thread for each (snapshot, caller,
//! dataset) and the values of the context the field policies read: a
//! response of a 50-field dataset costs one lookup, not 50 decisions.

use std::net::IpAddr;
use std::sync::Arc;

use crate::decision::contract::Action;
use crate::decision::fields::{FieldPlan, FieldSpec, Hidden, Mask, ShadowField};
use crate::decision::routes::Target;
use crate::model::identity::Principal;
use crate::FastMap;

use super::fields::FieldSet;
use super::*;

/// The action index of `read_field`.
const READ_FIELD: usize = Action::ReadField as usize;

/// What one plan was built for: the values of the context its policies
/// read (`reads`: bits of `FEW_VALUED`; `None`: anything, and then every
/// value of the request that a context is made of).
struct PlanKey {
    reads: Option<u8>,
    seen: Seen,
    path: Option<Box<str>>,
    source_ip: Option<IpAddr>,
    /// The whole user (its groups, scopes and claims, not only its id: two
    /// tokens of one subject may carry different ones).
    user: Option<Box<crate::decision::jwt::User>>,
}

impl PlanKey {
    fn of(reads: Option<u8>, parsed: &ParsedRequest<'_>) -> PlanKey {
        let all = reads.is_none();
        PlanKey {
            reads,
            seen: Seen::of(parsed),
            path: all.then(|| parsed.path.into()),
            source_ip: all.then_some(parsed.source_ip),
            user: parsed.user.filter(|_| all).map(|u| Box::new(u.clone())),
        }
    }

    fn matches(&self, parsed: &ParsedRequest<'_>) -> bool {
        match self.reads {
            Some(mask) => self.seen.matches(mask, parsed),
            None => {
                self.seen.matches(u8::MAX, parsed)
                    && self.path.as_deref() == Some(parsed.path)
                    && self.source_ip == Some(parsed.source_ip)
                    && self.user.as_deref() == parsed.user
            }
        }
    }
}

/// The plans of one caller and dataset, newest last.
#[derive(Default)]
struct Plans {
    built: Vec<(PlanKey, Arc<FieldPlan>)>,
}

/// Plans kept per caller and dataset before the oldest goes.
const PLANS_PER_DATASET: usize = 16;
/// (caller, dataset) entries a thread keeps before it forgets them all.
const PLAN_CAPACITY: usize = 4096;

/// caller -> (snapshot serial, product, dataset) -> plans.
#[derive(Default)]
struct PlanCache {
    callers: FastMap<String, FastMap<(u64, usize, usize), Plans>>,
    len: usize,
}

thread_local! {
    static PLANS: std::cell::RefCell<PlanCache> = std::cell::RefCell::new(PlanCache::default());
}

impl Snapshot {
    /// The field plan of an allowed request to `target`: `None` when its
    /// dataset declares no fields.
    pub fn field_plan(
        &self,
        principal: &Principal,
        target: &Target,
        parsed: &ParsedRequest<'_>,
    ) -> Option<Arc<FieldPlan>> {
        let d = target.dataset?;
        let set = self.products.get(target.product)?.fields.get(d)?.as_ref()?;
        let name = principal.header_form_ref();
        let key = (self.serial, target.product, d);
        // Values as long as a client may send are not worth keeping.
        let short = |v: Option<&str>| v.is_none_or(|v| v.len() <= Part::LONGEST_VALUE);
        let cacheable =
            short(Some(parsed.method)) && short(parsed.purpose) && short(Some(parsed.path));
        if cacheable {
            let hit = PLANS.with(|c| {
                let c = c.borrow();
                let plans = c.callers.get(&*name)?.get(&key)?;
                plans
                    .built
                    .iter()
                    .rev()
                    .find(|(k, _)| k.matches(parsed))
                    .map(|(_, p)| p.clone())
            });
            if hit.is_some() {
                return hit;
            }
        }
        let plan = Arc::new(self.build_plan(principal, &name, set, parsed));
        if cacheable {
            let reads = self.plan_reads(&name, set);
            PLANS.with(|c| {
                let mut c = c.borrow_mut();
                if c.len >= PLAN_CAPACITY {
                    c.callers.clear();
                    c.len = 0;
                }
                let per_caller = c.callers.entry(name.into_owned()).or_default();
                let fresh = !per_caller.contains_key(&key);
                let plans = per_caller.entry(key).or_default();
                if plans.built.len() >= PLANS_PER_DATASET {
                    plans.built.remove(0);
                }
                plans.built.push((PlanKey::of(reads, parsed), plan.clone()));
                if fresh {
                    c.len += 1;
                }
            });
        }
        Some(plan)
    }

    /// What the contract of `target`'s product sets of conformance
    /// (nothing, for a target of no product).
    pub fn conformance(&self, target: &Target) -> crate::decision::fields::ConformanceSettings {
        self.products
            .get(target.product)
            .map(|e| e.product.conformance)
            .unwrap_or_default()
    }

    /// Decides every field of `set` for the caller.
    fn build_plan(
        &self,
        principal: &Principal,
        name: &str,
        set: &FieldSet,
        parsed: &ParsedRequest<'_>,
    ) -> FieldPlan {
        let mut plan = FieldPlan {
            dataset: set.dataset.clone(),
            hidden: Vec::new(),
            visible: Vec::new(),
            verdicts: Vec::with_capacity(set.resources.len()),
            shadow_hidden: None,
            shadow_differs: Vec::new(),
            specs: set.specs.clone(),
            undeclared: set.undeclared,
            errors: Vec::new(),
            trees: Default::default(),
        };
        let mut shadow = self
            .shadow
            .as_ref()
            .map(|_| ShadowPlan::with_capacity(set.resources.len()));
        for (spec, field) in set.specs.fields.iter().zip(&set.resources) {
            let path: Arc<str> = Arc::from(spec.path.as_str());
            // A field under a hidden one is hidden with it.
            let under_hidden = spec
                .parent
                .and_then(|p| plan.verdicts.get(p).copied().flatten());
            let (decision, shadow_decision) =
                self.decide_resource(principal, name, field, READ_FIELD, parsed, true);
            plan.errors.extend(decision.errors.iter().cloned());
            // Fail closed: a field whose decision erred (a forbid that
            // could not be evaluated is skipped by Cedar) is hidden.
            let visible = decision.allowed && decision.errors.is_empty();
            match (visible, under_hidden) {
                (true, None) => {
                    plan.verdicts.push(None);
                    plan.visible.push(path.clone());
                }
                (true, Some(h)) => {
                    let mut policies = plan.hidden[h].policies.clone();
                    policies.sort_unstable();
                    plan.verdicts.push(Some(plan.hidden.len()));
                    plan.hidden.push(Hidden {
                        path: path.clone(),
                        mask: plan.hidden[h].mask,
                        policies,
                    });
                }
                (false, _) => {
                    plan.verdicts.push(Some(plan.hidden.len()));
                    // Hidden by its forbids; or, when it erred, by no
                    // policy (the errors are in the plan's).
                    let policies = if decision.allowed {
                        Vec::new()
                    } else {
                        decision.policies
                    };
                    plan.hidden.push(Hidden {
                        path: path.clone(),
                        mask: spec.mask,
                        policies,
                    });
                }
            }
            if let (Some(sp), Some(s)) = (shadow.as_mut(), shadow_decision) {
                let enforced = plan.verdicts.last().copied().flatten();
                let enforced = enforced.and_then(|h| plan.hidden.get(h));
                sp.add(spec, path, s, enforced);
            }
        }
        if let Some(sp) = shadow {
            plan.shadow_hidden = Some(sp.hidden);
            plan.shadow_differs = sp.differs;
        }
        plan
    }

    /// What of the context the field policies of `set` (enforced and
    /// shadow) read for this caller: the union of their candidates' parts
    /// (`None`: something with many values).
    fn plan_reads(&self, name: &str, set: &FieldSet) -> Option<u8> {
        let mut mask = 0u8;
        let slots: &[usize] = if self.shadow.is_some() {
            &[ENFORCED, SHADOW]
        } else {
            &[ENFORCED]
        };
        decisions_of(FIELD).with(|c| {
            let c = c.borrow();
            for (field, &slot) in set
                .resources
                .iter()
                .flat_map(|f| slots.iter().map(move |s| (f, s)))
            {
                let found = c
                    .get(name, (self.serial, field.index))
                    .and_then(|e| e.candidates[slot][READ_FIELD].clone());
                // Not remembered (the cache was emptied meanwhile): assume anything.
                let candidates = found?;
                if candidates.untestable {
                    return None;
                }
                for part in &candidates.parts {
                    mask |= part.reads?;
                }
            }
            Some(mask)
        })
    }
}

/// The shadow set's side of a plan, field by field beside the enforced one.
struct ShadowPlan {
    /// The paths it hides.
    hidden: Vec<Arc<str>>,
    /// Where it differs from the enforced plan.
    differs: Vec<ShadowField>,
    /// Per field so far: `Some` (how, and by which forbids) when the shadow
    /// set hides it (by its own decision or its enclosing field's).
    verdicts: Vec<Option<(Mask, Vec<String>)>>,
}

impl ShadowPlan {
    fn with_capacity(n: usize) -> ShadowPlan {
        ShadowPlan {
            hidden: Vec::new(),
            differs: Vec::new(),
            verdicts: Vec::with_capacity(n),
        }
    }

    /// The shadow decision `s` of the next field, whose enforced verdict
    /// is `enforced` (`Some`: hidden so).
    fn add(&mut self, spec: &FieldSpec, path: Arc<str>, s: Decision, enforced: Option<&Hidden>) {
        let under = spec
            .parent
            .and_then(|p| self.verdicts.get(p).cloned().flatten());
        let verdict = match under {
            Some(parent) => Some(parent),
            None if !s.allowed => Some((spec.mask, s.policies.clone())),
            None => None,
        };
        if verdict.is_some() {
            self.hidden.push(path.clone());
        }
        match (&verdict, enforced) {
            (Some((mask, policies)), None) => self.differs.push(ShadowField {
                path,
                hide: true,
                mask: *mask,
                policies: policies.clone(),
            }),
            (None, Some(h)) => self.differs.push(ShadowField {
                path,
                hide: false,
                mask: h.mask,
                policies: s.policies,
            }),
            _ => {}
        }
        self.verdicts.push(verdict);
    }
}
