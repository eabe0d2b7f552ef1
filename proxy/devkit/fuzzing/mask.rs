//! `mask_json`: the streaming JSON masker (`pipeline/mask/scan.rs`) against
//! a reference that parses the whole body into a tree first and masks the
//! tree (a differential check: nothing hidden may leave, nothing visible may
//! change, and a body that is not JSON must fail).
//!
//! Input: seven control bytes, then the body. Bytes 0–4: the masks of the
//! five hidden fields of the plan below (`Mask::ALL[b % 6]`); byte 5: bits
//! 0–1 `undeclared` (pass, omit, refuse, pass), bit 2 no hash key, bit 3 the
//! conformance checker on (its path skips the scanner's fast paths), bit 4
//! NDJSON (values one a line, the whitespace between them kept as sent);
//! byte 6: the chunk size the body is fed in (0: whole).
//!
//! The plan (`*` hidden):
//! `{a, *b, c: {d, *e, f: [{g, *h}]}, i: [{*j, k: {}}], *l}`, where `l` is
//! declared an object and `k` an object that declares nothing.
//!
//! Checked: the body fed in chunks and fed whole give the same bytes (or
//! both fail); a body the reference does not parse as one JSON value fails;
//! one it parses, the reference masks (or refuses: an undeclared member
//! under `refuse`, a hidden member's name written otherwise, a key that
//! does not decode at a declared level, a `hash` without a key), and the scanner's output, parsed the same way,
//! is exactly that tree: each key and scalar byte for byte as sent, each
//! hidden value as its method makes it.

use std::sync::Arc;

use aws_lc_rs::hmac;

use crate::decision::fields::tree::{self, Level, Rule};
use crate::decision::fields::{
    DatasetFields, FieldPlan, FieldSpec, Hidden, Mask, Mode, Shape, Undeclared,
};
use crate::model::conformance::Kinds;
use crate::pipeline::mask::conform::Checker;
use crate::pipeline::mask::csv::CsvMasker;
use crate::pipeline::mask::scan::{Scanner, MAX_DEPTH};

/// The control bytes before the body.
const HEAD: usize = 7;

/// What the control bytes choose, and the body.
pub(super) struct Setup<'a> {
    pub level: Arc<Level>,
    pub key: Option<Arc<hmac::Key>>,
    pub checking: bool,
    pub lines: bool,
    /// The chunk size the body is fed in besides whole (0: whole).
    pub step: usize,
    pub body: &'a [u8],
}

/// A streaming masker, JSON's or CSV's.
pub(super) trait Masker {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String>;
    fn finish(&mut self) -> Result<Vec<u8>, String>;
    /// The violations its conformance checker found (none without one).
    fn kinds(&self) -> Kinds;
}

impl Masker for Scanner {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        Scanner::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Vec<u8>, String> {
        Scanner::finish(self)
    }
    fn kinds(&self) -> Kinds {
        self.checker().map_or(Kinds::NONE, Checker::kinds)
    }
}

impl Masker for CsvMasker {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        CsvMasker::feed(self, chunk)
    }
    fn finish(&mut self) -> Result<Vec<u8>, String> {
        CsvMasker::finish(self)
    }
    fn kinds(&self) -> Kinds {
        self.checker().map_or(Kinds::NONE, Checker::kinds)
    }
}

