//! Shared quotas in a real Redis when Redis fails, through the real binary:
//! Redis slower than `timeout` (its scripts held with `CLIENT PAUSE … WRITE`
//! until the test lets them go), one failure that leaves other consumers
//! alone, Redis left alone after three failures in a row but for a probe
//! now and then, Redis back on the same port, a sidecar started before
//! Redis, and two sidecars under concurrent load sharing one quota.

mod common;

use std::time::{Duration, Instant};

use common::redis::*;
use common::*;

/// Quotas in Redis at `url` (`fields`: the rest of the `redis` section), the
/// `finance` namespace (the `reporting` client) in tier `t`.
fn in_redis(url: &str, fields: &str, tier: &str) -> String {
    format!(
        "quotas:\n  backend: redis\n  redis: {{ url: \"{url}\", {fields} }}\n  tiers:\n    t: {tier}\n  consumers:\n    - {{ prefix: \"spiffe://mesh.local/ns/finance/\", tier: t }}\n"
    )
}

/// One response: its status, headers and body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    /// The `error` code of a JSON error body.
    fn error(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["error"].as_str().map(String::from)
    }
}

/// `GET /orders` as `reporting`.
fn get(pki: &Pki, mg: &Meshgate) -> Reply {
    request(pki, "reporting", mg, "GET", "/orders")
}

/// `method path` as `who`.
fn request(pki: &Pki, who: &str, mg: &Meshgate, method: &str, path: &str) -> Reply {
    let out = curl(pki, Some(who), &["-i", "-X", method, &mg.url(path)]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {text}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The sidecar's JSON log lines with this message.
fn logged(mg: &Meshgate, message: &str) -> Vec<serde_json::Value> {
    mg.logs
        .dump()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .collect()
}

/// The one log line with this message: waited for (the log reader may
/// trail the responses), and no other like it.
fn logged_once(mg: &Meshgate, message: &str) -> serde_json::Value {
    let needle = format!("\"message\":\"{message}\"");
    let first = mg
        .logs
        .wait_for(0, Duration::from_secs(10), |l| l.contains(&needle));
    assert!(first.is_some(), "no {message:?}:\n{}", mg.logs.dump());
    let all = logged(mg, message);
    assert_eq!(all.len(), 1, "{}", mg.logs.dump());
    all[0].clone()
}

/// When a log line was written, by the sidecar's clock.
fn at(line: &serde_json::Value) -> time::OffsetDateTime {
    let ts = line["timestamp"].as_str().expect("timestamp");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{ts}: {e}"))
}

/// The quota checks that found Redis failing: the first one logged as a
/// warning, the others at debug, each with why.
fn failures(mg: &Meshgate) -> Vec<serde_json::Value> {
    mg.logs
        .dump()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"] == "quota store does not answer; applying the failure mode"
                || v["message"] == "quota store still does not answer"
        })
        .collect()
}

/// Sends `GET /orders` until one is answered with `status` (each answer is
/// the event waited on), within `limit`; returns it and the others' statuses.
fn until_status(pki: &Pki, mg: &Meshgate, status: u16, limit: Duration) -> (Reply, Vec<u16>) {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    loop {
        let r = get(pki, mg);
        if r.status == status {
            return (r, before);
        }
        before.push(r.status);
        assert!(
            Instant::now() < deadline,
            "no {status} within {limit:?}: {before:?}\n{}",
            mg.logs.dump()
        );
        // The next log line (a check's), or a tenth of a second.
        mg.logs
            .wait_for(mg.logs.len(), Duration::from_millis(100), |_| true);
    }
}

const DOWN: &str = "quota store does not answer; applying the failure mode";
const UP: &str = "quota store answers";
/// Why a check did not ask Redis: it failed three times in a row, and this
/// check is not the probe.
const RESTING: &str = "resting after failures in a row";

