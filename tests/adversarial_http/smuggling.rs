//! Duplicate, conflicting and malformed headers: no request is smuggled.

use crate::common::*;
use crate::raw::*;

#[tokio::test]
async fn duplicate_conflicting_and_malformed_headers_never_smuggle_a_request() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let cases = smuggling_cases();
    let close = "Connection: close\r\n";
    let host = "Host: localhost\r\n";
    run_cases(&pki, &up, &mg, &cases).await;
    let forwarded = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, Want::Forwarded(_)))
        .count();
    assert_eq!(
        up.count(),
        forwarded,
        "one upstream request per forwarded case"
    );
    // The absolute-form authority, not the conflicting Host, went upstream.
    let seen = up.seen();
    assert_eq!(seen[0].header("host"), vec!["localhost"]);

    // Pipelined requests are each authorised on their own: the protected
    // one is refused, and the upstream sees only the public one.
    let before = up.count();
    let mut two = format!("GET {PUBLIC} HTTP/1.1\r\n{host}\r\n").into_bytes();
    two.extend(get("/orders/SO-1"));
    let ex = exchange(&pki, "campaigns", &mg, &two).await;
    let statuses: Vec<u16> = ex.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 403], "{ex:?}");
    assert_eq!(up.count(), before + 1);
    assert_eq!(up.seen()[before].target, PUBLIC);

    // The declared purpose decides restricted data: policy and upstream
    // must see the same one, so two are refused.
    pki.client("fraud", Leaf::client_spiffe(FRAUD));
    let customer = |purposes: &[&str]| {
        let mut req = format!("GET /customers/C-7 HTTP/1.1\r\n{host}");
        for p in purposes {
            req.push_str(&format!("x-data-purpose: {p}\r\n"));
        }
        req.push_str(close);
        req.push_str("\r\n");
        req.into_bytes()
    };
    for (purposes, status) in [
        (&["fraud-investigation", "marketing"][..], 400),
        (&["marketing", "fraud-investigation"][..], 400),
        (&["fraud-investigation", "fraud-investigation"][..], 400),
        (&["marketing"][..], 403),
        (&["fraud-investigation"][..], 200),
    ] {
        let before = up.count();
        let ex = exchange(&pki, "fraud", &mg, &customer(purposes)).await;
        assert_eq!(ex.replies.len(), 1, "{purposes:?}: {ex:?}");
        let r = &ex.replies[0];
        assert_eq!(r.status, status, "{purposes:?}");
        if status == 200 {
            assert_eq!(up.count(), before + 1);
            let s = &up.seen()[before];
            assert_eq!(s.target, "/customers/C-7");
            assert_eq!(s.header("x-data-purpose"), vec!["fraud-investigation"]);
        } else {
            let code = if status == 400 {
                "bad_request"
            } else {
                "forbidden"
            };
            assert_eq!(r.error(), code, "{purposes:?}");
            assert_eq!(up.count(), before, "{purposes:?}: reached the upstream");
        }
    }
}

