//! Data contracts: the fields meshgate reads from an ODCS v3 YAML file.
//!
//! From the standard: `id`, `name`, `version`, `domain`, `dataProduct`, `tags`,
//! `schema[].name` (the datasets), `team` (owner), `slaProperties`. From
//! `customProperties` (where ODCS puts what it does not define): `classification`,
//! `owner`, `allowedPurposes` and `meshgateRoutes`, the product's route table.

use std::time::Duration;

use http::Method;
use serde::Deserialize;

use crate::base::yaml::ConfigError;
use crate::decision::lifecycle::{Lifecycle, Status};

pub const CLASSIFICATIONS: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// The Cedar actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Query,
    Describe,
    Subscribe,
    Write,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Query,
        Action::Describe,
        Action::Subscribe,
        Action::Write,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Query => "query",
            Action::Describe => "describe",
            Action::Subscribe => "subscribe",
            Action::Write => "write",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unknown action `{s}`; one of read, query, describe, subscribe, write")
            })
    }
}

/// Whether a route needs an end-user token (`Authorization: Bearer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserToken {
    /// Tokens are not looked at.
    #[default]
    None,
    /// A token is verified when sent; a request without one has no user.
    Optional,
    /// Every request must carry a valid token.
    Required,
}

/// One route of a product: method + path pattern -> action (and dataset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: String,
    pub action: Action,
    pub dataset: Option<String>,
    /// Overrides the product's `userToken`.
    pub user_token: Option<UserToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    method: String,
    path: String,
    action: Action,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    user_token: Option<UserToken>,
}

/// The SLA a contract promises (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sla {
    /// Percent, e.g. 99.9.
    pub availability: Option<f64>,
    pub latency: Option<Duration>,
    /// Requests per second.
    pub throughput: Option<f64>,
    /// Percent.
    pub error_rate: Option<f64>,
}

/// A data product as meshgate sees it.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub owner: String,
    pub classification: String,
    pub version: String,
    pub tags: Vec<String>,
    pub allowed_purposes: Vec<String>,
    /// Dataset names (`schema[].name`) with their classification.
    pub datasets: Vec<(String, String)>,
    pub sla: Sla,
    pub routes: Vec<RouteSpec>,
    /// Whether its routes need an end-user token (custom property `userToken`).
    pub user_token: UserToken,
    /// Where it was read from.
    pub file: String,
    /// `status`, end of support and of life, successor.
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Odcs {
    api_version: String,
    kind: String,
    id: String,
    #[serde(default)]
    name: Option<String>,
    version: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    data_product: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    schema: Vec<SchemaObject>,
    #[serde(default)]
    team: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    sla_properties: Vec<SlaProperty>,
    #[serde(default)]
    custom_properties: Vec<CustomProperty>,
}

#[derive(Debug, Deserialize)]
struct SchemaObject {
    name: String,
    #[serde(default)]
    classification: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlaProperty {
    property: String,
    value: serde_yaml_ng::Value,
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CustomProperty {
    property: String,
    #[serde(default)]
    value: serde_yaml_ng::Value,
}

fn invalid(file: &str, field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        field,
        message: message.into(),
    }
}

impl Odcs {
    /// A custom property's value.
    fn custom(&self, key: &str) -> Option<&serde_yaml_ng::Value> {
        self.custom_properties
            .iter()
            .find(|c| c.property == key)
            .map(|c| &c.value)
    }
}

/// Parses one contract; `file` names it in errors. The sections are read
/// in the order their mistakes are reported.
pub fn parse(text: &str, file: &str) -> Result<Product, ConfigError> {
    let odcs: Odcs = crate::base::yaml::parse_yaml(text, file)?;
    check_header(&odcs, file)?;
    let domain = odcs
        .domain
        .clone()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| invalid(file, "domain", "required: the domain that owns the product"))?;
    let classification = classification(&odcs, file)?;
    let owner = owner(&odcs, file)?;
    let allowed_purposes = allowed_purposes(&odcs, file)?;
    let datasets = datasets(&odcs, &classification, file)?;
    let routes = match odcs.custom("meshgateRoutes") {
        None => Vec::new(),
        Some(v) => parse_routes(v, &datasets, file)?,
    };
    let user_token = user_token(&odcs, file)?;
    let sla = parse_sla(&odcs.sla_properties, file)?;
    let lifecycle = lifecycle(&odcs, file)?;
    Ok(Product {
        name: odcs
            .name
            .or(odcs.data_product)
            .unwrap_or_else(|| odcs.id.clone()),
        id: odcs.id,
        domain,
        owner,
        classification,
        version: odcs.version,
        tags: odcs.tags,
        allowed_purposes,
        datasets,
        sla,
        routes,
        user_token,
        file: file.to_string(),
        lifecycle,
    })
}

