//! Extension literals of the conditions that are tested per request:
//! `duration("1h")`, `datetime("2027-01-01")`, `ip("10.0.0.0/8")`,
//! `decimal("1.5")`. Cedar parses such a literal's text (with regexes, for
//! `duration` and `datetime`) every time it evaluates the call: 1,700
//! instructions per `duration` (callgrind, 2026-12-04), a quarter of the
//! time-dependent conditions re-evaluated in every new second. The test
//! of a condition that reads only few-valued context attributes (see
//! [`Specialized`]) has each such call replaced by a look-up of the value
//! Cedar made of it once, when the policy was specialised:
//! `context["meshgate literals"]["duration(\"1h\")"]`. The test is
//! evaluated with that one attribute added to its context; its conditions
//! cannot see the attribute otherwise (they read no attribute but the
//! few-valued ones, and not the context as a whole). A literal Cedar
//! refuses is left as it is written, so that the test fails as the policy
//! does. Decisions stay Cedar's: a value is the one Cedar's evaluator
//! makes of the call (the constructor applied to the string), and a test
//! that errs is decided by the policies themselves.

use cedar_policy_core::ast;

use super::context::construct;

/// The context attribute holding a test's literals: not a name a policy
/// may read (strict validation refuses attributes the schema does not
/// declare), and never read by a test but through the replacement.
pub(super) const LITERALS: &str = "meshgate literals";

/// The extension constructors whose string-literal calls are made once.
const CONSTRUCTORS: [&str; 4] = ["datetime", "duration", "ip", "decimal"];

/// Replaces in `v`, an expression in Cedar's JSON form (EST), every call
/// of a constructor of [`CONSTRUCTORS`] on a string literal whose value
/// Cedar makes by the look-up of that value in [`LITERALS`]; adds the
/// values to `found` by the key they are looked up by.
pub(super) fn hoist(v: &mut serde_json::Value, found: &mut Vec<(String, ast::Value)>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if m.len() == 1 {
                if let Some((name, text)) = literal_call(m) {
                    let key = format!("{name}({text:?})");
                    if let Ok(value) = construct(name, &text) {
                        if !found.iter().any(|(k, _)| *k == key) {
                            found.push((key.clone(), value));
                        }
                        *v = lookup(&key);
                        return;
                    }
                }
            }
            m.values_mut().for_each(|x| hoist(x, found));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| hoist(x, found)),
        _ => {}
    }
}

/// `(constructor, text)` of `{"<constructor>": [{"Value": "<text>"}]}`.
fn literal_call(m: &serde_json::Map<String, serde_json::Value>) -> Option<(&'static str, String)> {
    let (name, args) = m.iter().next()?;
    let name = CONSTRUCTORS.iter().find(|c| **c == name)?;
    let [arg] = args.as_array()?.as_slice() else {
        return None;
    };
    let arg = arg.as_object().filter(|a| a.len() == 1)?;
    let text = arg.get("Value")?.as_str()?;
    Some((name, text.to_string()))
}

/// `context["meshgate literals"][key]` in EST.
fn lookup(key: &str) -> serde_json::Value {
    serde_json::json!({
        ".": {
            "left": { ".": { "left": { "Var": "context" }, "attr": LITERALS } },
            "attr": key,
        }
    })
}
