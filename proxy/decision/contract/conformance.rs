//! What a contract declares that responses are checked against: per
//! property, `logicalType` (one of ODCS's), `required` (a boolean) and the
//! valid values of an `invalidValues` quality rule; per product, the
//! custom property `meshgateConformance: {sample, mode}`.
//!
//! ODCS v3.1 has no `enum` keyword on a property: an enumeration is a
//! library quality rule, `metric: invalidValues` with
//! `arguments.validValues`, that tolerates no invalid value (`mustBe: 0`,
//! `mustBeLessOrEqualTo: 0`, or `mustBeLessThan: 1` row). A rule that
//! tolerates some (a share in percent, or a number of rows above zero) is
//! a dataset-level budget that no single response can be held to; it is
//! not checked here. A `pattern` rule is not checked either.

use serde_yaml_ng::Value;

use super::fields::shown;
use super::Reader;
use crate::base::locate::Step;
use crate::decision::fields::{ConformanceSettings, FieldCheck, LogicalType};

/// The name of the product's custom property.
pub const PROPERTY: &str = "meshgateConformance";

fn key(k: &str) -> Step {
    Step::Key(k.to_string())
}

/// The checks of the property `item` at `at`.
pub(super) fn field_check(
    r: &mut Reader,
    item: &Value,
    at: &[Step],
    field_path: &str,
) -> FieldCheck {
    let mut check = FieldCheck::default();
    let node = |k: &str| {
        let mut p = at.to_vec();
        p.push(key(k));
        p
    };
    if let Some(v) = item.get("logicalType").filter(|v| !v.is_null()) {
        let p = node("logicalType");
        match v.as_str().map(str::parse::<LogicalType>) {
            Some(Ok(t)) => check.ty = Some(t),
            Some(Err(m)) => r.error(p.clone(), shown(&p), format!("{field_path}: {m}")),
            None => r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: a logical type"),
            ),
        }
    }
    if let Some(v) = item.get("required").filter(|v| !v.is_null()) {
        let p = node("required");
        match v.as_bool() {
            Some(b) => check.required = b,
            None => r.error(
                p.clone(),
                shown(&p),
                format!("{field_path}: required is true or false"),
            ),
        }
    }
    let quality = item.get("quality").filter(|v| !v.is_null());
    if quality.is_some_and(|q| !q.is_sequence()) {
        let p = node("quality");
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: quality is a list of rules"),
        );
    }
    if let Some(rules) = quality.and_then(Value::as_sequence) {
        for (i, rule) in rules.iter().enumerate() {
            let mut p = node("quality");
            p.push(Step::Index(i));
            if let Some(valid) = valid_values(r, rule, &p, field_path) {
                check.valid = Some(valid);
            }
        }
    }
    check
}

/// The valid values of a zero-tolerance `invalidValues` rule.
fn valid_values(
    r: &mut Reader,
    rule: &Value,
    at: &[Step],
    field_path: &str,
) -> Option<Box<[serde_json::Value]>> {
    let library = rule
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(|t| t == "library");
    let metric = rule.get("metric").or_else(|| rule.get("rule"));
    if !library || metric.and_then(Value::as_str) != Some("invalidValues") {
        return None;
    }
    let list = rule.get("arguments")?.get("validValues")?;
    let mut p = at.to_vec();
    p.extend([key("arguments"), key("validValues")]);
    let Some(items) = list.as_sequence() else {
        r.error(
            p.clone(),
            shown(&p),
            format!("{field_path}: validValues is a list of values"),
        );
        return None;
    };
    let percent = rule.get("unit").and_then(Value::as_str) == Some("percent");
    let number = |k: &str| rule.get(k).and_then(Value::as_f64);
    let zero_tolerance = number("mustBe") == Some(0.0)
        || number("mustBeLessOrEqualTo") == Some(0.0)
        || (!percent && number("mustBeLessThan") == Some(1.0));
    if !zero_tolerance {
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match serde_json::to_value(v) {
            Ok(
                j @ (serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::String(_)),
            ) => out.push(j),
            _ => {
                let mut q = p.clone();
                q.push(Step::Index(i));
                r.error(
                    q.clone(),
                    shown(&q),
                    format!("{field_path}: a valid value is a string, number, boolean or null"),
                );
            }
        }
    }
    Some(out.into_boxed_slice())
}

/// `customProperties.meshgateConformance` of the product (nothing set
/// when it has none).
pub(super) fn settings(r: &mut Reader, at: Option<(Vec<Step>, &Value)>) -> ConformanceSettings {
    let Some((path, v)) = at else {
        return ConformanceSettings::default();
    };
    r.value(v, &path, &format!("customProperties.{PROPERTY}"))
        .unwrap_or_default()
}
