use super::*;
use crate::model::identity::{PeerIdentity, Principal};
use std::pin::Pin;
use std::task::Poll;

pub(super) fn conn() -> Arc<ConnInfo> {
    let principal: Principal = "spiffe://acme.example/ns/finance/sa/reporting"
        .parse()
        .expect("principal");
    Arc::new(ConnInfo::new(
        PeerIdentity {
            principal_header: HeaderValue::from_static(
                "spiffe://acme.example/ns/finance/sa/reporting",
            ),
            principal,
            xfcc: HeaderValue::from_static("x"),
            cert_sha256: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        },
        "127.0.0.1:40000".parse().expect("addr"),
        "TLSv1.3",
    ))
}

pub(super) fn event(path: &str) -> Event {
    Event {
        time: SystemTime::now(),
        request_id: HeaderValue::from_static("0123"),
        trace_id: [7; 16],
        conn: conn(),
        user: None,
        tier: None,
        outcome: None,
        policy_version: Some(Arc::from("v1")),
        method: Method::GET,
        path: path.to_string(),
        decision: "no_route",
        error: Some("no_route"),
        status: 404,
        grpc_status: None,
        upstream: None,
        duration: Duration::from_micros(12),
        bytes_in: 0,
        bytes_out: 10,
        complete: true,
        reason: None,
        violations: Default::default(),
    }
}

fn config(file: &Path, max_file_bytes: u64) -> AuditConfig {
    AuditConfig {
        sink: SinkKind::File,
        file: Some(file.to_path_buf()),
        max_file_bytes,
        retain: 20,
        queue: 8,
        when_full: FullMode::Block,
        max_wait: Duration::from_secs(5),
        flush_interval: Duration::from_millis(2),
        checkpoint_interval: Duration::from_secs(60),
    }
}

fn metrics() -> AuditMetrics {
    crate::observe::metrics::Metrics::new().audit.clone()
}

/// A started audit trail, its metrics and a runtime to drive it.
fn running(config: &AuditConfig) -> (tokio::runtime::Runtime, Audit, WriterThread, AuditMetrics) {
    let m = metrics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (audit, writer) = Audit::start(config, m.clone())
        .expect("start")
        .expect("enabled");
    (rt, audit, writer, m)
}

/// Writes `paths` as events through a real writer thread and waits for it.
fn write(config: &AuditConfig, paths: &[&str]) -> AuditMetrics {
    write_events(config, paths.iter().map(|p| event(p)))
}

/// Writes `events` through a real writer thread and waits for it.
fn write_events(config: &AuditConfig, events: impl Iterator<Item = Event>) -> AuditMetrics {
    let (rt, audit, writer, m) = running(config);
    rt.block_on(async {
        for e in events {
            let slot = audit.slot().await.expect("slot").expect("place");
            slot.send(e);
        }
        assert!(audit.flush(Duration::from_secs(10)).await);
    });
    drop(audit);
    assert!(writer.join(Duration::from_secs(10)));
    m
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(String::from)
        .collect()
}

fn rewrite(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

#[test]
fn events_are_chained_json_lines_that_verify() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let m = write(&config(&file, 1 << 20), &["/a", "/b\n\"x", "/c"]);
    assert_eq!(m.events.get(), 3);
    let l = lines(&file);
    assert_eq!(l.len(), 3);
    let first: serde_json::Value = serde_json::from_str(&l[0]).expect("json");
    assert_eq!(first["seq"], 0);
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(first["type"], "request");
    assert_eq!(first["decision"], "no_route");
    assert_eq!(first["principal"]["type"], "Mesh::Service");
    assert_eq!(first["trace_id"], "07070707070707070707070707070707");
    assert_eq!(first["source"], "127.0.0.1:40000");
    let second: serde_json::Value = serde_json::from_str(&l[1]).expect("json");
    assert_eq!(
        second["path"], "/b\n\"x",
        "control characters stay inside one line"
    );
    assert!(second.get("prev").is_none());
    let v = verify(std::slice::from_ref(&file)).expect("verifies");
    assert_eq!((v.events, v.first_seq, v.last_seq), (3, Some(0), Some(2)));

    // A restart appends and continues the chain.
    write(&config(&file, 1 << 20), &["/d"]);
    let v = verify(std::slice::from_ref(&file)).expect("verifies after restart");
    assert_eq!((v.events, v.last_seq), (4, Some(3)));
}

