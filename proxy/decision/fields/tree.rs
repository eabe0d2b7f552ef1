//! A field plan as the masker walks it: per declared object level, what
//! to do with each key. Built once per plan, on its first masked (or
//! checked) response, and kept with the plan ([`FieldPlan::tree`]): a
//! response takes an `Arc` of it.

use crate::FastMap;
use std::sync::Arc;

use super::{loose, FieldCheck, FieldPlan, Mask, Shape, Undeclared};

/// What the scanner does with a member of a declared object.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Visible; below it, `Some` when it has declared properties (an
    /// object, or the objects of an array).
    Show(Shape, Option<Arc<Level>>),
    Hide(Mask),
}

impl Rule {
    /// Whether the member is hidden, or a declared field below it is.
    fn hides_a_field(&self) -> bool {
        match self {
            Rule::Hide(_) => true,
            Rule::Show(_, Some(below)) => below.hides_a_field(),
            Rule::Show(_, None) => false,
        }
    }
}

/// One declared object level: its members' rules, and what undeclared
/// members get.
#[derive(Debug, Default)]
pub struct Level {
    /// The declared members in the contract's order, and each one's place
    /// in it by name.
    order: Vec<(Box<[u8]>, Rule)>,
    members: FastMap<Box<[u8]>, usize>,
    pub undeclared: Option<Undeclared>,
    /// `redact`'s placeholder in a text format (CSV), where a value has no
    /// type of its own, by the hidden member's `logicalType`.
    pub text_placeholders: FastMap<Box<[u8]>, &'static [u8]>,
    /// What its members are checked against, in the tree of a response
    /// sampled for conformance (`conform.rs`); `None` otherwise.
    pub checks: Option<Box<LevelChecks>>,
    /// The members that hide a field (they are hidden, or a field below
    /// them is), as `loose.rs` compares names: a key that is one of them
    /// written otherwise cannot be masked.
    loose: loose::Names,
}

/// A declared level's conformance checks.
#[derive(Debug, Default)]
pub struct LevelChecks {
    /// Each declared member's index in `list`.
    pub members: FastMap<Box<[u8]>, u16>,
    /// Each declared member's check, and its bit among the level's
    /// `required` ones (0 when it is not required).
    pub list: Vec<(FieldCheck, u64)>,
    /// The bits of the required members (the first 64 of a level are
    /// checked for presence).
    pub required: u64,
}

/// `Frame::cur` of a member without a check.
pub const NO_CHECK: u16 = u16::MAX;

/// `redact`'s placeholder for a value of `logical_type` in a text format.
fn text_placeholder(logical_type: Option<&str>) -> &'static [u8] {
    match logical_type {
        Some("number" | "integer") => b"0",
        Some("boolean") => b"false",
        _ => b"***",
    }
}

impl Level {
    /// Whether anything at or below this level is hidden (or undeclared
    /// members are not passed).
    pub fn hides_anything(&self) -> bool {
        !matches!(self.undeclared, Some(Undeclared::Pass) | None)
            || self.order.iter().any(|(_, r)| match r {
                Rule::Hide(_) => true,
                Rule::Show(_, Some(below)) => below.hides_anything(),
                Rule::Show(_, None) => false,
            })
    }

    /// Whether a declared field at or below this level is hidden (what
    /// undeclared members get aside).
    pub fn hides_a_field(&self) -> bool {
        self.order.iter().any(|(_, r)| r.hides_a_field())
    }

    /// Whether `name`, a key (or CSV column) that is no declared name of
    /// this level, is the name of a member that hides a field written
    /// otherwise (`Customer_Email`, ` customer_email`, `customerEmail`)
    /// where undeclared members pass: a lenient reader would take it for
    /// the member, so its value cannot pass as an undeclared one's (`omit`
    /// drops it and `refuse` refuses it anyway). Called only for a key no
    /// rule matched.
    pub fn near_miss(&self, name: &[u8]) -> bool {
        super::passes(self.undeclared) && self.loose.has(name)
    }

