//! The sections of a contract, each read on its own so that one mistake
//! does not hide the next: the header, ownership, datasets, routes, SLA and
//! lifecycle.

use std::time::Duration;

use http::Method;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::{charset, keys};
use super::{Action, Product, Reader, RouteSpec, Sla, UserToken, CLASSIFICATIONS};
use crate::base::locate::Step;
use crate::base::yaml::ConfigError;
use crate::decision::lifecycle::{Lifecycle, Status};

/// The top-level keys meshgate reads, each as its own value: one that is
/// wrong is reported and the others are still read.
pub(super) struct Odcs {
    api_version: Option<String>,
    kind: Option<String>,
    id: Option<String>,
    name: Option<String>,
    version: Option<String>,
    status: Option<String>,
    domain: Option<String>,
    data_product: Option<String>,
    tags: Vec<String>,
    team: Option<Value>,
    /// (index in `schema`, item)
    schema: Vec<(usize, SchemaObject)>,
    /// (index in `slaProperties`, item)
    pub(super) sla: Vec<(usize, SlaProperty)>,
    /// (index in `customProperties`, item)
    pub(super) custom: Vec<(usize, CustomProperty)>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SchemaObject {
    name: String,
    #[serde(default)]
    classification: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SlaProperty {
    pub(super) property: String,
    value: Value,
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CustomProperty {
    pub(super) property: String,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoute {
    method: String,
    path: String,
    action: Action,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    user_token: Option<UserToken>,
}

/// The keys a route may have.
pub(super) const ROUTE_KEYS: [&str; 5] = ["method", "path", "action", "dataset", "userToken"];

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// The path of a custom property's value.
fn custom_path(i: usize) -> Vec<Step> {
    vec![key("customProperties"), Step::Index(i), key("value")]
}

impl Odcs {
    fn read(r: &mut Reader, map: &Mapping) -> Odcs {
        let field = |r: &mut Reader, k: &str| -> Option<String> {
            // `key:` with no value is as good as no key, as for serde's `Option`.
            map.get(k)
                .filter(|v| !v.is_null())
                .and_then(|v| r.value(v, &[key(k)], k))
        };
        let mut odcs = Odcs {
            api_version: field(r, "apiVersion"),
            kind: field(r, "kind"),
            id: field(r, "id"),
            name: field(r, "name"),
            version: field(r, "version"),
            status: field(r, "status"),
            domain: field(r, "domain"),
            data_product: field(r, "dataProduct"),
            tags: map
                .get("tags")
                .and_then(|v| r.value::<Vec<String>>(v, &[key("tags")], "tags"))
                .inspect(|tags| check_list(r, tags, &[key("tags")], "tags"))
                .unwrap_or_default(),
            team: map.get("team").cloned(),
            schema: items(r, map, "schema"),
            sla: items(r, map, "slaProperties"),
            custom: items(r, map, "customProperties"),
        };
        odcs.tags.retain(|t| !t.is_empty());
        odcs
    }

    /// A custom property's value and its path.
    fn custom(&self, name: &str) -> Option<(Vec<Step>, &Value)> {
        self.custom
            .iter()
            .find(|(_, c)| c.property == name)
            .map(|(i, c)| (custom_path(*i), &c.value))
    }

    fn sla_value(&self, name: &str) -> Option<&Value> {
        self.sla
            .iter()
            .find(|(_, p)| p.property == name)
            .map(|(_, p)| &p.value)
    }
}

/// The items of the list at `k`, each read on its own.
fn items<T: serde::de::DeserializeOwned>(
    r: &mut Reader,
    map: &Mapping,
    k: &str,
) -> Vec<(usize, T)> {
    let Some(v) = map.get(k) else {
        return Vec::new();
    };
    let Some(seq) = v.as_sequence() else {
        if !v.is_null() {
            r.error(vec![key(k)], k, "must be a list");
        }
        return Vec::new();
    };
    seq.iter()
        .enumerate()
        .filter_map(|(i, item)| {
            r.value(item, &[key(k), Step::Index(i)], &format!("{k}[{i}]"))
                .map(|t| (i, t))
        })
        .collect()
}

/// The whole contract, or `None` when an error was recorded.
pub(super) fn product(r: &mut Reader) -> Option<Product> {
    let doc: Value = match crate::base::yaml::parse_yaml(r.text(), r.file()) {
        Ok(v) => v,
        Err(e) => {
            syntax_error(r, e);
            return None;
        }
    };
    let Some(map) = doc.as_mapping() else {
        r.error(
            Vec::new(),
            "(document)",
            "a contract is a YAML mapping (apiVersion, kind, id, …)",
        );
        return None;
    };
    let odcs = Odcs::read(r, map);
    keys::top_level(r, map);
    keys::custom_properties(r, &odcs);
    keys::sla_properties(r, &odcs);
    keys::set_twice(r, &odcs);
    let id = header(r, &odcs, map);
    let domain = odcs.domain.clone().filter(|d| !d.is_empty());
    if absent(map, "domain") {
        r.error(
            Vec::new(),
            "domain",
            "required: the domain that owns the product",
        );
    } else if domain.is_none() && odcs.domain.is_some() {
        r.error(vec![key("domain")], "domain", "must not be empty");
    }
    let classification = classification(r, &odcs);
    let owner = owner(r, &odcs);
    check_text(r, &odcs);
    let allowed_purposes = allowed_purposes(r, &odcs);
    let datasets = datasets(r, &odcs, classification.as_deref());
    let grpc = odcs.custom(super::grpc::PROPERTY);
    let flight = odcs.custom(super::flight::PROPERTY);
    let mut routes = match odcs.custom("meshgateRoutes") {
        None if grpc.is_some() || flight.is_some() => Vec::new(),
        None => {
            r.warn(
                vec![key("customProperties")],
                "customProperties.meshgateRoutes",
                "no routes: no request reaches this product through meshgate",
            );
            Vec::new()
        }
        Some((path, v)) => routes(r, v, &path, &datasets),
    };
    if let Some((path, v)) = grpc {
        routes.extend(super::grpc::routes(r, v, &path, &datasets));
    }
    if let Some((path, v)) = flight {
        routes.extend(super::flight::routes(r, v, &path, &datasets));
    }
    let user_token = match odcs.custom("userToken") {
        None => Some(UserToken::None),
        Some((path, v)) => r.value(v, &path, "customProperties.userToken"),
    };
    let method_override = match odcs.custom("meshgateAllowOverride") {
        None => Some(None),
        Some((path, v)) => r
            .value::<AllowOverride>(v, &path, "customProperties.meshgateAllowOverride")
            .map(|a| Some(a.method_header.0)),
    };
    let sla = sla(r, &odcs);
    if sla == Sla::default() {
        r.warn(
            vec![key("slaProperties")],
            "slaProperties",
            "no SLA (availability, latency, throughput or errorRate): no quota or SLO is derived for this product",
        );
    }
    let lifecycle = lifecycle(r, &odcs);
    let fields = super::fields::read(r, map);
    unplanned_routes(r, &routes, &fields);
    let undeclared = super::fields::undeclared(r, odcs.custom("meshgateUndeclared"));
    let conformance = super::conformance::settings(r, odcs.custom(super::conformance::PROPERTY));
    Some(Product {
        name: odcs
            .name
            .clone()
            .or(odcs.data_product.clone())
            .or(id.clone())?,
        id: id?,
        domain: domain?,
        data_product: odcs.data_product.clone().filter(|d| !d.is_empty()),
        owner: owner?,
        classification: classification?,
        version: odcs.version.clone()?,
        tags: odcs.tags.clone(),
        allowed_purposes: allowed_purposes?,
        datasets,
        sla,
        routes,
        user_token: user_token?,
        file: r.file().to_string(),
        lifecycle: lifecycle?,
        method_override: method_override?,
        fields,
        undeclared,
        conformance,
    })
}

/// Warns of each route that answers with data (not `describe`) but names
/// no dataset of a product that declares fields: no field plan or
/// conformance check applies to its responses, so no field rule (the mesh
/// baseline's purpose limits included) hides anything in them. An
/// aggregate's route (a summary) may mean it; a forgotten `dataset` should
/// not pass unseen.
fn unplanned_routes(
    r: &mut Reader,
    routes: &[RouteSpec],
    fields: &[crate::decision::fields::DatasetFields],
) {
    if fields.iter().all(|d| d.fields.is_empty()) {
        return;
    }
    for route in routes {
        if route.dataset.is_none() && route.action != Action::Describe {
            r.warn(
                route.at.clone(),
                route.field.clone(),
                format!(
                    "{} {} names no `dataset`: no field plan or conformance check applies to its responses, though the product declares fields",
                    route.method, route.path
                ),
            );
        }
    }
}

/// `customProperties.meshgateAllowOverride`: the method-override header
/// the product's server honours. Path overrides cannot be allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AllowOverride {
    method_header: OverrideHeader,
}

/// One of the method-override headers frameworks read (Rack, Symfony,
/// Laravel, Express method-override, ASP.NET), read lowercase. Another name
/// is refused: every header a product allows is removed from every request
/// it does not decide, so `content-type` or `cookie` here would strip it
/// from all products of the node.
struct OverrideHeader(http::HeaderName);

/// The headers a product may allow as its method override.
pub const METHOD_OVERRIDE_HEADERS: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-method",
];

impl<'de> Deserialize<'de> for OverrideHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let name = http::HeaderName::from_bytes(s.as_bytes())
            .map_err(|_| D::Error::custom(format!("`{s}` is not a header name")))?;
        let folded = name.as_str().replace('_', "-");
        if !METHOD_OVERRIDE_HEADERS.contains(&folded.as_str()) {
            return Err(D::Error::custom(format!(
                "`{s}` is not a method-override header; one of X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override, X-Method"
            )));
        }
        Ok(OverrideHeader(name))
    }
}

