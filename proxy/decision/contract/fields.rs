//! The declared fields of a contract's datasets: `schema[].properties[]`,
//! with nested `properties` (objects) and `items.properties` (arrays of
//! objects), and the product's `meshgateUndeclared`.
//!
//! Of a property meshgate reads `name`, `logicalType`, `classification`,
//! `tags`, `required`, `quality`, `properties`, `items.properties` and,
//! under its `customProperties`, `meshgateMask` (how it is hidden) and
//! `pii`. Every mistake is an error at its node: an unknown mask method, a
//! classification that is none, a `meshgate…` property meshgate does not
//! read, a name declared twice, a custom property set twice, and any of
//! these of the wrong type (`tags: pii` for `tags: [pii]`), which would
//! otherwise be read as absent: a field not tagged `pii` is not hidden as
//! personal data. `meshgateMask` or `pii` written on the property itself,
//! not under its `customProperties`, is an error too.

use serde_yaml_ng::{Mapping, Value};

use super::{Reader, CLASSIFICATIONS};
use crate::base::locate::Step;
use crate::decision::fields::{DatasetFields, FieldSpec, Mask, Shape, Undeclared};

/// The custom properties of a property that meshgate reads.
const FIELD_CUSTOM: [&str; 2] = ["meshgateMask", "pii"];

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// A node's path shown as a field: `schema[0].properties[2].name`; keys
/// escaped (`\n`), as the domain wrote them.
pub(super) fn shown(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) | Step::KeyName(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.extend(k.escape_debug());
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The declared fields of every dataset (`schema[]` objects with a name),
/// in file order; datasets without properties have none.
pub(super) fn read(r: &mut Reader, map: &Mapping) -> Vec<DatasetFields> {
    let Some(schema) = map.get("schema").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, object) in schema.iter().enumerate() {
        let Some(name) = object.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut ds = DatasetFields {
            dataset: name.into(),
            fields: Vec::new(),
        };
        let path = vec![key("schema"), Step::Index(i), key("properties")];
        if let Some(props) = object.get("properties") {
            properties(r, props, &path, None, &mut ds);
        }
        out.push(ds);
    }
    out
}

/// `customProperties.meshgateUndeclared` of the product, if it is set.
pub(super) fn undeclared(r: &mut Reader, at: Option<(Vec<Step>, &Value)>) -> Option<Undeclared> {
    let (path, v) = at?;
    let field = "customProperties.meshgateUndeclared";
    match v.as_str().map(str::parse::<Undeclared>) {
        Some(Ok(u)) => Some(u),
        Some(Err(m)) => {
            r.error(path, field, m);
            None
        }
        None => {
            r.error(path, field, "must be one of pass, omit, refuse");
            None
        }
    }
}

/// The properties listed at `path` (a list), below `parent`.
fn properties(
    r: &mut Reader,
    v: &Value,
    path: &[Step],
    parent: Option<usize>,
    ds: &mut DatasetFields,
) {
    let Some(list) = v.as_sequence() else {
        if !v.is_null() {
            r.error(path.to_vec(), shown(path), "must be a list of properties");
        }
        return;
    };
    let mut names: Vec<&str> = Vec::new();
    for (j, item) in list.iter().enumerate() {
        let mut at = path.to_vec();
        at.push(Step::Index(j));
        let name = match item.get("name").filter(|v| !v.is_null()) {
            _ if !item.is_mapping() => {
                let m = "a property is a mapping with a `name`";
                r.error(at.clone(), shown(&at), m);
                continue;
            }
            None => {
                r.error(at.clone(), shown(&at), "a property needs a `name`");
                continue;
            }
            Some(v) => match v.as_str() {
                Some(name) => name,
                None => {
                    let n = below(&at, &["name"]);
                    r.error(n.clone(), shown(&n), "a property's name is a string");
                    continue;
                }
            },
        };
        if names.contains(&name) {
            let mut n = at.clone();
            n.push(key("name"));
            r.error(
                n.clone(),
                shown(&n),
                format!("`{name}` is declared twice at this level"),
            );
            continue;
        }
        names.push(name);
        if let Err(why) = super::charset::text(name) {
            let n = below(&at, &["name"]);
            r.error(n.clone(), shown(&n), why);
            continue;
        }
        property(r, item, name, &at, parent, ds);
    }
}

