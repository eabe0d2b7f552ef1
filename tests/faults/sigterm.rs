//! SIGTERM under load.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::*;
use crate::load::*;
use crate::probes::*;

#[test]
fn sigterm_under_load_completes_or_refuses_every_request_and_audits_each_completed_one() {
    let _heavy = heavy();
    let pki = Pki::new();
    let up = Upstream::start();
    let file = pki.path("audit.log");
    let mut mg = quiet(&pki, &up)
        .timeout("shutdown_grace: 10s")
        .audit_file(&file)
        .start();
    let tls = rustls_client(&pki, "reporting");
    // Each request spends 100 ms at the upstream, so some are always in flight.
    let path = "/slow/100";
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::new("h1-kept", tls.clone(), path, Mode::KeepAlive));
    }
    for _ in 0..2 {
        clients.push(Client::new("h1-fresh", tls.clone(), path, Mode::Fresh));
    }
    clients.push(Client::new("h2", tls.clone(), path, Mode::H2(4)));
    let tasks = 3 + 2 + 4;
    let load = Load::start(
        mg.data,
        clients,
        Bounds {
            max_per_client: 10_000,
            stop_on_refused: true,
        },
    );
    load.wait("responses", EVENT_WAIT, |r| r.len() >= 60);

    let term = Instant::now();
    mg.sigterm();
    let exit = mg.exit_within(TERMINATE_DEADLINE);
    let exited = Instant::now();
    assert!(exit.success(), "exit {exit:?}\n{}", mg.logs.dump());
    assert!(mg
        .logs
        .wait_for(0, EVENT_WAIT, |l| l.contains("\"drained\""))
        .is_some());
    // Every client goes on until it meets the closed listener.
    load.wait("every client refused", EVENT_WAIT, |r| {
        let done: HashSet<usize> = r
            .iter()
            .filter(|r| r.outcome == Outcome::Refused)
            .map(|r| r.client)
            .collect();
        done.len() == tasks
    });
    let (records, _) = load.finish();
    // The trace ids the upstream received (meshgate forwards the caller's
    // trace with a span of its own).
    let reached: HashSet<String> = up
        .seen()
        .iter()
        .flat_map(|s| s.header("traceparent"))
        .filter_map(|tp| tp.split('-').nth(1).map(str::to_string))
        .collect();
    let verified = verify_chain(&[&file]);
    let events = audit_events(&file);
    let by_id = events_by_request_id(&events);
    let by_trace: HashMap<&str, &serde_json::Value> = by_id
        .values()
        .map(|e| (e["trace_id"].as_str().unwrap_or_default(), e))
        .collect();

    // Classify every request.
    let Classified {
        classes,
        mut failures,
        answered,
        cut,
    } = classify(&records, &by_id, &by_trace, &reached, term, exited);
    // No event of a request whose client did not get the response, but for
    // one cut on a closing connection before it was forwarded (499).
    for (id, e) in &by_id {
        let trace = e["trace_id"].as_str().unwrap_or_default();
        if !answered.contains(id) && !cut.contains(trace) {
            failures.push(format!("processed, response lost: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{classes:?}\n{}",
        failures[..failures.len().min(5)].join("\n")
    );
    assert!(
        classes
            .get("200, in flight at SIGTERM")
            .copied()
            .unwrap_or(0)
            > 0,
        "{classes:?}"
    );
    let unanswered: BTreeMap<String, usize> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::NotSent(e) | Outcome::NoResponse(e) | Outcome::Handshake(e) => {
                Some(format!("{} {}: {e}", r.who, r.outcome.kind()))
            }
            _ => None,
        })
        .fold(BTreeMap::new(), |mut m, k| {
            *m.entry(k).or_insert(0) += 1;
            m
        });
    eprintln!(
        "sigterm: {} requests, exit after {:?}: {classes:?} {unanswered:?}; {} audit events; {}",
        records.len(),
        exited - term,
        by_id.len(),
        verified.trim()
    );
}

/// What became of each request of the SIGTERM test.
struct Classified {
    /// How many requests had each fate.
    classes: BTreeMap<&'static str, usize>,
    /// The requests whose fate is not one allowed, described.
    failures: Vec<String>,
    /// The request ids of every response received.
    answered: HashSet<String>,
    /// The trace ids of the requests cut on a closing connection before
    /// they were forwarded.
    cut: HashSet<String>,
}

/// Whether a request that got no response was cut on a closing connection
/// before meshgate forwarded it: the upstream never received its trace
/// (`reached`), and meshgate either has no event of it (never read) or one
/// that says so (499, incomplete, no upstream time).
fn cut_unforwarded(
    r: &Record,
    by_trace: &HashMap<&str, &serde_json::Value>,
    reached: &HashSet<String>,
) -> bool {
    !reached.contains(&r.trace_id)
        && by_trace.get(r.trace_id.as_str()).is_none_or(|e| {
            e["status"] == 499 && e["complete"] == false && e["upstream_us"].is_null()
        })
}

