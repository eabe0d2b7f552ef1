//! The dependency rules of docs/design.md, read from the source: every
//! `crate::…` path of every file under proxy/ (`use` trees expanded), by the
//! folder it is in. A broken rule names the file, the line and the import.
//! Unit tests (`#[cfg(test)] mod tests`, at the end of a file) may use what
//! they like and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders of proxy/, bottom first.
const FOLDERS: [&str; 11] = [
    "base",
    "model",
    "transport",
    "decision",
    "observe",
    "pipeline",
    "runtime",
    "k8s",
    "tools",
    "cli",
    "devkit",
];

/// One `crate::…` path used by a file.
#[derive(Debug, Clone)]
struct Import {
    file: String,
    line: usize,
    path: String,
}

impl Import {
    fn folder(&self) -> Option<&str> {
        self.path.split("::").nth(1)
    }
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read proxy/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            source_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod ").map_or(text, |i| &text[..i])
}

/// Drops comments (`//` to the end of the line) and string literals, which
/// may mention paths without importing them.
fn code_only(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into full paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or(tree).trim();
            let path = path.trim_end_matches("::self");
            if path == "self" {
                out.push(prefix.trim_end_matches("::").to_string());
            } else if !path.is_empty() {
                out.push(format!("{prefix}{path}"));
            }
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&format!("{prefix}{head}"), &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&format!("{prefix}{head}"), &inner[start..], out);
        }
    }
}

/// Every `crate::…` path in `code`, with its line.
fn imports_of(file: &str, code: &str) -> Vec<Import> {
    let lines: Vec<String> = code.lines().map(code_only).collect();
    let mut found = Vec::new();
    // `use crate::…;` statements, which may span lines.
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
        let l = l.strip_prefix("pub ").unwrap_or(l);
        if let Some(rest) = l.strip_prefix("use crate::") {
            let first = i;
            let mut stmt = rest.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(&lines[i]);
            }
            let stmt = stmt.split(';').next().unwrap_or_default();
            let mut paths = Vec::new();
            expand("crate::", stmt, &mut paths);
            for path in paths {
                found.push(Import {
                    file: file.to_string(),
                    line: first + 1,
                    path,
                });
            }
        } else {
            // Paths written out in code: `crate::a::b::f(…)`.
            let mut rest = lines[i].as_str();
            while let Some(at) = rest.find("crate::") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                found.push(Import {
                    file: file.to_string(),
                    line: i + 1,
                    path: tail[..end].trim_end_matches(':').to_string(),
                });
                rest = &tail[end..];
            }
        }
        i += 1;
    }
    found
}

/// Every import of every file, by the folder of the file.
fn all_imports() -> BTreeMap<String, Vec<Import>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let mut by_folder: BTreeMap<String, Vec<Import>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).expect("under proxy/");
        let mut parts = rel.iter();
        let first = parts.next().and_then(|p| p.to_str()).unwrap_or_default();
        if parts.next().is_none() {
            // lib.rs (the facade) and main.rs: the crate's root.
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        let name = format!("proxy/{}", rel.display());
        let imports = imports_of(&name, without_tests(&text));
        by_folder
            .entry(first.to_string())
            .or_default()
            .extend(imports);
    }
    by_folder
}

/// The imports of `folder` that reach into `forbidden` (a folder, or a
/// folder and module such as `observe::audit`).
fn breaking<'a>(imports: &'a [Import], forbidden: &str) -> Vec<&'a Import> {
    let prefix = format!("crate::{forbidden}");
    imports
        .iter()
        .filter(|i| i.path == prefix || i.path.starts_with(&format!("{prefix}::")))
        .collect()
}

#[test]
fn every_folder_of_proxy_is_known_and_the_reader_finds_imports() {
    let imports = all_imports();
    for folder in imports.keys() {
        assert!(
            FOLDERS.contains(&folder.as_str()),
            "proxy/{folder}/ is not in the layering rules; add it to FOLDERS and docs/design.md"
        );
    }
    // The reader itself: a nested use tree, an alias, `self`, a path in code.
    let code = "use crate::a::{b::{C, D as E}, f::{self, G}};\nlet x = crate::h::i::j(); // crate::k\n\"crate::l\";\n";
    let found: Vec<String> = imports_of("x.rs", code)
        .into_iter()
        .map(|i| i.path)
        .collect();
    assert_eq!(
        found,
        [
            "crate::a::b::C",
            "crate::a::b::D",
            "crate::a::f",
            "crate::a::f::G",
            "crate::h::i::j"
        ]
    );
    assert!(
        imports.get("pipeline").is_some_and(|v| v.len() > 20),
        "the reader found too few imports in pipeline/: {imports:?}"
    );
}

