//! Domain-scoped policy authority through the real binary: a domain's policy
//! source (`{ path, domain }`) may speak only about the domain's own
//! resources; what oversteps is refused at start-up, by `meshgate validate`
//! and at reload (the last good snapshot keeps serving).

mod common;

use std::time::Duration;

use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";

/// Sales permits marketing to read finance's ledger: not sales' to give.
const LEDGER_FOR_MARKETING: &str = r#"// Sales speaking for finance's ledger.
@id("sales.marketing-reads-ledger")
permit (
  principal in Mesh::Domain::"marketing",
  action == Mesh::Action::"read",
  resource in Mesh::DataProduct::"finance.ledger"
);
"#;

/// Two more ways to overstep: an open scope, and a grant of the ledger.
const OPEN_FORBID: &str = r#"@id("sales.no-deletes-anywhere")
forbid (principal, action == Mesh::Action::"write", resource)
when { context.method == "DELETE" };
"#;

const LEDGER_GRANT: &str = r#"[
  {
    "template_id": "sales.grant.read",
    "link_id": "sales.grant.read.campaigns.ledger",
    "args": {
      "?principal": "Mesh::Service::\"spiffe://mesh.local/ns/marketing/sa/campaigns\"",
      "?resource": "Mesh::DataProduct::\"finance.ledger\""
    }
  }
]
"#;

#[test]
fn a_domain_file_permitting_another_domains_product_is_refused_at_start_up() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let sidecar = Meshgate::builder(&pki, &up).policies();
    let sales = pki.path("policies/domains/sales");
    std::fs::write(sales.join("zz-ledger.cedar"), LEDGER_FOR_MARKETING).expect("write");
    std::fs::write(sales.join("zz-open.cedar"), OPEN_FORBID).expect("write");
    std::fs::write(sales.join("zz-ledger.links.json"), LEDGER_GRANT).expect("write");

    let ledger = "zz-ledger.cedar:2:1: policy `sales.marketing-reads-ledger` of domain `sales` is refused: `resource in Mesh::DataProduct::\"finance.ledger\"` names a resource of domain `finance`";
    let open = "zz-open.cedar:1:1: policy `sales.no-deletes-anywhere` of domain `sales` is refused: its resource scope `resource` could match another domain's resources";
    let grant = "zz-ledger.links.json:4:16: grant (link of template `sales.grant.read`) `sales.grant.read.campaigns.ledger` of domain `sales` is refused: `resource in Mesh::DataProduct::\"finance.ledger\"` names a resource of domain `finance`";
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        if cmd == "validate" {
            // Every violation, each with its place, id, domain and why.
            for want in [ledger, grant, open] {
                assert!(err.contains(want), "{cmd}: no `{want}` in:\n{err}");
            }
            assert!(err.contains(": 3 errors, 0 warnings"), "{cmd}: {err}");
        } else {
            // `run` stops at start-up with the first, and says how many more.
            assert!(err.contains(ledger), "{cmd}: {err}");
            assert!(err.contains("(and 2 more errors)"), "{cmd}: {err}");
        }
    }

    // The very same policies under the mesh baseline's authority load (the
    // refusal is about who speaks, not what is said), and the permit works.
    // The grant does not, as long as it links sales's template: sales could
    // turn what the mesh grants on finance's ledger into a forbid, or widen
    // it. Linking a template of the baseline's own, it loads.
    let mesh_extra = pki.path("mesh-extra");
    std::fs::create_dir_all(&mesh_extra).expect("mkdir");
    for f in ["zz-ledger.cedar", "zz-open.cedar", "zz-ledger.links.json"] {
        std::fs::rename(sales.join(f), mesh_extra.join(f)).expect("move");
    }
    let sidecar = sidecar.policy_source(&mesh_extra);
    let foreign = "zz-ledger.links.json:3:37: [0].template_id: grant `sales.grant.read.campaigns.ledger` of the mesh baseline is refused: `sales.grant.read` is a template of domain `sales` (";
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(foreign), "{cmd}: no `{foreign}` in:\n{err}");
    }
    std::fs::write(
        mesh_extra.join("zz-grant.cedar"),
        "@id(\"mesh.grant.read\")\npermit (principal == ?principal, action == Mesh::Action::\"read\", resource in ?resource);\n",
    )
    .expect("write");
    std::fs::write(
        mesh_extra.join("zz-ledger.links.json"),
        LEDGER_GRANT.replace("\"sales.grant.read\"", "\"mesh.grant.read\""),
    )
    .expect("write");
    let mg = sidecar.start();
    let (status, _) = status_and_body(&pki, "campaigns", &mg.url("/ledger/entries"));
    assert_eq!(status, "200", "the mesh may grant what a domain may not");
}

