//! SLA quotas through the real binary: GCRA buckets per (consumer, product),
//! tiers by prefix, exact identity and the product contract, 429 with
//! `Retry-After` and the IETF `RateLimit` headers.

mod common;

use common::redis::*;
use common::trail::event_of;
use common::*;

const FINANCE_OTHER: &str = "spiffe://mesh.local/ns/finance/sa/forecasting";
const PLANNER: &str = "spiffe://mesh.local/ns/logistics/sa/planner";
const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

/// A slow tier for exact bursts (one request a minute refills), a fast one
/// for waiting out `Retry-After`, a generous one for overrides; contract
/// tiers at 0.5% of the throughput (orders: 200/s -> 1/s).
const QUOTAS: &str = r#"quotas:
  sla_share: 0.005
  tiers:
    minute: { rate: 1/m, burst: 3 }
    second: { rate: 1/s, burst: 1 }
    gold: { rate: 1000/s, burst: 500 }
  consumers:
    - { prefix: "spiffe://mesh.local/ns/finance/", tier: minute }
    - { group: fraud-investigators, tier: second }
  products:
    sales.orders:
      consumers:
        - { id: "spiffe://mesh.local/ns/sales/sa/etl", tier: gold }
        - { id: "spiffe://mesh.local/ns/logistics/sa/planner", tier: second }
    finance.ledger:
      consumers:
        - { id: "spiffe://mesh.local/ns/finance/sa/reporting", tier: gold }
"#;

