//! Contract conformance on the masker's own parse: the [`Checker`] a
//! sampled response's scanner (JSON, NDJSON) or CSV masker carries. The
//! scanner hands it each declared member's key and the first byte of its
//! value (and, where the first byte is not enough, the value's text, held
//! up to [`CHECK_LIMIT`] bytes), the end of each declared object; the CSV
//! masker the header row and each cell. It finds:
//!
//! - `required`: a `required` property absent from a record, or `null`;
//! - `type`: a value that is not of its `logicalType` (`date`, `timestamp`
//!   and `time` are ISO 8601 strings; `integer` a number without fraction
//!   or exponent), or a record that is not an object;
//! - `enum`: a value outside its declared valid values;
//! - `undeclared`: a member or column the contract does not declare;
//! - `malformed`: a body that is not of its content type.
//!
//! Under `observe` a violation is only noted; under `enforce` it is an
//! error, which refuses the response (a 502 `contract_violation` before
//! its head, a cut transfer after). When the checker is dropped (the
//! response ended, was cut, or its client went away) the response is
//! counted: once in `meshgate_contract_checks_total`, once per kind it
//! showed in `meshgate_contract_violations_total`; a kind is logged at
//! most once a second per product. A response that is not sampled has no
//! checker: the scanner then costs one branch per value.

use std::sync::Arc;
use std::time::Instant;

use time::format_description::well_known::{Iso8601, Rfc3339};

use crate::decision::fields::{FieldCheck, LogicalType, Mode};
use crate::model::conformance::{Kind, Kinds};
use crate::observe::metrics::{ConformanceMetrics, DatasetLabels, ViolationLabels};

/// The transform's name in its errors; `pipeline/error.rs` answers its
/// refusals as `contract_violation`.
pub const CONFORMANCE: &str = "contract conformance";

/// The longest value text held for a check: a longer one is taken as not
/// of its type (a date, a time, an integer) or not among its valid values.
pub const CHECK_LIMIT: usize = 4096;

/// A response chosen for checking, and where its findings are counted.
#[derive(Clone)]
pub struct Sampled {
    pub mode: Mode,
    pub product: Arc<str>,
    pub dataset: Arc<str>,
    pub metrics: ConformanceMetrics,
}

/// Whether a response of `plan`'s dataset is checked under `conformance`
/// (one uniform draw from the thread's generator when the sample is
/// strictly between 0 and 1: no system call).
pub fn sample(
    conformance: crate::decision::fields::Conformance,
    product: &Arc<str>,
    plan: &crate::decision::fields::FieldPlan,
    metrics: &crate::observe::metrics::FieldMetrics,
) -> Option<Sampled> {
    if !conformance.sample.take(rand::random::<u64>) {
        return None;
    }
    Some(Sampled {
        mode: conformance.mode,
        product: product.clone(),
        dataset: plan.specs.dataset.clone(),
        metrics: metrics.conformance.clone(),
    })
}

/// One response's conformance checks.
pub struct Checker {
    mode: Mode,
    found: Kinds,
    /// A violation under `enforce`: the response is refused.
    refused: bool,
    /// The first record has been checked whole (or the body has ended).
    settled: bool,
    /// The text of the value being checked.
    text: Vec<u8>,
    /// The text was longer than [`CHECK_LIMIT`].
    overflow: bool,
    sampled: Option<Sampled>,
}

type Failed = String;

impl Checker {
    pub fn new(sampled: Sampled) -> Checker {
        let mut c = Checker::quiet(sampled.mode);
        c.sampled = Some(sampled);
        c
    }

    /// A checker that counts and logs nothing.
    pub fn quiet(mode: Mode) -> Checker {
        Checker {
            mode,
            found: Kinds::NONE,
            refused: false,
            settled: false,
            text: Vec::new(),
            overflow: false,
            sampled: None,
        }
    }

    /// Notes a violation: an error under `enforce`.
    pub fn violation(&mut self, kind: Kind) -> Result<(), Failed> {
        self.found.insert(kind);
        if self.mode == Mode::Enforce {
            self.refused = true;
            return Err(format!(
                "the response violates its contract ({})",
                kind.as_str()
            ));
        }
        Ok(())
    }

    /// The kinds of violation found so far.
    pub fn kinds(&self) -> Kinds {
        self.found
    }

