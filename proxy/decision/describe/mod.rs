//! Self-description: what a node says about the data products it serves,
//! under one well-known prefix on the data port.
//!
//! - `/.well-known/data-product`: the index, the ODPS products the caller
//!   may describe;
//! - `/.well-known/data-product/{product}`: the product descriptor, Bitol's
//!   Open Data Product Standard (ODPS v1.1.0), in JSON or YAML;
//! - `/.well-known/data-product/{product}/contracts/{id}[/{version}]`: an
//!   ODCS contract, byte for byte as committed;
//! - `/.well-known/data-product/{product}/caller`: the caller's own view
//!   (quota tier and `RateLimit-Policy`, allowed purposes, SLA);
//! - `/.well-known/api-catalog`: RFC 9727's catalog, an RFC 9264 linkset.
//!
//! An ODPS product groups the contracts that share `domain` and
//! `dataProduct` (the versions of one product); its id is
//! `<domain>.<dataProduct>`, or the contract's id without `dataProduct`.
//! Every contract is one output port. The snapshot builds a [`Described`]
//! once; the documents are made per request from what the caller may
//! describe. The pipeline decides and answers (statuses are its own); the
//! offline `meshgate describe` renders the same documents for every contract.

use bytes::Bytes;
use serde::Serialize;

mod documents;
pub use documents::*;

use crate::decision::contract::{Action, Product, Sla, UserToken};
use crate::decision::lifecycle::{Lifecycle, Status};
use crate::decision::routes::Target;

/// The well-known prefix of the descriptors and contracts.
pub const PREFIX: &str = "/.well-known/data-product";
/// RFC 9727's well-known catalog.
pub const API_CATALOG: &str = "/.well-known/api-catalog";
/// The ODPS version of the descriptors.
pub const ODPS_API_VERSION: &str = "v1.1.0";
/// The linkset media type with RFC 9727's profile.
pub const LINKSET_TYPE: &str =
    "application/linkset+json; profile=\"https://www.rfc-editor.org/info/rfc9727\"";
/// The media type of YAML (RFC 9512): descriptors on request, contracts.
pub const YAML_TYPE: &str = "application/yaml";
pub const JSON_TYPE: &str = "application/json";

/// What a well-known request asks for. Product and contract names are
/// positions in [`Described`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The products the caller may describe.
    Index,
    /// RFC 9727's api-catalog.
    Catalog,
    /// One product's ODPS descriptor.
    Descriptor(usize),
    /// The caller's view of one product.
    Caller(usize),
    /// One contract of one product.
    Contract(usize, usize),
}

/// Why a well-known path names nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescribeError {
    #[error("nothing is described at this path")]
    Unknown,
    #[error("the document cannot be written: {0}")]
    Render(String),
}

/// One contract as the node describes it.
#[derive(Debug)]
struct Contract {
    /// The contract's product entry in the snapshot.
    id: String,
    version: String,
    name: String,
    status: String,
    /// The file as committed.
    text: Bytes,
    /// The decision `describe` on this contract's `DataProduct`.
    target: Target,
    product: ProductFacts,
    extra: Extra,
}

/// What the descriptors use of a parsed contract.
#[derive(Debug, Clone)]
struct ProductFacts {
    owner: String,
    tags: Vec<String>,
    allowed_purposes: Vec<String>,
    sla: Sla,
    lifecycle: Lifecycle,
}

/// What the descriptors read from a contract that meshgate does not need
/// otherwise (the contract parser has checked the rest).
#[derive(Debug, Default)]
struct Extra {
    data_product: Option<String>,
    tenant: Option<String>,
    description: Option<serde_yaml_ng::Value>,
    support: Option<serde_yaml_ng::Value>,
}

impl Extra {
    /// Reads them from the contract's text; `dataProduct`, which names
    /// the product a contract belongs to, must be a string.
    fn read(text: &[u8], file: &str) -> Result<Extra, String> {
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_slice(text).map_err(|e| format!("{file}: {e}"))?;
        let data_product = match doc.get("dataProduct") {
            None | Some(serde_yaml_ng::Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| format!("{file}: dataProduct: must be a string"))?
                    .to_string(),
            ),
        };
        Ok(Extra {
            data_product: data_product.filter(|d| !d.is_empty()),
            tenant: doc
                .get("tenant")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            description: doc.get("description").cloned(),
            support: doc.get("support").cloned(),
        })
    }
}