/// Whether `k` is missing or has no value (a wrong value is its own error).
fn absent(map: &Mapping, k: &str) -> bool {
    map.get(k).is_none_or(Value::is_null)
}

/// A document that is not YAML: the parser's position, with a hint for the
/// commonest mistake (a path pattern's `{id}` unquoted in a flow mapping).
fn syntax_error(r: &mut Reader, e: ConfigError) {
    match e {
        ConfigError::Syntax {
            line,
            column,
            field,
            mut message,
            ..
        } => {
            if message.starts_with("duplicate entry with key") {
                if let Some(t) = super::twice::find(r.text()) {
                    return key_twice(r, t);
                }
            }
            if unquoted_braces(r.text(), line) {
                message.push_str(
                    " (a path pattern with `{…}` inside a flow mapping `{ … }` must be quoted: path: \"/orders/{id}\")",
                );
            }
            r.error_at(line, column, field, message);
        }
        other => r.error(Vec::new(), "(document)", other.to_string()),
    }
}

/// A key written twice in one mapping, at the second: which of the two
/// counts would be a guess.
fn key_twice(r: &mut Reader, t: super::twice::Twice) {
    let mut first = t.mapping.clone();
    first.push(Step::KeyName(t.key.clone()));
    let mut second = t.mapping;
    second.push(Step::KeyName(t.key.clone()));
    let first = match crate::base::locate::locate(r.text(), &first) {
        Some((l, c)) => format!(" (first at {}:{l}:{c})", r.file()),
        None => String::new(),
    };
    // An empty key at the top has an empty path: that is the document.
    let field = match super::fields::shown(&second) {
        f if f.is_empty() => "(document)".to_string(),
        f => f,
    };
    r.error_at(
        t.line,
        t.column,
        field,
        format!(
            "`{}` is written twice in this mapping{first}; a key is written once",
            t.key
        ),
    );
}

