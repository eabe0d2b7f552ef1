//! The streaming JSON scanner that applies a field plan: it validates the
//! body as it goes (any byte that is not JSON fails it), copies what is
//! visible as it was sent (byte for byte: numbers are not re-formatted,
//! escapes not re-encoded) and replaces or drops what is hidden. Nothing is
//! parsed into a tree: it holds the stack of open containers, the key being
//! read at a declared level, and a hidden value that a method needs whole
//! (`hash`, `last4`, `year`; at most `CAPTURE_LIMIT` bytes).
//!
//! Inside a declared level (the record, a declared object, the objects of
//! a declared array) the scanner writes the structure itself (`{`, `,`,
//! `:`, `}`) and drops the whitespace between members, so that a removed
//! member leaves no dangling comma; below a visible member that declares
//! nothing, every byte is copied as it is.
//!
//! A declared level applies to whatever container comes where it is
//! expected, whatever the contract says its shape is: an object is the
//! level itself, an array (or an array of arrays) has it on its objects. So
//! a member declared an object that arrives as an array of objects, or
//! records nested in arrays, are masked all the same (fail closed: an
//! upstream that changes its shape cannot unhide a field). Scalars carry no
//! fields and pass. Containers nest at most [`MAX_DEPTH`] deep.

use std::sync::Arc;

use aws_lc_rs::hmac;

use super::conform::Checker;
use super::member::{member_of, Member};
use super::methods;
use super::run;
use super::tree::{Level, Rule, NO_CHECK};
use crate::decision::fields::Mask;
use crate::model::conformance::Kind;

/// The longest hidden value a method reads whole.
pub const CAPTURE_LIMIT: usize = 1 << 20;

/// The deepest nesting of containers a body may have (each open one holds
/// a frame: a body of nothing but `[` would otherwise grow it unbounded).
pub const MAX_DEPTH: usize = 512;

/// Where the bytes of the current token go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Copy,
    Skip,
    Capture,
    /// A key at a declared level, held until it is whole.
    Key,
    /// Copied, and held for a conformance check.
    CopyCheck,
    /// Held for a conformance check only (a hidden value).
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Object: a key or `}`; array: a value or `]`.
    First,
    /// After a comma (object: a key; array: a value).
    Next,
    Colon,
    Value,
    CommaOrEnd,
}

#[derive(Debug)]
struct Frame {
    object: bool,
    /// A declared level (its own object, or its array's objects).
    level: Option<Arc<Level>>,
    mode: Mode,
    state: State,
    /// Whether a member or item has been written (declared levels).
    any: bool,
    member: Member,
    /// Conformance: the current member's check (`tree::NO_CHECK`: none),
    /// and the required members seen (bits of `LevelChecks::required`).
    cur: u16,
    seen: u64,
    /// Where in its level's order the next member is looked for first.
    hint: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Between,
    Str { key: bool, escape: u8 },
    Num(Num),
    Lit { word: &'static [u8], at: usize },
}

/// One response body's scan.
pub struct Scanner {
    root: Arc<Level>,
    key: Option<Arc<hmac::Key>>,
    stack: Vec<Frame>,
    lex: Lex,
    /// Where the current scalar's bytes go.
    mode: Mode,
    out: Vec<u8>,
    capture: Vec<u8>,
    keybuf: Vec<u8>,
    started: bool,
    done: bool,
    /// NDJSON / JSON Lines: a value per line, each a record (or an array
    /// of them), instead of one value.
    lines: bool,
    /// A line break since the last whole value (`lines` only).
    broke: bool,
    /// Contract conformance, on a sampled response (`conform.rs`).
    check: Option<Box<Checker>>,
    /// A scalar's text is held for its member's check.
    pending_check: bool,
}

type Failed = String;

impl Scanner {
    pub fn new(root: Arc<Level>, key: Option<Arc<hmac::Key>>) -> Scanner {
        Scanner {
            root,
            key,
            stack: Vec::new(),
            lex: Lex::Between,
            mode: Mode::Copy,
            out: Vec::new(),
            capture: Vec::new(),
            keybuf: Vec::new(),
            started: false,
            done: false,
            lines: false,
            broke: false,
            check: None,
            pending_check: false,
        }
    }

    /// This scanner, checking the body against the contract as well (the
    /// tree must be `tree::checked`).
    pub fn checking(mut self, checker: Checker) -> Scanner {
        self.check = Some(Box::new(checker));
        self
    }

