//! The dependency rules of docs/design.md, read from the source: every
//! `crate::…` path of every file under proxy/ (`use` trees expanded), by the
//! folder it is in. A broken rule names the file, the line and the import.
//! Unit tests (a `#[cfg(test)] mod tests` block, or a `tests.rs` beside the
//! module) are exempt from the rules, not from the no-cycle check.
//!
//! And the size of the rooms (issue 18): no file under proxy/ or tests/
//! over 1,000 lines, no function over 120, unit tests included.

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

/// The code of a file without its unit tests: the `#[cfg(test)] mod tests
/// { … }` block is cut out wherever it stands. The code is rustfmt's, so
/// the block ends at the first line that is a lone `}`.
fn without_tests(text: &str) -> String {
    let Some(at) = text.find("#[cfg(test)]\nmod tests {") else {
        return text.to_string();
    };
    let end = text[at..].find("\n}\n").map_or(text.len(), |i| at + i + 3);
    // Keep the line count, so that positions after the block stay right.
    let cut = "\n".repeat(text[at..end].matches('\n').count());
    format!("{}{cut}{}", &text[..at], &text[end..])
}

/// One line's code: without comments and string literals, which may
/// mention paths without importing them (see `code_lines`).
fn code_only(line: &str) -> String {
    code_lines(line).concat()
}

/// The code of `text`, line by line, without comments (`//`, nested
/// `/* */`), string literals (plain, byte and raw, over any number of
/// lines) and char literals (`'"'`, `'\''`, `'\u{7b}'`); a lifetime or a
/// label (`'a`) is kept. There is one entry per line of `text`.
fn code_lines(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = text.chars().peekable();
    // The char before the current one, in the code kept or not.
    let mut prev = ' ';
    // Inside a literal or a comment, newlines still start a new line.
    let skip = |c: char, lines: &mut Vec<String>| {
        if c == '\n' {
            lines.push(String::new());
        }
    };
    while let Some(c) = chars.next() {
        let ident_before = prev.is_alphanumeric() || prev == '_';
        prev = c;
        match c {
            '\n' => lines.push(String::new()),
            '"' => {
                while let Some(c) = chars.next() {
                    skip(c, &mut lines);
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                skip(e, &mut lines);
                            }
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                prev = '"';
            }
            // A raw string: `r"…"`, `r#"…"#`, `br#"…"#` (and not `r#type`).
            'r' if (!ident_before || lines.last().is_some_and(|l| l.ends_with('b')))
                && matches!(chars.peek(), Some('#' | '"')) =>
            {
                let ahead: String = chars.clone().take_while(|c| *c == '#').collect();
                let hashes = ahead.len();
                if chars.clone().nth(hashes) != Some('"') {
                    lines.last_mut().expect("a line").push(c);
                    continue;
                }
                for _ in 0..=hashes {
                    chars.next();
                }
                let end = format!("\"{ahead}");
                let mut seen = String::new();
                for c in chars.by_ref() {
                    skip(c, &mut lines);
                    seen.push(c);
                    if seen.ends_with(&end) {
                        break;
                    }
                }
                prev = '"';
            }
            '/' if chars.peek() == Some(&'/') => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut depth = 1;
                while depth > 0 {
                    let Some(c) = chars.next() else { break };
                    skip(c, &mut lines);
                    match (c, chars.peek()) {
                        ('/', Some('*')) => {
                            chars.next();
                            depth += 1;
                        }
                        ('*', Some('/')) => {
                            chars.next();
                            depth -= 1;
                        }
                        _ => {}
                    }
                }
                prev = ' ';
            }
            // A char literal; a lifetime or a label is kept.
            '\'' => {
                let rest: Vec<char> = chars.clone().take(2).collect();
                if rest.first() == Some(&'\\') {
                    chars.next();
                    chars.next();
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                } else if rest.get(1) == Some(&'\'') {
                    chars.next();
                    chars.next();
                } else {
                    lines.last_mut().expect("a line").push(c);
                }
            }
            _ => lines.last_mut().expect("a line").push(c),
        }
    }
    // `str::lines` does not count a last, empty line after a final newline.
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
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

/// `super::` and `self::` paths made `crate::` paths, from the module
/// `module` (its path below the crate) they are written in.
fn absolute(module: &[String], path: &str) -> Option<String> {
    let mut at: Vec<&str> = module.iter().map(String::as_str).collect();
    let mut rest = path;
    if let Some(r) = rest.strip_prefix("self::") {
        rest = r;
    } else if rest.starts_with("super::") {
        while let Some(r) = rest.strip_prefix("super::") {
            at.pop()?;
            rest = r;
        }
    } else {
        return Some(path.to_string());
    }
    at.push(rest);
    Some(format!("crate::{}", at.join("::")))
}