/// Whether line `line` (1-based) or the one before it has a flow mapping
/// with a plain scalar holding `{`: `{ path: /orders/{id} }`.
pub(super) fn unquoted_braces(text: &str, line: usize) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    let end = line.min(lines.len());
    let near = line.saturating_sub(2).min(end)..end;
    lines[near].iter().any(|l| {
        let Some(open) = l.find('{') else {
            return false;
        };
        l[open + 1..].split(',').any(|part| {
            part.split_once(':').is_some_and(|(_, v)| {
                let v = v.trim_start();
                !v.starts_with(['"', '\'']) && v.contains('/') && v.contains('{')
            })
        })
    })
}

/// `kind`, `apiVersion`, `version` and `id`: an ODCS v3 data contract with
/// an id that can stand in a Cedar entity and a URL.
fn header(r: &mut Reader, odcs: &Odcs, map: &Mapping) -> Option<String> {
    for k in ["apiVersion", "kind", "id", "version"] {
        if absent(map, k) {
            r.error(Vec::new(), k, "required");
        }
    }
    if let Some(kind) = odcs.kind.as_deref().filter(|k| *k != "DataContract") {
        r.error(
            vec![key("kind")],
            "kind",
            format!("`{kind}`: expected `DataContract`"),
        );
    }
    if let Some(v) = odcs
        .api_version
        .as_deref()
        .filter(|v| !v.starts_with("v3."))
    {
        r.error(
            vec![key("apiVersion")],
            "apiVersion",
            format!("`{v}`: meshgate reads ODCS v3 contracts"),
        );
    }
    if let Some(Err(why)) = odcs.version.as_deref().map(charset::version) {
        r.error(vec![key("version")], "version", why);
    }
    let id = odcs.id.clone()?;
    if let Err(why) = charset::name(&id, "a product id") {
        r.error(vec![key("id")], "id", why);
        return None;
    }
    Some(id)
}

