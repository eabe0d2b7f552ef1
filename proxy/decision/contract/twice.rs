//! A key written twice in one mapping of a contract. serde_yaml_ng refuses
//! it, but at the mapping's start (the document's, for a top-level key);
//! this reads the document again and stops at the second key itself, so
//! that the parser stamps it with that key's position, as
//! [`crate::base::locate`] does for a node.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::base::locate::{answer_scalars, skip_collections, Step};

/// The message the walk stops with.
const FOUND: &str = "(key written twice)";

/// The second of two equal keys of one mapping: where it is (1-based line
/// and column), the path of its mapping, and the key.
pub(super) struct Twice {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) mapping: Vec<Step>,
    pub(super) key: String,
}

/// The first key of `text` written twice in its mapping, if any.
pub(super) fn find(text: &str) -> Option<Twice> {
    let found = RefCell::new(None);
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let walk = Walk {
        path: Vec::new(),
        found: &found,
    };
    let err = walk.deserialize(de).err()?;
    let (mapping, key) = found.into_inner()?;
    let at = err.location()?;
    Some(Twice {
        line: at.line(),
        column: at.column(),
        mapping,
        key,
    })
}

type Found = RefCell<Option<(Vec<Step>, String)>>;

/// Walks every node below `path`.
struct Walk<'f> {
    path: Vec<Step>,
    found: &'f Found,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: Vec<String> = Vec::new();
        loop {
            let key = Key {
                seen: &seen,
                path: &self.path,
                found: self.found,
            };
            let Some(k) = map.next_key_seed(key)? else {
                return Ok(());
            };
            let mut path = self.path.clone();
            match k {
                Some(k) => {
                    path.push(Step::Key(k.clone()));
                    seen.push(k);
                }
                // A key that is not a string: its value is walked by no path.
                None => path.push(Step::Key(String::new())),
            }
            map.next_value_seed(Walk {
                path,
                found: self.found,
            })?;
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let mut path = self.path.clone();
            path.push(Step::Index(i));
            let walk = Walk {
                path,
                found: self.found,
            };
            if seq.next_element_seed(walk)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): its value is walked.
        use de::VariantAccess;
        let (_, v): (IgnoredAny, _) = data.variant()?;
        v.newtype_variant_seed(self)
    }
    answer_scalars!((), Ok(()), str);
}

/// A mapping's key: its text when it is a string, and the walk's end when
/// the mapping has it already.
struct Key<'s> {
    seen: &'s [String],
    path: &'s [Step],
    found: &'s Found,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        if self.seen.iter().any(|k| k == v) {
            *self.found.borrow_mut() = Some((self.path.to_vec(), v.to_string()));
            return Err(E::custom(FOUND));
        }
        Ok(Some(v.to_string()))
    }
    answer_scalars!(Option<String>, Ok(None));
    skip_collections!(Option<String>, Ok(None));
}
