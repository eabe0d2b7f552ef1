//! Golden files (expected output kept in the repository). With
//! `MESHGATE_REGENERATE=1` a test rewrites the ones its output no longer
//! matches and then fails, naming them, so that nothing passes until the
//! diff is reviewed and the test runs again without it; under CI the
//! variable is refused outright.

use std::path::Path;

use super::under_ci;

/// Whether this run was asked to rewrite golden files (refused under CI).
pub fn regenerating() -> bool {
    let asked = std::env::var_os("MESHGATE_REGENERATE").is_some_and(|v| !v.is_empty());
    assert!(
        !(asked && under_ci()),
        "MESHGATE_REGENERATE is refused under CI: a golden file rewritten by the run it checks proves nothing"
    );
    asked
}

/// When regenerating and `path` does not hold `text`: writes it and fails
/// the test ("rewrote PATH: review the diff, run again without
/// MESHGATE_REGENERATE"). Otherwise does nothing; the caller compares.
pub fn regenerate_if_asked(path: &Path, text: &str) {
    if !regenerating() {
        return;
    }
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    panic!(
        "rewrote {}: review the diff, then run the test again without MESHGATE_REGENERATE",
        path.display()
    );
}