    pub fn checker(&self) -> Option<&Checker> {
        self.check.as_deref()
    }

    pub fn checker_mut(&mut self) -> Option<&mut Checker> {
        self.check.as_deref_mut()
    }

    /// A scanner of NDJSON (JSON Lines): values one a line, the line
    /// breaks and blank lines kept as they were sent.
    pub fn lines(root: Arc<Level>, key: Option<Arc<hmac::Key>>) -> Scanner {
        Scanner {
            lines: true,
            ..Scanner::new(root, key)
        }
    }

    /// Scans one chunk; what may be sent now.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Failed> {
        // Room for pseudonyms (78 bytes quoted) longer than what they replace.
        self.out.reserve(chunk.len() + chunk.len() / 8 + 256);
        let mut i = 0;
        while i < chunk.len() {
            i = self.step(chunk, i)?;
        }
        Ok(std::mem::take(&mut self.out))
    }

    /// The body has ended: the rest, or why it is not a whole JSON value.
    pub fn finish(&mut self) -> Result<Vec<u8>, Failed> {
        if let Lex::Num(n) = self.lex {
            if self.stack.is_empty() && matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp) {
                self.lex = Lex::Between;
                self.value_done()?;
            }
        }
        let whole = if self.lines {
            self.stack.is_empty() && self.lex == Lex::Between
        } else {
            self.done
        };
        if !whole {
            return Err("the body ended before its JSON value did".into());
        }
        if let Some(c) = self.check.as_deref_mut() {
            c.settle();
        }
        Ok(std::mem::take(&mut self.out))
    }

    /// `bytes` of the current token to where `mode` says.
    #[inline]
    fn emit(&mut self, mode: Mode, bytes: &[u8]) -> Result<(), Failed> {
        match mode {
            Mode::Copy => {
                self.out.extend_from_slice(bytes);
                Ok(())
            }
            Mode::Skip => Ok(()),
            _ => self.hold(mode, bytes),
        }
    }

    /// `bytes` held (a key, a hidden value a method reads, a checked one).
    fn hold(&mut self, mode: Mode, bytes: &[u8]) -> Result<(), Failed> {
        match mode {
            // Not held: `emit` writes or drops them.
            Mode::Copy | Mode::Skip => return self.emit(mode, bytes),
            Mode::Capture => {
                if self.capture.len() + bytes.len() > CAPTURE_LIMIT {
                    return Err(format!(
                        "a hidden value is longer than {CAPTURE_LIMIT} bytes"
                    ));
                }
                self.capture.extend_from_slice(bytes);
            }
            Mode::Key => {
                if self.keybuf.len() + bytes.len() > CAPTURE_LIMIT {
                    return Err("a key is too long".into());
                }
                self.keybuf.extend_from_slice(bytes);
            }
            Mode::CopyCheck => {
                self.out.extend_from_slice(bytes);
                if let Some(c) = self.check.as_deref_mut() {
                    c.take_text(bytes);
                }
            }
            Mode::Check => {
                if let Some(c) = self.check.as_deref_mut() {
                    c.take_text(bytes);
                }
            }
        }
        Ok(())
    }

    /// Scans from `chunk[i]`; returns where to go on.
    fn step(&mut self, chunk: &[u8], i: usize) -> Result<usize, Failed> {
        let b = chunk[i];
        if matches!(b, b',' | b'"') && self.lex == Lex::Between && self.check.is_none() {
            let at = self.plain_members(chunk, i);
            if at > i {
                return Ok(at);
            }
        }
        match self.lex {
            Lex::Str { key, escape } => self.string(chunk, i, key, escape),
            Lex::Num(n) => {
                // The run of bytes that may be a number's, validated as read.
                let rest = &chunk[i..];
                let run = run::json_number(rest);
                let mut n = n;
                let mut k = 0;
                while let Some(next) = rest[..run].get(k).and_then(|&b| number(n, b)) {
                    n = next;
                    k += 1;
                }
                self.emit(self.mode, &rest[..k])?;
                self.lex = Lex::Num(n);
                let Some(&after) = rest.get(k) else {
                    return Ok(chunk.len());
                };
                if matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp) {
                    // The byte after a number is read again as structure.
                    self.lex = Lex::Between;
                    self.value_done()?;
                    Ok(i + k)
                } else {
                    Err(format!("a malformed number (at `{}`)", after as char))
                }
            }
            Lex::Lit { word, at } => {
                if word.get(at) != Some(&b) {
                    return Err("a malformed literal".into());
                }
                self.emit(self.mode, &[b])?;
                if at + 1 == word.len() {
                    self.lex = Lex::Between;
                    self.value_done()?;
                } else {
                    self.lex = Lex::Lit { word, at: at + 1 };
                }
                Ok(i + 1)
            }
            Lex::Between if matches!(b, b' ' | b'\t' | b'\n' | b'\r') => {
                let run = run::json_space(&chunk[i..]);
                self.space(&chunk[i..i + run])?;
                Ok(i + run)
            }
            Lex::Between if b == b'"' && self.expects_declared_key() => {
                // A key at a declared level, whole in this chunk and without
                // escapes (most are): read in place instead of held.
                let Some(at) = plain_string(chunk, i) else {
                    self.structure(b)?;
                    return Ok(i + 1);
                };
                self.key(&chunk[i..at], false)?;
                // Compact JSON: the colon right after it.
                if chunk.get(at) == Some(&b':') {
                    if let Some(top) = self.stack.last_mut() {
                        top.state = State::Value;
                        return Ok(at + 1);
                    }
                }
                Ok(at)
            }
            Lex::Between if b == b'"' && self.copies_declared_value() => {
                // A visible string of a declared member, whole in this chunk
                // and without escapes: copied as one slice.
                let Some(at) = plain_string(chunk, i) else {
                    self.structure(b)?;
                    return Ok(i + 1);
                };
                self.out.extend_from_slice(&chunk[i..at]);
                self.value_done()?;
                Ok(at)
            }
            Lex::Between => {
                self.structure(b)?;
                Ok(i + 1)
            }
        }
    }

    /// The members of a declared object from `chunk[i]` (its comma, or the
    /// key after one) that hold a scalar and come whole and compact in this
    /// chunk (most members of most records), taken as stretches of the
    /// chunk instead of token by token: visible ones are checked and copied
    /// together as one slice; a hidden one is written as its method says
    /// (its key and the replacement, or nothing when it is left out),
    /// straight from the chunk. Stops before the first member it cannot
    /// take so (one that opens a container or holds an escape or
    /// whitespace, one cut by the chunk's end, one with a declared level
    /// below it, an undeclared one the product refuses, a hidden value
    /// longer than `CAPTURE_LIMIT`, a `hash` without a key), which the
    /// token path then reads (and refuses where it must); returns where it
    /// stopped (`i`: it took none). Not used while checking conformance.
    fn plain_members(&mut self, chunk: &[u8], mut i: usize) -> usize {
        let Scanner {
            stack, out, key, ..
        } = self;
        let Some(top) = stack.last_mut() else {
            return i;
        };
        if !top.object {
            return i;
        }
        let Some(level) = top.level.take() else {
            return i;
        };
        // `chunk[from..i]` is owed to the output.
        let mut from = i;
        loop {
            // The comma the chunk has before the key, if it has one here.
            let comma = match top.state {
                State::CommaOrEnd if chunk.get(i) == Some(&b',') => true,
                State::First | State::Next => false,
                _ => break,
            };
            let k = i + usize::from(comma);
            if chunk.get(k) != Some(&b'"') {
                break;
            }
            let Some(colon) = plain_string(chunk, k) else {
                break;
            };
            if chunk.get(colon) != Some(&b':') {
                break;
            }
            let name = &chunk[k + 1..colon - 1];
            let (rule, hint) = level.rule_from(name, top.hint);
            // (A member with a level below goes to the token path before
            // its level's `Arc` would be cloned for nothing.)
            if matches!(rule, Some(Rule::Show(_, Some(_)))) {
                break;
            }
            let Ok(member) = member_of(&level, rule, name) else {
                break;
            };
            let Some(end) = scalar_end(chunk, colon + 1) else {
                break;
            };
            let value = &chunk[colon + 1..end];
            match member {
                // The output's comma: kept when a member was written
                // before, dropped after members that were all left out,
                // written after a comma the token path has read.
                Member::Copy => {
                    match (comma, top.any) {
                        (true, false) => {
                            out.extend_from_slice(&chunk[from..i]);
                            from = k;
                        }
                        (false, true) => {
                            out.extend_from_slice(&chunk[from..i]);
                            out.push(b',');
                            from = k;
                        }
                        _ => {}
                    }
                    top.any = true;
                }
                // Left out, with the comma before it.
                Member::Skip => {
                    out.extend_from_slice(&chunk[from..i]);
                    from = end;
                }
                Member::Null | Member::Redact | Member::Capture(_) => {
                    let mask = match member {
                        Member::Null => Mask::Null,
                        Member::Capture(m) => m,
                        _ => Mask::Redact,
                    };
                    if value.len() > CAPTURE_LIMIT {
                        break;
                    }
                    out.extend_from_slice(&chunk[from..i]);
                    from = i;
                    let mark = out.len();
                    if top.any {
                        out.push(b',');
                    }
                    out.extend_from_slice(&chunk[k..=colon]);
                    // (`None`: no key to `hash` with; the token path says so.)
                    if methods::replace(mask, value, true, key.as_deref(), out).is_none() {
                        out.truncate(mark);
                        break;
                    }
                    top.any = true;
                    from = end;
                }
                // (Not reached: a member with a level below stopped the
                // stretch before `member_of`.)
                Member::Into(_) => break,
            }
            top.state = State::CommaOrEnd;
            top.hint = hint;
            top.member = Member::Copy;
            i = end;
        }
        out.extend_from_slice(&chunk[from..i]);
        top.level = Some(level);
        i
    }

    /// Whether the value of a visible member of a declared object comes
    /// next, copied as it is (and not checked against the contract).
    fn copies_declared_value(&self) -> bool {
        self.check.is_none()
            && self.stack.last().is_some_and(|top| {
                top.object
                    && top.level.is_some()
                    && top.state == State::Value
                    && matches!(top.member, Member::Copy)
            })
    }

    /// Whether a key of a declared object comes next.
    fn expects_declared_key(&self) -> bool {
        self.stack.last().is_some_and(|top| {
            top.object && top.level.is_some() && matches!(top.state, State::First | State::Next)
        })
    }

    /// Whitespace between tokens: dropped at a declared level (which
    /// writes its own structure), copied elsewhere; between NDJSON's
    /// values, kept, a line break noted.
    fn space(&mut self, ws: &[u8]) -> Result<(), Failed> {
        match self.stack.last() {
            None => {
                if self.lines {
                    self.broke |= ws.contains(&b'\n');
                    self.out.extend_from_slice(ws);
                }
                Ok(())
            }
            Some(top) if top.level.is_some() => Ok(()),
            Some(top) => self.emit(top.mode, ws),
        }
    }

    /// Inside a string: a run of plain bytes at once, then the byte that
    /// ends it (quote, backslash, or a control character, which JSON forbids).
    fn string(&mut self, chunk: &[u8], i: usize, key: bool, escape: u8) -> Result<usize, Failed> {
        let mode = self.mode;
        if escape == 1 {
            let b = chunk[i];
            self.lex = match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    Lex::Str { key, escape: 0 }
                }
                b'u' => Lex::Str { key, escape: 2 },
                _ => return Err("a malformed escape in a string".into()),
            };
            self.emit(mode, &[b])?;
            return Ok(i + 1);
        }
        if escape >= 2 {
            let b = chunk[i];
            if !b.is_ascii_hexdigit() {
                return Err("a malformed \\u escape in a string".into());
            }
            self.lex = Lex::Str {
                key,
                escape: if escape == 5 { 0 } else { escape + 1 },
            };
            self.emit(mode, &[b])?;
            return Ok(i + 1);
        }
        let rest = &chunk[i..];
        let run = run::json_text(rest);
        let Some(&b) = rest.get(run) else {
            self.emit(mode, rest)?;
            return Ok(chunk.len());
        };
        // The run and the byte that ends it go to the same place.
        self.emit(mode, &rest[..=run])?;
        match b {
            b'\\' => self.lex = Lex::Str { key, escape: 1 },
            b'"' => {
                self.lex = Lex::Between;
                if key {
                    self.key_done()?;
                } else {
                    self.value_done()?;
                }
            }
            _ => return Err("a control character in a string".into()),
        }
        Ok(i + run + 1)
    }

    /// A byte between tokens, other than whitespace.
    fn structure(&mut self, b: u8) -> Result<(), Failed> {
        let Some(top) = self.stack.last_mut() else {
            return self.between_values(b);
        };
        let managed = top.level.is_some();
        let mode = top.mode;
        match (top.object, top.state, b) {
            (true, State::First | State::CommaOrEnd, b'}')
            | (false, State::First | State::CommaOrEnd, b']') => self.close(b),
            (true, State::First | State::Next, b'"') => {
                if managed {
                    self.keybuf.clear();
                    self.mode = Mode::Key;
                } else {
                    self.mode = mode;
                }
                self.lex = Lex::Str {
                    key: true,
                    escape: 0,
                };
                self.emit(self.mode, b"\"")
            }
            (true, State::Colon, b':') => {
                top.state = State::Value;
                if managed {
                    Ok(())
                } else {
                    self.emit(mode, b":")
                }
            }
            (true, State::CommaOrEnd, b',') | (false, State::CommaOrEnd, b',') => {
                top.state = State::Next;
                if managed {
                    Ok(())
                } else {
                    self.emit(mode, b",")
                }
            }
            (true, State::Value, _) | (false, State::First | State::Next, _) => self.start_value(b),
            _ => Err(format!("unexpected `{}`", b as char)),
        }
    }

    /// A byte outside any value, other than whitespace: the start of the
    /// (next) value. JSON has one value; NDJSON one per line.
    fn between_values(&mut self, b: u8) -> Result<(), Failed> {
        if self.lines {
            if self.done && !self.broke {
                return Err("two JSON values on one line".into());
            }
            self.done = false;
            self.broke = false;
        } else if self.done || self.started {
            return Err("more after the JSON value".into());
        }
        self.started = true;
        self.start_value(b)
    }

    /// A whole key at a declared level: what its member gets.
    fn key_done(&mut self) -> Result<(), Failed> {
        let held = std::mem::take(&mut self.keybuf);
        let done = self.key(&held, true);
        self.keybuf = held;
        done
    }

    /// A whole key (`quoted`: as sent, quotes and all): what its member
    /// gets.
    fn key(&mut self, quoted: &[u8], escaped: bool) -> Result<(), Failed> {
        let Some(top) = self.stack.last_mut() else {
            return Err("a key outside an object".into());
        };
        // The level is taken out of its frame while the key is read, and
        // put back (not an `Arc` cloned and dropped per key).
        let Some(level) = top.level.take() else {
            top.state = State::Colon;
            return Ok(());
        };
        let hint = top.hint;
        let done = self.declared_key(&level, quoted, escaped, hint);
        if let Some(top) = self.stack.last_mut() {
            top.level = Some(level);
        }
        done
    }

    /// A whole key of a declared object at `level` (`escaped`: it may hold
    /// an escape); `hint`: where the level's order is tried first.
    fn declared_key(
        &mut self,
        level: &Level,
        quoted: &[u8],
        escaped: bool,
        hint: usize,
    ) -> Result<(), Failed> {
        let raw = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        let decoded;
        let name: &[u8] = if escaped && raw.contains(&b'\\') {
            decoded = serde_json::from_slice::<String>(quoted)
                .map_err(|_| "a malformed key".to_string())?;
            decoded.as_bytes()
        } else {
            raw
        };
        // Conformance: the member's check, or an undeclared member.
        let check = match (&self.check, level.checks.as_deref()) {
            (Some(_), Some(c)) => Some(c.members.get(name).copied()),
            _ => None,
        };
        if let (Some(None), Some(c)) = (check, self.check.as_deref_mut()) {
            c.violation(Kind::Undeclared)?;
        }
        let (rule, hint) = level.rule_from(name, hint);
        let member = member_of(level, rule, name).map_err(|why| why.reason(name))?;
        let kept = !matches!(member, Member::Skip);
        let Some(top) = self.stack.last_mut() else {
            return Err("a key outside an object".into());
        };
        top.state = State::Colon;
        top.member = member;
        top.hint = hint;
        if let Some(found) = check {
            top.cur = found.unwrap_or(NO_CHECK);
            let bit = found
                .and_then(|i| level.checks.as_deref()?.list.get(usize::from(i)))
                .map_or(0, |(_, bit)| *bit);
            top.seen |= bit;
        }
        if kept {
            if top.any {
                self.out.push(b',');
            }
            top.any = true;
            self.out.extend_from_slice(quoted);
            self.out.push(b':');
        }
        Ok(())
    }

    /// The first byte of a value: where its bytes go, and its frame or token.
    fn start_value(&mut self, b: u8) -> Result<(), Failed> {
        // (mode of the value, its declared level if it opens one)
        let (mode, level): (Mode, Option<Arc<Level>>) = match self.stack.last_mut() {
            None => (Mode::Copy, Some(self.root.clone())),
            Some(top) if top.level.is_none() => (top.mode, None),
            Some(top) if !top.object => {
                if top.any {
                    self.out.push(b',');
                }
                top.any = true;
                // Records (or arrays of them) in a declared array.
                (Mode::Copy, top.level.clone())
            }
            Some(top) => match top.member.clone() {
                Member::Copy => (Mode::Copy, None),
                Member::Skip => (Mode::Skip, None),
                Member::Null => {
                    self.out.extend_from_slice(b"null");
                    (Mode::Skip, None)
                }
                Member::Redact => {
                    self.out.extend_from_slice(methods::placeholder(b));
                    (Mode::Skip, None)
                }
                Member::Capture(_) => {
                    self.capture.clear();
                    (Mode::Capture, None)
                }
                // The level below, on whichever container comes.
                Member::Into(below) => (Mode::Copy, Some(below)),
            },
        };
        let mode = match self.check {
            Some(_) => self.check_start(b, mode)?,
            None => mode,
        };
        // A root that is no object or array has no fields: copied.
        let level = level.filter(|_| matches!(b, b'{' | b'['));
        match b {
            b'{' | b'[' => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(format!("containers nested deeper than {MAX_DEPTH}"));
                }
                let managed = level.is_some();
                self.stack.push(Frame {
                    object: b == b'{',
                    level,
                    mode,
                    state: State::First,
                    any: false,
                    member: Member::Copy,
                    cur: NO_CHECK,
                    seen: 0,
                    hint: 0,
                });
                if managed {
                    self.out.push(b);
                    Ok(())
                } else {
                    self.emit(mode, &[b])
                }
            }
            _ => {
                self.mode = mode;
                self.lex = match b {
                    b'"' => Lex::Str {
                        key: false,
                        escape: 0,
                    },
                    b'-' => Lex::Num(Num::Minus),
                    b'0' => Lex::Num(Num::Zero),
                    b'1'..=b'9' => Lex::Num(Num::Int),
                    b't' => Lex::Lit {
                        word: b"true",
                        at: 1,
                    },
                    b'f' => Lex::Lit {
                        word: b"false",
                        at: 1,
                    },
                    b'n' => Lex::Lit {
                        word: b"null",
                        at: 1,
                    },
                    _ => return Err(format!("unexpected `{}`", b as char)),
                };
                self.emit(mode, &[b])
            }
        }
    }

    /// `}` or `]` closing the top frame.
    fn close(&mut self, b: u8) -> Result<(), Failed> {
        let Some(frame) = self.stack.pop() else {
            return Err("a close outside a container".into());
        };
        if frame.level.is_some() {
            self.out.push(b);
        } else {
            self.emit(frame.mode, &[b])?;
        }
        if self.check.is_some() {
            self.check_close(&frame)?;
        }
        self.value_done()
    }

    /// A value has ended: its member's method, if it was held whole.
    fn value_done(&mut self) -> Result<(), Failed> {
        let Some(top) = self.stack.last_mut() else {
            self.done = true;
            return Ok(());
        };
        top.state = State::CommaOrEnd;
        if self.pending_check {
            self.pending_check = false;
            self.check_value()?;
        }
        let Some(top) = self.stack.last_mut() else {
            return Ok(());
        };
        if top.level.is_some() && top.object {
            if let Member::Capture(m) = top.member {
                let key = self.key.as_deref();
                methods::replace(m, &self.capture, false, key, &mut self.out)
                    .ok_or_else(|| format!("no hash key for a `{m}` field"))?;
                self.capture.clear();
            }
        }
        Ok(())
    }
}