#[test]
fn dependencies_point_one_way() {
    let imports = all_imports();
    let none = Vec::new();
    let of = |f: &str| imports.get(f).unwrap_or(&none);
    let mut broken: Vec<String> = Vec::new();
    let mut rule = |what: &str, found: Vec<&Import>| {
        for i in found {
            broken.push(format!("{}:{}: {} ({what})", i.file, i.line, i.path));
        }
    };
    // 1. base imports nothing of ours; model only base.
    for f in FOLDERS.iter().filter(|f| **f != "base") {
        rule("base imports nothing of ours", breaking(of("base"), f));
        if *f != "model" {
            rule("model imports only base", breaking(of("model"), f));
        }
    }
    // 2. transport
    for f in ["decision", "observe::audit", "pipeline", "runtime"] {
        rule(
            &format!("transport never imports {f}"),
            breaking(of("transport"), f),
        );
    }
    // 3. decision (and no HTTP status chosen there: checked below)
    for f in ["transport", "pipeline", "observe::audit", "runtime"] {
        rule(
            &format!("decision never imports {f}"),
            breaking(of("decision"), f),
        );
    }
    // 4. observe
    for f in ["pipeline", "transport", "runtime"] {
        rule(
            &format!("observe never imports {f}"),
            breaking(of("observe"), f),
        );
    }
    // 5. pipeline is handed what it needs
    rule(
        "pipeline never imports runtime",
        breaking(of("pipeline"), "runtime"),
    );
    // 6. the whole Config
    for f in FOLDERS
        .iter()
        .filter(|f| !["runtime", "cli", "tools", "devkit"].contains(f))
    {
        rule(
            "only runtime, cli, tools and devkit see the whole Config",
            breaking(of(f), "runtime::config::Config"),
        );
    }
    // 7. k8s
    for f in ["decision", "pipeline"] {
        rule(&format!("k8s never imports {f}"), breaking(of("k8s"), f));
    }
    // 8. devkit
    for f in FOLDERS.iter().filter(|f| !["cli", "devkit"].contains(f)) {
        rule("only cli imports devkit", breaking(of(f), "devkit"));
    }
    assert!(
        broken.is_empty(),
        "{} import(s) break the layering rules:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn no_http_status_is_chosen_outside_the_pipeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy");
    let mut found = Vec::new();
    for folder in ["base", "model", "transport", "decision", "observe"] {
        let mut files = Vec::new();
        source_files(&root.join(folder), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read source");
            for (n, line) in without_tests(&text).lines().enumerate() {
                // Reading a status (`response.status() != StatusCode::OK`)
                // is not choosing one.
                let code = code_only(line);
                if code.contains("StatusCode::") && !code.contains("==") && !code.contains("!=") {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "HTTP statuses are chosen in pipeline/ only:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_import_cycle_between_folders() {
    let imports = all_imports();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (folder, list) in &imports {
        for i in list {
            if let Some(to) = i.folder() {
                if to != folder && FOLDERS.contains(&to) {
                    edges.entry(folder.as_str()).or_default().insert(to);
                }
            }
        }
    }
    // Depth-first search; a node met again on the current path is a cycle.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|p| *p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if !done.insert(n) {
            return None;
        }
        path.push(n);
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in FOLDERS {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut BTreeSet::new()) {
            let why: Vec<String> = cycle
                .windows(2)
                .filter_map(|w| {
                    imports
                        .get(w[0])?
                        .iter()
                        .find(|i| i.folder() == Some(w[1]))
                        .map(|i| {
                            format!("  {} -> {}: {}:{}: {}", w[0], w[1], i.file, i.line, i.path)
                        })
                })
                .collect();
            panic!("import cycle {}:\n{}", cycle.join(" -> "), why.join("\n"));
        }
        done.insert(n);
    }
    // The graph, for the record (`cargo test --test layering -- --nocapture`).
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
}