/// The names and free text of the contract's top level and datasets, each
/// within its [`charset`].
fn check_text(r: &mut Reader, odcs: &Odcs) {
    let names = [
        ("domain", odcs.domain.as_deref(), "a domain"),
        (
            "dataProduct",
            odcs.data_product.as_deref(),
            "a data product",
        ),
    ];
    for (k, v, what) in names {
        if let Some(Err(why)) = v.filter(|v| !v.is_empty()).map(|v| charset::name(v, what)) {
            r.error(vec![key(k)], k, why);
        }
    }
    if let Some(Err(why)) = odcs.name.as_deref().map(charset::text) {
        r.error(vec![key("name")], "name", why);
    }
    for (i, s) in &odcs.schema {
        if let Err(why) = charset::name(&s.name, "a dataset name") {
            let path = vec![key("schema"), Step::Index(*i), key("name")];
            r.error(path, format!("schema[{i}].name"), why);
        }
    }
}

/// `allowedPurposes`: any text, each checked; one that is not a token is
/// a warning, since no request can declare it (`x-data-purpose`).
fn allowed_purposes(r: &mut Reader, odcs: &Odcs) -> Option<Vec<String>> {
    const FIELD: &str = "customProperties.allowedPurposes";
    let (path, v) = match odcs.custom("allowedPurposes") {
        None => return Some(Vec::new()),
        Some(found) => found,
    };
    let purposes: Vec<String> = r.value(v, &path, FIELD)?;
    check_list(r, &purposes, &path, FIELD);
    for (j, purpose) in purposes.iter().enumerate() {
        if !charset::is_token(purpose) {
            let mut at = path.clone();
            at.push(Step::Index(j));
            r.warn(at, format!("{FIELD}[{j}]"), format!("`{purpose}` is not one token (letters, digits and !#$%&'*+-.^_`|~): `x-data-purpose` carries one, so no request can declare this purpose"));
        }
    }
    Some(purposes)
}

/// Each item of a list of free text (`tags`, `allowedPurposes`) at `path`,
/// within [`charset::text`].
fn check_list(r: &mut Reader, items: &[String], path: &[Step], field: &str) {
    for (j, t) in items.iter().enumerate() {
        if let Err(why) = charset::text(t) {
            let mut at = path.to_vec();
            at.push(Step::Index(j));
            r.error(at, format!("{field}[{j}]"), why);
        }
    }
}

/// The product's classification: its custom property, else the strictest
/// of its schema objects'.
fn classification(r: &mut Reader, odcs: &Odcs) -> Option<String> {
    const FIELD: &str = "customProperties.classification";
    let (path, c) = match odcs.custom("classification") {
        Some((path, v)) => {
            let c = r.value::<String>(v, &path, FIELD)?;
            (path, c)
        }
        None => match strictest(
            odcs.schema
                .iter()
                .filter_map(|(_, s)| s.classification.as_deref()),
        ) {
            Some(c) => (vec![key("schema")], c.to_string()),
            None => {
                r.error(
                    vec![key("customProperties")],
                    FIELD,
                    "required (or a classification on a schema object): one of public, internal, confidential, restricted",
                );
                return None;
            }
        },
    };
    if !CLASSIFICATIONS.contains(&c.as_str()) {
        r.error(
            path,
            FIELD,
            format!("`{c}`: one of public, internal, confidential, restricted"),
        );
        return None;
    }
    Some(c)
}

/// The owner: its custom property, else the team member with role `owner`;
/// free text ([`charset::text`]).
fn owner(r: &mut Reader, odcs: &Odcs) -> Option<String> {
    let (owner, path, field) = match odcs.custom("owner") {
        Some((path, v)) => {
            let owner = r.value(v, &path, "customProperties.owner")?;
            (owner, path, "customProperties.owner")
        }
        None => {
            let Some(owner) = team_owner(odcs.team.as_ref()) else {
                r.error(
                    vec![key("customProperties")],
                    "customProperties.owner",
                    "required (or a team member with role `owner`)",
                );
                return None;
            };
            (owner, vec![key("team")], "team")
        }
    };
    if let Err(why) = charset::text(&owner) {
        r.error(path, field, why);
    }
    Some(owner)
}

