//! Cedar authorization through the real binary: the example policies of this
//! repository, real client certificates, curl.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const FRAUD: &str = "spiffe://mesh.local/ns/risk/sa/fraud-scanner";
const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

/// The clients every test has, beside `reporting`.
const CLIENTS: &[(&str, &str)] = &[
    ("campaigns", CAMPAIGNS),
    ("fraud", FRAUD),
    ("etl", SALES_ETL),
];

/// (status, body) of one request; `args` go to curl before the URL.
fn call(pki: &Pki, who: &str, args: &[&str], url: &str) -> (String, String) {
    let mut all = vec!["--path-as-is", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(pki, Some(who), &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

fn upstream_path(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["upstream_path"].as_str().unwrap_or_default().to_string()
}

#[test]
fn allows_and_denies_by_identity_with_a_json_403() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let (status, body) = call(&pki, "reporting", &[], &mg.url("/orders"));
    assert_eq!(status, "200", "{body}");
    assert_eq!(upstream_path(&body), "/orders");

    let (status, body) = call(&pki, "campaigns", &[], &mg.url("/orders"));
    assert_eq!(status, "403");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"], "forbidden");
    assert_eq!(v["request_id"].as_str().map(str::len), Some(32));
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "no policy internals: {body}"
    );

    // The same client may describe the product.
    let (status, _) = call(&pki, "campaigns", &[], &mg.url("/orders/_schema"));
    assert_eq!(status, "200");
    let m = mg.metrics();
    assert_eq!(
        metric_value(
            &m,
            "meshgate_authorization_decisions_total{decision=\"deny\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "meshgate_authorization_decisions_total{decision=\"allow\"}"
        ),
        2.0,
        "{m}"
    );
}

#[test]
fn unrouted_paths_are_404_and_unrouted_methods_405() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let (status, body) = call(&pki, "reporting", &[], &mg.url("/nothing/here"));
    assert_eq!(status, "404");
    assert!(body.contains("\"error\":\"no_route\""), "{body}");
    let (status, body) = call(&pki, "reporting", &["-X", "DELETE"], &mg.url("/orders"));
    assert_eq!(status, "405");
    assert!(body.contains("\"error\":\"method_not_allowed\""), "{body}");
}

#[test]
fn declared_purpose_unlocks_restricted_data() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let url = mg.url("/customers/C-7");
    assert_eq!(call(&pki, "fraud", &[], &url).0, "403");
    assert_eq!(
        call(&pki, "fraud", &["-H", "x-data-purpose: marketing"], &url).0,
        "403"
    );
    let (status, body) = call(
        &pki,
        "fraud",
        &["-H", "x-data-purpose: fraud-investigation"],
        &url,
    );
    assert_eq!(status, "200");
    assert_eq!(upstream_path(&body), "/customers/C-7");
    // A list is two purposes, and one that `Connection` names would not
    // reach the upstream: neither is decided.
    for args in [
        &["-H", "x-data-purpose: fraud-investigation,marketing"][..],
        &[
            "--http1.1",
            "-H",
            "x-data-purpose: fraud-investigation",
            "-H",
            "Connection: x-data-purpose",
        ][..],
    ] {
        let (status, body) = call(&pki, "fraud", args, &url);
        assert_eq!(status, "400", "{args:?}: {body}");
        assert!(
            body.contains("\"error\":\"bad_request\""),
            "{args:?}: {body}"
        );
    }
    // Another service with the purpose header but no grant stays out.
    assert_eq!(
        call(
            &pki,
            "campaigns",
            &["-H", "x-data-purpose: fraud-investigation"],
            &url
        )
        .0,
        "403"
    );
}

#[test]
fn baseline_forbid_beats_a_domain_permit_over_http() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    // finance's own policy permits the sales ETL to write the ledger; the
    // mesh baseline forbids writes from outside the owning domain.
    let (status, _) = call(
        &pki,
        "etl",
        &["-X", "POST", "--data", "{}"],
        &mg.url("/ledger/entries"),
    );
    assert_eq!(status, "403");
    let out = output_within(
        Command::new(bin())
            .args(["authorize", "--config"])
            .arg(&mg.config_path)
            .args([
                "--principal",
                SALES_ETL,
                "--method",
                "POST",
                "--path",
                "/ledger/entries",
            ]),
    );
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decision: deny"), "{text}");
    assert!(
        text.contains("policies: mesh.write-only-from-owning-domain"),
        "{text}"
    );
}

