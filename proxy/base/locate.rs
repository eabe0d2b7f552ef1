//! Where a node of a YAML document starts, by its path (`customProperties`,
//! then item 3, then `value`…), for errors found after the document was
//! read into values (which keep no positions).
//!
//! The document is read again by the same parser that read the values
//! (serde_yaml_ng), walking down the path and skipping everything else; at
//! the node it stops with an error, and the parser stamps that error with
//! the position of the node it was reading. So a position always means what
//! the parser understood (anchors, flow and block style alike), with no
//! second YAML parser to disagree with the first. It costs one more read of
//! the document per node located, and nodes are located only to report
//! something.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step down a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The value of a mapping's key.
    Key(String),
    /// The key itself (an unknown key is reported where it is written).
    KeyName(String),
    /// A sequence's item.
    Index(usize),
}

/// The (1-based) line and column where the node at `path` starts; where
/// the path leaves the document, the deepest node on it that exists.
pub fn locate(text: &str, path: &[Step]) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Probe { path }).deserialize(de) {
        // The path went nowhere at all: the document's start.
        Ok(()) => Some((1, 1)),
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

/// The same for a JSON document (`entities.json`): serde_json stamps the
/// error with where it was reading, just inside the node (after a mapping's
/// `{`, after a key).
pub fn locate_json(text: &str, path: &[Step]) -> Option<(usize, usize)> {
    let mut de = serde_json::Deserializer::from_str(text);
    match (Probe { path }).deserialize(&mut de) {
        Ok(()) => Some((1, 1)),
        Err(e) if e.line() == 0 => None,
        Err(e) => Some((e.line(), e.column())),
    }
}

/// The message of the error a probe stops with; any other error (a syntax
/// error) is the parser's own, and its position is as good.
const FOUND: &str = "(located)";

struct Probe<'p> {
    path: &'p [Step],
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest, name_only) = match self.path.split_first() {
            Some((Step::Key(k), rest)) => (k.as_str(), rest, false),
            Some((Step::KeyName(k), rest)) => (k.as_str(), rest, true),
            // The node itself, or a path that goes on into a list: here.
            _ => return Err(de::Error::custom(FOUND)),
        };
        while let Some(found) = map.next_key_seed(KeySeed { want, name_only })? {
            if found {
                return map.next_value_seed(Probe { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            Some((Step::Index(i), rest)) => (*i, rest),
            _ => return Err(de::Error::custom(FOUND)),
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(FOUND));
            }
        }
        match seq.next_element_seed(Probe { path: rest })? {
            Some(()) => Ok(()),
            None => Err(de::Error::custom(FOUND)),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`): the node is here.
        Err(de::Error::custom(FOUND))
    }
}

/// A mapping's key: whether it is the one wanted; with `name_only`, the
/// key itself is the node, and reading it stops the walk.
struct KeySeed<'w> {
    want: &'w str,
    name_only: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == self.want && self.name_only {
            return Err(E::custom(FOUND));
        }
        Ok(v == self.want)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
kind: DataContract
customProperties:
  - property: classification
    value: internal
  - property: meshgateRoutes
    value:
      - { method: GET, path: /a, action: read }
      - method: GET
        path: /b
        action: raed
";

    fn key(k: &str) -> Step {
        Step::Key(k.to_string())
    }

    #[test]
    fn finds_keys_items_and_flow_nodes() {
        assert_eq!(locate(DOC, &[key("kind")]), Some((1, 7)));
        assert_eq!(
            locate(DOC, &[Step::KeyName("customProperties".into())]),
            Some((2, 1))
        );
        let routes = [key("customProperties"), Step::Index(1), key("value")];
        let at = |more: &[Step]| locate(DOC, &[&routes[..], more].concat());
        assert_eq!(at(&[Step::Index(0), key("path")]), Some((7, 30)));
        assert_eq!(at(&[Step::Index(1)]), Some((8, 9)));
        assert_eq!(at(&[Step::Index(1), key("action")]), Some((10, 17)));
        // A key that is not there: the mapping that lacks it.
        assert_eq!(at(&[Step::Index(1), key("dataset")]), Some((8, 9)));
        // An item past the end: the sequence.
        assert_eq!(at(&[Step::Index(5)]), Some((7, 7)));
    }

    #[test]
    fn finds_json_entities_and_attributes() {
        let json = "[\n  { \"uid\": {}, \"attrs\": {} },\n  { \"uid\": {},\n    \"attrs\": { \"a\": 1, \"namespaces\": 2 } }\n]";
        assert_eq!(locate_json(json, &[Step::Index(1)]).map(|p| p.0), Some(3));
        let attr = [
            Step::Index(1),
            key("attrs"),
            Step::KeyName("namespaces".into()),
        ];
        assert_eq!(locate_json(json, &attr).map(|p| p.0), Some(4));
    }

    #[test]
    fn an_empty_path_is_the_document() {
        assert_eq!(locate(DOC, &[]), Some((1, 1)));
        assert_eq!(locate("", &[key("x")]), Some((1, 1)));
    }
}
