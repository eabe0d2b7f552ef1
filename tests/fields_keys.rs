//! The hash key of `hash`-masked fields through the real binary: the
//! pseudonym is HMAC-SHA256 of the value under the mesh's key, equal on
//! two sidecars with the same key file and different under another key;
//! a new key file is used from the next request on, and one that does not
//! load keeps the last good key (logged and counted); without a key,
//! start-up names the hashed fields and a response hashing one is cut.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fields::{get, masked, masked_in, pseudonym, KEY, RECORD};
use common::json_upstream::FixedUpstream;
use common::*;

fn upstream() -> FixedUpstream {
    FixedUpstream::start(vec![("/orders/SO-1", "application/json", RECORD.into())])
}

/// The pseudonym of the e-mail that `mg` shows finance.
fn email_of(pki: &Pki, mg: &Meshgate, proto: &str) -> String {
    let (_, status, body) = get(pki, "reporting", &[proto], &mg.url("/orders/SO-1"));
    assert_eq!(status, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["customer_email"].as_str().expect("a string").to_string()
}

#[test]
fn pseudonyms_are_equal_across_sidecars_with_one_key_and_differ_under_another() {
    let pki = Pki::new();
    let up = upstream();
    let other_key = "another mesh's key, also 32 bytes or more";
    let one = masked_in(&pki, &up, &pki.path("one"), KEY).start();
    let two = masked_in(&pki, &up, &pki.path("two"), &format!("\n{KEY}\n")).start();
    let other = masked_in(&pki, &up, &pki.path("other"), other_key).start();
    let expected = pseudonym(KEY, "ana@example.com");
    for proto in ["--http1.1", "--http2"] {
        assert_eq!(email_of(&pki, &one, proto), expected, "{proto}");
        // The same key with a newline around it, on another node: the same.
        assert_eq!(email_of(&pki, &two, proto), expected, "{proto}");
        let theirs = email_of(&pki, &other, proto);
        assert_eq!(theirs, pseudonym(other_key, "ana@example.com"), "{proto}");
        assert_ne!(theirs, expected, "{proto}");
    }
}

/// Replaces the key file at once (write beside it, rename over it), as a
/// secret's volume does.
fn swap_key(file: &Path, key: &str) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, key).expect("write");
    std::fs::rename(&tmp, file).expect("rename");
}

#[test]
fn a_new_key_is_used_from_the_next_request_and_a_bad_one_keeps_the_last_good_key() {
    let pki = Pki::new();
    let up = upstream();
    let mg = masked(&pki, &up).start();
    let file = pki.path("hash.key");
    assert_eq!(
        email_of(&pki, &mg, "--http2"),
        pseudonym(KEY, "ana@example.com")
    );

    let rotated = "the rotated mesh key, at least thirty-two bytes";
    swap_key(&file, rotated);
    mg.wait_metric("meshgate_hash_key_reloads_total{result=\"ok\"}", 1.0);
    let now = pseudonym(rotated, "ana@example.com");
    assert_eq!(email_of(&pki, &mg, "--http1.1"), now);

    // Too short to be a key: refused, counted, logged; the rotated key stays.
    let from = mg.logs.len();
    swap_key(&file, "short");
    mg.wait_metric("meshgate_hash_key_reloads_total{result=\"error\"}", 1.0);
    let line = mg
        .logs
        .wait_for(from, Duration::from_secs(10), |l| {
            l.contains("hash key reload failed")
        })
        .unwrap_or_else(|| panic!("no log line:\n{}", mg.logs.dump()));
    assert!(line.contains("at least 32 bytes"), "{line}");
    assert_eq!(email_of(&pki, &mg, "--http2"), now);
    assert_eq!(
        mg.metric("meshgate_hash_key_reloads_total{result=\"ok\"}"),
        1.0
    );
    // SIGHUP re-reads it too (still too short: counted again).
    mg.sighup();
    mg.wait_metric("meshgate_hash_key_reloads_total{result=\"error\"}", 2.0);
    assert_eq!(email_of(&pki, &mg, "--http1.1"), now);
    // A good key again is used from the next request on.
    let third = "a third mesh key, and at least thirty-two bytes";
    swap_key(&file, third);
    mg.wait_metric("meshgate_hash_key_reloads_total{result=\"ok\"}", 2.0);
    assert_eq!(
        email_of(&pki, &mg, "--http2"),
        pseudonym(third, "ana@example.com")
    );
}

#[test]
fn without_a_key_start_up_warns_and_a_response_that_hashes_is_cut() {
    let pki = Pki::with_clients(&[("analytics", "spiffe://mesh.local/ns/marketing/sa/analytics")]);
    let up = upstream();
    // The example tree as committed: analytics sees orders' e-mails hashed.
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let warned = mg
        .logs
        .wait_for(0, Duration::from_secs(10), |l| {
            l.contains("fields.hash_key_file is not set")
        })
        .unwrap_or_else(|| panic!("no warning:\n{}", mg.logs.dump()));
    assert!(
        warned.contains("sales.orders/orders/customer_email"),
        "{warned}"
    );
    let (code, status, body) = get(&pki, "analytics", &["--http2"], &mg.url("/orders/SO-1"));
    assert_ne!(code, 0, "a cut body looked complete: {status} {body}");
    assert!(!body.contains("ana@example.com"), "{body}");
    // Finance hashes nothing: served as it is.
    let (code, _, body) = get(&pki, "reporting", &[], &mg.url("/orders/SO-1"));
    assert_eq!((code, body.as_str()), (0, RECORD));
}
