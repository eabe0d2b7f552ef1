//! Deciding a request: candidates, context, Cedar's evaluation, with the
//! shadow set beside; routing an HTTP request onto a target first.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use cedar_policy::{Entities, PolicySet, PrincipalConstraint, Request};

use crate::decision::contract::UserToken;
use crate::decision::routes::Lookup;
use crate::decision::routes::Target;
use crate::model::identity::Principal;
use crate::model::path::NormalPath;

use super::*;

/// One request as each policy set is asked it: built once, then decided by
/// the enforced set and, beside it, the shadow set.
pub(super) struct Question<'a> {
    /// The caller's header form (keys the per-thread caches).
    pub(super) name: &'a str,
    pub(super) resource: &'a Resource,
    /// `Action::index` of the route's action.
    pub(super) action: usize,
    pub(super) who: &'a DecisionEntities,
    pub(super) request: &'a LazyRequest<'a>,
    /// The caller's entities, with the end user if there is one.
    pub(super) entities: &'a Entities,
    pub(super) parsed: &'a ParsedRequest<'a>,
}

impl IndexedPolicies {
    /// Decides `q` with these policies.
    pub(super) fn decide(&self, snapshot: &Snapshot, q: &Question<'_>) -> Decision {
        match self.candidate_set(snapshot, q) {
            Ok(found) => found.decide(&snapshot.authorizer, q.request, q.entities, q.parsed),
            Err(e) => Decision::denied(e),
        }
    }

    /// The specialised candidates for a caller, resource and action: the
    /// index's candidates whose principal scope can match this caller. Built
    /// once per thread for each (snapshot, caller, resource, action); the
    /// context-free ones are decided with this request, which is valid for
    /// every request with the same key.
    fn candidate_set(
        &self,
        snapshot: &Snapshot,
        q: &Question<'_>,
    ) -> Result<Rc<Candidates>, String> {
        let (name, resource, action, who) = (q.name, q.resource, q.action, q.who);
        let key = (snapshot.serial, resource.index);
        let cache = decisions_of(resource.kind);
        let cached = cache.with(|c| {
            c.borrow()
                .get(name, key)
                .and_then(|e| e.candidates[self.slot][action].clone())
        });
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let index = &self.index;
        let mut found = Candidates::default();
        let mut free = [PolicySet::new(), PolicySet::new()];
        // condition -> the id naming its test
        let mut tests: HashMap<&str, String> = HashMap::new();
        // the tests' extension literals, by key
        let mut literals: Vec<(String, cedar_policy_core::ast::Value)> = Vec::new();
        for pos in index.candidates(resource.index, resource.kind, action) {
            let Some(p) = index.policies.get(pos) else {
                continue;
            };
            let admits = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => u == who.principal,
                PrincipalConstraint::In(u) => who.principal_in.contains(&u),
                PrincipalConstraint::Is(t) => t == snapshot.service_type,
                PrincipalConstraint::IsIn(t, u) => {
                    t == snapshot.service_type && who.principal_in.contains(&u)
                }
            };
            if !admits {
                continue;
            }
            let special = index
                .specialized
                .get(pos)
                .and_then(|cell| cell.get_or_init(|| Specialized::of(p)).as_ref());
            let Some(sp) = special else {
                // Not specialised: evaluated as written, on every request
                // (a linked policy's template is in this set).
                add_policy(&mut found.residual, p, &self.set);
                found.untestable = true;
                continue;
            };
            if !sp.reads_context {
                let _ = free[usize::from(sp.forbid)].add(sp.policy.clone());
                continue;
            }
            let _ = found.residual.add(sp.policy.clone());
            let id = AsRef::<str>::as_ref(sp.policy.id()).to_owned();
            let test = tests.entry(sp.conditions.as_str()).or_insert_with(|| {
                literals.extend(sp.literals.iter().cloned());
                let at = match found.parts.iter().position(|p| p.reads == sp.reads) {
                    Some(at) => at,
                    None => {
                        found.parts.push(Part {
                            reads: sp.reads,
                            tests: PolicySet::new(),
                            seen: Default::default(),
                        });
                        found.parts.len() - 1
                    }
                };
                let _ = found.parts[at].tests.add(sp.test.clone());
                id.clone()
            });
            found
                .members
                .entry(test.clone())
                .or_default()
                .push((sp.forbid, id));
        }
        if !literals.is_empty() {
            found.literals = Some(cedar_policy_core::ast::Value::record(literals, None));
        }
        // One evaluation per effect, so that each names all its satisfied policies.
        let [permit_set, forbid_set] = free;
        for (set, into_forbids) in [(permit_set, false), (forbid_set, true)] {
            if set.is_empty() {
                continue;
            }
            let resp = snapshot
                .authorizer
                .is_authorized(q.request.get()?, &set, &who.entities);
            let reasons = resp
                .diagnostics()
                .reason()
                .map(|id| AsRef::<str>::as_ref(id).to_owned());
            if into_forbids {
                found.forbids.extend(reasons);
            } else {
                found.permits.extend(reasons);
            }
            found
                .errors
                .extend(resp.diagnostics().errors().map(|e| e.to_string()));
        }
        let found = Rc::new(found);
        cache.with(|c| {
            if let Some(e) = c.borrow_mut().get_mut(name, key) {
                e.candidates[self.slot][action] = Some(found.clone());
            }
        });
        Ok(found)
    }
}

