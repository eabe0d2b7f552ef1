//! `conform_json`: contract conformance on the JSON masker's streaming parse
//! (`pipeline/mask/conform.rs` through `scan.rs`) against a reference that
//! parses the whole body into a tree first and checks the tree as the
//! README's conformance table describes.
//!
//! Input: three control bytes, then the body. Byte 0: bit 0 NDJSON; bit 1
//! `enforce` (else `observe`); bits 2–3 `undeclared` (pass, omit, refuse,
//! pass); bits 4–7 which of four fields are hidden (their masks fixed).
//! Byte 1: the chunk size the body is fed in (0: whole). Byte 2: bits 0–1
//! the logical type of `v` (an `object`, none, `array`, `string`), bit 2
//! whether `v` is required.
//!
//! The contract (`!` required, `*` hidden when its bit is set):
//! `{!a: integer, *b: string in {"x", "y", 2}, !c: object {d: date,
//! *e: timestamp, f: array [{!g: number, h: boolean}]}, i: array [{!*j: time,
//! k: object {}}], *l: string, v: (byte 2) in {1, "x"}}`.
//!
//! Checked: fed whole and in chunks, the output and the kinds found are the
//! same; for a body that is JSON (NDJSON) and that the masker does not
//! refuse, the kinds the checker found are exactly the reference's under
//! `observe`, and under `enforce` the body fails exactly when the reference
//! finds any (else it masks as under `observe`).

use std::sync::Arc;

use aws_lc_rs::hmac;
use serde_json::Value;

use super::conform::{check, hidden, judge, spec, Reference};
use super::mask::{key_name, parse, parse_lines, text, Node};
use crate::decision::fields::conformance::{FieldCheck, LogicalType};
use crate::decision::fields::tree::{self, Level, Rule};
use crate::decision::fields::{FieldPlan, Mask, Mode, Shape, Undeclared};
use crate::model::conformance::{Kind, Kinds};
use crate::pipeline::mask::conform::{iso_fits, Checker, CHECK_LIMIT};
use crate::pipeline::mask::scan::{Scanner, MAX_DEPTH};

/// The control bytes before the body.
const HEAD: usize = 3;

pub fn conform_json(data: &[u8]) {
    let Some((head, body)) = data.split_first_chunk::<HEAD>() else {
        return;
    };
    let lines = head[0] & 1 != 0;
    let mode = if head[0] & 2 != 0 {
        Mode::Enforce
    } else {
        Mode::Observe
    };
    let undeclared = match head[0] >> 2 & 3 {
        1 => Undeclared::Omit,
        2 => Undeclared::Refuse,
        _ => Undeclared::Pass,
    };
    let v_type = [
        Some(LogicalType::Object),
        None,
        Some(LogicalType::Array),
        Some(LogicalType::String),
    ][usize::from(head[2] & 3)];
    let plan = plan(head[0] >> 4, undeclared, v_type, head[2] & 4 != 0);
    let level = tree::checked(&plan);
    let key = Some(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, b"fuzz")));
    let make = |mode: Mode| {
        let s = if lines {
            Scanner::lines(level.clone(), key.clone())
        } else {
            Scanner::new(level.clone(), key.clone())
        };
        s.checking(Checker::quiet(mode))
    };
    judge(body, usize::from(head[1]), mode, make, || {
        let parsed = if lines {
            parse_lines(body)
                .map(|(values, _, depth)| (values.into_iter().map(|(_, n)| n).collect(), depth))
        } else {
            parse(body).map(|(n, depth)| (vec![n], depth))
        };
        let Ok((records, depth)) = parsed else {
            return Reference::Refused;
        };
        if depth + 1 >= MAX_DEPTH {
            return Reference::Beyond;
        }
        // What masking alone refuses (an undeclared member under `refuse`,
        // a key that does not decode) is `mask_json`'s to check.
        let refused = records
            .iter()
            .any(|n| super::mask::masked(n, &level, key.as_deref()).is_err());
        if refused {
            return Reference::Refused;
        }
        let mut want = Kinds::NONE;
        for record in &records {
            check_record(record, &level, &mut want);
        }
        Reference::Finds(want)
    });
}

/// A record (the body, a line, or an element of a declared array) at
/// `level`: an object (or an array of records).
fn check_record(node: &Node, level: &Level, found: &mut Kinds) {
    match node {
        Node::Object(..) => check_object(node, level, found),
        Node::Array(items, _) => {
            for item in items {
                check_record(item, level, found);
            }
        }
        Node::Scalar(_) => found.insert(Kind::Type),
    }
}

