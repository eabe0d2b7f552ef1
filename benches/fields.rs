//! Response governance on one core: the field plan of a 50-field dataset
//! (`meshgate::synth::fields_inputs`: the example mesh, the orders dataset
//! declaring 50 fields, three personal ones hidden from callers outside
//! sales), the masking throughput of the streaming scanners, and a 1 KB
//! response through the response stage's functions.
//!
//!     taskset -c 1 cargo bench --bench fields -- --warm-up-time 1 --measurement-time 3
//!
//! Cases:
//! - `plan/hit`: the plan of a caller the thread has built it for (the
//!   per-request cost: one lookup);
//! - `plan/miss`: the plan of a caller the thread has not seen (callers
//!   cycle through more than the thread keeps): 50 `read_field` decisions,
//!   what a new caller or a reload costs once;
//! - `mask/json_array`, `mask/ndjson`, `mask/csv`: about 1 MB of 1 KB
//!   records of 10 fields, 3 hidden (hashed, last four, removed), fed in
//!   64 KiB chunks; throughput in bytes of the upstream's body;
//! - `response/1kb`: one 1 KB JSON record with 3 hidden fields: the plan
//!   lookup, the transform made of it, the head (content-type and coding
//!   check) and the rewrite of the body.
//!
//! Before measuring, every case's output is checked: the personal values
//! are gone, the pseudonyms are there, the visible values are byte for
//! byte as sent (numbers not re-formatted, escapes not re-encoded).

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::Method;
use meshgate::masking::{
    tree, BodyTransform, CsvMasker, FieldMasking, HashKeys, Masking, ResponseTransform, Scanner,
    TransformError,
};
use meshgate::{normalize, synth, Metrics, ParsedRequest, Principal, Snapshot, Target};

const FIELDS: usize = 50;
const CHUNK: usize = 64 * 1024;
const RECORDS: usize = 1000;
const EMAIL: &str = "ana.lopez@example.com";

/// The visible members of a record: strings, numbers and escapes as an
/// upstream sends them (a byte-identical copy is the scanner's promise).
fn visible(i: usize) -> Vec<(String, String)> {
    let text = |n: usize| format!("\"order {i} line {n}: {}\"", "x".repeat(92));
    vec![
        ("f3".into(), "1.250e2".into()),
        ("f4".into(), text(4)),
        ("f5".into(), format!("{}", i * 7)),
        (
            "f6".into(),
            format!("\"caf\\u00e9 \\\"{i}\\\" {}\"", "y".repeat(100)),
        ),
        ("f7".into(), "-0.5".into()),
        ("f8".into(), text(8)),
        ("f10".into(), text(10)),
    ]
}

/// A record of 10 members (the 3 personal ones first), about 1 KB.
fn record(i: usize) -> String {
    let mut members = vec![
        format!("\"customer_email\": \"{EMAIL}\""),
        "\"customer_phone\": \"+49 170 1234567\"".to_string(),
        format!("\"customer_name\": \"Ana L\\u00f3pez {}\"", "z".repeat(400)),
    ];
    for (k, v) in visible(i) {
        members.push(format!("\"{k}\": {v}"));
    }
    format!("{{{}}}", members.join(", "))
}

fn json_array() -> Vec<u8> {
    let records: Vec<String> = (0..RECORDS).map(record).collect();
    format!("[{}]", records.join(",\n")).into_bytes()
}

fn ndjson() -> Vec<u8> {
    (0..RECORDS)
        .map(|i| record(i) + "\n")
        .collect::<String>()
        .into_bytes()
}

