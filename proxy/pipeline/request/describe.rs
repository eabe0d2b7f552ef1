//! The well-known stage: a request under `/.well-known/data-product` or
//! `/.well-known/api-catalog` is authenticated, decided (action `describe`
//! on each contract it is about), admitted and audited like any other, and
//! answered by the sidecar with the documents of `decision::describe`.
//!
//! | asks for | decided on | refuses with |
//! |---|---|---|
//! | a contract | that contract | 404 when denied (as an unknown name) |
//! | a descriptor, a caller view | the product's contracts; shows those allowed | 404 when none is |
//! | the index, the catalog | every contract; lists those allowed | never (an empty list) |
//!
//! Unknown names are 404, methods other than GET and HEAD 405. (A product
//! whose contract asks for an end-user token answers a request without a
//! valid one 401 before any decision: that tells that the name exists.) The quota
//! of the first contract allowed is taken (the newest version); the
//! index and the catalog take none.

use bytes::Bytes;

use super::*;
use crate::decision::authz::DecideError;
use crate::decision::describe::{
    self, Allowed, Ask, CallerFacts, DescribeError, QuotaView, JSON_TYPE, LINKSET_TYPE, YAML_TYPE,
};
use crate::decision::routes::Target;

/// The contract a request about one product is recorded and admitted
/// under: the first whose `describe` was allowed, with its outcome.
type Chosen<'s> = Option<(&'s Target, Arc<AuthzOutcome>)>;

