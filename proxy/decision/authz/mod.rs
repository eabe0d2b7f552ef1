//! Cedar authorization: the policy snapshot (schema, policies, entities,
//! products, routes) and the per-request decision.
//!
//! A snapshot is immutable and built whole: every file is parsed and validated
//! in strict mode against the schema, or the snapshot is not built at all.
//! Policies are named by their `@id("…")` annotation, which must be unique
//! across all sources; that name is what decisions, audit and tests report.
//!
//! Decisions evaluate only candidate policies: at build time every policy is
//! filed under the (resource, action) pairs its scope can match, so the cost of
//! a decision does not grow with policies that cannot apply. For each caller,
//! resource and action the candidates are specialised once per thread: their
//! scopes are known to hold, so they are evaluated without them, and those
//! whose conditions never read `context` are decided once and remembered; a
//! request then evaluates only the conditions that depend on it.

mod authority;
mod build;
mod cache;
mod catalogue;
mod claims;
mod context;
mod decide;
mod declared;
mod depth;
mod entities;
pub mod examples;
mod fields;
mod index;
mod inputs;
mod literals;
mod parse;
mod plan;
mod seen;
mod stray;
#[doc(hidden)]
pub mod synth;

use build::*;
use cache::*;
use context::*;
pub use depth::DECIDING_STACK;
use depth::{joined, on_build_thread, spawn_build};
use entities::*;
use index::*;
pub use inputs::*;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{Authorizer, Entities, EntityTypeName, EntityUid, PolicySet, Schema};

use crate::decision::contract::Action;
use crate::decision::describe::Described;
use crate::decision::routes::RouteTable;
use crate::model::path::NormalPath;

/// How many actions there are: the candidate index keeps one list per action.
const ACTIONS: usize = Action::ALL.len();

/// The caller's side of a decision, cached per thread.
#[derive(Clone)]
struct DecisionEntities {
    principal: EntityUid,
    entities: Arc<Entities>,
    /// The caller and all its ancestors.
    principal_in: Arc<HashSet<EntityUid>>,
}

/// What `Snapshot::assemble` builds besides the policies.
struct Parts {
    /// The domains, teams, groups and services entities.json declares.
    declared: declared::Declared,
    /// What the contracts and entities.json hold that meshgate ignores.
    warnings: Vec<crate::decision::finding::Finding>,
    /// (uid, kind, ancestors) of every resource, in index order.
    registry: Vec<(EntityUid, usize, Arc<HashSet<EntityUid>>)>,
    types: [EntityTypeName; KINDS],
    products: Vec<ProductEntry>,
    routes: RouteTable,
    service_parents: HashMap<String, HashSet<EntityUid>>,
    namespace_parents: HashMap<String, HashSet<EntityUid>>,
    group_parents: HashMap<String, HashSet<EntityUid>>,
    action_uids: [EntityUid; ACTIONS],
    service_type: EntityTypeName,
    described: Described,
}

/// A policy set with its candidate index. The enforced set and the shadow set
/// are each one of these, and each decides a request the same way
/// ([`IndexedPolicies::decide`]).
struct IndexedPolicies {
    set: PolicySet,
    index: Index,
    /// Policies in `set`, static and linked.
    count: usize,
    /// Which per-thread candidate slot it fills: `ENFORCED` or `SHADOW`.
    slot: usize,
}

/// The per-thread candidate slots of the enforced and the shadow set.
const ENFORCED: usize = 0;
const SHADOW: usize = 1;
const SLOTS: usize = 2;

impl IndexedPolicies {
    fn new(set: PolicySet, index: Index, slot: usize) -> IndexedPolicies {
        IndexedPolicies {
            count: set.policies().count(),
            set,
            index,
            slot,
        }
    }
}

