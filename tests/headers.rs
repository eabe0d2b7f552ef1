//! Override and client-address headers through the real binary, over
//! HTTP/1.1 and HTTP/2, against an upstream that records what it received:
//! every client copy is removed, the verified peer address is set, and a
//! method override a product allows in its contract is routed, decided and
//! audited as the method it names.

mod common;

use common::*;

const SALES_ETL: &str = "spiffe://mesh.local/ns/sales/sa/etl";

/// Every kind of override, client-address and asserted-identity header a
/// client may send, each with a value that would mislead an upstream that
/// honours it.
const SPOOFED: [(&str, &str); 51] = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-Request-URI", "/admin"),
    ("X-Real-Host", "evil.example"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Method", "DELETE"),
    ("X_HTTP_Method_Override", "DELETE"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Override-URL", "/admin"),
    ("X-Original-URI", "/admin"),
    ("X-Envoy-Original-Path", "/admin"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-Scheme", "http"),
    ("X-Host", "evil.example"),
    ("X_Original_URL", "/admin"),
    ("X-Real-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("Fastly-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("X-Original-Forwarded-For", "6.6.6.6"),
    ("X-Envoy-External-Address", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("Forwarded", "for=6.6.6.6;host=evil.example"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("X-Custom-Verb", "DELETE"),
    ("X_Custom_Verb", "DELETE"),
    ("X-Forwarded-User", "admin"),
    ("X-Auth-Request-Email", "admin@example.com"),
    ("Remote-User", "admin"),
    ("Remote_User", "admin"),
    (
        "X-Goog-Authenticated-User-Email",
        "accounts.google.com:admin@example.com",
    ),
    ("Impersonate-User", "system:admin"),
    // Client certificates as TLS-terminating proxies pass them on.
    ("Client-Cert", ":MIIB:"),
    ("Client-Cert-Chain", ":MIIB:"),
    ("X-Forwarded-Tls-Client-Cert", "MIIB"),
    (
        "X-Forwarded-Tls-Client-Cert-Info",
        "Subject%3D%22CN%3Dreporting%22",
    ),
    ("X-SSL-Client-Verify", "SUCCESS"),
    ("X-SSL-Client-S-DN", "CN=reporting"),
    ("SSL_Client_Cert", "MIIB"),
    ("X-ARR-ClientCert", "MIIB"),
    ("X-Amzn-Mtls-Clientcert", "MIIB"),
    ("X-Client-Cert-Present", "true"),
    ("X-Client-Verify", "SUCCESS"),
    ("Cf-Client-Cert-Sha256", "00"),
    // The purpose spelt otherwise: not what the decision read.
    ("X_Data_Purpose", "fraud-investigation"),
];

/// curl arguments sending every spoofed header.
fn spoofing_args(proto: &'static str) -> Vec<String> {
    let mut args = vec![proto.to_string(), "-o".into(), "/dev/null".into()];
    args.extend(["-w".into(), "%{http_code} %{http_version}".into()]);
    for (k, v) in SPOOFED {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    args
}

fn run(pki: &Pki, who: &str, args: &[String], url: &str) -> String {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.push(url);
    let out = curl(pki, Some(who), &all);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Asserts that the upstream saw none of the spoofed headers, in any
/// spelling, and the verified peer as the client.
fn assert_clean(seen: &Seen, what: &str, extra: bool) {
    for (name, _) in SPOOFED {
        let lower = name.to_ascii_lowercase();
        if !extra && lower.replace('_', "-") == "x-custom-verb" {
            continue;
        }
        // Set by meshgate: checked below to carry only the verified value.
        if ["x-forwarded-for", "forwarded", "x-real-ip"].contains(&lower.as_str()) {
            continue;
        }
        assert!(
            seen.header(&lower).is_empty(),
            "{what}: {name} reached the upstream: {seen:?}"
        );
    }
    let addresses = ["x-real-ip", "x-forwarded-for"];
    for name in addresses {
        assert_eq!(seen.header(name), ["127.0.0.1"], "{what}: {name}");
    }
    assert_eq!(
        seen.header("forwarded"),
        ["for=127.0.0.1;proto=https"],
        "{what}"
    );
}

#[test]
fn overrides_and_client_addresses_never_reach_the_upstream() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .policies()
        .extra("headers:\n  strip_overrides_extra: [X-Custom-Verb]\n")
        .start();
    for (proto, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let before = up.count();
        // Allowed as what was sent (a query), whatever the headers say.
        let got = run(
            &pki,
            "reporting",
            &[spoofing_args(proto), vec!["-d".into(), "{}".into()]].concat(),
            &mg.url("/orders/search"),
        );
        assert_eq!(got, format!("200 {version}"), "{proto}");
        let seen = up.seen();
        assert_eq!(seen.len(), before + 1, "{proto}");
        let last = &seen[before];
        assert_eq!(last.method, "POST", "{proto}");
        assert_eq!(last.target, "/orders/search", "{proto}");
        assert_clean(last, proto, true);

        // A GET: every header gone too.
        let got = run(&pki, "reporting", &spoofing_args(proto), &mg.url("/orders"));
        assert_eq!(got, format!("200 {version}"), "{proto}");
        let seen = up.seen();
        assert_eq!(seen[before + 1].target, "/orders", "{proto}");
        assert_clean(&seen[before + 1], proto, true);
    }
}

#[test]
fn authenticated_mode_strips_them_too() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    for (proto, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let before = up.count();
        let got = run(
            &pki,
            "reporting",
            &spoofing_args(proto),
            &mg.url("/anything"),
        );
        assert_eq!(got, format!("200 {version}"), "{proto}");
        let seen = up.seen();
        assert_eq!(seen.len(), before + 1);
        assert_clean(&seen[before], proto, false);
        // Not in the configured extra list here: an ordinary header.
        assert_eq!(seen[before].header("x-custom-verb"), ["DELETE"], "{proto}");
    }
}

/// HTTP/2 lets a client send each cookie as a field of its own; an
/// HTTP/1.1 upstream gets them as one `Cookie` (RFC 9113 8.2.3). An
/// authority with userinfo never reaches it.
#[test]
fn an_http2_requests_cookies_reach_an_http1_upstream_as_one_field() {
    let pki = Pki::new();
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).start();
    let cookies = ["-H", "Cookie: a=1", "-H", "Cookie: b=2"];
    for proto in ["--http2", "--http1.1"] {
        let before = up.count();
        let args: Vec<String> = [proto, "-o", "/dev/null", "-w", "%{http_code}"]
            .iter()
            .chain(&cookies)
            .map(|a| a.to_string())
            .collect();
        assert_eq!(run(&pki, "reporting", &args, &mg.url("/anything")), "200");
        let seen = up.seen();
        let got = seen[before].header("cookie");
        // HTTP/1.1's fields go on as sent.
        let want: &[&str] = match proto {
            "--http2" => &["a=1; b=2"],
            _ => &["a=1", "b=2"],
        };
        assert_eq!(got, want, "{proto}");
    }
    let before = up.count();
    let args: Vec<String> = ["--http1.1", "-o", "/dev/null", "-w", "%{http_code}"]
        .iter()
        .chain(&["--request-target", "https://reporting@localhost/anything"])
        .map(|a| a.to_string())
        .collect();
    assert_eq!(run(&pki, "reporting", &args, &mg.url("/anything")), "400");
    assert_eq!(up.count(), before);
}

/// The orders contract of the example tree, with a DELETE route (a write,
/// which finance may not do), a POST on one order (a query), and the
/// method override allowed.
fn allow_override(pki: &Pki) {
    let file = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&file).expect("orders contract");
    let routes = "      - { method: POST, path: /orders, action: write, dataset: orders }\n";
    assert!(text.contains(routes), "the example's routes changed");
    let text = text.replace(
        routes,
        &format!(
            "{routes}      - {{ method: DELETE, path: \"/orders/{{id}}\", action: write, dataset: orders }}\n      - {{ method: POST, path: \"/orders/{{id}}\", action: query, dataset: orders }}\n"
        ),
    );
    let text = text.replace(
        "customProperties:\n",
        "customProperties:\n  - property: meshgateAllowOverride\n    value: { methodHeader: X-HTTP-Method-Override }\n",
    );
    std::fs::write(&file, text).expect("write contract");
}

/// One POST with curl's `proto` flag and `extra` arguments as `who`: the
/// status code.
fn post(pki: &Pki, mg: &Meshgate, who: &str, proto: &str, extra: &[&str], path: &str) -> String {
    let mut args = vec![proto.to_string(), "-o".into(), "/dev/null".into()];
    args.extend([
        "-w".into(),
        "%{http_code}".into(),
        "-X".into(),
        "POST".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    run(pki, who, &args, &mg.url(path))
}

/// The method (as decided) and status of each request sent.
type Decided = Vec<(&'static str, u64)>;

#[test]
fn an_allowed_method_override_is_decided_as_the_method_it_names() {
    let pki = Pki::with_clients(&[("etl", SALES_ETL)]);
    let up = Upstream::start();
    let audit = pki.path("audit.log");
    let sidecar = Meshgate::builder(&pki, &up).policies().audit_file(&audit);
    allow_override(&pki);
    let mut mg = sidecar.start();
    let mut expected_methods = Vec::new();
    for proto in ["--http1.1", "--http2"] {
        expected_methods.extend(overrides_decided(&pki, &up, &mg, proto));
        expected_methods.extend(overrides_refused(&pki, &up, &mg, proto));
        expected_methods.extend(a_get_is_not_overridden(&pki, &up, &mg, proto));
    }
    // SIGTERM flushes every event: the audit records the method decided.
    assert!(mg.terminate().success(), "{}", mg.logs.dump());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let got: Vec<(String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or_default().to_string(),
                e["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = expected_methods
        .iter()
        .map(|(m, s)| (m.to_string(), *s))
        .collect();
    assert_eq!(got, want);
    let denied = &events[0];
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["action"], "write");
}

/// An override the product allows is decided as the method it names, and
/// forwarded as the POST it is with exactly that override.
fn overrides_decided(pki: &Pki, up: &Upstream, mg: &Meshgate, proto: &str) -> Decided {
    let mut expected = Vec::new();
    let before = up.count();
    // Finance may query but not write: a POST overridden to DELETE is
    // decided as DELETE (a write) and refused; the upstream never sees it.
    let got = post(
        pki,
        mg,
        "reporting",
        proto,
        &["-H", "X-HTTP-Method-Override: delete"],
        "/orders/SO-1",
    );
    assert_eq!(got, "403", "{proto}");
    assert_eq!(
        up.count(),
        before,
        "{proto}: a refused request reached the upstream"
    );
    expected.push(("DELETE", 403));

    // The same POST without the override is the query it is.
    let got = post(pki, mg, "reporting", proto, &[], "/orders/SO-1");
    assert_eq!(got, "200", "{proto}");
    expected.push(("POST", 200));

    // Sales may write: the upstream gets the POST with exactly the
    // method decided, and no other override; with a body of a type that is
    // no form, likewise.
    let json = [
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{}",
    ];
    for extra in [&["-H", "X-Method-Override: PUT"][..], &json[..]] {
        let mut args = vec!["-H", "X-HTTP-Method-Override: delete"];
        args.extend_from_slice(extra);
        let got = post(pki, mg, "etl", proto, &args, "/orders/SO-1");
        assert_eq!(got, "200", "{proto} {args:?}");
        expected.push(("DELETE", 200));
        let seen = up.seen();
        let last = seen.last().expect("a request");
        assert_eq!(last.method, "POST", "{proto}");
        assert_eq!(last.target, "/orders/SO-1", "{proto}");
        assert_eq!(last.header("x-http-method-override"), ["DELETE"], "{proto}");
        assert!(last.header("x-method-override").is_empty(), "{proto}");
    }

    // Overridden to a method the product has no route for: 405.
    let got = post(
        pki,
        mg,
        "etl",
        proto,
        &["-H", "X-HTTP-Method-Override: PATCH"],
        "/orders/SO-1",
    );
    assert_eq!(got, "405", "{proto}");
    expected.push(("PATCH", 405));

    expected
}

/// Overrides that are refused (400) before anything is forwarded.
fn overrides_refused(pki: &Pki, up: &Upstream, mg: &Meshgate, proto: &str) -> Decided {
    let mut expected = Vec::new();
    // Two overrides, or one that is not a method: 400.
    let two = [
        "-H",
        "X-HTTP-Method-Override: GET",
        "-H",
        "X-HTTP-Method-Override: DELETE",
    ];
    assert_eq!(
        post(pki, mg, "etl", proto, &two, "/orders/SO-1"),
        "400",
        "{proto}"
    );
    expected.push(("POST", 400));
    let bad = ["-H", "X-HTTP-Method-Override: DE(LETE"];
    assert_eq!(
        post(pki, mg, "etl", proto, &bad, "/orders/SO-1"),
        "400",
        "{proto}"
    );
    expected.push(("POST", 400));
    // Never lowered to a safe method (the upstream could run it as a
    // write, or answer with a body no response stage saw), and never on
    // a form body (whose `_method` field frameworks read first): 400,
    // nothing forwarded.
    let before = up.count();
    for safe in ["GET", "HEAD", "OPTIONS"] {
        let lowered = ["-H", &format!("X-HTTP-Method-Override: {safe}")];
        let lowered: Vec<&str> = lowered.iter().map(|s| s.as_ref()).collect();
        assert_eq!(
            post(pki, mg, "etl", proto, &lowered, "/orders/SO-1"),
            "400",
            "{proto} {safe}"
        );
        expected.push(("POST", 400));
    }
    let form = [
        "-H",
        "X-HTTP-Method-Override: DELETE",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
    ];
    assert_eq!(
        post(pki, mg, "etl", proto, &form, "/orders/SO-1"),
        "400",
        "{proto}"
    );
    expected.push(("POST", 400));
    // A body without a type, which Rack reads as a form; and (HTTP/1.1,
    // where `Connection` exists) a type that hop-by-hop removal would
    // take away before the upstream.
    let mut untyped = vec![vec![
        "-H",
        "X-HTTP-Method-Override: DELETE",
        "-H",
        "Content-Type:",
        "--data-binary",
        "_method=PUT",
    ]];
    if proto == "--http1.1" {
        untyped.push(vec![
            "-H",
            "X-HTTP-Method-Override: DELETE",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Connection: content-type",
            "--data-binary",
            "_method=PUT",
        ]);
    }
    for args in untyped {
        assert_eq!(
            post(pki, mg, "etl", proto, &args, "/orders/SO-1"),
            "400",
            "{proto} {args:?}"
        );
        expected.push(("POST", 400));
    }
    assert_eq!(up.count(), before, "{proto}: nothing refused was forwarded");

    expected
}

/// Only a POST is overridden: a GET's override header is removed and the
/// GET is decided (and forwarded) as a GET.
fn a_get_is_not_overridden(pki: &Pki, up: &Upstream, mg: &Meshgate, proto: &str) -> Decided {
    let mut expected = Vec::new();
    let before = up.count();
    let mut args = vec![proto.to_string(), "-o".into(), "/dev/null".into()];
    args.extend(["-w".into(), "%{http_code}".into()]);
    args.extend(["-H".into(), "X-HTTP-Method-Override: DELETE".into()]);
    assert_eq!(run(pki, "reporting", &args, &mg.url("/orders/SO-1")), "200");
    expected.push(("GET", 200));
    let seen = up.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen[before].method, "GET", "{proto}");
    assert!(
        seen[before].header("x-http-method-override").is_empty(),
        "{proto}"
    );
    expected
}

#[test]
fn without_the_contract_property_an_override_is_only_removed() {
    let pki = Pki::with_clients(&[("etl", SALES_ETL)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    for proto in ["--http1.1", "--http2"] {
        // Finance may not write: POST /orders (a write) is refused, and an
        // override to GET does not change that.
        let args: Vec<String> = [proto, "-o", "/dev/null", "-w", "%{http_code}", "-d", "{}"]
            .iter()
            .map(|s| s.to_string())
            .chain(["-H".into(), "X-HTTP-Method-Override: GET".into()])
            .collect();
        assert_eq!(
            run(&pki, "reporting", &args, &mg.url("/orders")),
            "403",
            "{proto}"
        );
        // Sales may: it is forwarded as the POST it is, without the header.
        let before = up.count();
        assert_eq!(
            run(&pki, "etl", &args, &mg.url("/orders")),
            "200",
            "{proto}"
        );
        let seen = up.seen();
        assert_eq!(seen.len(), before + 1);
        assert_eq!(seen[before].method, "POST");
        assert!(
            seen[before].header("x-http-method-override").is_empty(),
            "{proto}"
        );
    }
}

#[test]
fn bad_configuration_and_contracts_are_refused_with_their_place() {
    let pki = Pki::new();
    let up = Upstream::start();
    let refusals = Meshgate::builder(&pki, &up)
        .extra("headers:\n  strip_overrides_extra: [X-Ok, \"X Bad\"]\n")
        .refusals("bad-headers.yaml");
    for (cmd, err) in refusals {
        assert!(
            err.contains("headers.strip_overrides_extra"),
            "{cmd}: {err}"
        );
        assert!(err.contains("`X Bad` is not a header name"), "{cmd}: {err}");
    }

    let sidecar = Meshgate::builder(&pki, &up).policies();
    let file = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&file).expect("orders contract");
    let text = text.replace(
        "customProperties:\n",
        "customProperties:\n  - property: meshgateAllowOverride\n    value: { methodHeader: X-Meshgate-Principal }\n",
    );
    std::fs::write(&file, text).expect("write contract");
    for (cmd, err) in sidecar.refusals("bad-contract.yaml") {
        assert!(err.contains("orders.odcs.yaml:"), "{cmd}: {err}");
        assert!(
            err.contains("customProperties.meshgateAllowOverride.methodHeader"),
            "{cmd}: {err}"
        );
        assert!(
            err.contains("is not a method-override header"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn a_products_own_override_header_is_removed_wherever_it_is_not_honoured() {
    let pki = Pki::with_clients(&[("etl", SALES_ETL)]);
    let up = Upstream::start();
    let sidecar = Meshgate::builder(&pki, &up).policies();
    allow_override(&pki);
    // Another of the method-override names frameworks read.
    let file = pki.path("policies/domains/sales/orders.odcs.yaml");
    let text = std::fs::read_to_string(&file).expect("orders contract");
    std::fs::write(
        &file,
        text.replace(
            "methodHeader: X-HTTP-Method-Override",
            "methodHeader: X-Method",
        ),
    )
    .expect("write contract");
    let mg = sidecar.start();
    for proto in ["--http1.1", "--http2"] {
        let args = |method: &str, verb: &str| -> Vec<String> {
            [proto, "-o", "/dev/null", "-w", "%{http_code}", "-X", method]
                .iter()
                .map(|s| s.to_string())
                .chain(["-H".into(), format!("X-Method: {verb}")])
                .chain(["-H".into(), format!("x_method: {verb}")])
                .collect()
        };
        // A GET is decided as a GET: neither spelling reaches the upstream,
        // here or on another product of the sidecar.
        for path in ["/orders/SO-1", "/v1/orders/SO-1"] {
            let before = up.count();
            assert_eq!(
                run(&pki, "reporting", &args("GET", "DELETE"), &mg.url(path)),
                "200",
                "{proto} {path}"
            );
            let seen = up.seen();
            assert_eq!(seen.len(), before + 1, "{proto} {path}");
            assert!(seen[before].header("x-method").is_empty(), "{proto} {path}");
            assert!(seen[before].header("x_method").is_empty(), "{proto} {path}");
        }
        // A POST carrying it is decided as the method it names, which the
        // upstream receives in it (and only in it).
        assert_eq!(
            run(
                &pki,
                "etl",
                &args("POST", "delete"),
                &mg.url("/orders/SO-1")
            ),
            "200",
            "{proto}"
        );
        let seen = up.seen();
        let last = seen.last().expect("a request");
        assert_eq!(last.method, "POST");
        assert_eq!(last.header("x-method"), ["DELETE"], "{proto}");
        assert!(last.header("x_method").is_empty(), "{proto}");
        assert_eq!(
            run(
                &pki,
                "reporting",
                &args("POST", "delete"),
                &mg.url("/orders/SO-1")
            ),
            "403",
            "{proto}"
        );
    }
}
