//! What the JSON scanner does with the value of a member of a declared
//! object, by its key: the member's rule, or, for a key no rule matches,
//! what undeclared members get, unless the key is a hidden field's name
//! written otherwise (`tree::Level::near_miss`), which cannot be
//! masked. That check runs only for a key no declared name matched.

use std::sync::Arc;

use super::tree::{Level, Rule};
use crate::decision::fields::{Mask, Shape, Undeclared};

/// What happens to the value of the member being read at a declared level.
#[derive(Debug, Clone)]
pub(super) enum Member {
    Copy,
    Skip,
    Null,
    Redact,
    Capture(Mask),
    Into(Arc<Level>),
}

/// Why a member's value cannot be passed on in any form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unmaskable {
    /// An undeclared member under `undeclared: refuse`.
    Undeclared,
    /// A member that hides a field, under a name written otherwise.
    HiddenOtherwise,
}

impl Unmaskable {
    /// The reason logged (a key may be data, a record keyed by value: its
    /// length is said, not its text).
    pub(super) fn reason(self, name: &[u8]) -> String {
        match self {
            Unmaskable::Undeclared => format!("an undeclared field ({} bytes)", name.len()),
            Unmaskable::HiddenOtherwise => format!(
                "a key ({} bytes) that is a hidden field's name written otherwise (case, spaces, separators)",
                name.len()
            ),
        }
    }
}

/// What the value of the member `name` of `level`, whose rule is `rule`
/// (`level.rule_from(name)`), gets.
#[inline]
pub(super) fn member_of(
    level: &Level,
    rule: Option<&Rule>,
    name: &[u8],
) -> Result<Member, Unmaskable> {
    Ok(match rule {
        Some(Rule::Show(Shape::Leaf, _)) => Member::Copy,
        Some(Rule::Show(_, Some(below))) => Member::Into(below.clone()),
        Some(Rule::Show(_, None)) => Member::Copy,
        Some(Rule::Hide(Mask::Omit)) => Member::Skip,
        Some(Rule::Hide(Mask::Null)) => Member::Null,
        Some(Rule::Hide(Mask::Redact)) => Member::Redact,
        Some(Rule::Hide(m)) => Member::Capture(*m),
        None if level.near_miss(name) => return Err(Unmaskable::HiddenOtherwise),
        None => match level.undeclared {
            Some(Undeclared::Pass) | None => Member::Copy,
            Some(Undeclared::Omit) => Member::Skip,
            Some(Undeclared::Refuse) => return Err(Unmaskable::Undeclared),
        },
    })
}