fn check_object(node: &Node, level: &Level, found: &mut Kinds) {
    let Node::Object(members, _) = node else {
        return;
    };
    let Some(checks) = level.checks.as_deref() else {
        return;
    };
    let mut seen = vec![false; checks.list.len()];
    for (k, v) in members {
        let Some(name) = key_name(k) else {
            return;
        };
        match checks.members.get(name.as_slice()) {
            None => found.insert(Kind::Undeclared),
            Some(&i) => {
                let i = usize::from(i);
                seen[i] = true;
                check_value(&checks.list[i].0, v, found);
            }
        }
        // A declared object or array is a level of its own; a hidden one
        // is not walked.
        if let Some(Rule::Show(_, Some(below))) = level.rule(&name) {
            if matches!(v, Node::Object(..) | Node::Array(..)) {
                check_record(v, below, found);
            }
        }
    }
    // Presence: the first 64 required properties of a level.
    let required = checks
        .list
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| c.required);
    if required.take(64).any(|(i, _)| !seen[i]) {
        found.insert(Kind::Required);
    }
}

/// A declared member's value against its check.
fn check_value(check: &FieldCheck, v: &Node, found: &mut Kinds) {
    let raw = text(v);
    if raw == b"null" {
        if check.required {
            found.insert(Kind::Required);
        }
        return;
    }
    if let Some(ty) = check.ty {
        if !of_type(ty, v, &raw) {
            found.insert(Kind::Type);
            return;
        }
    }
    if let Some(valid) = &check.valid {
        let listed = raw.len() <= CHECK_LIMIT
            && serde_json::from_slice::<Value>(&raw).is_ok_and(|value| {
                valid.iter().any(|w| match (w, &value) {
                    (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                    _ => *w == value,
                })
            });
        if !listed {
            found.insert(Kind::Enum);
        }
    }
}

/// Whether a value (not `null`) is of `ty`, as the README's table says.
fn of_type(ty: LogicalType, v: &Node, raw: &[u8]) -> bool {
    let first = raw.first().copied().unwrap_or(0);
    let string = || match v {
        Node::Scalar(_) if first == b'"' && raw.len() <= CHECK_LIMIT => {
            serde_json::from_slice::<String>(raw).ok()
        }
        _ => None,
    };
    match ty {
        LogicalType::String => first == b'"',
        LogicalType::Number => {
            matches!(v, Node::Scalar(_)) && (first == b'-' || first.is_ascii_digit())
        }
        LogicalType::Integer => {
            (first == b'-' || first.is_ascii_digit())
                && raw.len() <= CHECK_LIMIT
                && !raw.iter().any(|c| matches!(c, b'.' | b'e' | b'E'))
        }
        LogicalType::Boolean => raw == b"true" || raw == b"false",
        LogicalType::Object => matches!(v, Node::Object(..)),
        LogicalType::Array => matches!(v, Node::Array(..)),
        LogicalType::Date | LogicalType::Timestamp | LogicalType::Time => {
            string().is_some_and(|s| iso_fits(ty, &s))
        }
    }
}

/// The contract above; `hide`: bits for `b`, `e`, `j`, `l`.
fn plan(
    hide: u8,
    undeclared: Undeclared,
    v_type: Option<LogicalType>,
    v_required: bool,
) -> FieldPlan {
    use LogicalType as T;
    let xy2 = [Value::from("x"), Value::from("y"), Value::from(2)];
    let fields = vec![
        spec(
            "a",
            "a",
            None,
            Shape::Leaf,
            check(Some(T::Integer), true, &[]),
        ),
        spec(
            "b",
            "b",
            None,
            Shape::Leaf,
            check(Some(T::String), false, &xy2),
        ),
        spec(
            "c",
            "c",
            None,
            Shape::Object,
            check(Some(T::Object), true, &[]),
        ),
        spec(
            "d",
            "c/d",
            Some(2),
            Shape::Leaf,
            check(Some(T::Date), false, &[]),
        ),
        spec(
            "e",
            "c/e",
            Some(2),
            Shape::Leaf,
            check(Some(T::Timestamp), false, &[]),
        ),
        spec(
            "f",
            "c/f",
            Some(2),
            Shape::Array,
            check(Some(T::Array), false, &[]),
        ),
        spec(
            "g",
            "c/f/g",
            Some(5),
            Shape::Leaf,
            check(Some(T::Number), true, &[]),
        ),
        spec(
            "h",
            "c/f/h",
            Some(5),
            Shape::Leaf,
            check(Some(T::Boolean), false, &[]),
        ),
        spec(
            "i",
            "i",
            None,
            Shape::Array,
            check(Some(T::Array), false, &[]),
        ),
        spec(
            "j",
            "i/j",
            Some(8),
            Shape::Leaf,
            check(Some(T::Time), true, &[]),
        ),
        spec(
            "k",
            "i/k",
            Some(8),
            Shape::Object,
            check(Some(T::Object), false, &[]),
        ),
        spec(
            "l",
            "l",
            None,
            Shape::Leaf,
            check(Some(T::String), false, &[]),
        ),
        spec(
            "v",
            "v",
            None,
            match v_type {
                Some(T::Object) => Shape::Object,
                Some(T::Array) => Shape::Array,
                _ => Shape::Leaf,
            },
            check(v_type, v_required, &[Value::from(1), Value::from("x")]),
        ),
    ];
    let hideable = [
        (1, Mask::Redact),
        (4, Mask::Year),
        (9, Mask::Hash),
        (11, Mask::Omit),
    ];
    super::mask::plan_of(fields, &hidden(hide, hideable), undeclared)
}