impl Exchange<'_> {
    /// Answers a well-known request from `snapshot`.
    pub(super) async fn describe(
        &mut self,
        snapshot: &Snapshot,
        checked: Checked<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let req = checked.req;
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(ProxyError::MethodNotAllowed);
        }
        let described = snapshot.described();
        let ask = described.ask(&checked.path.decoded())?;
        let scope = described.scope(ask);
        let listing = matches!(ask, Ask::Index | Ask::Catalog);
        // A listing verifies a token when sent and leaves out the
        // contracts that require one it was not sent.
        let mode = match described.user_token(&scope) {
            UserToken::Required if listing => UserToken::Optional,
            // The caller view decides each dataset's route: a token sent
            // for a route that takes one is verified.
            UserToken::None
                if matches!(ask, Ask::Caller(_)) && routes_take_tokens(snapshot, &scope) =>
            {
                UserToken::Optional
            }
            mode => mode,
        };
        let user = self.user_for(mode, req.headers()).await?;
        self.learned.user = user.clone();
        let t0 = Instant::now();
        let decided = self.decide_each(snapshot, &checked, &scope, user.as_deref(), listing);
        self.gate
            .metrics
            .authorization_duration
            .observe(t0.elapsed());
        let (allowed, chosen) = decided?;
        let admission = match chosen {
            None => None,
            Some((target, outcome)) => {
                let method = checked.req.method().clone();
                let routed = Routed {
                    checked,
                    snapshot,
                    target,
                    method,
                    method_override: Default::default(),
                    response: None,
                    lookup_began: t0,
                    lookup: None,
                };
                let decided = Decided {
                    routed,
                    user: user.clone(),
                    outcome,
                };
                self.admit(decided).await?.admission
            }
        };
        self.learned.tier = admission
            .as_ref()
            .and_then(|a| a.state.as_ref())
            .map(|s| s.tier.clone());
        // Answered here: counted and audited as allowed.
        self.learned.forwarded = true;
        let allowed = snapshot.described().allowed(allowed);
        let (content_type, body) = self.document(snapshot, req, ask, &allowed, user.as_deref())?;
        // HEAD: the GET's head, its length included, and no body (an
        // HTTP/2 stream must not carry one).
        let length = HeaderValue::from(body.len());
        let body = if req.method() == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut resp = Response::new(ProxyBody::full(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_LENGTH, length);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        // What a caller sees depends on who asks (and, for a descriptor,
        // on Accept): no shared cache may keep it.
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        );
        if matches!(ask, Ask::Descriptor(_)) {
            h.insert(header::VARY, HeaderValue::from_static("accept"));
        }
        h.insert(X_REQUEST_ID, self.request_id.clone());
        if let Some(state) = admission.and_then(|a| a.state) {
            state.set_headers(h);
        }
        Ok(resp)
    }

    /// Decides `describe` on each contract of `scope`: the contracts
    /// allowed, and the first allowed with its outcome (recorded for the
    /// audit event and admitted). A request about one product that no
    /// contract allows is refused, its first denial recorded.
    fn decide_each<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        checked: &Checked<'_>,
        scope: &[(usize, &'s Target)],
        user: Option<&User>,
        listing: bool,
    ) -> Result<(Vec<usize>, Chosen<'s>), ProxyError> {
        let req = checked.req;
        let conn = self.conn;
        let facts = HttpFacts {
            method: req.method(),
            path: &checked.path,
            headers: req.headers(),
            source_ip: conn.peer.ip(),
            tls_version: conn.tls_version,
            time: SystemTime::now(),
            user,
        };
        let mut allowed = Vec::new();
        let mut chosen = None;
        let mut denied = None;
        for &(contract, target) in scope {
            let outcome = match snapshot.decide_routed(&conn.identity.principal, target, &facts) {
                Ok(o) => o,
                Err(DecideError::UserTokenMissing) if listing => continue,
                Err(e) => return Err(e.into()),
            };
            self.count_decision(&outcome);
            if outcome.decision.allowed {
                allowed.push(contract);
                if chosen.is_none() {
                    chosen = Some((target, Arc::new(outcome)));
                }
            } else if denied.is_none() {
                denied = Some(Arc::new(outcome));
            }
        }
        if listing {
            return Ok((allowed, None));
        }
        match chosen {
            Some((target, outcome)) => {
                self.learned.outcome = Some(outcome.clone());
                Ok((allowed, Some((target, outcome))))
            }
            None => {
                self.learned.outcome = denied;
                Err(ProxyError::Concealed)
            }
        }
    }

    /// The document asked for, with its media type.
    fn document(
        &self,
        snapshot: &Snapshot,
        req: &Request<Incoming>,
        ask: Ask,
        allowed: &Allowed,
        user: Option<&User>,
    ) -> Result<(&'static str, Bytes), ProxyError> {
        let described = snapshot.described();
        let origin = origin(req);
        let json = |bytes: Result<Vec<u8>, DescribeError>| bytes.map(|b| (JSON_TYPE, b));
        let doc = match ask {
            Ask::Index => json(describe::render(&described.index(allowed, &origin), false)),
            Ask::Catalog => describe::render(&described.linkset(allowed, &origin), false)
                .map(|b| (LINKSET_TYPE, b)),
            Ask::Descriptor(g) => {
                let yaml = wants_yaml(req.headers());
                let ty = if yaml { YAML_TYPE } else { JSON_TYPE };
                describe::render(&described.descriptor(g, allowed, &origin), yaml).map(|b| (ty, b))
            }
            Ask::Caller(g) => {
                let conn = self.conn;
                // Method and path: each dataset's route stands for them.
                let path = NormalPath {
                    segments: Vec::new(),
                    trailing_slash: false,
                };
                let facts = HttpFacts {
                    method: req.method(),
                    path: &path,
                    headers: req.headers(),
                    source_ip: conn.peer.ip(),
                    tls_version: conn.tls_version,
                    time: SystemTime::now(),
                    user,
                };
                let view = described.caller_view(
                    g,
                    allowed,
                    self.caller(req, user),
                    |target| self.quota_view(snapshot, target, user),
                    |target| {
                        snapshot.datasets_seen(&conn.identity.principal, target.product, &facts)
                    },
                );
                json(describe::render(&view, false))
            }
            Ask::Contract(_, c) => return Ok((YAML_TYPE, described.contract_text(c))),
        };
        doc.map(|(ty, bytes)| (ty, Bytes::from(bytes)))
            .map_err(ProxyError::from)
    }

    /// Who asks, as the caller view shows it.
    fn caller(&self, req: &Request<Incoming>, user: Option<&User>) -> CallerFacts {
        CallerFacts {
            service: String::from_utf8_lossy(self.conn.identity.principal_header.as_bytes())
                .into_owned(),
            user: user.map(|u| u.id.clone()),
            purpose: req
                .headers()
                .get(crate::decision::authz::X_DATA_PURPOSE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    /// The quota this caller is held to on `target`'s contract, without
    /// taking from it.
    fn quota_view(
        &self,
        snapshot: &Snapshot,
        target: &Target,
        user: Option<&User>,
    ) -> Option<QuotaView> {
        let quotas = self.gate.quotas.as_ref()?;
        let product = snapshot.product(target)?;
        let identity = &self.conn.identity;
        let service = String::from_utf8_lossy(identity.principal_header.as_bytes());
        let service_groups = if quotas.uses_groups() {
            snapshot.service_groups(&identity.principal)
        } else {
            Vec::new()
        };
        let who = Consumer {
            service: &service,
            user,
            service_groups: &service_groups,
        };
        quotas
            .policy(&product.id, product.sla.throughput, &who)
            .map(|s| QuotaView {
                tier: s.tier.to_string(),
                rate_limit_policy: s.policy_header(),
            })
    }
}

/// Whether a route of the contracts of `scope` takes an end-user token of
/// its own (`userToken` on the route, not the contract).
fn routes_take_tokens(snapshot: &Snapshot, scope: &[(usize, &Target)]) -> bool {
    scope.iter().any(|(_, t)| {
        snapshot.product(t).is_some_and(|p| {
            p.routes
                .iter()
                .any(|r| r.user_token.is_some_and(|u| u != UserToken::None))
        })
    })
}

/// `https://` and the authority the client asked for (HTTP/2 `:authority`,
/// an absolute-form target, or `Host`), which the documents' links start
/// with; empty (links relative to the node) when there is none that is a
/// plain `host[:port]`. Echoed only to the client that sent it (the
/// answers are `private`).
fn origin(req: &Request<Incoming>) -> String {
    let authority = match req.uri().authority() {
        Some(a) => Some(a.clone()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok()),
    };
    match authority {
        Some(a) if plain(&a) => format!("https://{a}"),
        _ => String::new(),
    }
}

/// Whether `a` is a plain `host[:port]`: a host that is not empty, no
/// userinfo, and a port (when there is one) of decimal digits that fits
/// 16 bits (`:443`, `localhost:`, `localhost:0x1` would make links that
/// are no URIs).
fn plain(a: &http::uri::Authority) -> bool {
    let host = a.host();
    let port = |p: &str| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    };
    // Brackets hold an IPv6 address, and only that.
    let bracketed = host.contains(['[', ']']);
    let ipv6 = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    match a.as_str().strip_prefix(host) {
        _ if host.is_empty() || a.as_str().contains('@') || (bracketed && !ipv6) => false,
        Some("") => true,
        Some(rest) => rest.strip_prefix(':').is_some_and(port),
        None => false,
    }
}

/// Whether `Accept` prefers YAML (`application/yaml`, `application/x-yaml`,
/// `text/yaml`) to JSON: the highest `q` wins, the first listed on a tie;
/// `*/*`, `application/*` and no `Accept` mean JSON.
fn wants_yaml(headers: &http::HeaderMap) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let yaml = match media.as_str() {
                "application/yaml" | "application/x-yaml" | "text/yaml" => true,
                "application/json" | "*/*" | "application/*" => false,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, yaml));
            }
        }
    }
    best.is_some_and(|(_, yaml)| yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_only_when_accept_prefers_it() {
        let accept = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
            wants_yaml(&h)
        };
        assert!(!wants_yaml(&http::HeaderMap::new()));
        assert!(accept("application/yaml"));
        assert!(accept("text/yaml"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json, application/yaml"));
        assert!(accept("application/json;q=0.5, application/yaml"));
        assert!(!accept("application/yaml;q=0"));
        assert!(!accept("text/html"));
    }

    #[test]
    fn only_a_plain_host_and_port_make_links() {
        let authority = |s: &str| s.parse::<http::uri::Authority>().expect(s);
        for good in [
            "localhost",
            "localhost:8443",
            "10.0.0.1:443",
            "[::1]:8443",
            "[::1]",
            "node.mesh.local",
        ] {
            assert!(plain(&authority(good)), "{good}");
        }
        // Each parses as an authority, so what refuses it is `plain`.
        for bad in [
            ":443",
            ":",
            "localhost:",
            "localhost:0x1",
            "localhost:70000",
            "user@host",
            "[x]:443",
            "a[b]",
        ] {
            assert!(!plain(&authority(bad)), "{bad}");
        }
    }
}
