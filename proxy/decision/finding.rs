//! Something wrong or doubtful in an input file, and where: what validation
//! reports as an error or a warning (`file:line:col: field: message`).
//! The field and the message are shown with control characters, line
//! separators and bidirectional controls escaped (`\n`): they quote the
//! input (a key name, a value), and a finding is one line whatever it
//! quotes, so that a contract cannot forge lines of CI output.

use std::fmt;

use crate::base::text::shown;

/// One finding in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// 1-based line and column, when known.
    pub at: Option<(usize, usize)>,
    /// The field as the file's reader names it
    /// (`customProperties.meshgateRoutes[3].dataset`); empty for the file.
    pub field: String,
    pub message: String,
    /// How many findings this one stands for: 1, or for the one that closes
    /// a capped list ([`first_reported`]), how many were not shown.
    pub stands_for: usize,
}

impl Finding {
    /// The finding as a warning line: `file:line:col: warning: field: message`.
    pub fn warning(&self) -> String {
        let mut s = self.place();
        s.push_str("warning: ");
        self.push_field(&mut s);
        s.push_str(&shown(&self.message));
        s
    }

    fn place(&self) -> String {
        match self.at {
            Some((l, c)) => format!("{}:{l}:{c}: ", self.file),
            None => format!("{}: ", self.file),
        }
    }

    fn push_field(&self, s: &mut String) {
        if !self.field.is_empty() {
            s.push_str(&shown(&self.field));
            s.push_str(": ");
        }
    }
}

/// `findings` in file order, the first `most` of them, then one saying how
/// many more there are (`kind`: what they are), placed in `file`.
pub fn first_reported(
    mut findings: Vec<Finding>,
    file: &str,
    kind: &str,
    most: usize,
) -> Vec<Finding> {
    findings.sort_by(|a, b| (&a.file, a.at).cmp(&(&b.file, b.at)));
    if findings.len() > most {
        let more = findings.len() - most;
        findings.truncate(most);
        findings.push(Finding {
            file: file.to_string(),
            at: None,
            field: String::new(),
            message: format!(
                "and {more} more {kind}{} not shown",
                if more == 1 { "" } else { "s" }
            ),
            stands_for: more,
        });
    }
    findings
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.place();
        self.push_field(&mut s);
        s.push_str(&shown(&self.message));
        f.write_str(&s)
    }
}