/// Sorts every request by its fate around SIGTERM (sent at `term`, the
/// process gone at `exited`), checking each answered one against its audit
/// event (by request id; `by_trace`: the events by trace id; `reached`: the trace ids the
/// upstream received).
///
/// Whether a refusal came after the signal is judged by when the client
/// learnt its outcome (`done`), not by when it began the request (`sent`):
/// `sent` is taken before the connect and the write, and the sidecar acts
/// on the signal some time after `term` (the `kill` command, then its
/// signal task), so a request begun just before `term` can still meet the
/// closed listener, be reset in the listen backlog, or sit unread on an
/// idle kept connection that the drain closes (runs of this test on a
/// loaded machine saw each, 6 in 30). That it was not processed is judged
/// by the evidence: no response, and the upstream never received it.
fn classify(
    records: &[Record],
    by_id: &HashMap<String, serde_json::Value>,
    by_trace: &HashMap<&str, &serde_json::Value>,
    reached: &HashSet<String>,
    term: Instant,
    exited: Instant,
) -> Classified {
    let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut answered = HashSet::new();
    let mut cut = HashSet::new();
    for r in records {
        let after_term = r.done > term;
        let class = match &r.outcome {
            Outcome::Response {
                status, request_id, ..
            } if *status == 200 || *status == 503 => {
                answered.insert(request_id.clone());
                match by_id.get(request_id) {
                    Some(e)
                        if e["status"].as_u64() == Some(u64::from(*status))
                            && e["trace_id"].as_str() == Some(r.trace_id.as_str())
                            && e["complete"] == true => {}
                    other => failures.push(format!("{r:?}: event {other:?}")),
                }
                match (*status, r.sent < term && r.done > term) {
                    (200, true) => "200, in flight at SIGTERM",
                    (200, false) => "200",
                    _ => "503",
                }
            }
            // The listener was closed: the right answer to a new connection.
            Outcome::Refused if after_term => "connection refused (listener closed)",
            // Connected into the listen backlog just before it closed.
            Outcome::Handshake(_) if after_term => "handshake cut (backlog at close)",
            // Sent on a kept connection as meshgate closed it after its last
            // response (HTTP/1.1 keep-alive race; HTTP/2 GOAWAY): never
            // forwarded, so safe to retry. Mostly never read at all; once in
            // 30 stressed runs an HTTP/2 stream opened just after the
            // signal entered the pipeline and was cut as the connection
            // closed, audited 499 before it reached the upstream.
            Outcome::NotSent(_) | Outcome::NoResponse(_)
                if after_term && r.reused && cut_unforwarded(r, by_trace, reached) =>
            {
                cut.insert(r.trace_id.clone());
                "no response on a closing connection (not forwarded)"
            }
            _ => {
                let at = |t: Instant| {
                    if t >= term {
                        format!("+{:?}", t - term)
                    } else {
                        format!("-{:?}", term - t)
                    }
                };
                failures.push(format!(
                    "sent at SIGTERM{}, done at SIGTERM{} (exit at +{:?}): {r:?}",
                    at(r.sent),
                    at(r.done),
                    exited - term
                ));
                "FAILED"
            }
        };
        *classes.entry(class).or_insert(0) += 1;
    }
    Classified {
        classes,
        failures,
        answered,
        cut,
    }
}

/// The race the load above meets now and then, made certain: connections
/// meshgate accepted before SIGTERM (their TLS handshakes done) that have
/// sent nothing yet. Their first request must still be served, and the
/// connection then closed; hyper, told to shut down first, closed such a
/// connection at once, unread, and the client of a new connection cannot
/// know that it may retry.
#[test]
fn a_connection_accepted_before_sigterm_has_its_first_request_served() {
    let _heavy = heavy();
    let pki = Pki::new();
    let up = Upstream::start();
    let mut mg = quiet(&pki, &up).start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (mut h1, h2) = rt.block_on(async {
        let (h1, _) = h1_client(&pki, "reporting", mg.data).await;
        let tls = tls_connect_alpn(&pki, "reporting", mg.data, &[b"h2"]).await;
        let (h2, driver) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(driver);
        (h1, h2)
    });
    eventually("both connections open", EVENT_WAIT, || {
        mg.metric("meshgate_open_connections") == 2.0
    });
    let from = mg.logs.len();
    mg.sigterm();
    mg.logs
        .wait_for(from, EVENT_WAIT, |l| l.contains("shutting down"))
        .expect("draining");

    let (r1, r2) = rt.block_on(async {
        let req = http::Request::get("/orders/1")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let r1 = read_response(h1.send_request(req).await).await;
        let mut h2 = h2;
        let req = http::Request::get("https://localhost/orders/2")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let r2 = match h2.ready().await {
            Ok(()) => read_response(h2.send_request(req).await).await,
            Err(e) => send_error(&e),
        };
        (r1, r2)
    });
    assert_eq!(r1.status(), Some(200), "HTTP/1.1: {r1:?}");
    assert_eq!(r2.status(), Some(200), "HTTP/2: {r2:?}");
    assert!(
        h1.is_closed() || rt.block_on(h1.ready()).is_err(),
        "HTTP/1.1 connection closed after"
    );
    let exit = mg.exit_within(TERMINATE_DEADLINE);
    assert!(exit.success(), "{exit:?}\n{}", mg.logs.dump());
}