/// `status`, `endOfSupport`/`endOfLife` and the successor links.
fn lifecycle(odcs: &Odcs, file: &str) -> Result<Lifecycle, ConfigError> {
    let sla = |key: &str| {
        odcs.sla_properties
            .iter()
            .find(|p| p.property == key)
            .map(|p| &p.value)
    };
    let status = odcs
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
        .map_err(|message| invalid(file, "status", message))?;
    Lifecycle::read(status, sla, |key| odcs.custom(key))
        .map_err(|e| invalid(file, e.field, e.message))
}

/// `kind`, `apiVersion` and `id`: an ODCS v3 data contract with an id that
/// can stand in a Cedar entity and a URL.
fn check_header(odcs: &Odcs, file: &str) -> Result<(), ConfigError> {
    if odcs.kind != "DataContract" {
        return Err(invalid(
            file,
            "kind",
            format!("`{}`: expected `DataContract`", odcs.kind),
        ));
    }
    if !odcs.api_version.starts_with("v3.") {
        return Err(invalid(
            file,
            "apiVersion",
            format!("`{}`: meshgate reads ODCS v3 contracts", odcs.api_version),
        ));
    }
    if odcs.id.is_empty()
        || odcs.id.contains(['"', '\\', '/'])
        || odcs.id.chars().any(char::is_control)
    {
        return Err(invalid(
            file,
            "id",
            format!("`{}` is not a usable product id", odcs.id.escape_debug()),
        ));
    }
    Ok(())
}

/// The product's classification: its custom property, else the strictest
/// of its schema objects'.
fn classification(odcs: &Odcs, file: &str) -> Result<String, ConfigError> {
    let classification = match odcs.custom("classification") {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid(file, "customProperties.classification", "must be a string"))?,
        None => strictest(odcs.schema.iter().filter_map(|s| s.classification.as_deref()))
            .ok_or_else(|| {
                invalid(
                    file,
                    "customProperties.classification",
                    "required (or a classification on a schema object): one of public, internal, confidential, restricted",
                )
            })?
            .to_string(),
    };
    if !CLASSIFICATIONS.contains(&classification.as_str()) {
        return Err(invalid(
            file,
            "customProperties.classification",
            format!("`{classification}`: one of public, internal, confidential, restricted"),
        ));
    }
    Ok(classification)
}

/// The owner: its custom property, else the team member with role `owner`.
fn owner(odcs: &Odcs, file: &str) -> Result<String, ConfigError> {
    match odcs.custom("owner") {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid(file, "customProperties.owner", "must be a string")),
        None => team_owner(odcs.team.as_ref()).ok_or_else(|| {
            invalid(
                file,
                "customProperties.owner",
                "required (or a team member with role `owner`)",
            )
        }),
    }
}

fn allowed_purposes(odcs: &Odcs, file: &str) -> Result<Vec<String>, ConfigError> {
    match odcs.custom("allowedPurposes") {
        None => Ok(Vec::new()),
        Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|e| {
            invalid(
                file,
                "customProperties.allowedPurposes",
                format!("must be a list of strings: {e}"),
            )
        }),
    }
}

/// The datasets (`schema[].name`), each with its own classification or
/// the product's.
fn datasets(
    odcs: &Odcs,
    classification: &str,
    file: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let datasets: Vec<(String, String)> = odcs
        .schema
        .iter()
        .map(|s| {
            let c = s
                .classification
                .clone()
                .unwrap_or_else(|| classification.to_string());
            (s.name.clone(), c)
        })
        .collect();
    for (name, c) in &datasets {
        if !CLASSIFICATIONS.contains(&c.as_str()) {
            return Err(invalid(
                file,
                "schema.classification",
                format!("{name}: `{c}` is not a classification"),
            ));
        }
    }
    Ok(datasets)
}

