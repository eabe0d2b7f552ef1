//! build.rs (issue 21, how release builds are linked) run as cargo runs it,
//! with the environment of each case set here: debug builds get nothing,
//! other targets get nothing, a linker that refuses an option gets a plain
//! link and a warning (never a broken build), cross builds never pack
//! relocations, the knobs turn each part off, and an order file made by
//! another rustc is called stale.

// Only the deadlines of tests/common (the rest needs the binary).
#[path = "common/process.rs"]
#[allow(dead_code)]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A build script run links up to two probes; the machine may be busy.
const RUN_DEADLINE: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string())
}

/// The host triple (`rustc -vV`).
fn host() -> String {
    let out = process::output_within(Command::new(rustc()).arg("-vV"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// build.rs compiled once for all the cases.
fn script() -> &'static Path {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_dir, exe) = SCRIPT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("build-script");
        let out = process::output_within_limit(
            Command::new(rustc())
                .args(["--edition=2021", "--crate-type=bin", "-o"])
                .arg(&exe)
                .arg(root().join("build.rs")),
            RUN_DEADLINE,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, exe)
    });
    exe
}

/// What cargo passes a build script for a release build on this machine,
/// with `vars` set over it.
fn run(vars: &[(&str, &str)]) -> Vec<String> {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let host = host();
    let (os, env) = cfg_of(&host);
    let mut cmd = Command::new(script());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("RUSTC", rustc())
        .env("OUT_DIR", out_dir.path())
        .env("CARGO_MANIFEST_DIR", root())
        .env("PROFILE", "release")
        .env("HOST", &host)
        .env("TARGET", &host)
        .env("CARGO_CFG_TARGET_OS", os)
        .env("CARGO_CFG_TARGET_ENV", env)
        .env("CARGO_ENCODED_RUSTFLAGS", "");
    for var in ["RUSTUP_HOME", "CARGO_HOME", "RUSTUP_TOOLCHAIN"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = process::output_within_limit(&mut cmd, RUN_DEADLINE);
    assert!(
        out.status.success(),
        "build.rs failed with {vars:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `CARGO_CFG_TARGET_OS` and `CARGO_CFG_TARGET_ENV` of a `*-linux-gnu` or
/// `*-linux-musl` triple (what these tests need).
fn cfg_of(triple: &str) -> (&'static str, &'static str) {
    let os = if triple.contains("-linux") {
        "linux"
    } else {
        "other"
    };
    let env = if triple.ends_with("-gnu") {
        "gnu"
    } else if triple.ends_with("-musl") {
        "musl"
    } else {
        ""
    };
    (os, env)
}

fn link_args(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("cargo:rustc-link-arg-bin=meshgate="))
        .collect()
}

/// Whether the build script passes an order file to the linker.
fn ordered(lines: &[String]) -> bool {
    link_args(lines)
        .iter()
        .any(|a| a.contains("--symbol-ordering-file="))
}

fn warnings(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("cargo:warning="))
        .collect()
}

fn gnu_linux_host() -> bool {
    cfg_of(&host()) == ("linux", "gnu")
}

#[test]
fn debug_builds_get_nothing_and_do_not_rerun_for_the_order_file() {
    let lines = run(&[("PROFILE", "debug")]);
    assert!(link_args(&lines).is_empty(), "{lines:?}");
    assert!(warnings(&lines).is_empty(), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("link-order.txt")),
        "a regenerated order file must not rebuild debug builds: {lines:?}"
    );
}

#[test]
fn a_musl_target_gets_a_plain_link() {
    let lines = run(&[
        ("TARGET", "x86_64-unknown-linux-musl"),
        ("CARGO_CFG_TARGET_ENV", "musl"),
    ]);
    assert!(link_args(&lines).is_empty(), "{lines:?}");
    assert!(warnings(&lines).is_empty(), "{lines:?}");
}

#[test]
fn the_knobs_turn_each_part_off() {
    let lines = run(&[("MESHGATE_LINK_ORDER", "0"), ("MESHGATE_PACK_RELOCS", "0")]);
    assert!(link_args(&lines).is_empty(), "{lines:?}");
    assert!(warnings(&lines).is_empty(), "{lines:?}");
}

#[test]
fn a_linker_that_fails_gives_a_plain_link_and_a_warning() {
    if !gnu_linux_host() {
        eprintln!(
            "SKIPPED a_linker_that_fails_gives_a_plain_link_and_a_warning: not a GNU/Linux host"
        );
        return;
    }
    let lines = run(&[("RUSTC_LINKER", "false")]);
    assert!(link_args(&lines).is_empty(), "{lines:?}");
    let warned = warnings(&lines);
    assert!(
        warned.iter().any(|w| w.contains("--symbol-ordering-file")),
        "{lines:?}"
    );
}