/// One immutable, validated policy snapshot.
pub struct Snapshot {
    pub version: Arc<str>,
    /// Unique per built snapshot (keys the per-thread caches).
    serial: u64,
    pub loaded_at: SystemTime,
    schema: Schema,
    /// The policies decisions enforce.
    enforced: IndexedPolicies,
    /// The policies decided beside them and never enforced, if configured.
    shadow: Option<IndexedPolicies>,
    products: Vec<ProductEntry>,
    routes: RouteTable,
    /// The products and contracts as the well-known documents show them.
    described: Described,
    /// Transitive static parents of services named in entities.json.
    service_parents: HashMap<String, HashSet<EntityUid>>,
    /// Namespace -> its domain and the domain's ancestors.
    namespace_parents: HashMap<String, HashSet<EntityUid>>,
    /// Transitive static parents of groups named in entities.json.
    group_parents: HashMap<String, HashSet<EntityUid>>,
    action_uids: [EntityUid; ACTIONS],
    authorizer: Authorizer,
    service_type: EntityTypeName,
    /// What was doubtful in the inputs (see [`Snapshot::warnings`]).
    warnings: Vec<crate::decision::finding::Finding>,
}

impl Snapshot {
    /// What was doubtful in the inputs, each where it is: keys and custom
    /// properties meshgate ignores, a product with no routes or no SLA,
    /// domains, teams and groups named but not declared.
    pub fn warnings(&self) -> &[crate::decision::finding::Finding] {
        &self.warnings
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("policy_count", &self.policy_count())
            .field("products", &self.products.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `@id`s of the determining policies.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy that errors does not apply).
    pub errors: Vec<String>,
}

impl Decision {
    /// A deny that no policy made: the request could not be built.
    fn denied(error: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error.into()],
        }
    }

    /// Policy ids and errors sorted, so that decisions compare and print stably.
    fn from_response(resp: &cedar_policy::Response) -> Decision {
        let mut policies: Vec<String> = resp
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort_unstable();
        let mut errors: Vec<String> = resp.diagnostics().errors().map(|e| e.to_string()).collect();
        errors.sort_unstable();
        Decision {
            allowed: resp.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        }
    }
}

/// A request as a decision reads it besides the caller and the route: what
/// [`Snapshot::decide_routed`] makes of [`HttpFacts`] (the decoded path, the
/// one valid declared purpose, the end user if the route takes one). The
/// Cedar context is made of it, and the user's entity with a user.
#[derive(Debug, Clone)]
pub struct ParsedRequest<'a> {
    pub method: &'a str,
    /// The normalised, decoded path.
    pub path: &'a str,
    pub source_ip: IpAddr,
    pub purpose: Option<&'a str>,
    pub tls_version: &'a str,
    pub time: SystemTime,
    /// The verified end user the calling service acts for, if any.
    pub user: Option<&'a crate::decision::jwt::User>,
}

/// What authorization decided for a request; attached to the request (as an
/// extension) for later layers and the audit record.
#[derive(Debug, Clone)]
pub struct AuthzOutcome {
    pub product: Arc<str>,
    pub action: Action,
    /// `DataProduct` or `Dataset` id.
    pub resource: Arc<str>,
    pub decision: Decision,
    pub shadow: Option<Decision>,
    pub policy_version: Arc<str>,
    /// The product contract's SLA throughput, requests per second.
    pub throughput: Option<f64>,
    /// The product contract's SLA latency.
    pub latency: Option<std::time::Duration>,
    /// What of the response the caller sees, when the request is allowed
    /// and its dataset declares fields.
    pub fields: Option<Arc<crate::decision::fields::FieldPlan>>,
}

/// An HTTP request as authorization sees it.
#[derive(Debug)]
pub struct HttpFacts<'a> {
    pub method: &'a http::Method,
    pub path: &'a NormalPath,
    pub headers: &'a http::HeaderMap,
    pub source_ip: IpAddr,
    pub tls_version: &'a str,
    pub time: SystemTime,
    /// The verified end user (see [`Snapshot::route`]); ignored on
    /// routes that take no token.
    pub user: Option<&'a crate::decision::jwt::User>,
}

/// Header that declares the purpose of a request (`context.purpose`).
pub const X_DATA_PURPOSE: &str = "x-data-purpose";

/// Why a request could not be decided; the pipeline chooses its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no route for this path")]
    NoRoute,
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("the route requires an end-user token and none was given")]
    UserTokenMissing,
    #[error("more than one x-data-purpose (two headers, or a list in one)")]
    DuplicatePurpose,
    #[error("x-data-purpose is empty or not one token (letters, digits and !#$%&'*+-.^_`|~)")]
    InvalidPurpose,
    #[error("x-data-purpose is named in Connection, which would keep it from the upstream")]
    HopByHopPurpose,
}

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod depth_probe;
#[cfg(test)]
mod tests;
