//! Self-description through the real binary and curl: the ODPS descriptor
//! (JSON, and YAML on request), the ODCS contracts as committed, the
//! caller's own view and the RFC 9727 api-catalog, each decided with the
//! action `describe` (without it the 404 of an unknown path, so that a
//! refusal does not tell what exists; the baseline able to forbid it),
//! audited and counted like any request; `meshgate describe` prints the
//! same documents offline.
//!
//! The example's sales orders product has two versions, two contracts of
//! domain `sales` and `dataProduct: orders`: `sales.orders` 2.0.0
//! (orders.odcs.yaml, /orders) and the deprecated `sales.orders.v1` 1.2.0
//! (orders-v1.odcs.yaml, /v1/orders). Its policies let finance describe
//! `sales.orders` (`resource in`) and marketing describe it too (`==`);
//! version 1 is a product of its own, which finance reporting may only
//! read: [`sidecar`] lets reporting describe it as well.

mod common;

use std::process::Command;

use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const DISPATCH: &str = "spiffe://mesh.local/ns/shipping/sa/dispatch";

/// Finance reporting, version 1's consumer, may describe it as well (the
/// example lets it only read version 1). No one else may.
const DESCRIBE_V1: &str = r#"@id("sales.orders.v1.reporting-may-describe")
permit (
  principal == Mesh::Service::"spiffe://mesh.local/ns/finance/sa/reporting",
  action == Mesh::Action::"describe",
  resource == Mesh::DataProduct::"sales.orders.v1"
);
"#;

/// A version 3 of the sales orders product, newer than both committed
/// ones: another contract of the same domain and `dataProduct`, with no
/// routes of its own.
const ORDERS_V3: &str = r#"apiVersion: v3.0.2
kind: DataContract
id: sales.orders.v3
name: Sales orders (v3)
version: 3.0.0
status: active
domain: sales
dataProduct: orders
description:
  purpose: Orders with their lines, for reporting.
schema:
  - name: orders
    classification: internal
support:
  - { channel: sales-data, url: "https://chat.acme.example/sales-data", tool: slack }
team:
  - { username: sales-data-team@acme.example, role: owner }
slaProperties:
  - { property: availability, value: 99.5, unit: percent }
customProperties:
  - property: allowedPurposes
    value: [reporting]
"#;

/// Finance may describe version 3 as well; marketing describes only
/// `sales.orders` (its policy names it with `==`).
const DESCRIBE_V3: &str = r#"@id("sales.orders.v3.finance-may-describe")
permit (
  principal in Mesh::Domain::"finance",
  action == Mesh::Action::"describe",
  resource == Mesh::DataProduct::"sales.orders.v3"
);
"#;

/// A sidecar on the example tree, reporting allowed to describe version 1.
fn sidecar(pki: &Pki, upstream: &str) -> Sidecar {
    let sidecar = Meshgate::builder(pki, upstream).policies();
    std::fs::write(
        pki.path("policies/domains/sales/describe-v1.cedar"),
        DESCRIBE_V1,
    )
    .expect("write policy");
    sidecar
}

/// Adds version 3 (and finance's permit to describe it) to the tree.
fn add_v3(pki: &Pki) {
    std::fs::write(
        pki.path("policies/domains/sales/orders-v3.odcs.yaml"),
        ORDERS_V3,
    )
    .expect("write contract");
    std::fs::write(
        pki.path("policies/domains/sales/describe-v3.cedar"),
        DESCRIBE_V3,
    )
    .expect("write policy");
}

fn pki() -> Pki {
    Pki::with_clients(&[("campaigns", CAMPAIGNS), ("dispatch", DISPATCH)])
}

/// One response: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).first().copied()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `curl` as `who` with extra arguments, the head and body kept apart.
fn get(pki: &Pki, who: &str, url: &str, args: &[&str]) -> Answer {
    let head = pki.path(&format!("head-{}", std::process::id()));
    let mut all = vec!["-D", head.to_str().expect("path")];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(pki, Some(who), &all);
    assert!(out.status.success(), "curl {all:?}: {out:?}");
    let text = std::fs::read_to_string(&head).expect("head");
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line: {text}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: out.stdout,
    }
}

fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_descriptor_is_odps_json_by_default_and_yaml_on_request_with_the_ports_the_caller_may_describe(
) {
    let pki = pki();
    let up = Upstream::start();
    let sidecar = sidecar(&pki, &up.url());
    add_v3(&pki);
    let mg = sidecar.start();
    let url = mg.url("/.well-known/data-product/sales.orders");

    let a = get(&pki, "reporting", &url, &[]);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.header("vary"), Some("accept"));
    let odps = a.json();
    assert_eq!(odps["apiVersion"], "v1.1.0");
    assert_eq!(odps["kind"], "DataProduct");
    assert_eq!(odps["id"], "sales.orders");
    assert_eq!(odps["name"], "orders");
    assert_eq!(odps["domain"], "sales");
    // The newest version leads, and gives the product its version.
    assert_eq!(odps["version"], "3.0.0");
    assert_eq!(odps["status"], "active");
    // Reporting may describe every version: one port each, newest first,
    // the deprecated version marked.
    let ports: Vec<(&str, &str, &str, bool)> = odps["outputPorts"]
        .as_array()
        .expect("outputPorts")
        .iter()
        .map(|p| {
            (
                p["contractId"].as_str().unwrap_or(""),
                p["version"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
                p["deprecated"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("sales.orders.v3", "3.0.0", "Sales orders (v3)", false),
            ("sales.orders", "2.0.0", "Sales orders", false),
            ("sales.orders.v1", "1.2.0", "Sales orders (v1)", true),
        ],
        "{odps}"
    );
    assert_eq!(odps["support"][0]["channel"], "sales-data");
    assert_eq!(
        odps["support"][0]["url"],
        "https://chat.acme.example/sales-data"
    );
    let management: Vec<&str> = odps["managementPorts"]
        .as_array()
        .expect("managementPorts")
        .iter()
        .filter_map(|p| p["url"].as_str())
        .collect();
    // Links are absolute, from the authority the client asked for.
    assert!(
        management.contains(&url.as_str())
            && management.contains(&mg.url("/.well-known/api-catalog").as_str()),
        "{management:?}"
    );

    // YAML on request, the same document.
    let y = get(&pki, "reporting", &url, &["-H", "Accept: application/yaml"]);
    assert_eq!(y.status, 200);
    assert_eq!(y.header("content-type"), Some("application/yaml"));
    let yaml: serde_json::Value =
        serde_yaml_ng::from_slice(&y.body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(yaml, odps);
    // JSON preferred by q-value.
    let j = get(
        &pki,
        "reporting",
        &url,
        &["-H", "Accept: application/yaml;q=0.5, application/json"],
    );
    assert_eq!(j.header("content-type"), Some("application/json"));

    // HEAD: the head of the GET, no body; HTTP/2 answers the same.
    for args in [&["-I"][..], &["-I", "--http1.1"][..]] {
        let h = get(&pki, "reporting", &url, args);
        assert_eq!(h.status, 200, "{args:?}");
        assert_eq!(
            h.header("content-type"),
            Some("application/json"),
            "{args:?}"
        );
        let length = a.body.len().to_string();
        assert_eq!(
            h.header("content-length"),
            Some(length.as_str()),
            "{args:?}"
        );
        // curl -I prints the head on stdout too: nothing else came.
        let out = String::from_utf8_lossy(&h.body);
        assert!(!out.contains("apiVersion"), "{args:?}: {out}");
    }
    let h2 = get(&pki, "reporting", &url, &["--http2"]);
    assert_eq!(h2.status, 200);
    assert_eq!(h2.json(), odps);

    // Marketing may describe `sales.orders` only (not version 1, nor the
    // newer version 3): it sees that port alone, and the product has that
    // port's version.
    let m = get(&pki, "campaigns", &url, &[]).json();
    let ids: Vec<&str> = m["outputPorts"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["contractId"].as_str())
        .collect();
    assert_eq!(ids, ["sales.orders"]);
    assert_eq!(m["version"], "2.0.0");
    assert_eq!(up.count(), 0, "nothing well-known reaches the upstream");
}

#[test]
fn contracts_are_served_as_committed_by_id_and_version_and_unknown_names_are_404() {
    let pki = pki();
    let up = Upstream::start();
    let mg = sidecar(&pki, &up.url()).start();
    let committed = |file: &str| {
        std::fs::read(pki.path(&format!("policies/domains/sales/{file}"))).expect("contract")
    };
    let v2 = committed("orders.odcs.yaml");
    let v1 = committed("orders-v1.odcs.yaml");
    assert_ne!(v2, v1);
    let base = "/.well-known/data-product/sales.orders/contracts";
    for (path, text) in [
        (format!("{base}/sales.orders"), &v2),
        (format!("{base}/sales.orders/2.0.0"), &v2),
        (format!("{base}/sales.orders.v1"), &v1),
        (format!("{base}/sales.orders.v1/1.2.0"), &v1),
    ] {
        let a = get(&pki, "reporting", &mg.url(&path), &[]);
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("content-type"), Some("application/yaml"), "{path}");
        assert_eq!(&a.body, text, "{path}: byte for byte as committed");
    }

    for path in [
        format!("{base}/sales.orders/9.9.9"),
        // A version is one contract's: each id with the other's version.
        format!("{base}/sales.orders/1.2.0"),
        format!("{base}/sales.orders.v1/2.0.0"),
        format!("{base}/finance.ledger"),
        format!("{base}/nope"),
        "/.well-known/data-product/nope".to_string(),
        "/.well-known/data-product/sales.orders/other".to_string(),
        "/.well-known/api-catalog/more".to_string(),
    ] {
        let a = get(&pki, "reporting", &mg.url(&path), &[]);
        assert_eq!(a.status, 404, "{path}");
        let body = a.json();
        assert_eq!(body["error"], "no_route", "{path}");
        assert!(body["request_id"].is_string(), "{path}");
    }
    for method in ["POST", "PUT", "DELETE"] {
        let a = get(
            &pki,
            "reporting",
            &mg.url("/.well-known/data-product/sales.orders"),
            &["-X", method],
        );
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(a.json()["error"], "method_not_allowed");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn a_caller_who_may_not_describe_gets_the_404_of_an_unknown_path_and_every_answer_is_audited_and_counted(
) {
    let pki = pki();
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mut mg = sidecar(&pki, &up.url()).audit_file(&audit).start();
    let descriptor = mg.url("/.well-known/data-product/sales.orders");
    let contract = mg.url("/.well-known/data-product/sales.orders/contracts/sales.orders");
    let v1 = mg.url("/.well-known/data-product/sales.orders/contracts/sales.orders.v1");

    // Shipping has no policy that lets it describe anything: what it is
    // refused is answered as what does not exist, byte for byte but the
    // request id.
    let unknown = mg.url("/.well-known/data-product/sales.nosuch");
    let absent = get(&pki, "dispatch", &unknown, &[]);
    assert_eq!(absent.status, 404);
    for url in [&descriptor, &v1] {
        let a = get(&pki, "dispatch", url, &[]);
        assert_eq!(a.status, 404, "{url}");
        assert_eq!(a.json()["error"], "no_route");
        let fields = |r: &Answer| {
            let mut v = r.json();
            v["request_id"] = serde_json::Value::Null;
            (v, r.header("content-type").map(str::to_string))
        };
        assert_eq!(fields(&a), fields(&absent), "{url}");
    }
    // Marketing describes `sales.orders`, not version 1 (its policy names
    // `sales.orders` with `==`) nor finance's ledger.
    assert_eq!(get(&pki, "campaigns", &v1, &[]).status, 404);
    let ledger = mg.url("/.well-known/data-product/finance.ledger");
    assert_eq!(get(&pki, "campaigns", &ledger, &[]).status, 404);
    assert_eq!(get(&pki, "campaigns", &contract, &[]).status, 200);
    // The index lists only what the caller may describe.
    let index = mg.url("/.well-known/data-product");
    let listed = |who: &str| -> Vec<String> {
        get(&pki, who, &index, &[]).json()["dataProducts"]
            .as_array()
            .expect("dataProducts")
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(listed("dispatch"), Vec::<String>::new());
    assert_eq!(listed("campaigns"), ["sales.orders"]);

    // A refused descriptor is counted under the contract decided first
    // (the newest version, `sales.orders`), a refused contract under
    // itself.
    let m = mg.metrics();
    for (product, decision, class, n) in [
        ("sales.orders", "deny", "4xx", 1.0),
        ("sales.orders.v1", "deny", "4xx", 2.0),
        ("finance.ledger", "deny", "4xx", 1.0),
        ("sales.orders", "allow", "2xx", 1.0),
    ] {
        assert_eq!(
            metric_value(
                &m,
                &format!("meshgate_requests_total{{product=\"{product}\",action=\"describe\",decision=\"{decision}\",class=\"{class}\"}}")
            ),
            n,
            "{product} {decision}: {m}"
        );
    }
    assert!(mg.terminate().success());
    let events = audit_events(&audit);
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e["decision"] == "deny" && e["principal"]["id"] == DISPATCH)
        .collect();
    assert_eq!(denied.len(), 2, "{events:?}");
    for e in &denied {
        assert_eq!(e["status"], 404, "{e}");
        assert_eq!(e["action"], "describe", "{e}");
        assert_eq!(e["error"], "no_route", "{e}");
        assert_eq!(e["reason"], "forbidden", "{e}");
    }
    let products: Vec<&str> = denied
        .iter()
        .filter_map(|e| e["product"].as_str())
        .collect();
    assert_eq!(products, ["sales.orders", "sales.orders.v1"]);
    let allowed: Vec<_> = events
        .iter()
        .filter(|e| {
            e["status"] == 200
                && e["path"] == "/.well-known/data-product/sales.orders/contracts/sales.orders"
        })
        .collect();
    assert_eq!(allowed.len(), 1, "{events:?}");
    assert_eq!(allowed[0]["decision"], "allow");
    assert_eq!(allowed[0]["action"], "describe");
    assert_eq!(allowed[0]["principal"]["id"], CAMPAIGNS);
    assert!(
        allowed[0]["policies"]
            .to_string()
            .contains("sales.orders.marketing-may-describe"),
        "{}",
        allowed[0]
    );
    let (ok, out) = audit_verify(&[&audit]);
    assert!(ok, "{out}");
}

#[test]
fn the_baseline_can_forbid_describing() {
    let pki = pki();
    let up = Upstream::start();
    let sidecar = sidecar(&pki, &up.url());
    let baseline = pki.path("policies/mesh/baseline.cedar");
    let mut text = std::fs::read_to_string(&baseline).expect("baseline");
    text.push_str(
        "\n@id(\"mesh.marketing-may-not-describe\")\nforbid (principal in Mesh::Domain::\"marketing\", action == Mesh::Action::\"describe\", resource);\n",
    );
    std::fs::write(&baseline, text).expect("write baseline");
    let mg = sidecar.start();
    let url = mg.url("/.well-known/data-product/sales.orders");
    assert_eq!(get(&pki, "campaigns", &url, &[]).status, 404);
    assert_eq!(get(&pki, "reporting", &url, &[]).status, 200);
}

#[test]
fn the_api_catalog_is_a_linkset_with_its_media_type_linking_the_descriptors_and_contracts() {
    let pki = pki();
    let up = Upstream::start();
    let mg = sidecar(&pki, &up.url()).start();
    let a = get(&pki, "reporting", &mg.url("/.well-known/api-catalog"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type"),
        Some("application/linkset+json; profile=\"https://www.rfc-editor.org/info/rfc9727\"")
    );
    let v = a.json();
    let linkset = v["linkset"].as_array().expect("linkset array");
    assert_eq!(linkset[0]["anchor"], mg.url("/.well-known/api-catalog"));
    let items: Vec<&str> = linkset[0]["item"]
        .as_array()
        .expect("item")
        .iter()
        .filter_map(|i| i["href"].as_str())
        .collect();
    // Reporting (finance) may describe sales orders only: not sales
    // customers, not even finance's own ledger (no policy lets it).
    assert_eq!(items, [mg.url("/.well-known/data-product/sales.orders")]);
    // Every link of every context answers (RFC 9264: each target an
    // object with href and type).
    for context in linkset {
        let anchor = context["anchor"].as_str().expect("anchor");
        for (rel, targets) in context.as_object().expect("context") {
            if rel == "anchor" {
                continue;
            }
            for t in targets.as_array().expect("targets") {
                let href = t["href"].as_str().expect("href");
                let ty = t["type"].as_str().expect("type");
                let got = get(&pki, "reporting", href, &["-H", &format!("Accept: {ty}")]);
                assert_eq!(got.status, 200, "{anchor} {rel} {href}");
                assert_eq!(
                    got.header("content-type"),
                    Some(ty),
                    "{anchor} {rel} {href}"
                );
            }
        }
    }
    let orders = linkset
        .iter()
        .find(|c| c["anchor"] == mg.url("/.well-known/data-product/sales.orders"))
        .expect("orders context");
    let contracts: Vec<&str> = orders["describedby"]
        .as_array()
        .expect("describedby")
        .iter()
        .filter_map(|t| t["href"].as_str())
        .collect();
    assert_eq!(
        contracts,
        [
            mg.url("/.well-known/data-product/sales.orders/contracts/sales.orders/2.0.0"),
            mg.url("/.well-known/data-product/sales.orders/contracts/sales.orders.v1/1.2.0")
        ]
    );
}

#[test]
fn the_caller_view_shows_its_tier_rate_limit_policy_purposes_and_sla() {
    let pki = pki();
    let up = Upstream::start();
    let mg = sidecar(&pki, &up.url())
        .extra(
            "quotas:\n  tiers:\n    bronze: { rate: 10/s, burst: 20 }\n  consumers:\n    - { prefix: \"spiffe://mesh.local/ns/finance/\", tier: bronze }\n",
        )
        .start();
    let a = get(
        &pki,
        "reporting",
        &mg.url("/.well-known/data-product/sales.orders/caller"),
        &["-H", "x-data-purpose: reporting"],
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // The request itself is admitted under the caller's quota.
    assert_eq!(a.header("ratelimit-policy"), Some("\"bronze\";q=20;w=2"));
    let v = a.json();
    assert_eq!(v["product"], "sales.orders");
    assert_eq!(v["caller"]["service"], REPORTING);
    assert_eq!(v["caller"]["purpose"], "reporting");
    let ports = v["outputPorts"].as_array().expect("outputPorts");
    let ids: Vec<(&str, &str, &str)> = ports
        .iter()
        .map(|p| {
            (
                p["contractId"].as_str().unwrap_or(""),
                p["version"].as_str().unwrap_or(""),
                p["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("sales.orders", "2.0.0", "active"),
            ("sales.orders.v1", "1.2.0", "deprecated")
        ],
        "{v}"
    );
    let sla_has = |port: &serde_json::Value, property: &str, value: f64, unit: &str| {
        let sla = port["sla"].as_array().expect("sla");
        assert!(
            sla.iter()
                .any(|p| p["property"] == property && p["value"] == value && p["unit"] == unit),
            "{property}: {sla:?}"
        );
    };
    let v2 = &ports[0];
    assert_eq!(v2["quota"]["tier"], "bronze");
    assert_eq!(v2["quota"]["rateLimitPolicy"], "\"bronze\";q=20;w=2");
    assert_eq!(
        v2["allowedPurposes"],
        serde_json::json!(["reporting", "fulfilment"])
    );
    sla_has(v2, "availability", 99.9, "percent");
    sla_has(v2, "latency", 250.0, "ms");
    let v1 = &ports[1];
    assert_eq!(v1["quota"]["tier"], "bronze");
    assert_eq!(v1["quota"]["rateLimitPolicy"], "\"bronze\";q=20;w=2");
    assert_eq!(v1["allowedPurposes"], serde_json::json!(["reporting"]));
    sla_has(v1, "availability", 99.5, "percent");
    sla_has(v1, "latency", 500.0, "ms");
}

#[test]
fn a_contract_route_under_the_well_known_prefix_is_a_load_error_naming_file_and_field() {
    let pki = pki();
    let sidecar = sidecar(&pki, "http://127.0.0.1:8080");
    let path = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&path).expect("contract");
    let text = text.replace(
        "      - { method: GET, path: /orders/_schema, action: describe }",
        "      - { method: GET, path: /orders/_schema, action: describe }\n      - { method: GET, path: /.well-known/data-product/mine, action: describe }",
    );
    assert!(text.contains("/.well-known/data-product/mine"));
    std::fs::write(&path, text).expect("write");
    for (cmd, err) in sidecar.refusals("bad.yaml") {
        assert!(
            err.contains("domains/sales/orders.odcs.yaml")
                && err.contains("customProperties.meshgateRoutes: [5].path")
                && err.contains("/.well-known/data-product/mine"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn meshgate_describe_prints_the_same_documents_offline() {
    let pki = pki();
    let up = Upstream::start();
    let sidecar = sidecar(&pki, &up.url());
    let config = pki.path("offline.yaml");
    std::fs::write(&config, sidecar.yaml()).expect("config");
    let describe = |args: &[&str]| {
        let out = output_within(
            Command::new(bin())
                .arg("describe")
                .arg("--config")
                .arg(&config)
                .args(args),
        );
        assert!(out.status.success(), "{args:?}: {out:?}");
        out.stdout
    };
    let mg = sidecar.start();

    // Reporting may describe every contract of sales.orders (both
    // versions, with `describe-v1.cedar`): what it is served is what CI
    // publishes, which is every contract.
    let served = get(
        &pki,
        "reporting",
        &mg.url("/.well-known/data-product/sales.orders"),
        &[],
    )
    .json();
    let base = mg.url("");
    let one: serde_json::Value = serde_json::from_slice(&describe(&[
        "--product",
        "sales.orders",
        "--base-url",
        &format!("{base}/"),
    ]))
    .expect("json");
    assert_eq!(one, served);
    let ids: Vec<&str> = served["outputPorts"]
        .as_array()
        .expect("outputPorts")
        .iter()
        .filter_map(|p| p["contractId"].as_str())
        .collect();
    assert_eq!(ids, ["sales.orders", "sales.orders.v1"]);
    // Without --base-url the links are relative to the node.
    let relative: serde_json::Value =
        serde_json::from_slice(&describe(&["--product", "sales.orders"])).expect("json");
    assert_eq!(
        relative["managementPorts"][0]["url"],
        "/.well-known/data-product/sales.orders"
    );
    let all: serde_json::Value = serde_json::from_slice(&describe(&[])).expect("json");
    let ids: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["finance.ledger", "sales.customers", "sales.orders"]);
    let yaml = String::from_utf8(describe(&["--format", "odps-yaml"])).expect("utf-8");
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml document"))
        .collect();
    assert_eq!(serde_json::Value::Array(docs), all);
    let linkset: serde_json::Value =
        serde_json::from_slice(&describe(&["--format", "linkset"])).expect("json");
    assert_eq!(
        linkset["linkset"][0]["item"].as_array().map(Vec::len),
        Some(3)
    );

    for (args, why) in [
        (&["--product", "nope"][..], "no data product `nope`; the contracts describe: finance.ledger, sales.customers, sales.orders"),
        (&["--base-url", "ftp://node.example"][..], "--base-url `ftp://node.example`: the scheme must be https or http"),
        (&["--base-url", "https://node.example/x"][..], "only a scheme and an authority"),
    ] {
        let out = output_within(Command::new(bin())
            .args(["describe", "--config"])
            .arg(&config)
            .args(args));
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("meshgate: ") && err.contains(why), "{args:?}: {err}");
    }
}

#[test]
fn a_product_whose_contract_requires_an_end_user_token_is_described_only_with_one() {
    let pki = pki();
    let up = Upstream::start();
    let key = common::tokens::Signer::new(jsonwebtoken::Algorithm::ES256, "k1");
    let iss = "https://idp.mesh.local";
    let jwks = pki.path("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [key.jwk] }).to_string()).expect("jwks");
    let sidecar = sidecar(&pki, &up.url()).issuer(&format!(
        "issuer: {iss}\naudiences: [meshgate]\njwks_file: {}",
        jwks.display()
    ));
    // Version 2 (`sales.orders`) takes requests on behalf of a person
    // only; version 1 does not.
    let v2 = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&v2).expect("contract");
    assert_eq!(text.matches("customProperties:\n").count(), 1);
    std::fs::write(
        &v2,
        text.replace(
            "customProperties:\n",
            "customProperties:\n  - property: userToken\n    value: required\n",
        ),
    )
    .expect("write contract");
    let mg = sidecar.start();
    let descriptor = mg.url("/.well-known/data-product/sales.orders");

    // The product's strictest contract asks for a token: none, 401.
    let a = get(&pki, "reporting", &descriptor, &[]);
    assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"], "invalid_token");
    assert!(a
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    // A bad token is refused, never ignored.
    let bad = get(
        &pki,
        "reporting",
        &descriptor,
        &["-H", "Authorization: Bearer not.a.token"],
    );
    assert_eq!(bad.status, 401);
    // The index verifies a token when sent and otherwise leaves out what
    // requires one: version 1 still lists the product, at version 1.
    let index = get(&pki, "reporting", &mg.url("/.well-known/data-product"), &[]).json();
    assert_eq!(
        index["dataProducts"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
    assert_eq!(index["dataProducts"][0]["id"], "sales.orders", "{index}");
    assert_eq!(index["dataProducts"][0]["version"], "1.2.0", "{index}");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = key.sign(&serde_json::json!({
        "iss": iss, "sub": "alice", "aud": "meshgate", "iat": now, "exp": now + 600
    }));
    let bearer = format!("Authorization: Bearer {token}");
    let a = get(&pki, "reporting", &descriptor, &["-H", &bearer]);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let d = a.json();
    let ids: Vec<&str> = d["outputPorts"]
        .as_array()
        .expect("outputPorts")
        .iter()
        .filter_map(|p| p["contractId"].as_str())
        .collect();
    assert_eq!(ids, ["sales.orders", "sales.orders.v1"], "{d}");
    assert_eq!(d["version"], "2.0.0", "{d}");
    // With the token the index lists the product at version 2.
    let index = get(
        &pki,
        "reporting",
        &mg.url("/.well-known/data-product"),
        &["-H", &bearer],
    )
    .json();
    assert_eq!(index["dataProducts"][0]["version"], "2.0.0", "{index}");
    let caller = get(
        &pki,
        "reporting",
        &mg.url("/.well-known/data-product/sales.orders/caller"),
        &["-H", &bearer],
    )
    .json();
    assert_eq!(caller["caller"]["user"], format!("{iss}|alice"), "{caller}");
}

#[test]
fn the_documents_follow_a_reload_and_a_bad_contract_keeps_the_last_good_ones() {
    let pki = pki();
    let up = Upstream::start();
    // Start with the two committed versions.
    let mg = sidecar(&pki, &up.url()).start();
    let url = mg.url("/.well-known/data-product/sales.orders");
    let ports = |who: &str| -> Vec<String> {
        get(&pki, who, &url, &[]).json()["outputPorts"]
            .as_array()
            .expect("outputPorts")
            .iter()
            .filter_map(|p| p["contractId"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ports("reporting"), ["sales.orders", "sales.orders.v1"]);
    let v3_url = mg.url("/.well-known/data-product/sales.orders/contracts/sales.orders.v3");
    assert_eq!(get(&pki, "reporting", &v3_url, &[]).status, 404);

    let reload = |result: &str| {
        let sample = format!("meshgate_policy_reloads_total{{result=\"{result}\"}}");
        let before = mg.counter(&sample);
        mg.sighup();
        mg.wait_metric(&sample, before + 1.0);
    };
    // Version 3 and finance's permit to describe it arrive.
    add_v3(&pki);
    reload("ok");
    assert_eq!(
        ports("reporting"),
        ["sales.orders.v3", "sales.orders", "sales.orders.v1"]
    );
    assert_eq!(
        get(&pki, "reporting", &v3_url, &[]).body,
        ORDERS_V3.as_bytes()
    );

    // A contract that routes under the well-known prefix does not load:
    // the node keeps describing what it described.
    let v3 = pki.path("policies/domains/sales/orders-v3.odcs.yaml");
    std::fs::write(
        &v3,
        ORDERS_V3.replace(
            "customProperties:\n",
            "customProperties:\n  - property: meshgateRoutes\n    value:\n      - { method: GET, path: /.well-known/api-catalog, action: read }\n",
        ),
    )
    .expect("write v3");
    reload("error");
    assert_eq!(
        ports("reporting"),
        ["sales.orders.v3", "sales.orders", "sales.orders.v1"]
    );
    assert_eq!(
        get(&pki, "reporting", &v3_url, &[]).body,
        ORDERS_V3.as_bytes()
    );
    let policy = curl(&pki, None, &["-s", &format!("http://{}/policy", mg.admin)]);
    let text = String::from_utf8_lossy(&policy.stdout);
    assert!(
        text.contains("orders-v3.odcs.yaml") && text.contains("/.well-known/api-catalog"),
        "{text}"
    );
}