    /// Whether a violation refused the response.
    pub fn refused(&self) -> bool {
        self.refused
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The first record has been checked whole.
    pub fn settle(&mut self) {
        self.settled = true;
    }

    pub fn settled(&self) -> bool {
        self.settled
    }

    /// A value's text begins.
    pub fn begin_text(&mut self) {
        self.text.clear();
        self.overflow = false;
    }

    /// More of the value's text.
    pub fn take_text(&mut self, bytes: &[u8]) {
        if self.text.len() + bytes.len() > CHECK_LIMIT {
            self.overflow = true;
        } else {
            self.text.extend_from_slice(bytes);
        }
    }

    /// A JSON value's first byte against its property's check: whether its
    /// text is needed to check the rest.
    pub fn json_first(&mut self, check: &FieldCheck, b: u8) -> Result<bool, Failed> {
        if b == b'n' {
            if check.required {
                self.violation(Kind::Required)?;
            }
            return Ok(false);
        }
        if let Some(ty) = check.ty {
            if !json_first_fits(ty, b) {
                self.violation(Kind::Type)?;
                return Ok(false);
            }
        }
        if matches!(b, b'{' | b'[') {
            // Valid values are scalars: an object or array is none of them.
            if check.valid.is_some() {
                self.violation(Kind::Enum)?;
            }
            return Ok(false);
        }
        Ok(check.needs_text())
    }

    /// A whole JSON scalar (`text`, as sent) against its property's check.
    pub fn json_value(&mut self, check: &FieldCheck, text: &[u8]) -> Result<(), Failed> {
        let overflow = self.overflow || text.len() > CHECK_LIMIT;
        if let Some(ty) = check.ty.filter(|t| text_typed(*t)) {
            let fits = !overflow && json_text_fits(ty, text);
            if !fits {
                self.violation(Kind::Type)?;
                return Ok(());
            }
        }
        if let Some(valid) = &check.valid {
            let value = serde_json::from_slice::<serde_json::Value>(text).ok();
            let listed = !overflow && value.as_ref().is_some_and(|v| listed(valid, v));
            if !listed {
                self.violation(Kind::Enum)?;
            }
        }
        Ok(())
    }

    /// The scalar whose text is held against its property's check.
    pub fn json_held(&mut self, check: &FieldCheck) -> Result<(), Failed> {
        let text = std::mem::take(&mut self.text);
        let r = self.json_value(check, &text);
        self.text = text;
        r
    }

    /// A CSV cell (`text` unquoted; `quoted` when it was sent in quotes)
    /// against its column's check. An unquoted empty cell is `null`.
    pub fn csv_cell(
        &mut self,
        check: &FieldCheck,
        text: &[u8],
        quoted: bool,
    ) -> Result<(), Failed> {
        if text.is_empty() && !quoted {
            if check.required {
                self.violation(Kind::Required)?;
            }
            return Ok(());
        }
        // Text that is not UTF-8 is of no type but `object` and `array`
        // (not checked) and none of the valid values; text longer than
        // CHECK_LIMIT is a string, as in JSON, and of no other type.
        let text = std::str::from_utf8(text).ok();
        let held = text.filter(|t| t.len() <= CHECK_LIMIT);
        if let Some(ty) = check.ty {
            let fits = match ty {
                LogicalType::Object | LogicalType::Array => true,
                LogicalType::String => text.is_some(),
                _ => held.is_some_and(|text| cell_fits(ty, text)),
            };
            if !fits {
                self.violation(Kind::Type)?;
                return Ok(());
            }
        }
        if let Some(valid) = &check.valid {
            if !held.is_some_and(|text| valid.iter().any(|v| cell_is(v, text))) {
                self.violation(Kind::Enum)?;
            }
        }
        Ok(())
    }
}

impl Drop for Checker {
    /// Counts the response, and logs each kind it showed (at most once a
    /// second per product and kind).
    fn drop(&mut self) {
        let Some(s) = self.sampled.take() else {
            return;
        };
        let labels = DatasetLabels {
            product: s.product.clone(),
            dataset: s.dataset.clone(),
        };
        s.metrics.checks.get_or_create(&labels).inc();
        let now = Instant::now();
        for kind in self.found.iter() {
            s.metrics
                .violations
                .get_or_create(&ViolationLabels {
                    product: s.product.clone(),
                    dataset: s.dataset.clone(),
                    kind: kind.as_str(),
                })
                .inc();
            if let Some(held_back) = s.metrics.log.pass(&s.product, kind, now) {
                tracing::warn!(
                    product = %s.product,
                    dataset = %s.dataset,
                    kind = kind.as_str(),
                    mode = self.mode.as_str(),
                    held_back,
                    "a response violates its contract"
                );
            }
        }
    }
}

/// Whether a type is checked on a scalar's text, not its first byte only.
fn text_typed(ty: LogicalType) -> bool {
    matches!(
        ty,
        LogicalType::Integer | LogicalType::Date | LogicalType::Timestamp | LogicalType::Time
    )
}

/// Whether a JSON value starting with `b` can be of type `ty`.
pub fn json_first_fits(ty: LogicalType, b: u8) -> bool {
    match ty {
        LogicalType::String | LogicalType::Date | LogicalType::Timestamp | LogicalType::Time => {
            b == b'"'
        }
        LogicalType::Integer | LogicalType::Number => b == b'-' || b.is_ascii_digit(),
        LogicalType::Boolean => b == b't' || b == b'f',
        LogicalType::Object => b == b'{',
        LogicalType::Array => b == b'[',
    }
}

/// Whether a whole JSON scalar (as sent) is of type `ty`, for the types
/// whose first byte does not tell.
pub fn json_text_fits(ty: LogicalType, text: &[u8]) -> bool {
    match ty {
        LogicalType::Integer => !text.iter().any(|&c| matches!(c, b'.' | b'e' | b'E')),
        LogicalType::Date | LogicalType::Timestamp | LogicalType::Time => {
            json_string(text).is_some_and(|s| iso_fits(ty, &s))
        }
        _ => true,
    }
}

/// A JSON string's text.
fn json_string(text: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    match text {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            std::str::from_utf8(inner).ok().map(Into::into)
        }
        _ => serde_json::from_slice::<String>(text).ok().map(Into::into),
    }
}

