//! Policy test results as JUnit XML, the report format GitLab
//! (`artifacts:reports:junit`), Jenkins (`junit` step) and GitHub Actions
//! test-report actions read: one `<testsuite>` per test file, one
//! `<testcase>` per case, a `<failure>` with the reason for each failed one.
//!
//! Written by hand: the format is a handful of elements, and every text
//! that comes from a test file (names, reasons, paths) is escaped here, with
//! characters XML 1.0 cannot carry at all replaced by U+FFFD.

use std::fmt::Write;
use std::time::Duration;

use super::policytest::{CaseResult, Report};

/// The name of the whole run (`<testsuites name>`).
const RUN: &str = "meshgate test";

/// The report as a JUnit XML document.
pub fn render(report: &Report) -> String {
    let mut suites: Vec<(&str, Vec<&CaseResult>)> = Vec::new();
    for c in &report.cases {
        match suites.iter_mut().find(|(file, _)| *file == c.file) {
            Some((_, cases)) => cases.push(c),
            None => suites.push((&c.file, vec![c])),
        }
    }
    let total: Duration = report.cases.iter().map(|c| c.time).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"{RUN}\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"{}\">",
        report.cases.len(),
        report.failed(),
        seconds(total)
    );
    for (file, cases) in suites {
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let time: Duration = cases.iter().map(|c| c.time).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{}\">",
            attr(file),
            cases.len(),
            seconds(time)
        );
        for c in cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" time=\"{}\"",
                attr(&c.name),
                attr(file),
                attr(file),
                seconds(c.time)
            );
            match &c.failure {
                None => x.push_str("/>\n"),
                Some(why) => {
                    let _ = write!(
                        x,
                        ">\n      <failure message=\"{}\" type=\"policy-test\">{}</failure>\n    </testcase>\n",
                        attr(why),
                        text(why)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// A run that could not start (the policy set did not load, a test file did
/// not parse): one suite with one errored case carrying every message, so
/// that the CI's test report shows why instead of an empty or missing file.
pub fn render_error(what: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{RUN}\" tests=\"1\" failures=\"0\" errors=\"1\">\n  <testsuite name=\"{RUN}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n    <testcase name=\"load the policies and tests\" classname=\"{RUN}\">\n      <error message=\"{}\" type=\"load\">{}</error>\n    </testcase>\n  </testsuite>\n</testsuites>\n",
        attr(what.lines().next().unwrap_or_default()),
        text(what)
    )
}

fn seconds(d: Duration) -> String {
    format!("{:.6}", d.as_secs_f64())
}

/// A character XML 1.0 can carry (escaped or not).
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Element text.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A lone CR would be read back as a line feed.
            '\r' => out.push_str("&#13;"),
            c if allowed(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// A double-quoted attribute value; line breaks and tabs as references, so
/// that they survive attribute-value normalisation.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if allowed(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_forbidden_characters_are_escaped() {
        assert_eq!(
            attr("a<b>&\"c'\n\t\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#10;&#9;\u{FFFD}"
        );
        assert_eq!(
            text("]]> <x/> &\r\n\u{0}"),
            "]]&gt; &lt;x/&gt; &amp;&#13;\n\u{FFFD}"
        );
    }
}