impl Setup<'_> {
    pub fn read(data: &[u8]) -> Option<Setup<'_>> {
        let (head, body) = data.split_first_chunk::<HEAD>()?;
        let masks = [0, 1, 2, 3, 4].map(|i| Mask::ALL[usize::from(head[i]) % Mask::ALL.len()]);
        let undeclared = match head[5] & 3 {
            1 => Undeclared::Omit,
            2 => Undeclared::Refuse,
            _ => Undeclared::Pass,
        };
        let checking = head[5] & 8 != 0;
        let plan = plan(masks, undeclared);
        Some(Setup {
            level: if checking {
                tree::checked(&plan)
            } else {
                tree::of(&plan)
            },
            key: (head[5] & 4 == 0).then(|| Arc::new(hmac::Key::new(hmac::HMAC_SHA256, b"fuzz"))),
            checking,
            lines: head[5] & 16 != 0,
            step: usize::from(head[6]),
            body,
        })
    }

    /// The body masked whole by a masker `make` returns (with the
    /// conformance checker when chosen), after checking that it masks
    /// the same in chunks of `step` (or fails both ways).
    pub fn mask<M: Masker>(&self, make: impl Fn(Option<Checker>) -> M) -> Result<Vec<u8>, String> {
        let run = |step: usize| {
            let mut m = make(self.checking.then(|| Checker::quiet(Mode::Observe)));
            let mut out = Vec::new();
            let chunks = if step == 0 {
                self.body.len().max(1)
            } else {
                step
            };
            for chunk in self.body.chunks(chunks) {
                out.extend(m.feed(chunk)?);
            }
            out.extend(m.finish()?);
            Ok::<_, String>(out)
        };
        let (whole, chunked, step) = (run(0), run(self.step), self.step);
        match (&whole, &chunked) {
            (Ok(a), Ok(b)) => assert!(a == b, "fed in chunks of {step}, the output differs"),
            (Err(_), Err(_)) => {}
            _ => panic!("fed whole: {whole:?}; in chunks of {step}: {chunked:?}"),
        }
        whole
    }
}

pub fn mask_json(data: &[u8]) {
    let Some(setup) = Setup::read(data) else {
        return;
    };
    let (level, key, lines, body) = (&setup.level, &setup.key, setup.lines, setup.body);
    let whole = setup.mask(|checker| {
        let s = if lines {
            Scanner::lines(level.clone(), key.clone())
        } else {
            Scanner::new(level.clone(), key.clone())
        };
        match checker {
            Some(c) => s.checking(c),
            None => s,
        }
    });
    let parsed = if lines {
        parse_lines(body)
    } else {
        parse(body).map(|(n, d)| (vec![(Vec::new(), n)], Vec::new(), d))
    };
    let Ok((input, end, depth)) = parsed else {
        // Not JSON, or nested past the bound (the reference reads one
        // level beyond it): refused.
        assert!(whole.is_err(), "{parsed:?}, but masked: {whole:?}");
        return;
    };
    // At the bound, where either may be right.
    let edge = depth + 1 >= MAX_DEPTH;
    let expected = input
        .iter()
        .map(|(ws, n)| masked(n, level, key.as_deref()).map(|m| (ws.clone(), m)))
        .collect::<Result<Vec<_>, _>>();
    match (expected, whole) {
        (Ok(want), Ok(out)) => {
            let got = if lines {
                parse_lines(&out).map(|(n, end, _)| (n, end))
            } else {
                parse(&out).map(|(n, _)| (vec![(Vec::new(), n)], Vec::new()))
            };
            assert!(
                got.as_ref() == Ok(&(want, end)),
                "masked to {:?}, read as {got:?}",
                String::from_utf8_lossy(&out)
            );
        }
        (Err(why), Ok(out)) => panic!(
            "the reference refuses ({why}), the scanner sent {:?}",
            String::from_utf8_lossy(&out)
        ),
        (Ok(_), Err(e)) => assert!(edge, "the reference masks it, the scanner fails: {e}"),
        (Err(_), Err(_)) => {}
    }
}

pub(super) fn spec(name: &str, path: &str, parent: Option<usize>, shape: Shape) -> FieldSpec {
    FieldSpec {
        name: name.into(),
        path: path.into(),
        parent,
        classification: None,
        tags: Vec::new(),
        pii: false,
        logical_type: None,
        mask: Mask::Omit,
        shape,
        check: Default::default(),
    }
}