/// Whether `s` is an ISO 8601 date, date and time (RFC 3339, or ISO 8601
/// with or without an offset) or time of day.
pub fn iso_fits(ty: LogicalType, s: &str) -> bool {
    match ty {
        LogicalType::Date => time::Date::parse(s, &Iso8601::DEFAULT).is_ok(),
        LogicalType::Timestamp => {
            time::OffsetDateTime::parse(s, &Rfc3339).is_ok()
                || time::OffsetDateTime::parse(s, &Iso8601::DEFAULT).is_ok()
                || time::PrimitiveDateTime::parse(s, &Iso8601::DEFAULT).is_ok()
        }
        LogicalType::Time => time::Time::parse(s, &Iso8601::DEFAULT).is_ok(),
        _ => false,
    }
}

/// Whether a CSV cell's text is of type `ty`: a number's text is a JSON
/// number's (objects and arrays cannot be told in a cell: not checked).
pub fn cell_fits(ty: LogicalType, s: &str) -> bool {
    match ty {
        LogicalType::String | LogicalType::Object | LogicalType::Array => true,
        LogicalType::Integer => number_text(s) == Some(true),
        LogicalType::Number => number_text(s).is_some(),
        LogicalType::Boolean => s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false"),
        LogicalType::Date | LogicalType::Timestamp | LogicalType::Time => iso_fits(ty, s),
    }
}

/// Whether `s` is the text of a JSON number (RFC 8259: an optional `-`, no
/// leading zero, no `+`, no space around): `Some(true)` when it has neither
/// fraction nor exponent.
fn number_text(s: &str) -> Option<bool> {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let s = s.as_bytes();
    let s = s.strip_prefix(b"-").unwrap_or(s);
    let int = digits(s);
    if int == 0 || (int > 1 && s[0] == b'0') {
        return None;
    }
    let mut rest = &s[int..];
    let integer = rest.is_empty();
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = digits(fraction);
        if n == 0 {
            return None;
        }
        rest = &fraction[n..];
    }
    if let [b'e' | b'E', exponent @ ..] = rest {
        let exponent = match exponent {
            [b'+' | b'-', more @ ..] => more,
            _ => exponent,
        };
        let n = digits(exponent);
        if n == 0 {
            return None;
        }
        rest = &exponent[n..];
    }
    rest.is_empty().then_some(integer)
}

/// Whether a JSON value is among the valid ones (numbers by value: `1`
/// and `1.0` are one).
fn listed(valid: &[serde_json::Value], v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    valid.iter().any(|w| match (w, v) {
        (V::Number(a), V::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        _ => w == v,
    })
}

/// Whether a CSV cell's text is the valid value `v`.
fn cell_is(v: &serde_json::Value, text: &str) -> bool {
    use serde_json::Value as V;
    match v {
        V::String(s) => s == text,
        V::Number(n) => number_text(text).is_some() && text.parse::<f64>().ok() == n.as_f64(),
        V::Bool(b) => text.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