struct Reply {
    status: String,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn get(pki: &Pki, who: &str, mg: &Meshgate, path: &str) -> Reply {
    request(pki, who, mg, "GET", path)
}

fn request(pki: &Pki, who: &str, mg: &Meshgate, method: &str, path: &str) -> Reply {
    request_with(pki, who, mg, method, path, &[])
}

/// A request with extra curl arguments (headers) before the URL.
fn request_with(
    pki: &Pki,
    who: &str,
    mg: &Meshgate,
    method: &str,
    path: &str,
    extra: &[&str],
) -> Reply {
    let url = mg.url(path);
    let mut args = vec![
        "-X",
        method,
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-w",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(pki, Some(who), &args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, status) = text.rsplit_once("\r\n\r\n").unwrap_or(("", &text));
    let headers = head
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Reply {
        status: status.trim().to_string(),
        headers,
    }
}

#[test]
fn a_burst_passes_then_429_with_retry_after_and_consumers_are_independent() {
    let pki = Pki::new();
    pki.client("forecasting", Leaf::client_spiffe(FINANCE_OTHER));
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(QUOTAS)
        .start();

    // `reporting` is in tier `minute` by its namespace prefix: exactly the
    // burst of 3 passes, each response telling what is left (in place of
    // the upstream's own RateLimit headers).
    for left in [2, 1, 0] {
        let r = get(&pki, "reporting", &mg, "/orders?ratelimit=1");
        assert_eq!(r.status, "200");
        let values = |name: &str| -> Vec<&str> {
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("ratelimit-policy"), ["\"minute\";q=3;w=180"]);
        let rl = values("ratelimit");
        assert!(
            rl.len() == 1 && rl[0].starts_with(&format!("\"minute\";r={left};t=")),
            "{rl:?}"
        );
    }
    let r = get(&pki, "reporting", &mg, "/orders");
    assert_eq!(r.status, "429");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After: {:?}", r.headers));
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(r
        .header("ratelimit")
        .is_some_and(|v| v.starts_with("\"minute\";r=0;t=")));
    assert_eq!(
        mg.metric("meshgate_quota_rejections_total{product=\"sales.orders\",tier=\"minute\"}"),
        1.0
    );

    // Another service of the same namespace has its own bucket.
    assert_eq!(get(&pki, "forecasting", &mg, "/orders").status, "200");
    // And the same caller has its own bucket on another product, here with a
    // per-product override to `gold` (finance books its own ledger entries).
    let r = request(&pki, "reporting", &mg, "POST", "/ledger/entries");
    assert_eq!(r.status, "200");
    assert_eq!(r.header("ratelimit-policy"), Some("\"gold\";q=1000;w=1"));
}

#[test]
fn after_retry_after_seconds_a_request_passes_again() {
    let pki = Pki::new();
    pki.client("planner", Leaf::client_spiffe(PLANNER));
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(QUOTAS)
        .start();
    // Tier `second`: one request, then one a second. Send until refused.
    let mut refused = None;
    for _ in 0..20 {
        let r = get(&pki, "planner", &mg, "/orders");
        if r.status == "429" {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, "200");
    }
    let r = refused.expect("a 429 within 20 quick requests of a 1/s quota");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert_eq!(retry, 1);
    // Waiting what Retry-After says is the behaviour under test.
    std::thread::sleep(std::time::Duration::from_secs(retry));
    assert_eq!(get(&pki, "planner", &mg, "/orders").status, "200");
}

#[test]
fn tiers_come_from_exact_ids_prefixes_groups_and_the_contract() {
    let pki = Pki::new();
    pki.client(
        "fraud",
        Leaf::client_spiffe("spiffe://mesh.local/ns/risk/sa/fraud-scanner"),
    );
    pki.client("etl", Leaf::client_spiffe(SALES_ETL));
    pki.client("planner", Leaf::client_spiffe(PLANNER));
    let up = Upstream::start();
    // Without the planner's override it gets the contract's tier: orders
    // promise 200/s, a consumer may use 0.5% of it.
    let quotas = QUOTAS.replace(
        "        - { id: \"spiffe://mesh.local/ns/logistics/sa/planner\", tier: second }\n",
        "",
    );
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&quotas)
        .start();
    let policy = |who: &str, path: &str| {
        let r = get(&pki, who, &mg, path);
        assert_eq!(r.status, "200", "{who} {path}");
        r.header("ratelimit-policy").map(String::from)
    };
    assert_eq!(
        policy("etl", "/orders").as_deref(),
        Some("\"gold\";q=1000;w=1")
    );
    assert_eq!(
        policy("reporting", "/orders").as_deref(),
        Some("\"minute\";q=3;w=180")
    );
    assert_eq!(
        policy("planner", "/orders").as_deref(),
        Some("\"sla\";q=1;w=1")
    );
    // A service's group in entities.json (the fraud scanner is a
    // fraud-investigator; customers need the declared purpose).
    let r = request_with(
        &pki,
        "fraud",
        &mg,
        "GET",
        "/customers",
        &["-H", "x-data-purpose: fraud-investigation"],
    );
    assert_eq!(r.status, "200");
    assert_eq!(r.header("ratelimit-policy"), Some("\"second\";q=1;w=1"));
    // Refusals before the quota (policy denials) take nothing and say nothing.
    let r = get(&pki, "planner", &mg, "/customers");
    assert_eq!(r.status, "403");
    assert_eq!(r.header("ratelimit"), None);
}

/// `validate` and `run` refuse the same quota sections, naming the field:
/// before, a burst whose refill overflowed governor's nanoseconds passed
/// both (and wrapped), a rate too slow for any quota passed `validate` and
/// stopped `run`, and a tier name that is no structured-field string
/// passed both.
#[test]
fn a_bad_quota_section_is_refused_by_validate_and_run_alike_with_its_field() {
    let pki = Pki::new();
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").policies();
    for (quotas, message) in [
        (
            "quotas:\n  tiers:\n    a: { rate: fast }\n",
            "quotas.tiers.a.rate: `fast`: a rate like 200/s",
        ),
        (
            "quotas:\n  tiers:\n    a: { rate: 1/s }\n  consumers:\n    - { prefix: x, tier: b }\n",
            "quotas.consumers[0].tier: no tier `b`",
        ),
        (
            "quotas:\n  tiers:\n    a: { rate: 1/s }\n  consumers:\n    - { prefix: x, id: y, tier: a }\n",
            "quotas.consumers[0]: exactly one of id, prefix or group",
        ),
        (
            "quotas:\n  tiers:\n    a: { rate: 1/m, burst: 307445736 }\n",
            "quotas.tiers.a.burst: 307445736 requests take more than 100 years to come back at this rate (at most 52560000)",
        ),
        (
            "quotas:\n  tiers:\n    a: { rate: 0.0000001/h }\n",
            "quotas.tiers.a.rate: slower than one request in 100 years",
        ),
        (
            "quotas:\n  backend: redis\n  redis: { url: \"redis://127.0.0.1:1\", timeout: 1ns }\n",
            "quotas.redis.timeout: 1ns is below 1ms",
        ),
        (
            "quotas:\n  tiers:\n    'gö\"ld': { rate: 1/s }\n",
            "quotas.tiers.gö\\\"ld: a tier name is letters, digits, `_`, `.` and `-`",
        ),
    ] {
        for (cmd, err) in sidecar.clone().extra(quotas).refusals("bad.yaml") {
            assert!(err.contains(message), "{cmd}: {err}");
        }
    }
}

/// `failure_mode: allow` (requests unmetered while Redis is down) and a
/// `products` entry that names no contract of the policies are warnings of
/// `validate` (exit 2 under `--strict`), naming the field, and `run` logs
/// them when it starts.
#[test]
fn validate_warns_of_an_unmetered_failure_mode_and_a_product_naming_no_contract_and_run_logs_them()
{
    let pki = Pki::new();
    let up = Upstream::start();
    let quotas = QUOTAS.replace("    finance.ledger:\n", "    finance.ledgr:\n")
        + &format!(
            "  backend: redis\n  redis: {{ url: \"redis://127.0.0.1:{}\", failure_mode: allow }}\n",
            unused_port()
        );
    let sidecar = Meshgate::builder(&pki, &up).policies().extra(&quotas);
    let file = pki.path("warned.yaml");
    std::fs::write(&file, sidecar.yaml()).expect("write");
    let out = output_within(
        std::process::Command::new(bin())
            .args(["validate", "--strict", "--config"])
            .arg(&file),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let warnings = [
        "quotas.redis.failure_mode: `allow` lets every request through unmetered while Redis does not answer",
        "quotas.products.finance.ledgr: no contract has this id",
    ];
    assert_eq!(err.lines().count(), warnings.len(), "{err}");
    for w in warnings {
        assert!(err.contains(&format!("warning: {w}")), "{err}");
    }
    let mg = sidecar.start();
    for w in warnings {
        let logged = mg
            .logs
            .wait_for(0, std::time::Duration::from_secs(10), |l| l.contains(w));
        assert!(logged.is_some(), "{w}: {}", mg.logs.dump());
    }
}

/// Starts `GET path` as `who` on its own thread; the caller waits for its
/// arrival at the upstream. The thread's curl ends with the test's sidecar.
fn in_background(
    pki: &Pki,
    who: &str,
    mg: &Meshgate,
    path: &str,
) -> std::thread::JoinHandle<String> {
    let url = mg.url(path);
    let mut cmd = curl_command(
        pki,
        Some(who),
        &["-o", "/dev/null", "-w", "%{http_code}", &url],
    );
    std::thread::spawn(move || {
        let out = cmd.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    })
}

#[test]
fn in_flight_limits_shed_with_503_at_once_while_slow_requests_run() {
    let pki = Pki::new();
    pki.client("forecasting", Leaf::client_spiffe(FINANCE_OTHER));
    pki.client("etl", Leaf::client_spiffe(SALES_ETL));
    let up = Upstream::start();
    // orders: 2 at once in all; a `gold` consumer (etl): 1 at once.
    let quotas = QUOTAS
        .replace(
            "    gold: { rate: 1000/s, burst: 500 }",
            "    gold: { rate: 1000/s, burst: 500, max_in_flight: 1 }",
        )
        .replace(
            "    sales.orders:\n",
            "    sales.orders:\n      max_in_flight: 2\n",
        );
    // Slow requests, beyond the orders' promised latency: no latency timeout.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .timeout("latency_factor: 0")
        .extra(&quotas)
        .start();

    // The etl's first request is held at the upstream until the checks are
    // done: its second is shed (consumer limit).
    let first = in_background(&pki, "etl", &mg, "/orders?hold=slow");
    up.wait_arrival();
    let r = get(&pki, "etl", &mg, "/orders");
    assert_eq!(r.status, "503");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Another consumer gets the product's second place, then it is full.
    let second = in_background(&pki, "forecasting", &mg, "/orders?hold=slow");
    up.wait_arrival();
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "503");
    // Other products are not affected, and nothing queued: all answered now.
    assert_eq!(
        request(&pki, "reporting", &mg, "POST", "/ledger/entries").status,
        "200"
    );
    let m = mg.metrics();
    assert_eq!(
        metric_value(&m, "meshgate_load_shed_total{scope=\"consumer\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "meshgate_load_shed_total{scope=\"product\"}"),
        1.0,
        "{m}"
    );
    // The held ones finish normally, and give their places back.
    up.release("slow");
    assert_eq!(first.join().expect("first"), "200");
    assert_eq!(second.join().expect("second"), "200");
    assert_eq!(get(&pki, "etl", &mg, "/orders").status, "200");
}

/// A GET as `who` on a connection of its own, once its response head has
/// come and the first chunk of its body (`?stream=KEY`: the rest waits for
/// the test); the connection's sender, which keeps it open, and the body.
async fn streaming(
    pki: &Pki,
    who: &str,
    mg: &Meshgate,
    path: &str,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    http::Response<hyper::body::Incoming>,
) {
    use http_body_util::BodyExt;
    let (mut sender, _) = h1_client(pki, who, mg.data).await;
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response head");
    assert_eq!(resp.status(), 200, "{path}");
    let (head, mut body) = resp.into_parts();
    let first = body.frame().await.expect("a first frame").expect("data");
    assert_eq!(first.into_data().ok().as_deref(), Some(&b"first\n"[..]));
    (sender, http::Response::from_parts(head, body))
}

/// `GET path` as `who` on a new connection: the status and the error code
/// of a JSON error body.
async fn status_of_get(pki: &Pki, who: &str, mg: &Meshgate, path: &str) -> (u16, Option<String>) {
    let (mut sender, _) = h1_client(pki, who, mg.data).await;
    let (status, body) = get_on(&mut sender, path).await;
    let error = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from));
    (status, error)
}

