//! One authorization decision, end to end: route lookup, Cedar request and
//! entities built from a verified identity, evaluation. 10 to 10,000 policies
//! spread over 1,000 products (see `meshgate::synth`), indexed and, for
//! reference, with Cedar's plain `Authorizer` over every policy, given the
//! same requests (purposes included). Also the cost of building a whole
//! snapshot (a reload, without freeing the old one).
//!
//!     cargo bench --bench authz
//!
//! Cases per policy count:
//! - `indexed`: the proxy's path, the clock read per decision (a new second
//!   now and then, as in production); the callers and products repeat, so
//!   what the thread remembers about them applies;
//! - `indexed_new_second`: every decision in a new second (nothing remembered
//!   about the context applies);
//! - `indexed_cold`: every decision in a new second *and* for a caller and
//!   product the thread has nothing remembered about (the cases cycle through
//!   every caller x product pair, more than the per-thread cache holds, so
//!   each lookup misses): what a decision costs right after a reload or for
//!   a caller never seen;
//! - `plain_authorizer`: Cedar's `Authorizer` over every policy (to 1,000).
//!
//! Before measuring, every case is decided both ways and the decisions must
//! agree; while measuring, every outcome is counted (allowed, denied, failed
//! before a decision, decided with Cedar evaluation errors) and printed
//! after each case, so that a bench measuring failures cannot pass for
//! a fast one. Medians are in target/criterion/<group>/<name>/new/estimates.json.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use meshgate::synth::{self, Rng};
use meshgate::Principal;
use meshgate::{normalize, NormalPath};
use meshgate::{HttpFacts, ParsedRequest, Snapshot};

const PRODUCTS: usize = 1000;

struct Case {
    principal: Principal,
    method: Method,
    path: NormalPath,
    purpose: Option<&'static str>,
    /// `x-data-purpose: <purpose>` when there is one: the indexed path reads
    /// the purpose from the header, the plain one is given it parsed.
    headers: HeaderMap,
}

fn case(rng: &mut Rng, product: usize, ns: &str) -> Case {
    let (sub, method) = rng
        .pick(&[
            ("rows", Method::GET),
            ("rows/k1", Method::GET),
            ("meta", Method::GET),
            ("query", Method::POST),
            ("rows", Method::POST),
        ])
        .clone();
    let purpose = (rng.below(2) == 0).then(|| *rng.pick(&synth::PURPOSES));
    let mut headers = HeaderMap::new();
    if let Some(p) = purpose {
        headers.insert("x-data-purpose", HeaderValue::from_static(p));
    }
    Case {
        principal: format!("spiffe://mesh.local/ns/{ns}/sa/app")
            .parse()
            .expect("principal"),
        method,
        path: normalize(&format!("/p{product}/{sub}")).expect("path"),
        purpose,
        headers,
    }
}

/// `n` requests of callers of random domains to random products.
fn cases(n: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let p = rng.below(PRODUCTS);
            let ns = *rng.pick(&synth::DOMAINS);
            case(&mut rng, p, ns)
        })
        .collect()
}

/// One request for every caller x product pair (8,000: twice what a thread's
/// decision cache holds before it empties itself), so that cycling through
/// them never finds anything remembered.
fn cold_cases(seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    (0..PRODUCTS)
        .flat_map(|p| synth::DOMAINS.iter().map(move |ns| (p, *ns)))
        .map(|(p, ns)| case(&mut rng, p, ns))
        .collect()
}

/// The outcome of one decision, as counted.
enum Outcome {
    Decided {
        allowed: bool,
        eval_errors: bool,
    },
    /// Refused before a decision (no route, bad purpose, ...).
    Failed,
}

fn decided(allowed: bool, errors: &[String]) -> Outcome {
    Outcome::Decided {
        allowed,
        eval_errors: !errors.is_empty(),
    }
}

/// What one bench's decisions came to.
#[derive(Default)]
struct Tally {
    allowed: Cell<u64>,
    denied: Cell<u64>,
    failed: Cell<u64>,
    eval_errors: Cell<u64>,
}

impl Tally {
    fn count(&self, o: Outcome) {
        let bump = |c: &Cell<u64>| c.set(c.get() + 1);
        match o {
            Outcome::Decided {
                allowed,
                eval_errors,
            } => {
                bump(if allowed { &self.allowed } else { &self.denied });
                if eval_errors {
                    bump(&self.eval_errors);
                }
            }
            Outcome::Failed => bump(&self.failed),
        }
    }

    /// Prints the counts and fails the run when a decision failed outright:
    /// its time would be that of an early return, not of a decision.
    fn report(&self, name: &str) {
        let (a, d, f, e) = (
            self.allowed.get(),
            self.denied.get(),
            self.failed.get(),
            self.eval_errors.get(),
        );
        eprintln!(
            "{name}: {} decisions: {a} allowed, {d} denied, {f} failed before a decision, \
             {e} with Cedar evaluation errors (a policy that errors does not apply)",
            a + d + f
        );
        assert_eq!(f, 0, "{name}: {f} requests failed before a decision");
    }
}

