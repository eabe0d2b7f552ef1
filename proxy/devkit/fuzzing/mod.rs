//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays every committed seed and regression
//! input through the same functions under plain `cargo test`.
//!
//! Each function takes arbitrary bytes, drives one parser of untrusted input
//! and panics when an invariant does not hold (a panic is what a fuzzer
//! reports). Not part of meshgate's interface.

mod admission;
mod audit;
mod config;
mod conform;
mod conform_csv;
mod conform_json;
mod identity;
mod jwt;
mod mask;
mod mask_coded;
mod mask_csv;
mod paths;
mod slo_rules;

use std::sync::OnceLock;

use http::Method;

use crate::decision::routes::{Lookup, RouteTable, Target};
use crate::model::identity::{from_leaf, IdentityError, Principal};
use crate::model::path::{normalize, NormalPath};

pub use admission::*;
pub use audit::*;
pub use config::*;
pub use conform_csv::conform_csv;
pub use conform_json::conform_json;
pub use identity::*;
pub use jwt::*;
pub use mask::mask_json;
pub use mask_coded::mask_coded;
pub use mask_csv::mask_csv;
pub use paths::*;
pub use slo_rules::{slo_rules, slo_rules_file};

/// A target's body.
pub type Body = fn(&[u8]);

/// Removes this process's scratch directories (the targets' files under
/// the temporary directory). For a process that has run its last input:
/// a later `audit_mutation` would find its golden files gone.
pub fn remove_scratch() {
    let own = format!("-{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("meshgate-fuzz-") && name.ends_with(&own) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Every target: its name (the directory under `fuzz/corpus/` and
/// `fuzz/regressions/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("path_routes", path_routes),
    ("identity_der", identity_der),
    ("identity_rcgen", identity_rcgen),
    ("jwt", jwt),
    ("config", config),
    ("contract", contract),
    ("admission_review", admission_review),
    ("audit_verify", audit_verify),
    ("audit_mutation", audit_mutation),
    ("mask_json", mask_json),
    ("mask_csv", mask_csv),
    ("mask_coded", mask_coded),
    ("conform_json", conform_json),
    ("conform_csv", conform_csv),
    ("slo_rules", slo_rules),
];
