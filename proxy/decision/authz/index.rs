//! The candidate index: policies filed by the (resource, action) pairs their
//! scope can match, specialised per caller and remembered per thread.

use std::collections::HashMap;

use cedar_policy::{Authorizer, Entities, Policy, PolicySet, Request};

use super::decide::LazyRequest;
use super::literals::LITERALS;

use super::*;

/// A policy whose scope is known to hold, as Cedar evaluates it: the same id,
/// effect and conditions over `(principal, action, resource)`.
#[derive(Debug)]
pub(super) struct Specialized {
    pub(super) policy: Policy,
    pub(super) forbid: bool,
    /// Whether any condition reads `context`; if not, the policy's outcome
    /// for a given caller, resource and action is the same for every request.
    pub(super) reads_context: bool,
    /// For a policy that reads the context: the few-valued context
    /// attributes it reads (bits of `FEW_VALUED`), or `None` if it reads
    /// anything else of the request (the path, the source address, the
    /// user, the context as a whole).
    pub(super) reads: Option<u8>,
    /// The conditions in Cedar's JSON form: policies with equal conditions
    /// hold or fail together.
    pub(super) conditions: String,
    /// The same conditions as a `permit` with the same id: evaluated, Cedar
    /// names it if and only if the conditions hold. When `reads` is `Some`,
    /// its extension literals are looked up in the context instead
    /// (see `literals.rs`).
    pub(super) test: Policy,
    /// The values the test looks up: (key in `LITERALS`, value).
    pub(super) literals: Vec<(String, cedar_policy_core::ast::Value)>,
}

impl Specialized {
    /// Through Cedar's JSON form (EST): the scope replaced by `All`, the
    /// conditions kept as they are. `None` if Cedar refuses either step; the
    /// original policy is then evaluated as it is.
    pub(super) fn of(p: &Policy) -> Option<Specialized> {
        let mut est = p.to_json().ok()?;
        let conditions = est.get("conditions")?;
        // The walks below recurse once per level: none goes deeper than this.
        if deeper_than(conditions, MAX_EST_DEPTH) {
            return None;
        }
        let reads_context = mentions_context(conditions) || mentions_user(conditions);
        let mut mask = 0;
        let reads =
            (!mentions_user(conditions) && context_reads(conditions, &mut mask)).then_some(mask);
        let conditions = conditions.to_string();
        let obj = est.as_object_mut()?;
        for part in ["principal", "action", "resource"] {
            obj.insert(part.into(), serde_json::json!({ "op": "All" }));
        }
        let forbid = p.effect() == cedar_policy::Effect::Forbid;
        let mut test = est.clone();
        let test_obj = test.as_object_mut()?;
        test_obj.insert("effect".into(), "permit".into());
        let mut literals = Vec::new();
        if reads.is_some() {
            if let Some(c) = test_obj.get_mut("conditions") {
                super::literals::hoist(c, &mut literals);
            }
        }
        let test = Policy::from_json(Some(p.id().clone()), test).ok()?;
        let policy = Policy::from_json(Some(p.id().clone()), est).ok()?;
        Some(Specialized {
            policy,
            forbid,
            reads_context,
            reads,
            conditions,
            test,
            literals,
        })
    }
}

/// The deepest EST (in JSON levels) a policy is specialised with. A policy
/// within the bounds of `depth.rs` is at most about 2 × (32 + 1,000) deep
/// (an operator is two levels: `{"||": {"left": …}}`); a deeper one, which
/// those bounds do not let through, would be evaluated as it is.
pub(super) const MAX_EST_DEPTH: usize = 4_096;

/// Whether `v` is more than `max` levels deep; without recursion.
pub(super) fn deeper_than(v: &serde_json::Value, max: usize) -> bool {
    use serde_json::Value;
    let mut open = vec![(v, 1usize)];
    while let Some((v, depth)) = open.pop() {
        if depth > max {
            return true;
        }
        match v {
            Value::Object(m) => open.extend(m.values().map(|c| (c, depth + 1))),
            Value::Array(items) => open.extend(items.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    false
}

/// Whether an EST expression names a `Mesh::User` entity: users join a
/// decision's entities per request, so such a policy is decided per request.
pub(super) fn mentions_user(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "type" && v.as_str() == Some("Mesh::User")) || mentions_user(v)),
        serde_json::Value::Array(items) => items.iter().any(mentions_user),
        _ => false,
    }
}

/// The context attributes with few distinct values (and so few outcomes per
/// caller, resource and action for a condition that reads only them), as
/// bits: `1 << position`.
pub(super) const FEW_VALUED: [&str; 5] = ["method", "time", "purpose", "tls", "has_user"];
pub(super) const READS_METHOD: u8 = 1;
pub(super) const READS_TIME: u8 = 1 << 1;
pub(super) const READS_PURPOSE: u8 = 1 << 2;
pub(super) const READS_TLS: u8 = 1 << 3;
pub(super) const READS_HAS_USER: u8 = 1 << 4;

