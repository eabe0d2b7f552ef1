//! One authorization decision, end to end: route lookup, Cedar request and
//! entities built from a verified identity, evaluation. 10 to 10,000 policies
//! spread over 1,000 products (see `meshgate::synth`), indexed and, for
//! reference, with Cedar's plain `Authorizer` over every policy. Also the cost
//! of building a whole snapshot (a reload, without freeing the old one).
//!
//!     cargo bench --bench authz
//!
//! Medians are in target/criterion/<group>/<name>/new/estimates.json.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use meshgate::synth::{self, Rng};
use meshgate::Lookup;
use meshgate::Principal;
use meshgate::{normalize, NormalPath};
use meshgate::{HttpFacts, Snapshot};

const PRODUCTS: usize = 1000;

struct Case {
    principal: Principal,
    method: Method,
    path: NormalPath,
    headers: HeaderMap,
}

fn cases(n: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let p = rng.below(PRODUCTS);
            let (sub, method) = rng
                .pick(&[
                    ("rows", Method::GET),
                    ("rows/k1", Method::GET),
                    ("meta", Method::GET),
                    ("query", Method::POST),
                    ("rows", Method::POST),
                ])
                .clone();
            let ns = rng.pick(&synth::DOMAINS);
            let mut headers = HeaderMap::new();
            if rng.below(2) == 0 {
                headers.insert(
                    "x-data-purpose",
                    rng.pick(&synth::PURPOSES).parse().expect("header"),
                );
            }
            Case {
                principal: format!("spiffe://mesh.local/ns/{ns}/sa/app")
                    .parse()
                    .expect("principal"),
                method,
                path: normalize(&format!("/p{p}/{sub}")).expect("path"),
                headers,
            }
        })
        .collect()
}

/// One decision as the proxy makes it, at `time`.
fn decide(snapshot: &Snapshot, case: &Case, time: SystemTime) -> Option<bool> {
    let facts = HttpFacts {
        method: &case.method,
        path: &case.path,
        headers: &case.headers,
        source_ip: [10, 0, 0, 1].into(),
        tls_version: "TLSv1.3",
        time,
        user: None,
    };
    snapshot
        .decide_http(&case.principal, &facts)
        .map(|o| o.decision.allowed)
        .ok()
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(4));
    for policies in [10, 100, 1_000, 10_000] {
        let snapshot =
            Snapshot::build(&synth::inputs(PRODUCTS, policies, 42)).expect("synthetic snapshot");
        let cases = cases(1024, 7);
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("indexed", policies), &policies, |b, _| {
            b.iter(|| {
                let case = &cases[i % cases.len()];
                i += 1;
                // The clock as the proxy reads it: a new second makes new
                // contexts, as in production.
                black_box(decide(&snapshot, case, SystemTime::now()))
            })
        });
        // The worst case: every decision in a new second, so nothing
        // remembered about the context applies (contexts, condition outcomes).
        let start = SystemTime::now();
        let mut k = 0u64;
        group.bench_with_input(
            BenchmarkId::new("indexed_new_second", policies),
            &policies,
            |b, _| {
                b.iter(|| {
                    let case = &cases[k as usize % cases.len()];
                    k += 1;
                    black_box(decide(&snapshot, case, start + Duration::from_secs(k)))
                })
            },
        );
        if policies <= 1_000 {
            let mut j = 0;
            group.bench_with_input(
                BenchmarkId::new("plain_authorizer", policies),
                &policies,
                |b, _| {
                    b.iter(|| {
                        let case = &cases[j % cases.len()];
                        j += 1;
                        let Lookup::Found(target) =
                            snapshot.routes().lookup(&case.method, &case.path)
                        else {
                            panic!("routed")
                        };
                        let decoded = case.path.decoded();
                        let facts = meshgate::ParsedRequest {
                            method: case.method.as_str(),
                            path: &decoded,
                            source_ip: [10, 0, 0, 1].into(),
                            purpose: None,
                            tls_version: "TLSv1.3",
                            time: SystemTime::now(),
                            user: None,
                        };
                        black_box(
                            snapshot
                                .authorize_unindexed(&case.principal, target, &facts)
                                .allowed,
                        )
                    })
                },
            );
        }
    }
    group.finish();
}

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for policies in [1_000, 10_000] {
        let inputs = synth::inputs(PRODUCTS, policies, 42);
        group.bench_with_input(
            BenchmarkId::from_parameter(policies),
            &inputs,
            // A reload's latency ends when the new snapshot can be swapped
            // in; the old one is freed after that (on the reload thread), so
            // dropping the built snapshot is not timed.
            |b, inputs| b.iter_with_large_drop(|| Snapshot::build(inputs)),
        );
    }
    group.finish();
}

criterion_group!(benches, decisions, reload);
criterion_main!(benches);
