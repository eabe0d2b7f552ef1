//! The type checks on their own, and the checker on the scanner's and the
//! CSV masker's parse: what each kind is found on, that `observe` changes
//! no byte of the masker's output and `enforce` stops it, and when the
//! first record is settled.

use std::sync::Arc;

use super::*;
use crate::decision::fields::{DatasetFields, FieldPlan, FieldSpec, Mask, Shape, Undeclared};
use crate::pipeline::mask::csv::CsvMasker;
use crate::pipeline::mask::scan::Scanner;
use crate::pipeline::mask::tree;

#[test]
fn a_json_value_is_of_its_type_by_its_first_byte_and_where_needed_its_text() {
    use LogicalType as T;
    for (ty, b, fits) in [
        (T::String, b'"', true),
        (T::String, b'1', false),
        (T::Number, b'-', true),
        (T::Integer, b'"', false),
        (T::Boolean, b't', true),
        (T::Boolean, b'"', false),
        (T::Object, b'{', true),
        (T::Object, b'[', false),
        (T::Array, b'[', true),
        (T::Date, b'"', true),
    ] {
        assert_eq!(json_first_fits(ty, b), fits, "{ty:?} {}", b as char);
    }
    for (ty, text, fits) in [
        (T::Integer, "42", true),
        (T::Integer, "-0", true),
        (T::Integer, "4.0", false),
        (T::Integer, "1e3", false),
        (T::Date, "\"2019-04-01\"", true),
        (T::Date, "\"2019-02-30\"", false),
        (T::Date, "\"01.04.2019\"", false),
        (T::Date, "\"2019\\u002d04-01\"", true),
        (T::Timestamp, "\"2019-04-01T10:00:00Z\"", true),
        (T::Timestamp, "\"2019-04-01T10:00:00.123+02:00\"", true),
        (T::Timestamp, "\"2019-04-01T10:00:00\"", true),
        (T::Timestamp, "\"2019-04-01\"", false),
        (T::Timestamp, "\"yesterday\"", false),
        (T::Time, "\"13:45:00\"", true),
        (T::Time, "\"25:00:00\"", false),
    ] {
        assert_eq!(json_text_fits(ty, text.as_bytes()), fits, "{ty:?} {text}");
    }
}

#[test]
fn a_csv_cell_is_of_its_type_by_its_text() {
    use LogicalType as T;
    for (ty, text, fits) in [
        (T::Integer, "42", true),
        (T::Integer, "-", false),
        (T::Integer, "4.5", false),
        (T::Number, "12.50", true),
        (T::Number, "1e3", true),
        (T::Number, "NaN", false),
        (T::Number, "+1", false),
        // A number's text is a JSON number's, whatever its range.
        (T::Number, "1 ", false),
        (T::Number, "1.", false),
        (T::Number, "01", false),
        (T::Number, "-0.0e+7", true),
        (T::Number, "1e999", true),
        (T::Integer, "007", false),
        (T::Integer, "-0", true),
        (T::Integer, "1e3", false),
        (T::Number, ".5", false),
        (T::Number, "1e", false),
        (T::Number, "1e+", false),
        (T::Number, "", false),
        (T::Number, "-01", false),
        (T::Number, "1.5E-3", true),
        (T::Number, "\u{661}", false),
        (T::Boolean, "TRUE", true),
        (T::Boolean, "yes", false),
        (T::Date, "2021-12-31", true),
        (T::Date, "31/12/2021", false),
        (T::String, "anything", true),
        (T::Object, "{not checked}", true),
    ] {
        assert_eq!(cell_fits(ty, text), fits, "{ty:?} {text}");
    }
}

fn check(ty: LogicalType, required: bool, valid: Option<Vec<serde_json::Value>>) -> FieldCheck {
    FieldCheck {
        ty: Some(ty),
        required,
        valid: valid.map(Vec::into_boxed_slice),
    }
}

fn spec(name: &str, parent: Option<usize>, shape: Shape, check: FieldCheck) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        path: name.into(),
        parent,
        classification: None,
        tags: Vec::new(),
        pii: false,
        logical_type: check.ty.map(|t| t.as_str().to_string()),
        mask: Mask::Omit,
        shape,
        check,
    }
}

