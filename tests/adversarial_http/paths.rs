//! Path encodings: every target maps to exactly the resource authorised, or is refused.

use crate::common::*;
use crate::raw::*;

#[tokio::test]
async fn path_encodings_map_to_exactly_the_resource_authorised_or_are_refused() {
    let pki = Pki::with_clients(&[("campaigns", CAMPAIGNS)]);
    let up = Upstream::start();
    let mg = Meshgate::builder(&pki, &up).policies().start();
    let cases: Vec<(&str, Vec<u8>, Want)> =
        [path_cases_1(), path_cases_2(), path_cases_3()].concat();
    run_cases(&pki, &up, &mg, &cases).await;
    // Exactly the forwarded cases reached the upstream.
    let forwarded = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, Want::Forwarded(_)))
        .count();
    assert_eq!(up.count(), forwarded);
}

/// Request targets and what each must get, in parts.
fn path_cases_1() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    let g = |t: &str| get(t);
    vec![
        ("the public path", g(PUBLIC), Forwarded(PUBLIC)),
        (
            "the protected path",
            g("/orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        // Encoded separators: never decoded into a separator.
        (
            "%2F",
            g("/orders/_schema%2F..%2FSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%2f",
            g("/orders/_schema%2f..%2fSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%2F in place of the separator",
            g("/orders%2FSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%5C",
            g("/orders/_schema%5C..%5CSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%5c",
            g("/orders/_schema%5c..%5cSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "raw backslashes",
            g("/orders/_schema\\..\\SO-1"),
            Refused(400, "bad_path"),
        ),
        ("%00", g("/orders/_schema%00"), Refused(400, "bad_path")),
        // A C1 control character (NEL) is a control character too.
        ("%C2%85", g("/orders/SO-1%C2%85"), Refused(400, "bad_path")),
        // Encoded dots are dots: resolved, then authorised as what they name.
        (
            "%2e%2e",
            g("/orders/_schema/%2e%2e/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2E%2E/",
            g("/orders/_schema/%2E%2E/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            ".%2e",
            g("/orders/_schema/.%2e/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2e.",
            g("/orders/_schema/%2e./SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "%2e%2e back to the public path",
            g("/orders/SO-1/%2e%2e/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "%2e%2e above the root",
            g("/orders/_schema/%2e%2e/%2e%2e/%2e%2e/x"),
            Refused(400, "bad_path"),
        ),
        // Overlong UTF-8 for `/` and `.`: not UTF-8, refused.
        (
            "%c0%af",
            g("/orders/_schema%c0%af..%c0%afSO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%e0%80%af",
            g("/orders/_schema/%e0%80%af../SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%c0%ae%c0%ae",
            g("/orders/_schema/%c0%ae%c0%ae/SO-1"),
            Refused(400, "bad_path"),
        ),
        // Double encoding is decoded once: a literal `%2F` / `%5F` in a segment.
        (
            "%252F",
            g("/orders/_schema%252F..%252FSO-1"),
            Refused(403, "forbidden"),
        ),
        ("%255F", g("/orders/%255Fschema"), Refused(403, "forbidden")),
    ]
}

fn path_cases_2() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    let g = |t: &str| get(t);
    vec![
        // Empty and dot segments.
        ("//", g("//orders//_schema"), Forwarded(PUBLIC)),
        (
            "// to the protected path",
            g("//orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        ("/./", g("/./orders/./_schema"), Forwarded(PUBLIC)),
        (
            "/./../",
            g("/orders/_schema/./../SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "/public/../protected",
            g("/orders/_schema/../SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "/other/../public",
            g("/customers/../orders/_schema"),
            Forwarded(PUBLIC),
        ),
        // Matrix parameters.
        (
            ";jsessionid=",
            g("/orders/_schema;jsessionid=1"),
            Refused(400, "bad_path"),
        ),
        (
            "; in a segment",
            g("/orders;x=1/SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "; before ..",
            g("/orders/_schema;/../SO-1"),
            Refused(400, "bad_path"),
        ),
        (
            "%3B",
            g("/orders/SO-1%3B/../_schema"),
            Refused(400, "bad_path"),
        ),
        // `?` and `#`: the query is not the path; encoded ones are text.
        (
            "?/../ in the query",
            g("/orders/_schema?/../SO-1"),
            Forwarded("/orders/_schema?/../SO-1"),
        ),
        ("%3F", g("/orders/SO-1%3F/../_schema"), Forwarded(PUBLIC)),
        ("%23", g("/orders/SO-1%23/../_schema"), Forwarded(PUBLIC)),
        (
            "%3F at the end",
            g("/orders/_schema%3F"),
            Refused(403, "forbidden"),
        ),
        (
            "%23 at the end",
            g("/orders/_schema%23"),
            Refused(403, "forbidden"),
        ),
        (
            "raw # before ..",
            g("/orders/SO-1#/../_schema"),
            Refused(403, "forbidden"),
        ),
        (
            "raw # after the public path",
            g("/orders/_schema#/../SO-1"),
            Forwarded(PUBLIC),
        ),
    ]
}

fn path_cases_3() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::*;
    let g = |t: &str| get(t);
    vec![
        // Other request-target forms.
        (
            "absolute-form, protected",
            g("https://localhost/orders/SO-1"),
            Refused(403, "forbidden"),
        ),
        (
            "absolute-form, public",
            g("https://localhost/orders/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "absolute-form, another authority",
            g("http://evil.example/orders/_schema"),
            Forwarded(PUBLIC),
        ),
        (
            "authority-form CONNECT",
            b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n"
                .to_vec(),
            Refused(400, "bad_request"),
        ),
        (
            "CONNECT with a path",
            b"CONNECT /orders/_schema HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                .to_vec(),
            Refused(400, "bad_request"),
        ),
        (
            "OPTIONS *",
            b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
            Refused(400, "bad_request"),
        ),
        ("GET *", g("*"), Refused(400, "bad_request")),
        ("an empty target", g(""), Malformed(400)),
        ("a query only", g("?x"), Malformed(400)),
        ("a relative path", g("orders/_schema"), Malformed(400)),
        (
            "a raw byte that is not ASCII",
            {
                let mut raw = g("/orders/_sch@ema");
                let at = find(&raw, b"@").expect("marker");
                raw[at] = 0xff;
                raw
            },
            Malformed(400),
        ),
        // Case and trailing slashes are significant.
        ("upper case", g("/ORDERS/_schema"), Refused(404, "no_route")),
        (
            "a trailing slash",
            g("/orders/_schema/"),
            Refused(404, "no_route"),
        ),
    ]
}