/// Requests that try to smuggle another past the policy, or to confuse
/// what the upstream takes the request to be; what each must get.
fn smuggling_cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    // A request to the protected path, as it would be hidden in a body.
    const HIDDEN: &str = "GET /orders/SO-1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let raw = |head: &str, body: &str| format!("{head}\r\n{body}").into_bytes();
    let public = |headers: &str| format!("GET /orders/_schema HTTP/1.1\r\n{headers}");
    let close = "Connection: close\r\n";
    let host = "Host: localhost\r\n";
    vec![
        ("Host twice", raw(&public(&format!("{host}Host: evil.example\r\n{close}")), ""), Refused(400, "bad_request")),
        ("Host twice, the same", raw(&public(&format!("{host}{host}{close}")), ""), Refused(400, "bad_request")),
        ("no Host", raw(&public(close), ""), Refused(400, "bad_request")),
        (
            "absolute-form authority and a conflicting Host",
            raw(&format!("GET https://localhost/orders/_schema HTTP/1.1\r\nHost: evil.example\r\n{close}"), ""),
            Forwarded(PUBLIC),
        ),
        (
            "absolute-form to the protected path, Host elsewhere",
            raw(&format!("GET https://evil.example/orders/SO-1 HTTP/1.1\r\n{host}{close}"), ""),
            Refused(403, "forbidden"),
        ),
        // CL.TE and TE.CL: the hidden request is never served, the
        // connection is closed after the response (RFC 9112 6.1).
        (
            "Content-Length and Transfer-Encoding (CL.TE)",
            raw(&public(&format!("{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")), &format!("0\r\n\r\n{HIDDEN}")),
            Forwarded(PUBLIC),
        ),
        (
            "Transfer-Encoding and Content-Length (TE.CL)",
            raw(
                &public(&format!("{host}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n")),
                &format!("{:x}\r\n{HIDDEN}\r\n0\r\n\r\n", HIDDEN.len()),
            ),
            Forwarded(PUBLIC),
        ),
        (
            "a request in a body framed by Content-Length",
            raw(&public(&format!("{host}Content-Length: {}\r\n{close}", HIDDEN.len())), HIDDEN),
            Forwarded(PUBLIC),
        ),
        ("two different Content-Lengths", raw(&public(&format!("{host}Content-Length: 5\r\nContent-Length: 6\r\n{close}")), "abcdef"), Malformed(400)),
        ("a Content-Length list", raw(&public(&format!("{host}Content-Length: 5, 5\r\n{close}")), "abcde"), Malformed(400)),
        ("Content-Length: +5", raw(&public(&format!("{host}Content-Length: +5\r\n{close}")), "abcde"), Malformed(400)),
        (
            "the same Content-Length twice",
            raw(&public(&format!("{host}Content-Length: 5\r\nContent-Length: 5\r\n{close}")), "abcde"),
            Forwarded(PUBLIC),
        ),
        ("Transfer-Encoding: chunked, identity", raw(&public(&format!("{host}Transfer-Encoding: chunked, identity\r\n{close}")), "0\r\n\r\n"), Malformed(400)),
        ("Transfer-Encoding: xchunked", raw(&public(&format!("{host}Transfer-Encoding: xchunked\r\n{close}")), "0\r\n\r\n"), Malformed(400)),
        (
            "Transfer-Encoding folded onto a second line",
            raw(&public(&format!("{host}Transfer-Encoding:\r\n chunked\r\n{close}")), "0\r\n\r\n"),
            Malformed(400),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            raw(&format!("GET /orders/_schema HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n"), "0\r\n\r\n"),
            Malformed(400),
        ),
        (
            "Transfer-Encoding identity, then chunked",
            raw(&public(&format!("{host}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n{close}")), "0\r\n\r\n"),
            Forwarded(PUBLIC),
        ),
        ("obs-fold (tab)", raw(&public(&format!("{host}X-Folded: a\r\n\tb\r\n{close}")), ""), Malformed(400)),
        ("obs-fold (space)", raw(&public(&format!("{host}X-Folded: a\r\n b\r\n{close}")), ""), Malformed(400)),
        ("NUL in a value", raw(&public(&format!("{host}X-Nul: a\0b\r\n{close}")), ""), Malformed(400)),
        ("NUL in a name", raw(&public(&format!("{host}X-N\0ul: ab\r\n{close}")), ""), Malformed(400)),
        ("bare CR in a value", raw(&public(&format!("{host}X-Cr: a\rb\r\n{close}")), ""), Malformed(400)),
        ("space before the colon", raw(&public(&format!("Host : localhost\r\n{close}")), ""), Malformed(400)),
        (
            "bare LF line ends",
            b"GET /orders/_schema HTTP/1.1\nHost: localhost\nConnection: close\n\n".to_vec(),
            Forwarded(PUBLIC),
        ),
    ]
}
