//! Replays every committed fuzz input (the seed corpora under
//! `fuzz/corpus/<target>/` and the crashes kept under
//! `fuzz/regressions/<target>/`) through the same functions the `cargo fuzz`
//! targets call, so a regression fails plain `cargo test` without a nightly
//! toolchain or libFuzzer.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs one target over its corpus and regressions; returns how many
/// inputs it ran. A panic names the input.
fn replay(target: &str, run: fn(&[u8])) -> (usize, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut counts = (0, 0);
    for (kind, count) in [("corpus", &mut counts.0), ("regressions", &mut counts.1)] {
        for file in inputs(&root.join(kind).join(target)) {
            let data = std::fs::read(&file).expect("read input");
            if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{target}: {} fails: {msg}", file.display());
            }
            *count += 1;
        }
    }
    counts
}

#[test]
fn every_target_has_a_corpus_and_every_input_passes() {
    // Silence the default hook: a failing input is reported once, by name.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut ran = Vec::new();
    for (target, run) in meshgate::fuzzing::TARGETS {
        match std::panic::catch_unwind(|| replay(target, *run)) {
            Ok((seeds, regressions)) => ran.push((*target, seeds, regressions)),
            Err(p) => failures.push(
                p.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{target}: failed")),
            ),
        }
    }
    std::panic::set_hook(hook);
    meshgate::fuzzing::remove_scratch();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (target, seeds, _) in &ran {
        assert!(*seeds >= 5, "{target}: only {seeds} seed inputs");
    }
    assert_eq!(ran.len(), 15, "{ran:?}");
}

/// The fuzz crate declares every target the library has, each calling its
/// entry point. (It does not build them: that needs `cargo fuzz` on a
/// nightly toolchain, see fuzz/README.md; the entry points themselves are
/// built and run on the seeds above.)
#[test]
fn the_fuzz_crate_declares_every_target_and_each_calls_its_entry_point() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in meshgate::fuzzing::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} missing from fuzz/Cargo.toml"
        );
        let source = std::fs::read_to_string(root.join(format!("fuzz_targets/{target}.rs")))
            .expect("target source");
        assert!(
            source.contains(&format!("meshgate::fuzzing::{target}(data)")),
            "fuzz_targets/{target}.rs does not call meshgate::fuzzing::{target}"
        );
    }
}