pub(super) fn plan(masks: [Mask; 5], undeclared: Undeclared) -> FieldPlan {
    let fields = vec![
        spec("a", "a", None, Shape::Leaf),
        spec("b", "b", None, Shape::Leaf),
        spec("c", "c", None, Shape::Object),
        spec("d", "c/d", Some(2), Shape::Leaf),
        spec("e", "c/e", Some(2), Shape::Leaf),
        spec("f", "c/f", Some(2), Shape::Array),
        spec("g", "c/f/g", Some(5), Shape::Leaf),
        spec("h", "c/f/h", Some(5), Shape::Leaf),
        spec("i", "i", None, Shape::Array),
        spec("j", "i/j", Some(8), Shape::Leaf),
        spec("k", "i/k", Some(8), Shape::Object),
        spec("l", "l", None, Shape::Object),
    ];
    let hidden_at = [1, 4, 7, 9, 11];
    let hide: Vec<(usize, Mask)> = hidden_at.into_iter().zip(masks).collect();
    plan_of(fields, &hide, undeclared)
}

/// A plan over `fields` that hides each `(field's index, mask)` of `hide`
/// (the policy `fuzz` deciding), with `undeclared` for undeclared members.
pub(super) fn plan_of(
    fields: Vec<FieldSpec>,
    hide: &[(usize, Mask)],
    undeclared: Undeclared,
) -> FieldPlan {
    let mut verdicts = vec![None; fields.len()];
    let mut hidden = Vec::new();
    for &(at, mask) in hide {
        verdicts[at] = Some(hidden.len());
        hidden.push(Hidden {
            path: Arc::from(fields[at].path.as_str()),
            mask,
            policies: vec!["fuzz".into()],
        });
    }
    FieldPlan {
        dataset: Arc::from("fuzz/d"),
        hidden,
        visible: Vec::new(),
        verdicts,
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

/// A JSON value with its keys and scalars as sent (quotes and escapes
/// included), objects with every member in order (duplicates too), and
/// containers with their text as sent (not compared: the scanner drops the
/// whitespace of the levels it writes).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Object(Vec<(Vec<u8>, Node)>, Sent),
    Array(Vec<Node>, Sent),
    Scalar(Vec<u8>),
}

/// A container's text as sent; every two are equal.
#[derive(Debug, Clone, Default)]
pub(super) struct Sent(Vec<u8>);

impl PartialEq for Sent {
    fn eq(&self, _: &Sent) -> bool {
        true
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Bad {
    Syntax,
    /// Nested deeper than the bound (how deep).
    Deep(usize),
}

/// One JSON value (RFC 8259; string bytes from 0x20 up taken as they are,
/// as the scanner takes them), and how deep its containers nest.
pub(super) fn parse(text: &[u8]) -> Result<(Node, usize), Bad> {
    let mut p = Parser {
        s: text,
        i: 0,
        deepest: 0,
    };
    p.ws();
    let node = p.value(0)?;
    p.ws();
    if p.i != text.len() {
        return Err(Bad::Syntax);
    }
    Ok((node, p.deepest))
}

/// NDJSON: values, each after the whitespace before it (a line break
/// between two values), and the whitespace after the last.
pub(super) type Lines = (Vec<(Vec<u8>, Node)>, Vec<u8>, usize);

pub(super) fn parse_lines(text: &[u8]) -> Result<Lines, Bad> {
    let mut p = Parser {
        s: text,
        i: 0,
        deepest: 0,
    };
    let mut values = Vec::new();
    loop {
        let at = p.i;
        p.ws();
        let ws = text[at..p.i].to_vec();
        if p.i == text.len() {
            return Ok((values, ws, p.deepest));
        }
        if !values.is_empty() && !ws.contains(&b'\n') {
            return Err(Bad::Syntax);
        }
        let node = p.value(0)?;
        values.push((ws, node));
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    deepest: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), Bad> {
        if self.peek() != Some(b) {
            return Err(Bad::Syntax);
        }
        self.i += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Node, Bad> {
        match self.peek().ok_or(Bad::Syntax)? {
            b'{' | b'[' if depth + 1 > MAX_DEPTH + 1 => Err(Bad::Deep(depth + 1)),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Node::Scalar),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    fn sent(&self, start: usize) -> Sent {
        Sent(self.s[start..self.i].to_vec())
    }

    fn object(&mut self, depth: usize) -> Result<Node, Bad> {
        self.deepest = self.deepest.max(depth);
        let start = self.i;
        self.i += 1;
        let mut members = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Node::Object(members, self.sent(start)));
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Node::Object(members, self.sent(start)));
                }
                _ => return Err(Bad::Syntax),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, Bad> {
        self.deepest = self.deepest.max(depth);
        let start = self.i;
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Node::Array(items, self.sent(start)));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Node::Array(items, self.sent(start)));
                }
                _ => return Err(Bad::Syntax),
            }
        }
    }

    /// A string, quotes included.
    fn string(&mut self) -> Result<Vec<u8>, Bad> {
        let start = self.i;
        self.eat(b'"')?;
        loop {
            match self.peek().ok_or(Bad::Syntax)? {
                b'"' => {
                    self.i += 1;
                    return Ok(self.s[start..self.i].to_vec());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek().ok_or(Bad::Syntax)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.s.get(self.i + 1..self.i + 5).ok_or(Bad::Syntax)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Bad::Syntax);
                            }
                            self.i += 5;
                        }
                        _ => return Err(Bad::Syntax),
                    }
                }
                0..=0x1f => return Err(Bad::Syntax),
                _ => self.i += 1,
            }
        }
    }

    fn word(&mut self, word: &[u8]) -> Result<Node, Bad> {
        if !self.s[self.i..].starts_with(word) {
            return Err(Bad::Syntax);
        }
        self.i += word.len();
        Ok(Node::Scalar(word.to_vec()))
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Node, Bad> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Bad::Syntax),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Ok(Node::Scalar(self.s[start..self.i].to_vec()))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Bad> {
        let at = self.i;
        self.digits();
        if self.i == at {
            return Err(Bad::Syntax);
        }
        Ok(())
    }
}