#[test]
fn lines_are_ascii_whatever_the_values_hold() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let nasty = "/caf\u{e9}\u{2028}\u{2029}\u{85}\u{1f600}\r\n\0\"\\";
    write(&config(&file, 1 << 20), &[nasty, "/b"]);
    let text = std::fs::read(&file).expect("read");
    assert!(text.is_ascii(), "{}", String::from_utf8_lossy(&text));
    let l = lines(&file);
    assert_eq!(l.len(), 2);
    assert!(
        l[0].contains("caf\\u00e9\\u2028\\u2029\\u0085\\ud83d\\ude00\\r\\n\\u0000"),
        "{}",
        l[0]
    );
    let v: serde_json::Value = serde_json::from_str(&l[0]).expect("json");
    assert_eq!(v["path"], nasty);
    verify(std::slice::from_ref(&file)).expect("verifies");
}

#[test]
fn a_principal_that_is_not_ascii_is_recorded_whole() {
    // A subject CN is UTF-8 text; the event names it as it is (it
    // used to be recorded as "" because the header form is not ASCII).
    let cn = "cn:Zoë \"q\" \\ \u{2028}end";
    let principal: Principal = cn.parse().expect("principal");
    let mut e = event("/x");
    e.conn = Arc::new(ConnInfo::new(
        PeerIdentity {
            principal_header: HeaderValue::from_str(cn).expect("header-safe"),
            principal,
            xfcc: HeaderValue::from_static("x"),
            cert_sha256: String::new(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        },
        "127.0.0.1:40000".parse().expect("addr"),
        "TLSv1.3",
    ));
    let mut line = Vec::new();
    write_request(&mut line, 0, None, &e, "node", None).expect("written");
    let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
    assert_eq!(v["principal"]["id"], cn);
}

#[test]
fn an_event_that_cannot_be_written_is_recorded_as_dropped() {
    // humantime writes RFC 3339 for the years 1970 to 9999 only.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let mut far = event("/far");
    far.time = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    let mut early = event("/early");
    early.time = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    let m = write_events(
        &config(&file, 1 << 20),
        [far, early, event("/next")].into_iter(),
    );
    let l: Vec<serde_json::Value> = lines(&file)
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // Each loss is chained as a `dropped` line before the next event.
    let (last, dropped) = l.split_last().expect("lines");
    assert_eq!(last["path"], "/next");
    assert!(dropped.iter().all(|d| d["type"] == "dropped"), "{l:?}");
    let counted: u64 = dropped.iter().filter_map(|d| d["count"].as_u64()).sum();
    assert_eq!(counted, 2, "{l:?}");
    assert_eq!(m.dropped.get(), 2);
    verify(std::slice::from_ref(&file)).expect("verifies");
}

#[test]
fn a_request_line_has_every_member_in_order_and_is_plain_ascii() {
    let nasty = "q\"b\\s\u{7}\u{7f}é\u{2028}\u{1F600}/\n";
    let mut e = event(nasty);
    e.time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_780_000_000_123_456);
    e.user = Some(Arc::new(User {
        id: format!("idp|{nasty}"),
        issuer: "idp".into(),
        subject: nasty.into(),
        groups: vec![],
        scopes: vec![],
        attributes: vec![],
        expires_at: u64::MAX,
    }));
    e.tier = Some(Arc::from("gold"));
    e.outcome = Some(Arc::new(AuthzOutcome {
        product: Arc::from("sales.orders"),
        action: crate::decision::contract::Action::Read,
        resource: Arc::from("sales.orders/orders"),
        decision: crate::decision::authz::Decision {
            allowed: true,
            policies: vec!["p\"1".into(), "p2".into()],
            errors: vec![nasty.into()],
        },
        shadow: Some(crate::decision::authz::Decision {
            allowed: false,
            policies: vec![],
            errors: vec![],
        }),
        policy_version: Arc::from("v2"),
        throughput: None,
        latency: None,
        fields: None,
    }));
    e.policy_version = None;
    e.decision = "allow";
    e.error = None;
    e.status = 200;
    e.upstream = Some(Duration::from_micros(u64::MAX));
    e.bytes_in = u64::MAX;
    e.complete = false;
    e.reason = Some("expired");
    let mut line = Vec::new();
    write_request(&mut line, u64::MAX, Some("ab"), &e, "n\"ode", Some("pod")).expect("written");
    // ASCII without control characters below DEL (so no line break of any kind).
    assert!(
        line.iter().all(|&b| b.is_ascii() && b >= b' '),
        "{}",
        String::from_utf8_lossy(&line)
    );
    let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
    let expected = serde_json::json!({
        "seq": u64::MAX, "prev": "ab", "type": "request",
        "time": "2026-05-28T20:26:40.123456Z", "request_id": "0123",
        "trace_id": "07070707070707070707070707070707",
        "principal": {"type": "Mesh::Service", "id": "spiffe://acme.example/ns/finance/sa/reporting"},
        "user": format!("idp|{nasty}"), "tier": "gold", "product": "sales.orders",
        "action": "read", "resource": "sales.orders/orders", "method": "GET", "path": nasty,
        "decision": "allow", "policies": ["p\"1", "p2"], "errors": [nasty],
        "shadow": {"decision": "deny", "policies": []}, "status": 200, "error": null,
        "reason": "expired", "upstream_us": u64::MAX, "duration_us": 12, "bytes_in": u64::MAX, "bytes_out": 10,
        "complete": false, "source": "127.0.0.1:40000", "tls_version": "TLSv1.3",
        "policy_version": "v2", "node": "n\"ode", "pod": "pod",
    });
    assert_eq!(v, expected);
    // Members in the documented order (serde_json::Value sorts them).
    let text = String::from_utf8_lossy(&line);
    let mut at = 0;
    for k in [
        "seq",
        "prev",
        "type",
        "time",
        "request_id",
        "trace_id",
        "principal",
        "user",
        "tier",
        "product",
        "action",
        "resource",
        "method",
        "path",
        "decision",
        "policies",
        "errors",
        "shadow",
        "status",
        "error",
        "reason",
        "upstream_us",
        "duration_us",
        "bytes_in",
        "bytes_out",
        "complete",
        "source",
        "tls_version",
        "policy_version",
        "node",
        "pod",
    ] {
        match text[at..].find(&format!("\"{k}\":")) {
            Some(i) => at += i,
            None => panic!("{k} missing or out of order in {text}"),
        }
    }
}

