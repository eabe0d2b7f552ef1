//! A declared name written otherwise: a key or CSV column that is not a
//! declared name byte for byte, but that a consumer's reader may take for
//! one. Readers are lenient: Go's `encoding/json` matches keys without
//! case (Unicode's simple folding: `ſ` is `s`, the Kelvin sign `k`), .NET
//! and Jackson do when asked, serde and Jackson map `customerEmail` onto
//! `customer_email` under a naming convention, and CSV readers trim the
//! space after a `,` (`skipinitialspace`, `strip()`; pandas' `sep=", "`).
//! A hidden field under such a name would pass as an undeclared one, so
//! the masker refuses a response that has one (`tree::Level::near_miss`).
//!
//! Two names are the same here when they are equal after dropping
//! whitespace, control and invisible format characters, `_` and `-`
//! anywhere, and bytes that are not UTF-8, and folding case (ASCII, the
//! few other letters whose folding gives an ASCII one, fullwidth forms).
//! Only keys that match no declared name exactly are compared so (the
//! rare path): a declared name costs nothing more.

use std::hash::{BuildHasher, Hasher};

/// The loose forms of some declared names (a level's that hide a field),
/// each with a hash of its characters: a key is folded once, whatever the
/// number of names, and compared in full only with a name of its hash.
#[derive(Debug, Default)]
pub struct Names {
    forms: Box<[(u64, Box<str>)]>,
    /// The most characters of a form: a key that folds to more is none.
    longest: usize,
}

impl Names {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Names {
        let forms: Box<[(u64, Box<str>)]> = names
            .into_iter()
            .map(|name| {
                let form: String = folded(name).collect();
                (hash(form.chars()).0, form.into_boxed_str())
            })
            .collect();
        let longest = forms
            .iter()
            .map(|(_, f)| f.chars().count())
            .max()
            .unwrap_or(0);
        Names { forms, longest }
    }

    /// The names' loose forms, for a reference that compares a key with
    /// each ([`same`]): the fuzz targets' check of [`Names::has`].
    pub fn forms(&self) -> impl Iterator<Item = &str> {
        self.forms.iter().map(|(_, form)| &**form)
    }

    /// Whether `key` (a key's bytes, escapes decoded) is one of the names
    /// written otherwise.
    pub fn has(&self, key: &[u8]) -> bool {
        if self.forms.is_empty() {
            return false;
        }
        let chars = key
            .utf8_chunks()
            .flat_map(|chunk| folded(chunk.valid()))
            .take(self.longest + 1);
        let (h, count) = hash(chars);
        count <= self.longest
            && self
                .forms
                .iter()
                .any(|(fh, form)| *fh == h && same(key, form))
    }
}

/// A hash of `chars` (the same for the same characters in every process:
/// names and keys are hashed apart), and how many there were.
fn hash(chars: impl Iterator<Item = char>) -> (u64, usize) {
    let mut h = foldhash::fast::FixedState::with_seed(0x6d65_7368).build_hasher();
    let mut count = 0;
    for c in chars {
        h.write_u32(u32::from(c));
        count += 1;
    }
    (h.finish(), count)
}

/// Whether `name` (a key's bytes, escapes decoded) is `declared` (a loose
/// form) written otherwise.
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
        let declared = Names::new(["customer_email"]);
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
            assert!(declared.has(other.as_bytes()), "{other:?}");
        }
        // Bytes that are not UTF-8 (a Latin-1 no-break space) are passed over.
        assert!(declared.has(b"customer_email\xa0"));
        assert!(Names::new(["ID"]).has("ıd".as_bytes()));
        assert!(Names::new(["key"]).has("\u{212a}ey".as_bytes()));
        for other in [
            "",
            "customer",
            "customer_emails",
            "customer.email",
            "customer_e-mail_2",
            "email",
        ] {
            assert!(!declared.has(other.as_bytes()), "{other:?}");
        }
        assert!(Names::new(["_"]).has(b" "));
        assert!(!Names::new([]).has(b"customer_email"));
        // Among several names, each is found, and only they are.
        let names = Names::new(["customer_email", "phone", "address_line_1"]);
        for key in ["Phone", "customerEmail", "ADDRESS LINE 1"] {
            assert!(names.has(key.as_bytes()), "{key:?}");
        }
        for key in ["phones", "address_line", "customer_email_address"] {
            assert!(!names.has(key.as_bytes()), "{key:?}");
        }
    }
}