/// id (string, required), amount (number), status (enum new|paid),
/// placed (date), qty (integer), shipping {city (required)}; `email`
/// hidden (omit) when `hide`.
fn plan(hide: bool) -> FieldPlan {
    use serde_json::json;
    use LogicalType as T;
    let fields = vec![
        spec("id", None, Shape::Leaf, check(T::String, true, None)),
        spec("amount", None, Shape::Leaf, check(T::Number, false, None)),
        spec(
            "status",
            None,
            Shape::Leaf,
            check(T::String, false, Some(vec![json!("new"), json!("paid")])),
        ),
        spec("placed", None, Shape::Leaf, check(T::Date, false, None)),
        spec("qty", None, Shape::Leaf, check(T::Integer, false, None)),
        spec(
            "shipping",
            None,
            Shape::Object,
            check(T::Object, false, None),
        ),
        spec("city", Some(5), Shape::Leaf, check(T::String, true, None)),
        spec("email", None, Shape::Leaf, check(T::String, false, None)),
    ];
    let n = fields.len();
    let mut verdicts = vec![None; n];
    let mut hidden = Vec::new();
    if hide {
        verdicts[n - 1] = Some(0);
        hidden.push(crate::decision::fields::Hidden {
            path: Arc::from("email"),
            mask: Mask::Omit,
            policies: vec![],
        });
    }
    FieldPlan {
        dataset: Arc::from("p/orders"),
        hidden,
        visible: Vec::new(),
        verdicts,
        shadow_hidden: None,
        shadow_differs: Vec::new(),
        specs: Arc::new(DatasetFields {
            dataset: "orders".into(),
            fields,
        }),
        undeclared: Undeclared::Pass,
        errors: Vec::new(),
        trees: Default::default(),
    }
}

const GOOD: &str = r#"{"id": "SO-1", "amount": 12.50, "status": "paid", "placed": "2019-04-01", "qty": 2, "shipping": {"city": "K"}, "email": "a@b"}"#;

/// The kinds a JSON body shows under `observe`, and the masker's output
/// (fed a byte at a time: a value's text is held across chunks).
fn json_kinds(body: &str, hide: bool) -> (Kinds, String) {
    let mut s =
        Scanner::new(tree::checked(&plan(hide)), None).checking(Checker::quiet(Mode::Observe));
    let mut out = Vec::new();
    for b in body.as_bytes() {
        out.extend(
            s.feed(std::slice::from_ref(b))
                .expect("observe never fails"),
        );
    }
    out.extend(s.finish().expect("whole"));
    let kinds = s.checker().map(Checker::kinds).unwrap_or_default();
    (kinds, String::from_utf8(out).expect("utf-8"))
}

fn names(k: Kinds) -> Vec<&'static str> {
    k.iter().map(Kind::as_str).collect()
}