#[test]
fn path_confusion_maps_to_the_right_resource_or_is_refused() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    // campaigns may only *describe* /orders/_schema; every trick below must
    // either land exactly there, or be refused / denied.
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/orders/_schema", "200", Some("/orders/_schema")),
        ("//orders//_schema", "200", Some("/orders/_schema")),
        ("/orders/./_schema", "200", Some("/orders/_schema")),
        ("/x/../orders/_schema", "200", Some("/orders/_schema")),
        ("/orders/%5F%73chema", "200", Some("/orders/_schema")),
        ("/orders/_schema?", "200", Some("/orders/_schema?")),
        (
            "/orders/_schema?q=%2F..",
            "200",
            Some("/orders/_schema?q=%2F.."),
        ),
        // read paths, denied
        ("/orders/_schema/../SO-1", "403", None),
        ("/orders/_schema/%2e%2e/SO-1", "403", None),
        ("/orders/_SCHEMA", "403", None),
        ("/orders/%2e%2e/customers", "403", None),
        // ambiguous encodings, refused before routing
        ("/orders/_schema%2F..%2FSO-1", "400", None),
        ("/orders/_schema%2f..%2fSO-1", "400", None),
        ("/orders%5C_schema", "400", None),
        ("/orders/_schema%00", "400", None),
        ("/orders/_schema;jsessionid=1", "400", None),
        ("/orders/%c0%ae%c0%ae/_schema", "400", None),
        ("/../orders/_schema", "400", None),
        // case matters
        ("/Orders/_schema", "404", None),
        ("/orders/_schema/", "404", None),
    ];
    for (path, want, seen) in cases {
        let (status, body) = call(&pki, "campaigns", &[], &mg.url(path));
        assert_eq!(&status, want, "{path}: {body}");
        if let Some(seen) = seen {
            assert_eq!(&upstream_path(&body), seen, "{path}");
        }
    }
    // The upstream receives the normalised, re-encoded path that was authorised.
    let (status, body) = call(&pki, "reporting", &[], &mg.url("/orders/a%20b/../SO%2D1"));
    assert_eq!(status, "200");
    assert_eq!(upstream_path(&body), "/orders/SO-1");
    let (status, body) = call(&pki, "reporting", &[], &mg.url("/orders/%252F"));
    assert_eq!(status, "200");
    assert_eq!(upstream_path(&body), "/orders/%252F");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_written_under_load_is_rejected_and_no_request_fails() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let before = mg.policy_json();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A steady client on one keep-alive connection, counting outcomes.
    let (mut sender, _) = h1_client(&pki, "reporting", mg.data).await;
    let flag = stop.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = done.clone();
    let load = tokio::spawn(async move {
        let mut statuses = std::collections::BTreeMap::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed)
            && counter.load(std::sync::atomic::Ordering::Relaxed) < 50_000
        {
            let (status, _) = get_on(&mut sender, "/orders").await;
            *statuses.entry(status).or_insert(0) += 1;
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        statuses
    });
    let wait_for_more = |than: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while done.load(std::sync::atomic::Ordering::Relaxed) <= than
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        done.load(std::sync::atomic::Ordering::Relaxed)
    };
    let started = wait_for_more(10);

    let from = mg.logs.len();
    let bad = pki.path("policies/domains/sales/zz-broken.cedar");
    std::fs::write(&bad, "@id(\"sales.broken\")\npermit (principal, action, resource in Mesh::Domain::\"sales\")\nwhen { resource.no_such_attr };\n")
        .expect("write bad policy");
    let line = mg
        .logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("policy reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure:\n{}", mg.logs.dump()));
    assert!(line.contains("zz-broken.cedar:3:"), "{line}");
    let after = mg.policy_json();
    assert_eq!(
        after["version"], before["version"],
        "the old snapshot keeps serving"
    );
    let err = after["last_error"]["errors"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("zz-broken.cedar:3:"), "{after}");
    assert!(mg.metric("meshgate_policy_reloads_total{result=\"error\"}") >= 1.0);
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 0.0);
    // Requests went on being served across the failed reload.
    let at_failure = done.load(std::sync::atomic::Ordering::Relaxed);
    assert!(wait_for_more(at_failure + 20) > at_failure + 20 && at_failure > started);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.expect("load task");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    assert!(statuses[&200] > 0);
}

/// After a failed reload, putting the files back as they were ends the
/// failure: `/policy` loses its `last_error` and the gauge the
/// `MeshgatePolicyReloadFailing` alert reads goes back to 1 (it stayed at 0,
/// and the alert kept firing, while nothing was wrong any more).
#[test]
fn restoring_the_files_after_a_failed_reload_clears_the_failure_and_the_gauge() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let before = mg.policy_json();
    let policy = pki.path("policies/domains/sales/policies.cedar");
    let good = std::fs::read_to_string(&policy).expect("read policy");

    let from = mg.logs.len();
    std::fs::write(
        &policy,
        format!("{good}\n@id(\"sales.broken\")\npermit (principal, action, resource) when {{ resource.no_such_attr }};\n"),
    )
    .expect("break policy");
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("policy reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure:\n{}", mg.logs.dump()));
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 0.0);
    assert!(mg.policy_json()["last_error"].is_object());

    let from = mg.logs.len();
    std::fs::write(&policy, &good).expect("restore policy");
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("the reload failure is cleared")
        })
        .unwrap_or_else(|| panic!("no recovery:\n{}", mg.logs.dump()));
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 1.0);
    let after = mg.policy_json();
    assert!(after["last_error"].is_null(), "{after}");
    assert_eq!(after["version"], before["version"], "the same snapshot");
    // Nothing was swapped: no successful reload is counted.
    assert_eq!(
        mg.metric("meshgate_policy_reloads_total{result=\"ok\"}"),
        0.0
    );
    assert_eq!(call(&pki, "campaigns", &[], &mg.url("/orders")).0, "403");
}

