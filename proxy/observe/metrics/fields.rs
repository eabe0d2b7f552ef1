//! Response governance's metrics: the fields hidden in responses, the
//! error bodies withheld, the requests whose shadow field plan differs
//! from the enforced one, and the hash key's reloads. Labels are bounded:
//! a product and a dataset come from the contracts, a mask is one of six
//! methods; no value of a response or request is a label.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::ResultLabels;

/// `meshgate_fields_hidden_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HiddenLabels {
    pub product: Arc<str>,
    /// The dataset's name in its contract (`orders`).
    pub dataset: Arc<str>,
    /// How the fields were hidden (`omit`, `hash`, …).
    pub mask: &'static str,
}

/// A dataset of a product.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatasetLabels {
    pub product: Arc<str>,
    pub dataset: Arc<str>,
}

/// The handles, cheap to clone.
#[derive(Clone, Debug)]
pub struct FieldMetrics {
    pub hidden: Family<HiddenLabels, Counter>,
    /// Error and redirect responses of a masked route whose body was
    /// withheld (it could not be masked).
    pub withheld: Family<DatasetLabels, Counter>,
    pub shadow_disagreements: Family<DatasetLabels, Counter>,
    pub key_reloads: Family<ResultLabels, Counter>,
    /// Contract conformance (`conformance.rs`).
    pub conformance: super::ConformanceMetrics,
}

impl FieldMetrics {
    pub(super) fn register(registry: &mut Registry) -> FieldMetrics {
        let hidden = Family::<HiddenLabels, Counter>::default();
        registry.register(
            "fields_hidden",
            "Fields hidden in responses, by product, dataset and mask: a response masked by a field plan that hides N fields adds N (whatever the number of records in it)",
            hidden.clone(),
        );
        let withheld = Family::<DatasetLabels, Counter>::default();
        registry.register(
            "fields_withheld_bodies",
            "Error and redirect responses on a route whose field plan hides something, by product and dataset, whose body was not JSON, NDJSON or CSV: answered with their status and the sidecar's own body (error body_withheld)",
            withheld.clone(),
        );
        let shadow_disagreements = Family::<DatasetLabels, Counter>::default();
        registry.register(
            "shadow_field_disagreements",
            "Allowed requests whose field plan under the shadow policy set hides other fields than the enforced plan, by product and dataset",
            shadow_disagreements.clone(),
        );
        let key_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "hash_key_reloads",
            "Reloads of the hash key (fields.hash_key_file), by result; a key that does not load leaves the previous one in use",
            key_reloads.clone(),
        );
        for result in ["ok", "error"] {
            let _ = key_reloads.get_or_create(&ResultLabels { result });
        }
        FieldMetrics {
            hidden,
            withheld,
            shadow_disagreements,
            key_reloads,
            conformance: super::ConformanceMetrics::register(registry),
        }
    }
}
