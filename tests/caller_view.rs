//! The caller view's `datasets` through the real binary: what each caller
//! would get of a product's datasets (the decision of a request on the
//! dataset's route, the fields it would see hidden and how), with its own
//! identity, purpose and end-user token.

mod common;

use common::*;

const CAMPAIGNS: &str = "spiffe://mesh.local/ns/marketing/sa/campaigns";
const ANALYTICS: &str = "spiffe://mesh.local/ns/marketing/sa/analytics";
const ISSUER: &str = "https://idp.mesh.local";
const VIEW: &str = "/.well-known/data-product/sales.orders/caller";

/// One of the view's `datasets`: (name, route, decision, hidden as
/// `field:mask`, undeclared).
type Row = (String, String, String, Option<Vec<String>>, Option<String>);

fn pki() -> Pki {
    Pki::with_clients(&[("campaigns", CAMPAIGNS), ("analytics", ANALYTICS)])
}

/// `who`'s caller view of sales.orders (a 200, else the test fails).
fn view(pki: &Pki, mg: &Meshgate, who: &str, args: &[&str]) -> serde_json::Value {
    let (exit, status, body) = common::fields::get(pki, who, args, &mg.url(VIEW));
    assert_eq!((exit, status.as_str()), (0, "200"), "{who}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{who}: {e}: {body}"))
}

/// The `datasets` of the view's port `contract`.
fn datasets(view: &serde_json::Value, contract: &str) -> Vec<Row> {
    let ports = view["outputPorts"].as_array().expect("outputPorts");
    let port = ports
        .iter()
        .find(|p| p["contractId"] == contract)
        .unwrap_or_else(|| panic!("no port {contract}: {view}"));
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    port["datasets"]
        .as_array()
        .unwrap_or_else(|| panic!("no datasets: {port}"))
        .iter()
        .map(|d| {
            let hidden = d["hidden"].as_array().map(|h| {
                h.iter()
                    .map(|f| {
                        format!(
                            "{}:{}",
                            text(&f["field"]).unwrap_or_default(),
                            text(&f["mask"]).unwrap_or_default()
                        )
                    })
                    .collect()
            });
            (
                text(&d["name"]).unwrap_or_default(),
                text(&d["route"]).unwrap_or_default(),
                text(&d["decision"]).unwrap_or_default(),
                hidden,
                text(&d["undeclared"]),
            )
        })
        .collect()
}

/// The orders dataset's row: decided `decision` on `GET /orders`, hiding
/// `hidden` (`None`: no plan shown).
fn orders(decision: &str, hidden: Option<&[&str]>) -> Vec<Row> {
    vec![(
        "orders".to_string(),
        "GET /orders".to_string(),
        decision.to_string(),
        hidden.map(|h| h.iter().map(|s| s.to_string()).collect()),
        hidden.map(|_| "pass".to_string()),
    )]
}

const PERSONAL: &[&str] = &["customer_email:hash", "customer_phone:last4"];

#[test]
fn the_caller_view_tells_each_caller_which_fields_it_would_see_hidden_and_how() {
    let pki = pki();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up.url()).policies().start();
    // Analytics reads orders pseudonymised (the sales domain's field rule).
    let analytics = view(&pki, &mg, "analytics", &[]);
    assert_eq!(
        datasets(&analytics, "sales.orders"),
        orders("allow", Some(PERSONAL)),
        "{analytics}"
    );
    // Reporting sees them, unless it declares a purpose the product does
    // not allow (the mesh baseline's purpose limit).
    let reporting = view(&pki, &mg, "reporting", &[]);
    assert_eq!(
        datasets(&reporting, "sales.orders"),
        orders("allow", Some(&[])),
        "{reporting}"
    );
    let marketing = view(&pki, &mg, "reporting", &["-H", "x-data-purpose: marketing"]);
    assert_eq!(
        datasets(&marketing, "sales.orders"),
        orders("allow", Some(PERSONAL)),
        "{marketing}"
    );
    // Campaigns may describe orders, not read them: no plan to show.
    let campaigns = view(&pki, &mg, "campaigns", &[]);
    assert_eq!(
        datasets(&campaigns, "sales.orders"),
        orders("deny", None),
        "{campaigns}"
    );
}

#[test]
fn a_datasets_route_that_takes_a_token_is_decided_with_the_token_sent_and_reads_come_first() {
    let pki = pki();
    let up = Upstream::start();
    let key = common::tokens::Signer::new(jsonwebtoken::Algorithm::ES256, "k1");
    let jwks = pki.path("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [key.jwk] }).to_string()).expect("jwks");
    let sidecar = Meshgate::builder(&pki, &up.url())
        .policies()
        .issuer(&format!(
            "issuer: {ISSUER}\naudiences: [meshgate]\njwks_file: {}",
            jwks.display()
        ));
    // Only the list route asks for a person's token, not the product; and
    // the write on the same path comes first in the contract.
    let contract = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&contract).expect("contract");
    let read = "      - { method: GET, path: /orders, action: read, dataset: orders }\n";
    let write = "      - { method: POST, path: /orders, action: write, dataset: orders }\n";
    assert_eq!(
        (text.matches(read).count(), text.matches(write).count()),
        (1, 1)
    );
    let text = text.replace(write, "").replace(
        read,
        &format!("{write}      - {{ method: GET, path: /orders, action: read, dataset: orders, userToken: required }}\n"),
    );
    std::fs::write(&contract, text).expect("write contract");
    let mg = sidecar.start();

    let without = view(&pki, &mg, "analytics", &[]);
    assert_eq!(
        datasets(&without, "sales.orders"),
        orders("user_token_required", None),
        "{without}"
    );
    let token = key.sign(&common::tokens::analyst(ISSUER));
    let bearer = format!("Authorization: Bearer {token}");
    let with = view(&pki, &mg, "analytics", &["-H", &bearer]);
    assert_eq!(with["caller"]["user"], format!("{ISSUER}|alice"), "{with}");
    assert_eq!(
        datasets(&with, "sales.orders"),
        orders("allow", Some(PERSONAL)),
        "{with}"
    );
    // A bad token is refused, never ignored.
    let (_, status, body) = common::fields::get(
        &pki,
        "analytics",
        &["-H", "Authorization: Bearer not.a.token"],
        &mg.url(VIEW),
    );
    assert_eq!(status, "401", "{body}");
}