/// Every `crate::`, `super::` and `self::` path in `code` (the file of
/// module `module`), as a `crate::` path, with its line.
fn imports_of(file: &str, module: &[String], code: &str) -> Vec<Import> {
    let lines = code_lines(code);
    let mut found = Vec::new();
    let mut push = |line: usize, path: &str| {
        let path =
            absolute(module, path).unwrap_or_else(|| format!("crate::<above the crate>::{path}"));
        found.push(Import {
            file: file.to_string(),
            line,
            path,
        });
    };
    let mut i = 0;
    while i < lines.len() {
        let mut l = lines[i].trim_start();
        // `pub use`, `pub(crate) use`, `pub(in crate::x) use`.
        if let Some(r) = l.strip_prefix("pub") {
            let r = r.trim_start();
            l = match r.strip_prefix('(') {
                Some(inner) => inner
                    .split_once(')')
                    .map_or(r, |(_, after)| after.trim_start()),
                None => r,
            };
        }
        let stmt_head = ["crate::", "super::", "self::"]
            .iter()
            .find_map(|root| l.strip_prefix("use ").filter(|u| u.starts_with(root)));
        if let Some(rest) = stmt_head {
            // A `use` statement, which may span lines.
            let first = i;
            let mut stmt = rest.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(&lines[i]);
            }
            let stmt = stmt.split(';').next().unwrap_or_default();
            let mut paths = Vec::new();
            expand("", stmt, &mut paths);
            for path in paths {
                push(first + 1, &path);
            }
        } else {
            // Paths written out in code: `crate::a::b::f(…)`, `super::x::Y`.
            let line = lines[i].as_str();
            let mut from = 0;
            while let Some((at, root)) = ["crate::", "super::", "self::"]
                .iter()
                .filter_map(|r| line[from..].find(r).map(|p| (from + p, *r)))
                .min()
            {
                let before = line[..at].chars().next_back();
                let tail = &line[at..];
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(tail.len());
                // `$crate::`, `x::self::` or an identifier ending in `self`
                // (`myself::`) are not paths from here.
                if !before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':' || b == '$')
                {
                    push(i + 1, tail[..end].trim_end_matches(':'));
                }
                from = at + root.len().max(end);
            }
        }
        i += 1;
    }
    found
}

/// Every import of every file, by the folder of the file; unit tests left out.
fn all_imports() -> BTreeMap<String, Vec<Import>> {
    imports_in(false)
}

