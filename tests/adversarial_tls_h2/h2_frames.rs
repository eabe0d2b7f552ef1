//! CONTINUATION floods, HPACK abuse and header tricks: an exact status or a
//! stream reset each.

use crate::common::*;
use crate::h2_outcome::*;
use crate::setup::*;

/// CVE-2024-27316 (CONTINUATION flood) and HPACK abuse.
#[test]
fn h2_continuation_floods_and_hpack_abuse_are_refused() {
    let _heavy = heavy();
    if !require_python_h2() {
        return;
    }
    let env = env(|_| {}, &[]);
    assert_eq!(env.arrivals(), Vec::<String>::new());
    let rss_before = rss_kib(env.mg.pid());
    let calm = |debug| goaway("ENHANCE_YOUR_CALM", debug);
    for (case, args, expected) in [
        // A header block that never ends: empty CONTINUATION frames, small
        // ones, and full ones (16 KB each).
        (
            "continuation",
            vec!["--n", "100000", "--fill", "0"],
            calm("too_many_continuations"),
        ),
        (
            "continuation",
            vec!["--n", "100000", "--fill", "16"],
            calm("too_many_continuations"),
        ),
        (
            "continuation",
            vec!["--n", "1000", "--fill", "16000"],
            calm("too_many_continuations"),
        ),
        // One 20 KB header, over SETTINGS_MAX_HEADER_LIST_SIZE (16 KB).
        ("oversize", vec!["--fill", "20000"], Outcome::Status(431)),
        // A 4 KB header indexed once, then referenced by its one-byte index:
        // 3 times (12 KB decoded) is a normal request for the protected
        // path, 5 times (20 KB) too large, 4000 times (16 MB) abuse.
        (
            "hpack-bomb",
            vec!["--n", "3", "--fill", "4000"],
            Outcome::Status(403),
        ),
        (
            "hpack-bomb",
            vec!["--n", "5", "--fill", "4000"],
            Outcome::Status(431),
        ),
        (
            "hpack-bomb",
            vec!["--n", "4000", "--fill", "4000"],
            calm("header_list_way_too_large"),
        ),
        // A dynamic table size update to 1 MB, over the 4 KB allowed.
        (
            "table-size",
            vec!["--fill", "1000000"],
            goaway("PROTOCOL_ERROR", ""),
        ),
    ] {
        let r = probe(&env, case, &args);
        if let Outcome::GoAway(..) = expected {
            assert_eq!(r["goaway"]["last_stream_id"], 0, "{case} {args:?}: {r}");
        }
        assert_eq!(outcome_of(&r), expected, "{case} {args:?}: {r}");
        env.assert_still_serving();
        // Exactly what reached the upstream: nothing of the attack stream,
        // the normal request on stream 3 when the connection went on, and
        // the well-behaved client's public request.
        let on_stream3 = !matches!(expected, Outcome::GoAway(..));
        let want: Vec<&str> = [PUBLIC].repeat(usize::from(on_stream3) + 1);
        assert_eq!(env.arrivals(), want, "{case} {args:?}: {r}");
    }
    let rss_after = rss_kib(env.mg.pid());
    eprintln!("rss {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    // Every arrival was accounted for case by case; the audit trail never
    // allowed the protected path.
    assert_eq!(env.assert_protected_never_arrived(), 0);
}

/// Header blocks RFC 9113 calls malformed, and paths that try to leave the
/// public route: each gets an exact status, or its stream (or, where h2
/// treats it as a connection error, the connection) is reset.
#[test]
fn h2_header_tricks_get_an_exact_status_or_a_stream_reset() {
    if !require_python_h2() {
        return;
    }
    let env = env(|_| {}, &[]);
    let cases = header_trick_cases();
    for (name, headers, body, expected) in cases {
        let h = serde_json::to_string(&headers).expect("json");
        let mut args = vec!["--headers", h.as_str()];
        if let Some(b) = body {
            args.push("--body");
            args.push(b);
        }
        let r = probe(&env, "request", &args);
        assert_eq!(outcome_of(&r), expected, "{name}: {r}");
        if let Outcome::GoAway(..) = expected {
            assert_eq!(r["goaway"]["last_stream_id"], 0, "{name}: {r}");
        }
    }
    env.assert_still_serving();
    env.assert_protected_never_arrived();
}

// --- TLS ------------------------------------------------------------------

/// One HTTP/2 request of `h2_header_tricks_get_an_exact_status_or_a_stream_reset`:
/// what it is, its header list in order, a body, what must happen.
type Case = (
    &'static str,
    Vec<(String, String)>,
    Option<&'static str>,
    Outcome,
);

/// The header tricks, each with what must happen.
fn header_trick_cases() -> Vec<Case> {
    let mut cases = paths_and_pseudo_headers();
    cases.extend(names_and_connection_headers());
    cases
}

/// A GET's pseudo-headers for `path`.
fn base(path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":scheme".into(), "https".into()),
        (":authority".into(), "localhost".into()),
        (":path".into(), path.into()),
    ]
}

