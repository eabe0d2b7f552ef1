//! Response governance, the decision's side: what a contract declares
//! about the fields of its datasets (each a `Mesh::Field` resource, how a
//! hidden one is hidden, what happens to undeclared ones), and the field
//! plan a caller's response is shaped by.
//!
//! The contract's properties are read in `contract/fields.rs`, the field
//! entities and plans are built and cached in `authz/fields.rs` and
//! `authz/plan.rs`; the pipeline applies a plan to a body
//! (`pipeline/mask/`).

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;

pub mod conformance;
pub mod loose;
pub mod tree;

#[cfg(test)]
pub use conformance::Sample;
pub use conformance::{Conformance, ConformanceSettings, FieldCheck, LogicalType, Mode};

/// How a hidden field is hidden (custom property `meshgateMask` of a
/// property; `omit` when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mask {
    /// The key and its value are removed.
    #[default]
    Omit,
    /// The value becomes `null`.
    Null,
    /// A fixed placeholder of the same JSON type: `"***"` for a string,
    /// `0` for a number, `false` for a boolean, `{}`/`[]` for an object
    /// or array, `null` for `null`.
    Redact,
    /// `"hmac-sha256:<hex>"` of the value's JSON text, keyed with the
    /// mesh key: the same value pseudonymises the same way everywhere.
    Hash,
    /// A string's last four characters, the rest as `*`; another type is
    /// redacted.
    Last4,
    /// A date's or timestamp's year (`"1987"`); another type is redacted.
    Year,
}

impl Mask {
    pub const ALL: [Mask; 6] = [
        Mask::Omit,
        Mask::Null,
        Mask::Redact,
        Mask::Hash,
        Mask::Last4,
        Mask::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mask::Omit => "omit",
            Mask::Null => "null",
            Mask::Redact => "redact",
            Mask::Hash => "hash",
            Mask::Last4 => "last4",
            Mask::Year => "year",
        }
    }
}

impl std::str::FromStr for Mask {
    type Err = String;
    fn from_str(s: &str) -> Result<Mask, String> {
        Mask::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown mask method `{s}`; one of omit, null, redact, hash, last4, year")
            })
    }
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a response field the contract does not declare
/// (custom property `meshgateUndeclared` of the product).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Undeclared {
    /// Sent as the upstream sent it.
    Pass,
    /// Removed.
    Omit,
    /// The response is refused (a 502 before the head is sent, a cut
    /// stream after).
    Refuse,
}

/// Whether members a contract does not declare pass as sent under
/// `undeclared` (`pass`, or nothing said).
pub fn passes(undeclared: Option<Undeclared>) -> bool {
    matches!(undeclared, Some(Undeclared::Pass) | None)
}

impl Undeclared {
    pub fn as_str(self) -> &'static str {
        match self {
            Undeclared::Pass => "pass",
            Undeclared::Omit => "omit",
            Undeclared::Refuse => "refuse",
        }
    }

    /// The default when a contract does not set `meshgateUndeclared`:
    /// `pass`, whatever the classification. Failing closed by default
    /// (`omit` above `internal`) would change the answers of every
    /// confidential or restricted product that declares properties on the
    /// day the sidecar is upgraded (a non-JSON answer of such a product
    /// would become a 502); a product opts in with `omit` or `refuse`.
    pub fn default_for(_classification: &str) -> Undeclared {
        Undeclared::Pass
    }
}

impl std::str::FromStr for Undeclared {
    type Err = String;
    fn from_str(s: &str) -> Result<Undeclared, String> {
        match s {
            "pass" => Ok(Undeclared::Pass),
            "omit" => Ok(Undeclared::Omit),
            "refuse" => Ok(Undeclared::Refuse),
            _ => Err(format!("unknown value `{s}`; one of pass, omit, refuse")),
        }
    }
}

/// What a declared property holds below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value with no declared properties below it.
    Leaf,
    /// An object whose properties are declared.
    Object,
    /// An array of objects whose properties are declared (`items`).
    Array,
}

/// One declared property of a dataset, as the contract gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The property's name.
    pub name: String,
    /// Its path from the dataset's record: names joined by `/`
    /// (`shipping/city`); the Cedar id is `<product>/<dataset>/<path>`.
    pub path: String,
    /// The enclosing declared property (index in the dataset's list).
    pub parent: Option<usize>,
    /// Its own classification, if it has one.
    pub classification: Option<String>,
    pub tags: Vec<String>,
    /// Personal data: a `pii` tag or custom property `pii: true`.
    pub pii: bool,
    pub logical_type: Option<String>,
    pub mask: Mask,
    pub shape: Shape,
    /// What a response's value of it is checked against (conformance).
    pub check: FieldCheck,
}

/// The declared properties of one dataset, in file order (a parent before
/// its children).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetFields {
    /// Its name (shared: it labels the metrics of every masked response).
    pub dataset: Arc<str>,
    pub fields: Vec<FieldSpec>,
}

/// One hidden field of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    /// The field's path in its dataset (`shipping/city`).
    pub path: Arc<str>,
    pub mask: Mask,
    /// The `@id`s of the policies that decided it (the forbids that
    /// hid it; none when no permit applied).
    pub policies: Vec<String>,
}

/// A field the shadow policy set would treat otherwise than the enforced
/// plan: hide a field the plan shows, or show one it hides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowField {
    /// The field's path in its dataset.
    pub path: Arc<str>,
    /// `true`: the shadow set would hide it; `false`: show it.
    pub hide: bool,
    /// How it is hidden: as the shadow set would hide it, or as the
    /// enforced plan hides it.
    pub mask: Mask,
    /// The shadow set's determining policies: the forbids that would hide
    /// it (those of its enclosing field when it goes with that one), or
    /// the permits that would show it.
    pub policies: Vec<String>,
}