/// The datasets (`schema[].name`), each with its own classification or
/// the product's.
fn datasets(r: &mut Reader, odcs: &Odcs, classification: Option<&str>) -> Vec<(String, String)> {
    let mut datasets = Vec::new();
    for (i, s) in &odcs.schema {
        let Some(c) = s.classification.as_deref().or(classification) else {
            continue;
        };
        if !CLASSIFICATIONS.contains(&c) {
            r.error(
                vec![key("schema"), Step::Index(*i), key("classification")],
                format!("schema[{i}].classification"),
                format!("{}: `{c}` is not a classification", s.name),
            );
            continue;
        }
        datasets.push((s.name.clone(), c.to_string()));
    }
    datasets
}

fn strictest<'a>(levels: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    levels.max_by_key(|l| {
        CLASSIFICATIONS
            .iter()
            .position(|c| c == l)
            .unwrap_or(CLASSIFICATIONS.len())
    })
}

/// ODCS v3.0 `team` is a list of members; v3.1 an object with `members`.
fn team_owner(team: Option<&Value>) -> Option<String> {
    let members = match team? {
        Value::Sequence(s) => s,
        Value::Mapping(m) => m.get("members")?.as_sequence()?,
        _ => return None,
    };
    members.iter().find_map(|m| {
        let role = m.get("role")?.as_str()?;
        if role.eq_ignore_ascii_case("owner") || role.eq_ignore_ascii_case("productOwner") {
            m.get("username")
                .or_else(|| m.get("name"))?
                .as_str()
                .map(str::to_string)
        } else {
            None
        }
    })
}

/// The route table, each route read on its own: the wrong ones are
/// reported, at their index, and left out.
fn routes(
    r: &mut Reader,
    v: &Value,
    path: &[Step],
    datasets: &[(String, String)],
) -> Vec<RouteSpec> {
    const FIELD: &str = "customProperties.meshgateRoutes";
    let Some(seq) = v.as_sequence() else {
        r.error(path.to_vec(), FIELD, "must be a list of routes");
        return Vec::new();
    };
    let mut routes = Vec::with_capacity(seq.len());
    for (i, item) in seq.iter().enumerate() {
        let at = |more: &[&str]| {
            let mut p = path.to_vec();
            p.push(Step::Index(i));
            p.extend(more.iter().map(|k| key(k)));
            p
        };
        let field = format!("{FIELD}[{i}]");
        // Unknown keys are reported by name, and the route is still read.
        let mut item = item.clone();
        if let Some(m) = item.as_mapping_mut() {
            let unknown: Vec<String> = m
                .keys()
                .filter_map(Value::as_str)
                .filter(|k| !ROUTE_KEYS.contains(k))
                .map(str::to_string)
                .collect();
            for k in unknown {
                m.remove(k.as_str());
                let mut p = at(&[]);
                p.push(Step::KeyName(k.clone()));
                r.error(
                    p,
                    format!("{field}.{}", k.escape_debug()),
                    keys::unknown_field(&k, &ROUTE_KEYS),
                );
            }
        }
        let Some(raw) = r.value::<RawRoute>(&item, &at(&[]), &field) else {
            continue;
        };
        let mut ok = true;
        let method = Method::from_bytes(raw.method.to_ascii_uppercase().as_bytes());
        let never = match &method {
            Err(_) => Some(format!("`{}` is not an HTTP method", raw.method)),
            Ok(m) if m == Method::HEAD => Some(
                "`HEAD` is never routed: a HEAD request is routed, decided and audited as \
                 the path's `GET` route (declare `GET`)"
                    .to_string(),
            ),
            Ok(m) if m == Method::CONNECT => {
                Some("`CONNECT` is never routed: meshgate answers it 400".to_string())
            }
            Ok(_) => None,
        };
        if let Some(m) = never {
            r.error(at(&["method"]), format!("{field}.method"), m);
            ok = false;
        }
        if let Err(e) = crate::decision::routes::check_pattern(&raw.path) {
            r.error(
                at(&["path"]),
                format!("{field}.path"),
                format!("`{}`: {e}", raw.path),
            );
            ok = false;
        }
        if let Some(d) = raw
            .dataset
            .as_ref()
            .filter(|d| !datasets.iter().any(|(n, _)| n == *d))
        {
            let m = format!("`{d}` is not a schema object of this contract");
            r.error(at(&["dataset"]), format!("{field}.dataset"), m);
            ok = false;
        }
        if let (true, Ok(method)) = (ok, method) {
            routes.push(RouteSpec {
                method,
                path: raw.path,
                action: raw.action,
                dataset: raw.dataset,
                user_token: raw.user_token,
                at: at(&["path"]),
                field: format!("{field}.path"),
            });
        }
    }
    routes
}