/// One property (at `at`) and those below it.
fn property(
    r: &mut Reader,
    item: &Value,
    name: &str,
    at: &[Step],
    parent: Option<usize>,
    ds: &mut DatasetFields,
) {
    let field_path = match parent {
        Some(p) => format!("{}/{name}", ds.fields[p].path),
        None => name.to_string(),
    };
    let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
    let classification = classification_of(r, item, at, &field_path);
    let tags = tags_of(r, item, at, &field_path);
    misplaced(r, item, at, &field_path);
    let (mask, pii_property) = custom(r, item, at, &field_path);
    let check = super::conformance::field_check(r, item, at, &field_path);
    let pii = pii_property || tags.iter().any(|t| t.eq_ignore_ascii_case("pii"));
    let (nested, items) = below_it(r, item, at, &field_path);
    let shape = match (nested, items) {
        (Some(_), _) => Shape::Object,
        (None, Some(_)) => Shape::Array,
        (None, None) => Shape::Leaf,
    };
    ds.fields.push(FieldSpec {
        name: name.to_string(),
        path: field_path,
        parent,
        classification,
        tags,
        pii,
        logical_type: text("logicalType"),
        mask,
        shape,
        check,
    });
    let me = Some(ds.fields.len() - 1);
    let mut below = at.to_vec();
    match (nested, items) {
        (Some(v), _) => {
            below.push(key("properties"));
            properties(r, v, &below, me, ds);
        }
        (None, Some(v)) => {
            below.extend([key("items"), key("properties")]);
            properties(r, v, &below, me, ds);
        }
        (None, None) => {}
    }
}

/// `at` with `more` keys below it.
fn below(at: &[Step], more: &[&str]) -> Vec<Step> {
    let mut p = at.to_vec();
    p.extend(more.iter().map(|k| key(k)));
    p
}

/// A property's own `classification`, if it has one (a string, one of
/// [`CLASSIFICATIONS`]).
fn classification_of(
    r: &mut Reader,
    item: &Value,
    at: &[Step],
    field_path: &str,
) -> Option<String> {
    let v = item.get("classification").filter(|v| !v.is_null())?;
    let p = below(at, &["classification"]);
    let Some(c) = v.as_str() else {
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: a classification is a string: one of public, internal, confidential, restricted"),
        );
        return None;
    };
    if !CLASSIFICATIONS.contains(&c) {
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: `{c}` is not a classification"),
        );
    }
    Some(c.to_string())
}

/// A property's `tags`: a list of strings (empty ones left out).
fn tags_of(r: &mut Reader, item: &Value, at: &[Step], field_path: &str) -> Vec<String> {
    let Some(v) = item.get("tags").filter(|v| !v.is_null()) else {
        return Vec::new();
    };
    let p = below(at, &["tags"]);
    let Some(list) = v.as_sequence() else {
        let m = match v.as_str() {
            Some(one) => {
                format!("{field_path}: tags are a list: `tags: [{one}]`, not `tags: {one}`")
            }
            None => format!("{field_path}: tags are a list of strings"),
        };
        r.error(p.clone(), shown(&p), m);
        return Vec::new();
    };
    let mut tags = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match t.as_str() {
            Some(t) if !t.is_empty() => tags.push(t.to_string()),
            Some(_) => {}
            None => {
                let mut q = p.clone();
                q.push(Step::Index(i));
                r.error(
                    q.clone(),
                    shown(&q),
                    format!("{field_path}: a tag is a string"),
                );
            }
        }
    }
    tags
}

/// A custom property of meshgate's (`meshgateMask`, `pii`, any
/// `meshgate…`) written on the property itself, where it would be ignored.
fn misplaced(r: &mut Reader, item: &Value, at: &[Step], field_path: &str) {
    let Some(map) = item.as_mapping() else {
        return;
    };
    for k in map.keys().filter_map(Value::as_str) {
        let ours = FIELD_CUSTOM.iter().any(|c| c.eq_ignore_ascii_case(k))
            || k.to_ascii_lowercase().starts_with("meshgate");
        if ours {
            let mut p = at.to_vec();
            p.push(Step::KeyName(k.into()));
            r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: `{k}` is read only under the property's customProperties (`customProperties: [{{ property: {k}, value: … }}]`); here meshgate would ignore it"),
            );
        }
    }
}