/// A request is in flight until its response body has ended, as Envoy's
/// `max_requests` and Linkerd count it: while one streams, the product's
/// and the consumer's places it holds are taken (503 `overloaded`), and
/// they come back when the body ends or the client goes away mid-body.
/// Before, they came back with the response head, and four long streams
/// of one consumer ran at once under `max_in_flight: 1`.
#[test]
fn a_streaming_response_holds_its_in_flight_places_until_its_body_ends() {
    use http_body_util::BodyExt;
    let pki = Pki::new();
    pki.client("forecasting", Leaf::client_spiffe(FINANCE_OTHER));
    pki.client("etl", Leaf::client_spiffe(SALES_ETL));
    let up = Upstream::start();
    // orders: 2 at once in all; a `gold` consumer (etl): 1 at once.
    let quotas = QUOTAS
        .replace(
            "    gold: { rate: 1000/s, burst: 500 }",
            "    gold: { rate: 1000/s, burst: 500, max_in_flight: 1 }",
        )
        .replace(
            "    sales.orders:\n",
            "    sales.orders:\n      max_in_flight: 2\n",
        );
    let trail = pki.path("audit.log");
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .timeout("latency_factor: 0")
        .audit_file(&trail)
        .extra(&quotas)
        .start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let get = |who: &str, path: &str| rt.block_on(status_of_get(&pki, who, &mg, path));
    let overloaded = (503, Some("overloaded".to_string()));

    // The etl's first response streams: its second request is shed.
    let (_etl, mut first) = rt.block_on(streaming(&pki, "etl", &mg, "/orders?stream=etl"));
    assert_eq!(get("etl", "/orders"), overloaded);
    // Another consumer's stream takes the product's second place: full.
    let (forecasting, second) =
        rt.block_on(streaming(&pki, "forecasting", &mg, "/orders?stream=never"));
    assert_eq!(get("reporting", "/orders"), overloaded);
    let m = mg.metrics();
    assert_eq!(
        metric_value(&m, "meshgate_load_shed_total{scope=\"consumer\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "meshgate_load_shed_total{scope=\"product\"}"),
        1.0,
        "{m}"
    );

    // The etl's stream ends: its places come back with its last byte.
    up.release("etl");
    let rest = rt
        .block_on(first.body_mut().collect())
        .expect("the rest of the body")
        .to_bytes();
    assert_eq!(&rest[..], b"last\n");
    assert_eq!(get("etl", "/orders").0, 200);

    // The other client goes away mid-body: its places come back when the
    // sidecar drops the response (its audit event says so).
    let id = second
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    drop((forecasting, second));
    let event = event_of(&mg, &trail, &id);
    assert_eq!(event["complete"], false, "{event}");
    assert_eq!(get("reporting", "/orders").0, 200);
    assert_eq!(get("forecasting", "/orders").0, 200);
}

#[test]
fn the_global_in_flight_limit_sheds_every_product() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .limit("max_in_flight: 1")
        .timeout("latency_factor: 0")
        .start();
    let slow = in_background(&pki, "reporting", &mg, "/orders?hold=slow");
    up.wait_arrival();
    let r = get(&pki, "reporting", &mg, "/ledger/entries");
    assert_eq!(r.status, "503");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(mg.metric("meshgate_load_shed_total{scope=\"global\"}"), 1.0);
    up.release("slow");
    assert_eq!(slow.join().expect("slow"), "200");
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "200");

    // A response that streams holds the place until its body ends.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_conn, mut streaming) =
        rt.block_on(streaming(&pki, "reporting", &mg, "/orders?stream=global"));
    let get = |path: &str| rt.block_on(status_of_get(&pki, "reporting", &mg, path));
    assert_eq!(
        get("/ledger/entries"),
        (503, Some("overloaded".to_string()))
    );
    assert_eq!(mg.metric("meshgate_load_shed_total{scope=\"global\"}"), 2.0);
    up.release("global");
    rt.block_on(http_body_util::BodyExt::collect(streaming.body_mut()))
        .expect("the rest of the body");
    assert_eq!(get("/orders").0, 200);
}