#[test]
fn a_policy_change_on_disk_is_enforced_without_restart() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let before = mg.policy_json();
    assert_eq!(call(&pki, "campaigns", &[], &mg.url("/orders")).0, "403");

    let from = mg.logs.len();
    std::fs::write(
        pki.path("policies/domains/sales/marketing.cedar"),
        "@id(\"sales.orders.marketing-may-read\")\npermit (principal in Mesh::Domain::\"marketing\", action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n",
    )
    .expect("write policy");
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("policy snapshot reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));
    assert_eq!(call(&pki, "campaigns", &[], &mg.url("/orders")).0, "200");
    let after = mg.policy_json();
    assert_ne!(after["version"], before["version"]);
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 1.0);
    assert_eq!(
        after["policies"].as_u64(),
        before["policies"].as_u64().map(|n| n + 1)
    );
    let m = mg.metrics();
    let version = after["version"].as_str().unwrap_or_default();
    assert_eq!(
        metric_value(
            &m,
            &format!("meshgate_policy_info{{version=\"{version}\"}}")
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn start_up_refuses_an_invalid_policy_with_its_position() {
    let pki = Pki::with_clients(CLIENTS);
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").policies();
    std::fs::write(
        pki.path("policies/mesh/extra.cedar"),
        "@id(\"x\")\npermit (principal, action, resource) when { 1 + };\n",
    )
    .expect("write");
    for (cmd, err) in sidecar.refusals("bad.yaml") {
        assert!(err.contains("policies/mesh/extra.cedar:2:"), "{cmd}: {err}");
    }
}

#[test]
fn two_contracts_claiming_one_route_are_refused_naming_both_files() {
    let pki = Pki::with_clients(CLIENTS);
    let sidecar = Meshgate::builder(&pki, "http://127.0.0.1:8080").policies();
    // A second version of the ledger that claims the sales orders route.
    let ledger = std::fs::read_to_string(pki.path("policies/domains/finance/ledger.odcs.yaml"))
        .expect("read");
    let copy = ledger
        .replace("id: finance.ledger\n", "id: finance.ledger-v4\n")
        .replace("path: /ledger/summary,", "path: /orders,");
    assert!(copy.contains("path: /orders,"));
    std::fs::write(
        pki.path("policies/domains/finance/ledger-v4.odcs.yaml"),
        copy,
    )
    .expect("write");
    for (cmd, err) in sidecar.refusals("bad.yaml") {
        assert!(
            err.contains("GET /orders is already routed by")
                && err.contains("domains/sales/orders.odcs.yaml")
                && err.contains("domains/finance/ledger-v4.odcs.yaml"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn shadow_policies_are_evaluated_never_enforced_and_disagreements_counted() {
    let pki = Pki::with_clients(CLIENTS);
    let up = Upstream::start();
    let sidecar = Meshgate::builder(&pki, &up).policies();
    let next = pki.path("policies/sales-next");
    std::fs::create_dir_all(&next).expect("mkdir");
    // The trial: sales would let marketing read orders.
    std::fs::copy(
        pki.path("policies/domains/sales/policies.cedar"),
        next.join("policies.cedar"),
    )
    .expect("copy");
    std::fs::write(
        next.join("trial.cedar"),
        "@id(\"sales.orders.marketing-may-read\")\npermit (principal in Mesh::Domain::\"marketing\", action == Mesh::Action::\"read\", resource in Mesh::DataProduct::\"sales.orders\");\n",
    )
    .expect("write");
    let d = pki.path("policies");
    let mg = sidecar
        .shadow(&[d.join("mesh"), next, d.join("domains/finance")])
        .start();

    assert_eq!(
        call(&pki, "campaigns", &[], &mg.url("/orders")).0,
        "403",
        "shadow must not be enforced"
    );
    assert_eq!(call(&pki, "reporting", &[], &mg.url("/orders")).0, "200");
    assert_eq!(mg.metric("meshgate_shadow_disagreements_total"), 1.0);
    let line = mg
        .logs
        .wait_for(0, Duration::from_secs(10), |l| {
            l.contains("shadow policy set disagrees")
        })
        .expect("disagreement logged");
    assert!(line.contains("sales.orders.marketing-may-read"), "{line}");
    assert!(
        line.contains("\"enforced\":\"deny\"") && line.contains("\"shadow\":\"allow\""),
        "{line}"
    );
}