/// One ODPS product: its id and its contracts (newest version first).
#[derive(Debug)]
struct Group {
    id: String,
    name: String,
    domain: String,
    contracts: Vec<usize>,
}

/// A set of contracts (positions in [`Described`]): those a caller may
/// describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed(Vec<bool>);

impl Allowed {
    fn has(&self, contract: usize) -> bool {
        self.0.get(contract).copied().unwrap_or(false)
    }
}

/// Every product and contract of a snapshot, as the well-known documents
/// show them.
#[derive(Debug, Default)]
pub struct Described {
    contracts: Vec<Contract>,
    groups: Vec<Group>,
}

/// Whether a path is the node's own (answered by the sidecar, never routed
/// to the product's server).
pub fn is_well_known(path: &str) -> bool {
    under(path, PREFIX) || under(path, API_CATALOG)
}

fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Described {
    /// The documents of these contracts (`(product, its file as
    /// committed)`, in snapshot order). A route under the well-known
    /// prefixes, or a product id no URL can carry, is an error naming the
    /// file and field.
    pub fn new<'a>(
        contracts: impl IntoIterator<Item = (&'a Product, Bytes)>,
    ) -> Result<Described, Vec<String>> {
        let mut errors = Vec::new();
        let mut described = Described::default();
        // Group id -> (position, whether named by domain and dataProduct).
        let mut index: std::collections::HashMap<String, (usize, bool)> =
            std::collections::HashMap::new();
        for (entry, (p, text)) in contracts.into_iter().enumerate() {
            for (i, r) in p.routes.iter().enumerate() {
                if is_well_known(&r.path) {
                    errors.push(format!(
                        "{}: customProperties.meshgateRoutes: [{i}].path: `{}` is under {PREFIX} or {API_CATALOG}, which the sidecar answers itself",
                        p.file, r.path
                    ));
                }
            }
            let extra = match Extra::read(&text, &p.file) {
                Ok(extra) => extra,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let group_id = match &extra.data_product {
                Some(dp) => format!("{}.{dp}", p.domain),
                None => p.id.clone(),
            };
            if group_id.contains(['/', '\\', '?', '#']) || group_id.chars().any(char::is_control) {
                errors.push(format!(
                    "{}: dataProduct: `{}` cannot stand in a URL path segment (no / \\ ? # or control characters)",
                    p.file,
                    group_id.escape_debug()
                ));
                continue;
            }
            let at = described.contracts.len();
            described.contracts.push(Contract {
                id: p.id.clone(),
                version: p.version.clone(),
                name: p.name.clone(),
                status: status_name(p.lifecycle.status).to_string(),
                text,
                target: Target {
                    product: entry,
                    action: Action::Describe,
                    dataset: None,
                    pattern: PREFIX.to_string(),
                    user_token: p.user_token,
                },
                product: ProductFacts {
                    owner: p.owner.clone(),
                    tags: p.tags.clone(),
                    allowed_purposes: p.allowed_purposes.clone(),
                    sla: p.sla.clone(),
                    lifecycle: p.lifecycle.clone(),
                },
                extra,
            });
            let by_product = described.contracts[at].extra.data_product.is_some();
            match index.get(&group_id) {
                // A contract's own id cannot name another product's group.
                Some(&(_, by)) if by != by_product => {
                    errors.push(format!(
                        "{}: id: `{group_id}` is also the product id of other contracts (their domain and dataProduct); give this contract a dataProduct or another id",
                        p.file
                    ));
                }
                Some(&(g, _)) => described.groups[g].contracts.push(at),
                None => {
                    index.insert(group_id.clone(), (described.groups.len(), by_product));
                    described.groups.push(Group {
                        name: described.contracts[at]
                            .extra
                            .data_product
                            .clone()
                            .unwrap_or_else(|| p.name.clone()),
                        id: group_id,
                        domain: p.domain.clone(),
                        contracts: vec![at],
                    })
                }
            }
        }
        let contracts = &described.contracts;
        for g in &mut described.groups {
            g.contracts.sort_by(|a, b| {
                version_key(&contracts[*b].version).cmp(&version_key(&contracts[*a].version))
            });
        }
        described.groups.sort_by(|a, b| a.id.cmp(&b.id));
        if errors.is_empty() {
            Ok(described)
        } else {
            Err(errors)
        }
    }

    /// What a well-known path asks for (the decoded, normalised path).
    pub fn ask(&self, path: &str) -> Result<Ask, DescribeError> {
        if path == API_CATALOG {
            return Ok(Ask::Catalog);
        }
        let rest = path.strip_prefix(PREFIX).ok_or(DescribeError::Unknown)?;
        if rest.is_empty() {
            return Ok(Ask::Index);
        }
        let parts: Vec<&str> = rest
            .strip_prefix('/')
            .ok_or(DescribeError::Unknown)?
            .split('/')
            .collect();
        // Groups are sorted by id.
        let group = self
            .groups
            .binary_search_by(|g| g.id.as_str().cmp(parts[0]))
            .map_err(|_| DescribeError::Unknown)?;
        let contract = |id: &str, version: Option<&str>| {
            self.groups[group]
                .contracts
                .iter()
                .copied()
                .find(|&c| {
                    let c = &self.contracts[c];
                    c.id == id && version.is_none_or(|v| v == c.version)
                })
                .map(|c| Ask::Contract(group, c))
                .ok_or(DescribeError::Unknown)
        };
        match parts[1..] {
            [] => Ok(Ask::Descriptor(group)),
            ["caller"] => Ok(Ask::Caller(group)),
            ["contracts", id] => contract(id, None),
            ["contracts", id, version] => contract(id, Some(version)),
            _ => Err(DescribeError::Unknown),
        }
    }

    /// The contracts a request decides `describe` on: one for a contract,
    /// a product's for its descriptor and caller view, all for the index
    /// and the catalog. Positions in [`Described`], with their targets.
    pub fn scope(&self, ask: Ask) -> Vec<(usize, &Target)> {
        let of = |c: usize| (c, &self.contracts[c].target);
        match ask {
            Ask::Index | Ask::Catalog => (0..self.contracts.len()).map(of).collect(),
            Ask::Descriptor(g) | Ask::Caller(g) => {
                self.groups[g].contracts.iter().map(|&c| of(c)).collect()
            }
            Ask::Contract(_, c) => vec![of(c)],
        }
    }

    /// Every contract, for offline documents.
    pub fn all(&self) -> Allowed {
        Allowed(vec![true; self.contracts.len()])
    }

    /// The contracts at these positions (what a caller may describe).
    pub fn allowed(&self, positions: impl IntoIterator<Item = usize>) -> Allowed {
        let mut set = vec![false; self.contracts.len()];
        for at in positions {
            if let Some(slot) = set.get_mut(at) {
                *slot = true;
            }
        }
        Allowed(set)
    }

    /// The ODPS ids, sorted.
    pub fn product_ids(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.id.as_str())
    }

    /// The product with this ODPS id.
    pub fn product(&self, id: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.id == id)
    }

    /// The end-user token a product's requests take: the strictest of its
    /// contracts'.
    pub fn user_token(&self, scope: &[(usize, &Target)]) -> UserToken {
        let rank = |t: UserToken| match t {
            UserToken::None => 0,
            UserToken::Optional => 1,
            UserToken::Required => 2,
        };
        scope
            .iter()
            .map(|(_, t)| t.user_token)
            .max_by_key(|t| rank(*t))
            .unwrap_or_default()
    }

    /// A contract as committed.
    pub fn contract_text(&self, contract: usize) -> Bytes {
        self.contracts[contract].text.clone()
    }

    /// The ODPS descriptor of product `group` with the output ports of
    /// the contracts in `allowed`; links start with `origin`
    /// (`https://host:port`, or empty for references relative to the node).
    pub fn descriptor(&self, group: usize, allowed: &Allowed, origin: &str) -> Odps {
        let g = &self.groups[group];
        let ports: Vec<&Contract> = g
            .contracts
            .iter()
            .filter(|&&c| allowed.has(c))
            .map(|&c| &self.contracts[c])
            .collect();
        let newest = ports.first().copied();
        let mut tags: Vec<String> = Vec::new();
        let mut support: Vec<Support> = Vec::new();
        for c in &ports {
            for t in &c.product.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
            for s in support_of(c.extra.support.as_ref()) {
                if !support.contains(&s) {
                    support.push(s);
                }
            }
        }
        let base = format!("{origin}{}", product_path(&g.id));
        let now = std::time::SystemTime::now();
        Odps {
            api_version: ODPS_API_VERSION,
            kind: "DataProduct",
            id: g.id.clone(),
            name: g.name.clone(),
            version: newest.map(|c| c.version.clone()),
            status: newest.map(|c| c.status.clone()),
            domain: g.domain.clone(),
            tenant: newest.and_then(|c| c.extra.tenant.clone()),
            description: newest.and_then(|c| description_of(c.extra.description.as_ref())),
            tags,
            output_ports: ports
                .iter()
                .map(|c| OutputPort {
                    name: c.name.clone(),
                    version: c.version.clone(),
                    contract_id: c.id.clone(),
                    description: None,
                    r#type: "https",
                    deprecated: c.product.lifecycle.is_deprecated(now)
                        || c.product.lifecycle.is_retired(now),
                })
                .collect(),
            management_ports: vec![
                ManagementPort {
                    name: "descriptor",
                    content: "discoverability",
                    r#type: "rest",
                    url: base.clone(),
                    description: "This descriptor (JSON; YAML with Accept: application/yaml)",
                },
                ManagementPort {
                    name: "caller",
                    content: "control",
                    r#type: "rest",
                    url: format!("{base}/caller"),
                    description:
                        "The caller's own view: quota tier, RateLimit-Policy, allowed purposes, SLA",
                },
                ManagementPort {
                    name: "api-catalog",
                    content: "discoverability",
                    r#type: "rest",
                    url: format!("{origin}{API_CATALOG}"),
                    description: "RFC 9727 API catalog of this node",
                },
            ],
            support,
            team: newest.map(|c| Team {
                members: vec![Member {
                    username: c.product.owner.clone(),
                    role: "owner",
                }],
            }),
        }
    }

    /// The products that have at least one contract in `allowed`, as
    /// the index lists them.
    pub fn index(&self, allowed: &Allowed, origin: &str) -> Index {
        Index {
            data_products: self
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.contracts.iter().any(|&c| allowed.has(c)))
                .map(|(_, g)| IndexEntry {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    domain: g.domain.clone(),
                    // The newest version the caller may describe.
                    version: g
                        .contracts
                        .iter()
                        .find(|&&c| allowed.has(c))
                        .map(|&c| self.contracts[c].version.clone()),
                    href: format!("{origin}{}", product_path(&g.id)),
                })
                .collect(),
        }
    }

    /// RFC 9727's catalog as an RFC 9264 linkset: the catalog's own
    /// context lists each product descriptor as an `item`; each
    /// descriptor's context links its YAML form (`alternate`), the
    /// caller view (`service-meta`) and each contract it may be described
    /// by (`describedby`). Links start with `origin`, as in
    /// [`Described::descriptor`].
    pub fn linkset(&self, allowed: &Allowed, origin: &str) -> serde_json::Value {
        use serde_json::json;
        let link = |href: String, ty: &str| json!({ "href": href, "type": ty });
        let mut items = Vec::new();
        let mut contexts = Vec::new();
        for g in &self.groups {
            let ports: Vec<&Contract> = g
                .contracts
                .iter()
                .filter(|&&c| allowed.has(c))
                .map(|&c| &self.contracts[c])
                .collect();
            if ports.is_empty() {
                continue;
            }
            let base = format!("{origin}{}", product_path(&g.id));
            items.push(link(base.clone(), JSON_TYPE));
            let described_by: Vec<serde_json::Value> = ports
                .iter()
                .map(|c| {
                    let path = contract_path(&g.id, &c.id, &c.version);
                    link(format!("{origin}{path}"), YAML_TYPE)
                })
                .collect();
            contexts.push(json!({
                "anchor": base,
                "service-desc": [link(base.clone(), JSON_TYPE)],
                "alternate": [link(base.clone(), YAML_TYPE)],
                "service-meta": [link(format!("{base}/caller"), JSON_TYPE)],
                "describedby": described_by,
            }));
        }
        let mut linkset = vec![json!({
            "anchor": format!("{origin}{API_CATALOG}"),
            "item": items,
        })];
        linkset.extend(contexts);
        json!({ "linkset": linkset })
    }

    /// The caller's view of product `group`, over the contracts in
    /// `allowed`; `quota` tells a contract's quota for this caller,
    /// `datasets` what it would get of each dataset of a contract.
    pub fn caller_view(
        &self,
        group: usize,
        allowed: &Allowed,
        caller: CallerFacts,
        quota: impl Fn(&Target) -> Option<QuotaView>,
        datasets: impl Fn(&Target) -> Vec<DatasetView>,
    ) -> CallerView {
        let g = &self.groups[group];
        CallerView {
            product: g.id.clone(),
            caller,
            output_ports: g
                .contracts
                .iter()
                .copied()
                .filter(|&c| allowed.has(c))
                .map(|at| {
                    let c = &self.contracts[at];
                    PortView {
                        contract_id: c.id.clone(),
                        version: c.version.clone(),
                        status: c.status.clone(),
                        quota: quota(&c.target),
                        allowed_purposes: c.product.allowed_purposes.clone(),
                        sla: sla_properties(&c.product.sla),
                        datasets: datasets(&c.target),
                    }
                })
                .collect(),
        }
    }
}

