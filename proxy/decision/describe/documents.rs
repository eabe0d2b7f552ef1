//! The documents' shapes: ODPS v1.1.0 (the fields meshgate fills), the
//! index and the caller view, serialised as JSON or YAML.

use serde::Serialize;

/// An ODPS v1.1.0 data product descriptor (the fields meshgate fills).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Odps {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub output_ports: Vec<OutputPort>,
    pub management_ports: Vec<ManagementPort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub support: Vec<Support>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<Team>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPort {
    pub name: String,
    pub version: String,
    pub contract_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagementPort {
    pub name: &'static str,
    pub content: &'static str,
    pub r#type: &'static str,
    pub url: String,
    pub description: &'static str,
}

#[derive(Debug, Serialize)]
pub struct Description {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limitations: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Support {
    pub channel: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Team {
    pub members: Vec<Member>,
}

#[derive(Debug, Serialize)]
pub struct Member {
    pub username: String,
    pub role: &'static str,
}

/// The index: the products the caller may describe.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub data_products: Vec<IndexEntry>,
}

#[derive(Debug, Serialize)]
pub struct IndexEntry {
    pub id: String,
    pub name: String,
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub href: String,
}

/// Who asks, as the caller view shows it.
#[derive(Debug, Serialize)]
pub struct CallerFacts {
    /// The service (`x-meshgate-principal` form).
    pub service: String,
    /// The verified end user (`issuer|subject`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The declared purpose (`x-data-purpose`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// A contract's quota for one caller: `None` in the view is no quota.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub tier: String,
    /// The `RateLimit-Policy` field value.
    pub rate_limit_policy: String,
}

/// The caller's own view of a product.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerView {
    pub product: String,
    pub caller: CallerFacts,
    pub output_ports: Vec<PortView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    pub contract_id: String,
    pub version: String,
    pub status: String,
    pub quota: Option<QuotaView>,
    pub allowed_purposes: Vec<String>,
    pub sla: Vec<SlaProperty>,
    /// What the caller would get of each dataset a data route names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetView>,
}

/// What a caller would get of one dataset: decided as a request on a
/// route that names it (its method, its pattern as the path) with
/// the caller's identity, user, purpose, address and time.
#[derive(Debug, Serialize)]
pub struct DatasetView {
    pub name: String,
    /// The route decided: `GET /orders`.
    pub route: String,
    pub decision: Access,
    /// The fields its responses would hide, and how (only when allowed
    /// and the dataset declares fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<HiddenView>>,
    /// What happens to fields the contract does not declare (only when
    /// allowed and the dataset declares fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undeclared: Option<&'static str>,
}

/// The outcome of a dataset's decision as the caller view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Allow,
    Deny,
    /// Allowed, but the version is past its end of life: its requests
    /// are answered 410.
    Retired,
    /// The route asks for an end-user token the request did not carry.
    UserTokenRequired,
}

/// A field the caller would see hidden.
#[derive(Debug, Serialize)]
pub struct HiddenView {
    /// Its path in the dataset (`shipping/city`).
    pub field: String,
    /// How: `omit`, `null`, `redact`, `hash`, `last4` or `year`.
    pub mask: &'static str,
}

#[derive(Debug, Serialize)]
pub struct SlaProperty {
    pub property: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

impl SlaProperty {
    pub fn new(property: &'static str, value: f64, unit: &'static str) -> SlaProperty {
        SlaProperty {
            property,
            value,
            unit,
        }
    }
}