/// The Cedar request of a decision, made when an evaluation needs it: a
/// decision whose outcomes are all remembered makes none (the context and
/// the request were 1,400 of the 3,800 instructions of a decision at 100
/// policies, callgrind, 2026-12-04).
pub(super) struct LazyRequest<'a> {
    principal: &'a EntityUid,
    action: &'a EntityUid,
    resource: &'a EntityUid,
    parsed: &'a ParsedRequest<'a>,
    made: std::cell::OnceCell<Result<Request, String>>,
}

impl LazyRequest<'_> {
    /// The request, made on first use.
    pub(super) fn get(&self) -> Result<&Request, String> {
        self.made
            .get_or_init(|| {
                Request::new(
                    self.principal.clone(),
                    self.action.clone(),
                    self.resource.clone(),
                    cached_context(self.parsed)?,
                    None,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Another request, whose context has `value` as attribute `name`
    /// beside the request's own.
    pub(super) fn with_attribute(
        &self,
        name: &str,
        value: cedar_policy_core::ast::Value,
    ) -> Result<Request, String> {
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            Snapshot::context_with(self.parsed, Some((name, value)))?,
            None,
        )
        .map_err(|e| e.to_string())
    }
}

impl Snapshot {
    /// Decides one request. Anything that goes wrong building it denies.
    pub fn authorize_with_shadow(
        &self,
        principal: &Principal,
        target: &Target,
        parsed: &ParsedRequest<'_>,
    ) -> (Decision, Option<Decision>) {
        self.decide(principal, target, parsed, true)
    }

    /// Decides one request with the enforced set only.
    pub fn authorize(
        &self,
        principal: &Principal,
        target: &Target,
        parsed: &ParsedRequest<'_>,
    ) -> Decision {
        self.decide(principal, target, parsed, false).0
    }

    /// Decides with the enforced policies and, when asked and configured, the
    /// shadow policies, building the Cedar request and entities once.
    pub(super) fn decide(
        &self,
        principal: &Principal,
        target: &Target,
        parsed: &ParsedRequest<'_>,
        with_shadow: bool,
    ) -> (Decision, Option<Decision>) {
        let Some(resource) = self.resource(target) else {
            let d = Decision::denied("route names an unknown product");
            let shadow = (with_shadow && self.shadow.is_some()).then(|| d.clone());
            return (d, shadow);
        };
        let name = principal.header_form();
        let action = target.action.index();
        self.decide_resource(principal, &name, resource, action, parsed, with_shadow)
    }

    /// Decides `action` on one resource (a route's, or a field of a
    /// plan) for `principal` (whose header form is `name`).
    pub(super) fn decide_resource(
        &self,
        principal: &Principal,
        name: &str,
        resource: &Resource,
        action: usize,
        parsed: &ParsedRequest<'_>,
        with_shadow: bool,
    ) -> (Decision, Option<Decision>) {
        let shadow = self.shadow.as_ref().filter(|_| with_shadow);
        let deny = |e: String| {
            let d = Decision::denied(e);
            (d.clone(), shadow.map(|_| d))
        };
        let who = match self.entities_for(principal, name, resource) {
            Ok(x) => x,
            Err(e) => return deny(e),
        };
        // The request is made only if an evaluation needs it; whether its
        // context can be made is known now, so that a request that cannot
        // be made denies whatever is remembered.
        if let Err(e) = context_can_be_made(parsed) {
            return deny(e);
        }
        let request = LazyRequest {
            principal: &who.principal,
            action: &self.action_uids[action],
            resource: &resource.uid,
            parsed,
            made: std::cell::OnceCell::new(),
        };
        // A user joins the cached entities for this request only. Context-free
        // policies cannot see it (a policy naming a user is context-dependent).
        let with_user;
        let entities: &Entities = match parsed.user {
            None => &who.entities,
            Some(u) => {
                let added = self.user_entity(u).and_then(|e| {
                    (*who.entities)
                        .clone()
                        .add_entities([e], None)
                        .map_err(|e| e.to_string())
                });
                match added {
                    Ok(e) => {
                        with_user = e;
                        &with_user
                    }
                    Err(e) => return deny(e),
                }
            }
        };
        let q = Question {
            name,
            resource,
            action,
            who: &who,
            request: &request,
            entities,
            parsed,
        };
        (
            self.enforced.decide(self, &q),
            shadow.map(|s| s.decide(self, &q)),
        )
    }

    /// A Cedar request with its own entities, against the whole policy set
    /// (Cedar's `run-tests` semantics).
    pub fn authorize_request(&self, request: &Request, entities: &Entities) -> Decision {
        Decision::from_response(&self.authorizer.is_authorized(
            request,
            &self.enforced.set,
            entities,
        ))
    }

    /// The same decision with the plain `Authorizer` over every policy; the
    /// reference the candidate index is tested against.
    pub fn authorize_unindexed(
        &self,
        principal: &Principal,
        target: &Target,
        parsed: &ParsedRequest<'_>,
    ) -> Decision {
        let Some(resource) = self.resource(target) else {
            return Decision::denied("unknown product");
        };
        let (Ok(principal_entity), Ok(context)) = (
            self.principal_entity(principal),
            Self::cedar_context(parsed),
        ) else {
            return Decision::denied("request");
        };
        let principal_uid = principal_entity.uid();
        let mut ents = vec![principal_entity];
        ents.extend(resource.entities().cloned());
        if let Some(u) = parsed.user {
            match self.user_entity(u) {
                Ok(e) => ents.push(e),
                Err(e) => return Decision::denied(e),
            }
        }
        let (Ok(entities), Ok(request)) = (
            Entities::from_entities(ents, None),
            Request::new(
                principal_uid,
                self.action_uids[target.action.index()].clone(),
                resource.uid.clone(),
                context,
                Some(&self.schema),
            ),
        ) else {
            return Decision::denied("request");
        };
        let resp = self
            .authorizer
            .is_authorized(&request, &self.enforced.set, &entities);
        Decision::from_response(&resp)
    }
}

impl Snapshot {
    /// The route of a request: what it names (product, action, dataset)
    /// and whether it takes an end-user token. The proxy routes once and
    /// decides with the same snapshot ([`Snapshot::decide_routed`]).
    pub fn route(&self, method: &http::Method, path: &NormalPath) -> Result<&Target, DecideError> {
        match self.routes.lookup(method, path) {
            Lookup::Found(t) => Ok(t),
            Lookup::MethodNotAllowed => Err(DecideError::MethodNotAllowed),
            Lookup::NotFound => Err(DecideError::NoRoute),
        }
    }

    /// Routes an HTTP request and decides it: the one path shared by the proxy,
    /// `meshgate authorize` and `meshgate test`.
    pub fn decide_http(
        &self,
        principal: &Principal,
        req: &HttpFacts<'_>,
    ) -> Result<AuthzOutcome, DecideError> {
        let target = self.route(req.method, req.path)?;
        self.decide_routed(principal, target, req)
    }

    /// Decides a request already routed (by [`Snapshot::route`] of this
    /// snapshot) to `target`.
    pub fn decide_routed(
        &self,
        principal: &Principal,
        target: &Target,
        req: &HttpFacts<'_>,
    ) -> Result<AuthzOutcome, DecideError> {
        let user = match target.user_token {
            UserToken::None => None,
            UserToken::Optional => req.user,
            UserToken::Required => Some(req.user.ok_or(DecideError::UserTokenMissing)?),
        };
        let purpose = declared_purpose(req.headers)?;
        let decoded = req.path.decoded();
        let parsed = ParsedRequest {
            method: req.method.as_str(),
            path: &decoded,
            source_ip: req.source_ip,
            purpose,
            tls_version: req.tls_version,
            time: req.time,
            user,
        };
        let (decision, shadow) = self.authorize_with_shadow(principal, target, &parsed);
        // What of the response the caller sees: only an allowed request has
        // one, and not a `describe`, whose answer is about the data (a
        // schema, a listing), not records of it.
        let fields = if decision.allowed && target.action != Action::Describe {
            self.field_plan(principal, target, &parsed)
        } else {
            None
        };
        let (product, resource, sla) = match self.products.get(target.product) {
            Some(entry) => (
                entry.resource.id.clone(),
                self.resource(target)
                    .map(|r| r.id.clone())
                    .unwrap_or_else(|| entry.resource.id.clone()),
                (entry.product.sla.throughput, entry.product.sla.latency),
            ),
            None => (Arc::from(""), Arc::from(""), (None, None)),
        };
        Ok(AuthzOutcome {
            product,
            action: target.action,
            resource,
            decision,
            shadow,
            policy_version: self.version.clone(),
            throughput: sla.0,
            latency: sla.1,
            fields,
        })
    }
}

/// The one declared purpose of a request, if any. With two (two fields, or
/// a list in one: RFC 9110 5.3 makes them the same), policy would see the
/// first and the upstream both, a conflict between what was authorised and
/// what is served, so they are refused; so is a purpose that is not one
/// token, and one that `Connection` names, which the way to the upstream
/// removes (HTTP/1.1's hop-by-hop fields): the upstream would serve with
/// no purpose what was decided with one.
pub(crate) fn declared_purpose(headers: &http::HeaderMap) -> Result<Option<&str>, DecideError> {
    let mut purposes = headers.get_all(X_DATA_PURPOSE).iter();
    let v = match (purposes.next(), purposes.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => return Err(DecideError::DuplicatePurpose),
        (Some(v), None) => v,
    };
    // (RFC 9110 5.6.1 ignores a list's empty elements: `reporting,` is
    // one purpose written wrongly, not two.)
    let listed = v.as_bytes().split(|&b| b == b',');
    if listed.filter(|e| !e.trim_ascii().is_empty()).count() > 1 {
        return Err(DecideError::DuplicatePurpose);
    }
    let purpose = v
        .to_str()
        .ok()
        .filter(|s| crate::decision::contract::charset::is_token(s))
        .ok_or(DecideError::InvalidPurpose)?;
    let hop_by_hop = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|n| {
            n.trim_ascii()
                .eq_ignore_ascii_case(X_DATA_PURPOSE.as_bytes())
        });
    if hop_by_hop {
        return Err(DecideError::HopByHopPurpose);
    }
    Ok(Some(purpose))
}

#[cfg(test)]
mod purpose_tests {
    use super::*;

    fn purpose_of(fields: &[(&'static str, &'static str)]) -> Result<Option<String>, DecideError> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, http::HeaderValue::from_static(value));
        }
        declared_purpose(&headers).map(|p| p.map(str::to_string))
    }

    #[test]
    fn a_purpose_is_one_token_that_reaches_the_upstream() {
        assert_eq!(purpose_of(&[]), Ok(None));
        assert_eq!(
            purpose_of(&[("x-data-purpose", "fraud-investigation")]),
            Ok(Some("fraud-investigation".into()))
        );
        // Another field may be named in Connection.
        assert_eq!(
            purpose_of(&[
                ("x-data-purpose", "reporting"),
                ("connection", "keep-alive, x-other")
            ]),
            Ok(Some("reporting".into()))
        );
        // A list in one field means what two fields do.
        for list in [
            "reporting,fraud-investigation",
            "reporting, marketing",
            ",a,,b",
        ] {
            assert_eq!(
                purpose_of(&[("x-data-purpose", list)]),
                Err(DecideError::DuplicatePurpose),
                "{list}"
            );
        }
        for bad in [
            "fraud investigation",
            "a/b",
            "\"reporting\"",
            "",
            "a;b=c",
            "reporting,",
            ",",
        ] {
            assert_eq!(
                purpose_of(&[("x-data-purpose", bad)]),
                Err(DecideError::InvalidPurpose),
                "{bad:?}"
            );
        }
        for connection in [
            "x-data-purpose",
            "keep-alive, X-Data-Purpose ",
            "close,x-data-purpose",
        ] {
            assert_eq!(
                purpose_of(&[("x-data-purpose", "reporting"), ("connection", connection)]),
                Err(DecideError::HopByHopPurpose),
                "{connection}"
            );
        }
    }
}
