//! Certificates and trust bundles rotated 100 times under load.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::load::*;
use crate::probes::*;

/// A client config trusting `roots` and presenting (`cert`, `key`).
fn client_config(roots: &[&str], cert: &str, key: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        store
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("ca"))
            .expect("root");
    }
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)
            .expect("client auth"),
    )
}

fn not_after(pem: &str) -> i64 {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    let cert = p.parse_x509().expect("x509");
    cert.validity().not_after.timestamp()
}

/// The certificates of the rotation test. CA i issues the server
/// certificate of step i; at step i meshgate trusts CAs i-2..=i for
/// clients. A client's certificate comes from the CA of the last step seen
/// live, j, and it trusts CAs j..=j+2 for the server: a client stays valid
/// across two more swaps, so one that read its configuration just before a
/// swap still is when it connects.
struct Rotation {
    cas: Vec<Ca>,
    /// The mounted directory, in the kubelet's layout: files are symlinks
    /// through `..data`, which is swapped atomically to a new directory.
    certs: PathBuf,
}

impl Rotation {
    fn new(pki: &Pki, rotations: usize) -> Rotation {
        let cas: Vec<Ca> = (0..=rotations + 2)
            .map(|i| Ca::new(&format!("rotation CA {i}")))
            .collect();
        let certs = pki.path("mounted");
        std::fs::create_dir(&certs).expect("mkdir");
        Rotation { cas, certs }
    }

    /// Stages step `i`'s files and swaps them in; the server certificate's
    /// expiry.
    fn stage(&self, i: usize) -> i64 {
        let (cas, certs) = (&self.cas, &self.certs);
        let (cert, key) = cas[i].issue(Leaf::server());
        let bundle: String = cas[i.saturating_sub(2)..=i]
            .iter()
            .map(|c| c.pem.as_str())
            .collect();
        let d = certs.join(format!("..v{i}"));
        std::fs::create_dir(&d).expect("mkdir version");
        std::fs::write(d.join("tls.crt"), &cert).expect("cert");
        std::fs::write(d.join("tls.key"), key).expect("key");
        std::fs::write(d.join("ca.crt"), bundle).expect("ca");
        let tmp = certs.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{i}"), &tmp).expect("symlink");
        std::fs::rename(&tmp, certs.join("..data")).expect("atomic swap");
        not_after(&cert)
    }

    /// A client of step `i`.
    fn client_for(&self, i: usize) -> Arc<rustls::ClientConfig> {
        let cas = &self.cas;
        let (cert, key) = cas[i].issue(Leaf::client_spiffe(REPORTING));
        client_config(
            &[&cas[i].pem, &cas[i + 1].pem, &cas[i + 2].pem],
            &cert,
            &key,
        )
    }
}

#[test]
fn certificate_and_trust_bundle_rotated_100_times_under_load_fail_no_request() {
    let _heavy = heavy();
    const ROTATIONS: usize = 100;
    let pki = Pki::new();
    let rotation = Rotation::new(&pki, ROTATIONS);
    let certs = &rotation.certs;
    let stage = |i: usize| rotation.stage(i);
    let client_for = |i: usize| rotation.client_for(i);
    stage(0);
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), certs.join(f)).expect("symlink");
    }
    let up = Upstream::start();
    let mg = quiet(&pki, &up)
        .tls("mounted/tls.crt", "mounted/tls.key", "mounted/ca.crt")
        .start();

    let current = Arc::new(RwLock::new(client_for(0)));
    let mut clients = Vec::new();
    for _ in 0..2 {
        // Connected once, before the first rotation, and kept to the end.
        clients
            .push(Client::shared("kept", current.clone(), "/orders", Mode::KeepAlive).paced(PACE));
    }
    for _ in 0..2 {
        // A new handshake for every request, with the client of the moment.
        clients.push(Client::shared("fresh", current.clone(), "/orders", Mode::Fresh).paced(PACE));
    }
    let load = Load::start(mg.data, clients, BOUNDED);
    load.wait("first responses", EVENT_WAIT, |r| r.len() >= 20);

    let started = Instant::now();
    for i in 1..=ROTATIONS {
        let expiry = stage(i);
        mg.sighup();
        let ca_label = format!(
            "meshgate_certificate_expiry_timestamp_seconds{{cert=\"client_ca:CN=rotation CA {i}\"}}"
        );
        let deadline = Instant::now() + EVENT_WAIT;
        loop {
            // Metrics change before the reload is logged: a reload logged
            // after `seen` is in what the scrape below says, or still to come.
            let seen = mg.logs.len();
            let m = admin_get(&mg, "/metrics");
            let server = metric_value(
                &m,
                "meshgate_certificate_expiry_timestamp_seconds{cert=\"server\"}",
            ) as i64;
            if server == expiry && m.contains(&ca_label) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rotation {i} not live:\n{m}\n{}",
                mg.logs.dump()
            );
            mg.logs.wait_for(seen, Duration::from_secs(1), |l| {
                l.contains("tls material reloaded") || l.contains("tls reload failed")
            });
        }
        *current.write().expect("lock") = client_for(i);
        // A new handshake meets this step's certificate before the next.
        let live = Instant::now();
        load.wait("a new handshake at this step", EVENT_WAIT, |r| {
            r.iter().rev().any(|r| r.who == "fresh" && r.sent > live)
        });
    }
    let rotating = started.elapsed();
    let served_during = load.shared.records.lock().expect("lock").len();
    load.wait("requests after the last rotation", EVENT_WAIT, |r| {
        r.len() >= served_during + 20
    });
    let (records, shared) = load.finish();

    let sum = summary(&records);
    let failed: Vec<&Record> = records.iter().filter(|r| !is_status(r, 200)).collect();
    assert!(
        failed.is_empty(),
        "{sum:?}\n{:#?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        count(&records, |r| r.who == "kept" && !r.reused),
        2,
        "{sum:?}"
    );
    let m = mg.metrics();
    let handshake_failures: f64 = m
        .lines()
        .filter(|l| l.starts_with("meshgate_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(handshake_failures, 0.0, "{m}");
    let ok = metric_value(&m, "meshgate_tls_reloads_total{result=\"ok\"}");
    let errors = metric_value(&m, "meshgate_tls_reloads_total{result=\"error\"}");
    assert!(ok >= ROTATIONS as f64, "{m}");
    let distinct = shared.server_certs.lock().expect("lock").len();
    let fresh = count(&records, |r| r.who == "fresh");
    eprintln!(
        "tls rotation: {ROTATIONS} rotations in {rotating:?}; {} requests all 200 ({fresh} on new \
         handshakes, which met {distinct} distinct server certificates); reloads ok {ok}, \
         error {errors}",
        records.len()
    );
    // The new handshakes met every certificate as it was served.
    assert_eq!(distinct, ROTATIONS + 1);
}