/// `node` masked at `level`, the way the scanner is documented to: a level
/// applies to an object, and to the objects in an array (at any depth);
/// scalars pass.
pub(super) fn masked(node: &Node, level: &Level, key: Option<&hmac::Key>) -> Result<Node, String> {
    match node {
        Node::Scalar(s) => Ok(Node::Scalar(s.clone())),
        Node::Array(items, sent) => Ok(Node::Array(
            items
                .iter()
                .map(|n| masked(n, level, key))
                .collect::<Result<_, _>>()?,
            sent.clone(),
        )),
        Node::Object(members, sent) => {
            let mut out = Vec::new();
            for (k, v) in members {
                let name = key_name(k).ok_or("a key that does not decode")?;
                let value = match level.rule(&name) {
                    Some(Rule::Show(_, Some(below))) => masked(v, below, key)?,
                    Some(Rule::Show(_, None)) => v.clone(),
                    Some(Rule::Hide(Mask::Omit)) => continue,
                    Some(Rule::Hide(mask)) => {
                        let made = hide(*mask, &text(v), key)?;
                        parse(&made).map_err(|_| "not JSON made".to_string())?.0
                    }
                    // A hidden member's name written otherwise (case,
                    // spaces, separators), where undeclared ones pass.
                    None if near_miss(level, &name) => {
                        return Err("a hidden name written otherwise".into())
                    }
                    None => match level.undeclared {
                        Some(Undeclared::Omit) => continue,
                        Some(Undeclared::Refuse) => return Err("an undeclared member".into()),
                        Some(Undeclared::Pass) | None => v.clone(),
                    },
                };
                out.push((k.clone(), value));
            }
            Ok(Node::Object(out, sent.clone()))
        }
    }
}

/// A value's JSON text as sent.
pub(super) fn text(node: &Node) -> Vec<u8> {
    match node {
        Node::Scalar(s) => s.clone(),
        Node::Array(_, sent) | Node::Object(_, sent) => sent.0.clone(),
    }
}

