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
}

impl Level {
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
        level
            .members
            .insert(spec.name.as_bytes().to_vec().into_boxed_slice(), rule);
    }
    Arc::new(level)
}
