//! Policy files a source would not read, though they look like its own: a
//! `*.cedar` or `*.links.json` in a subdirectory of a policy directory
//! (sources are read one level deep), and a file whose suffix is one of
//! those but for its case (`fields.Cedar`). Each is a load error: a forbid
//! moved to `rules/fields.cedar` would otherwise be dropped, and the domain
//! made more open, without a word.
//!
//! So is an entry named as a policy file directly in the directory that is
//! not a regular file: a link to nothing, a directory, a FIFO. The read
//! lists regular files only, so a `fields.cedar` link whose target went
//! (or a `mkdir fields.cedar`) would drop its forbids unseen. (A
//! Kubernetes volume is read through its `..data` generation, which the
//! kubelet fills with regular files; its top-level links, which dangle for
//! a moment during a swap, are not checked.)
//!
//! Editors' files stay silent: hidden ones (`.x.cedar.swp`, `.#x.cedar`),
//! backups (`x.cedar~`) and autosaves (`#x.cedar#`), as does a file with a
//! suffix of its own after the policy's (`x.cedar.off`, `x.cedar.bak`): that
//! is how a file is set aside. Hidden directories (a Kubernetes volume's
//! `..data` and generations, `.git`) are not looked into.
//!
//! This is a scan of its own beside the read: it lists directories and
//! reads no file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::PolicyConfig;

/// How deep below a source's directory files are looked for.
const DEPTH: usize = 8;

/// The suffixes of the files a policy directory is read for.
const SUFFIXES: [&str; 2] = [".cedar", ".links.json"];

/// One error per file of the policy directories of `cfg` (`sources`,
/// `shadow`) that looks like a policy file and is not read.
pub(super) fn policy_files(cfg: &PolicyConfig) -> Vec<String> {
    let mut errors = Vec::new();
    for source in cfg.sources.iter().chain(&cfg.shadow) {
        if source.path.is_dir() {
            let read = read_through(&source.path);
            scan(&source.path, &source.path, 0, &read, &mut errors);
        }
    }
    errors
}

/// Where the files read from `dir` resolve to: a file of a subdirectory
/// that one of them links to (`x.cedar -> rules/x.cedar`) is read.
fn read_through(dir: &Path) -> HashSet<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| SUFFIXES.iter().any(|s| n.ends_with(s)))
        })
        .filter_map(|e| std::fs::canonicalize(e.path()).ok())
        .collect()
}

/// Whether `name` is an editor's file, or hidden.
fn set_aside(name: &str) -> bool {
    name.starts_with(['.', '#']) || name.ends_with(['~', '#'])
}

/// The suffix of [`SUFFIXES`] that `name` ends with in some case.
fn policy_like(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    SUFFIXES.into_iter().find(|s| lower.ends_with(s))
}

/// What the entry at `path` is, when it is named as a policy file (in
/// lower case) and is no regular file that the read would take.
fn unreadable(path: &Path, name: &str) -> Option<&'static str> {
    policy_like(name).filter(|s| name.ends_with(s))?;
    // Followed through links: a link to a regular file is read.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("a directory"),
        Ok(_) => Some("a FIFO, socket or device"),
        Err(_) if path.is_symlink() => Some("a link to nothing"),
        // Gone since the listing (a swap, a delete): the read lists again.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some("unreadable"),
    }
}

