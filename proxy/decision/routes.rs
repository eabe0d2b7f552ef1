//! The route table: method + path pattern (`/orders/{id}`) -> product, action,
//! dataset. A segment trie; literal segments win over `{name}` segments.

use http::Method;

use crate::decision::contract::Action;
use crate::model::path::NormalPath;

/// What a route leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the product in the snapshot.
    pub product: usize,
    pub action: Action,
    /// Index of the dataset within the product.
    pub dataset: Option<usize>,
    /// The pattern as written, for explanations.
    pub pattern: String,
    /// The route's end-user token requirement (or its product's).
    pub user_token: crate::decision::contract::UserToken,
}

impl Target {
    /// The target of route `r` of product `p`, the product at index
    /// `product` of the snapshot.
    pub fn of(
        product: usize,
        p: &crate::decision::contract::Product,
        r: &crate::decision::contract::RouteSpec,
    ) -> Target {
        Target {
            product,
            action: r.action,
            dataset: r
                .dataset
                .as_ref()
                .and_then(|d| p.datasets.iter().position(|(n, _)| n == d)),
            pattern: r.path.clone(),
            user_token: r.user_token.unwrap_or(p.user_token),
        }
    }
}

/// A route that cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Pattern(String),
    /// The method and path are routed already, by the product at index
    /// `by_product` (the snapshot's reader names its file).
    #[error("{route} is already routed (pattern `{by_pattern}`)")]
    Taken {
        route: String,
        by_product: usize,
        by_pattern: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a Target),
    /// The path exists, not for this method.
    MethodNotAllowed,
    NotFound,
}

#[derive(Debug, Default)]
struct Node {
    literals: crate::FastMap<String, Node>,
    param: Option<Box<Node>>,
    ends: Vec<(Method, Target)>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    root: Node,
    len: usize,
}

enum Seg<'a> {
    Literal(&'a str),
    Param,
}

fn segments(pattern: &str) -> Result<Vec<Seg<'_>>, String> {
    let rest = pattern.strip_prefix('/').ok_or("must start with `/`")?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/')
        .map(|s| {
            if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "`{s}`: a parameter is `{{name}}` with letters, digits and _"
                    ));
                }
                Ok(Seg::Param)
            } else if s.is_empty() {
                Err("empty segment (`//` or a trailing `/`)".to_string())
            } else if s == "." || s == ".." {
                Err("`.` and `..` segments never match a normalised path".to_string())
            } else if s.contains(['{', '}', '%', ';', '\\', '?', '#'])
                || s.chars().any(char::is_control)
            {
                Err(format!(
                    "`{s}`: literal segments may not hold {{ }} % ; \\ ? # or control characters"
                ))
            } else {
                Ok(Seg::Literal(s))
            }
        })
        .collect()
}

fn overlap<'t>(node: &'t Node, segs: &[Seg<'_>], out: &mut Vec<(&'t Method, &'t Target)>) {
    let Some((first, rest)) = segs.split_first() else {
        out.extend(node.ends.iter().map(|(m, t)| (m, t)));
        return;
    };
    match first {
        Seg::Literal(l) => {
            if let Some(n) = node.literals.get(*l) {
                overlap(n, rest, out);
            }
        }
        Seg::Param => {
            for n in node.literals.values() {
                overlap(n, rest, out);
            }
        }
    }
    if let Some(p) = &node.param {
        overlap(p, rest, out);
    }
}

/// Checks a pattern's syntax.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    segments(pattern).map(|_| ())
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route; the same method on the same pattern shape twice is an error.
    pub fn insert(
        &mut self,
        method: Method,
        pattern: &str,
        target: Target,
    ) -> Result<(), RouteError> {
        let mut node = &mut self.root;
        for seg in segments(pattern).map_err(RouteError::Pattern)? {
            node = match seg {
                Seg::Literal(l) => node.literals.entry(l.to_string()).or_default(),
                Seg::Param => node.param.get_or_insert_with(Default::default),
            };
        }
        if let Some((_, existing)) = node.ends.iter().find(|(m, _)| *m == method) {
            return Err(RouteError::Taken {
                route: format!("{method} {pattern}"),
                by_product: existing.product,
                by_pattern: existing.pattern.clone(),
            });
        }
        node.ends.push((method, target));
        self.len += 1;
        Ok(())
    }

    /// The routes, of any method, whose patterns match some path that
    /// `pattern` matches too: as many segments, and each pair of segments
    /// equal or one of them a parameter. Literal segments win at lookup
    /// whatever the method, so such a route can take paths from the other:
    /// `DELETE /orders/vip` makes `GET /orders/vip` a 405 though
    /// `GET /orders/{id}` exists.
    pub fn overlapping(&self, pattern: &str) -> Vec<(&Method, &Target)> {
        let mut out = Vec::new();
        if let Ok(segs) = segments(pattern) {
            overlap(&self.root, &segs, &mut out);
        }
        out
    }

    pub fn lookup(&self, method: &Method, path: &NormalPath) -> Lookup<'_> {
        if path.trailing_slash && !path.segments.is_empty() {
            return Lookup::NotFound;
        }
        let Some(node) = walk(&self.root, &path.segments) else {
            return Lookup::NotFound;
        };
        let want = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match node.ends.iter().find(|(m, _)| m == want) {
            Some((_, t)) => Lookup::Found(t),
            None => Lookup::MethodNotAllowed,
        }
    }
}