fn facts(case: &Case, time: SystemTime) -> HttpFacts<'_> {
    HttpFacts {
        method: &case.method,
        path: &case.path,
        headers: &case.headers,
        source_ip: [10, 0, 0, 1].into(),
        tls_version: "TLSv1.3",
        time,
        user: None,
    }
}

/// One decision as the proxy makes it, at `time`.
fn decide(snapshot: &Snapshot, case: &Case, time: SystemTime) -> Outcome {
    match snapshot.decide_http(&case.principal, &facts(case, time)) {
        Ok(o) => decided(o.decision.allowed, &o.decision.errors),
        Err(_) => Outcome::Failed,
    }
}

/// The same request decided by Cedar's plain `Authorizer` over every policy,
/// after the same route lookup; the request is given what `decide_http`
/// makes of the HTTP facts (decoded path, declared purpose). `seen` is given
/// (allowed, determining policy ids, evaluation errors); `None`: not routed.
fn plain<R>(
    snapshot: &Snapshot,
    case: &Case,
    time: SystemTime,
    seen: impl FnOnce(bool, &[String], &[String]) -> R,
) -> Option<R> {
    let target = snapshot.route(&case.method, &case.path).ok()?;
    let decoded = case.path.decoded();
    let parsed = ParsedRequest {
        method: case.method.as_str(),
        path: &decoded,
        source_ip: [10, 0, 0, 1].into(),
        purpose: case.purpose,
        tls_version: "TLSv1.3",
        time,
        user: None,
    };
    let d = snapshot.authorize_unindexed(&case.principal, target, &parsed);
    Some(seen(d.allowed, &d.policies, &d.errors))
}

fn decide_plain(snapshot: &Snapshot, case: &Case, time: SystemTime) -> Outcome {
    plain(snapshot, case, time, |allowed, _, errors| {
        decided(allowed, errors)
    })
    .unwrap_or(Outcome::Failed)
}

/// Both paths decide every case alike (allowed or not, the same determining
/// policies), so the baseline answers the same questions.
fn check_agree(snapshot: &Snapshot, cases: &[Case], policies: usize) {
    let time = SystemTime::now();
    for (i, case) in cases.iter().enumerate() {
        let indexed = snapshot
            .decide_http(&case.principal, &facts(case, time))
            .unwrap_or_else(|e| panic!("{policies} policies, case {i}: not decided: {e}"));
        let agree = plain(snapshot, case, time, |allowed, ids, _| {
            allowed == indexed.decision.allowed && ids == indexed.decision.policies
        });
        assert_eq!(
            agree,
            Some(true),
            "{policies} policies, case {i} ({} {}): indexed and plain decide differently",
            case.method,
            case.path.decoded()
        );
    }
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(4));
    let cases = cases(1024, 7);
    let cold = cold_cases(11);
    for policies in [10, 100, 1_000, 10_000] {
        let snapshot =
            Snapshot::build(&synth::inputs(PRODUCTS, policies, 42)).expect("synthetic snapshot");
        check_agree(&snapshot, &cases, policies);
        let id = |name: &str| BenchmarkId::new(name, policies);
        let tally = Tally::default();
        let mut i = 0;
        group.bench_function(id("indexed"), |b| {
            b.iter(|| {
                let case = &cases[i % cases.len()];
                i += 1;
                // The clock as the proxy reads it: a new second makes new
                // contexts, as in production.
                tally.count(black_box(decide(&snapshot, case, SystemTime::now())))
            })
        });
        tally.report(&format!("decision/indexed/{policies}"));

        let start = SystemTime::now();
        let (tally, mut k) = (Tally::default(), 0u64);
        group.bench_function(id("indexed_new_second"), |b| {
            b.iter(|| {
                let case = &cases[k as usize % cases.len()];
                k += 1;
                let time = start + Duration::from_secs(k);
                tally.count(black_box(decide(&snapshot, case, time)))
            })
        });
        tally.report(&format!("decision/indexed_new_second/{policies}"));

        let (tally, mut k) = (Tally::default(), 0u64);
        group.bench_function(id("indexed_cold"), |b| {
            b.iter(|| {
                let case = &cold[k as usize % cold.len()];
                k += 1;
                let time = start + Duration::from_secs(k);
                tally.count(black_box(decide(&snapshot, case, time)))
            })
        });
        tally.report(&format!("decision/indexed_cold/{policies}"));

        if policies <= 1_000 {
            let (tally, mut j) = (Tally::default(), 0);
            group.bench_function(id("plain_authorizer"), |b| {
                b.iter(|| {
                    let case = &cases[j % cases.len()];
                    j += 1;
                    tally.count(black_box(decide_plain(&snapshot, case, SystemTime::now())))
                })
            });
            tally.report(&format!("decision/plain_authorizer/{policies}"));
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
