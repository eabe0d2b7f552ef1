//! How deep a policy may go, and the stacks policies are handled on.
//!
//! Cedar's parser, its JSON form (EST, which Cedar makes by parsing the
//! policy's text again) and meshgate's per-request specialisation of a
//! policy (`index.rs`) recurse once per level of an expression, and only
//! Cedar's evaluator and typechecker check the stack they have left. A
//! policy with 150 nested brackets overflowed the 2 MiB stack of the
//! thread a reload ran on, and a chain of 1,000 `… || …` terms that of the
//! worker that first decided a request it applied to: either aborted the
//! sidecar. So a policy file is refused before Cedar reads it when one of
//! its policies nests brackets more than [`MAX_NESTING`] deep or has more
//! than [`MAX_OPERATORS`] operators (an operator chain is at most that
//! deep), and everything after runs on threads whose stack holds a policy
//! at those bounds with room to spare.
//!
//! Stack per level, measured with a debug build (Cedar built at opt-level 3
//! as in every build, meshgate's own code unoptimised: the largest frames)
//! as the resident size of the stack of a fresh thread after the step
//! (`depth_probe.rs` says how to run it):
//!
//! | step                                  | per bracket | per operator |
//! |---------------------------------------|-------------|--------------|
//! | parse (`PolicySet::from_str`)         | 16.5 KB     | 1.8 KB       |
//! | typecheck (strict validation)         | 3.4 KB      | 4.7 KB       |
//! | specialise (EST out and back, walks)  | 16.6 KB     | 5.3 KB       |
//! | evaluate (`Authorizer`)               | 6.4 KB      | 4.3 KB       |
//!
//! (brackets: `((…))`, `[[…]]`, `{a: {a: …}}`, `!(!(…))`, `if (if (…))`;
//! operators: chains of `||`, `&&`, `+`, `.a`, `["a"]`, `else if`, each
//! level of which is one operator at worst). At the bounds that is at most
//! 32 × 16.6 KB + 1,000 × 5.3 KB ≈ 5.8 MB to specialise and ≈ 4.5 MB to
//! evaluate, on threads of [`DECIDING_STACK`] (the runtime's workers and
//! the CLI's thread), and at most ≈ 5 MB to parse and validate, on threads
//! of [`BUILD_STACK`]; the deepest policy within both bounds took 5.3 MB to
//! specialise and 0.5 MB to parse. A thread's stack is reserved address
//! space: only the pages a thread has touched are
//! resident, so larger stacks cost no memory until they are used.

use std::thread::{Scope, ScopedJoinHandle};

use super::*;

/// Brackets (`(`, `[`, `{`, the `when { … }` included) nested in one
/// policy, at most. Hand-written policies nest a few levels.
pub const MAX_NESTING: usize = 32;

/// Operators in one policy, at most: `||`, `&&`, comparisons, `+ - *`, `!`,
/// attribute access `.`, `in`, `has`, `like`, `is` and `if`. A long chain
/// of alternatives is a set: `["a", "b"].contains(x)`, or `x in [E::"a",
/// E::"b"]` for entities.
pub const MAX_OPERATORS: usize = 1_000;

/// The stack of every thread a snapshot is built on (read, parsed,
/// validated, indexed): start-up, reload, `validate`, `test`, `authorize`.
pub const BUILD_STACK: usize = 64 * 1024 * 1024;

/// The stack of the threads that decide requests: the runtime's workers and
/// the CLI's own thread (which runs a one-worker runtime).
pub const DECIDING_STACK: usize = 16 * 1024 * 1024;

/// Starts `f` on a thread of `scope` with [`BUILD_STACK`].
pub(super) fn spawn_build<'scope, T: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name("meshgate-build".into())
        .stack_size(BUILD_STACK)
        .spawn_scoped(scope, f)
}

/// What a thread of [`spawn_build`] returned, or why it returned nothing
/// (`what` names its work).
pub(super) fn joined<T>(
    thread: std::io::Result<ScopedJoinHandle<'_, T>>,
    what: &str,
) -> Result<T, String> {
    match thread {
        Ok(h) => h
            .join()
            .map_err(|_| format!("policy: {what} failed unexpectedly")),
        Err(e) => Err(format!("policy: {what}: cannot start a thread: {e}")),
    }
}

/// Runs `build` on a thread of its own with [`BUILD_STACK`], whatever
/// thread calls it (a blocking-pool thread has 2 MiB).
pub(super) fn on_build_thread<T: Send>(
    build: impl FnOnce() -> Result<T, LoadErrors> + Send,
) -> Result<T, LoadErrors> {
    std::thread::scope(|scope| {
        joined(spawn_build(scope, build), "building the snapshot")
            .unwrap_or_else(|e| Err(LoadErrors::all(vec![e])))
    })
}