/// No optional member of a request line is left out: absent values are null.
#[test]
fn a_request_line_writes_absent_values_as_null() {
    let mut e = event("/x");
    e.policy_version = None;
    let mut line = Vec::new();
    write_request(&mut line, 0, None, &e, "node", None).expect("written");
    let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
    for k in [
        "user",
        "tier",
        "product",
        "action",
        "resource",
        "shadow",
        "upstream_us",
        "policy_version",
        "pod",
        "reason",
    ] {
        assert_eq!(v[k], serde_json::Value::Null, "{k}");
    }
    assert_eq!(v.get("prev"), None);
    assert_eq!(v.as_object().map(|o| o.len()), Some(30));
}

#[test]
fn every_kind_of_tampering_is_found_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    write(&config(&file, 1 << 20), &["/0", "/1", "/2", "/3", "/4"]);
    let orig = lines(&file);
    let check = |edited: Vec<String>, line: usize, word: &str| {
        rewrite(&file, &edited);
        let e = verify(std::slice::from_ref(&file)).expect_err("broken");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(word), "{e}");
    };
    let mut edited = orig.clone();
    edited[2] = edited[2].replace("\"/2\"", "\"/x\"");
    check(edited, 3, "edited");
    let mut deleted = orig.clone();
    deleted.remove(2);
    check(deleted, 3, "deleted");
    let mut reordered = orig.clone();
    reordered.swap(1, 2);
    check(reordered, 2, "reordered");
    let mut inserted = orig.clone();
    inserted.insert(3, orig[1].clone());
    check(inserted, 4, "inserted");
    let mut forged = orig.clone();
    forged.insert(
        1,
        r#"{"seq":1,"type":"request","path":"/evil"}"#.to_string(),
    );
    check(forged, 2, "inserted");
    let mut head_cut = orig.clone();
    head_cut.remove(0);
    check(head_cut, 1, "deleted");
    let mut torn = orig.clone().join("\n");
    torn.truncate(torn.len() - 10);
    std::fs::write(&file, torn).expect("write");
    let e = verify(std::slice::from_ref(&file)).expect_err("torn");
    assert_eq!(e.line, 5, "{e}");
    rewrite(&file, &orig);
    assert!(verify(std::slice::from_ref(&file)).is_ok());
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let paths: Vec<String> = (0..40).map(|i| format!("/orders/{i}")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    write(&config(&file, 4096), &refs);
    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|n| dir.path().join(format!("audit.log.{n}")))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    files.push(file.clone());
    let v = verify(&files).expect("the rotated files verify in order");
    assert_eq!((v.events, v.first_seq, v.last_seq), (40, Some(0), Some(39)));
    // Each file alone verifies too: its first line names its prev.
    for f in &files {
        verify(std::slice::from_ref(f)).expect("alone");
        let first: serde_json::Value = serde_json::from_str(&lines(f)[0]).expect("json");
        assert!(first["prev"].is_string(), "{f:?}");
    }
    // A missing file in the middle is found.
    let mut gap = files.clone();
    gap.remove(1);
    let e = verify(&gap).expect_err("gap");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("missing"), "{e}");
}