/// Where the string that opens at `chunk[i]` (a quote) ends, past its
/// closing quote, when it ends in this chunk without an escape (or a
/// control character); `None` otherwise (it is read token by token).
fn plain_string(chunk: &[u8], i: usize) -> Option<usize> {
    let rest = chunk.get(i + 1..)?;
    let run = run::json_text(rest);
    (rest.get(run) == Some(&b'"')).then_some(i + run + 2)
}

/// Where the scalar that starts at `chunk[v]` ends, when it is whole in
/// this chunk: a string without escapes, a number followed by another byte
/// (it could go on in the next chunk otherwise), a literal. `None` for
/// anything else, malformed values included (the token path reads them).
fn scalar_end(chunk: &[u8], v: usize) -> Option<usize> {
    let rest = chunk.get(v..)?;
    let first = *rest.first()?;
    let start = match first {
        b'"' => return plain_string(chunk, v),
        b't' => return rest.starts_with(b"true").then_some(v + 4),
        b'f' => return rest.starts_with(b"false").then_some(v + 5),
        b'n' => return rest.starts_with(b"null").then_some(v + 4),
        b'-' => Num::Minus,
        b'0' => Num::Zero,
        b'1'..=b'9' => Num::Int,
        _ => return None,
    };
    let run = run::json_number(&rest[1..]);
    // The byte after the number must be here, and the number whole.
    rest.get(1 + run)?;
    let n = rest[1..1 + run]
        .iter()
        .try_fold(start, |n, &b| number(n, b))?;
    matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp).then_some(v + 1 + run)
}

