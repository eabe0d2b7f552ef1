//! The two text formats of `/metrics`: OpenMetrics, which prometheus-client
//! writes and Prometheus asks for, and the Prometheus text format 0.0.4, for
//! every other reader (curl, `promtool check metrics`, older scrapers), chosen
//! by the request's `Accept` like the Go client does.
//!
//! The formats differ in what matters here: an OpenMetrics counter family is
//! named without `_total` in `# HELP`/`# TYPE` (its samples keep it), and
//! OpenMetrics adds `# UNIT`, `# EOF`, `_created` samples and exemplars,
//! which the older format does not have.

use std::collections::HashMap;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// The body and content type of `/metrics` for a request's `Accept`, from
/// the OpenMetrics exposition of a registry.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (String, &'static str) {
    if wants_openmetrics(accept) {
        (openmetrics, OPENMETRICS)
    } else {
        (to_prometheus_text(&openmetrics), PROMETHEUS_TEXT)
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    // Families whose samples carry a suffix their OpenMetrics name lacks.
    let renamed: HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| {
            let (name, kind) = l.strip_prefix("# TYPE ")?.split_once(' ')?;
            match kind {
                "counter" => Some((name, "_total")),
                "info" => Some((name, "_info")),
                _ => None,
            }
        })
        .collect();
    let suffix = |name: &str| renamed.get(name).copied().unwrap_or("");
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the older format does not.
            let help = help.replace("\\\"", "\"");
            out.push_str(&format!("# HELP {name}{} {help}\n", suffix(name)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                "info" => "gauge",
                _ => "untyped",
            };
            out.push_str(&format!("# TYPE {name}{} {kind}\n", suffix(name)));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let (series, rest) = split_series(line);
        let name = series.split('{').next().unwrap_or(series);
        if name
            .strip_suffix("_created")
            .is_some_and(|family| renamed.get(family) == Some(&"_total"))
        {
            continue;
        }
        // Drop an exemplar (` # {labels} value [timestamp]`).
        let rest = rest.split(" # ").next().unwrap_or(rest);
        out.push_str(series);
        out.push_str(rest);
        out.push('\n');
    }
    out
}

/// A sample line as (name and labels, the rest), the label values' quotes
/// and escapes respected.
fn split_series(line: &str) -> (&str, &str) {
    let Some(open) = line.find(['{', ' ']) else {
        return (line, "");
    };
    if line.as_bytes()[open] == b' ' {
        return line.split_at(open);
    }
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '}' if !in_string => return line.split_at(i + 1),
            _ => {}
        }
    }
    (line, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn counters_get_their_total_names_and_openmetrics_only_lines_go() {
        let om = "\
# HELP meshgate_requests Requests \\\"answered\\\".
# TYPE meshgate_requests counter
meshgate_requests_total{class=\"2xx\",path=\"a} # {b\"} 3 # {trace_id=\"abc\"} 1.0 1700000000.000
meshgate_requests_created{class=\"2xx\"} 1700000000.0
# HELP meshgate_request_duration_seconds Time.
# TYPE meshgate_request_duration_seconds histogram
# UNIT meshgate_request_duration_seconds seconds
meshgate_request_duration_seconds_sum 0.5
meshgate_request_duration_seconds_count 2
meshgate_request_duration_seconds_bucket{le=\"0.25\"} 1
meshgate_request_duration_seconds_bucket{le=\"+Inf\"} 2
# HELP meshgate_open_connections Open.
# TYPE meshgate_open_connections gauge
meshgate_open_connections 4
# TYPE meshgate_build info
meshgate_build_info{version=\"1\"} 1
# EOF
";
        let expected = "\
# HELP meshgate_requests_total Requests \"answered\".
# TYPE meshgate_requests_total counter
meshgate_requests_total{class=\"2xx\",path=\"a} # {b\"} 3
# HELP meshgate_request_duration_seconds Time.
# TYPE meshgate_request_duration_seconds histogram
meshgate_request_duration_seconds_sum 0.5
meshgate_request_duration_seconds_count 2
meshgate_request_duration_seconds_bucket{le=\"0.25\"} 1
meshgate_request_duration_seconds_bucket{le=\"+Inf\"} 2
# HELP meshgate_open_connections Open.
# TYPE meshgate_open_connections gauge
meshgate_open_connections 4
# TYPE meshgate_build_info gauge
meshgate_build_info{version=\"1\"} 1
";
        assert_eq!(to_prometheus_text(om), expected);
    }

    #[test]
    fn the_sidecars_own_metrics_convert() {
        let text = to_prometheus_text(&crate::observe::metrics::Metrics::new().encode());
        assert!(
            text.contains("# TYPE meshgate_policy_reloads_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP meshgate_policy_reloads_total "),
            "{text}"
        );
        assert!(text.contains("\nmeshgate_policy_reloads_total{result=\"ok\"} 0\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }
}
