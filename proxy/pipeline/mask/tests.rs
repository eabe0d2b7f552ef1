use std::sync::Arc;

use super::scan::Scanner;
use super::tree;
use crate::decision::fields::{
    DatasetFields, FieldPlan, FieldSpec, Hidden, Mask, Shape, Undeclared,
};

fn spec(name: &str, path: &str, parent: Option<usize>, shape: Shape, mask: Mask) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        path: path.into(),
        parent,
        classification: None,
        tags: Vec::new(),
        pii: false,
        logical_type: None,
        mask,
        shape,
    }
}

/// id, email (hidden by `mask`), shipping {city, street (hidden, omit)},
/// lines [{sku, cost (hidden, redact)}].
fn plan(mask: Mask, undeclared: Undeclared) -> FieldPlan {
    let fields = vec![
        spec("id", "id", None, Shape::Leaf, Mask::Omit),
        spec("email", "email", None, Shape::Leaf, mask),
        spec("shipping", "shipping", None, Shape::Object, Mask::Omit),
        spec("city", "shipping/city", Some(2), Shape::Leaf, Mask::Omit),
        spec(
            "street",
            "shipping/street",
            Some(2),
            Shape::Leaf,
            Mask::Omit,
        ),
        spec("lines", "lines", None, Shape::Array, Mask::Omit),
        spec("sku", "lines/sku", Some(5), Shape::Leaf, Mask::Omit),
        spec("cost", "lines/cost", Some(5), Shape::Leaf, Mask::Redact),
    ];
    let hidden = |path: &str, mask| Hidden {
        path: Arc::from(path),
        mask,
        policies: vec!["p".into()],
    };
    FieldPlan {
        dataset: Arc::from("p/d"),
        hidden: vec![
            hidden("email", mask),
            hidden("shipping/street", Mask::Omit),
            hidden("lines/cost", Mask::Redact),
        ],
        visible: Vec::new(),
        verdicts: vec![None, Some(0), None, None, Some(1), None, None, Some(2)],
        shadow_hidden: None,
        specs: Arc::new(DatasetFields {
            dataset: "d".into(),
            fields,
        }),
        undeclared,
        errors: Vec::new(),
    }
}

fn key() -> super::HashKey {
    Arc::new(aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        &[7u8; 32],
    ))
}

/// The body masked, fed in chunks of `step` bytes.
fn mask(p: &FieldPlan, body: &str, step: usize) -> Result<String, String> {
    let mut s = Scanner::new(tree::of(p), Some(key()));
    let mut out = Vec::new();
    for chunk in body.as_bytes().chunks(step.max(1)) {
        out.extend(s.feed(chunk)?);
    }
    out.extend(s.finish()?);
    String::from_utf8(out).map_err(|e| e.to_string())
}

const RECORD: &str = r#"{ "id": 1.50e3, "email": "a\u0040b.example", "shipping": {"city": "Köln", "street": "Hauptstr. 1"}, "lines": [{"sku": "X", "cost": 9.5}, 7], "extra": [true, null] }"#;

#[test]
fn hides_each_declared_field_at_every_level_in_any_chunking() {
    let p = plan(Mask::Omit, Undeclared::Pass);
    let want = r#"{"id":1.50e3,"shipping":{"city":"Köln"},"lines":[{"sku":"X","cost":0},7],"extra":[true, null]}"#;
    for step in [1, 2, 3, 7, 64, 4096] {
        assert_eq!(
            mask(&p, RECORD, step).as_deref(),
            Ok(want),
            "chunks of {step}"
        );
    }
    // An array of records: each is masked.
    let array = format!("[{RECORD} , {RECORD}]");
    assert_eq!(mask(&p, &array, 5), Ok(format!("[{want},{want}]")));
}