#[test]
fn a_full_queue_drops_and_counts_in_drop_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let mut cfg = config(&file, 1 << 20);
    cfg.queue = 2;
    cfg.when_full = FullMode::Drop;
    let (rt, audit, writer, m) = running(&cfg);
    rt.block_on(async {
        // Two places held: the queue is full.
        let a = audit.slot().await.expect("slot").expect("place");
        let b = audit.slot().await.expect("slot").expect("place");
        assert!(audit.slot().await.expect("drop mode").is_none());
        assert!(audit.slot().await.expect("drop mode").is_none());
        a.send(event("/a"));
        b.send(event("/b"));
        assert!(audit.flush(Duration::from_secs(10)).await);
        let c = audit.slot().await.expect("slot").expect("room again");
        c.send(event("/c"));
        assert!(audit.flush(Duration::from_secs(10)).await);
    });
    drop(audit);
    assert!(writer.join(Duration::from_secs(10)));
    assert_eq!(m.dropped.get(), 2);
    assert_eq!(m.events.get(), 3);
    let v = verify(std::slice::from_ref(&file)).expect("verifies");
    assert_eq!(
        (v.events, v.dropped),
        (3, 2),
        "the loss is recorded in the chain"
    );
}

#[test]
fn a_full_queue_makes_requests_wait_in_block_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let mut cfg = config(&file, 1 << 20);
    cfg.queue = 1;
    cfg.max_wait = Duration::from_millis(200);
    let (rt, audit, writer, m) = running(&cfg);
    rt.block_on(async {
        let held = audit.slot().await.expect("slot").expect("place");
        // Nothing frees the place: the wait ends in a refusal.
        assert_eq!(audit.slot().await.err(), Some(SlotError::Unavailable));
        assert_eq!(m.backpressure_waits.get(), 1);
        assert!(m.backpressure_seconds.get() > 0.0);
        // A place freed while waiting is taken.
        let waiter = audit.slot();
        tokio::pin!(waiter);
        assert!(futures_poll_once(&mut waiter).await.is_none(), "it waits");
        held.send(event("/held"));
        let s = waiter.await.expect("slot").expect("place");
        s.send(event("/waited"));
        assert!(audit.flush(Duration::from_secs(10)).await);
    });
    drop(audit);
    assert!(writer.join(Duration::from_secs(10)));
    assert_eq!(m.events.get(), 2);
    assert_eq!(m.dropped.get(), 1, "the refused request's event");
    let v = verify(std::slice::from_ref(&file)).expect("verifies");
    assert_eq!((v.events, v.dropped), (2, 1));
}

