//! Workload certificates as csi-driver-spiffe (and the kubelet, for Secret
//! volumes) provide them: `tls.crt`, `tls.key`, `ca.crt`, symlinks through
//! `..data`, which is swapped atomically to a new directory on every
//! rotation. The server certificate's rotation alone is covered in
//! tests/data_path.rs; here the trust bundle rotates too: a new CA is added
//! beside the old one, then the old one is dropped.

mod common;

use std::path::Path;

use common::*;

/// A kubelet-style volume at `dir`: `..data` -> `version`, files -> `..data/*`.
struct Volume<'a> {
    dir: &'a Path,
}

impl Volume<'_> {
    fn stage(&self, version: &str, cert: &str, key: &str, bundle: &str) {
        let d = self.dir.join(version);
        std::fs::create_dir(&d).expect("mkdir version");
        std::fs::write(d.join("tls.crt"), cert).expect("cert");
        std::fs::write(d.join("tls.key"), key).expect("key");
        std::fs::write(d.join("ca.crt"), bundle).expect("ca");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("atomic swap");
        for f in ["tls.crt", "tls.key", "ca.crt"] {
            let link = self.dir.join(f);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{f}"), link).expect("symlink");
            }
        }
    }
}

#[test]
fn follows_a_trust_bundle_rotation_through_data_symlink_swaps() {
    if !require_tool("curl") {
        return;
    }
    let pki = Pki::new();
    let new_ca = Ca::new("next mesh CA");
    pki.foreign_client("next", &new_ca, Leaf::client_spiffe(REPORTING));
    let mounted = pki.path("spiffe.io");
    std::fs::create_dir(&mounted).expect("mkdir");
    let volume = Volume { dir: &mounted };
    let (c1, k1) = pki.ca.issue(Leaf::server());
    volume.stage("..2026_11_21_00_00_00.1", &c1, &k1, &pki.ca.pem);

    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .tls("spiffe.io/tls.crt", "spiffe.io/tls.key", "spiffe.io/ca.crt")
        .default_workers()
        .default_log_level()
        .start();
    let url = mg.url("/headers");
    assert_eq!(status_of(&pki, Some("reporting"), &url), "200");
    assert_eq!(
        status_of(&pki, Some("next"), &url),
        "000",
        "the next CA is not trusted yet"
    );

    // Rotation, step 1: the bundle holds both CAs; the SVID comes from the new one.
    let both = format!("{}{}", pki.ca.pem, new_ca.pem);
    pki.write("ca.pem", &both);
    let (c2, k2) = new_ca.issue(Leaf::server());
    let from = mg.logs.len();
    volume.stage("..2026_11_21_01_00_00.2", &c2, &k2, &both);
    mg.logs
        .wait_for(from, std::time::Duration::from_secs(20), |l| {
            l.contains("tls material reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));
    assert_eq!(status_of(&pki, Some("reporting"), &url), "200");
    assert_eq!(status_of(&pki, Some("next"), &url), "200");

    // Step 2: the old CA leaves the bundle; its clients are refused.
    let (c3, k3) = new_ca.issue(Leaf::server());
    let from = mg.logs.len();
    volume.stage("..2026_11_21_02_00_00.3", &c3, &k3, &new_ca.pem);
    mg.logs
        .wait_for(from, std::time::Duration::from_secs(20), |l| {
            l.contains("tls material reloaded")
        })
        .unwrap_or_else(|| panic!("no reload:\n{}", mg.logs.dump()));
    assert_eq!(status_of(&pki, Some("next"), &url), "200");
    assert_eq!(status_of(&pki, Some("reporting"), &url), "000");
    assert_eq!(mg.metric("meshgate_tls_reloads_total{result=\"ok\"}"), 2.0);
    assert_eq!(
        mg.metric("meshgate_tls_reloads_total{result=\"error\"}"),
        0.0
    );
}