    /// The loose forms of the members that hide a field ([`Level::near_miss`]'s
    /// names), for the fuzz targets' references.
    pub fn hiding_forms(&self) -> impl Iterator<Item = &str> {
        self.loose.forms()
    }

    /// The rule for a key (its decoded name).
    pub fn rule(&self, name: &[u8]) -> Option<&Rule> {
        self.members.get(name).map(|&at| &self.order[at].1)
    }

    /// The rule for a key, tried first at `hint`, where the member after
    /// the last one found would be: records of one upstream send their
    /// members in one order, so most keys cost a comparison instead of a
    /// hash. Returns the hint for the next key too.
    pub fn rule_from(&self, name: &[u8], hint: usize) -> (Option<&Rule>, usize) {
        if let Some((n, rule)) = self.order.get(hint) {
            if **n == *name {
                return (Some(rule), hint + 1);
            }
        }
        match self.members.get(name) {
            Some(&at) => (Some(&self.order[at].1), at + 1),
            None => (None, hint),
        }
    }
}

/// The record level of a plan's dataset (built anew: a response takes the
/// plan's own, [`FieldPlan::tree`]).
pub fn of(plan: &FieldPlan) -> Arc<Level> {
    build(plan, None, false)
}

/// The same, with each level's conformance checks
/// ([`FieldPlan::checked_tree`]).
pub fn checked(plan: &FieldPlan) -> Arc<Level> {
    build(plan, None, true)
}

/// The level of the fields whose parent is `parent`.
fn build(plan: &FieldPlan, parent: Option<usize>, checked: bool) -> Arc<Level> {
    let mut level = Level {
        order: Vec::new(),
        members: FastMap::default(),
        undeclared: Some(plan.undeclared),
        text_placeholders: FastMap::default(),
        checks: checked.then(Box::default),
        loose: loose::Names::default(),
    };
    let mut hiding = Vec::new();
    for (i, spec) in plan.specs.fields.iter().enumerate() {
        if spec.parent != parent {
            continue;
        }
        let rule = match plan.verdicts.get(i).copied().flatten() {
            Some(h) => Rule::Hide(plan.hidden.get(h).map_or(Mask::Omit, |h| h.mask)),
            None => match spec.shape {
                Shape::Leaf => Rule::Show(Shape::Leaf, None),
                shape => Rule::Show(shape, Some(build(plan, Some(i), checked))),
            },
        };
        if rule.hides_a_field() {
            hiding.push(spec.name.as_str());
        }
        let name: Box<[u8]> = spec.name.as_bytes().into();
        if let Some(checks) = level.checks.as_mut() {
            add_check(checks, &name, &spec.check);
        }
        if matches!(rule, Rule::Hide(Mask::Redact)) {
            let placeholder = text_placeholder(spec.logical_type.as_deref());
            level.text_placeholders.insert(name.clone(), placeholder);
        }
        // (A contract declares a name once per level; were it twice, the
        // last would stand.)
        match level.members.get(&name) {
            Some(&at) => level.order[at].1 = rule,
            None => {
                level.members.insert(name.clone(), level.order.len());
                level.order.push((name, rule));
            }
        }
    }
    level.loose = loose::Names::new(hiding);
    Arc::new(level)
}

/// A member's check in its level's.
fn add_check(checks: &mut LevelChecks, name: &[u8], check: &FieldCheck) {
    let Ok(index) = u16::try_from(checks.list.len()) else {
        return;
    };
    if index == NO_CHECK {
        return;
    }
    let taken = checks.required.count_ones();
    let bit = if check.required && taken < 64 {
        1u64 << taken
    } else {
        0
    };
    checks.required |= bit;
    checks.list.push((check.clone(), bit));
    checks.members.insert(name.into(), index);
}