/// Every import by folder; with `tests`, unit tests' imports too.
fn imports_in(tests: bool) -> BTreeMap<String, Vec<Import>> {
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
        if !tests && f.file_name().is_some_and(|n| n == "tests.rs") {
            // A module's unit tests, beside it (`#[cfg(test)] mod tests;`).
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        let name = format!("proxy/{}", rel.display());
        let mut module: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let code = if tests { text } else { without_tests(&text) };
        let imports = imports_of(&name, &module, &code);
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
    let found: Vec<String> = imports_of("x.rs", &["x".into()], code)
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

/// Items of the crate root that any module may use (not re-exports).
const ROOT_ITEMS: [&str; 1] = ["FastMap"];

/// Every import that breaks a rule, as `file:line: path (rule)`.
fn violations(imports: &BTreeMap<String, Vec<Import>>) -> Vec<String> {
    let none = Vec::new();
    let of = |f: &str| imports.get(f).unwrap_or(&none);
    let mut broken: Vec<String> = Vec::new();
    let mut rule = |what: &str, found: Vec<&Import>| {
        for i in found {
            broken.push(format!("{}:{}: {} ({what})", i.file, i.line, i.path));
        }
    };
    // Every path names a module of a folder (or a root item): not the
    // facade's re-exports, not a whole folder (`use crate::observe;` and then
    // `observe::audit::…` would pass every rule unseen), not a glob of one.
    for list in imports.values() {
        rule(
            "import from a folder's module, not the crate root's re-exports",
            list.iter()
                .filter(|i| {
                    let head = i.folder().unwrap_or_default();
                    !FOLDERS.contains(&head) && !ROOT_ITEMS.contains(&head)
                })
                .collect(),
        );
        rule(
            "import a folder's module, not the whole folder",
            list.iter()
                .filter(|i| {
                    let parts: Vec<&str> = i.path.split("::").collect();
                    FOLDERS.contains(&parts.get(1).copied().unwrap_or_default())
                        && (parts.len() == 2 || parts.get(2) == Some(&"*"))
                })
                .collect(),
        );
    }
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
    // 3. decision (no HTTP status chosen there: checked on its own below)
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
    // 6. the whole Config: the type, or its module (then `config::Config`)
    for f in FOLDERS
        .iter()
        .filter(|f| !["runtime", "cli", "tools", "devkit"].contains(f))
    {
        let whole = of(f)
            .iter()
            .filter(|i| {
                i.path == "crate::runtime::config"
                    || i.path == "crate::runtime::config::*"
                    || i.path == "crate::runtime::config::Config"
                    || i.path.starts_with("crate::runtime::config::Config::")
            })
            .collect();
        rule(
            "only runtime, cli, tools and devkit see the whole Config",
            whole,
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
    broken
}

#[test]
fn dependencies_point_one_way() {
    let broken = violations(&all_imports());
    assert!(
        broken.is_empty(),
        "{} import(s) break the layering rules:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// Each rule catches what it is there for, however the import is written.
#[test]
fn each_rule_catches_a_breaking_import() {
    let cases: [(&str, &[&str], &str, &str); 12] = [
        (
            "base",
            &["base", "paths"],
            "use crate::model::path::NormalPath;",
            "base imports nothing",
        ),
        (
            "model",
            &["model", "trace"],
            "use crate::observe::metrics::Metrics;",
            "model imports only base",
        ),
        (
            "transport",
            &["transport", "tls"],
            "use crate::observe::{metrics::Metrics,\n    audit::Slot};",
            "transport never imports observe::audit",
        ),
        (
            "decision",
            &["decision", "authz"],
            "pub(crate) use crate::pipeline::error::ProxyError;",
            "decision never imports pipeline",
        ),
        (
            "observe",
            &["observe", "audit"],
            "let x = crate::transport::upstream::Lease::new();",
            "observe never imports transport",
        ),
        (
            "pipeline",
            &["pipeline", "request"],
            "use super::super::runtime::sidecar::Sidecar;",
            "pipeline never imports runtime",
        ),
        (
            "k8s",
            &["k8s", "inject"],
            "use crate::runtime::config;",
            "whole Config",
        ),
        (
            "k8s",
            &["k8s", "webhook"],
            "use crate::decision::{self};",
            "whole folder",
        ),
        (
            "tools",
            &["tools", "slo"],
            "use crate::devkit::demo::DemoOptions;",
            "only cli imports devkit",
        ),
        (
            "transport",
            &["transport", "tls"],
            "use crate::Audit;",
            "crate root's re-exports",
        ),
        (
            "observe",
            &["observe", "metrics"],
            "use crate::pipeline::*;",
            "whole folder",
        ),
        (
            "decision",
            &["decision", "jwt", "metrics"],
            "use super::super::super::runtime::sidecar::Sidecar;",
            "decision never imports runtime",
        ),
    ];
    for (folder, module, code, expected) in cases {
        let module: Vec<String> = module.iter().map(|m| m.to_string()).collect();
        let imports = BTreeMap::from([(folder.to_string(), imports_of("x.rs", &module, code))]);
        let broken = violations(&imports);
        assert!(
            broken.iter().any(|b| b.contains(expected)),
            "`{code}` in {folder}/ is not caught as `{expected}`: {broken:?}"
        );
    }
    // A unit test may use what it likes; code after it is still read.
    let text = "use crate::base::hex;\n#[cfg(test)]\nmod tests {\n    use crate::devkit::sample;\n}\nuse crate::devkit::demo;\n";
    let found: Vec<String> = imports_of("x.rs", &["decision".into()], &without_tests(text))
        .into_iter()
        .map(|i| format!("{}:{}", i.line, i.path))
        .collect();
    assert_eq!(found, ["1:crate::base::hex", "6:crate::devkit::demo"]);
    // A char literal holding a quote does not hide the rest of its line.
    assert_eq!(
        code_only("let q = '\"'; crate::x::y(); // crate::z"),
        "let q = ; crate::x::y(); "
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
            let code = without_tests(&text);
            for (n, (line, code)) in code.lines().zip(code_lines(&code)).enumerate() {
                // Reading a status (`response.status() != StatusCode::OK`)
                // is not choosing one.
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

/// Unit tests included: a test that reached into a folder above its own
/// would make the folders depend on each other all the same.
#[test]
fn no_import_cycle_between_folders() {
    let imports = imports_in(true);
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
    }
    // The graph, for the record (`cargo test --test layering -- --nocapture`).
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
}

/// A function of a source file: its name, the line of its `fn` and the
/// number of lines from there to its closing brace.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// Every function with a body in `text`, nested ones too, in order. The
/// braces counted are the code's: those in literals and comments are
/// dropped first by `code_lines`.
fn functions(text: &str) -> Vec<Function> {
    let code: Vec<Vec<char>> = code_lines(text)
        .iter()
        .map(|l| l.chars().collect())
        .collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (n, line) in code.iter().enumerate() {
        let mut i = 0;
        while i + 2 < line.len() {
            let word = line[i] == 'f'
                && line[i + 1] == 'n'
                && line[i + 2].is_whitespace()
                && (i == 0 || !ident(line[i - 1]));
            if !word {
                i += 1;
                continue;
            }
            let mut at = i + 2;
            while at < line.len() && line[at].is_whitespace() {
                at += 1;
            }
            let name: String = line[at..].iter().take_while(|c| ident(**c)).collect();
            // `fn(u8) -> u8` is a type; `fn $name` is inside a macro.
            if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                if let Some(end) = body_end(&code, n, at + name.len()) {
                    found.push(Function {
                        name,
                        line: n + 1,
                        lines: end - n + 1,
                    });
                }
            }
            i = at;
        }
    }
    found
}

/// The line (from 0) of the brace closing the body of the function whose
/// signature goes on from `code[line][col]`; `None` for a declaration
/// without a body (`fn f();` in a trait).
fn body_end(code: &[Vec<char>], line: usize, col: usize) -> Option<usize> {
    // Parentheses and brackets of the signature (`-> [u8; 4]`) first, then
    // the braces of the body.
    let mut nesting = 0usize;
    let mut depth = 0usize;
    let mut col = col;
    for (n, l) in code.iter().enumerate().skip(line) {
        for &c in l.iter().skip(col) {
            match c {
                '(' | '[' if depth == 0 => nesting += 1,
                ')' | ']' if depth == 0 => nesting = nesting.saturating_sub(1),
                ';' if depth == 0 && nesting == 0 => return None,
                '{' => depth += 1,
                '}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(n);
                    }
                }
                _ => {}
            }
        }
        col = 0;
    }
    None
}

/// Most a file under proxy/ or tests/, or build.rs, may have.
const MAX_FILE_LINES: usize = 1000;
/// Most a function may have, from its `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;

/// Issue 18, "no big rooms": no file over 1,000 lines, no function over
/// 120, unit tests (`tests.rs`, `#[cfg(test)]` blocks) and integration
/// tests (issue 24) included.
#[test]
fn no_big_rooms() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["proxy", "tests"] {
        source_files(&root.join(dir), &mut files);
    }
    files.push(root.join("build.rs"));
    files.sort();
    let mut big = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read source");
        let name = f
            .strip_prefix(root)
            .expect("in the crate")
            .display()
            .to_string();
        let count = text.lines().count();
        if count > MAX_FILE_LINES {
            big.push(format!("{name}: {count} lines (file)"));
        }
        for func in functions(&text) {
            if func.lines > MAX_FN_LINES {
                big.push(format!(
                    "{name}:{} fn {}: {} lines",
                    func.line, func.name, func.lines
                ));
            }
        }
    }
    assert!(
        big.is_empty(),
        "no file over {MAX_FILE_LINES} lines, no function over {MAX_FN_LINES}; split by what each part does:\n{}",
        big.join("\n")
    );
}

/// The reader of `no_big_rooms`: braces in strings, raw strings, chars and
/// comments are not the code's; a signature's `;` is not a declaration's.
#[test]
fn the_function_reader_counts_code_braces_only() {
    let text = r####"
/// A doc comment with a brace {
pub fn one(a: [u8; 4]) -> Result<(), String> {
    let s = "}}} \" {";
    let r = r#"}"# ;
    let c = '}';
    let e = '\'';
    let b = (b'{', '\u{7b}', br#"{"#, b"{");
    /* } /* nested } */ } */
    fn inner<'a>(x: &'a str) -> &'a str {
        x
    }
    Ok(())
}
trait T {
    fn declared(&self);
}
type F = fn(u8) -> u8;
fn two()
where
    u8: Copy,
{
    let multi = "
    }
    ";
}
"####;
    let got: Vec<(String, usize, usize)> = functions(text)
        .into_iter()
        .map(|f| (f.name, f.line, f.lines))
        .collect();
    assert_eq!(
        got,
        [
            ("one".to_string(), 3, 12),
            ("inner".to_string(), 10, 3),
            ("two".to_string(), 19, 8),
        ]
    );
    assert_eq!(code_lines(text).len(), text.lines().count());
    // And it reads proxy/: every file has its functions found.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let found: usize = files
        .iter()
        .map(|f| functions(&std::fs::read_to_string(f).expect("read source")).len())
        .sum();
    assert!(found > 500, "the reader found {found} functions in proxy/");
}
