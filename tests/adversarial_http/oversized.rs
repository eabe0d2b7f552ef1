//! Oversized headers and bodies are refused and the proxy keeps serving.

use crate::audit_helpers::*;
use crate::common::*;
use crate::raw::*;

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_and_the_proxy_keeps_serving() {
    use Want::*;
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .limit("max_header_bytes: 16384")
        .start();
    let big = |n: usize| "a".repeat(n);
    let many_large: Vec<String> = (0..30).map(|i| format!("x-h{i}: {}", big(1000))).collect();
    let many_small: Vec<String> = (0..150).map(|i| format!("x-h{i}: 1")).collect();
    let chunked = |target: &str, body: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}")
            .into_bytes()
    };
    let sized = |target: &str, len: usize| {
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            .into_bytes();
        raw.extend(std::iter::repeat_n(b'x', len));
        raw
    };
    let huge_size = "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n";
    let huge_extension = format!("5;{}\r\nabcde\r\n0\r\n\r\n", big(70_000));
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        // hyper answers 431 and closes: meshgate never sees a request.
        (
            "a header section over the limit",
            get_with(PUBLIC, &refs(&many_large)),
            Malformed(431),
        ),
        (
            "one header over the limit",
            get_with(PUBLIC, &[&format!("x-big: {}", big(20_000))]),
            Malformed(431),
        ),
        (
            "more than 100 headers",
            get_with(PUBLIC, &refs(&many_small)),
            Malformed(431),
        ),
        (
            "a query string over the limit",
            get(&format!("{PUBLIC}?{}", big(20_000))),
            Malformed(431),
        ),
        (
            "a path over the limit",
            get(&format!("/orders/{}", big(20_000))),
            Malformed(431),
        ),
        // Bodies have no size limit of their own (they stream); a denied
        // request's body goes nowhere, an allowed one's to the upstream.
        (
            "a chunk size past 64 bits, protected path",
            chunked("/orders/SO-1", huge_size),
            Refused(403, "forbidden"),
        ),
        (
            "a chunk size past 64 bits, public path",
            chunked(PUBLIC, huge_size),
            Forwarded(PUBLIC),
        ),
        (
            "a 70 kB chunk extension",
            chunked(PUBLIC, &huge_extension),
            Forwarded(PUBLIC),
        ),
        (
            "a 64 KiB body to the protected path",
            sized("/orders/SO-1", 64 * 1024),
            Refused(403, "forbidden"),
        ),
    ];
    run_cases(&pki, &up, &mg, &cases).await;
    assert_eq!(up.count(), 2);
    // The proxy keeps serving, on new connections and on a kept-alive one.
    let mut two = format!("GET {PUBLIC} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    two.extend(get(PUBLIC));
    let ex = exchange(&pki, "campaigns", &mg, &two).await;
    let statuses: Vec<u16> = ex.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 200]);
    assert_eq!(up.count(), 4);
}
