//! A field plan as the scanner walks it: per declared object level, what
//! to do with each key.

use std::collections::HashMap;
use std::sync::Arc;

use crate::decision::fields::{FieldPlan, Mask, Shape, Undeclared};

/// What the scanner does with a member of a declared object.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Visible; below it, `Some` when it has declared properties (an
    /// object, or the objects of an array).
    Show(Shape, Option<Arc<Level>>),
    Hide(Mask),
}

/// One declared object level: its members' rules, and what undeclared
/// members get.
#[derive(Debug, Default)]
pub struct Level {
    pub members: HashMap<Box<[u8]>, Rule>,
    pub undeclared: Option<Undeclared>,
    /// `redact`'s placeholder in a text format (CSV), where a value has no
    /// type of its own, by the hidden member's `logicalType`.
    pub text_placeholders: HashMap<Box<[u8]>, &'static [u8]>,
}

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
            || self.members.values().any(|r| match r {
                Rule::Hide(_) => true,
                Rule::Show(_, Some(below)) => below.hides_anything(),
                Rule::Show(_, None) => false,
            })
    }

    /// The rule for a key (its decoded name).
    pub fn rule(&self, name: &[u8]) -> Option<&Rule> {
        self.members.get(name)
    }
}

/// The record level of a plan's dataset.
pub fn of(plan: &FieldPlan) -> Arc<Level> {
    build(plan, None)
}

/// The level of the fields whose parent is `parent`.
fn build(plan: &FieldPlan, parent: Option<usize>) -> Arc<Level> {
    let mut level = Level {
        members: HashMap::new(),
        undeclared: Some(plan.undeclared),
        text_placeholders: HashMap::new(),
    };
    for (i, spec) in plan.specs.fields.iter().enumerate() {
        if spec.parent != parent {
            continue;
        }
        let rule = match plan.verdicts.get(i).copied().flatten() {
            Some(h) => Rule::Hide(plan.hidden.get(h).map_or(Mask::Omit, |h| h.mask)),
            None => match spec.shape {
                Shape::Leaf => Rule::Show(Shape::Leaf, None),
                shape => Rule::Show(shape, Some(build(plan, Some(i)))),
            },
        };
        let name: Box<[u8]> = spec.name.as_bytes().into();
        if matches!(rule, Rule::Hide(Mask::Redact)) {
            let placeholder = text_placeholder(spec.logical_type.as_deref());
            level.text_placeholders.insert(name.clone(), placeholder);
        }
        level.members.insert(name, rule);
    }
    Arc::new(level)
}