#[test]
fn a_product_promising_a_latency_times_out_at_a_multiple_of_it() {
    let pki = Pki::new();
    let up = Upstream::start();
    // orders promise 250 ms: with a factor of 2, 500 ms; the ledger promises
    // none and keeps the global 15 s.
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .timeout("latency_factor: 2")
        .start();
    // Held until the test ends: the sidecar's timeout answers, however slow
    // the machine.
    let r = get(&pki, "reporting", &mg, "/orders?hold=never");
    assert_eq!(r.status, "504");
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "200");
}

/// Quotas in Redis at `url`; `lease: 1` asks Redis for every request.
fn shared(url: &str, failure: &str, lease: u32) -> String {
    format!(
        "quotas:\n  backend: redis\n  redis: {{ url: \"{url}\", failure_mode: {failure}, replicas: 2, timeout: 2s, lease: {lease} }}\n  tiers:\n    minute: {{ rate: 1/m, burst: 4 }}\n  consumers:\n    - {{ prefix: \"spiffe://mesh.local/ns/finance/\", tier: minute }}\n"
    )
}

#[test]
fn two_sidecars_sharing_redis_enforce_one_quota() {
    let pki = Pki::new();
    let Some(redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    let quotas = shared(&redis.url, "deny", 1);
    let a = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&quotas)
        .start();
    let b = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&quotas)
        .start();
    // One bucket of 4 for the pair: alternate between the two replicas.
    let statuses: Vec<String> = (0..10)
        .map(|i| {
            let mg = if i % 2 == 0 { &a } else { &b };
            get(&pki, "reporting", mg, "/orders").status
        })
        .collect();
    assert_eq!(
        statuses,
        ["200", "200", "200", "200", "429", "429", "429", "429", "429", "429"],
        "one combined quota"
    );
    let r = get(&pki, "reporting", &b, "/orders");
    assert_eq!(r.status, "429");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(a.metric("meshgate_quota_store_errors_total"), 0.0);
}

