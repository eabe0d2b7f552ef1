//! Data contracts: the fields meshgate reads from an ODCS v3 YAML file.
//!
//! From the standard: `id`, `name`, `version`, `domain`, `dataProduct`, `tags`,
//! `schema[].name` (the datasets), `team` (owner), `slaProperties`. From
//! `customProperties` (where ODCS puts what it does not define): `classification`,
//! `owner`, `allowedPurposes`, `meshgateRoutes`, the product's route table,
//! `meshgateGrpc`, its gRPC methods as routes (`grpc.rs`), `meshgateFlight`,
//! its Arrow Flight RPCs as routes (`flight.rs`), and
//! `meshgateAllowOverride`, the method-override header its server honours.
//!
//! A contract is read into values once (serde_yaml_ng); each section, each
//! list item and each route is then read on its own, so that every mistake
//! is reported, not only the first. Findings carry the path of their node
//! and are located (`file:line:col`) by [`crate::base::locate`] only when
//! reported. Errors stop the contract from loading; warnings (what meshgate
//! ignores, a product with no routes or no SLA) are returned beside the
//! product ([`Contract::warnings`]).

pub mod charset;
mod conformance;
mod fields;
mod flight;
mod grpc;
mod keys;
mod sections;
mod twice;

use std::fmt;
use std::time::Duration;

use http::Method;
use serde::Deserialize;

use crate::base::locate::{locate_all, Step};
use crate::decision::finding::{first_reported, Finding};
use crate::decision::lifecycle::Lifecycle;

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
    /// Whether the caller sees a field of an allowed response: decided by
    /// the field plan, never named by a route.
    #[serde(skip_deserializing)]
    ReadField,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Query,
        Action::Describe,
        Action::Subscribe,
        Action::Write,
        Action::ReadField,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Query => "query",
            Action::Describe => "describe",
            Action::Subscribe => "subscribe",
            Action::Write => "write",
            Action::ReadField => "read_field",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// An action a route may name: `read_field` is never one (it is decided
/// only by the field plan, on the fields of an allowed response).
impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .filter(|a| *a != Action::ReadField)
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
    /// Where the contract declares it: the node (located only to report an
    /// error found when the contracts are put together) and the field that
    /// names it (`customProperties.meshgateRoutes[2].path`).
    pub at: Vec<Step>,
    pub field: String,
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
    /// `dataProduct`, when set (not empty): the product the contract is a
    /// version of.
    pub data_product: Option<String>,
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
    /// The one method-override header its server honours
    /// (`meshgateAllowOverride.methodHeader`): on a `POST`, the method it
    /// names is routed and decided, and forwarded in it.
    pub method_override: Option<http::HeaderName>,
    /// The declared fields of its datasets (`schema[].properties`).
    pub fields: Vec<crate::decision::fields::DatasetFields>,
    /// `meshgateUndeclared`, when the contract sets it.
    pub undeclared: Option<crate::decision::fields::Undeclared>,
    /// `meshgateConformance`: what the contract sets of how its responses
    /// are checked (over the mesh's `conformance`).
    pub conformance: crate::decision::fields::ConformanceSettings,
}

/// A contract as read: its product, and what is doubtful in it.
#[derive(Debug, Clone)]
pub struct Contract {
    pub product: Product,
    /// Keys and properties meshgate ignores, a product with no routes or
    /// no SLA: each where it is.
    pub warnings: Vec<Finding>,
}

/// Every error found in one contract, each at its position, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractErrors(pub Vec<Finding>);

impl fmt::Display for ContractErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ContractErrors {}

/// Parses one contract; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Product, ContractErrors> {
    read(text, file).map(|c| c.product)
}

/// Parses one contract, reporting every error (each section is read even
/// when another has failed, each route even when another is wrong) and
/// every warning, each at its `line:col`.
pub fn read(text: &str, file: &str) -> Result<Contract, ContractErrors> {
    let mut r = Reader::new(text, file);
    let product = sections::product(&mut r);
    let (errors, warnings) = r.finish();
    match product {
        Some(product) if errors.is_empty() => Ok(Contract { product, warnings }),
        _ => Err(ContractErrors(errors)),
    }
}

/// Where a finding is: a node of the document, or a position the parser gave.
enum Place {
    Node(Vec<Step>),
    At(usize, usize),
}

struct Pending {
    place: Place,
    field: String,
    message: String,
}

/// Reads one contract's values and collects what is wrong with them, with
/// the path of each node; the nodes are located once, at the end.
pub(super) struct Reader<'a> {
    text: &'a str,
    file: &'a str,
    errors: Vec<Pending>,
    warnings: Vec<Pending>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, file: &'a str) -> Reader<'a> {
        Reader {
            text,
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn error(
        &mut self,
        path: Vec<Step>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(Pending {
            place: Place::Node(path),
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn error_at(&mut self, line: usize, column: usize, field: String, message: String) {
        self.errors.push(Pending {
            place: Place::At(line, column),
            field,
            message,
        });
    }

    pub(super) fn warn(
        &mut self,
        path: Vec<Step>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.warnings.push(Pending {
            place: Place::Node(path),
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn text(&self) -> &'a str {
        self.text
    }

    pub(super) fn file(&self) -> &'a str {
        self.file
    }

    /// Deserializes `v` (the node at `path`, shown as `field`); a mistake is
    /// an error at the node inside it that is wrong.
    pub(super) fn value<T: serde::de::DeserializeOwned>(
        &mut self,
        v: &serde_yaml_ng::Value,
        path: &[Step],
        field: &str,
    ) -> Option<T> {
        match serde_path_to_error::deserialize(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut steps = path.to_vec();
                let mut shown = field.to_string();
                for seg in e.path().iter() {
                    match seg {
                        serde_path_to_error::Segment::Seq { index } => {
                            steps.push(Step::Index(*index));
                            shown.push_str(&format!("[{index}]"));
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            steps.push(Step::Key(key.clone()));
                            shown.push_str(&format!(".{}", key.escape_debug()));
                        }
                        _ => {}
                    }
                }
                self.error(steps, shown, e.into_inner().to_string());
                None
            }
        }
    }

    /// The errors and the warnings, located in one read of the document,
    /// each in file order, each at most [`REPORTED`] (then how many more).
    fn finish(self) -> (Vec<Finding>, Vec<Finding>) {
        let nodes: Vec<&[Step]> = (self.errors.iter().chain(&self.warnings))
            .filter_map(|p| match &p.place {
                Place::Node(path) => Some(path.as_slice()),
                Place::At(..) => None,
            })
            .collect();
        let mut located = locate_all(self.text, &nodes).into_iter();
        let file = self.file;
        let mut finding = |p: Pending| Finding {
            file: file.to_string(),
            at: match p.place {
                Place::Node(_) => located.next().flatten(),
                Place::At(l, c) => Some((l, c)),
            },
            field: p.field,
            message: p.message,
            stands_for: 1,
        };
        let errors: Vec<Finding> = self.errors.into_iter().map(&mut finding).collect();
        let warnings: Vec<Finding> = self.warnings.into_iter().map(&mut finding).collect();
        (
            first_reported(errors, file, "error", REPORTED),
            first_reported(warnings, file, "warning", REPORTED),
        )
    }
}

/// Errors, and warnings, reported per contract at most: a contract of
/// 50,000 ignored properties made 50,000 lines.
pub const REPORTED: usize = 50;

#[cfg(test)]
mod strict_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;