/// A key's name as a level names its members: its text, decoded when it
/// holds an escape (`None`: it does not decode).
pub(super) fn key_name(quoted: &[u8]) -> Option<Vec<u8>> {
    let inner = &quoted[1..quoted.len() - 1];
    if inner.contains(&b'\\') {
        serde_json::from_slice::<String>(quoted)
            .ok()
            .map(String::into_bytes)
    } else {
        Some(inner.to_vec())
    }
}

/// A string value's text: its bytes when it holds no escape and they are
/// UTF-8, else decoded (`None`: another type, or it does not decode).
fn string_text(raw: &[u8]) -> Option<String> {
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') {
        return String::from_utf8(inner.to_vec()).ok();
    }
    serde_json::from_slice::<String>(raw).ok()
}

/// What a hidden value (`raw`: its JSON text) becomes under `mask`, as
/// the README says each method works.
fn hide(mask: Mask, raw: &[u8], key: Option<&hmac::Key>) -> Result<Vec<u8>, String> {
    let first = raw.first().copied().unwrap_or(b'n');
    let placeholder: &[u8] = match first {
        b'"' => b"\"***\"",
        b'{' => b"{}",
        b'[' => b"[]",
        b't' | b'f' => b"false",
        b'n' => b"null",
        _ => b"0",
    };
    let json = |s: &str| serde_json::to_vec(s).map_err(|e| e.to_string());
    Ok(match mask {
        Mask::Omit | Mask::Null => b"null".to_vec(),
        Mask::Redact => placeholder.to_vec(),
        Mask::Hash => {
            let key = key.ok_or("no hash key")?;
            let text = string_text(raw);
            let tag = hmac::sign(key, text.as_deref().map_or(raw, str::as_bytes));
            json(&format!("hmac-sha256:{}", hex(tag.as_ref())))?
        }
        Mask::Last4 => match string_text(raw) {
            Some(t) => json(&last4(&t))?,
            None if matches!(first, b'-' | b'0'..=b'9') => {
                json(&last4(&String::from_utf8_lossy(raw)))?
            }
            None => placeholder.to_vec(),
        },
        Mask::Year => match string_text(raw).as_deref().and_then(year) {
            Some(y) => json(y)?,
            None => placeholder.to_vec(),
        },
    })
}

/// Lower-case hex.
/// The reference's near-miss rule: where undeclared members pass, a key
/// that is any hiding member's name written otherwise, compared with each
/// name in full (the masker looks names up by hash: `loose::Names::has`).
pub(super) fn near_miss(level: &Level, name: &[u8]) -> bool {
    crate::decision::fields::passes(level.undeclared)
        && level
            .hiding_forms()
            .any(|form| crate::decision::fields::loose::same(name, form))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The year of a date or timestamp: `YYYY`, `YYYY-MM`, or `YYYY-MM-DD`
/// alone or before `T`/`t`/space/a zone and anything.
pub(super) fn year(text: &str) -> Option<&str> {
    let number = |s: &str, len: usize, range: std::ops::RangeInclusive<u32>| {
        s.len() == len
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u32>().is_ok_and(|n| range.contains(&n))
    };
    // A time or a zone may follow a whole date.
    let date = match text.get(10..11) {
        Some("T" | "t" | " " | "Z" | "z" | "+" | "-") => &text[..10],
        Some(_) => return None,
        None if text.len() > 10 => return None,
        None => text,
    };
    let parts: Vec<&str> = date.split('-').collect();
    let ok = match parts[..] {
        [y] => number(y, 4, 0..=9999),
        [y, m] => number(y, 4, 0..=9999) && number(m, 2, 1..=12),
        [y, m, d] => number(y, 4, 0..=9999) && number(m, 2, 1..=12) && number(d, 2, 1..=31),
        _ => false,
    };
    ok.then(|| &text[..4])
}

/// Every character but the last four as `*` (all when four or fewer).
pub(super) fn last4(text: &str) -> String {
    let n = text.chars().count();
    let hidden = if n > 4 { n - 4 } else { n };
    text.chars()
        .enumerate()
        .map(|(i, c)| if i < hidden { '*' } else { c })
        .collect()
}