#[test]
fn when_redis_dies_the_failure_mode_applies() {
    let pki = Pki::new();
    let Some(mut redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    let local = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&shared(&redis.url, "local", 1))
        .start();
    let deny = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&shared(&redis.url, "deny", 1))
        .start();
    let allow = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&shared(&redis.url, "allow", 1))
        .start();
    // While Redis answers, all three share it.
    assert_eq!(get(&pki, "reporting", &local, "/orders").status, "200");
    redis.kill();

    // local: this replica's half of the quota (4 / 2 replicas) in its own buckets.
    let statuses: Vec<String> = (0..4)
        .map(|_| get(&pki, "reporting", &local, "/orders").status)
        .collect();
    assert_eq!(statuses, ["200", "200", "429", "429"]);
    // deny: 503, nothing passes unmetered.
    let r = get(&pki, "reporting", &deny, "/orders");
    assert_eq!(r.status, "503");
    assert_eq!(r.header("retry-after"), Some("1"));
    // allow: unmetered, and saying nothing of the quota: not the
    // upstream's own RateLimit headers either (they passed through).
    for _ in 0..6 {
        let r = get(&pki, "reporting", &allow, "/orders?ratelimit=1");
        assert_eq!(r.status, "200");
        assert_eq!(r.header("ratelimit"), None, "{:?}", r.headers);
        assert_eq!(r.header("ratelimit-policy"), None, "{:?}", r.headers);
    }
    for mg in [&local, &deny, &allow] {
        assert!(mg.metric("meshgate_quota_store_errors_total") >= 1.0);
        assert!(mg
            .logs
            .wait_for(0, std::time::Duration::from_secs(5), |l| l
                .contains("quota store does not answer"))
            .is_some());
    }
}

