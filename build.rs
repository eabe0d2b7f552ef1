//! Links the release binary with the functions the sidecar runs placed
//! together (issue 21, memory).
//!
//! The kernel maps a program's code 64 KiB around every page it first runs
//! ("fault-around"), and a sidecar runs a few thousand functions scattered
//! over 18 MB of code (Cedar, rustls, hyper, serde, tokio...): almost all of
//! it ends up resident, 15 of the 23 MiB the idle process held. Placed first
//! and together, the functions it runs (listed in `benches/link-order.txt`,
//! made by `bash benches/link-order.sh`) fill only the pages they need.
//!
//! Only where the linker is LLD, which reads a symbol ordering file: the
//! x86_64 GNU/Linux target from Rust 1.90 on (`rust-lld` is its default
//! linker), with no linker of the user's choosing. Names in the file that
//! the binary does not have (after a dependency or compiler update) are
//! skipped silently; the binary is then laid out as before. With LLD the
//! relative relocations are also packed (DT_RELR, see below).

use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "benches/link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MESHGATE_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=MESHGATE_PACK_RELOCS");
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // MESHGATE_LINK_ORDER=0 links in the compiler's own order (for comparisons).
    let on = env("MESHGATE_LINK_ORDER") != "0";
    if on && release() && lld_is_the_linker() {
        let file = Path::new(env("CARGO_MANIFEST_DIR").as_str()).join(ORDER_FILE);
        if file.is_file() {
            println!(
                "cargo:rustc-link-arg-bin=meshgate=-Wl,--symbol-ordering-file={}",
                file.display()
            );
            println!("cargo:rustc-link-arg-bin=meshgate=-Wl,--no-warn-symbol-ordering");
        }
    }
    // Packed relative relocations (DT_RELR): the 870 KB `.rela.dyn` a
    // position-independent binary of this size has, read whole by the
    // loader at every start and so resident, shrinks to some 14 KB. The
    // binary then needs glibc 2.36 or later (its loader refuses it before
    // with "GLIBC_ABI_DT_RELR not found"), so only where the building
    // machine has one; MESHGATE_PACK_RELOCS=0 leaves it out.
    if env("MESHGATE_PACK_RELOCS") != "0" && release() && lld_is_the_linker() && glibc_2_36() {
        println!("cargo:rustc-link-arg-bin=meshgate=-Wl,-z,pack-relative-relocs");
    }
}

/// The building machine's glibc is 2.36 or later (`getconf`: "glibc 2.36").
fn glibc_2_36() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn release() -> bool {
    env("PROFILE") == "release"
}

/// rust-lld is the default linker of x86_64-unknown-linux-gnu since Rust
/// 1.90; a linker set by the user (or flags choosing one) may not be LLD.
fn lld_is_the_linker() -> bool {
    if env("TARGET") != "x86_64-unknown-linux-gnu"
        || !env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        || env("CARGO_ENCODED_RUSTFLAGS").contains("link")
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