/// One check that Redis does not answer in time gets the failure mode; the
/// next ones, of another consumer and of another product, ask Redis again.
/// Before, every consumer got the failure mode (here 503) for the rest of
/// the second.
#[test]
fn one_failed_check_leaves_the_other_consumers_to_redis() {
    let pki = Pki::new();
    pki.client(
        "forecasting",
        Leaf::client_spiffe("spiffe://mesh.local/ns/finance/sa/forecasting"),
    );
    let Some(redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&in_redis(
            &redis.url,
            "failure_mode: deny, replicas: 1, timeout: 200ms, lease: 1",
            "{ rate: 1000/s, burst: 1000 }",
        ))
        .start();
    assert_eq!(get(&pki, &mg).status, 200);
    let mut ctl = redis.client();
    ctl.ok(&["CLIENT", "PAUSE", "600000", "WRITE"]);
    let r = get(&pki, &mg);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.error().as_deref(), Some("quota_unavailable"));
    ctl.ok(&["CLIENT", "UNPAUSE"]);
    let r = request(&pki, "forecasting", &mg, "GET", "/orders");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(&pki, "reporting", &mg, "POST", "/ledger/entries");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(failures(&mg).iter().all(|l| l["error"] != RESTING));
}

#[test]
fn a_redis_slower_than_the_timeout_gets_the_failure_mode_at_the_timeout_and_after_three_a_probe_now_and_then(
) {
    let pki = Pki::new();
    let Some(redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&in_redis(
            &redis.url,
            "failure_mode: deny, replicas: 1, timeout: 300ms, lease: 1",
            "{ rate: 1000/s, burst: 1000 }",
        ))
        .start();
    assert_eq!(get(&pki, &mg).status, 200);
    let scripts_before = redis.scripts_run();

    // Redis holds every script from now until the test lets them go: the
    // sidecar's checks get no answer, however long they wait.
    let mut ctl = redis.client();
    ctl.ok(&["CLIENT", "PAUSE", "600000", "WRITE"]);
    let sent = Instant::now();
    let r = get(&pki, &mg);
    let took = sent.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.error().as_deref(),
        Some("quota_unavailable"),
        "{}",
        r.body
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    // Answered while Redis still holds the script: the timeout (300 ms) cut
    // the wait, not Redis (paused for ten minutes).
    assert!(took < Duration::from_secs(10), "{took:?}");
    let blocked: u64 = ctl
        .info("clients", "blocked_clients")
        .and_then(|v| v.parse().ok())
        .expect("blocked_clients");
    assert!(blocked >= 1, "the sidecar's script waits in Redis");

    // More checks, until Redis has been asked five times (three in a row,
    // then two probes): every one refused, each failure logged with why.
    let deadline = Instant::now() + Duration::from_secs(30);
    let asked = |mg: &Meshgate| {
        failures(mg)
            .iter()
            .filter(|l| l["error"] != RESTING)
            .count()
    };
    while asked(&mg) < 5 {
        assert!(Instant::now() < deadline, "{}", mg.logs.dump());
        assert_eq!(get(&pki, &mg).status, 503);
    }
    ctl.ok(&["CLIENT", "UNPAUSE"]);

    // Every failed check the sidecar counted, read from its log (which the
    // test's reader may take in after the responses).
    let counted = mg.metric("meshgate_quota_store_errors_total") as usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures(&mg).len() < counted {
        assert!(Instant::now() < deadline, "{counted}: {}", mg.logs.dump());
        mg.logs
            .wait_for(mg.logs.len(), Duration::from_secs(1), |_| true);
    }
    let failed = failures(&mg);
    assert_eq!(failed.len(), counted, "one line per failed check");
    let (timeouts, rested): (Vec<_>, Vec<_>) = failed.iter().partition(|l| l["error"] != RESTING);
    for l in &timeouts {
        assert_eq!(l["error"], "no answer within 300ms", "{l}");
    }
    assert!(!rested.is_empty(), "checks answered during the rest");
    // By the sidecar's own clock: no check rested before the third failure
    // in a row; after it, Redis was asked once each probe interval (200 ms)
    // at most, and every check answered without Redis came within an
    // interval and a timeout (300 ms: a probe waits) of a failure.
    let third = at(timeouts[2]);
    for pair in timeouts[2..].windows(2) {
        let gap = at(pair[1]) - at(pair[0]);
        assert!(
            gap >= time::Duration::milliseconds(200),
            "asked again after {gap}"
        );
    }
    for l in &rested {
        assert!(at(l) >= third, "rested before three failures: {l}");
        let failure = timeouts
            .iter()
            .rev()
            .find(|t| at(t) <= at(l))
            .expect("a failure before the rest");
        let since = at(l) - at(failure);
        assert!(since < time::Duration::milliseconds(750), "rested {since}");
    }
    // By Redis's count: the scripts it ran once unpaused are exactly the
    // checks that asked it (the first 200 asked before).
    assert_eq!(redis.scripts_run(), scripts_before + timeouts.len() as u64);

    // Redis answers again: the next probe finds it, and requests pass
    // through it.
    let (_, meanwhile) = until_status(&pki, &mg, 200, Duration::from_secs(20));
    assert!(meanwhile.iter().all(|s| *s == 503), "{meanwhile:?}");
    logged_once(&mg, DOWN);
    logged_once(&mg, UP);
}

