//! `conform_csv`: contract conformance on the CSV masker's streaming read
//! (`pipeline/mask/conform.rs` through `csv.rs`) against a reference that
//! reads the whole body into records first (`mask_csv`'s reader) and checks
//! them as the README's conformance table describes for CSV.
//!
//! Input: three control bytes, then the body. Byte 0: bit 0 `enforce`
//! (else `observe`); bits 1–2 `undeclared` (pass, omit, refuse, pass); bits
//! 3–6 which of four columns are hidden (their masks fixed). Byte 1: the
//! chunk size the body is fed in (0: whole). Byte 2: bits 0–2 the logical
//! type of `v` (none, integer, number, boolean, string, date, object,
//! timestamp), bit 3 whether `v` is required.
//!
//! The contract's columns (`!` required, `*` hidden when its bit is set):
//! `!a: integer, *b: string in {"x", "y", 2}, n: number, t: boolean,
//! *d: date, e: timestamp, !*j: time, *l: string, o: object {p},
//! v: (byte 2) in {1, "x", true, null}`.
//!
//! The reference, for CSV: the header names the columns; a column the
//! contract does not declare is `undeclared`, a required one missing is
//! `required`. In a data row, an empty unquoted cell is `null` (`required`
//! when its column is); any other cell's text is read as its column's type
//! (`type`): `string` any UTF-8 text; `integer` and `number` the text a JSON
//! number of that type has (an optional `-`, no `+`, no leading zero,
//! `integer` without fraction or exponent); `boolean` `true` or `false` in
//! any case; `date`, `timestamp`, `time` ISO 8601; `object` and `array`
//! cells are not checked.
//! A cell of its type (or of a column without one) is then held against the
//! valid values (`enum`): a string by its text, a number by the value of a
//! JSON number text, a boolean in any case; a cell that is not UTF-8 is
//! none of them, nor is text longer than the check holds (which is only a
//! string). Hidden columns are checked too.
//!
//! Checked: fed whole and in chunks, the output and the kinds found are the
//! same; for a body that masks (`mask_csv`'s reference), the kinds the
//! checker found are exactly the reference's under `observe`, and under
//! `enforce` the body fails exactly when the reference finds any (else it
//! masks as under `observe`).

use std::sync::Arc;

use aws_lc_rs::hmac;
use serde_json::Value;

use super::conform::{check, hidden, judge, spec, Reference};
use super::mask_csv::{reference, unquote, Row};
use crate::decision::fields::conformance::{FieldCheck, LogicalType};
use crate::decision::fields::tree;
use crate::decision::fields::{FieldPlan, FieldSpec, Mask, Mode, Shape, Undeclared};
use crate::model::conformance::{Kind, Kinds};
use crate::pipeline::mask::conform::{iso_fits, Checker, CHECK_LIMIT};
use crate::pipeline::mask::csv::CsvMasker;

/// The control bytes before the body.
const HEAD: usize = 3;

pub fn conform_csv(data: &[u8]) {
    let Some((head, body)) = data.split_first_chunk::<HEAD>() else {
        return;
    };
    let mode = if head[0] & 1 != 0 {
        Mode::Enforce
    } else {
        Mode::Observe
    };
    let undeclared = match head[0] >> 1 & 3 {
        1 => Undeclared::Omit,
        2 => Undeclared::Refuse,
        _ => Undeclared::Pass,
    };
    use LogicalType as T;
    let v_type = [
        None,
        Some(T::Integer),
        Some(T::Number),
        Some(T::Boolean),
        Some(T::String),
        Some(T::Date),
        Some(T::Object),
        Some(T::Timestamp),
    ][usize::from(head[2] & 7)];
    let columns = columns(v_type, head[2] & 8 != 0);
    let plan = plan(&columns, head[0] >> 3 & 15, undeclared);
    let level = tree::checked(&plan);
    let key = Some(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, b"fuzz")));
    let make =
        |mode: Mode| CsvMasker::new(level.clone(), key.clone()).checking(Checker::quiet(mode));
    judge(body, usize::from(head[1]), mode, make, || {
        // What the masker refuses without the checker is `mask_csv`'s to
        // check.
        match reference(&level, key.as_deref(), body) {
            Ok((rows, _)) => Reference::Finds(check_rows(&rows, &columns)),
            Err(_) => Reference::Refused,
        }
    });
}

/// A declared column: its name and check.
struct Declared {
    name: &'static str,
    check: FieldCheck,
}