/// The number's state after `b`, or `None` where `b` cannot follow.
fn number(n: Num, b: u8) -> Option<Num> {
    match (n, b) {
        (Num::Minus, b'0') => Some(Num::Zero),
        (Num::Minus, b'1'..=b'9') => Some(Num::Int),
        (Num::Int, b'0'..=b'9') => Some(Num::Int),
        (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
        (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::E),
        (Num::E, b'+' | b'-') => Some(Num::ESign),
        (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Some(Num::Exp),
        _ => None,
    }
}

// === conformance (a sampled response: `conform.rs`) ===

impl Scanner {
    /// The first byte of a value, against what is expected where it comes:
    /// a record in the root or a declared array, or a declared member's
    /// value. Returns the value's mode, made to hold its text when its
    /// check needs it.
    fn check_start(&mut self, b: u8, mode: Mode) -> Result<Mode, Failed> {
        let Some(checker) = self.check.as_deref_mut() else {
            return Ok(mode);
        };
        let record = |b: u8| matches!(b, b'{' | b'[');
        let Some(top) = self.stack.last() else {
            if !record(b) {
                checker.violation(Kind::Type)?;
            }
            return Ok(mode);
        };
        let Some(level) = &top.level else {
            return Ok(mode);
        };
        if !top.object {
            if !record(b) {
                checker.violation(Kind::Type)?;
            }
            return Ok(mode);
        }
        let found = level
            .checks
            .as_deref()
            .and_then(|c| c.list.get(usize::from(top.cur)));
        let Some((check, _)) = found else {
            return Ok(mode);
        };
        if !checker.json_first(check, b)? {
            return Ok(mode);
        }
        checker.begin_text();
        self.pending_check = true;
        Ok(match mode {
            Mode::Copy => Mode::CopyCheck,
            Mode::Skip => Mode::Check,
            // `Capture` holds the text already.
            m => m,
        })
    }

    /// A declared member's scalar has ended: its text against its check.
    fn check_value(&mut self) -> Result<(), Failed> {
        let (Some(checker), Some(top)) = (self.check.as_deref_mut(), self.stack.last()) else {
            return Ok(());
        };
        let found = top
            .level
            .as_ref()
            .and_then(|l| l.checks.as_deref())
            .and_then(|c| c.list.get(usize::from(top.cur)));
        let Some((check, _)) = found else {
            return Ok(());
        };
        if matches!(top.member, Member::Capture(_)) {
            checker.begin_text();
            checker.take_text(&self.capture);
        }
        checker.json_held(check)
    }

    /// A declared object has closed: its required members, and whether
    /// it was the first record.
    fn check_close(&mut self, frame: &Frame) -> Result<(), Failed> {
        let Some(checker) = self.check.as_deref_mut() else {
            return Ok(());
        };
        let (Some(level), true) = (&frame.level, frame.object) else {
            return Ok(());
        };
        if let Some(checks) = level.checks.as_deref() {
            if frame.seen & checks.required != checks.required {
                checker.violation(Kind::Required)?;
            }
        }
        if !checker.settled() && self.stack.iter().all(|f| !f.object) {
            checker.settle();
        }
        Ok(())
    }
}
