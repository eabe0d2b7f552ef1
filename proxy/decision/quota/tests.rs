use super::*;
use governor::clock::FakeRelativeClock;

fn config(yaml: &str) -> QuotasConfig {
    crate::base::yaml::parse_yaml(yaml, "quotas.yaml").expect("quotas config")
}

fn tier(v: &Verdict) -> &str {
    match v {
        Verdict::Unlimited => "-",
        Verdict::Allowed(s) | Verdict::Limited(s, _) => &s.tier,
    }
}

fn service(id: &str) -> Consumer<'_> {
    Consumer {
        service: id,
        user: None,
        service_groups: &[],
    }
}

#[test]
fn tiers_resolve_exact_then_group_then_longest_prefix_product_first() {
    let q = Quotas::new(config(
        r#"
tiers: { a: { rate: 10/s }, b: { rate: 10/s }, c: { rate: 10/s }, d: { rate: 10/s }, e: { rate: 10/s } }
consumers:
  - { prefix: "spiffe://m/ns/", tier: a }
  - { prefix: "spiffe://m/ns/x/", tier: b }
  - { id: "spiffe://m/ns/x/sa/exact", tier: c }
products:
  p1: { tier: d, consumers: [ { prefix: "spiffe://m/ns/y/", tier: e } ] }
  p2: { consumer: user, consumers: [ { group: analysts, tier: e } ] }
"#,
    ))
    .expect("quotas");
    let t = |product: &str, id: &str, thr: Option<f64>| {
        tier(&q.check(product, thr, &service(id))).to_string()
    };
    assert_eq!(t("p0", "spiffe://m/ns/z/sa/s", None), "a");
    assert_eq!(t("p0", "spiffe://m/ns/x/sa/s", None), "b");
    assert_eq!(t("p0", "spiffe://m/ns/x/sa/exact", None), "c");
    // A product's own rules come first, then the mesh's, then its tier.
    assert_eq!(t("p1", "spiffe://m/ns/y/sa/s", None), "e");
    assert_eq!(t("p1", "spiffe://m/ns/x/sa/s", None), "b");
    assert_eq!(t("p1", "spiffe://other/sa/s", None), "d");
    // No rule: the contract's throughput, else no quota.
    assert_eq!(t("p0", "spiffe://other/sa/s", Some(50.0)), "sla");
    assert_eq!(t("p0", "spiffe://other/sa/s", None), "-");
    // A user-keyed product counts the user and matches their groups.
    let user = crate::decision::jwt::User {
        id: "https://idp|alice".into(),
        issuer: "https://idp".into(),
        subject: "alice".into(),
        groups: vec!["analysts".into()],
        scopes: vec![],
        attributes: vec![],
        expires_at: u64::MAX,
    };
    let who = Consumer {
        service: "spiffe://other/sa/s",
        user: Some(&user),
        service_groups: &[],
    };
    assert_eq!(tier(&q.check("p2", None, &who)), "e");
}