/// Polls a future once: `Some` if it is ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match Pin::new(&mut *f).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[test]
fn an_empty_file_verifies_and_a_half_done_rotation_only_reopens() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    std::fs::write(&file, "").expect("write");
    let v = verify(std::slice::from_ref(&file)).expect("an empty file verifies");
    assert_eq!(v.events, 0);
    // FILE was renamed to FILE.1 but reopening failed: the next rotation
    // reopens FILE and shifts nothing.
    let mut sink = FileSink::open(&file, 4096, 3).expect("open");
    std::fs::rename(&file, dir.path().join("audit.log.1")).expect("rename");
    sink.rotate().expect("reopen");
    assert!(file.exists());
    assert!(dir.path().join("audit.log.1").exists());
    assert!(!dir.path().join("audit.log.2").exists());
}

/// A line as the writer would chain it after `prev`.
fn chained(prev: &str, event: serde_json::Value) -> (String, String) {
    let event = event.to_string();
    let chain = chain_hash(prev, event.as_bytes());
    let line = format!("{},\"chain\":\"{chain}\"}}\n", &event[..event.len() - 1]);
    (line, chain)
}

/// Found by the `audit_verify` fuzz target
/// (fuzz/regressions/audit_verify/): correctly chained lines with the
/// largest sequence number or `dropped` counts whose sum overflows made
/// verify panic (debug) or wrap (release).
#[test]
fn verify_survives_the_largest_numbers() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let (a, c) = chained(
        GENESIS,
        serde_json::json!({"seq": 0, "prev": GENESIS, "type": "dropped", "count": 5}),
    );
    let (b, _) = chained(
        &c,
        serde_json::json!({"seq": 1, "type": "dropped", "count": u64::MAX}),
    );
    std::fs::write(&file, format!("{a}{b}")).expect("write");
    let v = verify(std::slice::from_ref(&file)).expect("verifies");
    assert_eq!((v.events, v.dropped, v.last_seq), (0, u64::MAX, Some(1)));

    let (a, c) = chained(
        GENESIS,
        serde_json::json!({"seq": u64::MAX, "prev": GENESIS, "type": "request"}),
    );
    let (b, _) = chained(&c, serde_json::json!({"seq": 0, "type": "request"}));
    std::fs::write(&file, format!("{a}{b}")).expect("write");
    let e = verify(std::slice::from_ref(&file)).expect_err("refused");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("the largest there is"), "{e}");
}

#[test]
fn a_foreign_file_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    std::fs::write(&file, "hello\n").expect("write");
    let e = Audit::start(&config(&file, 1 << 20), metrics())
        .err()
        .expect("refused");
    assert!(e.contains("not a meshgate audit event"), "{e}");
}

#[test]
fn a_torn_last_line_is_rotated_out_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    write(&config(&file, 1 << 20), &["/a", "/b"]);
    let mut text = std::fs::read(&file).expect("read");
    text.extend_from_slice(b"{\"seq\":2,\"ty");
    std::fs::write(&file, text).expect("write");
    write(&config(&file, 1 << 20), &["/c"]);
    let rotated = dir.path().join("audit.log.1");
    let e = verify(std::slice::from_ref(&rotated)).expect_err("torn");
    assert_eq!(e.line, 3);
    let v = verify(std::slice::from_ref(&file)).expect("the new file verifies");
    assert_eq!(v.first_seq, Some(2));
    // Both in sequence: the torn line is the crash's mark, and the new
    // file goes on from the last complete line before it.
    let both = [rotated.clone(), file.clone()];
    let v = verify(&both).expect("verifies across the torn line");
    assert_eq!((v.first_seq, v.last_seq, v.events), (Some(0), Some(2), 3));
    assert_eq!(v.torn, [format!("{}:3", rotated.display())]);
    // With nothing after it yet (restarted, nothing written since), it
    // ends the trail.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let v = verify(&[rotated.clone(), empty]).expect("a crash's mark");
    assert_eq!((v.last_seq, v.torn.len()), (Some(1), 1));
    // A fragment that reads as an event must bear the next number.
    let text = std::fs::read_to_string(&rotated).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let forged = dir.path().join("forged");
    std::fs::write(&forged, format!("{}\n{}\n{}", lines[0], lines[1], lines[1])).expect("write");
    let e = verify(&[forged, file.clone()]).expect_err("misnumbered");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("numbered 1 where 2 was expected"), "{e}");
    // Lines cut before a torn fragment put there by hand do not pass: the
    // next file goes on from a line that is gone.
    let text = std::fs::read_to_string(&rotated).expect("read");
    let first = text.lines().next().expect("a line");
    std::fs::write(&rotated, format!("{first}\n{{\"seq\":1,\"ty")).expect("write");
    let e = verify(&both).expect_err("cut");
    assert_eq!(
        (e.file.as_str(), e.line),
        (file.to_str().expect("utf-8"), 1)
    );
}

