//! What a caller would get of a product's datasets, for the caller view
//! (`/.well-known/data-product/{product}/caller`): each dataset decided as
//! a request on its first data route, with the field plan of an allowed one.
//! Informational: the requests themselves are decided when they come.

use crate::decision::describe::{Access, DatasetView, HiddenView};
use crate::decision::routes::Target;
use crate::model::identity::Principal;
use crate::model::path::NormalPath;

use super::*;

impl Snapshot {
    /// For each dataset of the product at `product` that a route other
    /// than `describe` names, the decision of a request on the first such
    /// route (in the contract's order) and what its plan hides. The route's
    /// method and pattern stand for the request's (so `context.path` is
    /// `/orders/{id}`); the rest of `facts` (headers, so the purpose; the
    /// user, address, TLS version and time) is the caller's own.
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
        for (d, (name, _)) in p.datasets.iter().enumerate() {
            let named = |r: &&crate::decision::contract::RouteSpec| {
                r.action != Action::Describe && r.dataset.as_deref() == Some(name.as_str())
            };
            let Some(route) = p.routes.iter().find(named) else {
                continue;
            };
            let target = Target {
                product,
                action: route.action,
                dataset: Some(d),
                pattern: route.path.clone(),
                user_token: route.user_token.unwrap_or(p.user_token),
            };
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
