//! What a caller would get of a product's datasets, for the caller view
//! (`/.well-known/data-product/{product}/caller`): each dataset decided as
//! a request on the route it is read by, with the field plan of an allowed
//! one.
//! Informational: the requests themselves are decided when they come.

use crate::decision::contract::RouteSpec;
use crate::decision::describe::{Access, DatasetView, HiddenView};
use crate::decision::routes::Target;
use crate::model::identity::Principal;
use crate::model::path::NormalPath;

use super::*;

impl Snapshot {
    /// For each dataset of the product at `product` that a route other
    /// than `describe` names, the decision of a request on its route (the
    /// first `read`, else `query` or `subscribe`, else the first) and what
    /// its plan hides; `retired` for an allowed one past its end of life.
    /// The route's method and pattern stand for the request's (so
    /// `context.path` is `/orders/{id}`); the rest of `facts` (headers, so
    /// the purpose; the user, address, TLS version and time) is the
    /// caller's own.
    pub fn datasets_seen(
        &self,
        principal: &Principal,
        product: usize,
        facts: &HttpFacts<'_>,
    ) -> Vec<DatasetView> {
        let Some(entry) = self.products.get(product) else {
            return Vec::new();
        };
        let p = &entry.product;
        let mut out = Vec::new();
        let retired = entry.product.lifecycle.is_retired(facts.time);
        for name in p.datasets.iter().map(|(n, _)| n) {
            // The route a consumer reads the dataset by: a `read`, else a
            // `query` or `subscribe`, else the first that names it.
            let named = |r: &&RouteSpec| {
                r.action != Action::Describe && r.dataset.as_deref() == Some(name.as_str())
            };
            let rank = |r: &&RouteSpec| match r.action {
                Action::Read => 0,
                Action::Query | Action::Subscribe => 1,
                _ => 2,
            };
            let Some(route) = p.routes.iter().filter(named).min_by_key(rank) else {
                continue;
            };
            let target = Target::of(product, p, route);
            let path = NormalPath {
                segments: route
                    .path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                trailing_slash: false,
            };
            let asked = HttpFacts {
                method: &route.method,
                path: &path,
                headers: facts.headers,
                source_ip: facts.source_ip,
                tls_version: facts.tls_version,
                time: facts.time,
                user: facts.user,
            };
            let mut view = DatasetView {
                name: name.clone(),
                route: format!("{} {}", route.method, route.path),
                decision: Access::Deny,
                hidden: None,
                undeclared: None,
            };
            match self.decide_routed(principal, &target, &asked) {
                // Only a caller that may use the product learns that this
                // version is gone (as its requests would, with a 410).
                Ok(outcome) if outcome.decision.allowed && retired => {
                    view.decision = Access::Retired;
                }
                Ok(outcome) if outcome.decision.allowed => {
                    view.decision = Access::Allow;
                    if let Some(plan) = outcome.fields {
                        view.hidden = Some(
                            plan.hidden
                                .iter()
                                .map(|h| HiddenView {
                                    field: h.path.to_string(),
                                    mask: h.mask.as_str(),
                                })
                                .collect(),
                        );
                        view.undeclared = Some(plan.undeclared.as_str());
                    }
                }
                Ok(_) => {}
                Err(DecideError::UserTokenMissing) => view.decision = Access::UserTokenRequired,
                // Another error (a purpose refused) refused the request
                // before the view was made; deny whatever else would.
                Err(_) => {}
            }
            out.push(view);
        }
        out
    }
}