/// The policies of one Cedar file that go beyond [`MAX_NESTING`] or
/// [`MAX_OPERATORS`], each as `file:line:col: message`; read as Cedar's
/// lexer reads the text (strings and `//` comments skipped), without
/// parsing it. Brackets nested too deep end the check: nothing after them
/// can be placed in a policy.
pub(super) fn check(file: &str, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    // Placed only for an error, with the lines found once.
    let lines = std::cell::OnceCell::new();
    let at = |offset: usize| {
        let (l, c) = lines.get_or_init(|| Lines::of(text)).position(offset);
        format!("{file}:{l}:{c}")
    };
    let bytes = text.as_bytes();
    let mut nesting = 0usize;
    // Where the current policy starts, and its operators so far.
    let mut start: Option<usize> = None;
    let mut operators = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'/' && next == Some(b'/') {
            // As Cedar's lexer: a comment ends at either line-break character.
            while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                i += 1;
            }
            continue;
        }
        let here = i;
        start.get_or_insert(here);
        let (len, operator) = token(bytes, i);
        i += len;
        match b {
            b'(' | b'[' | b'{' => {
                nesting += 1;
                if nesting > MAX_NESTING {
                    errors.push(format!(
                        "{}: brackets nested more than {MAX_NESTING} deep; a policy may nest `(`, `[` and `{{` at most {MAX_NESTING} deep",
                        at(here)
                    ));
                    return errors;
                }
            }
            b')' | b']' | b'}' => nesting = nesting.saturating_sub(1),
            b';' if nesting == 0 => {
                if let Some(s) = start.take() {
                    too_many(&mut errors, || at(s), operators);
                }
                operators = 0;
            }
            _ => operators += usize::from(operator),
        }
    }
    if let Some(s) = start {
        too_many(&mut errors, || at(s), operators);
    }
    errors
}

fn too_many(errors: &mut Vec<String>, at: impl FnOnce() -> String, operators: usize) {
    if operators > MAX_OPERATORS {
        errors.push(format!(
            "{}: policy has {operators} operators; at most {MAX_OPERATORS} are allowed in one policy (write a long chain such as `x == \"a\" || x == \"b\" || …` as a set: `[\"a\", \"b\"].contains(x)`, or `x in [E::\"a\", E::\"b\"]` for entities)",
            at()
        ));
    }
}

/// The length of the token at `i` (a string literal whole, a name or a
/// number whole, an operator of one or two characters, any other byte),
/// and whether it is an operator.
fn token(bytes: &[u8], i: usize) -> (usize, bool) {
    let b = bytes[i];
    let next = bytes.get(i + 1).copied();
    if b == b'"' {
        let mut j = i + 1;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        return ((j + 1).min(bytes.len()) - i, false);
    }
    if b.is_ascii_alphanumeric() || b == b'_' {
        let mut j = i + 1;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        let word = &bytes[i..j];
        let keyword = [&b"in"[..], b"has", b"like", b"is", b"if"].contains(&word);
        return (j - i, keyword);
    }
    match (b, next) {
        (b'|', Some(b'|'))
        | (b'&', Some(b'&'))
        | (b'=', Some(b'='))
        | (b'!', Some(b'='))
        | (b'<', Some(b'='))
        | (b'>', Some(b'=')) => (2, true),
        (b'<' | b'>' | b'+' | b'-' | b'*' | b'!' | b'.', _) => (1, true),
        _ => (1, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(condition: &str) -> String {
        format!("@id(\"p\")\npermit (principal, action, resource)\nwhen {{ {condition} }};\n")
    }

    fn nested(n: usize) -> String {
        format!("{}true{}", "(".repeat(n), ")".repeat(n))
    }

    fn chain(terms: usize) -> String {
        vec!["context.has_user"; terms].join(" || ")
    }

    #[test]
    fn brackets_are_counted_outside_strings_and_comments() {
        // `when {` is one level: 31 more are allowed.
        assert!(check("a.cedar", &policy(&nested(MAX_NESTING - 1))).is_empty());
        let e = check("a.cedar", &policy(&nested(MAX_NESTING)));
        assert_eq!(
            e,
            [format!("a.cedar:3:{}: brackets nested more than 32 deep; a policy may nest `(`, `[` and `{{` at most 32 deep", 7 + MAX_NESTING)]
        );
        let quoted = format!(
            "\"{}\" like \"{}\" // {}",
            "(".repeat(99),
            "[".repeat(99),
            "{".repeat(99)
        );
        assert!(check("a.cedar", &policy(&format!("context.path{quoted}\n"))).is_empty());
        // An escaped quote does not end the string.
        let escaped = format!("context.path == \"\\\"{}\"", "(".repeat(99));
        assert!(check("a.cedar", &policy(&escaped)).is_empty());
    }

    #[test]
    fn an_est_deeper_than_the_walks_go_is_found_without_recursion() {
        use super::super::index::deeper_than;
        let mut v = serde_json::json!({ "Value": true });
        for _ in 0..10 {
            v = serde_json::json!({ "!": { "arg": v } });
        }
        assert!(deeper_than(&v, 21));
        assert!(!deeper_than(&v, 22));
    }

    #[test]
    fn operators_are_counted_per_policy() {
        // Two per term (`.` and `||`), less the last `||`.
        let under = chain(MAX_OPERATORS / 2);
        assert!(check("a.cedar", &policy(&under)).is_empty());
        let two = format!("{}{}", policy(&under), policy(&under));
        assert!(check("a.cedar", &two).is_empty(), "each policy its own");
        let over = chain(MAX_OPERATORS / 2 + 1);
        let text = format!("// first\n{}{}", policy("true"), policy(&over));
        let e = check("b.cedar", &text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("b.cedar:5:1: policy has 1001 operators; at most 1000"),
            "{e:?}"
        );
        assert!(e[0].contains("[\"a\", \"b\"].contains(x)"), "{e:?}");
        // Keywords count, names that start like them do not.
        assert_eq!(token(b"in ", 0), (2, true));
        assert_eq!(token(b"index", 0), (5, false));
        assert_eq!(token(b"is", 0), (2, true));
        assert_eq!(token(b"!=", 0), (2, true));
        assert_eq!(token(b"::", 0), (1, false));
    }
}