/// A value's text as a quoted CSV cell.
fn cell(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

fn csv() -> Vec<u8> {
    let mut out = String::from("customer_email,customer_phone,customer_name");
    for (k, _) in visible(0) {
        out.push_str(&format!(",{k}"));
    }
    out.push_str("\r\n");
    for i in 0..RECORDS {
        out.push_str(&format!(
            "{EMAIL},+49 170 1234567,\"L\u{f3}pez, Ana {}\"",
            "z".repeat(400)
        ));
        for (_, v) in visible(i) {
            out.push_str(&format!(",{}", cell(&v)));
        }
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// Everything the cases share.
struct World {
    snapshot: Snapshot,
    principal: Principal,
    keys: HashKeys,
    metrics: Metrics,
    product: Arc<str>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let snapshot = Snapshot::build(&synth::fields_inputs(FIELDS)).expect("snapshot");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("hash.key");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef-bench").expect("key");
        World {
            snapshot,
            principal: "spiffe://mesh.local/ns/finance/sa/reporting"
                .parse()
                .expect("principal"),
            keys: HashKeys::load(&key).expect("hash key"),
            metrics: Metrics::new(),
            product: Arc::from("sales.orders"),
            _dir: dir,
        }
    }

    fn parsed(&self) -> ParsedRequest<'static> {
        ParsedRequest {
            method: "GET",
            path: "/orders",
            source_ip: [10, 0, 0, 1].into(),
            purpose: None,
            tls_version: "TLSv1.3",
            time: SystemTime::now(),
            user: None,
        }
    }

    /// The transform of `principal`'s request to `target` (the route is
    /// found whether or not a plan applies: not masking's cost).
    fn transform(&self, principal: &Principal, target: &Target) -> Arc<dyn ResponseTransform> {
        let plan = self.snapshot.field_plan(principal, target, &self.parsed());
        let masking = Masking {
            plan: plan.as_deref(),
            product: &self.product,
            key: Some(&self.keys),
            metrics: &self.metrics.fields,
            conformance: None,
        };
        FieldMasking::for_plan(masking, None).expect("a plan that hides fields")
    }
}

fn head(content_type: &str, len: usize) -> http::response::Parts {
    http::Response::builder()
        .header("content-type", content_type)
        .header("content-length", len)
        .header("etag", "\"v1\"")
        .body(())
        .expect("head")
        .into_parts()
        .0
}

/// `body` through `transform` in 64 KiB chunks.
fn rewrite(transform: &mut dyn BodyTransform, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for chunk in body.chunks(CHUNK) {
        let part = transform
            .data(Bytes::copy_from_slice(chunk))
            .expect("masked");
        out.extend_from_slice(&part);
    }
    out.extend_from_slice(&transform.end().expect("whole"));
    out
}

/// The masked output of every format keeps each visible value byte for
/// byte and none of the personal ones (record by record: the records of
/// the output are cut apart so that each is searched for its own values).
fn check(name: &str, input: &[u8], output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    assert!(!text.contains(EMAIL), "{name}: an e-mail went out");
    assert!(!text.contains("zzzzzzzz"), "{name}: a name went out");
    assert_eq!(
        text.matches("hmac-sha256:").count(),
        RECORDS,
        "{name}: pseudonyms"
    );
    let records: Vec<&str> = match name {
        "json_array" => text.split("},{").collect(),
        "ndjson" => text.lines().collect(),
        _ => text.split("\r\n").skip(1).collect(),
    };
    assert!(
        records.len() >= RECORDS,
        "{name}: {} records",
        records.len()
    );
    let mut visible_bytes = 0;
    for (i, record) in records.iter().take(RECORDS).enumerate() {
        for (k, v) in visible(i) {
            let v = if name == "csv" {
                cell(&v)
            } else {
                format!("\"{k}\":{v}")
            };
            assert!(record.contains(&v), "{name}: `{v}` not as sent");
            visible_bytes += v.len();
        }
    }
    assert!(
        output.len() < input.len() && visible_bytes < output.len(),
        "{name}"
    );
}

fn plan(c: &mut Criterion) {
    let w = World::new();
    let path = normalize("/orders").expect("path");
    let target = w.snapshot.route(&Method::GET, &path).expect("route");
    let parsed = w.parsed();
    let plan = w
        .snapshot
        .field_plan(&w.principal, target, &parsed)
        .expect("plan");
    assert_eq!(plan.hidden.len() + plan.visible.len(), FIELDS);
    assert_eq!(plan.hidden.len(), 3, "three personal fields hidden");
    let mut g = c.benchmark_group("plan");
    g.bench_function("hit", |b| {
        b.iter(|| black_box(w.snapshot.field_plan(&w.principal, target, &parsed)))
    });
    // More callers than a thread keeps plans for (4,096): each is new.
    let callers: Vec<Principal> = (0..10_000)
        .map(|i| {
            format!("spiffe://mesh.local/ns/finance/sa/svc{i}")
                .parse()
                .expect("principal")
        })
        .collect();
    let mut next = 0;
    g.bench_function("miss", |b| {
        b.iter(|| {
            next = (next + 1) % callers.len();
            let plan = w.snapshot.field_plan(&callers[next], target, &parsed);
            black_box(plan.map(|p| p.hidden.len()))
        })
    });
    g.finish();
}

fn mask(c: &mut Criterion) {
    let w = World::new();
    let path = normalize("/orders").expect("path");
    let target = w.snapshot.route(&Method::GET, &path).expect("route");
    let plan = w
        .snapshot
        .field_plan(&w.principal, target, &w.parsed())
        .expect("plan");
    let level = tree::of(&plan);
    let key = Some(w.keys.current());
    let mut g = c.benchmark_group("mask");
    let cases: [(&str, Vec<u8>); 3] = [
        ("json_array", json_array()),
        ("ndjson", ndjson()),
        ("csv", csv()),
    ];
    for (name, body) in cases {
        let make = || -> Box<dyn BodyTransform> {
            match name {
                "json_array" => Box::new(Json(Scanner::new(level.clone(), key.clone()))),
                "ndjson" => Box::new(Json(Scanner::lines(level.clone(), key.clone()))),
                _ => Box::new(Csv(CsvMasker::new(level.clone(), key.clone()))),
            }
        };
        check(name, &body, &rewrite(make().as_mut(), &body));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(rewrite(make().as_mut(), &body)))
        });
    }
    g.finish();
}

