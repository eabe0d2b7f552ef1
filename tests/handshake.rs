//! Who gets a connection served, through the real binary: a client whose
//! certificate chains to the root in `tls.client_ca` through an intermediate
//! it presents is served as its SPIFFE id, and refused at the handshake
//! without that intermediate; past `limits.max_connections` a connection is
//! not served until another one closes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A finance service (a member of `Mesh::Domain::"finance"` by its
/// namespace), issued by the mesh's intermediate CA.
const LEDGER_SYNC: &str = "spiffe://mesh.local/ns/finance/sa/ledger-sync";

#[test]
fn a_leaf_chained_through_its_intermediate_is_served_and_refused_without_it() {
    let pki = Pki::new();
    let issuing = pki.ca.intermediate("mesh issuing CA");
    pki.chained_client("chained", &issuing, Leaf::client_spiffe(LEDGER_SYNC), true);
    pki.chained_client("bare", &issuing, Leaf::client_spiffe(LEDGER_SYNC), false);
    // The root alone is trusted for clients.
    let roots = std::fs::read_to_string(pki.path("ca.pem")).expect("ca.pem");
    assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 1);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();

    // Leaf and intermediate presented: served (curl sends the whole file),
    // decided and forwarded as the leaf's SPIFFE id.
    assert_eq!(status_of(&pki, Some("chained"), &mg.url("/orders")), "200");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-meshgate-principal"), vec![LEDGER_SYNC]);
    let xfcc = seen[0].header("x-forwarded-client-cert").join(",");
    assert!(xfcc.contains(&format!("URI={LEDGER_SYNC}")), "{xfcc}");
    // The same through rustls (every certificate of the file sent as the chain).
    let served = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let (mut sender, _) = h1_client(&pki, "chained", mg.data).await;
            get_on(&mut sender, "/orders/7").await
        });
    assert_eq!(served.0, 200, "{}", served.1);
    assert_eq!(up.count(), 2);

    // The leaf alone does not chain to the root: refused at the handshake.
    let untrusted = "meshgate_tls_handshake_failures_total{reason=\"untrusted\"}";
    assert_eq!(status_of(&pki, Some("bare"), &mg.url("/orders")), "000");
    mg.wait_metric(untrusted, 1.0);
    assert_eq!(up.count(), 2, "the refused client reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_connection_waits_until_another_closes() {
    let pki = Arc::new(Pki::new());
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .limit("max_connections: 2")
        .start();
    let open = "meshgate_open_connections";

    let (mut first, _) = h1_client(&pki, "reporting", mg.data).await;
    let (mut second, _) = h1_client(&pki, "reporting", mg.data).await;
    assert_eq!(get_on(&mut first, "/first").await.0, 200);
    assert_eq!(get_on(&mut second, "/second").await.0, 200);
    assert_eq!(mg.metric(open), 2.0);

    // A third connection: TCP reaches the kernel's queue, but the sidecar
    // takes it up (TLS, HTTP) only when one of the two ends.
    let (client, data) = (pki.clone(), mg.data);
    let third = tokio::spawn(async move {
        let (mut sender, _) = h1_client(&client, "reporting", data).await;
        let reply = get_on(&mut sender, "/third").await;
        (reply, sender)
    });
    // Meanwhile the open connections are served, round trip after round
    // trip, and the third is not.
    for _ in 0..3 {
        assert_eq!(get_on(&mut first, "/first").await.0, 200);
        assert_eq!(mg.metric(open), 2.0);
    }
    assert!(!third.is_finished(), "a third connection was served");
    assert!(!up.seen().iter().any(|s| s.target == "/third"));

    // One closes: the third is taken up and served.
    drop(second);
    let ((status, body), _third) = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("the third connection was served once one closed")
        .expect("third client");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("/third"), "{body}");
    // The first and the third (the second's place was given back when it
    // ended, before the third was taken up).
    assert_eq!(mg.metric(open), 2.0);
}