/// A number, written as one or as a string; infinities and NaN are not.
fn number(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|v: &f64| v.is_finite())
}

/// The SLA; each property that is wrong is reported at its value.
fn sla(r: &mut Reader, odcs: &Odcs) -> Sla {
    let mut sla = Sla::default();
    for (i, p) in &odcs.sla {
        let path = vec![key("slaProperties"), Step::Index(*i), key("value")];
        let field = format!("slaProperties[{i}]");
        if let Err(what) = sla_property(p, &mut sla) {
            r.error(path, field, format!("{}: {what}", p.property));
        }
    }
    sla
}

/// Reads one SLA property into `sla`.
fn sla_property(p: &SlaProperty, sla: &mut Sla) -> Result<(), String> {
    let unit = p.unit.as_deref().unwrap_or("").trim().to_ascii_lowercase();
    let positive = || {
        number(&p.value)
            .filter(|v| *v > 0.0)
            .ok_or("value must be a positive number")
    };
    match p.property.as_str() {
        "availability" => {
            let v = number(&p.value).ok_or("value must be a number (percent)")?;
            if !(0.0..=100.0).contains(&v) {
                return Err("must be a percentage between 0 and 100".into());
            }
            sla.availability = Some(v);
        }
        "errorRate" => {
            sla.error_rate = Some(number(&p.value).ok_or("value must be a number (percent)")?);
        }
        "latency" => {
            let v = positive()?;
            let secs = match unit.as_str() {
                "ms" | "millisecond" | "milliseconds" => v / 1000.0,
                "s" | "sec" | "second" | "seconds" => v,
                "m" | "min" | "minute" | "minutes" => v * 60.0,
                "" => return Err("needs a unit (ms, s, m)".into()),
                other => return Err(format!("unit `{other}`: use ms, s or m")),
            };
            let latency = Duration::try_from_secs_f64(secs)
                .map_err(|_| "too large a latency to be a duration")?;
            if latency.is_zero() {
                return Err("too small a latency: it is zero in nanoseconds".into());
            }
            sla.latency = Some(latency);
        }
        "throughput" => {
            let v = positive()?;
            let per_sec = match unit.as_str() {
                "requests/s" | "rps" | "requests per second" | "req/s" | "" => v,
                "requests/m" | "rpm" | "requests per minute" | "req/min" | "requests/min" => {
                    v / 60.0
                }
                "requests/h" | "requests per hour" => v / 3600.0,
                other => return Err(format!("unit `{other}`: use requests/s or requests/min")),
            };
            if per_sec <= 0.0 {
                return Err("too small a throughput: it is zero per second".into());
            }
            sla.throughput = Some(per_sec);
        }
        _ => {}
    }
    Ok(())
}

/// `status`, `endOfSupport`/`endOfLife` and the successor links.
fn lifecycle(r: &mut Reader, odcs: &Odcs) -> Option<Lifecycle> {
    let status = match odcs.status.as_deref().map(str::parse::<Status>).transpose() {
        Ok(s) => s,
        Err(message) => {
            r.error(vec![key("status")], "status", message);
            return None;
        }
    };
    let read = Lifecycle::read(
        status,
        |k| odcs.sla_value(k),
        |k| odcs.custom(k).map(|(_, v)| v),
    );
    read.map_err(|e| {
        // `slaProperties.endOfLife`, `customProperties.successorVersion`: the
        // item that holds the property.
        let path = match e.field.split_once('.') {
            Some(("slaProperties", name)) => odcs
                .sla
                .iter()
                .find(|(_, p)| p.property == name)
                .map(|(i, _)| vec![key("slaProperties"), Step::Index(*i), key("value")]),
            Some(("customProperties", name)) => odcs.custom(name).map(|(p, _)| p),
            _ => None,
        };
        r.error(path.unwrap_or_default(), e.field, e.message);
    })
    .ok()
}
