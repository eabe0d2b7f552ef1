//! One local quota check: the consumer's tier found by its rules, the GCRA
//! bucket of (product, consumer) taken from governor's keyed store, the
//! `RateLimit` state computed. `hot`: the same consumer every time; `spread`:
//! 10,000 consumers in turn. The tier is generous, so every check passes.
//! Target from the issue: p50 ≤ 200 ns.
//!
//! With Redis (a redis-server started here on a free loopback port; skipped
//! with a message when redis-server is missing): `redis/miss`, a check that
//! asks Redis (one GCRA script round trip), and `redis/hit`, a consumer Redis
//! refused, answered by the local pre-check; `redis/leased`, a busy consumer
//! with the default lease (8 requests per round trip, 7 spent locally);
//! `local/admit` is the same async
//! path without Redis, for comparison, and `local/admit+headers` adds what the
//! proxy does around it (in-flight limits on the product and the consumer,
//! the `RateLimit` headers).
//!
//!     cargo bench --bench quota

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use meshgate::{Consumer, Quotas, QuotasConfig, Verdict};

fn quota(c: &mut Criterion) {
    let config: QuotasConfig = meshgate::parse_yaml(
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
            service_groups: &[],
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
                service_groups: &[],
            };
            i += 1;
            let v = quotas.check(black_box("sales.orders"), Some(200.0), &who);
            assert!(matches!(v, Verdict::Allowed(_)));
            black_box(v)
        })
    });
    group.finish();
}

/// The redis-server of the bench, killed on drop (also when a bench panics).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Option<(Server, String)> {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let mut child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take()?;
    let server = Server(child);
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        if line.contains("Ready to accept connections") {
            return Some((server, format!("redis://127.0.0.1:{port}")));
        }
    }
    None
}

fn shared(c: &mut Criterion) {
    let Some((server, url)) = redis_server() else {
        eprintln!("\n*** SKIPPING redis benches: redis-server is not installed ***\n");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let yaml = |backend: &str, lease: u32| {
        format!(
            "backend: {backend}\nredis: {{ url: \"{url}\", lease: {lease} }}\ntiers:\n  gold: {{ rate: 1000000000/s, burst: 1000000, max_in_flight: 1000 }}\n  scarce: {{ rate: 1/h, burst: 1 }}\nproducts: {{ sales.orders: {{ max_in_flight: 1000 }} }}\nconsumers:\n  - {{ id: heavy, tier: scarce }}\n  - {{ prefix: \"spiffe://\", tier: gold }}\n"
        )
    };
    let parse =
        |y: String| -> QuotasConfig { meshgate::parse_yaml(&y, "quotas").expect("quotas config") };
    // lease 1: every allowed check is a round trip (the miss); the default
    // lease of 8 lets a busy consumer spend 7 of 8 checks locally.
    let redis = Quotas::new(parse(yaml("redis", 1))).expect("redis quotas");
    let leasing = Quotas::new(parse(yaml("redis", 8))).expect("leasing quotas");
    let local = Quotas::new(parse(yaml("local", 1))).expect("local quotas");
    let light = Consumer {
        service: "spiffe://mesh.local/ns/finance/sa/reporting",
        user: None,
        service_groups: &[],
    };
    let heavy = Consumer {
        service: "heavy",
        user: None,
        service_groups: &[],
    };
    let admit = |q: &Quotas, who: &Consumer<'_>| {
        rt.block_on(q.admit("sales.orders", None, who))
            .map(|a| a.state.map(|s| s.remaining))
    };
    assert!(admit(&redis, &light).is_ok(), "Redis answers");
    assert!(
        admit(&redis, &heavy).is_ok(),
        "the first scarce request passes"
    );
    assert!(admit(&redis, &heavy).is_err(), "the second is refused");
    let mut group = c.benchmark_group("quota");
    group.bench_function("local/admit", |b| {
        b.iter(|| black_box(admit(&local, &light).expect("allowed")))
    });
    // As the proxy does it: admission (in-flight places under both limits),
    // the headers set on the response, the places given back.
    let mut headers = http::HeaderMap::new();
    group.bench_function("local/admit+headers", |b| {
        b.iter(|| {
            let admitted = rt
                .block_on(local.admit("sales.orders", None, &light))
                .expect("allowed");
            if let Some(state) = &admitted.state {
                state.set_headers(&mut headers);
            }
            black_box(&headers);
        })
    });
    group.bench_function("redis/miss", |b| {
        b.iter(|| black_box(admit(&redis, &light).expect("allowed")))
    });
    group.bench_function("redis/leased", |b| {
        b.iter(|| black_box(admit(&leasing, &light).expect("allowed")))
    });
    group.bench_function("redis/hit", |b| {
        b.iter(|| black_box(admit(&redis, &heavy).expect_err("refused locally")))
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, quota, shared);
criterion_main!(benches);
