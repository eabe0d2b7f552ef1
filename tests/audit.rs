//! The audit trail through the real binary: one event per request of every
//! outcome, nothing logged that must not be, the hash chain checked by
//! `meshgate audit verify`, back-pressure and drops with a tiny queue, and
//! the W3C trace context continued to the upstream.

mod common;

use std::io::{BufRead, BufReader, Read};

use common::*;

const MARKETING: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";
const FORECASTING: &str = "spiffe://mesh.local/ns/finance/sa/forecasting";

/// The events written whole so far: a line still being written (no
/// newline yet) is left for the next read, as any tail of a live trail.
fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn status(pki: &Pki, who: Option<&str>, mg: &Meshgate, args: &[&str], path: &str) -> String {
    let url = mg.url(path);
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(&url);
    String::from_utf8_lossy(&curl(pki, who, &all).stdout).to_string()
}

#[test]
fn every_outcome_leaves_exactly_one_event_and_shutdown_flushes() {
    let pki = Pki::with_clients(&[
        ("campaigns", MARKETING),
        ("etl", SALES_ETL),
        ("forecasting", FORECASTING),
    ]);
    let up = Upstream::start();
    let audit_file = pki.path("audit.log");
    let mut mg = every_outcome_sidecar(&pki, &up, &audit_file);

    let n = 3;
    let secret = "Bearer SECRET-TOKEN-VALUE";
    for _ in 0..n {
        // allow (the query string and a bearer header must not be logged)
        assert_eq!(
            status(
                &pki,
                Some("reporting"),
                &mg,
                &["-H", &format!("authorization: {secret}")],
                "/orders?customer=SECRET-QUERY"
            ),
            "200"
        );
    }
    for _ in 0..n {
        // rate_limited: the burst of 3 is used up
        assert_eq!(status(&pki, Some("reporting"), &mg, &[], "/orders"), "429");
        // deny
        assert_eq!(status(&pki, Some("campaigns"), &mg, &[], "/orders"), "403");
        // no_route
        assert_eq!(status(&pki, Some("campaigns"), &mg, &[], "/nope"), "404");
        // invalid
        assert_eq!(
            status(&pki, Some("campaigns"), &mg, &[], "/orders%2F1"),
            "400"
        );
        // unauthenticated: the route needs an end-user token
        assert_eq!(
            status(&pki, Some("campaigns"), &mg, &[], "/ledger/summary"),
            "401"
        );
        // allowed, and the upstream fails it: 504 after 750 ms (it holds
        // the request until the test ends, however slow the machine)
        assert_eq!(
            status(&pki, Some("etl"), &mg, &[], "/orders?hold=never"),
            "504"
        );
        up.wait_arrival();
    }
    // shed: while one ledger write is in flight (held at the upstream until
    // the test releases it), the next ones are refused at once.
    let mut slow = curl_command(
        &pki,
        Some("forecasting"),
        &[
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &mg.url("/ledger/entries?hold=ledger"),
        ],
    );
    let slow = std::thread::spawn(move || slow.output().expect("curl"));
    up.wait_arrival();
    for _ in 0..n {
        assert_eq!(
            status(
                &pki,
                Some("forecasting"),
                &mg,
                &["-X", "POST"],
                "/ledger/entries"
            ),
            "503"
        );
    }
    up.release("ledger");
    let slow = slow.join().expect("thread");
    assert_eq!(String::from_utf8_lossy(&slow.stdout), "200");

    // SIGTERM: every queued event is written before the process exits.
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let all = events(&audit_file);
    exactly_one_event_per_request(&all, n);

    allowed_and_denied_events_say_who_what_and_how(&all);
    let text = std::fs::read_to_string(&audit_file).expect("read");
    assert!(
        !text.contains("SECRET-QUERY"),
        "query strings are never logged"
    );
    assert!(
        !text.contains("SECRET-TOKEN"),
        "Authorization is never logged"
    );

    let (ok, out) = audit_verify(&[&audit_file]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("ok: {} events", 8 * n + 1)), "{out}");

    // An edited line is found, with its line number.
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[4] = lines[4].replace("\"decision\":\"", "\"decision\":\"x");
    std::fs::write(&audit_file, lines.join("\n") + "\n").expect("write");
    let (ok, out) = audit_verify(&[&audit_file]);
    assert!(!ok);
    assert!(out.contains("audit.log:5: "), "{out}");
}

