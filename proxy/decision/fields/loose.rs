//! A declared name written otherwise: a key or CSV column that is not a
//! declared name byte for byte, but that a consumer's reader may take for
//! one. Readers are lenient: Go's `encoding/json` matches keys without
//! case (Unicode's simple folding: `ſ` is `s`, the Kelvin sign `k`), .NET
//! and Jackson do when asked, serde and Jackson map `customerEmail` onto
//! `customer_email` under a naming convention, and CSV readers trim the
//! space after a `,` (`skipinitialspace`, `strip()`; pandas' `sep=", "`).
//! A hidden field under such a name would pass as an undeclared one, so
//! the masker refuses a response that has one (`tree::Level::hidden_otherwise`).
//!
//! Two names are the same here when they are equal after dropping
//! whitespace, control and invisible format characters, `_` and `-`
//! anywhere, and bytes that are not UTF-8, and folding case (ASCII, the
//! few other letters whose folding gives an ASCII one, fullwidth forms).
//! Only keys that match no declared name exactly are compared so (the
//! rare path): a declared name costs nothing more.

/// The loose form of a declared name, to compare keys with ([`same`]).
pub fn loose(name: &str) -> Box<str> {
    folded(name).collect::<String>().into_boxed_str()
}

/// Whether `name` (a key's bytes, escapes decoded) is `declared` (a
/// [`loose`] form) written otherwise.
pub fn same(name: &[u8], declared: &str) -> bool {
    let mut chars = name
        .utf8_chunks()
        .flat_map(|chunk| folded(chunk.valid()))
        .fuse();
    let mut want = declared.chars();
    loop {
        match (chars.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// `text`'s characters as a lenient reader compares them.
fn folded(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars().map(fold).filter(|c| !ignored(*c))
}

/// What a reader (or an eye) passes over: whitespace (a CSV reader's trim,
/// a label's spaces), control and invisible format characters, and the
/// separators naming conventions differ by.
fn ignored(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '_' | '-'
                | '\u{AD}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{FEFF}'
        )
}

/// A character with its case folded: lower case where it has one lower
/// case character (`İ`, `ı`, `ſ` and the Kelvin sign fold to the ASCII
/// letter Go's and Java's readers match them with), a fullwidth form as
/// its ASCII character.
fn fold(c: char) -> char {
    match c {
        _ if c.is_ascii() => c.to_ascii_lowercase(),
        '\u{FF01}'..='\u{FF5E}' => {
            char::from_u32(u32::from(c) - 0xFEE0).map_or(c, |a| a.to_ascii_lowercase())
        }
        'ſ' => 's',
        '\u{212A}' => 'k',
        'ı' | 'İ' => 'i',
        _ => {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_written_otherwise_is_the_same_name() {
        let declared = loose("customer_email");
        for other in [
            "customer_email",
            " customer_email",
            "customer_email ",
            "\tCustomer_Email\r\n",
            "CUSTOMER_EMAIL",
            "customerEmail",
            "CustomerEmail",
            "customer-email",
            "customer email",
            "\u{a0}customer_email\u{3000}",
            "customer\u{200b}_email",
            "\u{feff}customer_email",
            "cuſtomer_email",
            "ｃｕｓｔｏｍｅｒ＿ｅｍａｉｌ",
        ] {
            assert!(same(other.as_bytes(), &declared), "{other:?}");
        }
        // Bytes that are not UTF-8 (a Latin-1 no-break space) are passed over.
        assert!(same(b"customer_email\xa0", &declared));
        assert!(same("ıd".as_bytes(), &loose("ID")));
        assert!(same("\u{212a}ey".as_bytes(), &loose("key")));
        for other in [
            "",
            "customer",
            "customer_emails",
            "customer.email",
            "customer_e-mail_2",
            "email",
        ] {
            assert!(!same(other.as_bytes(), &declared), "{other:?}");
        }
        assert!(same(b" ", &loose("_")));
    }
}
