//! Where a node of a YAML document starts, by its path (`customProperties`,
//! then item 3, then `value`…), for errors found after the document was
//! read into values (which keep no positions).
//!
//! The document is read again by the same parser that read the values
//! (serde_yaml_ng), walking down the path and skipping everything else; at
//! the node it stops with an error, and the parser stamps that error with
//! the position of the node it was reading. So a position always means what
//! the parser understood (anchors, flow and block style alike), with no
//! second YAML parser to disagree with the first. [`locate`] costs one more
//! read of the document per node located; [`locate_all`] one read for any
//! number of nodes, and nodes are located only to report something.

use std::collections::HashMap;
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

/// Where each of `paths` starts, as [`locate`] would find it, in one read of
/// the document: locating the findings of a contract one read each took
/// 15 s for 4,000 of them.
///
/// The document is walked once along all the paths together. The position
/// of each node on a path is read before the node is: the node is read as
/// a newtype nested in itself until the parser's recursion limit stops it,
/// and the parser stamps that error with where the node starts, having
/// consumed nothing; the node is then read as usual. A key wanted by name
/// is stopped at as [`locate`] stops (it is a scalar: wholly read when the
/// error comes), and the walk goes on.
pub fn locate_all(text: &str, paths: &[&[Step]]) -> Vec<Option<(usize, usize)>> {
    let trie = Trie::of(paths);
    let mut found = Found {
        node_at: vec![None; trie.nodes.len()],
        path_at: vec![None; paths.len()],
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    // A walk cut short (a document the parser refuses) keeps what it found.
    let _ = Walk {
        trie: &trie,
        node: 0,
        found: &mut found,
    }
    .deserialize(de);
    let mut root: Option<Option<(usize, usize)>> = None;
    let mut root_at = || *root.get_or_insert_with(|| locate(text, &[]));
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            if let Some(at) = found.path_at[i] {
                return Some(at);
            }
            // The deepest node of the path that is in the document.
            let mut node = 0;
            let mut deepest = None;
            for step in path.iter() {
                match trie.child(node, step) {
                    Some(c) if found.node_at[c].is_some() => {
                        node = c;
                        deepest = found.node_at[c];
                    }
                    _ => break,
                }
            }
            deepest.or_else(&mut root_at)
        })
        .collect()
}

/// The paths of [`locate_all`] as a tree: node 0 is the document.
#[derive(Default)]
struct Trie<'p> {
    nodes: Vec<TrieNode<'p>>,
}

#[derive(Default)]
struct TrieNode<'p> {
    keys: HashMap<&'p str, usize>,
    items: HashMap<usize, usize>,
    /// The paths that end at the name of one of this mapping's keys.
    names: HashMap<&'p str, Vec<usize>>,
}

