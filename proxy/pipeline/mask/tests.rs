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
        check: Default::default(),
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
        shadow_differs: Vec::new(),
        specs: Arc::new(DatasetFields {
            dataset: "d".into(),
            fields,
        }),
        undeclared,
        errors: Vec::new(),
        trees: Default::default(),
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
    mask_keyed(p, body, step, Some(key()))
}

/// The same, with this hash key (or none).
fn mask_keyed(
    p: &FieldPlan,
    body: &str,
    step: usize,
    key: Option<super::HashKey>,
) -> Result<String, String> {
    let mut s = Scanner::new(tree::of(p), key);
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
fn members_in_any_order_get_their_own_rules() {
    // The scanner looks for each member where the contract's order says
    // the next one is: records in another order, or in changing orders,
    // must be masked the same.
    let p = plan(Mask::Omit, Undeclared::Omit);
    let records = [
        r#"{"email":"e","id":1,"lines":[{"cost":2,"sku":"s"}],"shipping":{"street":"x","city":"c"}}"#,
        r#"{"id":1,"email":"e","shipping":{"city":"c","street":"x"},"lines":[{"sku":"s","cost":2}]}"#,
        r#"{"shipping":{"street":"x","city":"c"},"zz":0,"lines":[{"cost":2,"sku":"s"}],"id":1}"#,
    ];
    let body = format!("[{}]", records.join(","));
    let want = concat!(
        r#"[{"id":1,"lines":[{"cost":0,"sku":"s"}],"shipping":{"city":"c"}},"#,
        r#"{"id":1,"shipping":{"city":"c"},"lines":[{"sku":"s","cost":0}]},"#,
        r#"{"shipping":{"city":"c"},"lines":[{"cost":0,"sku":"s"}],"id":1}]"#,
    );
    for step in [1, 5, 4096] {
        assert_eq!(
            mask(&p, &body, step).as_deref(),
            Ok(want),
            "chunks of {step}"
        );
    }
}

#[test]
fn members_taken_whole_mask_as_token_by_token() {
    // Whole compact members, visible or hidden, are taken as stretches of
    // a chunk; fed a byte at a time, every member goes token by token. Both
    // must make the same body, and refuse the same bodies: malformed ones,
    // undeclared members where the product refuses them, a `hash` without
    // a key.
    let members = [
        r#""id":0"#,
        r#""id":-1.5e3"#,
        r#""id":7E+2"#,
        r#""email":"a@b.example""#,
        r#""email":"a\"b""#,
        r#""shipping":{"city":"c","street":"s"}"#,
        r#""lines":[{"sku":"x","cost":3},{"cost":true,"sku":"y"}]"#,
        r#""zz":true"#,
        r#""note":"x\u0041y""#,
        r#""n":null"#,
        r#""f":false"#,
        r#""id": 1"#,
        r#""lines":[]"#,
        r#""email":12345678"#,
        r#""email":true"#,
        r#""email":"Jürgen-Öß 0172""#,
        r#""email":"1987-06-05T10:00:00Z""#,
        r#""email": "a""#,
    ];
    let broken = [
        r#""id":01"#,
        r#""id":-"#,
        r#""id":1."#,
        r#""f":fals"#,
        r#""id":1x"#,
        r#""zz":tru"#,
        r#""id":"a"#,
        r#""email":tru"#,
        r#""email":1.e"#,
        r#""email":"a"#,
    ];
    let mut seed = 0x2545_f491_u32;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % n
    };
    for round in 0..400 {
        let mut records = Vec::new();
        for _ in 0..1 + next(3) {
            let picked: Vec<&str> = (0..next(7)).map(|_| members[next(members.len())]).collect();
            // A space after a comma sends the member after it to the
            // stretch in the state where the token path has read the comma.
            records.push(format!("{{{}}}", picked.join([",", ", "][next(2)])));
        }
        if round % 5 == 4 {
            let at = next(records.len());
            let bad = broken[next(broken.len())];
            records[at] = records[at].replacen('{', &format!("{{{bad},"), 1);
        }
        let body = format!("[{}]", records.join(","));
        let masks = [
            Mask::Omit,
            Mask::Null,
            Mask::Redact,
            Mask::Hash,
            Mask::Last4,
            Mask::Year,
        ];
        let undeclared = [Undeclared::Pass, Undeclared::Omit, Undeclared::Refuse];
        let p = plan(
            masks[round % masks.len()],
            undeclared[(round / masks.len()) % undeclared.len()],
        );
        // Every seventh round without a hash key.
        let key = (round % 7 != 3).then(key);
        let whole = mask_keyed(&p, &body, body.len(), key.clone());
        for step in [1, 1 + next(9), 1 + next(48)] {
            let cut = mask_keyed(&p, &body, step, key.clone());
            assert_eq!(
                whole.is_ok(),
                cut.is_ok(),
                "{body} in chunks of {step}: {cut:?}"
            );
            if let (Ok(whole), Ok(cut)) = (&whole, &cut) {
                assert_eq!(whole, cut, "{body} in chunks of {step}");
            }
        }
        if let Ok(out) = whole {
            serde_json::from_str::<serde_json::Value>(&out).expect("the masked body is JSON");
        }
    }
}

