//! What recording a request costs: `metrics/observe_request` (the request
//! counter, the duration histogram by product and decision) on the request's
//! thread, and `audit/pipeline`, the sustained cost of one audit event: a
//! place taken in the queue, the event's JSON members written as it is sent
//! (on the sending thread), and the writer thread's SHA-256 chain and
//! buffered write to a file (tmpfs or disk, wherever the temp dir is). The
//! pipeline figure is per event at the rate the writer keeps up with (the
//! queue is bounded: when the writer is the bottleneck, senders wait), so it
//! bounds the audited requests per second.
//! The event is an allowed read as the proxy records it, with the outcome of
//! a real decision (a synthetic mesh's snapshot deciding the request): its
//! product, action, resource and determining policy ids are written.
//!
//!     cargo bench --bench audit

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Method, StatusCode};
use meshgate::synth;
use meshgate::ConnInfo;
use meshgate::{normalize, HttpFacts, Snapshot};
use meshgate::{Audit, AuditConfig, Event, FullMode, SinkKind};
use meshgate::{Metrics, Observed};
use meshgate::{PeerIdentity, Principal};

/// The caller: its domain's service, which the synthetic policies name.
const ID: &str = "spiffe://mesh.local/ns/sales/sa/app";

fn conn() -> Arc<ConnInfo> {
    let principal: Principal = ID.parse().expect("principal");
    Arc::new(ConnInfo::new(
        PeerIdentity {
            principal,
            principal_header: HeaderValue::from_static(ID),
            xfcc: HeaderValue::from_static("x"),
            cert_sha256: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        },
        "127.0.0.1:40000".parse().expect("addr"),
        "TLSv1.3",
    ))
}

/// The event of the first read of a synthetic mesh (100 products, 1,000
/// policies) that its policies allow through at least two policies, decided
/// as the proxy decides it.
fn decided_event(conn: &Arc<ConnInfo>) -> Event {
    let snapshot = Snapshot::build(&synth::inputs(100, 1_000, 42)).expect("synthetic snapshot");
    let headers = http::HeaderMap::new();
    for p in 0..100 {
        let path = normalize(&format!("/p{p}/rows")).expect("path");
        let facts = HttpFacts {
            method: &Method::GET,
            path: &path,
            headers: &headers,
            source_ip: conn.peer.ip(),
            tls_version: conn.tls_version,
            time: SystemTime::now(),
            user: None,
        };
        let Ok(outcome) = snapshot.decide_http(&conn.identity.principal, &facts) else {
            continue;
        };
        if !outcome.decision.allowed || outcome.decision.policies.len() < 2 {
            continue;
        }
        eprintln!(
            "audit/pipeline: the event of GET {} ({} {} of {}, allowed by {})",
            path.decoded(),
            outcome.action.as_str(),
            outcome.resource,
            outcome.product,
            outcome.decision.policies.join(", ")
        );
        return Event {
            time: SystemTime::now(),
            request_id: HeaderValue::from_static("5b1f0c2e9a7d4e3f0000000000000001"),
            trace_id: [0x4b; 16],
            conn: conn.clone(),
            user: None,
            tier: Some(Arc::from("gold")),
            policy_version: Some(outcome.policy_version.clone()),
            outcome: Some(Arc::new(outcome)),
            method: Method::GET,
            path: path.decoded().to_string(),
            decision: "allow",
            error: None,
            status: 200,
            upstream: Some(Duration::from_micros(180)),
            duration: Duration::from_micros(230),
            bytes_in: 0,
            bytes_out: 2048,
            complete: true,
            grpc_status: None,
            reason: None,
            violations: Default::default(),
        };
    }
    panic!("no read of the synthetic mesh is allowed by two policies");
}

/// A new event like `t`, as each request makes its own.
fn event(t: &Event) -> Event {
    Event {
        time: SystemTime::now(),
        request_id: t.request_id.clone(),
        trace_id: t.trace_id,
        conn: t.conn.clone(),
        user: None,
        tier: t.tier.clone(),
        outcome: t.outcome.clone(),
        policy_version: t.policy_version.clone(),
        method: t.method.clone(),
        path: t.path.clone(),
        decision: t.decision,
        error: t.error,
        status: t.status,
        grpc_status: t.grpc_status,
        upstream: t.upstream,
        duration: t.duration,
        bytes_in: t.bytes_in,
        bytes_out: t.bytes_out,
        complete: t.complete,
        reason: t.reason,
        violations: t.violations,
    }
}

fn recording(c: &mut Criterion) {
    let metrics = Metrics::new();
    let product: Arc<str> = Arc::from("sales.orders");
    let service = HeaderValue::from_static(ID);
    c.bench_function("metrics/observe_request", |b| {
        b.iter(|| {
            metrics.observe_request(black_box(&Observed {
                product: Some(&product),
                action: "read",
                decision: "allow",
                status: StatusCode::OK,
                elapsed: Duration::from_micros(230),
                tier: None,
                service: &service,
                deprecated: None,
                client_fault: false,
            }))
        })
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let config = AuditConfig {
        sink: SinkKind::File,
        file: Some(dir.path().join("audit.log")),
        max_file_bytes: 256 * 1024 * 1024,
        retain: 2,
        queue: 16 * 1024,
        when_full: FullMode::Block,
        max_wait: Duration::from_secs(60),
        flush_interval: Duration::from_millis(2),
        checkpoint_interval: Duration::from_secs(60),
    };
    let (audit, writer) = Audit::start(&config, metrics.audit.clone())
        .expect("audit")
        .expect("enabled");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let template = decided_event(&conn());
    c.bench_function("audit/pipeline", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let slot = audit.slot().await.expect("slot").expect("place");
                    slot.send(event(&template));
                }
                assert!(audit.flush(Duration::from_secs(10)).await);
                t0.elapsed()
            })
        })
    });
    drop(audit);
    writer.join(Duration::from_secs(30));
}

criterion_group!(benches, recording);
criterion_main!(benches);