/// GNU ld does not know `--symbol-ordering-file` (a link with it fails):
/// the order file is left out, with a warning, whatever else is used.
#[test]
fn gnu_ld_gets_no_order_file() {
    if !gnu_linux_host() || !Path::new("/usr/bin/ld.bfd").exists() {
        eprintln!("SKIPPED gnu_ld_gets_no_order_file: no GNU/Linux host with ld.bfd");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cc = dir.path().join("cc-bfd");
    // The last -fuse-ld wins: after the one rustc passes for its own LLD.
    std::fs::write(&cc, "#!/bin/sh\nexec cc \"$@\" -fuse-ld=bfd\n").expect("write");
    let chmod = process::output_within(Command::new("chmod").arg("+x").arg(&cc));
    assert!(chmod.status.success());
    let lines = run(&[("RUSTC_LINKER", cc.to_str().expect("utf-8"))]);
    assert!(
        !link_args(&lines)
            .iter()
            .any(|a| a.contains("symbol-ordering")),
        "{lines:?}"
    );
    assert!(
        warnings(&lines)
            .iter()
            .any(|w| w.contains("--symbol-ordering-file")),
        "{lines:?}"
    );
}

/// The glibc of the machine that will run a cross-compiled binary is not
/// known here: its relocations are not packed.
#[test]
fn a_cross_build_does_not_pack_relocations() {
    let lines = run(&[("HOST", "aarch64-unknown-linux-gnu")]);
    assert!(
        !link_args(&lines)
            .iter()
            .any(|a| a.contains("pack-relative-relocs")),
        "{lines:?}"
    );
}

/// On this machine a release build either gets the order file or says why
/// not; when it gets it, an order file made by another rustc is called
/// stale.
#[test]
fn the_order_file_is_used_or_the_build_says_why_and_a_stale_one_is_named() {
    if !gnu_linux_host() {
        eprintln!("SKIPPED the_order_file_is_used_or_the_build_says_why: not a GNU/Linux host");
        return;
    }
    let lines = run(&[]);
    let passed = ordered(&lines);
    assert!(
        passed
            || warnings(&lines)
                .iter()
                .any(|w| w.contains("--symbol-ordering-file")),
        "{lines:?}"
    );
    if !passed {
        return;
    }
    let fake = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(fake.path().join("benches")).expect("mkdir");
    std::fs::write(
        fake.path().join("benches/link-order.txt"),
        "# made with rustc 1.0.0 (a28077b28 2015-05-13)\nmain\n",
    )
    .expect("write");
    let lines = run(&[("CARGO_MANIFEST_DIR", fake.path().to_str().expect("utf-8"))]);
    assert!(
        warnings(&lines)
            .iter()
            .any(|w| w.contains("rustc 1.0.0") && w.contains("benches/link-order.sh")),
        "{lines:?}"
    );
}

/// `MESHGATE_LINK_ORDER_FILE` names another list (benches/pgo.sh's, made
/// from its profile-guided build): that file is passed and watched instead
/// of the committed one; a path that is no file is said, with a plain link.
#[test]
fn another_order_file_is_passed_and_watched_in_place_of_the_committed_one() {
    let lines = run(&[]);
    if !ordered(&lines) {
        eprintln!(
            "SKIPPED another_order_file: this linker takes no order file (see the test above)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("pgo-order.txt");
    std::fs::write(&list, "main\n").expect("write");
    let path = list.to_str().expect("utf-8");
    let lines = run(&[("MESHGATE_LINK_ORDER_FILE", path)]);
    let args = link_args(&lines);
    assert!(
        args.contains(&format!("-Wl,--symbol-ordering-file={path}").as_str()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("cargo:rerun-if-changed={path}")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("benches/link-order.txt")),
        "{lines:?}"
    );
    let missing = dir.path().join("none.txt");
    let lines = run(&[("MESHGATE_LINK_ORDER_FILE", missing.to_str().expect("utf-8"))]);
    assert!(!ordered(&lines), "{lines:?}");
    assert!(
        warnings(&lines)
            .iter()
            .any(|w| w.contains("none.txt") && w.contains("not a usable file")),
        "{lines:?}"
    );
}

/// benches/link-order.sh heads the file with the compiler it was made
/// with; build.rs compares it with the one building.
#[test]
fn the_order_file_names_its_compiler() {
    let text = std::fs::read_to_string(root().join("benches/link-order.txt")).expect("order file");
    assert!(
        text.lines().next().unwrap_or("").starts_with("# made with rustc "),
        "benches/link-order.txt must start with `# made with rustc ...`: regenerate it with bash benches/link-order.sh"
    );
}