#[test]
fn redis_back_on_the_same_port_is_used_again_and_logged_once() {
    let pki = Pki::new();
    let Some(mut redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    // `deny`: a 200 can only come from Redis.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&in_redis(
            &redis.url,
            "failure_mode: deny, replicas: 1, timeout: 1s, lease: 1",
            "{ rate: 1000/s, burst: 1000 }",
        ))
        .start();
    assert_eq!(get(&pki, &mg).status, 200);
    assert!(logged(&mg, UP).is_empty(), "no change, nothing logged");

    redis.kill();
    for _ in 0..4 {
        let r = get(&pki, &mg);
        assert_eq!(r.status, 503);
        assert_eq!(
            r.error().as_deref(),
            Some("quota_unavailable"),
            "{}",
            r.body
        );
    }

    // Back, empty, on the same port: the sidecar reconnects by itself.
    redis.restart();
    let (_, meanwhile) = until_status(&pki, &mg, 200, Duration::from_secs(20));
    assert!(meanwhile.iter().all(|s| *s == 503), "{meanwhile:?}");
    for _ in 0..10 {
        assert_eq!(get(&pki, &mg).status, 200);
    }
    // Every one of the 11 asked the new Redis (`lease: 1`).
    assert!(redis.scripts_run() >= 11, "{}", redis.scripts_run());
    // One line for the outage, one for the recovery, however many checks.
    logged_once(&mg, DOWN);
    let back = logged_once(&mg, UP);
    assert_eq!(back["url"], redis.url.as_str());
    assert_eq!(back["level"], "INFO");
}

#[test]
fn a_sidecar_started_while_redis_is_down_serves_its_local_share_then_uses_redis() {
    let pki = Pki::new();
    if !require_tool("redis-server") {
        return;
    }
    let port = unused_port();
    let url = format!("redis://127.0.0.1:{port}");
    let up = Upstream::start();
    // A bucket of 4 shared by 2 replicas: each one's local share is 2.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&in_redis(
            &url,
            "failure_mode: local, replicas: 2, timeout: 1s, lease: 1",
            "{ rate: 1/m, burst: 4 }",
        ))
        .start();
    let statuses: Vec<u16> = (0..4).map(|_| get(&pki, &mg).status).collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    logged_once(&mg, DOWN);

    // Redis comes up on the port the sidecar was told: the next check after
    // the rest asks it, and the whole shared bucket (4) is there.
    let Some(redis) = RedisServer::start_on(pki.dir.path(), port) else {
        return;
    };
    let (first, meanwhile) = until_status(&pki, &mg, 200, Duration::from_secs(20));
    assert!(meanwhile.iter().all(|s| *s == 429), "{meanwhile:?}");
    let mut left = vec![first.header("ratelimit").unwrap_or_default().to_string()];
    for _ in 0..3 {
        let r = get(&pki, &mg);
        assert_eq!(r.status, 200);
        left.push(r.header("ratelimit").unwrap_or_default().to_string());
    }
    let left: Vec<&str> = left
        .iter()
        .map(|h| h.split(";t=").next().unwrap_or_default())
        .collect();
    assert_eq!(left, ["\"t\";r=3", "\"t\";r=2", "\"t\";r=1", "\"t\";r=0"]);
    assert_eq!(get(&pki, &mg).status, 429);
    // The bucket is Redis's: one key, under the configured prefix.
    let mut c = redis.client();
    assert_eq!(c.cmd(&["DBSIZE"]), RespValue::Int(1));
    let keys = c.cmd(&["KEYS", "meshgate:quota:*"]);
    assert!(
        matches!(&keys, RespValue::Array(k) if k.len() == 1),
        "{keys:?}"
    );
    logged_once(&mg, UP);
}