#[test]
fn a_policy_reload_keeps_the_live_buckets() {
    let pki = Pki::new();
    pki.client("planner", Leaf::client_spiffe(PLANNER));
    let up = Upstream::start();
    // The planner's quota comes from the orders contract: 200/s x 0.0001 =
    // one request per 50 s; reporting's from the `minute` tier.
    let quotas = QUOTAS
        .replace("sla_share: 0.005", "sla_share: 0.0001")
        .replace(
            "        - { id: \"spiffe://mesh.local/ns/logistics/sa/planner\", tier: second }\n",
            "",
        );
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&quotas)
        .start();
    assert_eq!(get(&pki, "planner", &mg, "/orders").status, "200");
    assert_eq!(get(&pki, "planner", &mg, "/orders").status, "429");
    for _ in 0..3 {
        assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "200");
    }
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "429");

    // The orders contract changes (not its quota) and policies reload.
    let contract = pki
        .dir
        .path()
        .join("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&contract).expect("contract");
    std::fs::write(&contract, format!("{text}\n# reviewed\n")).expect("edit");
    let reloads = "meshgate_policy_reloads_total{result=\"ok\"}";
    let before = mg.metric(reloads);
    mg.sighup();
    mg.wait_metric(reloads, before + 1.0);
    // Still refused: the buckets were not reset by the reload.
    assert_eq!(get(&pki, "planner", &mg, "/orders").status, "429");
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "429");

    // Now the contract promises twice the throughput: the planner's quota
    // follows the reload (0.04/s: a request every 25 s), the tier's does not.
    let text = std::fs::read_to_string(&contract).expect("contract");
    let doubled = text.replace(
        "{ property: throughput, value: 200, unit: requests/s }",
        "{ property: throughput, value: 400, unit: requests/s }",
    );
    assert_ne!(doubled, text, "the orders contract names its throughput");
    std::fs::write(&contract, doubled).expect("edit");
    let before = mg.metric(reloads);
    mg.sighup();
    mg.wait_metric(reloads, before + 1.0);
    let r = get(&pki, "planner", &mg, "/orders");
    assert_eq!(r.status, "200");
    assert_eq!(r.header("ratelimit-policy"), Some("\"sla\";q=1;w=25"));
    assert_eq!(get(&pki, "reporting", &mg, "/orders").status, "429");
}

#[test]
fn a_busy_consumer_does_not_cost_a_redis_round_trip_per_request() {
    let pki = Pki::new();
    let Some(redis) = RedisServer::start(pki.dir.path()) else {
        return;
    };
    let up = Upstream::start();
    // A generous tier: every request passes; the default lease is 8.
    let quotas = shared(&redis.url, "deny", 8).replace(
        "minute: { rate: 1/m, burst: 4 }",
        "minute: { rate: 1000/s, burst: 500 }",
    );
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra(&quotas)
        .start();
    // 16 requests on one kept-alive connection (one curl), well within the
    // second a lease lasts.
    let url = mg.url("/orders");
    let mut args = vec!["-w", "\n%{http_code}\n"];
    args.extend(std::iter::repeat_n(url.as_str(), 16));
    let out = curl(&pki, Some("reporting"), &args);
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text.lines().filter(|l| *l == "200").count();
    assert_eq!(ok, 16, "{text}");
    // The first request asks for one, then 8 at a time: 3 round trips.
    let runs = scripts_run(&redis.url);
    assert!((2..=4).contains(&runs), "{runs} scripts for 16 requests");
}
