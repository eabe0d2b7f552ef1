//! The request families' series, found again by the identity of their
//! label values. A family's own lookup hashes every label's text with
//! SipHash under its lock: three of them per request were about 1,700
//! instructions. Here a label set is keyed by the address and length of
//! each value (equal keys are the same bytes, so the same text), hashed
//! with foldhash, and its series are the family's own (`get_or_create`
//! once, then the handle's clone): what the exposition shows is unchanged.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;

use super::histogram::AtomicHistogram;

/// Past this many label sets kept (every policy reload brings new `Arc`s
/// for the same products), the cache starts again.
const KEPT: usize = 1024;

/// Text by where it is: the same address and length are the same bytes.
type Text = (usize, usize);

fn text(s: &str) -> Text {
    (s.as_ptr() as usize, s.len())
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RequestKey {
    product: Text,
    action: Text,
    decision: Text,
    class: Text,
}

/// The series of one request label set.
pub(super) struct RequestSeries {
    /// Keeps the product's text where it is while it keys this entry, so
    /// that its address cannot be another product's.
    _product: Arc<str>,
    pub(super) requests: Counter,
    /// Made on the first request of the set whose duration counts (a
    /// set with only client-fault requests has no duration series).
    pub(super) duration: OnceLock<AtomicHistogram>,
}

/// Label sets' series by key: looked up under a read lock, made once
/// under the write lock (the maker is the family's `get_or_create`).
struct Kept<K, V>(RwLock<HashMap<K, V, foldhash::fast::RandomState>>);

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept(RwLock::new(HashMap::default()))
    }
}

impl<K: Hash + Eq, V> Kept<K, V> {
    /// `record` with the entry of `key`, made by `make` when not kept.
    fn with(&self, key: K, make: impl FnOnce() -> V, record: impl FnOnce(&V)) {
        {
            let kept = self.0.read().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = kept.get(&key) {
                return record(v);
            }
        }
        let mut kept = self.0.write().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= KEPT && !kept.contains_key(&key) {
            kept.clear();
        }
        record(kept.entry(key).or_insert_with(make))
    }
}

#[derive(Default)]
pub(super) struct Handles {
    requests: Kept<RequestKey, RequestSeries>,
    /// The product's `Arc` is kept beside its series for the same reason.
    upstream: Kept<Text, (Arc<str>, AtomicHistogram)>,
}

impl Handles {
    /// `record` with the series of this label set; `counter` makes its
    /// request counter (the family's) when the set is not kept yet.
    pub(super) fn request(
        &self,
        product: &Arc<str>,
        [action, decision, class]: [&'static str; 3],
        counter: impl FnOnce() -> Counter,
        record: impl FnOnce(&RequestSeries),
    ) {
        let key = RequestKey {
            product: text(product),
            action: text(action),
            decision: text(decision),
            class: text(class),
        };
        let make = || RequestSeries {
            _product: product.clone(),
            requests: counter(),
            duration: OnceLock::new(),
        };
        self.requests.with(key, make, record)
    }

    /// `record` with the upstream-duration series of `product`; `make`
    /// makes it (the family's) when it is not kept yet.
    pub(super) fn upstream(
        &self,
        product: &Arc<str>,
        make: impl FnOnce() -> AtomicHistogram,
        record: impl FnOnce(&AtomicHistogram),
    ) {
        let make = || (product.clone(), make());
        self.upstream.with(text(product), make, |(_, h)| record(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::family::Family;

    type Labels = Vec<(String, String)>;

    fn labels(product: &str, class: &str) -> Labels {
        vec![
            ("product".into(), product.into()),
            ("class".into(), class.into()),
        ]
    }

    /// Two `Arc`s of the same text, kept apart, count into one series of
    /// the family; another text into its own; and past `KEPT` label sets
    /// the cache starts again without losing a count.
    #[test]
    fn label_sets_find_the_familys_own_series() {
        let family = Family::<Labels, Counter>::default();
        let handles = Handles::default();
        let count = |product: &Arc<str>, class: &'static str| {
            handles.request(
                product,
                ["read", "allow", class],
                || family.get_or_create(&labels(product, class)).clone(),
                |s| {
                    s.requests.inc();
                },
            )
        };
        let (a, same_text, b): (Arc<str>, Arc<str>, Arc<str>) = (
            Arc::from("sales.orders"),
            Arc::from("sales.orders"),
            Arc::from("hr.staff"),
        );
        for _ in 0..3 {
            count(&a, "2xx");
        }
        count(&same_text, "2xx");
        count(&a, "4xx");
        count(&b, "2xx");
        let got = |p: &str, c: &str| family.get_or_create(&labels(p, c)).get();
        assert_eq!(got("sales.orders", "2xx"), 4);
        assert_eq!(got("sales.orders", "4xx"), 1);
        assert_eq!(got("hr.staff", "2xx"), 1);

        let many: Vec<Arc<str>> = (0..KEPT + 5).map(|i| Arc::from(format!("p{i}"))).collect();
        for p in &many {
            count(p, "2xx");
        }
        count(&a, "2xx");
        for p in &many {
            count(p, "2xx");
        }
        assert_eq!(got("sales.orders", "2xx"), 5);
        assert!(many.iter().all(|p| got(p, "2xx") == 2));
    }

    #[test]
    fn an_upstream_series_is_made_once() {
        let handles = Handles::default();
        let product: Arc<str> = Arc::from("sales.orders");
        let made = std::cell::Cell::new(0);
        for _ in 0..3 {
            handles.upstream(
                &product,
                || {
                    made.set(made.get() + 1);
                    AtomicHistogram::new(&[0.001, 0.01])
                },
                |h| h.observe(std::time::Duration::from_micros(200)),
            );
        }
        assert_eq!(made.get(), 1);
    }
}