/// `n` requests as `reporting` on one connection (one curl), started when
/// `go` opens; their statuses.
fn burst_of(
    pki: &Pki,
    mg: &Meshgate,
    n: usize,
    go: std::sync::Arc<std::sync::Barrier>,
) -> std::thread::JoinHandle<Vec<u16>> {
    let url = mg.url("/orders");
    let mut args = Vec::new();
    for _ in 0..n {
        args.extend(["-o", "/dev/null", "-w", "%{http_code}\\n", url.as_str()]);
    }
    let mut cmd = curl_command(pki, Some("reporting"), &args);
    std::thread::spawn(move || {
        go.wait();
        let out = cmd.output().expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap_or(0))
            .collect()
    })
}

#[test]
fn two_sidecars_under_concurrent_load_allow_no_more_than_the_documented_lease_bound() {
    let pki = Pki::new();
    let Some(redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    // The default lease (8); `deny`, so that a Redis failure shows as 503
    // instead of a local share passing requests unseen.
    let (rate, burst, replicas, lease) = (8.0, 40u32, 2u32, 8u32);
    let quotas = in_redis(
        &redis.url,
        &format!("failure_mode: deny, replicas: {replicas}, timeout: 2s"),
        &format!("{{ rate: {rate}/s, burst: {burst} }}"),
    );
    let sidecars = [
        Meshgate::builder(&pki, &up)
            .policies()
            .log_level("info")
            .extra(&quotas)
            .start(),
        Meshgate::builder(&pki, &up)
            .policies()
            .log_level("info")
            .extra(&quotas)
            .start(),
    ];
    // Six connections on each sidecar at once, 20 requests each: 240 against
    // a bucket of 40.
    let (threads, each) = (6, 20);
    let go = std::sync::Arc::new(std::sync::Barrier::new(2 * threads + 1));
    let loads: Vec<Vec<_>> = sidecars
        .iter()
        .map(|mg| {
            (0..threads)
                .map(|_| burst_of(&pki, mg, each, go.clone()))
                .collect()
        })
        .collect();
    go.wait();
    let started = Instant::now();
    let statuses: Vec<Vec<u16>> = loads
        .into_iter()
        .map(|l| {
            l.into_iter()
                .flat_map(|t| t.join().expect("load"))
                .collect()
        })
        .collect();
    let elapsed = started.elapsed();

    let count = |s: &[u16], code: u16| s.iter().filter(|c| **c == code).count();
    for (mg, s) in sidecars.iter().zip(&statuses) {
        assert_eq!(s.len(), threads * each);
        assert_eq!(count(s, 200) + count(s, 429), s.len(), "{s:?}");
        assert_eq!(
            mg.metric("meshgate_quota_rejections_total{product=\"sales.orders\",tier=\"t\"}"),
            count(s, 429) as f64
        );
        assert_eq!(mg.metric("meshgate_quota_store_errors_total"), 0.0);
    }
    let allowed: usize = statuses.iter().map(|s| count(s, 200)).sum();
    // The bound, from docs/authorization.md ("One quota across replicas"):
    // GCRA in Redis hands out at most the burst plus what refills while the
    // load runs (rate x elapsed; Redis's clock runs inside the test's
    // window). A lease is at most min(lease, burst / replicas, rate x 1 s),
    // here min(8, 20, 8) = 8, and leases held across replicas add at most
    // one such lease per replica to what Redis hands out. So
    //   allowed <= burst + rate x elapsed + replicas x min(lease, burst / replicas, rate x 1 s).
    // (The bucket starts full and no lease is held before the load, so the
    // last term is the documented slack, not needed here.)
    let one_lease = lease.min(burst / replicas).min(rate as u32);
    let bound = f64::from(burst) + rate * elapsed.as_secs_f64() + f64::from(replicas * one_lease);
    assert!(
        allowed as f64 <= bound.floor(),
        "{allowed} allowed in {elapsed:?}, bound {bound}"
    );
    // And the load was more than the quota: requests were refused, so Redis
    // handed out at least the whole burst (it refuses only an empty bucket).
    // What it handed out and nobody spent is at most the lease each replica
    // still holds when the load stops (one lease fetch at a time per key),
    // less the request that fetched it: the quota is not lost to leases.
    assert!(allowed < 2 * threads * each, "{allowed}");
    let unspent = replicas * (one_lease - 1);
    assert!(
        allowed >= (burst - unspent) as usize,
        "{allowed} allowed of a burst of {burst}: leased requests were lost"
    );
}