fn user_token(odcs: &Odcs, file: &str) -> Result<UserToken, ConfigError> {
    match odcs.custom("userToken") {
        None => Ok(UserToken::None),
        Some(v) => serde_yaml_ng::from_value(v.clone()).map_err(|_| {
            invalid(
                file,
                "customProperties.userToken",
                "one of none, optional, required",
            )
        }),
    }
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
fn team_owner(team: Option<&serde_yaml_ng::Value>) -> Option<String> {
    let members = match team? {
        serde_yaml_ng::Value::Sequence(s) => s,
        serde_yaml_ng::Value::Mapping(m) => m.get("members")?.as_sequence()?,
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

fn parse_routes(
    v: &serde_yaml_ng::Value,
    datasets: &[(String, String)],
    file: &str,
) -> Result<Vec<RouteSpec>, ConfigError> {
    const FIELD: &str = "customProperties.meshgateRoutes";
    let raw: Vec<RawRoute> =
        serde_yaml_ng::from_value(v.clone()).map_err(|e| invalid(file, FIELD, e.to_string()))?;
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let method =
            Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                invalid(
                    file,
                    FIELD,
                    format!("[{i}].method: `{}` is not an HTTP method", r.method),
                )
            })?;
        crate::decision::routes::check_pattern(&r.path)
            .map_err(|e| invalid(file, FIELD, format!("[{i}].path: `{}`: {e}", r.path)))?;
        if let Some(d) = &r.dataset {
            if !datasets.iter().any(|(n, _)| n == d) {
                return Err(invalid(
                    file,
                    FIELD,
                    format!("[{i}].dataset: `{d}` is not a schema object of this contract"),
                ));
            }
        }
        routes.push(RouteSpec {
            method,
            path: r.path,
            action: r.action,
            dataset: r.dataset,
            user_token: r.user_token,
        });
    }
    Ok(routes)
}

/// A number, written as one or as a string; infinities and NaN are not.
fn number(v: &serde_yaml_ng::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|v: &f64| v.is_finite())
}