/// Adds to `mask` the `FEW_VALUED` attributes an EST expression reads as
/// `context.<attr>` or `context has <attr>`; false if it reads the context in
/// any other way (another attribute, or the record as a whole).
pub(super) fn context_reads(v: &serde_json::Value, mask: &mut u8) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| {
            let attr_of_context = (k == "." || k == "has")
                .then(|| v.as_object())
                .flatten()
                .filter(|inner| {
                    inner
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context")
                })
                .map(|inner| inner.get("attr").and_then(Value::as_str));
            match attr_of_context {
                Some(attr) => match FEW_VALUED.iter().position(|a| Some(*a) == attr) {
                    Some(bit) => {
                        *mask |= 1 << bit;
                        true
                    }
                    None => false,
                },
                None => !(k == "Var" && v.as_str() == Some("context")) && context_reads(v, mask),
            }
        }),
        Value::Array(items) => items.iter().all(|v| context_reads(v, mask)),
        _ => true,
    }
}

/// Whether an EST expression contains the variable `context` anywhere.
pub(super) fn mentions_context(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "Var" && v.as_str() == Some("context")) || mentions_context(v)),
        serde_json::Value::Array(items) => items.iter().any(mentions_context),
        _ => false,
    }
}

/// The candidates for one caller, resource and action, specialised: the
/// outcome of the policies that do not read the context, decided once, and
/// the distinct conditions of those that do, tested per request (or
/// remembered per value of the few-valued context attributes they read).
#[derive(Debug, Default)]
pub(super) struct Candidates {
    /// Satisfied context-free `forbid`s and `permit`s, and their errors.
    pub(super) forbids: Vec<String>,
    pub(super) permits: Vec<String>,
    pub(super) errors: Vec<String>,
    /// One `permit` per distinct context-reading condition, in parts by what
    /// the conditions read...
    pub(super) parts: Vec<Part>,
    /// ...named by one of its policies, with every policy that has it:
    /// (is a `forbid`, id).
    pub(super) members: HashMap<String, Vec<(bool, String)>>,
    /// The context-reading policies themselves: evaluated when a test errors,
    /// so that each error names its own policy, or instead of the tests when
    /// a policy could not be specialised.
    pub(super) residual: PolicySet,
    pub(super) untestable: bool,
    /// The extension literals the tests look up (a record, the value of
    /// the `LITERALS` attribute), if any.
    pub(super) literals: Option<cedar_policy_core::ast::Value>,
}

/// The tests whose conditions read the same context attributes.
#[derive(Debug)]
pub(super) struct Part {
    /// What they read (bits of `FEW_VALUED`); `None`: something with many
    /// values, so they are evaluated on every request.
    pub(super) reads: Option<u8>,
    pub(super) tests: PolicySet,
    /// Outcomes by the values read: the satisfied tests, `None` if the
    /// evaluation had errors. The candidates live in a per-thread cache,
    /// hence the `RefCell`.
    pub(super) seen: std::cell::RefCell<Vec<(Seen, Option<Vec<String>>)>>,
}

/// The values of the few-valued context attributes of one request.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) method: Box<str>,
    pub(super) second: u64,
    pub(super) purpose: Option<Box<str>>,
    pub(super) tls: Box<str>,
    pub(super) has_user: bool,
}

impl Seen {
    pub(super) fn of(parsed: &ParsedRequest<'_>) -> Seen {
        Seen {
            method: parsed.method.into(),
            second: policy_second(parsed.time),
            purpose: parsed.purpose.map(Into::into),
            tls: parsed.tls_version.into(),
            has_user: parsed.user.is_some(),
        }
    }

    /// Whether `parsed` has these values for the attributes in `mask`.
    pub(super) fn matches(&self, mask: u8, parsed: &ParsedRequest<'_>) -> bool {
        let on = |bit: u8| mask & bit != 0;
        (!on(READS_METHOD) || *self.method == *parsed.method)
            && (!on(READS_TIME) || self.second == policy_second(parsed.time))
            && (!on(READS_PURPOSE) || self.purpose.as_deref() == parsed.purpose)
            && (!on(READS_TLS) || *self.tls == *parsed.tls_version)
            && (!on(READS_HAS_USER) || self.has_user == parsed.user.is_some())
    }
}

impl Part {
    /// Outcomes remembered per part; beyond this, the part forgets them all.
    pub(super) const REMEMBERED: usize = 16;
    /// Longest method, purpose or TLS version an outcome is remembered for.
    pub(super) const LONGEST_VALUE: usize = 64;

