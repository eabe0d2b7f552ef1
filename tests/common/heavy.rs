//! One load-heavy test at a time. Cargo runs the test binaries one after
//! another but the tests of a binary in parallel, and a load test shares two
//! cores with whatever else runs: two of them at once would each see half
//! the machine, and their per-request deadlines would measure the other
//! test. [`heavy`] takes an exclusive lock on a file in Cargo's target tmp
//! directory (so it holds across every test binary of one target dir, and
//! a build in another worktree is not held up by it) for the test's life.

use std::fs::File;

/// Held for a load-heavy test's life: dropping it lets the next one run.
pub struct Heavy {
    _file: File,
}

/// Waits until no other load-heavy test runs, then holds the lock.
pub fn heavy() -> Heavy {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("meshgate-heavy-tests.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // flock(2): released by the kernel when the file is closed, even if the
    // test process dies.
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    Heavy { _file: file }
}