/// (status, body) of a GET by `who`.
fn status_and_body(pki: &Pki, who: &str, url: &str) -> (String, String) {
    let out = curl(pki, Some(who), &["-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[test]
fn a_domain_file_permitting_another_domains_product_is_refused_at_reload() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let before = mg.policy_json();
    let ledger = mg.url("/ledger/entries");
    assert_eq!(status_and_body(&pki, "campaigns", &ledger).0, "403");
    assert_eq!(
        status_and_body(&pki, "reporting", &mg.url("/orders")).0,
        "200"
    );

    let from = mg.logs.len();
    std::fs::write(
        pki.path("policies/domains/sales/zz-ledger.cedar"),
        LEDGER_FOR_MARKETING,
    )
    .expect("write");
    let line = mg
        .logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("policy reload failed")
        })
        .unwrap_or_else(|| panic!("no reload failure:\n{}", mg.logs.dump()));
    for want in [
        "zz-ledger.cedar:2:1",
        "sales.marketing-reads-ledger",
        "of domain `sales`",
        "names a resource of domain `finance`",
    ] {
        assert!(line.contains(want), "no `{want}` in {line}");
    }
    // The last good snapshot keeps serving: same version, same decisions.
    let after = mg.policy_json();
    assert_eq!(after["version"], before["version"]);
    assert!(
        after["last_error"]
            .to_string()
            .contains("zz-ledger.cedar:2:1"),
        "{after}"
    );
    assert_eq!(mg.metric("meshgate_policy_last_reload_successful"), 0.0);
    assert_eq!(
        mg.metric("meshgate_policy_reloads_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(status_and_body(&pki, "campaigns", &ledger).0, "403");
    assert_eq!(
        status_and_body(&pki, "reporting", &mg.url("/orders")).0,
        "200"
    );

    // Scoped to its own product, the same grant is sales' to give.
    let from = mg.logs.len();
    std::fs::write(
        pki.path("policies/domains/sales/zz-ledger.cedar"),
        LEDGER_FOR_MARKETING
            .replace("finance.ledger", "sales.orders")
            .replace("reads-ledger", "reads-orders"),
    )
    .expect("write");
    mg.logs
        .wait_for(from, Duration::from_secs(30), |l| {
            l.contains("policy snapshot reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));
    assert_eq!(
        status_and_body(&pki, "campaigns", &mg.url("/orders")).0,
        "200"
    );
    assert_eq!(status_and_body(&pki, "campaigns", &ledger).0, "403");
}

/// A minimal contract of `domain` with one route.
fn contract(id: &str, domain: &str, route: &str) -> String {
    format!(
        "apiVersion: v3.0.2\nkind: DataContract\nid: {id}\nversion: 1.0.0\nstatus: active\ndomain: {domain}\nschema:\n  - {{ name: rows, classification: internal }}\nslaProperties:\n  - {{ property: availability, value: 99.0, unit: percent }}\ncustomProperties:\n  - {{ property: owner, value: team@example }}\n  - property: meshgateRoutes\n    value:\n      - {{ method: GET, path: \"{route}\", action: read, dataset: rows }}\n"
    )
}

/// A domain publishes only its own products, and cannot take another
/// domain's product ids or paths: a contract of another domain in its
/// source, an id in another domain's namespace, or a route
/// that matches a path another domain's route matches, whatever the methods
/// (literal segments win at lookup, so `/ledger/{entry}` beside
/// `/ledger/entries` is refused too), is refused by `run` and `validate`,
/// naming both files.
#[test]
fn a_domain_cannot_publish_another_domains_product_or_take_its_paths() {
    let pki = Pki::new();
    let up = Upstream::start();
    let sidecar = Meshgate::builder(&pki, &up).policies();
    let sales = pki.path("policies/domains/sales");
    let claimed = sales.join("claimed.odcs.yaml");
    std::fs::write(
        &claimed,
        contract("finance.claimed", "finance", "/claimed/{id}"),
    )
    .expect("write");
    let tap = sales.join("tap.odcs.yaml");
    std::fs::write(&tap, contract("sales.tap", "sales", "/ledger/{entry}")).expect("write");
    let ledger = pki.path("policies/domains/finance/ledger.odcs.yaml");
    let wrong_domain = format!(
        "{}:6:9: domain: the contract is of domain `finance`, but its source belongs to domain `sales`",
        claimed.display()
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(
            err.contains(&wrong_domain),
            "{cmd}: no `{wrong_domain}` in:\n{err}"
        );
        if cmd == "validate" {
            // The contract errors come first; with them gone, the routes.
            assert!(!err.contains("overlaps"), "{cmd}: {err}");
        }
    }
    std::fs::remove_file(&claimed).expect("remove");
    // Nor a product id in another domain's namespace: finance would own
    // `Mesh::DataProduct::"sales.returns"` and its descriptor.
    let returns = pki.path("policies/domains/finance/returns.odcs.yaml");
    std::fs::write(&returns, contract("sales.returns", "finance", "/returns")).expect("write");
    let squat = format!(
        "{}:3:5: id: `sales.returns` lies in the namespace of domain `sales` (`sales.`), but the contract is of domain `finance`",
        returns.display()
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(&squat), "{cmd}: no `{squat}` in:\n{err}");
    }
    std::fs::remove_file(&returns).expect("remove");
    // Whichever is read second is refused, naming the other (finance's
    // contracts are read after sales' here).
    let overlap = format!(
        "{}:42:30: customProperties.meshgateRoutes[0].path: GET /ledger/entries overlaps `GET /ledger/{{entry}}` of {} (domain `sales`): routes of different domains must not match the same path, whatever their methods",
        ledger.display(),
        tap.display()
    );
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(&overlap), "{cmd}: no `{overlap}` in:\n{err}");
    }
    // By another method too: the more literal path is chosen before the
    // method is looked at, so a `DELETE` would still take finance's paths.
    let by_delete = contract("sales.tap", "sales", "/ledger/{entry}").replace("GET", "DELETE");
    std::fs::write(&tap, by_delete).expect("write");
    let overlap = overlap.replace("`GET /ledger/{entry}`", "`DELETE /ledger/{entry}`");
    for (cmd, err) in sidecar.refusals("meshgate.yaml") {
        assert!(err.contains(&overlap), "{cmd}: no `{overlap}` in:\n{err}");
    }
    // Its own paths are sales' to route: the sidecar starts and serves.
    std::fs::write(&tap, contract("sales.tap", "sales", "/tap/{entry}")).expect("write");
    let mg = sidecar.start();
    assert_eq!(
        status_and_body(&pki, "reporting", &mg.url("/orders")).0,
        "200"
    );
}