    /// The tests of this part that hold for the request, `None` if
    /// evaluating them had errors; calls `each` with every satisfied test.
    pub(super) fn satisfied<'r>(
        &self,
        authorizer: &Authorizer,
        request: &dyn Fn() -> Result<&'r Request, String>,
        entities: &Entities,
        parsed: &ParsedRequest<'_>,
        mut each: impl FnMut(&str),
    ) -> Result<bool, String> {
        // `Err`: the request could not be made (nothing is remembered then).
        let evaluate = || {
            let resp = authorizer.is_authorized(request()?, &self.tests, entities);
            let ok = resp.diagnostics().errors().next().is_none();
            Ok::<_, String>(ok.then(|| {
                resp.diagnostics()
                    .reason()
                    .map(|id| AsRef::<str>::as_ref(id).to_owned())
                    .collect::<Vec<_>>()
            }))
        };
        // Values as long as a client may send are not worth keeping.
        let short = |v: Option<&str>| v.is_none_or(|v| v.len() <= Self::LONGEST_VALUE);
        let mask = self.reads.filter(|_| {
            short(Some(parsed.method)) && short(parsed.purpose) && short(Some(parsed.tls_version))
        });
        let Some(mask) = mask else {
            return Ok(evaluate()?
                .map(|ids| ids.iter().for_each(|id| each(id)))
                .is_some());
        };
        let mut seen = self.seen.borrow_mut();
        let hit = seen.iter().position(|(s, _)| s.matches(mask, parsed));
        let at = match hit {
            Some(at) => at,
            None => {
                let outcome = evaluate()?;
                let before = seen.len();
                if mask & READS_TIME != 0 {
                    let now = policy_second(parsed.time);
                    seen.retain(|(s, _)| s.second == now);
                }
                if seen.len() >= Self::REMEMBERED {
                    seen.clear();
                }
                forget(before - seen.len());
                seen.push((Seen::of(parsed), outcome));
                remembered_one_more();
                seen.len() - 1
            }
        };
        Ok(match &seen[at].1 {
            Some(ids) => {
                ids.iter().for_each(|id| each(id));
                true
            }
            None => false,
        })
    }
}

impl Candidates {
    /// The decision Cedar would make over all the candidates: a satisfied
    /// `forbid` denies and every satisfied `forbid` is a reason; otherwise any
    /// satisfied `permit` allows, with every satisfied `permit` as a reason.
    pub(super) fn decide(
        &self,
        authorizer: &Authorizer,
        request: &LazyRequest<'_>,
        entities: &Entities,
        parsed: &ParsedRequest<'_>,
    ) -> Decision {
        let mut errors = self.errors.clone();
        let (mut forbids, mut permits) = (Vec::new(), Vec::new());
        let mut tested = false;
        if !self.untestable && !self.parts.is_empty() {
            let mut unmade = None;
            // The tests' request: with their literals, if they look any up.
            let with_literals = std::cell::OnceCell::new();
            let tests_request = || match &self.literals {
                None => request.get(),
                Some(lits) => with_literals
                    .get_or_init(|| request.with_attribute(LITERALS, lits.clone()))
                    .as_ref()
                    .map_err(Clone::clone),
            };
            tested = self.parts.iter().all(|part| {
                // Every test is a permit: the reasons are the conditions that hold.
                let held = part.satisfied(authorizer, &tests_request, entities, parsed, |test| {
                    for (forbid, id) in self.members.get(test).into_iter().flatten() {
                        if *forbid {
                            forbids.push(id.clone());
                        } else {
                            permits.push(id.clone());
                        }
                    }
                });
                held.unwrap_or_else(|e| {
                    unmade = Some(e);
                    false
                })
            });
            if let Some(e) = unmade {
                return Decision::denied(e);
            }
            if !tested {
                forbids.clear();
                permits.clear();
            }
        }
        if !tested && !self.residual.is_empty() {
            let request = match request.get() {
                Ok(r) => r,
                Err(e) => return Decision::denied(e),
            };
            let resp = authorizer.is_authorized(request, &self.residual, entities);
            let reasons = resp
                .diagnostics()
                .reason()
                .map(|id| AsRef::<str>::as_ref(id).to_owned());
            // Cedar names the satisfied policies of the deciding effect.
            if resp.decision() == cedar_policy::Decision::Allow {
                permits.extend(reasons);
            } else {
                forbids.extend(reasons);
            }
            errors.extend(resp.diagnostics().errors().map(|e| e.to_string()));
        }
        errors.sort_unstable();
        let (allowed, mut policies) = if self.forbids.is_empty() && forbids.is_empty() {
            permits.extend(self.permits.iter().cloned());
            (!permits.is_empty(), permits)
        } else {
            forbids.extend(self.forbids.iter().cloned());
            (false, forbids)
        };
        policies.sort_unstable();
        Decision {
            allowed,
            policies,
            errors,
        }
    }
}
