//! Keys meshgate does not read: a misspelling of one it does is an error
//! (`slaPropertes`, a `meshgateRoute` property), a key the standard allows
//! or a property of the domain's own is a warning, since meshgate ignores it.

use serde_yaml_ng::{Mapping, Value};

use super::sections::Odcs;
use super::Reader;
use crate::base::locate::Step;

/// Top-level keys of ODCS v3 (3.0 and 3.1).
const ODCS_KEYS: [&str; 23] = [
    "apiVersion",
    "kind",
    "id",
    "name",
    "version",
    "status",
    "tenant",
    "domain",
    "dataProduct",
    "description",
    "tags",
    "schema",
    "servers",
    "support",
    "price",
    "team",
    "roles",
    "slaDefaultElement",
    "slaProperties",
    "authoritativeDefinitions",
    "customProperties",
    "contractCreatedTs",
    "quality",
];

/// The top-level keys meshgate reads.
const READ_KEYS: [&str; 13] = [
    "apiVersion",
    "kind",
    "id",
    "name",
    "version",
    "status",
    "domain",
    "dataProduct",
    "tags",
    "schema",
    "team",
    "slaProperties",
    "customProperties",
];

/// The custom properties meshgate reads.
pub(super) const CUSTOM: [&str; 12] = [
    "classification",
    "owner",
    "allowedPurposes",
    "meshgateRoutes",
    super::grpc::PROPERTY,
    super::flight::PROPERTY,
    "meshgateAllowOverride",
    "userToken",
    "successorVersion",
    "deprecationLink",
    "meshgateUndeclared",
    super::conformance::PROPERTY,
];

/// The SLA properties meshgate reads.
const SLA: [&str; 6] = [
    "availability",
    "latency",
    "throughput",
    "errorRate",
    "endOfSupport",
    "endOfLife",
];

/// Top-level keys: one that misspells a key meshgate reads is an error, and
/// so is a custom or SLA property of meshgate's written at the top (where
/// meshgate would ignore it: a `classification: restricted` there left the
/// product open); one that is not ODCS at all a warning.
pub(super) fn top_level(r: &mut Reader, map: &Mapping) {
    for k in map.keys().filter_map(Value::as_str) {
        if ODCS_KEYS.contains(&k) {
            continue;
        }
        let path = vec![Step::KeyName(k.to_string())];
        // Echoed escaped: a key is the domain's text, and may hold a line break.
        let shown = k.escape_debug().to_string();
        if let Some(section) = misplaced(k) {
            r.error(
                path,
                &shown,
                format!(
                    "`{shown}` is read only under `{section}` (`- {{ property: {shown}, value: … }}`); at the top level meshgate would ignore it"
                ),
            );
            continue;
        }
        match near(k, &READ_KEYS) {
            Some(known) => r.error(path, shown, format!("unknown key: did you mean `{known}`?")),
            None => r.warn(path, shown, "not an ODCS v3 key: meshgate ignores it"),
        }
    }
}

/// The list a top-level key `k` belongs in: one of meshgate's custom
/// properties or any `meshgate…` key (`customProperties`), or an SLA
/// property meshgate reads (`slaProperties`), in any case.
fn misplaced(k: &str) -> Option<&'static str> {
    let is = |known: &[&str]| known.iter().any(|c| c.eq_ignore_ascii_case(k));
    if is(&CUSTOM) || k.to_ascii_lowercase().starts_with("meshgate") {
        Some("customProperties")
    } else if is(&SLA) {
        Some("slaProperties")
    } else {
        None
    }
}

/// Custom properties: one that looks like meshgate's (a misspelling, or any
/// `meshgate…`) is an error; another a warning.
pub(super) fn custom_properties(r: &mut Reader, odcs: &Odcs) {
    for (i, c) in &odcs.custom {
        if CUSTOM.contains(&c.property.as_str()) {
            continue;
        }
        let name = &c.property.escape_debug().to_string();
        let path = vec![
            Step::Key("customProperties".into()),
            Step::Index(*i),
            Step::Key("property".into()),
        ];
        let field = format!("customProperties[{i}].property");
        match near(&c.property, &CUSTOM) {
            Some(known) => r.error(
                path,
                field,
                format!("`{name}` is not a property meshgate reads: did you mean `{known}`?"),
            ),
            None if c.property.to_ascii_lowercase().starts_with("meshgate") => r.error(
                path,
                field,
                format!(
                    "`{name}` is not a property meshgate reads (meshgate reads meshgateRoutes)"
                ),
            ),
            None => r.warn(
                path,
                field,
                format!("`{name}`: meshgate does not read this custom property and ignores it"),
            ),
        }
    }
}

/// SLA properties: one that misspells a property meshgate reads is an
/// error; the others are ODCS's own (`retention`, `frequency`…).
pub(super) fn sla_properties(r: &mut Reader, odcs: &Odcs) {
    for (i, p) in &odcs.sla {
        if SLA.contains(&p.property.as_str()) {
            continue;
        }
        let name = &p.property.escape_debug().to_string();
        if let Some(known) = near(&p.property, &SLA) {
            r.error(
                vec![
                    Step::Key("slaProperties".into()),
                    Step::Index(*i),
                    Step::Key("property".into()),
                ],
                format!("slaProperties[{i}].property"),
                format!("`{name}`: did you mean `{known}`?"),
            );
        }
    }
}

/// A custom property or an SLA property set twice: which one counts would be
/// a guess (a `classification` of `public` then `restricted`), so the second
/// is an error at its own line, naming the first's.
pub(super) fn set_twice(r: &mut Reader, odcs: &Odcs) {
    let custom: Vec<(usize, &str)> = odcs
        .custom
        .iter()
        .map(|(i, c)| (*i, c.property.as_str()))
        .collect();
    twice(r, "customProperties", &custom);
    let sla: Vec<(usize, &str)> = odcs
        .sla
        .iter()
        .map(|(i, p)| (*i, p.property.as_str()))
        .collect();
    twice(r, "slaProperties", &sla);
}

/// Each item of the list `section` whose `property` an earlier item has.
fn twice(r: &mut Reader, section: &str, items: &[(usize, &str)]) {
    let at = |i: usize| {
        vec![
            Step::Key(section.to_string()),
            Step::Index(i),
            Step::Key("property".into()),
        ]
    };
    for (n, &(i, name)) in items.iter().enumerate() {
        let Some(&(first, _)) = items[..n].iter().find(|(_, earlier)| *earlier == name) else {
            continue;
        };
        let where_first = match crate::base::locate::locate(r.text(), &at(first)) {
            Some((l, c)) => format!("{}:{l}:{c}", r.file()),
            None => r.file().to_string(),
        };
        r.error(
            at(i),
            format!("{section}[{i}].property"),
            format!(
                "`{}` is set twice: first at {where_first} ({section}[{first}]); a property is set once, so that no reader has to guess which value counts",
                name.escape_debug()
            ),
        );
    }
}

/// The message for an unknown key among `known`.
pub(super) fn unknown_field(k: &str, known: &[&str]) -> String {
    match near(k, known) {
        Some(n) => format!("unknown field: did you mean `{n}`?"),
        None => format!("unknown field; one of {}", known.join(", ")),
    }
}

/// The key of `known` that `word` most likely misspells: the same but for
/// case, or at most two edits away (one for short words).
pub(super) fn near<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let w = word.to_ascii_lowercase();
    let allowed = if w.chars().count() > 5 { 2 } else { 1 };
    known
        .iter()
        .map(|k| (*k, edits(&w, &k.to_ascii_lowercase())))
        .filter(|(_, d)| *d <= allowed)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