#[test]
fn a_file_of_one_torn_line_goes_on_from_the_file_rotated_before_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    write(&config(&file, 1 << 20), &["/a", "/b"]);
    // A rotation, then a crash during the new file's first write.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    std::fs::write(&file, b"{\"seq\":2,\"ty").expect("write");
    write(&config(&file, 1 << 20), &["/c"]);
    let files = [
        dir.path().join("audit.log.2"),
        dir.path().join("audit.log.1"),
        file.clone(),
    ];
    let v = verify(&files).expect("one chain");
    assert_eq!((v.first_seq, v.last_seq, v.restarts), (Some(0), Some(2), 0));
    assert_eq!(v.torn.len(), 1);

    // A torn line after a line that is no audit event: refused, as a file
    // ending in such a line is.
    std::fs::write(&file, b"hello\n{\"seq\":2,\"ty").expect("write");
    let e = Audit::start(&config(&file, 1 << 20), metrics())
        .err()
        .expect("refused");
    assert!(
        e.contains("its last complete line is not a meshgate audit event"),
        "{e}"
    );
}

#[test]
fn the_head_spans_rotated_files_and_a_cut_is_found_against_it() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let cfg = config(&file, 4096);
    let (rt, audit, writer, m) = running(&cfg);
    assert_eq!(audit.head(), None);
    assert_eq!(m.chain_seq.get(), -1);
    rt.block_on(async {
        for i in 0..40 {
            let slot = audit.slot().await.expect("slot").expect("place");
            slot.send(event(&format!("/orders/{i}")));
        }
        assert!(audit.flush(Duration::from_secs(10)).await);
    });
    let head = audit.head().expect("a head");
    drop(audit);
    assert!(writer.join(Duration::from_secs(10)));
    let last: serde_json::Value =
        serde_json::from_str(lines(&file).last().expect("a line")).expect("json");
    assert_eq!(head.seq, 39);
    assert_eq!(head.hash, last["chain"].as_str().expect("chain"));
    assert_eq!(head.file.as_deref(), Some(file.as_path()));
    assert_eq!(m.chain_seq.get(), 39);

    let mut files: Vec<PathBuf> = (1..=20)
        .rev()
        .map(|n| dir.path().join(format!("audit.log.{n}")))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    files.push(file.clone());
    let anchor = |seq, hash: &str| Anchor {
        seq,
        hash: Some(hash.to_string()),
    };
    let at_head = [anchor(39, &head.hash)];
    assert!(verify_against(&files, &at_head, Options::default()).is_ok());
    // The current file alone holds the head.
    assert!(verify_against(std::slice::from_ref(&file), &at_head, Options::default()).is_ok());
    // A head rotated away cannot be checked from the current file alone:
    // refused when it is the newest head (a forged file numbered above it
    // would pass a check of its number), passed over when a newer head is
    // checked; with its file given, checked for its hash.
    let wrong = anchor(0, GENESIS);
    let live = std::slice::from_ref(&file);
    let first: serde_json::Value =
        serde_json::from_str(&lines(&file)[0]).expect("first line is JSON");
    let first_seq = first["seq"].as_u64().expect("seq");
    assert!(first_seq > 1, "{first}");
    assert_eq!(
        verify_against(live, std::slice::from_ref(&wrong), Options::default()).map(|v| v.events),
        Err(VerifyError::NotCovered {
            seq: 0,
            first: first_seq
        })
    );
    assert!(verify_against(
        live,
        &[wrong.clone(), at_head[0].clone()],
        Options::default()
    )
    .is_ok());
    // The head just before the first line: checked against its `prev`.
    let prev = first["prev"].as_str().expect("prev");
    assert!(verify_against(live, &[anchor(first_seq - 1, prev)], Options::default()).is_ok());
    assert!(matches!(
        verify_against(live, &[anchor(first_seq - 1, GENESIS)], Options::default()),
        Err(VerifyError::Differs { .. })
    ));
    match verify_against(&files, &[wrong], Options::default()) {
        Err(VerifyError::Differs {
            seq: 0, expected, ..
        }) => assert_eq!(expected, GENESIS),
        other => panic!("{other:?}"),
    }

    // Cut the last line: the chain alone passes, the head does not.
    let mut cut = lines(&file);
    cut.pop();
    rewrite(&file, &cut);
    assert!(verify(&files).is_ok());
    assert_eq!(
        verify_against(&files, &at_head, Options::default()),
        Err(VerifyError::Short {
            last: 38,
            expected: 39
        })
    );
    // A writer started on the cut file resumes from the lower head at once.
    let (_rt, audit, _writer, m) = running(&cfg);
    assert_eq!(audit.head().map(|h| h.seq), Some(38));
    assert_eq!(m.chain_seq.get(), 38);
}

