//! How release builds of the `meshgate` binary are linked (issue 21, idle
//! memory). Debug and test builds: nothing (this returns at once).
//!
//! The kernel maps a program's code 64 KiB around every page it first runs
//! ("fault-around"), and a sidecar runs a few thousand functions scattered
//! over 18 MB of code (Cedar, rustls, hyper, serde, tokio...): almost all of
//! it ends up resident. Two link options shrink that, each used only where
//! a probe shows the linker takes it, so a linker that does not degrades to
//! a plain link, never a broken build:
//!
//! - `--symbol-ordering-file=benches/link-order.txt` (LLD; the default
//!   linker of x86_64-unknown-linux-gnu from Rust 1.90 on): the functions
//!   the sidecar runs, listed by `bash benches/link-order.sh`, are placed
//!   first and together. The list names mangled symbols; those the binary no
//!   longer has (after a code, dependency or compiler change) are skipped
//!   without a warning each (`--no-warn-symbol-ordering`), and the rest of
//!   the list still helps. A list made by another rustc matches nothing:
//!   this warns then (the file's `# rustc` line). `MESHGATE_LINK_ORDER=0`
//!   leaves it out; `MESHGATE_LINK_ORDER_FILE=path` passes another list
//!   (`benches/pgo.sh` lists its profile-guided build's own functions).
//! - `-z pack-relative-relocs` (DT_RELR): the ~870 KB `.rela.dyn` the loader
//!   reads whole at every start shrinks to ~14 KB. The binary then needs
//!   glibc 2.36 or later where it runs (an older loader refuses it:
//!   "GLIBC_ABI_DT_RELR not found"), so only for a GNU/Linux target built on
//!   that same target (not cross-compiled) whose probe, linked so, runs here.
//!   `MESHGATE_PACK_RELOCS=0` leaves it out.
//!
//! Only `TARGET` and `CARGO_CFG_*` say what is built for; the linker, its
//! flags and the rustflags are the build's own (`RUSTC_LINKER`,
//! `CARGO_ENCODED_RUSTFLAGS`), passed to the probe as they are.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ORDER_FILE: &str = "benches/link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESHGATE_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=MESHGATE_LINK_ORDER_FILE");
    println!("cargo:rerun-if-env-changed=MESHGATE_PACK_RELOCS");
    if env("PROFILE") != "release" {
        return;
    }
    let order_file = order_file();
    println!("cargo:rerun-if-changed={}", order_file.display());
    let target = env("TARGET");
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo:rerun-if-env-changed={linker_var}");
    if env("CARGO_CFG_TARGET_OS") != "linux" || env("CARGO_CFG_TARGET_ENV") != "gnu" {
        return; // musl, other systems: a plain link
    }
    let probe = Probe::new();
    if env("MESHGATE_LINK_ORDER") != "0" {
        order_functions(&probe, &order_file);
    }
    if env("MESHGATE_PACK_RELOCS") != "0" {
        pack_relocations(&probe, &target);
    }
}

/// The order file: `MESHGATE_LINK_ORDER_FILE` when set (`benches/pgo.sh`
/// lists the functions of its profile-guided build, whose inlining differs),
/// else the committed [`ORDER_FILE`].
fn order_file() -> PathBuf {
    match std::env::var_os("MESHGATE_LINK_ORDER_FILE") {
        Some(file) if !file.is_empty() => PathBuf::from(file),
        _ => Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER_FILE),
    }
}

/// Passes the order file when the linker takes it; says why not otherwise.
fn order_functions(probe: &Probe, file: &Path) {
    let path = file.display().to_string();
    if !file.is_file() || path.contains(',') {
        // `-Wl,` splits its argument at commas.
        warn(&format!(
            "linking without a function order: {path} is not a usable file"
        ));
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={path}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if !probe.links(&args) {
        warn(&format!(
            "linking without {path}: the linker does not take --symbol-ordering-file \
             (LLD does; MESHGATE_LINK_ORDER=0 silences this)"
        ));
        return;
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bin=meshgate={arg}");
    }
    if let Some(made_by) = made_with(file) {
        let rustc = probe.rustc_version();
        if !rustc.is_empty() && made_by != rustc {
            warn(&format!(
                "{path} was made with {made_by}, this is {rustc}: its names will not match \
                 (the binary is linked as without it); regenerate it: bash benches/link-order.sh"
            ));
        }
    }
}

/// Packs relative relocations when a probe linked so runs on this machine
/// (which is then also the target: cross builds are left as they are).
fn pack_relocations(probe: &Probe, target: &str) {
    if env("HOST") != target {
        return;
    }
    let args = ["-Wl,-z,pack-relative-relocs".to_string()];
    if probe.links(&args) && probe.runs() {
        println!("cargo:rustc-link-arg-bin=meshgate={}", args[0]);
    }
}

/// The `# rustc ...` line `benches/link-order.sh` writes at the top of the
/// order file (LLD skips lines starting with `#`).
fn made_with(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix("# made with "))
        .map(|v| v.trim().to_string())
}

/// A `fn main() {}` compiled and linked for the target as the binary will
/// be: same rustc, rustflags and linker, plus the link arguments tried.
struct Probe {
    rustc: String,
    dir: PathBuf,
}

impl Probe {
    fn new() -> Probe {
        let dir = PathBuf::from(env("OUT_DIR")).join("link-probe");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("probe.rs"), "fn main() {}\n");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        Probe { rustc, dir }
    }

    fn exe(&self) -> PathBuf {
        self.dir.join("probe")
    }

    fn links(&self, link_args: &[String]) -> bool {
        let _ = std::fs::remove_file(self.exe());
        let mut cmd = Command::new(&self.rustc);
        cmd.arg("--edition=2021")
            .arg("--crate-type=bin")
            .arg("--target")
            .arg(env("TARGET"))
            .arg("-o")
            .arg(self.exe())
            .arg(self.dir.join("probe.rs"));
        let flags = env("CARGO_ENCODED_RUSTFLAGS");
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
        if let Ok(linker) = std::env::var("RUSTC_LINKER") {
            cmd.arg(format!("-Clinker={linker}"));
        }
        for arg in link_args {
            cmd.arg(format!("-Clink-arg={arg}"));
        }
        quiet(&mut cmd) && self.exe().is_file()
    }

    fn runs(&self) -> bool {
        quiet(&mut Command::new(self.exe()))
    }

    /// "rustc 1.95.0 (59807616e 2026-04-14)"
    fn rustc_version(&self) -> String {
        Command::new(&self.rustc)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

/// Runs to completion without output; true when it exited 0.
fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn warn(message: &str) {
    println!("cargo:warning={message}");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
