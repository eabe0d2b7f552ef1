//! Path normalisation + route matching.

use super::*;

/// Routes used when an input names none: shaped like the example contracts,
/// with literals beside parameters at several depths.
const DEFAULT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/orders"),
    ("POST", "/orders"),
    ("GET", "/orders/{id}"),
    ("GET", "/orders/_schema"),
    ("GET", "/orders/{id}/items/{item}"),
    ("PUT", "/orders/{id}/items/{item}"),
    ("GET", "/orders/{id}/items/_count"),
    ("GET", "/customers/{id}"),
    ("GET", "/admin/public"),
    ("DELETE", "/admin/{x}/secret"),
    ("GET", "/ledger/summary"),
    ("GET", "/caf\u{e9}/{x}"),
];

/// `METHOD PATH` on the first line (the request), then optionally one route
/// per line as `METHOD PATTERN` (none: [`DEFAULT_ROUTES`]).
///
/// Checks, for every path that normalises: no segment is empty, `.` or `..`
/// or holds `/`, `\`, NUL, a control character (C0, DEL, C1) or `;`; the encoded form has
/// no `//`, no encoded `/`, `\` or NUL, only pchars and `%XX`, decodes (once,
/// as the upstream does) to exactly the decoded form, and normalises to the
/// same path (idempotent); a raw path with an encoded separator, a backslash
/// or `;` never normalises; and the route table answers what a plain scan of
/// the route list says (literal beats parameter, position by position).
pub fn path_routes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let (method, raw) = match first.split_once(' ') {
        Some((m, p)) => (Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET), p),
        None => (Method::GET, first),
    };
    let mut specs: Vec<(Method, String)> = lines
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            Some((Method::from_bytes(m.as_bytes()).ok()?, p.to_string()))
        })
        .collect();
    if specs.is_empty() {
        specs = DEFAULT_ROUTES
            .iter()
            .map(|(m, p)| {
                (
                    Method::from_bytes(m.as_bytes()).expect("method"),
                    p.to_string(),
                )
            })
            .collect();
    }
    let mut table = RouteTable::new();
    let mut accepted: Vec<(Method, String)> = Vec::new();
    for (i, (m, p)) in specs.into_iter().enumerate() {
        let target = Target {
            product: i,
            action: crate::decision::contract::Action::Read,
            dataset: None,
            pattern: p.clone(),
            user_token: Default::default(),
        };
        if table.insert(m.clone(), &p, target).is_ok() {
            accepted.push((m, p));
        }
    }
    assert_eq!(table.len(), accepted.len());

    let Ok(n) = normalize(raw) else {
        return;
    };
    check_normal_path(raw, &n);

    let got = match table.lookup(&method, &n) {
        Lookup::Found(t) => Some(Some(t.pattern.as_str())),
        Lookup::MethodNotAllowed => Some(None),
        Lookup::NotFound => None,
    };
    let want = reference_lookup(&accepted, &method, &n);
    assert_eq!(
        got,
        want.as_ref().map(|o| o.as_deref()),
        "{method} {raw}: the route table and the route list disagree"
    );
    // What is forwarded routes as what was authorised.
    let again = normalize(&n.encoded()).expect("the encoded form normalises");
    let got_again = match table.lookup(&method, &again) {
        Lookup::Found(t) => Some(Some(t.pattern.as_str())),
        Lookup::MethodNotAllowed => Some(None),
        Lookup::NotFound => None,
    };
    assert_eq!(got, got_again, "{raw}: re-normalised path routes elsewhere");
}

pub(super) fn check_normal_path(raw: &str, n: &NormalPath) {
    let lower = raw.to_ascii_lowercase();
    for bad in ["%2f", "%5c", "%00", "\\", ";", "%3b"] {
        assert!(!lower.contains(bad), "{raw:?} normalised despite {bad}");
    }
    for seg in &n.segments {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{raw:?}: {seg:?}"
        );
        assert!(
            !seg.contains(['/', '\\', ';']) && !seg.chars().any(char::is_control),
            "{raw:?}: segment {seg:?}"
        );
    }
    let decoded = n.decoded();
    let encoded = n.encoded();
    for form in [&decoded, &encoded] {
        assert!(form.starts_with('/'), "{raw:?} -> {form:?}");
        assert!(!form.contains("//"), "{raw:?} -> {form:?}");
        assert!(!form.contains(['\\', '\0']), "{raw:?} -> {form:?}");
        let segs: Vec<&str> = form[1..].split('/').collect();
        assert!(
            !segs.iter().any(|s| *s == "." || *s == ".."),
            "{raw:?} -> {form:?}"
        );
    }
    let upper = encoded.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(bad), "{raw:?} -> {encoded:?}");
    }
    let b = encoded.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            assert!(
                i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(),
                "{raw:?} -> {encoded:?}: bad escape"
            );
            i += 3;
        } else {
            assert!(
                b[i].is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b[i]),
                "{raw:?} -> {encoded:?}: {:?} unescaped",
                b[i] as char
            );
            i += 1;
        }
    }
    assert_eq!(
        percent_decode(&encoded).as_deref(),
        Some(decoded.as_str()),
        "{raw:?}: the upstream would decode something else"
    );
    assert_eq!(
        normalize(&encoded).as_ref(),
        Ok(n),
        "{raw:?}: normalising is not idempotent"
    );
}

/// Decodes `%XX` once, as an upstream server does.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route the documented rules pick, by scanning the list: among the
/// patterns whose segments match (a literal equal, a parameter anything),
/// the one with a literal at the first position where they differ; then the
/// method (HEAD as GET) on that pattern. `None`: not found; `Some(None)`:
/// the path exists, not for this method.
pub(super) fn reference_lookup(
    routes: &[(Method, String)],
    method: &Method,
    path: &NormalPath,
) -> Option<Option<String>> {
    if path.trailing_slash && !path.segments.is_empty() {
        return None;
    }
    // A pattern's shape: its literals, `None` for a parameter.
    let shape = |p: &str| -> Vec<Option<String>> {
        let rest = &p[1..];
        if rest.is_empty() {
            return Vec::new();
        }
        rest.split('/')
            .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
            .collect()
    };
    let matches = |sh: &[Option<String>]| {
        sh.len() == path.segments.len()
            && sh
                .iter()
                .zip(&path.segments)
                .all(|(l, s)| l.as_ref().is_none_or(|l| l == s))
    };
    let best = routes
        .iter()
        .map(|(_, p)| shape(p))
        .filter(|sh| matches(sh))
        .min_by_key(|sh| sh.iter().map(Option::is_none).collect::<Vec<bool>>())?;
    let want = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    Some(
        routes
            .iter()
            .find(|(m, p)| m == want && shape(p) == best)
            .map(|(_, p)| p.clone()),
    )
}