#[test]
fn a_checkpoint_interval_below_10ms_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = config(&dir.path().join("audit.log"), 1 << 20);
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    cfg.checkpoint_interval = Duration::ZERO;
    assert_eq!(
        cfg.check(),
        vec!["audit.checkpoint_interval: 0ns is below the minimum of 10ms".to_string()]
    );
}

#[test]
fn a_restart_just_after_a_rotation_goes_on_from_the_rotated_file() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("audit.log");
    let cfg = config(&file, 1 << 20);
    write(&cfg, &["/a", "/b"]);
    // Stopped right after a rotation: FILE.1 holds the chain, FILE is empty.
    std::fs::rename(&file, dir.path().join("audit.log.1")).expect("rename");
    std::fs::write(&file, "").expect("empty");
    let (_rt, audit, writer, _m) = running(&cfg);
    let head = audit.head().expect("a head");
    assert_eq!(head.seq, 1);
    // The head's line is in the rotated file until the next event.
    assert_eq!(head.file, Some(dir.path().join("audit.log.1")));
    drop(audit);
    assert!(writer.join(Duration::from_secs(10)));
    write(&cfg, &["/c"]);
    let first: serde_json::Value = serde_json::from_str(&lines(&file)[0]).expect("json");
    assert_eq!(first["seq"], 2, "{first}");
    let files = [dir.path().join("audit.log.1"), file];
    let v = verify(&files).expect("one chain across the rotation");
    assert_eq!((v.events, v.restarts, v.last_seq), (3, 0, Some(2)));
}

/// A sink that takes nothing (a FIFO whose reader never reads): a flush
/// gives up at its limit. `meshgate run` waits this once, for
/// `timeouts.shutdown_grace`, and then no longer for the writer.
#[test]
fn a_flush_gives_up_at_its_limit_when_the_sink_takes_nothing() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("audit.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Both ends held open, neither used: the sink's opens do not wait, and
    // its writes fill the pipe and then block.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("read end");
    let _writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("write end");
    let mut config = config(&fifo, 1 << 30);
    config.queue = 1024;
    let (rt, audit, _thread, m) = running(&config);
    rt.block_on(async {
        // Far more than a pipe holds (64 KiB).
        for _ in 0..400 {
            let slot = audit.slot().await.expect("slot").expect("place");
            slot.send(event("/orders"));
        }
        let limit = Duration::from_millis(300);
        let started = Instant::now();
        assert!(!audit.flush(limit).await, "the sink took everything?");
        let took = started.elapsed();
        assert!(took >= limit, "{took:?}");
        assert!(took < limit + Duration::from_secs(5), "{took:?}");
    });
    assert!(m.events.get() < 400);
}

