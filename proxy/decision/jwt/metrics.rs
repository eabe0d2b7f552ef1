//! The handles the end-user token verifier records with; registered (and
//! exposed) by `observe::metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerResultLabels {
    pub issuer: String,
    pub result: &'static str,
}

/// Tokens checked by result, key fetches by issuer and result, keys held.
#[derive(Clone, Debug)]
pub struct JwtMetrics {
    pub user_tokens: Family<TokenResultLabels, Counter>,
    pub jwks_refreshes: Family<IssuerResultLabels, Counter>,
    pub jwks_keys: Family<IssuerLabels, Gauge>,
}