/// `n` events of each outcome (and the ledger write let through), nothing else.
fn exactly_one_event_per_request(all: &[serde_json::Value], n: usize) {
    let count = |decision: &str, status: u64| {
        all.iter()
            .filter(|e| e["decision"] == decision && e["status"] == status)
            .count()
    };
    assert_eq!(count("allow", 200), n + 1);
    assert_eq!(count("rate_limited", 429), n);
    assert_eq!(count("deny", 403), n);
    assert_eq!(count("no_route", 404), n);
    assert_eq!(count("invalid", 400), n);
    assert_eq!(count("unauthenticated", 401), n);
    assert_eq!(count("allow", 504), n);
    assert_eq!(count("shed", 503), n);
    assert_eq!(all.len(), 8 * n + 1, "exactly one event per request");
}

/// What an allowed request's event says, and a denied one's.
fn allowed_and_denied_events_say_who_what_and_how(all: &[serde_json::Value]) {
    let ok = all
        .iter()
        .find(|e| e["status"] == 200)
        .expect("an allowed event");
    assert_eq!(ok["type"], "request");
    assert_eq!(ok["principal"]["type"], "Mesh::Service");
    assert_eq!(ok["principal"]["id"], REPORTING);
    assert_eq!(ok["product"], "sales.orders");
    assert_eq!(ok["action"], "read");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/orders");
    assert_eq!(ok["tier"], "three");
    assert_eq!(ok["tls_version"], "TLSv1.3");
    assert_eq!(ok["complete"], true);
    assert!(ok["policies"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p == "sales.orders.finance-may-read")));
    assert!(ok["bytes_out"].as_u64().is_some_and(|b| b > 0), "{ok}");
    assert!(ok["upstream_us"].as_u64().is_some(), "{ok}");
    assert!(ok["duration_us"].as_u64().is_some(), "{ok}");
    assert_eq!(ok["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(ok["request_id"].as_str().map(str::len), Some(32));
    assert!(ok["policy_version"].as_str().is_some_and(|v| v.len() == 64));
    assert!(ok["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
    assert!(
        ok["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
        "{ok}"
    );
    let denied = all.iter().find(|e| e["status"] == 403).expect("a deny");
    assert_eq!(denied["principal"]["id"], MARKETING);
    assert!(denied["upstream_us"].is_null());
}

/// The sidecar of `every_outcome_leaves_exactly_one_event_and_shutdown_flushes`.
fn every_outcome_sidecar(pki: &Pki, up: &Upstream, audit_file: &std::path::Path) -> Meshgate {
    // Orders time out after 3 x 250 ms, the ledger (its contract made to
    // promise 20 s here) after 3 x 20 s; finance reporting gets 3 requests a
    // minute; the ledger serves one at a time.
    let sidecar = Meshgate::builder(pki, up)
        .policies()
        .timeout("latency_factor: 3")
        .audit_file(audit_file)
        .extra(&format!(
            "quotas:\n  tiers:\n    three: {{ rate: 1/m, burst: 3 }}\n  consumers:\n    \
             - {{ id: \"{REPORTING}\", tier: three }}\n  products:\n    \
             finance.ledger:\n      max_in_flight: 1\n"
        ));
    let ledger = pki.path("policies/domains/finance/ledger.odcs.yaml");
    let contract = std::fs::read_to_string(&ledger).expect("ledger contract");
    let promise = "{ property: latency, value: 1, unit: s }";
    assert!(contract.contains(promise), "{contract}");
    std::fs::write(
        &ledger,
        contract.replace(promise, "{ property: latency, value: 20, unit: s }"),
    )
    .expect("write contract");
    sidecar.start()
}

#[test]
fn metrics_count_requests_by_product_action_and_decision() {
    let pki = Pki::with_clients(&[("campaigns", MARKETING)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra("metrics:\n  consumer_label: service\n  max_consumers: 1\n")
        .start();
    // The denied caller first: it takes no consumer label of its own, so the
    // one slot is left for the allowed one.
    assert_eq!(status(&pki, Some("campaigns"), &mg, &[], "/orders"), "403");
    assert_eq!(status(&pki, Some("reporting"), &mg, &[], "/orders"), "200");
    assert_eq!(status(&pki, Some("campaigns"), &mg, &[], "/nope"), "404");
    let m = mg.metrics();
    for sample in [
        r#"meshgate_requests_total{product="sales.orders",action="read",decision="allow",class="2xx"}"#,
        r#"meshgate_requests_total{product="sales.orders",action="read",decision="deny",class="4xx"}"#,
        r#"meshgate_requests_total{product="",action="",decision="no_route",class="4xx"}"#,
        r#"meshgate_request_duration_seconds_count{product="sales.orders",decision="allow"}"#,
        r#"meshgate_upstream_duration_seconds_count{product="sales.orders"}"#,
        r#"meshgate_consumer_requests_total{product="sales.orders",consumer="spiffe://mesh.local/ns/finance/sa/reporting",decision="allow"}"#,
        r#"meshgate_consumer_requests_total{product="sales.orders",consumer="other",decision="deny"}"#,
        r#"meshgate_consumer_requests_total{product="",consumer="other",decision="no_route"}"#,
    ] {
        assert_eq!(metric_value(&m, sample), 1.0, "{sample}\n{m}");
    }
    // The audit events go to stdout here (discarded): 3 written, none lost.
    mg.wait_metric("meshgate_audit_events_total", 3.0);
    assert_eq!(mg.metric("meshgate_audit_dropped_total"), 0.0);
}

#[test]
fn trace_context_is_continued_to_the_upstream_and_audited() {
    let pki = Pki::new();
    let up = Upstream::start();
    let audit_file = pki.path("audit.log");
    let mut mg = Meshgate::builder(&pki, &up).audit_file(&audit_file).start();
    let upstream_headers = |extra: &[&str]| upstream_headers(&pki, &mg, extra);
    let get = header_values;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let h = upstream_headers(&[
        "-H",
        &format!("traceparent: {incoming}"),
        "-H",
        "tracestate: vendor=opaque",
    ]);
    let tp = get(&h, "traceparent");
    assert_eq!(tp.len(), 1, "{h:?}");
    assert!(
        tp[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp:?}"
    );
    assert!(tp[0].ends_with("-01"));
    assert_ne!(tp[0], incoming, "meshgate's own span is the parent");
    assert_eq!(get(&h, "tracestate"), vec!["vendor=opaque".to_string()]);

    only_what_w3c_defines_goes_on(&pki, &mg, incoming);

    // None, or an invalid one: a new trace; tracestate goes with the old one.
    let h = upstream_headers(&[
        "-H",
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "-H",
        "tracestate: vendor=opaque",
    ]);
    let tp = get(&h, "traceparent");
    assert_eq!(tp.len(), 1);
    assert!(
        !tp[0].contains("00000000000000000000000000000000"),
        "{tp:?}"
    );
    assert!(get(&h, "tracestate").is_empty());
    let h = upstream_headers(&[]);
    let fresh = get(&h, "traceparent");
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].len(), 55);

    a_refused_requests_log_line_carries_its_span(&pki, &mg, incoming);

    // A HEAD has no body to send: complete.
    let url = mg.url("/headers");
    let out = curl(
        &pki,
        Some("reporting"),
        &["-sS", "-I", "-o", "/dev/null", "-w", "%{http_code}", &url],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // A client that gives up before the response (held at the upstream
    // until the test ends) still leaves its event.
    let url = mg.url("/abandoned?hold=never");
    let mut gone = curl_command(&pki, Some("reporting"), &["-sS", "--max-time", "30", &url]);
    let mut gone = gone.spawn().expect("curl");
    up.wait_arrival();
    let _ = gone.kill();
    let _ = gone.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while events(&audit_file).len() < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "no event for the abandoned request"
        );
        mg.logs
            .wait_for(mg.logs.len(), std::time::Duration::from_millis(100), |_| {
                true
            });
    }

    assert!(mg.terminate().success());
    let all = events(&audit_file);
    assert_eq!(all.len(), 8, "the two requests above add two");
    assert_eq!(all[5]["decision"], "invalid");
    assert_eq!(all[5]["path"], "/a%2Fb", "the path as sent when refused");
    assert_eq!(all[6]["method"], "HEAD");
    assert_eq!(all[6]["complete"], true, "{}", all[6]);
    assert_eq!(all[7]["status"], 499, "{}", all[7]);
    assert_eq!(all[7]["error"], "client_closed_request");
    assert_eq!(all[7]["decision"], "allow");
    assert_eq!(all[7]["complete"], false);
    assert_eq!(all[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(all[4]["trace_id"].as_str(), Some(&fresh[0][3..35]));
    assert!(
        all[0]["product"].is_null(),
        "authenticated mode: no product"
    );
    assert_eq!(all[0]["decision"], "allow");
}

/// The headers the upstream received for a GET of `/headers` as `reporting`
/// with curl arguments `extra`.
fn upstream_headers(pki: &Pki, mg: &Meshgate, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["-sS"];
    args.extend_from_slice(extra);
    let url = mg.url("/headers");
    args.push(&url);
    let out = curl(pki, Some("reporting"), &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    serde_json::from_value(v["headers"].clone()).expect("headers")
}

fn header_values(h: &[(String, String)], name: &str) -> Vec<String> {
    h.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Tracing off, the same W3C rules: only the flags it defines (sampled,
/// random) go on; a tracestate only valid and re-serialised.
fn only_what_w3c_defines_goes_on(pki: &Pki, mg: &Meshgate, incoming: &str) {
    let h = upstream_headers(
        pki,
        mg,
        &[
            "-H",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
            "-H",
            "tracestate: vendor=opaque ,, other=1",
        ],
    );
    let tp = header_values(&h, "traceparent");
    assert!(tp[0].ends_with("-03"), "unknown flags zeroed: {tp:?}");
    assert_eq!(
        header_values(&h, "tracestate"),
        vec!["vendor=opaque,other=1"]
    );
    let tp = format!("traceparent: {incoming}");
    let h = upstream_headers(
        pki,
        mg,
        &["-H", &tp, "-H", "tracestate: vendor=opaque,Not A Key=1"],
    );
    assert!(
        header_values(&h, "tracestate").is_empty(),
        "invalid: dropped {h:?}"
    );
}

/// Log lines of a request carry its span (request id, trace id): a request
/// refused with the trace `incoming` continues.
fn a_refused_requests_log_line_carries_its_span(pki: &Pki, mg: &Meshgate, incoming: &str) {
    let url = mg.url("/a%2Fb");
    let out = curl(
        pki,
        Some("reporting"),
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("traceparent: {incoming}"),
            &url,
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");
    let line = mg
        .logs
        .wait_for(0, std::time::Duration::from_secs(10), |l| {
            l.contains("request refused")
        })
        .expect("a refusal log line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log");
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    assert_eq!(v["span"]["name"], "request", "{line}");
    assert_eq!(
        v["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
}

/// Sends `n` requests on one connection in the background.
fn requests_in_background(
    pki: &Pki,
    mg: &Meshgate,
    n: usize,
) -> std::thread::JoinHandle<std::process::Output> {
    let url = mg.url("/headers");
    let mut args = vec!["-s".to_string()];
    for _ in 0..n {
        args.extend(["-o", "/dev/null", "-w", "%{http_code}\\n", &url].map(String::from));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = curl_command(pki, Some("reporting"), &refs);
    std::thread::spawn(move || cmd.output().expect("curl"))
}

/// Reads the sidecar's stdout (the audit sink) to its end on a thread.
fn drain(stdout: std::process::ChildStdout) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

#[test]
fn a_full_queue_blocks_requests_until_the_sink_takes_events() {
    let pki = Pki::new();
    let up = Upstream::start();
    // stdout is a pipe nobody reads yet: once the pipe buffer is full the
    // writer waits, the one-event queue fills, and requests wait for room.
    let mut mg = Meshgate::builder(&pki, &up)
        .audit("queue: 1")
        .audit("when_full: block")
        .audit("max_wait: 60s")
        .stdout_piped()
        .start();
    let stdout = mg.child.stdout.take().expect("stdout");
    let n = 400;
    let load = requests_in_background(&pki, &mg, n);
    mg.wait_metric("meshgate_audit_backpressure_waiting", 1.0);
    // The sink takes events again: every request completes, none is lost.
    let lines = drain(stdout);
    let out = load.join().expect("curl");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), n, "{codes}");
    mg.wait_metric("meshgate_audit_events_total", n as f64);
    assert_eq!(mg.metric("meshgate_audit_dropped_total"), 0.0);
    assert!(mg.metric("meshgate_audit_backpressure_waits_total") >= 1.0);
    assert!(mg.metric("meshgate_audit_backpressure_seconds_total") > 0.0);
    assert!(mg.terminate().success());
    let lines = lines.join().expect("lines");
    assert_eq!(lines.len(), n);
    let file = pki.path("stdout.log");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let (ok, out) = audit_verify(&[&file]);
    assert!(ok && out.contains(&format!("ok: {n} events")), "{out}");
}

#[test]
fn a_full_queue_drops_counts_and_records_the_loss_in_drop_mode() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mut mg = Meshgate::builder(&pki, &up)
        .audit("queue: 1")
        .audit("when_full: drop")
        .stdout_piped()
        .start();
    let mut stdout = mg.child.stdout.take().expect("stdout");
    let n = 400;
    // Nobody reads: the requests go on, their events are dropped.
    let out = requests_in_background(&pki, &mg, n).join().expect("curl");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(codes.lines().filter(|c| *c == "200").count(), n, "{codes}");
    let dropped = mg.metric("meshgate_audit_dropped_total");
    assert!(dropped > 0.0, "{}", mg.metrics());
    assert!(
        mg.logs.dump().contains("AUDIT EVENTS LOST"),
        "a loud log line"
    );
    // One more request after the sink drains: its event records the loss.
    let mut text = String::new();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut text);
        text
    });
    assert_eq!(status(&pki, Some("reporting"), &mg, &[], "/headers"), "200");
    assert!(mg.terminate().success());
    let text = reader.join().expect("reader");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let written = lines.iter().filter(|e| e["type"] == "request").count();
    let recorded_lost: u64 = lines
        .iter()
        .filter(|e| e["type"] == "dropped")
        .filter_map(|e| e["count"].as_u64())
        .sum();
    assert_eq!(
        written as u64 + recorded_lost,
        n as u64 + 1,
        "nothing silently lost"
    );
    assert_eq!(recorded_lost as f64, dropped);
    let file = pki.path("stdout.log");
    std::fs::write(&file, text).expect("write");
    let (ok, out) = audit_verify(&[&file]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{recorded_lost} reported dropped")),
        "{out}"
    );
}

/// An upstream whose body breaks off after the head (it closes the
/// connection mid-body) was audited `error: null, complete: false`, the
/// same as a client that went away; it is an `upstream_failed` now,
/// masked or passed through.
#[test]
fn an_upstream_body_that_breaks_off_is_audited_as_an_upstream_failure() {
    let pki = Pki::new();
    let record = r#"{"id": "SO-1", "customer_email": "ana@example.com"}"#;
    let up = common::json_upstream::FixedUpstream::start(vec![(
        "/orders/cut",
        "application/json",
        format!("[{record}, "),
    )]);
    let audit = pki.path("audit.log");
    let mut mg = common::fields::masked(&pki, &up).audit_file(&audit).start();
    // Masked for reporting; passed as it comes to sales (nothing hidden).
    for (who, args) in [
        ("reporting", &[][..]),
        ("orders", &["-H", "x-data-purpose: reporting"][..]),
    ] {
        let mut all = vec!["--http1.1"];
        all.extend_from_slice(args);
        let (code, status, body) = common::fields::get(&pki, who, &all, &mg.url("/orders/cut"));
        assert_ne!(
            code, 0,
            "{who}: a cut body looked complete: {status} {body}"
        );
    }
    mg.wait_metric("meshgate_audit_events_total", 2.0);
    assert!(mg.terminate().success());
    let cut: Vec<_> = events(&audit)
        .into_iter()
        .filter(|e| e["path"] == "/orders/cut")
        .collect();
    assert_eq!(cut.len(), 2, "{cut:?}");
    for e in &cut {
        assert_eq!(e["status"], 200, "{e}");
        assert_eq!(e["complete"], false, "{e}");
        assert_eq!(e["error"], "upstream_failed", "{e}");
    }
}