#[test]
fn a_hidden_value_longer_than_the_capture_limit_is_refused_however_it_comes() {
    // Whole in one chunk (the stretch) or in pieces (the token path): a
    // value a method must read whole is refused past the bound.
    let long = "x".repeat(super::scan::CAPTURE_LIMIT);
    let body = format!(r#"[{{"id":1,"email":"{long}","x":2}}]"#);
    for step in [body.len(), 1 << 16] {
        let got = mask(&plan(Mask::Hash, Undeclared::Omit), &body, step);
        let why = got.expect_err("refused");
        assert!(why.contains("longer than"), "{why}");
    }
    // Within the bound it is hashed.
    let fits = "x".repeat(super::scan::CAPTURE_LIMIT - 2);
    let body = format!(r#"{{"email":"{fits}"}}"#);
    let got = mask(&plan(Mask::Hash, Undeclared::Omit), &body, body.len()).expect("masked");
    assert!(got.starts_with(r#"{"email":"hmac-sha256:"#), "{got}");
}

#[test]
fn last4_counts_characters_not_bytes() {
    let got = mask(
        &plan(Mask::Last4, Undeclared::Omit),
        r#"{"email":"Jürgen-Öß"}"#,
        1,
    );
    assert_eq!(got.as_deref(), Ok(r#"{"email":"*****n-Öß"}"#));
    let short = mask(&plan(Mask::Last4, Undeclared::Omit), r#"{"email":"äb"}"#, 1);
    assert_eq!(short.as_deref(), Ok(r#"{"email":"**"}"#));
    // A tail that needs escapes gets them back; a number shows its digits.
    for step in [1, 64] {
        let p = plan(Mask::Last4, Undeclared::Omit);
        let escaped = mask(&p, r#"{"email":"abc\"d\\e"}"#, step);
        assert_eq!(escaped.as_deref(), Ok(r#"{"email":"***\"d\\e"}"#));
        let number = mask(&p, r#"{"email":-1234567}"#, step);
        assert_eq!(number.as_deref(), Ok(r#"{"email":"****4567"}"#));
    }
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
    for (text, want) in [
        ("1987", Some("1987")),
        ("1987-06", Some("1987")),
        ("1987-06-05T10:00:00Z", Some("1987")),
        ("1987-06-05 10:00", Some("1987")),
        ("1987-06-05Z", Some("1987")),
        ("1987-06-05+01:00", Some("1987")),
        ("1987-06-05-05:00", Some("1987")),
        ("1234-5678-9012-3456", None),
        ("1987-13-05", None),
        ("1987-06-00", None),
        ("1987-06-05x", None),
        ("19870", None),
        ("1987-", None),
        ("198a", None),
    ] {
        assert_eq!(super::methods::year(text), want, "{text}");
    }
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

/// An NDJSON body masked, fed in chunks of `step` bytes.
fn mask_lines(p: &FieldPlan, body: &str, step: usize) -> Result<String, String> {
    let mut s = Scanner::lines(tree::of(p), Some(key()));
    let mut out = Vec::new();
    for chunk in body.as_bytes().chunks(step.max(1)) {
        out.extend(s.feed(chunk)?);
    }
    out.extend(s.finish()?);
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[test]
fn ndjson_masks_each_line_and_keeps_the_line_breaks() {
    let p = plan(Mask::Omit, Undeclared::Pass);
    let want = r#"{"id":1.50e3,"shipping":{"city":"Köln"},"lines":[{"sku":"X","cost":0},7],"extra":[true, null]}"#;
    let body = format!("{RECORD}\r\n{RECORD}\n\n  {RECORD}\n");
    for step in [1, 3, 64, 4096] {
        assert_eq!(
            mask_lines(&p, &body, step),
            Ok(format!("{want}\r\n{want}\n\n  {want}\n")),
            "chunks of {step}"
        );
    }
    // No final line break, a number alone on the last line, an empty body.
    assert_eq!(
        mask_lines(&p, "{\"email\":\"x\"}\n12", 2).as_deref(),
        Ok("{}\n12")
    );
    assert_eq!(mask_lines(&p, "", 1).as_deref(), Ok(""));
    // Two values on one line, a line that is not JSON, a cut record: refused.
    for bad in [
        "{} {}",
        "{}\n{\"id\": tru}\n",
        "{}\n{\"id\": 1",
        "{}\nnope\n",
    ] {
        assert!(mask_lines(&p, bad, 3).is_err(), "{bad:?}");
    }
}

/// A CSV body masked, fed in chunks of `step` bytes.
fn mask_csv(p: &FieldPlan, body: &str, step: usize) -> Result<String, String> {
    let mut c = super::csv::CsvMasker::new(tree::of(p), Some(key()));
    let mut out = Vec::new();
    for chunk in body.as_bytes().chunks(step.max(1)) {
        out.extend(c.feed(chunk)?);
    }
    out.extend(c.finish()?);
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// id, email (hidden by `mask`), note (visible), a numeric cost and
/// a flag (both redacted): top-level columns only.
fn csv_plan(mask: Mask, undeclared: Undeclared) -> FieldPlan {
    let typed = |name: &str, t: &str, m| FieldSpec {
        logical_type: Some(t.into()),
        ..spec(name, name, None, Shape::Leaf, m)
    };
    let fields = vec![
        spec("id", "id", None, Shape::Leaf, Mask::Omit),
        spec("email", "email", None, Shape::Leaf, mask),
        spec("note", "note", None, Shape::Leaf, Mask::Omit),
        typed("cost", "number", Mask::Redact),
        typed("vip", "boolean", Mask::Redact),
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
            hidden("cost", Mask::Redact),
            hidden("vip", Mask::Redact),
        ],
        visible: Vec::new(),
        verdicts: vec![None, Some(0), None, Some(1), Some(2)],
        shadow_hidden: None,
        shadow_differs: Vec::new(),
        specs: Arc::new(DatasetFields {
            dataset: "d".into(),
            fields,
        }),
        undeclared,
        errors: Vec::new(),
        trees: Default::default(),
    }
}

const CSV: &str = "\u{feff}id,email,note,cost,vip,extra\r\n1,a@b.example,\"x, \"\"quoted\"\"\n2nd line\",9.5,true,e\r\n2,\"c@d.example\",,0.25,false,\r\n";

#[test]
fn csv_masks_columns_by_the_header_in_any_chunking() {
    let p = csv_plan(Mask::Omit, Undeclared::Pass);
    let want = "\u{feff}id,note,cost,vip,extra\r\n1,\"x, \"\"quoted\"\"\n2nd line\",0,false,e\r\n2,,0,false,\r\n";
    for step in [1, 2, 5, 64, 4096] {
        assert_eq!(
            mask_csv(&p, CSV, step).as_deref(),
            Ok(want),
            "chunks of {step}"
        );
    }
    // Undeclared columns: removed under `omit`, refused under `refuse`.
    let omit = mask_csv(&csv_plan(Mask::Null, Undeclared::Omit), CSV, 7);
    let want = "\u{feff}id,email,note,cost,vip\r\n1,,\"x, \"\"quoted\"\"\n2nd line\",0,false\r\n2,,,0,false\r\n";
    assert_eq!(omit.as_deref(), Ok(want));
    assert!(mask_csv(&csv_plan(Mask::Null, Undeclared::Refuse), CSV, 7).is_err());
}

/// A byte-order mark starts the body, not the first cell: a quoted cell
/// may follow it (spreadsheets quote their headers so), the first column
/// is found by its name, and the mark is sent on even when that column is
/// dropped. Elsewhere the mark's bytes are a cell's text like any other.
#[test]
fn csv_byte_order_mark_is_no_part_of_the_first_cell() {
    let p = csv_plan(Mask::Omit, Undeclared::Omit);
    let body = "\u{feff}\"email\",\"id\"\r\na@b.example,1\r\n";
    for step in [1, 2, 3, 4, 64] {
        assert_eq!(
            mask_csv(&p, body, step).as_deref(),
            Ok("\u{feff}\"id\"\r\n1\r\n"),
            "chunks of {step}"
        );
    }
    // Begun like a mark but not one, or shorter than one: ordinary bytes.
    let p = csv_plan(Mask::Omit, Undeclared::Pass);
    for (body, step) in [
        (&b"\xEF\xBBx,id\n"[..], 1),
        (b"\xEF\xBB,id", 1),
        (b"\xEF,id", 4),
    ] {
        let mut c = super::csv::CsvMasker::new(tree::of(&p), Some(key()));
        let mut out = Vec::new();
        for chunk in body.chunks(step) {
            out.extend(c.feed(chunk).expect("fed"));
        }
        out.extend(c.finish().expect("finished"));
        assert_eq!(out, body, "{body:?}");
    }
    assert_eq!(
        mask_csv(&p, "id\n\u{feff}x\n", 1).as_deref(),
        Ok("id\n\u{feff}x\n")
    );
    // A mark after a blank line is a header cell's: no column the
    // contract declares, so not its CSV (see the next test).
    assert!(mask_csv(&p, "\n\u{feff}id\n1\n", 2).is_err());
}

/// On a response whose plan hides something, a header row that cannot be
/// the contract's columns is refused: a hidden column would otherwise pass
/// inside a column of another name.
#[test]
fn csv_whose_columns_are_not_the_contracts_is_refused() {
    let p = csv_plan(Mask::Omit, Undeclared::Pass);
    for bad in [
        "id;email\n1;a@b.example\n",
        "sep=;\nid;email\n1;a@b.example\n",
        "id\temail\n1\ta@b.example\n",
        "1,a@b.example\n2,c@d.example\n",
        "x,\u{feff}email\n1,a@b.example\n",
        "i\0d,y\n1,2\n",
    ] {
        for step in [1, 64] {
            assert!(
                mask_csv(&p, bad, step).is_err(),
                "{bad:?} in chunks of {step}"
            );
        }
    }
    // A header naming one declared column among undeclared ones passes.
    assert_eq!(
        mask_csv(&p, "other,email\nx,a@b.example\n", 3).as_deref(),
        Ok("other\nx\n")
    );
    // A plan that hides nothing takes any header.
    let open = csv_plan(Mask::Omit, Undeclared::Pass);
    let open = FieldPlan {
        hidden: Vec::new(),
        verdicts: vec![None; 5],
        specs: Arc::new(DatasetFields {
            dataset: "d".into(),
            fields: open
                .specs
                .fields
                .iter()
                .map(|f| FieldSpec {
                    mask: Mask::Omit,
                    ..f.clone()
                })
                .collect(),
        }),
        ..open
    };
    assert_eq!(
        mask_csv(&open, "a;b\n1;2\n", 2).as_deref(),
        Ok("a;b\n1;2\n")
    );
}

#[test]
fn csv_methods_make_the_same_values_as_in_json() {
    let body = "email,id\n+49 170 1234567,1\n\"a,b@c.example\",2";
    let cell = |m| {
        let out = mask_csv(&csv_plan(m, Undeclared::Pass), body, 3).expect("masked");
        out.lines().nth(1).map(str::to_string).unwrap_or_default()
    };
    assert_eq!(cell(Mask::Last4), "***********4567,1");
    assert_eq!(cell(Mask::Null), ",1");
    assert_eq!(cell(Mask::Redact), "***,1");
    let json = mask(
        &plan(Mask::Hash, Undeclared::Pass),
        r#"{"email":"+49 170 1234567"}"#,
        4,
    )
    .expect("masked");
    let hashed = cell(Mask::Hash);
    assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");
    assert!(
        json.contains(hashed.trim_end_matches(",1")),
        "{json} {hashed}"
    );
    // A made value with a comma is quoted; a date's year.
    let out = mask_csv(&csv_plan(Mask::Last4, Undeclared::Pass), "email\nab,cd", 1);
    assert_eq!(
        out,
        Err("a record with more cells than the header's 1".to_string())
    );
    let out = mask_csv(
        &csv_plan(Mask::Last4, Undeclared::Pass),
        "email\n\"ab,cd\"",
        1,
    );
    assert_eq!(out.as_deref(), Ok("email\n\"*b,cd\""));
    let dates = mask_csv(
        &csv_plan(Mask::Year, Undeclared::Pass),
        "email\n1987-06-05\nsoon\n",
        2,
    );
    assert_eq!(dates.as_deref(), Ok("email\n1987\n***\n"));
}

#[test]
fn csv_that_is_not_csv_is_refused() {
    let p = csv_plan(Mask::Omit, Undeclared::Pass);
    for bad in [
        "id,email\n1,a\"b\n",
        "id,email\n1,\"a\"b\n",
        "id,email\n1,a,extra\n",
        "id,email\n1\n",
        "id,email\r1,a\n",
        "id,email\n1,\"open",
    ] {
        assert!(mask_csv(&p, bad, 2).is_err(), "{bad:?}");
    }
    // A blank line is kept, a final record without a line break is whole.
    assert_eq!(mask_csv(&p, "id,email\n\n1,a", 1).as_deref(), Ok("id\n\n1"));
}

#[test]
fn the_format_is_read_from_the_content_type_whatever_its_case() {
    let of = |ctype: &str| {
        let head = http::Response::builder()
            .header(http::header::CONTENT_TYPE, ctype)
            .body(())
            .expect("head")
            .into_parts()
            .0;
        super::format(&head)
    };
    use super::Format::{Csv, Json, Lines};
    assert_eq!(of("application/json"), Ok(Json));
    assert_eq!(of("Application/JSON; charset=utf-8"), Ok(Json));
    assert_eq!(of("application/vnd.orders+JSON"), Ok(Json));
    assert_eq!(of("application/x-ndjson"), Ok(Lines));
    assert_eq!(of("APPLICATION/JSONL"), Ok(Lines));
    assert_eq!(of("text/csv; charset=utf-8"), Ok(Csv));
    assert_eq!(of("text/csv; header=present"), Ok(Csv));
    assert!(of("Text/CSV; Header = Absent").is_err());
    assert!(of("text/csv;charset=utf-8;\theader=absent\t").is_err());
    assert!(of("text/csv; header=\"absent\"").is_err());
    assert!(of("text/csv; header=\"ABS\\ent\"").is_err());
    assert_eq!(
        of("text/csv; header=\"present\"; charset=\"UTF-8\""),
        Ok(Csv)
    );
    assert_eq!(of("application/json;charset=us-ascii;;"), Ok(Json));
    for other in ["utf-16", "UTF-16LE", "utf-7", "iso-8859-1", "\"utf-16\""] {
        assert!(
            of(&format!("text/csv; charset={other}")).is_err(),
            "{other}"
        );
        assert!(
            of(&format!("application/json; charset={other}")).is_err(),
            "{other}"
        );
    }
    assert!(of("application/json; charset").is_err());
    // A type the stage does not read is another type, whatever its
    // parameters; parameters servers send unquoted are read.
    use super::NotRead::{OtherType, Unreadable};
    assert!(matches!(
        of("text/html; charset=iso-8859-1"),
        Err(OtherType(_))
    ));
    assert!(matches!(of("text/plain; x; y"), Err(OtherType(_))));
    assert!(matches!(
        of("application/json; charset=utf-16"),
        Err(Unreadable(_))
    ));
    assert_eq!(
        of("application/json; profile=https://a.example/p#v1"),
        Ok(Json)
    );
    assert_eq!(of("application/json;odata.metadata=minimal"), Ok(Json));
    assert_eq!(
        of("application/vnd.api+json; ext=\"https://a/b\""),
        Ok(Json)
    );
    // Never read past a parameter it cannot read.
    for bad in [
        "application/json; x; charset=utf-16",
        "application/json; charset=\"utf-8\"junk; charset=utf-7",
        "application/json; char set=utf-8",
        "application/json; charset=utf 8",
        "application/json; =utf-8",
    ] {
        assert!(of(bad).is_err(), "{bad}");
    }
    assert!(of("application/json; charset=\"utf-8").is_err());
    let two = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "text/csv")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .expect("head")
        .into_parts()
        .0;
    assert!(super::format(&two).is_err());
    assert_eq!(of(" text/csv\t;"), Ok(Csv));
    assert!(of("application/grpc+json").is_err());
    assert!(of("application/GRPC+json").is_err());
    assert!(of("text/plain").is_err());
    assert!(of("+json").is_err());
    assert!(of("application/").is_err());
    assert!(of("é").is_err());
}

/// A key or column that is no declared name byte for byte, but a hidden
/// one's written otherwise (case, spaces, separators), at whatever level
/// it hides: refused where undeclared members pass (and under `refuse`),
/// dropped under `omit`, in any chunking. A JSON escape is decoded before
/// names are matched; names that match no hidden one pass as undeclared.
#[test]
fn a_hidden_name_written_otherwise_is_refused_at_its_level() {
    for undeclared in [Undeclared::Pass, Undeclared::Omit, Undeclared::Refuse] {
        let p = plan(Mask::Hash, undeclared);
        for body in [
            r#"{"id":1,"Email":"a@b"}"#,
            r#"{"id":1," email":"a@b"}"#,
            r#"{"id":1,"e\u006dail ":"a@b"}"#,
            r#"{"id":1,"shipping":{"STREET":"x"}}"#,
            r#"{"Shipping":{"street":"x"}}"#,
            r#"[{"lines":[{"sku":"X","_cost":1}]}]"#,
        ] {
            for step in [1, 3, 4096] {
                let masked = mask(&p, body, step);
                if undeclared == Undeclared::Omit {
                    let out = masked.expect("omitted");
                    for leak in ["a@b", ":\"x\"", "_cost"] {
                        assert!(!out.contains(leak), "{body} {step}: {out}");
                    }
                } else {
                    assert!(masked.is_err(), "{undeclared:?} {body} {step}: {masked:?}");
                }
            }
        }
        let csv = csv_plan(Mask::Omit, undeclared);
        for body in [
            "id, email\n1, a@b\n",
            "id,EMAIL\n1,a@b\n",
            "id,\"e-mail\"\n1,a@b\n",
        ] {
            let masked = mask_csv(&csv, body, 2);
            if undeclared == Undeclared::Omit {
                let out = masked.expect("omitted");
                assert!(!out.contains("a@b"), "{body}: {out}");
            } else {
                assert!(masked.is_err(), "{undeclared:?} {body}");
            }
        }
    }
    let p = plan(Mask::Hash, Undeclared::Pass);
    let escaped = mask(&p, r#"{"e\u006dail":"a@b"}"#, 2).expect("masked");
    assert!(
        escaped.starts_with(r#"{"e\u006dail":"hmac-sha256:"#),
        "{escaped}"
    );
    // `ID` is the visible `id` written otherwise: an undeclared field.
    let body = r#"{"ID":1,"City":"K","emails":2}"#;
    assert_eq!(mask(&p, body, 2).as_deref(), Ok(body));
    // A plan that hides nothing at a level takes any name there.
    let open = FieldPlan {
        hidden: Vec::new(),
        verdicts: vec![None; 8],
        ..plan(Mask::Hash, Undeclared::Omit)
    };
    assert_eq!(mask(&open, r#"{"Email":1}"#, 1).as_deref(), Ok("{}"));
}
