//! The declared fields of a contract's datasets: `schema[].properties[]`,
//! with nested `properties` (objects) and `items.properties` (arrays of
//! objects), and the product's `meshgateUndeclared`.
//!
//! Of a property meshgate reads `name`, `logicalType`, `classification`,
//! `tags` and, under its `customProperties`, `meshgateMask` (how it is
//! hidden) and `pii`. Every mistake is an error at its node: an unknown
//! mask method, a classification that is none, a `meshgate…` property
//! meshgate does not read, a name declared twice.

use serde_yaml_ng::{Mapping, Value};

use super::{Reader, CLASSIFICATIONS};
use crate::base::locate::Step;
use crate::decision::fields::{DatasetFields, FieldSpec, Mask, Shape, Undeclared};

/// The custom properties of a property that meshgate reads.
const FIELD_CUSTOM: [&str; 2] = ["meshgateMask", "pii"];

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// A node's path shown as a field: `schema[0].properties[2].name`.
pub(super) fn shown(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) | Step::KeyName(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
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
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            r.error(at.clone(), shown(&at), "a property needs a `name`");
            continue;
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
    let classification = text("classification");
    if let Some(c) = &classification {
        if !CLASSIFICATIONS.contains(&c.as_str()) {
            let mut p = at.to_vec();
            p.push(key("classification"));
            r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: `{c}` is not a classification"),
            );
        }
    }
    let mut tags: Vec<String> = item
        .get("tags")
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    tags.retain(|t| !t.is_empty());
    let (mask, pii_property) = custom(r, item, at, &field_path);
    let check = super::conformance::field_check(r, item, at, &field_path);
    let pii = pii_property || tags.iter().any(|t| t.eq_ignore_ascii_case("pii"));
    let nested = item.get("properties").filter(|v| !v.is_null());
    let items = item
        .get("items")
        .and_then(|i| i.get("properties"))
        .filter(|v| !v.is_null());
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

/// A property's `meshgateMask` and `pii` custom properties.
fn custom(r: &mut Reader, item: &Value, at: &[Step], field_path: &str) -> (Mask, bool) {
    let (mut mask, mut pii) = (Mask::default(), false);
    let Some(list) = item.get("customProperties").and_then(Value::as_sequence) else {
        return (mask, pii);
    };
    for (k, c) in list.iter().enumerate() {
        let mut p = at.to_vec();
        p.extend([key("customProperties"), Step::Index(k)]);
        let Some(name) = c.get("property").and_then(Value::as_str) else {
            continue;
        };
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