/// The property's nested `properties` (an object) or `items.properties`
/// (an array of objects); `items` that is not a mapping, or both, is an
/// error.
fn below_it<'v>(
    r: &mut Reader,
    item: &'v Value,
    at: &[Step],
    field_path: &str,
) -> (Option<&'v Value>, Option<&'v Value>) {
    let nested = item.get("properties").filter(|v| !v.is_null());
    let items = match item.get("items").filter(|v| !v.is_null()) {
        None => None,
        Some(i) if i.is_mapping() => i.get("properties").filter(|v| !v.is_null()),
        Some(_) => {
            let p = below(at, &["items"]);
            r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: items is a mapping (`items: {{ properties: [...] }}`)"),
            );
            None
        }
    };
    if let (Some(_), Some(_)) = (nested, items) {
        let p = below(at, &["items", "properties"]);
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: a property is an object (`properties`) or an array (`items.properties`), not both"),
        );
    }
    (nested, items)
}

/// A property's `meshgateMask` and `pii` custom properties; every entry is
/// `{ property: NAME, value: … }`, each name at most once.
fn custom(r: &mut Reader, item: &Value, at: &[Step], field_path: &str) -> (Mask, bool) {
    let (mut mask, mut pii) = (Mask::default(), false);
    let Some(v) = item.get("customProperties").filter(|v| !v.is_null()) else {
        return (mask, pii);
    };
    let Some(list) = v.as_sequence() else {
        let p = below(at, &["customProperties"]);
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: customProperties is a list of `{{ property: NAME, value: … }}`"),
        );
        return (mask, pii);
    };
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for (k, c) in list.iter().enumerate() {
        let mut p = at.to_vec();
        p.extend([key("customProperties"), Step::Index(k)]);
        let Some(name) = c.get("property").and_then(Value::as_str) else {
            r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: a custom property is `{{ property: NAME, value: … }}`, its name a string"),
            );
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            let q = below(&p, &["property"]);
            let mut f = at.to_vec();
            f.extend([
                key("customProperties"),
                Step::Index(*first),
                key("property"),
            ]);
            let first_at = crate::base::locate::locate(r.text(), &f)
                .map(|(l, c)| format!("{}:{l}:{c}", r.file()))
                .unwrap_or_else(|| r.file().to_string());
            r.error(
                q.clone(),
                shown(&q),
                format!(
                    "{field_path}: `{name}` is set twice: first at {first_at} ({})",
                    shown(&f)
                ),
            );
            continue;
        }
        seen.push((name, k));
        let value = c.get("value").unwrap_or(&Value::Null);
        let mut vp = p.clone();
        vp.push(key("value"));
        match name {
            "meshgateMask" => match value.as_str().map(str::parse::<Mask>) {
                Some(Ok(m)) => mask = m,
                Some(Err(m)) => r.error(vp.clone(), shown(&vp), format!("{field_path}: {m}")),
                None => r.error(
                    vp.clone(),
                    shown(&vp),
                    format!("{field_path}: a mask method (omit, null, redact, hash, last4, year)"),
                ),
            },
            "pii" => match value.as_bool() {
                Some(b) => pii = b,
                None => r.error(
                    vp.clone(),
                    shown(&vp),
                    format!("{field_path}: pii is true or false"),
                ),
            },
            other if other.to_ascii_lowercase().starts_with("meshgate") => {
                p.push(key("property"));
                let hint = super::keys::near(other, &FIELD_CUSTOM)
                    .map(|n| format!(": did you mean `{n}`?"))
                    .unwrap_or_default();
                r.error(
                    p.clone(),
                    shown(&p),
                    format!("{field_path}: `{other}` is not a property meshgate reads{hint}"),
                );
            }
            _ => {}
        }
    }
    (mask, pii)
}
