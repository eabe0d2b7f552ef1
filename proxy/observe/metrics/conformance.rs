//! Contract conformance's metrics: responses checked against their
//! contract, and those that showed a violation, by kind. Labels are
//! bounded: a product and a dataset come from the contracts, a kind is one
//! of five ([`Kind`]); no value and no field name of a response is a label.
//! Also the gate that lets a violation's log line through at most once a
//! second per product and kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::DatasetLabels;
use crate::model::conformance::Kind;

/// `meshgate_contract_violations_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub product: Arc<str>,
    pub dataset: Arc<str>,
    /// `required`, `type`, `enum`, `undeclared` or `malformed`.
    pub kind: &'static str,
}

/// The handles, cheap to clone.
#[derive(Clone, Debug)]
pub struct ConformanceMetrics {
    pub checks: Family<DatasetLabels, Counter>,
    pub violations: Family<ViolationLabels, Counter>,
    pub log: Arc<LogGate>,
}

impl ConformanceMetrics {
    pub(super) fn register(registry: &mut Registry) -> ConformanceMetrics {
        let checks = Family::<DatasetLabels, Counter>::default();
        registry.register(
            "contract_checks",
            "Responses checked against their dataset's contract (the sampled ones of datasets that declare fields), by product and dataset",
            checks.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "contract_violations",
            "Checked responses that violated their contract, by product, dataset and kind (required, type, enum, undeclared, malformed): a response adds one per kind it showed, however many records showed it",
            violations.clone(),
        );
        ConformanceMetrics {
            checks,
            violations,
            log: Arc::default(),
        }
    }
}

/// When each (product, kind) was last logged, and how many lines were
/// held back since.
#[derive(Debug, Default)]
pub struct LogGate {
    last: Mutex<HashMap<(Arc<str>, Kind), Logged>>,
}

/// When a line was last let through, and the lines held back since.
type Logged = (Instant, u64);

/// The shortest time between two log lines of one product and kind.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

impl LogGate {
    /// Whether a line about `kind` in `product`'s responses may be logged
    /// at `now`: `Some(n)` with the lines held back since the last one.
    pub fn pass(&self, product: &Arc<str>, kind: Kind, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(&(product.clone(), kind)) {
            Some((at, held)) if now.saturating_duration_since(*at) < LOG_EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                last.insert((product.clone(), kind), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_and_kind_is_logged_at_most_once_a_second_and_says_what_it_held_back() {
        let gate = LogGate::default();
        let p: Arc<str> = Arc::from("sales.orders");
        let t0 = Instant::now();
        assert_eq!(gate.pass(&p, Kind::Type, t0), Some(0));
        assert_eq!(
            gate.pass(&p, Kind::Type, t0 + Duration::from_millis(10)),
            None
        );
        assert_eq!(
            gate.pass(&p, Kind::Type, t0 + Duration::from_millis(999)),
            None
        );
        // Another kind has its own second.
        assert_eq!(gate.pass(&p, Kind::Enum, t0), Some(0));
        assert_eq!(gate.pass(&p, Kind::Type, t0 + LOG_EVERY), Some(2));
    }
}