impl<'p> Trie<'p> {
    fn of(paths: &[&'p [Step]]) -> Trie<'p> {
        let mut trie = Trie {
            nodes: vec![TrieNode::default()],
        };
        for (i, path) in paths.iter().enumerate() {
            let mut node = 0;
            for step in path.iter() {
                let next = trie.nodes.len();
                let entry = match step {
                    Step::Key(k) => trie.nodes[node].keys.entry(k.as_str()),
                    Step::Index(n) => {
                        let at = *trie.nodes[node].items.entry(*n).or_insert(next);
                        if at == next {
                            trie.nodes.push(TrieNode::default());
                        }
                        node = at;
                        continue;
                    }
                    // A key's name is where its path ends (as in `locate`).
                    Step::KeyName(k) => {
                        trie.nodes[node]
                            .names
                            .entry(k.as_str())
                            .or_default()
                            .push(i);
                        break;
                    }
                };
                let at = *entry.or_insert(next);
                if at == next {
                    trie.nodes.push(TrieNode::default());
                }
                node = at;
            }
        }
        trie
    }

    fn child(&self, node: usize, step: &Step) -> Option<usize> {
        let n = &self.nodes[node];
        match step {
            Step::Key(k) => n.keys.get(k.as_str()).copied(),
            Step::Index(i) => n.items.get(i).copied(),
            Step::KeyName(_) => None,
        }
    }

    fn is_leaf(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.keys.is_empty() && n.items.is_empty() && n.names.is_empty()
    }
}

/// Where the walk found each node of the trie, and each path that ends at
/// a key's name.
struct Found {
    node_at: Vec<Option<(usize, usize)>>,
    path_at: Vec<Option<(usize, usize)>>,
}

/// The position a parser's error was stamped with (`… at line L column C`;
/// none written: the document's start).
fn stamped(message: &str) -> (usize, usize) {
    message
        .rsplit_once(" at line ")
        .and_then(|(_, at)| at.split_once(" column "))
        .and_then(|(l, c)| Some((l.trim().parse().ok()?, c.trim().parse().ok()?)))
        .unwrap_or((1, 1))
}

/// The message the parser gives when a node is nested past its limit.
const TOO_DEEP: &str = "recursion limit exceeded";

/// Reads where the next node starts, consuming nothing (see [`locate_all`]).
struct Mark;

/// `Visitor` methods for the scalars a walk meets: booleans, numbers and
/// null (and with `str`, strings and `none`), each answered `$answer`
/// (an expression of type `Result<$out, E>`).
macro_rules! answer_scalars {
    ($out:ty, $answer:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<$out, E> {
            $answer
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<$out, E> {
            $answer
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<$out, E> {
            $answer
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<$out, E> {
            $answer
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<$out, E> {
            $answer
        }
    };
    ($out:ty, $answer:expr, str) => {
        $crate::base::locate::answer_scalars!($out, $answer);
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<$out, E> {
            $answer
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<$out, E> {
            $answer
        }
    };
}
pub(crate) use answer_scalars;

/// `Visitor` methods that read a mapping or a sequence through without
/// looking into it, then answer `$answer`.
macro_rules! skip_collections {
    ($out:ty, $answer:expr) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$out, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            $answer
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            $answer
        }
    };
}
pub(crate) use skip_collections;

impl<'de> DeserializeSeed<'de> for Mark {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_newtype_struct("Mark", self)
    }
}

impl<'de> Visitor<'de> for Mark {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a node nested in itself")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_newtype_struct("Mark", self)
    }
}

/// The position [`Mark`] read, or the error it stopped with when that was
/// not the recursion limit (the node may have been read: the walk ends).
fn marked<E: de::Error>(probe: Result<(), E>) -> Result<(usize, usize), E> {
    match probe {
        Err(e) if e.to_string().starts_with(TOO_DEEP) => Ok(stamped(&e.to_string())),
        Err(e) => Err(e),
        Ok(()) => Err(E::custom("a node was read while its position was taken")),
    }
}

/// Reads a node along the trie's paths, recording where each node on them
/// starts.
struct Walk<'t, 'p, 'f> {
    trie: &'t Trie<'p>,
    node: usize,
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for Walk<'_, 'p, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = &self.trie.nodes[self.node];
        loop {
            let mut named: Option<&'p str> = None;
            let seed = NamedKey {
                node,
                named: &mut named,
            };
            let key = match map.next_key_seed(seed) {
                Ok(None) => return Ok(()),
                Ok(Some(key)) => key,
                Err(e) => {
                    let Some(name) = named else { return Err(e) };
                    let at = stamped(&e.to_string());
                    for &p in node.names.get(name).into_iter().flatten() {
                        self.found.path_at[p].get_or_insert(at);
                    }
                    Some(name)
                }
            };
            match key.and_then(|k| node.keys.get(k)) {
                Some(&child) if self.found.node_at[child].is_none() => {
                    let at = marked(map.next_value_seed(Mark))?;
                    self.found.node_at[child] = Some(at);
                    if self.trie.is_leaf(child) {
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        map.next_value_seed(Walk {
                            trie: self.trie,
                            node: child,
                            found: &mut *self.found,
                        })?;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let node = &self.trie.nodes[self.node];
        let mut i = 0;
        loop {
            let child = node.items.get(&i).copied();
            i += 1;
            let Some(child) = child else {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
                continue;
            };
            let at = match seq.next_element_seed(Mark) {
                Ok(None) => return Ok(()),
                probe => marked(probe.map(|_| ()))?,
            };
            self.found.node_at[child] = Some(at);
            let walk = Walk {
                trie: self.trie,
                node: child,
                found: &mut *self.found,
            };
            seq.next_element_seed(walk)?;
        }
    }

    answer_scalars!((), Ok(()), str);
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value (`!tag x`) is where the paths into it end.
        IgnoredAny.visit_enum(data).map(|_| ())
    }
}

/// A mapping's key: the trie's key it is, if any; a key wanted by name
/// stops with an error that the parser stamps with its position.
struct NamedKey<'n, 'p, 'o> {
    node: &'n TrieNode<'p>,
    named: &'o mut Option<&'p str>,
}

impl<'de, 'p> DeserializeSeed<'de> for NamedKey<'_, 'p, '_> {
    type Value = Option<&'p str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<&'p str>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for NamedKey<'_, 'p, '_> {
    type Value = Option<&'p str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<&'p str>, E> {
        if let Some((&name, _)) = self.node.names.get_key_value(v) {
            *self.named = Some(name);
            return Err(E::custom(FOUND));
        }
        Ok(self.node.keys.get_key_value(v).map(|(&k, _)| k))
    }
    answer_scalars!(Option<&'p str>, Ok(None));
    skip_collections!(Option<&'p str>, Ok(None));
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

    answer_scalars!((), Err(E::custom(FOUND)), str);
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
    answer_scalars!(bool, Ok(false));
    skip_collections!(bool, Ok(false));
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

    /// Every path `locate` is asked for, all at once: the same positions.
    #[test]
    fn locate_all_finds_in_one_read_what_locate_finds_one_by_one() {
        let doc = format!("{DOC}tagged: !thing {{ a: 1 }}\nlist: [1, [2, 3], {{ b: [] }}]\n");
        let cp = || key("customProperties");
        let paths: Vec<Vec<Step>> = vec![
            vec![],
            vec![key("kind")],
            vec![Step::KeyName("customProperties".into())],
            vec![
                cp(),
                Step::Index(1),
                key("value"),
                Step::Index(0),
                key("path"),
            ],
            vec![cp(), Step::Index(1), key("value"), Step::Index(1)],
            vec![
                cp(),
                Step::Index(1),
                key("value"),
                Step::Index(1),
                key("action"),
            ],
            vec![
                cp(),
                Step::Index(1),
                key("value"),
                Step::Index(1),
                key("dataset"),
            ],
            vec![cp(), Step::Index(1), key("value"), Step::Index(5)],
            vec![cp(), Step::Index(1), Step::KeyName("value".into())],
            vec![cp(), Step::Index(0), key("property")],
            vec![cp(), Step::Index(0), key("property")],
            vec![cp(), Step::Index(0)],
            vec![cp()],
            vec![key("kind"), key("deeper")],
            vec![key("missing"), Step::Index(3)],
            vec![Step::KeyName("missing".into())],
            vec![key("tagged"), key("a")],
            vec![key("list"), Step::Index(1), Step::Index(1)],
            vec![key("list"), Step::Index(2), key("b"), Step::Index(0)],
            vec![key("list"), key("x")],
        ];
        let one_by_one: Vec<_> = paths.iter().map(|p| locate(&doc, p)).collect();
        let all: Vec<&[Step]> = paths.iter().map(Vec::as_slice).collect();
        assert_eq!(locate_all(&doc, &all), one_by_one);
        assert_eq!(locate_all(&doc, &[]), Vec::new());
        // A document the parser refuses: what is found before its error.
        let broken = "a: 1\nb: [\n";
        assert_eq!(locate_all(broken, &[&[key("a")]]), [Some((1, 4))]);
    }

    #[test]
    fn locate_all_places_an_alias_where_it_is_written() {
        let doc = "base: &b { x: 1 }\nuse: *b\n";
        let paths: [&[Step]; 2] = [&[key("use")], &[key("use"), key("x")]];
        // `locate` reads through the alias to the anchored node.
        assert_eq!(locate(doc, paths[0]), Some((1, 7)));
        assert_eq!(locate_all(doc, &paths), [Some((2, 6)), Some((1, 15))]);
    }

    #[test]
    fn an_empty_path_is_the_document() {
        assert_eq!(locate(DOC, &[]), Some((1, 1)));
        assert_eq!(locate("", &[key("x")]), Some((1, 1)));
    }
}