/// The kinds the README's table finds in `rows`.
fn check_rows(rows: &[Row], declared: &[Declared]) -> Kinds {
    let mut found = Kinds::NONE;
    let mut records = rows.iter().filter(|r| !r.cells.is_empty());
    let Some(names) = records.next() else {
        return found;
    };
    let by_column: Vec<Option<&FieldCheck>> = names
        .cells
        .iter()
        .map(|raw| {
            let name = unquote(raw);
            let d = declared
                .iter()
                .find(|d| d.name.as_bytes() == name.as_slice());
            if d.is_none() {
                found.insert(Kind::Undeclared);
            }
            d.map(|d| &d.check)
        })
        .collect();
    let missing = declared.iter().any(|d| {
        d.check.required
            && !names
                .cells
                .iter()
                .any(|raw| unquote(raw) == d.name.as_bytes())
    });
    if missing {
        found.insert(Kind::Required);
    }
    for record in records {
        for (raw, check) in record.cells.iter().zip(&by_column) {
            if let Some(check) = check {
                check_cell(check, raw, &mut found);
            }
        }
    }
    found
}

fn check_cell(check: &FieldCheck, raw: &[u8], found: &mut Kinds) {
    let quoted = raw.first() == Some(&b'"');
    let text = unquote(raw);
    if text.is_empty() && !quoted {
        if check.required {
            found.insert(Kind::Required);
        }
        return;
    }
    let text = std::str::from_utf8(&text).ok();
    // Text past the check's limit is a string and nothing else.
    let long = text.is_some_and(|s| s.len() > CHECK_LIMIT);
    if let Some(ty) = check.ty {
        let fits = match ty {
            LogicalType::Object | LogicalType::Array => true,
            LogicalType::String => text.is_some(),
            _ => !long && text.is_some_and(|s| of_type(ty, s)),
        };
        if !fits {
            found.insert(Kind::Type);
            return;
        }
    }
    if let Some(valid) = &check.valid {
        if long || !text.is_some_and(|s| valid.iter().any(|v| is_value(v, s))) {
            found.insert(Kind::Enum);
        }
    }
}

fn of_type(ty: LogicalType, s: &str) -> bool {
    match ty {
        LogicalType::String | LogicalType::Object | LogicalType::Array => true,
        LogicalType::Integer => json_number(s) == Some(true),
        LogicalType::Number => json_number(s).is_some(),
        LogicalType::Boolean => ["true", "false"].iter().any(|b| s.eq_ignore_ascii_case(b)),
        LogicalType::Date | LogicalType::Timestamp | LogicalType::Time => iso_fits(ty, s),
    }
}

/// Whether `s` is a JSON number's text (RFC 8259): `Some(true)` for one
/// without fraction or exponent. Written apart from the checker's
/// `number_text` on purpose: the reference must not share what it checks.
fn json_number(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    let int_from = i;
    if !digits(&mut i) || (b[int_from] == b'0' && i - int_from > 1) {
        return None;
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if !digits(&mut i) {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        integer = false;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
    }
    (i == b.len()).then_some(integer)
}

/// Whether a cell's text is the valid value `v`.
fn is_value(v: &Value, s: &str) -> bool {
    match v {
        Value::String(w) => w == s,
        Value::Number(n) => json_number(s).is_some() && s.parse::<f64>().ok() == n.as_f64(),
        Value::Bool(w) => s.eq_ignore_ascii_case(if *w { "true" } else { "false" }),
        _ => false,
    }
}

/// The root's columns (`o`'s field `p` is not one).
fn columns(v_type: Option<LogicalType>, v_required: bool) -> Vec<Declared> {
    use LogicalType as T;
    let d = |name, ty, required, valid: &[Value]| Declared {
        name,
        check: check(ty, required, valid),
    };
    let xy2 = [Value::from("x"), Value::from("y"), Value::from(2)];
    let v_valid = [
        Value::from(1),
        Value::from("x"),
        Value::from(true),
        Value::Null,
    ];
    vec![
        d("a", Some(T::Integer), true, &[]),
        d("b", Some(T::String), false, &xy2),
        d("n", Some(T::Number), false, &[]),
        d("t", Some(T::Boolean), false, &[]),
        d("d", Some(T::Date), false, &[]),
        d("e", Some(T::Timestamp), false, &[]),
        d("j", Some(T::Time), true, &[]),
        d("l", Some(T::String), false, &[]),
        d("o", Some(T::Object), false, &[]),
        d("v", v_type, v_required, &v_valid),
    ]
}

/// The plan: the columns, `o`'s field `p`, and `hide`'s bits for `b`, `d`,
/// `j`, `l`.
fn plan(columns: &[Declared], hide: u8, undeclared: Undeclared) -> FieldPlan {
    let mut fields: Vec<FieldSpec> = columns
        .iter()
        .map(|c| {
            let shape = match c.check.ty {
                Some(LogicalType::Object) => Shape::Object,
                _ => Shape::Leaf,
            };
            spec(c.name, c.name, None, shape, c.check.clone())
        })
        .collect();
    let o = fields.iter().position(|f| f.name == "o");
    fields.push(super::mask::spec("p", "o/p", o, Shape::Leaf));
    let hideable = [
        (1, Mask::Redact),
        (4, Mask::Year),
        (6, Mask::Hash),
        (7, Mask::Omit),
    ];
    super::mask::plan_of(fields, &hidden(hide, hideable), undeclared)
}