/// The scanners as body transforms (what `FieldMasking` wraps them in).
struct Json(Scanner);
struct Csv(CsvMasker);

impl BodyTransform for Json {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        self.0.feed(&chunk).map(Bytes::from).map_err(failed)
    }
    fn end(&mut self) -> Result<Bytes, TransformError> {
        self.0.finish().map(Bytes::from).map_err(failed)
    }
}

impl BodyTransform for Csv {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, TransformError> {
        self.0.feed(&chunk).map(Bytes::from).map_err(failed)
    }
    fn end(&mut self) -> Result<Bytes, TransformError> {
        self.0.finish().map(Bytes::from).map_err(failed)
    }
}

fn failed(reason: String) -> TransformError {
    TransformError {
        transform: "bench",
        reason,
    }
}

fn response(c: &mut Criterion) {
    let w = World::new();
    let body = Bytes::from(record(1));
    assert!((900..1200).contains(&body.len()), "{} bytes", body.len());
    let path = normalize("/orders").expect("path");
    let target = w.snapshot.route(&Method::GET, &path).expect("route");
    let once = |head: &mut http::response::Parts| {
        let t = w.transform(&w.principal, target);
        let mut rewrite = t
            .head(head)
            .expect("maskable")
            .rewrite()
            .expect("a rewrite");
        let mut out = rewrite.data(body.clone()).expect("masked").to_vec();
        out.extend_from_slice(&rewrite.end().expect("whole"));
        out
    };
    let mut h = head("application/json; charset=utf-8", body.len());
    let out = once(&mut h);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("hmac-sha256:") && !text.contains(EMAIL),
        "{text}"
    );
    for (k, v) in visible(1) {
        let v = format!("\"{k}\":{v}");
        assert!(text.contains(&v), "`{v}` not as sent: {text}");
    }
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("1kb", |b| {
        b.iter_batched(
            || head("application/json; charset=utf-8", body.len()),
            |mut h| black_box(once(&mut h)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, plan, mask, response);
criterion_main!(benches);