fn scan(root: &Path, dir: &Path, depth: usize, read: &HashSet<PathBuf>, errors: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        // The read reports a directory it cannot list; one below it is
        // not read at all.
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if set_aside(&name) {
            continue;
        }
        // A volume's top-level links may dangle for a moment while the
        // kubelet swaps generations; the read does not list them.
        if depth == 0 && !root.join("..data").is_dir() {
            if let Some(what) = unreadable(&path, &name) {
                errors.push(format!(
                    "{}: not read: {what}, not a regular file; a policy source reads only regular files, so the policies it stood for would be dropped",
                    path.display()
                ));
                continue;
            }
        }
        if path.is_dir() {
            if depth < DEPTH {
                scan(root, &path, depth + 1, read, errors);
            }
            continue;
        }
        let Some(suffix) = policy_like(&name) else {
            continue;
        };
        if depth > 0 {
            if std::fs::canonicalize(&path).is_ok_and(|real| read.contains(&real)) {
                continue;
            }
            errors.push(format!(
                "{}: not read: a policy source reads only the files directly in its directory {}, not its subdirectories; move the file up, or out of the source",
                path.display(),
                root.display()
            ));
        } else if !name.ends_with(suffix) && path.is_file() {
            errors.push(format!(
                "{}: not read: policy files end in `{suffix}`, in lower case; rename it `{}{suffix}`, or move it out of the source",
                path.display(),
                &name[..name.len() - suffix.len()]
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> PolicyConfig {
        PolicyConfig {
            schema: dir.join("schema.cedarschema"),
            entities: None,
            sources: vec![super::super::PolicySource {
                path: dir.join("sales"),
                domain: Some("sales".into()),
            }],
            contracts: Vec::new(),
            shadow: vec![dir.join("shadow").into()],
        }
    }

    fn touch(dir: &Path, files: &[&str]) {
        for f in files {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, "// policy\n").expect("write");
        }
    }

    #[test]
    fn a_policy_file_in_a_subdirectory_or_in_another_case_is_an_error() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        touch(
            dir,
            &[
                "sales/policies.cedar",
                "sales/grants.links.json",
                "sales/rules/fields.cedar",
                "sales/rules/deeper/more.links.json",
                "sales/fields.Cedar",
                "sales/grants.LINKS.json",
                "sales/tests/orders.test.json",
                "shadow/old/x.CEDAR",
            ],
        );
        let errors = policy_files(&config(dir));
        let p = |f: &str| dir.join(f).display().to_string();
        assert_eq!(
            errors,
            [
                format!("{}: not read: policy files end in `.cedar`, in lower case; rename it `fields.cedar`, or move it out of the source", p("sales/fields.Cedar")),
                format!("{}: not read: policy files end in `.links.json`, in lower case; rename it `grants.links.json`, or move it out of the source", p("sales/grants.LINKS.json")),
                format!("{}: not read: a policy source reads only the files directly in its directory {}, not its subdirectories; move the file up, or out of the source", p("sales/rules/deeper/more.links.json"), p("sales")),
                format!("{}: not read: a policy source reads only the files directly in its directory {}, not its subdirectories; move the file up, or out of the source", p("sales/rules/fields.cedar"), p("sales")),
                format!("{}: not read: a policy source reads only the files directly in its directory {}, not its subdirectories; move the file up, or out of the source", p("shadow/old/x.CEDAR"), p("shadow")),
            ]
        );
    }

    #[test]
    fn editor_files_hidden_directories_set_aside_and_linked_files_are_silent() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        touch(
            dir,
            &[
                "sales/policies.cedar",
                "sales/.policies.cedar.swp",
                "sales/policies.cedar~",
                "sales/#policies.cedar#",
                "sales/.#policies.cedar",
                "sales/old.cedar.off",
                "sales/rules/.fields.cedar.swp",
                "sales/rules/fields.cedar~",
                "sales/..2026_01_01/policies.cedar",
                "sales/.git/objects/x.cedar",
                "shadow/x.cedar",
                "shadow/sub/linked.cedar",
            ],
        );
        // Read through a link at the top: read, so not stray.
        std::os::unix::fs::symlink("sub/linked.cedar", dir.join("shadow/linked.cedar"))
            .expect("symlink");
        assert_eq!(policy_files(&config(dir)), Vec::<String>::new());
    }

    #[test]
    fn a_policy_name_that_is_no_regular_file_is_an_error_but_not_in_a_volume() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        touch(dir, &["sales/policies.cedar", "shadow/x.cedar"]);
        let sales = dir.join("sales");
        std::os::unix::fs::symlink(dir.join("gone.cedar"), sales.join("fields.cedar"))
            .expect("symlink");
        std::fs::create_dir(sales.join("grants.links.json")).expect("mkdir");
        let fifo = std::process::Command::new("mkfifo")
            .arg(sales.join("pipe.cedar"))
            .status()
            .expect("mkfifo");
        assert!(fifo.success());
        // An editor's lock (a link to nothing, hidden) and a link that
        // reads a file stay silent.
        std::os::unix::fs::symlink("nowhere", sales.join(".#policies.cedar")).expect("symlink");
        std::os::unix::fs::symlink("policies.cedar", sales.join("also.cedar")).expect("symlink");
        let p = |f: &str| dir.join(f).display().to_string();
        let tail = "not a regular file; a policy source reads only regular files, so the policies it stood for would be dropped";
        assert_eq!(
            policy_files(&config(dir)),
            [
                format!(
                    "{}: not read: a link to nothing, {tail}",
                    p("sales/fields.cedar")
                ),
                format!(
                    "{}: not read: a directory, {tail}",
                    p("sales/grants.links.json")
                ),
                format!(
                    "{}: not read: a FIFO, socket or device, {tail}",
                    p("sales/pipe.cedar")
                ),
            ]
        );
        // In a Kubernetes volume the read lists the generation; a top-level
        // link dangles for a moment during a swap.
        std::fs::remove_dir(sales.join("grants.links.json")).expect("rmdir");
        std::fs::remove_file(sales.join("pipe.cedar")).expect("rm");
        touch(dir, &["sales/..2026_12_08/policies.cedar"]);
        std::os::unix::fs::symlink("..2026_12_08", sales.join("..data")).expect("symlink");
        assert_eq!(policy_files(&config(dir)), Vec::<String>::new());
    }

    #[test]
    fn a_file_source_is_not_scanned() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        touch(dir, &["sales/policies.Cedar"]);
        let mut cfg = config(dir);
        cfg.sources[0].path = dir.join("sales/policies.Cedar");
        cfg.shadow.clear();
        assert_eq!(policy_files(&cfg), Vec::<String>::new());
    }
}