#[test]
fn each_method_replaces_the_value() {
    let got = |m| {
        mask(
            &plan(m, Undeclared::Omit),
            r#"{"email":"+49 170 1234567","x":1}"#,
            3,
        )
    };
    assert_eq!(got(Mask::Null).as_deref(), Ok(r#"{"email":null}"#));
    assert_eq!(got(Mask::Redact).as_deref(), Ok(r#"{"email":"***"}"#));
    assert_eq!(
        got(Mask::Last4).as_deref(),
        Ok(r#"{"email":"***********4567"}"#)
    );
    let year = mask(
        &plan(Mask::Year, Undeclared::Omit),
        r#"{"email":"1987-06-05"}"#,
        2,
    );
    assert_eq!(year.as_deref(), Ok(r#"{"email":"1987"}"#));
    // The same text hashes the same however it is escaped.
    let a = mask(&plan(Mask::Hash, Undeclared::Omit), r#"{"email":"a@b"}"#, 1).unwrap();
    let b = mask(
        &plan(Mask::Hash, Undeclared::Omit),
        r#"{"email":"a\u0040b"}"#,
        4,
    )
    .unwrap();
    assert_eq!(a, b);
    assert!(a.starts_with(r#"{"email":"hmac-sha256:"#), "{a}");
    assert_eq!(a.len(), r#"{"email":"hmac-sha256:"}"#.len() + 64);
}

#[test]
fn undeclared_fields_pass_go_or_refuse() {
    let body = r#"{"id":1,"secret":{"a":[1,2]}}"#;
    assert_eq!(
        mask(&plan(Mask::Omit, Undeclared::Pass), body, 3).as_deref(),
        Ok(body)
    );
    assert_eq!(
        mask(&plan(Mask::Omit, Undeclared::Omit), body, 3).as_deref(),
        Ok(r#"{"id":1}"#)
    );
    assert!(mask(&plan(Mask::Omit, Undeclared::Refuse), body, 3).is_err());
}

#[test]
fn fails_on_anything_that_is_not_one_json_value() {
    let p = plan(Mask::Omit, Undeclared::Pass);
    for bad in [
        r#"{"id":1"#,
        r#"{"id":1,}"#,
        r#"{"id":01}"#,
        r#"{"id":tru}"#,
        r#"{"id":"a\x"}"#,
        "{\"id\":\"a\nb\"}",
        r#"{"id":1}{"id":2}"#,
        r#"{"id" 1}"#,
        r#"[{"id":1},]"#,
        "",
    ] {
        assert!(mask(&p, bad, 2).is_err(), "accepted {bad:?}");
    }
    // A scalar at the top has no fields: copied.
    assert_eq!(mask(&p, " 42 ", 1).as_deref(), Ok("42"));
}

#[test]
fn a_shape_other_than_declared_is_masked_all_the_same() {
    let p = plan(Mask::Omit, Undeclared::Pass);
    for (body, want) in [
        // `shipping` is declared an object; it comes as an array of them.
        (
            r#"{"shipping":[{"street":"s","city":"c"},{"street":"t"}]}"#,
            r#"{"shipping":[{"city":"c"},{}]}"#,
        ),
        // `lines` is declared an array; it comes as one object.
        (
            r#"{"lines":{"sku":"X","cost":3}}"#,
            r#"{"lines":{"sku":"X","cost":0}}"#,
        ),
        // Records in arrays of arrays, at the root and below.
        (
            r#"[[{"email":"e","id":1}],[[{"email":"f"}]]]"#,
            r#"[[{"id":1}],[[{}]]]"#,
        ),
        (r#"{"lines":[[{"cost":1}]]}"#, r#"{"lines":[[{"cost":0}]]}"#),
        // Scalars carry no fields.
        (
            r#"{"shipping":null,"lines":7}"#,
            r#"{"shipping":null,"lines":7}"#,
        ),
        (r#"[1,"a",null]"#, r#"[1,"a",null]"#),
    ] {
        for step in [1, 3, 64] {
            assert_eq!(
                mask(&p, body, step).as_deref(),
                Ok(want),
                "{body} by {step}"
            );
        }
    }
}

#[test]
fn nesting_deeper_than_the_bound_fails() {
    let p = plan(Mask::Omit, Undeclared::Pass);
    let deep = "[".repeat(super::scan::MAX_DEPTH + 1);
    let e = mask(&p, &deep, 4096).expect_err("too deep");
    assert!(e.contains("nested deeper"), "{e}");
    let ok = format!(
        "{}{}",
        "[".repeat(super::scan::MAX_DEPTH),
        "]".repeat(super::scan::MAX_DEPTH)
    );
    assert!(mask(&p, &ok, 4096).is_ok());
}