#[test]
fn each_kind_is_found_where_the_record_breaks_the_contract_and_observe_changes_nothing() {
    for (body, want) in [
        (GOOD.to_string(), vec![]),
        (GOOD.replace(r#""id": "SO-1", "#, ""), vec!["required"]),
        (GOOD.replace(r#""SO-1""#, "null"), vec!["required"]),
        (
            GOOD.replace(r#""city": "K""#, r#""town": "K""#),
            vec!["required", "undeclared"],
        ),
        (GOOD.replace("12.50", r#""12.50""#), vec!["type"]),
        (GOOD.replace(r#""qty": 2"#, r#""qty": 2.5"#), vec!["type"]),
        (GOOD.replace("2019-04-01", "April 1st"), vec!["type"]),
        (GOOD.replace(r#"{"city": "K"}"#, r#"["K"]"#), vec!["type"]),
        (GOOD.replace("paid", "lost"), vec!["enum"]),
        (
            GOOD.replace(r#""qty""#, r#""note": 1, "qty""#),
            vec!["undeclared"],
        ),
        (format!("[{GOOD}, 7]"), vec!["type"]),
    ] {
        let (kinds, checked) = json_kinds(&body, false);
        assert_eq!(names(kinds), want, "{body}");
        // The same output as the masker's without checks.
        let mut plain = Scanner::new(tree::of(&plan(false)), None);
        let mut out = plain.feed(body.as_bytes()).expect("JSON");
        out.extend(plain.finish().expect("whole"));
        assert_eq!(checked.as_bytes(), out, "{body}");
    }
    // A hidden (omitted) member is checked all the same.
    let (kinds, out) = json_kinds(&GOOD.replace("\"a@b\"", "7"), true);
    assert_eq!(names(kinds), ["type"]);
    assert!(!out.contains("email"), "{out}");
}

#[test]
fn enforce_stops_at_the_first_violation_and_the_first_record_settles_the_look_ahead() {
    let records = format!("[{GOOD}, {}]", GOOD.replace("paid", "lost"));
    let mut s =
        Scanner::new(tree::checked(&plan(false)), None).checking(Checker::quiet(Mode::Enforce));
    let first = GOOD.len() + 1;
    assert!(s.feed(&records.as_bytes()[..first]).is_ok());
    assert!(
        s.checker().is_some_and(Checker::settled),
        "the first record is whole"
    );
    let e = s
        .feed(&records.as_bytes()[first..])
        .expect_err("the second violates");
    assert!(e.contains("enum"), "{e}");
    assert!(s.checker().is_some_and(Checker::refused));

    // A nested object closing does not settle the record it is in.
    let mut s =
        Scanner::new(tree::checked(&plan(false)), None).checking(Checker::quiet(Mode::Enforce));
    let upto = GOOD.find("\"email\"").expect("email");
    assert!(s.feed(&GOOD.as_bytes()[..upto]).is_ok());
    assert!(!s.checker().is_some_and(Checker::settled));
}

#[test]
fn csv_columns_and_cells_are_checked_by_the_header_row() {
    let kinds = |body: &str| {
        let mut m = CsvMasker::new(tree::checked(&plan(false)), None)
            .checking(Checker::quiet(Mode::Observe));
        m.feed(body.as_bytes()).expect("observe never fails");
        m.finish().expect("whole");
        names(m.checker().map(Checker::kinds).unwrap_or_default())
    };
    assert_eq!(
        kinds("id,amount,status,placed,qty\nSO-1,12.5,new,2019-04-01,3\n"),
        Vec::<&str>::new()
    );
    assert_eq!(kinds("amount\n1\n"), ["required"]);
    assert_eq!(kinds("id,extra\nSO-1,x\n"), ["undeclared"]);
    assert_eq!(kinds("id,qty\nSO-1,many\n"), ["type"]);
    assert_eq!(kinds("id,status\nSO-1,lost\n"), ["enum"]);
    // An unquoted empty cell is null; a quoted one an empty string.
    assert_eq!(kinds("id,status\n,new\n"), ["required"]);
    assert_eq!(kinds("id,status\n\"\",new\n"), Vec::<&str>::new());
}

#[test]
fn a_csv_cell_that_is_not_utf8_fails_a_typed_or_listed_column_only() {
    let mut c = Checker::quiet(Mode::Observe);
    let open = FieldCheck::default();
    c.csv_cell(&open, b"\xff", false).expect("observe");
    let object = check(LogicalType::Object, false, None);
    c.csv_cell(&object, b"\xff", false).expect("observe");
    assert!(c.kinds().is_empty());
    let text = check(LogicalType::String, false, None);
    c.csv_cell(&text, b"\xff", false).expect("observe");
    assert_eq!(names(c.kinds()), ["type"]);
    let mut c = Checker::quiet(Mode::Observe);
    let listed = FieldCheck {
        valid: Some(vec![serde_json::json!("x")].into_boxed_slice()),
        ..FieldCheck::default()
    };
    c.csv_cell(&listed, b"\xff", false).expect("observe");
    assert_eq!(names(c.kinds()), ["enum"]);
}

#[test]
fn a_csv_cell_matches_a_numeric_valid_value_by_a_json_numbers_text_and_a_long_one_nothing_read() {
    use serde_json::json;
    let two = FieldCheck {
        valid: Some(vec![json!(2)].into_boxed_slice()),
        ..FieldCheck::default()
    };
    for (text, listed) in [
        ("2", true),
        ("2.0", true),
        ("2e0", true),
        ("+2", false),
        ("2 ", false),
        ("2.", false),
    ] {
        let mut c = Checker::quiet(Mode::Observe);
        c.csv_cell(&two, text.as_bytes(), false).expect("observe");
        assert_eq!(c.kinds().is_empty(), listed, "{text}");
    }
    // Longer than the check holds: a string, and no other type, and not
    // among valid values (as in JSON).
    let long = "1".repeat(CHECK_LIMIT + 1);
    let mut c = Checker::quiet(Mode::Observe);
    c.csv_cell(
        &check(LogicalType::String, false, None),
        long.as_bytes(),
        false,
    )
    .expect("observe");
    assert!(c.kinds().is_empty());
    c.csv_cell(
        &check(LogicalType::Integer, false, None),
        long.as_bytes(),
        false,
    )
    .expect("observe");
    assert_eq!(names(c.kinds()), ["type"]);
    let mut c = Checker::quiet(Mode::Observe);
    let listed = check(LogicalType::String, false, Some(vec![json!(long.clone())]));
    c.csv_cell(&listed, long.as_bytes(), false)
        .expect("observe");
    assert_eq!(names(c.kinds()), ["enum"]);
}

#[test]
fn valid_values_compare_numbers_by_value_and_long_text_or_a_container_is_not_among_them() {
    use serde_json::json;
    let mut c = Checker::quiet(Mode::Observe);
    let n = check(LogicalType::Number, false, Some(vec![json!(1), json!(2.5)]));
    assert!(c.json_value(&n, b"1.0").is_ok() && c.kinds().is_empty());
    assert!(c.json_value(&n, b"2.50").is_ok() && c.kinds().is_empty());
    c.json_value(&n, b"3").expect("observe");
    assert_eq!(names(c.kinds()), ["enum"]);
    let mut c = Checker::quiet(Mode::Enforce);
    let s = check(LogicalType::String, false, Some(vec![json!("x")]));
    let long = format!("\"{}\"", "x".repeat(CHECK_LIMIT + 1));
    assert!(c.json_value(&s, long.as_bytes()).is_err());
    // Valid values are scalars: an object or an array (of the property's
    // type or none) is none of them.
    for ty in [LogicalType::Object, LogicalType::Array] {
        let o = check(ty, false, Some(vec![json!("x")]));
        let mut c = Checker::quiet(Mode::Observe);
        let first = if ty == LogicalType::Object {
            b'{'
        } else {
            b'['
        };
        assert_eq!(c.json_first(&o, first), Ok(false));
        assert_eq!(names(c.kinds()), ["enum"]);
    }
}