fn parse_sla(props: &[SlaProperty], file: &str) -> Result<Sla, ConfigError> {
    let mut sla = Sla::default();
    for p in props {
        let bad = |what: &str| invalid(file, "slaProperties", format!("{}: {what}", p.property));
        let unit = p.unit.as_deref().unwrap_or("").trim().to_ascii_lowercase();
        match p.property.as_str() {
            "availability" => {
                let v = number(&p.value).ok_or_else(|| bad("value must be a number (percent)"))?;
                if !(0.0..=100.0).contains(&v) {
                    return Err(bad("must be a percentage between 0 and 100"));
                }
                sla.availability = Some(v);
            }
            "errorRate" => {
                let v = number(&p.value).ok_or_else(|| bad("value must be a number (percent)"))?;
                sla.error_rate = Some(v);
            }
            "latency" => {
                let v = number(&p.value)
                    .filter(|v| *v > 0.0)
                    .ok_or_else(|| bad("value must be a positive number"))?;
                let secs = match unit.as_str() {
                    "ms" | "millisecond" | "milliseconds" => v / 1000.0,
                    "s" | "sec" | "second" | "seconds" => v,
                    "m" | "min" | "minute" | "minutes" => v * 60.0,
                    "" => return Err(bad("needs a unit (ms, s, m)")),
                    other => return Err(bad(&format!("unit `{other}`: use ms, s or m"))),
                };
                let latency = Duration::try_from_secs_f64(secs)
                    .map_err(|_| bad("too large a latency to be a duration"))?;
                if latency.is_zero() {
                    return Err(bad("too small a latency: it is zero in nanoseconds"));
                }
                sla.latency = Some(latency);
            }
            "throughput" => {
                let v = number(&p.value)
                    .filter(|v| *v > 0.0)
                    .ok_or_else(|| bad("value must be a positive number"))?;
                let per_sec = match unit.as_str() {
                    "requests/s" | "rps" | "requests per second" | "req/s" => v,
                    "requests/m" | "rpm" | "requests per minute" | "req/min" | "requests/min" => {
                        v / 60.0
                    }
                    "requests/h" | "requests per hour" => v / 3600.0,
                    "" => v,
                    other => {
                        return Err(bad(&format!(
                            "unit `{other}`: use requests/s or requests/min"
                        )))
                    }
                };
                if per_sec <= 0.0 {
                    return Err(bad("too small a throughput: it is zero per second"));
                }
                sla.throughput = Some(per_sec);
            }
            _ => {}
        }
    }
    Ok(sla)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = include_str!("../../policies/domains/sales/orders.odcs.yaml");

    #[test]
    fn reads_the_example_contract() {
        let p = parse(ORDERS, "orders.odcs.yaml").expect("parses");
        assert_eq!(p.id, "sales.orders");
        assert_eq!(p.domain, "sales");
        assert_eq!(p.classification, "internal");
        assert_eq!(p.owner, "sales-data-team@acme.example");
        assert_eq!(p.allowed_purposes, vec!["reporting", "fulfilment"]);
        assert_eq!(p.sla.availability, Some(99.9));
        assert_eq!(p.sla.latency, Some(Duration::from_millis(250)));
        assert_eq!(p.sla.throughput, Some(200.0));
        assert_eq!(
            p.datasets,
            vec![("orders".to_string(), "internal".to_string())]
        );
        assert!(p
            .routes
            .iter()
            .any(|r| r.path == "/orders/{id}" && r.action == Action::Read));
    }

    /// A latency too large for a `Duration` made contract loading panic
    /// (found by the `contract` fuzz target, kept in fuzz/regressions/);
    /// one that is zero in nanoseconds, an infinity or NaN is refused too.
    #[test]
    fn an_unrepresentable_latency_is_an_error() {
        let too_large = "too large a latency to be a duration";
        let not_a_number = "value must be a positive number";
        for (value, unit, why) in [
            ("1e300", "m", too_large),
            ("2e19", "s", too_large),
            (
                "1e-12",
                "s",
                "too small a latency: it is zero in nanoseconds",
            ),
            (".inf", "s", not_a_number),
            ("\"inf\"", "ms", not_a_number),
            (".nan", "ms", not_a_number),
        ] {
            let text = ORDERS.replace(
                "{ property: latency, value: 250, unit: ms }",
                &format!("{{ property: latency, value: {value}, unit: {unit} }}"),
            );
            let e = parse(&text, "o.yaml").unwrap_err().to_string();
            assert_eq!(
                e,
                format!("o.yaml: slaProperties: latency: {why}"),
                "{value} {unit}"
            );
        }
    }

    #[test]
    fn a_throughput_that_is_zero_per_second_is_an_error() {
        let text = ORDERS.replace(
            "{ property: throughput, value: 200, unit: requests/s }",
            "{ property: throughput, value: 5e-324, unit: requests/h }",
        );
        let e = parse(&text, "o.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            "o.yaml: slaProperties: throughput: too small a throughput: it is zero per second"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(&ORDERS.replace("action: query", "action: raed"), "o.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("customProperties.meshgateRoutes") && e.contains("raed"),
            "{e}"
        );
        let e = parse(
            &ORDERS.replace("value: internal", "value: secret"),
            "o.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("customProperties.classification") && e.contains("secret"),
            "{e}"
        );
        let e = parse(&ORDERS.replace("domain: sales\n", ""), "o.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("o.yaml: domain: required"), "{e}");
        let e = parse(
            &ORDERS.replace("dataset: orders }", "dataset: order }"),
            "o.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`order` is not a schema object"), "{e}");
        let e = parse(&ORDERS.replace("unit: ms", "unit: fortnights"), "o.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slaProperties: latency: unit `fortnights`"),
            "{e}"
        );
        let e = parse("kind: DataContract\napiVersion: v3.0.2\nid: [\n", "o.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("o.yaml:"), "{e}");
    }
}
