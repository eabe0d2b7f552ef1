//! `meshgate_grpc_requests_total`: gRPC calls by data product and the
//! gRPC status they ended with, beside `meshgate_requests_total`'s HTTP
//! status class.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The labels: the product ("" when no route matched) and the status's
/// name (`OK`, `PERMISSION_DENIED`, …; one of gRPC's 17 codes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub product: Arc<str>,
    pub grpc_status: &'static str,
}

/// The counter's handle: cheap to clone, for a response body that counts
/// its call's status when its trailers pass.
#[derive(Clone, Debug)]
pub struct GrpcStatuses {
    family: Family<GrpcLabels, Counter>,
    no_product: Arc<str>,
}

impl GrpcStatuses {
    pub(super) fn register(registry: &mut Registry) -> GrpcStatuses {
        let family = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by data product and the gRPC status they ended with (grpc-status of the upstream's trailers, or of meshgate's own refusal); calls that ended without a status are not counted here",
            family.clone(),
        );
        GrpcStatuses {
            family,
            no_product: Arc::from(""),
        }
    }

    /// Counts one call that ended with `grpc_status` (a code's name).
    pub fn count(&self, product: Option<&Arc<str>>, grpc_status: &'static str) {
        self.family
            .get_or_create(&GrpcLabels {
                product: product.unwrap_or(&self.no_product).clone(),
                grpc_status,
            })
            .inc();
    }
}
