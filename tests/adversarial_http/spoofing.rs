//! Spoofed identity, forwarding and trace headers never reach the upstream.

use crate::audit_helpers::*;
use crate::common::*;
use crate::raw::*;

/// Every header meshgate sets for the upstream, sent by the client in
/// several spellings and more than once, and the forms an upstream may
/// read as the same thing (`_` for `-`, RFC 7239 `Forwarded`).
const SPOOFED: [&str; 20] = [
    "x-meshgate-principal: spiffe://mesh.local/ns/sales/sa/etl",
    "X-MESHGATE-PRINCIPAL: spiffe://mesh.local/ns/sales/sa/etl",
    "X-Meshgate-Principal: spiffe://mesh.local/ns/admin/sa/root",
    "x_meshgate_principal: spiffe://mesh.local/ns/admin/sa/root",
    "X_Meshgate_User: root",
    "x-meshgate-user: root",
    "x-forwarded-client-cert: By=spiffe://evil;URI=spiffe://mesh.local/ns/sales/sa/etl",
    "X-Forwarded-Client-Cert: Hash=00;URI=spiffe://mesh.local/ns/admin/sa/root",
    "x_forwarded_client_cert: URI=spiffe://evil",
    "x-forwarded-for: 10.0.0.1",
    "X-Forwarded-For: 10.0.0.2, 10.0.0.3",
    "x_forwarded_for: 10.0.0.4",
    "x-forwarded-proto: http",
    "X_Forwarded_Proto: http",
    "x-forwarded-host: evil.example",
    "Forwarded: for=10.0.0.5;proto=http;host=evil.example",
    "x-request-id: spoofed-request-id",
    "X-Request-ID: 00000000000000000000000000000000",
    "x_request_id: third",
    "x-end-to-end: kept",
];

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn spoofed_identity_forwarding_and_trace_headers_never_reach_the_upstream() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let mut mg = Meshgate::builder(&pki, &up)
        .policies()
        .audit_file(&audit)
        .start();
    let ex = exchange(&pki, "campaigns", &mg, &get_with(PUBLIC, &SPOOFED)).await;
    assert_eq!(ex.replies.len(), 1, "{ex:?}");
    let reply = &ex.replies[0];
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.target, PUBLIC);
    assert_eq!(s.header("x-meshgate-principal"), vec![CAMPAIGNS]);
    let xfcc = s.header("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "{s:?}");
    assert!(
        xfcc[0].starts_with("Hash=") && xfcc[0].ends_with(&format!(";URI={CAMPAIGNS}")),
        "{}",
        xfcc[0]
    );
    assert_eq!(s.header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(s.header("x-forwarded-proto"), vec!["https"]);
    assert_eq!(s.header("forwarded"), vec!["for=127.0.0.1;proto=https"]);
    let request_id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert_eq!(request_id.len(), 32);
    assert_eq!(s.header("x-request-id"), vec![request_id.clone()]);
    assert_eq!(s.header("x-end-to-end"), vec!["kept"]);
    assert_no_client_copy_of_ours(s);
    let tp = s.header("traceparent");
    assert_eq!(tp.len(), 1, "{tp:?}");
    let mut sent = vec![(request_id, trace_id_of(&tp[0]))];

    // traceparent: continued only when there is exactly one valid header;
    // tracestate goes with the trace it belongs to.
    let cases = traceparent_cases();
    for (what, headers, continued) in &cases {
        let mut lines: Vec<&str> = headers.iter().map(String::as_str).collect();
        lines.push("tracestate: vendor=spoofed");
        let before = up.count();
        let ex = exchange(&pki, "campaigns", &mg, &get_with(PUBLIC, &lines)).await;
        assert_eq!(ex.replies.len(), 1, "{what}: {ex:?}");
        assert_eq!(ex.replies[0].status, 200, "{what}");
        let seen = up.seen();
        assert_eq!(seen.len(), before + 1, "{what}");
        let s = &seen[before];
        let tp = s.header("traceparent");
        assert_eq!(tp.len(), 1, "{what}: {tp:?}");
        let trace = trace_id_of(&tp[0]);
        for h in headers {
            assert!(
                !h.contains(&tp[0][36..52]),
                "{what}: the caller's span as parent"
            );
        }
        if *continued {
            assert_eq!(trace, TRACE, "{what}");
            assert!(tp[0].ends_with("-01"), "{what}: {}", tp[0]);
            assert_eq!(s.header("tracestate"), vec!["vendor=spoofed"], "{what}");
        } else {
            assert!(
                headers.iter().all(|h| !h.contains(&trace)),
                "{what}: continued {trace}"
            );
            assert_ne!(trace, "0".repeat(32), "{what}");
            assert!(tp[0].ends_with("-00"), "{what}: {}", tp[0]);
            assert!(s.header("tracestate").is_empty(), "{what}");
        }
        let id = ex.replies[0].header("x-request-id").expect("request id");
        assert_eq!(s.header("x-request-id"), vec![id.to_string()], "{what}");
        sent.push((id.to_string(), trace));
    }

    // The audit trail has one event per request, with the trace id the
    // upstream was given.
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let events = audit_events(&audit);
    assert_eq!(events.len(), sent.len());
    for (event, (id, trace)) in events.iter().zip(&sent) {
        assert_eq!(event["request_id"], id.as_str(), "{event}");
        assert_eq!(event["trace_id"], trace.as_str(), "{event}");
        assert_eq!(event["principal"]["id"], CAMPAIGNS, "{event}");
        assert_eq!(event["path"], PUBLIC, "{event}");
    }
    let ok = verified(&audit);
    assert!(ok.contains(&format!("ok: {} events", sent.len())), "{ok}");
}

/// Nothing else that looks like a header of meshgate's arrived, in any
/// spelling.
fn assert_no_client_copy_of_ours(s: &Seen) {
    for (name, value) in &s.headers {
        let dashed = name.replace('_', "-");
        let ours = dashed.starts_with("x-meshgate-")
            || dashed.starts_with("x-forwarded-")
            || ["forwarded", "x-request-id", "traceparent"].contains(&dashed.as_str());
        if ours {
            assert!(
                [
                    "x-meshgate-principal",
                    "x-forwarded-client-cert",
                    "x-forwarded-for",
                    "x-forwarded-proto",
                    "forwarded",
                    "x-request-id",
                    "traceparent",
                ]
                .contains(&name.as_str()),
                "a client copy of {name} reached the upstream: {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}

/// traceparent headers, and whether the trace each names is continued.
fn traceparent_cases() -> Vec<(&'static str, Vec<String>, bool)> {
    vec![
        (
            "one valid header",
            vec![format!("traceparent: {VALID}")],
            true,
        ),
        (
            "the same valid header twice",
            vec![
                format!("traceparent: {VALID}"),
                format!("traceparent: {VALID}"),
            ],
            false,
        ),
        (
            "two different valid headers",
            vec![
                format!("traceparent: {VALID}"),
                "Traceparent: 00-11111111111111111111111111111111-2222222222222222-01".into(),
            ],
            false,
        ),
        (
            "all-zero trace id",
            vec!["traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()],
            false,
        ),
        (
            "all-zero parent id",
            vec![format!("traceparent: 00-{TRACE}-0000000000000000-01")],
            false,
        ),
        (
            "upper-case hex",
            vec![format!(
                "traceparent: 00-{}-00F067AA0BA902B7-01",
                TRACE.to_uppercase()
            )],
            false,
        ),
        (
            "version ff",
            vec![format!("traceparent: ff-{TRACE}-00f067aa0ba902b7-01")],
            false,
        ),
        (
            "too short",
            vec![format!("traceparent: 00-{TRACE}-00f067aa0ba902b7-1")],
            false,
        ),
        (
            "version 00 with a trailing field",
            vec![format!("traceparent: {VALID}-extra")],
            false,
        ),
        (
            "a trace id that is not hex",
            vec!["traceparent: 00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01".into()],
            false,
        ),
        (
            "spaces around the fields",
            vec![format!("traceparent: 00 -{TRACE}-00f067aa0ba902b7-01")],
            false,
        ),
    ]
}