impl ShadowField {
    /// What the shadow set would do: `hide` or `show`.
    pub fn would(&self) -> &'static str {
        if self.hide {
            "hide"
        } else {
            "show"
        }
    }
}

/// What a caller sees of one dataset's responses: built once per
/// snapshot, caller and the context values the field policies read, and
/// shared by every response it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPlan {
    /// `<product>/<dataset>`.
    pub dataset: Arc<str>,
    /// The hidden fields, in the contract's order.
    pub hidden: Vec<Hidden>,
    /// The visible fields' paths, in the contract's order.
    pub visible: Vec<Arc<str>>,
    /// Every declared field's index in `specs` order: `Some(i)` hidden as
    /// `hidden[i]`.
    pub verdicts: Vec<Option<usize>>,
    /// The paths the shadow set would hide (in the contract's order, a
    /// field under a hidden one included), when one is configured.
    pub shadow_hidden: Option<Vec<Arc<str>>>,
    /// The fields the shadow set would hide or show otherwise than this
    /// plan does, in the contract's order (none without a shadow set).
    pub shadow_differs: Vec<ShadowField>,
    /// The dataset's declared fields.
    pub specs: Arc<DatasetFields>,
    pub undeclared: Undeclared,
    /// Evaluation errors of field policies (a field whose decision errs is
    /// hidden).
    pub errors: Vec<String>,
    /// The plan as the masker walks it, built on first use.
    pub trees: Trees,
}

/// A plan's [`tree`]s, built on first use and kept with it: plans are
/// cached per thread for each snapshot, caller and dataset, so a response
/// takes an `Arc` instead of building one (the levels' maps, a boxed key
/// per declared field). A clone starts empty (it may be changed before use);
/// two plans compare by what they decide, not by these.
#[derive(Default)]
pub struct Trees {
    plain: OnceLock<Arc<tree::Level>>,
    checked: OnceLock<Arc<tree::Level>>,
    /// `meshgate_fields_hidden_total` of the plan's dataset by mask, and
    /// how many fields each masked response adds to it (looked up in the
    /// metric family once, not per response).
    counters: OnceLock<HiddenCounters>,
    /// The hidden fields as the audit line writes them (the same for every
    /// request under the plan).
    audited: OnceLock<Box<[u8]>>,
}

/// The counters of a plan's masked responses.
pub struct PlanCounters {
    /// What a masked response adds its hidden fields to, with the number
    /// it adds to each.
    pub hidden: Box<[(Counter, u64)]>,
    /// Error and redirect responses whose body was withheld.
    pub withheld: Counter,
}

/// A plan's counters, kept with it.
pub type HiddenCounters = Arc<PlanCounters>;

impl Clone for Trees {
    fn clone(&self) -> Trees {
        Trees::default()
    }
}

impl PartialEq for Trees {
    fn eq(&self, _: &Trees) -> bool {
        true
    }
}

impl Eq for Trees {}

impl fmt::Debug for Trees {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trees")
            .field("plain", &self.plain.get().is_some())
            .field("checked", &self.checked.get().is_some())
            .field("counters", &self.counters.get().is_some())
            .field("audited", &self.audited.get().is_some())
            .finish()
    }
}

impl FieldPlan {
    /// The record level of the plan's dataset, as masking walks it.
    pub fn tree(&self) -> Arc<tree::Level> {
        self.trees.plain.get_or_init(|| tree::of(self)).clone()
    }

    /// The same with each level's conformance checks.
    pub fn checked_tree(&self) -> Arc<tree::Level> {
        self.trees
            .checked
            .get_or_init(|| tree::checked(self))
            .clone()
    }

    /// The counters of the plan's hidden fields: `make`'s, the first time.
    pub fn hidden_counters(&self, make: impl FnOnce() -> HiddenCounters) -> HiddenCounters {
        self.trees.counters.get_or_init(make).clone()
    }

    /// The plan's hidden fields as an audit line holds them: `write`'s
    /// text, written the first time it succeeds.
    pub fn audited_hidden<E>(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<&[u8], E> {
        if let Some(text) = self.trees.audited.get() {
            return Ok(text);
        }
        let mut out = Vec::new();
        write(&mut out)?;
        Ok(self.trees.audited.get_or_init(|| out.into_boxed_slice()))
    }

    /// Whether a response needs rewriting at all under this plan.
    pub fn rewrites(&self) -> bool {
        !self.hidden.is_empty() || self.undeclared != Undeclared::Pass
    }

    /// Whether the shadow policy set, when there is one, hides other
    /// fields than the enforced plan does.
    pub fn shadow_disagrees(&self) -> bool {
        !self.shadow_differs.is_empty()
    }
}

impl FieldPlan {
    /// The plan as `meshgate authorize` prints it: one line per hidden
    /// field (`hidden: path (method) by policy, …`), then the visible ones.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "fields: {} ({} hidden, {} visible; undeclared: {})\n",
            self.dataset,
            self.hidden.len(),
            self.visible.len(),
            self.undeclared.as_str()
        );
        for h in &self.hidden {
            let by = if h.policies.is_empty() {
                "no permit".to_string()
            } else {
                h.policies.join(", ")
            };
            out.push_str(&format!("  hidden: {} ({}) by {by}\n", h.path, h.mask));
        }
        for v in &self.visible {
            out.push_str(&format!("  visible: {v}\n"));
        }
        for e in &self.errors {
            out.push_str(&format!("  error: {e}\n"));
        }
        out
    }
}
