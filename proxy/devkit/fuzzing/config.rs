//! Configuration and contracts.

use super::*;

/// Checks an error from YAML loading: a syntax or type error carries a
/// position inside the text (1-based) and names a field.
fn check_config_error(text: &str, e: &crate::base::yaml::ConfigError) {
    use crate::base::yaml::ConfigError;
    let shown = e.to_string();
    assert!(!shown.is_empty());
    match e {
        ConfigError::Syntax {
            line,
            column,
            field,
            ..
        } => {
            // libyaml breaks lines at `\n`, `\r\n` and a lone `\r`, and (as
            // YAML 1.1 does) at NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR.
            let lines = text
                .replace("\r\n", "\n")
                .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
                .count();
            assert!(
                *line >= 1 && *line <= lines + 1,
                "line {line} of a {lines}-line text: {shown}"
            );
            assert!(*column >= 1, "{shown}");
            assert!(!field.is_empty(), "{shown}");
        }
        ConfigError::Invalid { field, .. } => assert!(!field.is_empty(), "{shown}"),
        ConfigError::Read { .. } => panic!("text was read from a file: {shown}"),
    }
}

/// Checks the errors of a contract: at least one, each in the text
/// (1-based, at most one line past its end) and naming a field.
fn check_contract_errors(text: &str, e: &crate::decision::contract::ContractErrors) {
    assert!(!e.0.is_empty(), "an error with no finding");
    let lines = text
        .replace("\r\n", "\n")
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .count();
    let last = e.0.len() - 1;
    for (i, f) in e.0.iter().enumerate() {
        let shown = f.to_string();
        // Past `REPORTED` findings, the last one only counts the rest.
        let summary = i == last
            && i == crate::decision::contract::REPORTED
            && f.at.is_none()
            && f.message.ends_with("not shown");
        assert!(!f.field.is_empty() || summary, "{shown}");
        if let Some((line, column)) = f.at {
            assert!(
                line >= 1 && line <= lines + 1,
                "line {line} of {lines}: {shown}"
            );
            assert!(column >= 1, "{shown}");
        }
    }
}

/// YAML bytes as the sidecar's configuration: a `Config` or a typed error
/// with a position, never a panic. Relative paths resolve under a
/// directory that does not exist.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent/meshgate-fuzz");
    match crate::runtime::config::Config::from_text(text, "fuzz.yaml", base) {
        Ok(c) => {
            assert!(c.limits.max_header_bytes >= 8192);
            assert!(c.timeouts.latency_factor.is_finite() && c.timeouts.latency_factor >= 0.0);
            assert!(c.workers != Some(0));
        }
        Err(e) => check_config_error(text, &e),
    }
}

/// YAML bytes as an ODCS contract: a product or a typed error, never a
/// panic. A product's classifications are known ones, its id is usable, its
/// SLA numbers are finite, and its routes load into a route table, each
/// reachable by a path that fills its parameters in.
pub fn contract(data: &[u8]) {
    use crate::decision::contract::CLASSIFICATIONS;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let p = match crate::decision::contract::parse(text, "fuzz.odcs.yaml") {
        Ok(p) => p,
        Err(e) => return check_contract_errors(text, &e),
    };
    assert!(CLASSIFICATIONS.contains(&p.classification.as_str()));
    for (name, c) in &p.datasets {
        assert!(CLASSIFICATIONS.contains(&c.as_str()), "{name}: {c}");
    }
    let name = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    };
    assert!(!p.id.is_empty() && name(&p.id), "id {:?}", p.id);
    assert!(
        !p.domain.is_empty() && name(&p.domain),
        "domain {:?}",
        p.domain
    );
    assert!(
        p.version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b)),
        "version {:?}",
        p.version
    );
    if let Some(a) = p.sla.availability {
        assert!((0.0..=100.0).contains(&a));
    }
    if let Some(t) = p.sla.throughput {
        assert!(t > 0.0 && t.is_finite(), "throughput {t}");
    }
    if let Some(l) = p.sla.latency {
        assert!(!l.is_zero(), "latency {l:?}");
    }
    if let Some(r) = p.sla.error_rate {
        assert!(r.is_finite(), "errorRate {r}");
    }
    let mut table = RouteTable::new();
    let mut accepted: Vec<(Method, String)> = Vec::new();
    for (i, r) in p.routes.iter().enumerate() {
        crate::decision::routes::check_pattern(&r.path).expect("a loaded route's pattern is valid");
        if let Some(d) = &r.dataset {
            assert!(p.datasets.iter().any(|(n, _)| n == d), "dataset {d}");
        }
        let target = Target {
            product: i,
            action: r.action,
            dataset: None,
            pattern: r.path.clone(),
            user_token: r.user_token.unwrap_or(p.user_token),
        };
        if table.insert(r.method.clone(), &r.path, target).is_ok() {
            accepted.push((r.method.clone(), r.path.clone()));
        }
    }
    for (m, pattern) in &accepted {
        let concrete: String = pattern
            .split('/')
            .map(|s| if s.starts_with('{') { "p-1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let n = normalize(&concrete).expect("a filled-in pattern normalises");
        let got = match table.lookup(m, &n) {
            Lookup::Found(t) => Some(Some(t.pattern.clone())),
            Lookup::MethodNotAllowed => Some(None),
            Lookup::NotFound => None,
        };
        let want = reference_lookup(&accepted, m, &n);
        assert!(want.is_some(), "{pattern} does not match {concrete}");
        assert_eq!(got, want, "{m} {concrete}");
    }
    // Whatever passes, `slo-rules` makes one clean rule file of.
    super::slo_rules::check_rules(std::slice::from_ref(&p));
}
