//! Compressed responses on a masked route, through the real binary over
//! HTTP/1.1 and HTTP/2. The request asks for `identity`; a product server
//! that compresses all the same (gzip, deflate, br, zstd) has its JSON,
//! NDJSON and CSV decoded, masked and sent as identity, exactly as the
//! same body sent plain is. Stacked or unknown codings are refused before
//! the head; a stream that is corrupt or cut fails the client's transfer.

mod common;

use common::coded::{encode, CODINGS};
use common::fields::{get, masked, RECORD};
use common::json_upstream::FixedUpstream;
use common::trail::events_of_path;
use common::*;

const PROTOCOLS: [&str; 2] = ["--http1.1", "--http2"];

const CSV: &str = "id,amount,customer_email,customer_phone,customer_since\r\nSO-1,12.50,ana@example.com,+49 170 1234567,2019-04-01\r\nSO-2,3,\"bo@example.com\",,2021-12-31\r\n";

/// (extension, content type, plain body) of each format.
fn formats() -> [(&'static str, &'static str, String); 3] {
    [
        ("json", "application/json", format!("[{RECORD},{RECORD}]")),
        (
            "ndjson",
            "application/x-ndjson",
            format!("{RECORD}\n{RECORD}\n"),
        ),
        ("csv", "text/csv; charset=utf-8", CSV.to_string()),
    ]
}

/// Each format plain (`/orders/plain.EXT`) and in each coding
/// (`/orders/CODING.EXT`).
fn bodies() -> Vec<(String, &'static str, &'static str, Vec<u8>)> {
    let mut all = Vec::new();
    for (ext, ctype, body) in formats() {
        all.push((
            format!("/orders/plain.{ext}"),
            ctype,
            "",
            body.clone().into_bytes(),
        ));
        for coding in CODINGS {
            let path = format!("/orders/{coding}.{ext}");
            all.push((path, ctype, coding, encode(coding, body.as_bytes())));
        }
    }
    all
}

fn upstream(bodies: Vec<(String, &'static str, &'static str, Vec<u8>)>) -> FixedUpstream {
    FixedUpstream::start_encoded(
        bodies
            .iter()
            .map(|(p, t, c, b)| (p.as_str(), *t, *c, b.clone()))
            .collect(),
    )
}

/// (curl's exit code, the response head lower-cased, body) of one GET as
/// `reporting` (who sees personal fields masked).
fn fetch(pki: &Pki, proto: &str, url: &str) -> (i32, String, Vec<u8>) {
    let out = curl(pki, Some("reporting"), &[proto, "-D", "-", url]);
    let text = &out.stdout;
    let split = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(text.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&text[..split]).to_ascii_lowercase();
    (
        out.status.code().unwrap_or(-1),
        head,
        text[split..].to_vec(),
    )
}

#[test]
fn compressed_json_ndjson_and_csv_are_masked_and_sent_as_identity_over_h1_and_h2() {
    let pki = Pki::new();
    let up = upstream(bodies());
    let mg = masked(&pki, &up).start();
    for proto in PROTOCOLS {
        for (ext, _, _) in formats() {
            let (code, status, want) = get(
                &pki,
                "reporting",
                &[proto],
                &mg.url(&format!("/orders/plain.{ext}")),
            );
            assert_eq!((code, status.as_str()), (0, "200"), "{proto} {ext}: {want}");
            assert!(want.contains("hmac-sha256:"), "{proto} {ext}: {want}");
            assert!(!want.contains("ana@example.com"), "{proto} {ext}: {want}");
            for coding in CODINGS {
                let url = mg.url(&format!("/orders/{coding}.{ext}"));
                let (code, head, body) = fetch(&pki, proto, &url);
                let what = format!("{proto} {coding} {ext}");
                assert_eq!(code, 0, "{what}: {head}");
                assert!(
                    head.starts_with("http/") && head.contains(" 200"),
                    "{what}: {head}"
                );
                assert_eq!(String::from_utf8_lossy(&body), want, "{what}");
                for gone in ["content-encoding:", "content-length:", "etag:"] {
                    assert!(!head.contains(gone), "{what}: {head}");
                }
            }
        }
    }
}

#[test]
fn stacked_unknown_corrupt_or_cut_codings_are_never_sent_unmasked() {
    let pki = Pki::new();
    // Long enough that masked records go out before the stream fails.
    let records: Vec<String> = (0..2000).map(|_| RECORD.to_string()).collect();
    let long = format!("[{}]", records.join(",")).into_bytes();
    let cut = encode("gzip", &long);
    let mut corrupt = encode("zstd", &long);
    let middle = corrupt.len() / 2;
    for b in &mut corrupt[middle..middle + 16] {
        *b ^= 0x5a;
    }
    let stacked = encode("br", &encode("gzip", RECORD.as_bytes()));
    let json = "application/json";
    let up = FixedUpstream::start_encoded(vec![
        ("/orders/stacked", json, "gzip, br", stacked),
        (
            "/orders/compress",
            json,
            "compress",
            RECORD.as_bytes().to_vec(),
        ),
        (
            "/orders/truncated",
            json,
            "gzip",
            cut[..cut.len() * 3 / 4].to_vec(),
        ),
        ("/orders/corrupt", json, "zstd", corrupt),
        // A whole br stream of a JSON body cut one byte short.
        (
            "/orders/ended-early",
            json,
            "br",
            encode("br", &long[..long.len() - 1]),
        ),
    ]);
    let trail = pki.path("audit.log");
    let mg = masked(&pki, &up).audit_file(&trail).start();
    for proto in PROTOCOLS {
        for path in ["/orders/stacked", "/orders/compress"] {
            let (code, status, body) = get(&pki, "reporting", &[proto], &mg.url(path));
            assert_eq!(
                (code, status.as_str()),
                (0, "502"),
                "{proto} {path}: {body}"
            );
            assert!(
                body.contains("unmaskable_response"),
                "{proto} {path}: {body}"
            );
        }
        for path in [
            "/orders/truncated",
            "/orders/corrupt",
            "/orders/ended-early",
        ] {
            let (code, head, body) = fetch(&pki, proto, &mg.url(path));
            let body = String::from_utf8_lossy(&body);
            assert_ne!(
                code, 0,
                "{proto} {path}: a cut body looked complete: {head}"
            );
            // Cut after the head, or before it when the first piece fails
            // (HTTP/1.1 sends the head with the first bytes of the body).
            assert!(
                head.is_empty() || head.contains(" 200"),
                "{proto} {path}: {head}"
            );
            assert!(!body.contains("ana@example.com"), "{proto} {path}");
        }
    }
    for path in [
        "/orders/truncated",
        "/orders/corrupt",
        "/orders/ended-early",
    ] {
        for event in events_of_path(&mg, &trail, path, 2) {
            assert_eq!(event["error"], "unmaskable_response", "{event}");
            assert_eq!(event["complete"], false, "{event}");
        }
    }
    for path in ["/orders/stacked", "/orders/compress"] {
        for event in events_of_path(&mg, &trail, path, 2) {
            assert_eq!(event["status"], 502, "{event}");
        }
    }
}