fn walk<'a>(node: &'a Node, segs: &[String]) -> Option<&'a Node> {
    let Some((first, rest)) = segs.split_first() else {
        return (!node.ends.is_empty()).then_some(node);
    };
    if let Some(n) = node.literals.get(first).and_then(|child| walk(child, rest)) {
        return Some(n);
    }
    node.param.as_deref().and_then(|child| walk(child, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::path::normalize;

    fn t(product: usize, action: Action, pattern: &str) -> Target {
        Target {
            product,
            action,
            dataset: None,
            pattern: pattern.into(),
            user_token: Default::default(),
        }
    }

    #[test]
    fn literal_beats_parameter_and_methods_are_distinct() {
        let mut rt = RouteTable::new();
        rt.insert(Method::GET, "/orders", t(0, Action::Read, "/orders"))
            .unwrap();
        rt.insert(
            Method::GET,
            "/orders/{id}",
            t(0, Action::Read, "/orders/{id}"),
        )
        .unwrap();
        rt.insert(
            Method::GET,
            "/orders/_schema",
            t(0, Action::Describe, "/orders/_schema"),
        )
        .unwrap();
        rt.insert(Method::POST, "/orders", t(0, Action::Write, "/orders"))
            .unwrap();
        rt.insert(Method::GET, "/", t(1, Action::Describe, "/"))
            .unwrap();
        let get = |m: Method, p: &str| match rt.lookup(&m, &normalize(p).unwrap()) {
            Lookup::Found(t) => Some(t.action),
            _ => None,
        };
        assert_eq!(get(Method::GET, "/orders"), Some(Action::Read));
        assert_eq!(get(Method::HEAD, "/orders"), Some(Action::Read));
        assert_eq!(get(Method::POST, "/orders"), Some(Action::Write));
        assert_eq!(get(Method::GET, "/orders/42"), Some(Action::Read));
        assert_eq!(get(Method::GET, "/orders/_schema"), Some(Action::Describe));
        assert_eq!(get(Method::GET, "/"), Some(Action::Describe));
        assert_eq!(
            rt.lookup(&Method::DELETE, &normalize("/orders").unwrap()),
            Lookup::MethodNotAllowed
        );
        assert_eq!(
            rt.lookup(&Method::GET, &normalize("/orders/1/2").unwrap()),
            Lookup::NotFound
        );
        assert_eq!(
            rt.lookup(&Method::GET, &normalize("/orders/").unwrap()),
            Lookup::NotFound
        );
        assert_eq!(
            rt.lookup(&Method::GET, &normalize("/Orders").unwrap()),
            Lookup::NotFound
        );
        assert!(rt
            .insert(Method::GET, "/orders/{other}", t(2, Action::Read, "x"))
            .is_err());
    }

    #[test]
    fn overlapping_routes_are_found_whatever_their_method() {
        let mut rt = RouteTable::new();
        rt.insert(
            Method::GET,
            "/orders/{id}",
            t(0, Action::Read, "/orders/{id}"),
        )
        .unwrap();
        rt.insert(
            Method::POST,
            "/ledger/entries",
            t(1, Action::Write, "/ledger/entries"),
        )
        .unwrap();
        let found = |pattern: &str| -> Vec<(Method, usize)> {
            let mut v: Vec<_> = rt
                .overlapping(pattern)
                .into_iter()
                .map(|(m, t)| (m.clone(), t.product))
                .collect();
            v.sort_by_key(|(_, p)| *p);
            v
        };
        assert_eq!(found("/orders/vip"), [(Method::GET, 0)]);
        assert_eq!(
            found("/{any}/{thing}"),
            [(Method::GET, 0), (Method::POST, 1)]
        );
        assert_eq!(found("/ledger/{entry}"), [(Method::POST, 1)]);
        assert!(found("/orders").is_empty());
        assert!(found("/orders/1/lines").is_empty());
    }

    #[test]
    fn rejects_bad_patterns() {
        for p in [
            "orders", "/orders/", "//x", "/a/../b", "/a%2Fb", "/{}", "/{a-b}", "/a;b",
        ] {
            assert!(check_pattern(p).is_err(), "{p}");
        }
    }
}