/// Rates no quota can express: a contract's throughput so slow that
/// its period overflows governor's nanoseconds got no quota at all (and
/// a tier that slow panicked); now the slowest quota, and a config error.
#[test]
fn rates_too_slow_for_a_quota_are_limited_or_refused() {
    let q = Quotas::new(config("tiers: {}")).expect("quotas");
    for (n, throughput) in [1e-12, 1e-200, 5e-324].into_iter().enumerate() {
        let who = format!("svc{n}");
        let first = q.check("p", Some(throughput), &service(&who));
        assert!(
            matches!(first, Verdict::Allowed(_)),
            "{throughput}: {first:?}"
        );
        let second = q.check("p", Some(throughput), &service(&who));
        assert!(
            matches!(second, Verdict::Limited(..)),
            "{throughput}: {second:?}"
        );
    }
    // Faster than one a nanosecond: nothing to limit.
    assert!(matches!(
        q.check("p", Some(1e12), &service("svc")),
        Verdict::Unlimited | Verdict::Allowed(_)
    ));
    let e = Quotas::new(config("tiers: { slow: { rate: 1e-12/h } }"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        e,
        "quotas.tiers.slow.rate: slower than one request in 100 years"
    );
}

/// `validate` runs only `check`; `run` builds the quotas. Whatever one
/// refuses the other refuses, with the same field: a burst whose refill
/// overflows governor's nanoseconds (it wrapped, and the second request
/// was refused), a rate slower than any quota (validate passed it, run
/// exited), a tier name that is no structured-field string.
#[test]
fn check_refuses_exactly_what_the_quotas_cannot_be_built_from() {
    let tiers = |t: &str| config(&format!("tiers: {{ {t} }}"));
    for (yaml, error) in [
        (
            "t: { rate: 1/m, burst: 307445736 }",
            Some("quotas.tiers.t.burst: 307445736 requests take more than 100 years to come back at this rate (at most 52560000)"),
        ),
        ("t: { rate: 1/m, burst: 52560000 }", None),
        (
            "t: { rate: 0.0000001/h }",
            Some("quotas.tiers.t.rate: slower than one request in 100 years"),
        ),
        ("t: { rate: 0.0001/h }", None),
        (
            "t: { rate: 10000000000/s }",
            Some("quotas.tiers.t.rate: faster than one request a nanosecond"),
        ),
        ("t: { rate: 1000000000/s }", None),
        ("t: { rate: 1/s, burst: 0 }", Some("quotas.tiers.t.burst: at least 1")),
        (
            "'gö\"ld': { rate: 1/s }",
            Some("quotas.tiers.gö\\\"ld: a tier name is letters, digits, `_`, `.` and `-` (it is sent in RateLimit headers)"),
        ),
        ("'': { rate: 1/s }", Some("quotas.tiers.: a tier name is")),
        ("gold-1.b_2: { rate: 1/s }", None),
    ] {
        let c = tiers(yaml);
        let checked = c.check();
        let built = Quotas::new(c).map(|_| ());
        match error {
            None => {
                assert!(checked.is_empty(), "{yaml}: {checked:?}");
                assert!(built.is_ok(), "{yaml}: {built:?}");
            }
            Some(error) => {
                assert!(
                    checked.len() == 1 && checked[0].starts_with(error),
                    "{yaml}: {checked:?}"
                );
                assert_eq!(built, Err(checked.join("; ")), "{yaml}");
            }
        }
    }
}

/// The largest burst a slow tier may have holds: its second request
/// passes (governor's `t * (burst - 1)` fits).
#[test]
fn the_largest_burst_of_a_slow_tier_does_not_wrap() {
    let q = Quotas::new(config(
        "tiers: { t: { rate: 1/m, burst: 52560000 } }\nconsumers: [ { prefix: s, tier: t } ]\n",
    ))
    .expect("quotas");
    for left in [52_559_999, 52_559_998] {
        match q.check("p", None, &service("svc")) {
            Verdict::Allowed(s) => assert_eq!(s.remaining, left),
            other => panic!("{other:?}"),
        }
    }
}

/// A Redis timeout no round trip can meet is refused: with `failure_mode:
/// allow`, `1ns` switched the quota off for good.
#[test]
fn a_redis_timeout_below_a_millisecond_is_refused() {
    let with = |timeout: &str| {
        config(&format!(
            "backend: redis\nredis: {{ url: \"redis://127.0.0.1:1\", failure_mode: allow, timeout: {timeout} }}\n"
        ))
        .check()
    };
    assert_eq!(
        with("1ns"),
        ["quotas.redis.timeout: 1ns is below 1ms: Redis never answers that fast, so every check would apply the failure mode"]
    );
    assert_eq!(with("999us").len(), 1);
    assert!(with("1ms").is_empty());
}

/// What `validate` warns of and `run` logs: a failure mode that lets
/// requests through unmetered, a product entry naming no contract.
#[test]
fn an_unmetered_failure_mode_and_a_product_naming_no_contract_are_warnings() {
    let allow =
        config("backend: redis\nredis: { url: \"redis://127.0.0.1:1\", failure_mode: allow }\n");
    let fields: Vec<String> = allow
        .warnings(|_| true)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(fields, ["quotas.redis.failure_mode"]);
    let c = config("tiers: { t: { rate: 1/s } }\nproducts: { sales.orders: { tier: t }, sales.ordres: { tier: t } }\n");
    let warnings = c.warnings(|id| id == "sales.orders");
    assert_eq!(
        warnings,
        [(
            "quotas.products.sales.ordres".to_string(),
            "no contract has this id: its tier, rules and max_in_flight apply to nothing"
                .to_string()
        )]
    );
}

#[test]
fn a_burst_then_refusal_with_an_exact_retry_after() {
    let clock = FakeRelativeClock::default();
    let q = Quotas::with_clock(
        config("tiers: { t: { rate: 2/s, burst: 4 } }\nconsumers: [ { prefix: s, tier: t } ]\n"),
        clock.clone(),
    )
    .expect("quotas");
    for left in [3, 2, 1, 0] {
        match q.check("p", None, &service("svc")) {
            Verdict::Allowed(s) => {
                assert_eq!(s.remaining, left);
                assert_eq!(s.policy_header(), "\"t\";q=4;w=2");
            }
            other => panic!("{other:?}"),
        }
    }
    let Verdict::Limited(state, retry) = q.check("p", None, &service("svc")) else {
        panic!("the fifth request must be refused")
    };
    assert_eq!((state.remaining, retry), (0, 1));
    // Half a second later one request has come back, exactly one.
    clock.advance(Duration::from_millis(500));
    assert!(matches!(
        q.check("p", None, &service("svc")),
        Verdict::Allowed(_)
    ));
    assert!(matches!(
        q.check("p", None, &service("svc")),
        Verdict::Limited(..)
    ));
    // Another consumer is untouched.
    assert!(matches!(
        q.check("p", None, &service("svc2")),
        Verdict::Allowed(_)
    ));
}

/// 1,000,000 identities, one request each, at a simulated million requests
/// a second, through one tier (1,000/s, burst 5: a bucket is full again
/// 1 ms after its last request), with one abuser among them sending every
/// hundredth request. The store never holds more than `max_buckets` plus the
/// 256 checks between two evictions, and eviction never gives the abuser
/// more than GCRA allows.
#[test]
fn a_million_identities_keep_the_store_bounded_and_the_abuser_limited() {
    let clock = FakeRelativeClock::default();
    let q = Quotas::with_clock(
        config("max_buckets: 10000\ntiers: { t: { rate: 1000/s, burst: 5 } }\nconsumers: [ { prefix: \"\", tier: t } ]\n"),
        clock.clone(),
    )
    .expect("quotas");
    let (mut most, mut abuser_allowed, mut abuser_sent) = (0, 0u64, 0u64);
    for i in 0..1_000_000u32 {
        clock.advance(Duration::from_micros(1));
        let id = format!("spiffe://mesh/ns/flood/sa/{i}");
        assert!(!matches!(
            q.check("p", None, &service(&id)),
            Verdict::Limited(..)
        ));
        if i % 100 == 0 {
            abuser_sent += 1;
            if matches!(
                q.check("p", None, &service("spiffe://mesh/ns/x/sa/abuser")),
                Verdict::Allowed(_)
            ) {
                abuser_allowed += 1;
            }
        }
        if i % 1000 == 0 {
            most = most.max(q.keys());
        }
    }
    most = most.max(q.keys());
    assert!(most <= 10_000 + 256 + 1, "{most} keys held");
    // One simulated second at 1,000/s plus the burst: at most 1,005.
    assert_eq!(abuser_sent, 10_000);
    assert!(abuser_allowed <= 1_005, "{abuser_allowed}");
    assert!(abuser_allowed >= 900, "{abuser_allowed}");
}

/// Quotas in a Redis nobody runs (connected lazily: these tests never reach
/// it), tier `t` for every service.
fn shared_quotas() -> Quotas {
    Quotas::new(config(
        "backend: redis\nredis: { url: \"redis://127.0.0.1:9\", failure_mode: deny, replicas: 2 }\ntiers: { t: { rate: 100/s, burst: 40 } }\nconsumers: [ { prefix: s, tier: t } ]\n",
    ))
    .expect("quotas")
}

#[tokio::test]
async fn a_busy_consumer_has_one_lease_fetch_at_a_time() {
    let q = shared_quotas();
    let store = q.redis.as_ref().expect("redis backend");
    assert_eq!(store.check_lease("k", 10), LeaseCheck::Quiet, "first seen");
    assert_eq!(store.check_lease("k", 10), LeaseCheck::Busy);
    // While that lease is on its way, concurrent requests ask for one each:
    // a replica never holds more than one lease of a key.
    assert_eq!(store.check_lease("k", 10), LeaseCheck::Quiet);
    assert_eq!(store.check_lease("k", 10), LeaseCheck::Quiet);
    // The fetch ends (here abandoned: its guard dropped) and the next may lease.
    drop(Fetching { store, key: "k" });
    assert_eq!(store.check_lease("k", 10), LeaseCheck::Busy);
}

#[tokio::test]
async fn leased_requests_are_spent_before_a_local_refusal() {
    let q = shared_quotas();
    let store = q.redis.as_ref().expect("redis backend");
    let key = "p\u{0}svc";
    store.check_lease(key, 10);
    assert_eq!(store.check_lease(key, 10), LeaseCheck::Busy);
    // Three requests leased, then Redis refused a concurrent request of the
    // same consumer (the bucket is empty in Redis).
    store.lease(key, 3, 0, 1, Duration::from_secs(60));
    store.fetched(key);
    store.refuse(key, Duration::from_secs(60), 10);
    // The three taken from Redis are spent; then the refusal holds, without
    // asking Redis (which does not run here).
    for _ in 0..3 {
        let admitted = q.admit("p", None, &service("svc")).await;
        assert!(admitted.is_ok_and(|a| a.state.is_some()));
    }
    assert!(matches!(
        q.admit("p", None, &service("svc")).await,
        Err(Refusal::OverQuota(_, 60))
    ));
}

#[test]
fn the_redis_interval_is_whole_microseconds_rounded_up() {
    let period = |rate: f64| Duration::from_secs_f64(1.0 / rate);
    assert_eq!(redis_emission_us(period(1000.0)), 1000);
    assert_eq!(redis_emission_us(period(8.0)), 125_000);
    assert_eq!(redis_emission_us(Duration::from_secs(3600)), 3_600_000_000);
    // Not whole: enforced a little below the rate, never above it.
    assert_eq!(redis_emission_us(period(600_000.0)), 2);
    assert_eq!(redis_emission_us(period(150_000.0)), 7);
    assert_eq!(redis_emission_us(period(3_000_000.0)), 1);
    assert_eq!(redis_emission_us(Duration::ZERO), 1);
}

/// `q` is what the rate gives back in `w`: a bucket of one at 1000/s said
/// `q=1;w=1` (its `w` rounded up to a second), and an obedient client held
/// itself to 1/s.
#[test]
fn the_advertised_quota_is_the_rate_over_the_window() {
    let q = Quotas::new(config(
        "tiers: { one: { rate: 1000/s, burst: 1 }, half: { rate: 1000/s, burst: 500 }, t: { rate: 2/s, burst: 4 }, m: { rate: 1/m, burst: 3 }, odd: { rate: 3/s, burst: 2 } }\nconsumers: [ { prefix: one, tier: one }, { prefix: half, tier: half }, { prefix: t, tier: t }, { prefix: m, tier: m }, { prefix: odd, tier: odd } ]\n",
    ))
    .expect("quotas");
    for (who, policy) in [
        ("one", "\"one\";q=1000;w=1"),
        ("half", "\"half\";q=1000;w=1"),
        ("t", "\"t\";q=4;w=2"),
        ("m", "\"m\";q=3;w=180"),
        ("odd", "\"odd\";q=3;w=1"),
    ] {
        let shown = q.policy("p", None, &service(who)).expect("a quota");
        assert_eq!(shown.policy_header(), policy);
        assert_eq!(shown.remaining, q.tiers[who].quota.burst_size().get());
        match q.check("p", None, &service(who)) {
            Verdict::Allowed(s) => assert_eq!(s.policy_header(), policy),
            other => panic!("{other:?}"),
        }
    }
}

/// One failed check is not an outage: Redis is left alone only after
/// three in a row, and then asked by one check each probe interval until
/// it answers. Before, one timeout put every consumer into the failure
/// mode for a second.
#[test]
fn the_store_is_left_alone_after_failures_in_a_row_and_probed_until_it_answers() {
    let t0 = std::time::Instant::now();
    let mut b = Breaker::default();
    // Failures with an answer between them never open it.
    for _ in 0..5 {
        assert!(b.ask(t0));
        assert!(!b.failed(t0));
        assert!(b.ask(t0));
        assert!(!b.failed(t0));
        b.answered();
    }
    assert!(b.ask(t0));
    assert!(!b.failed(t0) && !b.failed(t0));
    assert!(b.failed(t0), "the third in a row opens it");
    // Open: no check asks within the interval.
    let half = t0 + PROBE_INTERVAL / 2;
    assert!(!b.ask(half) && !b.ask(half));
    // After it, one check probes; the others wait for the next interval.
    let later = t0 + PROBE_INTERVAL;
    assert!(b.ask(later), "the probe");
    assert!(!b.ask(later) && !b.ask(later + PROBE_INTERVAL / 2));
    // The probe fails: open for another interval, not opened anew.
    assert!(!b.failed(later + PROBE_INTERVAL / 2));
    assert!(!b.ask(later + PROBE_INTERVAL));
    let probe = later + PROBE_INTERVAL / 2 + PROBE_INTERVAL;
    assert!(b.ask(probe));
    // It answers: closed, every check asks again.
    b.answered();
    assert!(b.ask(probe) && b.ask(probe) && b.ask(probe));
    assert_eq!(FAILURES_TO_REST, 3);
}
