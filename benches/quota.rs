//! One local quota check: the consumer's tier found by its rules, the GCRA
//! bucket of (product, consumer) taken from governor's keyed store, the
//! `RateLimit` state computed. `hot`: the same consumer every time; `spread`:
//! 10,000 consumers in turn. The tier is generous, so every check passes.
//! Target from the issue: p50 ≤ 200 ns.
//!
//!     cargo bench --bench quota

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshgate::quota::{Consumer, Quotas, QuotasConfig, Verdict};

fn quota(c: &mut Criterion) {
    let config: QuotasConfig = meshgate::config::parse_yaml(
        "tiers: { gold: { rate: 1000000000/s, burst: 1000000 } }\nconsumers:\n  - { prefix: \"spiffe://mesh.local/ns/finance/\", tier: gold }\n",
        "quotas",
    )
    .expect("quotas config");
    let quotas = Quotas::new(config).expect("quotas");
    let ids: Vec<String> = (0..10_000)
        .map(|i| format!("spiffe://mesh.local/ns/finance/sa/app-{i}"))
        .collect();
    let mut group = c.benchmark_group("quota");
    group.bench_function("hot", |b| {
        let who = Consumer {
            service: &ids[0],
            user: None,
        };
        b.iter(|| {
            let v = quotas.check(black_box("sales.orders"), Some(200.0), &who);
            assert!(matches!(v, Verdict::Allowed(_)));
            black_box(v)
        })
    });
    let mut i = 0;
    group.bench_function("spread", |b| {
        b.iter(|| {
            let who = Consumer {
                service: &ids[i % ids.len()],
                user: None,
            };
            i += 1;
            let v = quotas.check(black_box("sales.orders"), Some(200.0), &who);
            assert!(matches!(v, Verdict::Allowed(_)));
            black_box(v)
        })
    });
    group.finish();
}

criterion_group!(benches, quota);
criterion_main!(benches);