/// The ODCS (and ODPS) name of a status.
fn status_name(s: Status) -> &'static str {
    match s {
        Status::Proposed => "proposed",
        Status::Draft => "draft",
        Status::Active => "active",
        Status::Deprecated => "deprecated",
        Status::Retired => "retired",
    }
}

/// Bytes for a document: pretty JSON, or YAML.
pub fn render<T: Serialize>(doc: &T, yaml: bool) -> Result<Vec<u8>, DescribeError> {
    if yaml {
        serde_yaml_ng::to_string(doc)
            .map(String::into_bytes)
            .map_err(|e| DescribeError::Render(e.to_string()))
    } else {
        let mut out =
            serde_json::to_vec_pretty(doc).map_err(|e| DescribeError::Render(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }
}

/// `/.well-known/data-product/{id}`, the id percent-encoded.
pub fn product_path(id: &str) -> String {
    format!("{PREFIX}/{}", encode(id))
}

/// A contract's path, with its version.
pub fn contract_path(product: &str, id: &str, version: &str) -> String {
    format!(
        "{}/contracts/{}/{}",
        product_path(product),
        encode(id),
        encode(version)
    )
}

/// Percent-encodes what is not unreserved (RFC 3986) in a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Orders versions as SemVer does, leniently: the numeric dot-separated
/// parts (`2.10.0` after `2.9.1`; a part that is not a number counts as
/// 0), then a release after its pre-releases (`1.0.0-rc1` before
/// `1.0.0`); build metadata (`+…`) is ignored.
fn version_key(v: &str) -> (Vec<u64>, bool, String) {
    let v = v.trim_start_matches(['v', 'V']);
    let v = v.split('+').next().unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (v, None),
    };
    let numbers = core.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    (numbers, pre.is_none(), pre.unwrap_or("").to_string())
}

/// ODCS `description` (purpose, limitations, usage) as ODPS has it.
fn description_of(v: Option<&serde_yaml_ng::Value>) -> Option<Description> {
    let v = v?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let d = Description {
        purpose: text("purpose"),
        limitations: text("limitations"),
        usage: text("usage"),
    };
    (d.purpose.is_some() || d.limitations.is_some() || d.usage.is_some()).then_some(d)
}

/// ODCS `support` channels that ODPS can carry (a channel and a URL).
fn support_of(v: Option<&serde_yaml_ng::Value>) -> Vec<Support> {
    let Some(list) = v.and_then(|v| v.as_sequence()) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|s| {
            let text = |k: &str| s.get(k).and_then(|x| x.as_str()).map(str::to_string);
            Some(Support {
                channel: text("channel")?,
                url: text("url")?,
                description: text("description"),
                tool: text("tool"),
                scope: text("scope"),
                invitation_url: text("invitationUrl"),
            })
        })
        .collect()
}

/// The SLA as ODCS `slaProperties`, in meshgate's units.
fn sla_properties(sla: &Sla) -> Vec<SlaProperty> {
    let mut out = Vec::new();
    if let Some(v) = sla.availability {
        out.push(SlaProperty::new("availability", v, "percent"));
    }
    if let Some(l) = sla.latency {
        out.push(SlaProperty::new("latency", l.as_secs_f64() * 1000.0, "ms"));
    }
    if let Some(v) = sla.throughput {
        out.push(SlaProperty::new("throughput", v, "requests/s"));
    }
    if let Some(v) = sla.error_rate {
        out.push(SlaProperty::new("errorRate", v, "percent"));
    }
    out
}

#[cfg(test)]
mod tests;