/// `h` with `extra` appended.
fn with(mut h: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

/// Paths that try to leave the public route; pseudo-headers twice,
/// missing, unknown or misplaced.
fn paths_and_pseudo_headers() -> Vec<Case> {
    let public = || base(&format!("{PUBLIC}?slow=0"));
    let protected = || base(&format!("{PROTECTED}?slow=0"));
    use Outcome::*;
    let bad = || reset("PROTOCOL_ERROR");
    vec![
        // Paths: normalised to the protected row (denied) or refused.
        (
            "encoded dot-dot",
            base("/orders/_schema/%2e%2e/SO-1?slow=0"),
            None,
            Status(403),
        ),
        (
            "dot-dot and %2F",
            base("/orders/_schema/..%2FSO-1?slow=0"),
            None,
            Status(400),
        ),
        (
            "backslash",
            base("/orders/_schema/..%5CSO-1?slow=0"),
            None,
            Status(400),
        ),
        ("no leading slash", base("orders/SO-1?slow=0"), None, bad()),
        ("asterisk", base("*"), None, Status(400)),
        (
            "absolute form",
            base("https://localhost/orders/SO-1?slow=0"),
            None,
            bad(),
        ),
        (
            "NUL in path",
            base("/orders/_schema\u{0}/../SO-1?slow=0"),
            None,
            bad(),
        ),
        (
            "space in path",
            base("/orders/_schema /../SO-1?slow=0"),
            None,
            bad(),
        ),
        // Pseudo-headers twice, missing, unknown, or after a regular header.
        (
            "two :path",
            with(public(), &[(":path", "/orders/SO-1?slow=0")]),
            None,
            bad(),
        ),
        (
            "two :authority",
            with(protected(), &[(":authority", "evil")]),
            None,
            bad(),
        ),
        (
            "no :path",
            base("/")
                .into_iter()
                .filter(|(k, _)| k != ":path")
                .collect(),
            None,
            bad(),
        ),
        (
            "unknown pseudo-header",
            with(protected(), &[(":foo", "bar")]),
            None,
            goaway("PROTOCOL_ERROR", ""),
        ),
        (
            "pseudo-header after a regular one",
            {
                let mut h = public();
                h.insert(1, ("x-a".into(), "b".into()));
                h
            },
            None,
            bad(),
        ),
    ]
}

/// Uppercase names, connection-specific headers, a contradicted
/// content-length.
fn names_and_connection_headers() -> Vec<Case> {
    let public = || base(&format!("{PUBLIC}?slow=0"));
    let protected = || base(&format!("{PROTECTED}?slow=0"));
    let bad = || reset("PROTOCOL_ERROR");
    vec![
        // Uppercase names (here a spoofed identity header): a connection error in h2.
        (
            "uppercase name",
            with(protected(), &[("X-Meshgate-Principal", REPORTING)]),
            None,
            goaway("PROTOCOL_ERROR", ""),
        ),
        // Connection-specific headers (RFC 9113 8.2.2).
        (
            "connection",
            with(protected(), &[("connection", "close")]),
            None,
            bad(),
        ),
        (
            "transfer-encoding",
            with(protected(), &[("transfer-encoding", "chunked")]),
            None,
            bad(),
        ),
        (
            "keep-alive",
            with(protected(), &[("keep-alive", "timeout=5")]),
            None,
            bad(),
        ),
        (
            "te other than trailers",
            with(protected(), &[("te", "gzip")]),
            None,
            bad(),
        ),
        // Whitespace around a value (RFC 9113 8.2.1): an HTTP/1.1 upstream
        // would trim it, so it would not read what was decided.
        (
            "value with a leading space",
            with(protected(), &[("x-ws", " padded")]),
            None,
            Outcome::Status(400),
        ),
        (
            "value with a trailing tab",
            with(protected(), &[("x-ws", "padded\t")]),
            None,
            Outcome::Status(400),
        ),
        // content-length that the DATA frames contradict.
        (
            "content-length over the body",
            with(public(), &[("content-length", "100")]),
            Some("short"),
            bad(),
        ),
        (
            "content-length under the body",
            with(public(), &[("content-length", "2")]),
            Some("longer body"),
            bad(),
        ),
    ]
}