/// The time as written per request (the text up to the second kept per
/// second) is humantime's RFC 3339 with microseconds, whatever the order of
/// the seconds and the microseconds; a clock outside its years is an error.
#[test]
fn a_lines_time_is_rfc3339_with_microseconds_in_any_order_of_seconds() {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let offsets_us: [u64; 9] = [0, 1, 999_999, 1_000_000, 5, 86_400_000_000, 7, 3_000_001, 0];
    for us in offsets_us {
        let t = base + Duration::from_micros(us);
        let mut out = Vec::new();
        write_time(&mut out, t).expect("written");
        let expected = humantime::format_rfc3339_micros(t).to_string();
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
    let mut out = Vec::new();
    let early = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert!(write_time(&mut out, early).is_err());
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(write_time(&mut out, far).is_err());
    assert!(out.is_empty(), "nothing written for a refused time");
}

/// A head vouches for the lines of the chain it is found in, up to it: not
/// for another chain of the trail (the stdout of two processes), nor for
/// a head rotated away before the first chain when it is found in another.
#[test]
fn a_head_vouches_for_its_own_chain_only() {
    use serde_json::json;
    let dir = tempfile::tempdir().expect("dir");
    let x = "ab".repeat(32);
    let (l5, h5) = chained(&x, json!({"seq": 5, "prev": x, "type": "request"}));
    let (l6, h6) = chained(&h5, json!({"seq": 6, "type": "request"}));
    let (r0, g0) = chained(
        GENESIS,
        json!({"seq": 0, "prev": GENESIS, "type": "request"}),
    );
    let (r1, g1) = chained(&g0, json!({"seq": 1, "type": "request"}));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, format!("{l5}{l6}")).expect("write");
    std::fs::write(&b, format!("{r0}{r1}")).expect("write");
    let files = [a.clone(), b.clone()];
    let e = verify(&files).expect_err("a restart");
    assert_eq!((e.file.as_str(), e.line), (b.to_str().expect("utf-8"), 1));
    assert!(e.message.contains("--allow-restarts"), "{e}");

    let allow = Options {
        allow_restarts: true,
    };
    let head = |seq, hash: &str| Anchor {
        seq,
        hash: Some(hash.to_string()),
    };
    let span = |f: &Path, first_seq, chain| Uncovered {
        from: format!("{}:1", f.display()),
        to: format!("{}:2", f.display()),
        first_seq,
        last_seq: first_seq + 1,
        chain,
    };
    let v = verify_against(&files, &[head(6, &h6)], allow).expect("found");
    assert_eq!((v.restarts, v.uncovered), (1, vec![span(&b, 0, 2)]));
    let v = verify_against(&files, &[head(1, &g1)], allow).expect("found");
    assert_eq!(v.uncovered, [span(&a, 5, 1)]);
    let v = verify_against(&files, &[head(6, &h6), head(1, &g1)], allow).expect("found");
    assert_eq!(v.uncovered, []);
    // A head no chain holds: told against the chain where none was found.
    match verify_against(&files, &[head(6, &h6), head(1, &g0)], allow) {
        Err(VerifyError::Differs { at, found, .. }) => {
            assert_eq!((at, found), (format!("{}:2", b.display()), g1.clone()))
        }
        other => panic!("{other:?}"),
    }
    // Held at its seq only by a chain another head was found in.
    assert_eq!(
        verify_against(&files, &[head(6, &h6), head(1, &g1), head(1, &x)], allow).map(|v| v.events),
        Err(VerifyError::InNoChain {
            seq: 1,
            expected: x.clone(),
            chains: 2
        })
    );
    // Rotated away before the first chain: vouched for by a newer head
    // found in that chain, not by one found in another.
    let gone = head(3, &"cd".repeat(32));
    assert!(verify_against(&files, &[gone.clone(), head(6, &h6)], allow).is_ok());
    assert_eq!(
        verify_against(&files, &[gone, head(1, &g1)], allow).map(|v| v.events),
        Err(VerifyError::NotCovered { seq: 3, first: 5 })
    );
    // The head just before the first line: the `prev` it names.
    assert!(verify_against(&files, &[head(4, &x)], allow).is_ok());
    match verify_against(&files, &[head(4, &g0)], allow) {
        Err(VerifyError::Differs { at, .. }) => {
            assert_eq!(at, format!("{}:1 (the `prev` it names)", a.display()))
        }
        other => panic!("{other:?}"),
    }
    // The same chain twice (a copy of a process's stdout).
    let copy = dir.path().join("copy");
    std::fs::copy(&b, &copy).expect("copy");
    let e = verify_with(&[a, b.clone(), copy.clone()], allow).expect_err("a copy");
    assert_eq!(
        (e.file.as_str(), e.line),
        (copy.to_str().expect("utf-8"), 1)
    );
    assert!(e.message.contains(&format!("{}:1", b.display())), "{e}");
}
