//! What a contract's names, version and free text may hold. They leave the
//! contract as Cedar entity ids, URL path segments, metric and alert
//! labels, Prometheus rule group names, comments of generated files,
//! response headers and log lines, where one character of the wrong kind
//! ends a line or a YAML document, opens a template action, or splits a
//! path; the mesh operator loads all domains' contracts together, so each
//! domain's text is checked here, where it is read.
//!
//! - **Names** (`id`, `domain`, `dataProduct`, `schema[].name`): 1 to
//!   [`NAME_MAX`] ASCII letters, digits, `.`, `_`, `-` and `:`, the first a
//!   letter or a digit (`sales.orders`, `orders_2024`, a UUID, a URN).
//! - **`version`**: ODCS gives it no form (its examples are SemVer,
//!   `1.1.0`); meshgate takes SemVer's characters: 1 to [`VERSION_MAX`]
//!   ASCII letters, digits, `.`, `-` and `+`, the first a letter or a digit
//!   (`1.2.0`, `2.0.0-rc.1+build.5`, `v3`).
//! - **Free text** (`name`, the owner, `tags`, `allowedPurposes`, the names
//!   of schema properties): anything but control characters, line and
//!   paragraph separators and bidirectional controls
//!   ([`crate::base::text::is_unsafe`]).

/// The longest name.
pub const NAME_MAX: usize = 128;

/// The longest version.
pub const VERSION_MAX: usize = 64;

/// The characters of a name besides ASCII letters and digits.
const NAME_MORE: [char; 4] = ['.', '_', '-', ':'];

/// The characters of a version besides ASCII letters and digits.
const VERSION_MORE: [char; 3] = ['.', '-', '+'];

/// Checks a name; `what` names it in the message (`a product id`).
pub fn name(s: &str, what: &str) -> Result<(), String> {
    within(
        s,
        what,
        NAME_MAX,
        &NAME_MORE,
        "ASCII letters, digits, `.`, `_`, `-` and `:`",
    )
}

/// Checks a `version`.
pub fn version(s: &str) -> Result<(), String> {
    within(
        s,
        "a version",
        VERSION_MAX,
        &VERSION_MORE,
        "of SemVer's characters (ASCII letters, digits, `.`, `-` and `+`)",
    )
}

/// Checks free text: no character that could start a line of its own or
/// reorder what is shown.
/// Whether `s` is one HTTP token (RFC 9110 5.6.2: letters, digits and
/// ``!#$%&'*+-.^_`|~``), as a declared purpose (`x-data-purpose`) must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub fn text(s: &str) -> Result<(), String> {
    match s.chars().find(|c| crate::base::text::is_unsafe(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "`{}` holds `{}`: control characters, line separators and bidirectional controls are refused here",
            s.escape_debug(),
            c.escape_debug()
        )),
    }
}

fn within(s: &str, what: &str, max: usize, more: &[char], set: &str) -> Result<(), String> {
    let rule = format!("{what} is 1 to {max} {set}, the first a letter or a digit");
    let Some(first) = s.chars().next() else {
        return Err(format!("empty: {rule}"));
    };
    let shown = s.escape_debug();
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !more.contains(c))
    {
        return Err(format!("`{shown}` holds `{}`: {rule}", c.escape_debug()));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!("`{shown}` starts with `{first}`: {rule}"));
    }
    if s.len() > max {
        return Err(format!("{} characters: {rule}", s.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_and_text_hold_only_their_characters() {
        for ok in ["sales.orders", "orders_2024", "urn:acme:sales:orders", "1a"] {
            assert_eq!(name(ok, "a product id"), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("sales.x{{", "holds `{`"),
            ("sales/x", "holds `/`"),
            ("sales x", "holds ` `"),
            ("sales.é", "holds `é`"),
            ("a\nb", "`a\\nb` holds `\\n`"),
            ("-x", "starts with `-`"),
            ("", "empty"),
        ] {
            let e = name(bad, "a product id").expect_err(bad);
            assert!(
                e.contains(says) && e.contains("a product id is 1 to 128"),
                "{e}"
            );
        }
        assert!(name(&"a".repeat(129), "a domain").is_err());
        for ok in ["1.0.0", "2.0.0-rc.1+build.5", "v3", "2026.12"] {
            assert_eq!(version(ok), Ok(()), "{ok}");
        }
        for bad in [
            "1.0.0\ngroups: []\n---\n#",
            "1 {{ with query \"x\" }}{{ end }}",
            "9.0/beta",
            "1.0_0",
            "+1",
            "",
        ] {
            let e = version(bad).expect_err(bad);
            assert!(e.contains("SemVer's characters"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(version(&"1".repeat(65)).is_err());
        assert_eq!(text("Sales orders (v1) — Ünïcode {{ ok }}"), Ok(()));
        for bad in [
            "a\nb",
            "a\rb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{202e}b",
            "a\0b",
        ] {
            let e = text(bad).expect_err(bad);
            assert!(
                !e.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{202e}', '\0']),
                "{e}"
            );
        }
    }
}
