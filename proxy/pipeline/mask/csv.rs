//! The streaming CSV masker (`text/csv`, RFC 4180): the header row names
//! the columns, each a top-level field of the dataset. A visible column's
//! cells are copied as they were sent (quotes and all); a hidden one is
//! dropped (`omit`: from the header too), emptied (`null`), replaced by a
//! placeholder of its `logicalType` (`redact`: `0`, `false`, `***`), or
//! made by its method from the cell's text (`hash`, `last4`, `year`, as in
//! JSON: a pseudonym of a value is the same in both formats). Only the
//! cell being read and the header row are held; line endings (`\n` or
//! `\r\n`) are kept, and so is a byte-order mark that starts the body (an
//! encoding's mark, no part of the first cell: a quoted cell may follow it).
//!
//! It fails closed: a quote inside an unquoted cell, text after a closing
//! quote, a lone carriage return, a record with another number of cells
//! than the header, a body that ends inside quotes, a hidden cell that is
//! not UTF-8, an undeclared column under `undeclared: refuse`, a column
//! that is a hidden field's name written otherwise (` customer_email`
//! after a `, ` separator, `Customer_Email`: `tree::Level::near_miss`),
//! or a visible column whose own declared fields hide something (a cell
//! cannot be masked inside) cut the stream.

use std::borrow::Cow;
use std::sync::Arc;

use aws_lc_rs::hmac;

use super::conform::Checker;
use super::methods;
use super::run;
use super::scan::CAPTURE_LIMIT;
use super::tree::{Level, Rule, NO_CHECK};
use crate::decision::fields::{Mask, Undeclared};
use crate::model::conformance::Kind;

type Failed = String;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What happens to the cells of one column.
#[derive(Debug, Clone, Copy)]
enum Column {
    Copy,
    Drop,
    Null,
    Redact(&'static [u8]),
    Method(Mask),
}

/// Where the reader is in the current cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Nothing of the cell yet.
    Start,
    Plain,
    /// Inside quotes.
    Quoted,
    /// A quote inside quotes: the closing one, or the first of `""`.
    QuoteInQuoted,
    /// A carriage return, which a line feed must follow.
    Cr,
}

/// One response body's CSV masking.
pub struct CsvMasker {
    root: Arc<Level>,
    key: Option<Arc<hmac::Key>>,
    /// The columns' treatment, once the header row has been read.
    columns: Option<Vec<Column>>,
    /// The header row's cells as sent, until it is whole.
    header: Vec<Vec<u8>>,
    cell: Vec<u8>,
    state: Cell,
    /// The index of the current cell in its record.
    col: usize,
    /// Whether a cell of the current record has been written.
    kept: bool,
    out: Vec<u8>,
    /// Contract conformance, on a sampled response (`conform.rs`), and
    /// each column's check (`tree::NO_CHECK`: none).
    check: Option<Box<Checker>>,
    col_checks: Vec<u16>,
    /// Past the body's first bytes (a byte-order mark or not), and how
    /// many bytes of a mark are held until then.
    began: bool,
    lead: usize,
}

impl CsvMasker {
    pub fn new(root: Arc<Level>, key: Option<Arc<hmac::Key>>) -> CsvMasker {
        CsvMasker {
            root,
            key,
            columns: None,
            header: Vec::new(),
            cell: Vec::new(),
            state: Cell::Start,
            col: 0,
            kept: false,
            out: Vec::new(),
            check: None,
            col_checks: Vec::new(),
            began: false,
            lead: 0,
        }
    }

    /// This masker, checking the body against the contract as well (the
    /// tree must be `tree::checked`).
    pub fn checking(mut self, checker: Checker) -> CsvMasker {
        self.check = Some(Box::new(checker));
        self
    }

    pub fn checker(&self) -> Option<&Checker> {
        self.check.as_deref()
    }

    pub fn checker_mut(&mut self) -> Option<&mut Checker> {
        self.check.as_deref_mut()
    }

    /// Masks one chunk; what may be sent now.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Failed> {
        self.out.reserve(chunk.len());
        let chunk = if self.began {
            chunk
        } else {
            self.lead_in(chunk)?
        };
        self.scan(chunk)?;
        Ok(std::mem::take(&mut self.out))
    }

    /// The body's first bytes: a byte-order mark there is copied as it is
    /// and read as no part of the first cell. Returns the rest of `chunk`.
    fn lead_in<'c>(&mut self, chunk: &'c [u8]) -> Result<&'c [u8], Failed> {
        let held = self.lead;
        let rest = &BOM[held..];
        let n = rest.len().min(chunk.len());
        if chunk[..n] == rest[..n] {
            if n < rest.len() {
                self.lead += n;
                return Ok(&[]);
            }
            self.began = true;
            self.out.extend_from_slice(BOM);
            return Ok(&chunk[n..]);
        }
        // No mark: what was held is the body's first bytes.
        self.began = true;
        self.scan(&BOM[..held])?;
        Ok(chunk)
    }

    fn scan(&mut self, chunk: &[u8]) -> Result<(), Failed> {
        let mut i = 0;
        while i < chunk.len() {
            // A run of ordinary bytes at once.
            let run = match self.state {
                Cell::Start | Cell::Plain => run::csv_plain(&chunk[i..]),
                Cell::Quoted => run::csv_quoted(&chunk[i..]),
                Cell::QuoteInQuoted | Cell::Cr => 0,
            };
            if run > 0 {
                self.take(&chunk[i..i + run])?;
                if self.state == Cell::Start {
                    self.state = Cell::Plain;
                }
                i += run;
                continue;
            }
            self.byte(chunk[i])?;
            i += 1;
        }
        Ok(())
    }

    /// The body has ended: the last record (it may lack a line ending).
    pub fn finish(&mut self) -> Result<Vec<u8>, Failed> {
        if !self.began {
            // A body shorter than a mark, begun like one.
            self.began = true;
            self.scan(&BOM[..self.lead])?;
        }
        match self.state {
            Cell::Quoted => return Err("the body ended inside a quoted cell".into()),
            Cell::Cr => return Err("a carriage return without a line feed".into()),
            _ => {}
        }
        if self.col > 0 || !self.cell.is_empty() {
            self.end_record(b"")?;
        }
        if let Some(c) = self.check.as_deref_mut() {
            c.settle();
        }
        Ok(std::mem::take(&mut self.out))
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), Failed> {
        if self.cell.len() + bytes.len() > CAPTURE_LIMIT {
            return Err(format!("a cell is longer than {CAPTURE_LIMIT} bytes"));
        }
        self.cell.extend_from_slice(bytes);
        Ok(())
    }

    /// One structural byte (or any byte after a quote or a carriage return).
    fn byte(&mut self, b: u8) -> Result<(), Failed> {
        match (self.state, b) {
            (Cell::Quoted, b'"') => {
                self.state = Cell::QuoteInQuoted;
                self.take(&[b])
            }
            (Cell::QuoteInQuoted, b'"') => {
                self.state = Cell::Quoted;
                self.take(&[b])
            }
            (Cell::Start, b'"') => {
                self.state = Cell::Quoted;
                self.take(&[b])
            }
            (Cell::Plain, b'"') => Err("a quote inside an unquoted cell".into()),
            (Cell::Start | Cell::Plain | Cell::QuoteInQuoted, b',') => self.end_cell(),
            (Cell::Start | Cell::Plain | Cell::QuoteInQuoted, b'\n') => self.end_record(b"\n"),
            (Cell::Start | Cell::Plain | Cell::QuoteInQuoted, b'\r') => {
                self.state = Cell::Cr;
                Ok(())
            }
            (Cell::Cr, b'\n') => self.end_record(b"\r\n"),
            (Cell::Cr, _) => Err("a carriage return without a line feed".into()),
            (Cell::QuoteInQuoted, _) => Err("text after the closing quote of a cell".into()),
            // `feed` hands every other byte of these states over as a run.
            (Cell::Start | Cell::Plain | Cell::Quoted, _) => self.take(&[b]),
        }
    }

    /// The current cell has ended (a comma or the record's end).
    fn end_cell(&mut self) -> Result<(), Failed> {
        self.state = Cell::Start;
        if self.columns.is_none() {
            let raw = std::mem::take(&mut self.cell);
            let held: usize = self.header.iter().map(Vec::len).sum();
            if held + raw.len() > CAPTURE_LIMIT {
                return Err(format!("a header row longer than {CAPTURE_LIMIT} bytes"));
            }
            self.header.push(raw);
            self.col += 1;
            return Ok(());
        }
        // The cell's buffer is handed back for the next cell, whatever
        // became of this one.
        let mut raw = std::mem::take(&mut self.cell);
        let done = self.data_cell(&raw);
        raw.clear();
        self.cell = raw;
        done
    }

    /// A data cell, whole: written as its column says.
    fn data_cell(&mut self, raw: &[u8]) -> Result<(), Failed> {
        let Some(columns) = &self.columns else {
            return Err("a data cell before the header row".into());
        };
        let Some(&column) = columns.get(self.col) else {
            return Err(format!(
                "a record with more cells than the header's {}",
                columns.len()
            ));
        };
        self.col += 1;
        if self.check.is_some() {
            self.check_cell(raw)?;
        }
        let written: Cow<'_, [u8]> = match column {
            Column::Drop => return Ok(()),
            Column::Copy => Cow::Borrowed(raw),
            Column::Null => Cow::Borrowed(b""),
            Column::Redact(p) => Cow::Borrowed(p),
            Column::Method(m) => Cow::Owned(self.method(m, raw)?),
        };
        self.write(&written);
        Ok(())
    }

    fn write(&mut self, cell: &[u8]) {
        if self.kept {
            self.out.push(b',');
        }
        self.kept = true;
        self.out.extend_from_slice(cell);
    }

    /// The record has ended with `ending` (empty at the body's end).
    fn end_record(&mut self, ending: &[u8]) -> Result<(), Failed> {
        if self.col == 0 && self.cell.is_empty() {
            // A blank line (before the header too): kept as it is.
            self.state = Cell::Start;
            self.out.extend_from_slice(ending);
            return Ok(());
        }
        self.end_cell()?;
        match &self.columns {
            None => self.read_header()?,
            Some(columns) if self.col != columns.len() => {
                return Err(format!(
                    "a record of {} cells under a header of {}",
                    self.col,
                    columns.len()
                ))
            }
            Some(_) => {
                if let Some(c) = self.check.as_deref_mut() {
                    c.settle();
                }
            }
        }
        self.out.extend_from_slice(ending);
        self.col = 0;
        self.kept = false;
        Ok(())
    }

    /// The header row is whole: each column's treatment, and the header
    /// as sent without the dropped columns.
    fn read_header(&mut self) -> Result<(), Failed> {
        let header = std::mem::take(&mut self.header);
        if self.check.is_some() {
            self.check_header(&header)?;
        }
        if self.root.hides_anything() {
            plausible_header(&self.root, &header)?;
        }
        let mut columns = Vec::with_capacity(header.len());
        for raw in &header {
            let name = unquote(raw);
            let column = self.column(&name)?;
            if !matches!(column, Column::Drop) {
                self.write(raw);
            }
            columns.push(column);
        }
        self.columns = Some(columns);
        Ok(())
    }

    /// What a column named `name` gets.
    ///
    /// (Only a declared column's name is ever shown: see `plausible_header`.)
    fn column(&self, name: &[u8]) -> Result<Column, Failed> {
        let shown = || String::from_utf8_lossy(name).into_owned();
        Ok(match self.root.rule(name) {
            Some(Rule::Show(_, Some(below))) if below.hides_anything() => {
                return Err(format!(
                    "column `{}` declares fields of its own that are hidden; a CSV cell cannot be masked inside",
                    shown()
                ))
            }
            Some(Rule::Show(..)) => Column::Copy,
            Some(Rule::Hide(Mask::Omit)) => Column::Drop,
            Some(Rule::Hide(Mask::Null)) => Column::Null,
            Some(Rule::Hide(Mask::Redact)) => Column::Redact(
                self.root
                    .text_placeholders
                    .get(name)
                    .copied()
                    .unwrap_or(b"***"),
            ),
            Some(Rule::Hide(m)) => Column::Method(*m),
            // ` customer_email` (a `, ` separator), `Customer_Email`: a
            // reader that trims or folds case takes it for the hidden one.
            None if self.root.near_miss(name) => {
                return Err(format!(
                    "a column ({} bytes) that is a hidden field's name written otherwise (case, spaces, separators)",
                    name.len()
                ))
            }
            None => match self.root.undeclared {
                Some(Undeclared::Pass) | None => Column::Copy,
                Some(Undeclared::Omit) => Column::Drop,
                // Its name, which may be a record's cell (a body without a
                // header row), is not written to the log.
                Some(Undeclared::Refuse) => {
                    return Err(format!("an undeclared column ({} bytes)", name.len()))
                }
            },
        })
    }

    /// A hidden cell made by `mask` from its text, quoted when it must be
    /// (the same text as the JSON methods make of a string).
    fn method(&self, mask: Mask, raw: &[u8]) -> Result<Vec<u8>, Failed> {
        let text = unquote(raw);
        let text = std::str::from_utf8(&text)
            .map_err(|_| "a hidden cell that is not UTF-8".to_string())?;
        Ok(match mask {
            Mask::Hash => {
                let key = self
                    .key
                    .as_deref()
                    .ok_or_else(|| format!("no hash key for a `{mask}` column"))?;
                let mut out = Vec::new();
                methods::hash_into(key, text.as_bytes(), &mut out);
                out
            }
            Mask::Last4 => quoted(&methods::last4(text)),
            Mask::Year => quoted(methods::year(text).unwrap_or("***")),
            // Made by their columns without the text.
            Mask::Omit | Mask::Null => Vec::new(),
            Mask::Redact => b"***".to_vec(),
        })
    }
}

// === conformance (a sampled response: `conform.rs`) ===

impl CsvMasker {
    /// The header row: undeclared columns, required ones missing, and
    /// each column's check.
    fn check_header(&mut self, header: &[Vec<u8>]) -> Result<(), Failed> {
        let Some(checker) = self.check.as_deref_mut() else {
            return Ok(());
        };
        let Some(checks) = self.root.checks.as_deref() else {
            return Ok(());
        };
        let mut seen = 0u64;
        self.col_checks.clear();
        for raw in header {
            let found = checks.members.get(unquote(raw).as_ref()).copied();
            if found.is_none() {
                checker.violation(Kind::Undeclared)?;
            }
            let index = found.unwrap_or(NO_CHECK);
            seen |= checks
                .list
                .get(usize::from(index))
                .map_or(0, |(_, bit)| *bit);
            self.col_checks.push(index);
        }
        if seen & checks.required != checks.required {
            checker.violation(Kind::Required)?;
        }
        Ok(())
    }

    /// A data cell of the current column against its check.
    fn check_cell(&mut self, raw: &[u8]) -> Result<(), Failed> {
        let Some(checker) = self.check.as_deref_mut() else {
            return Ok(());
        };
        let index = self.col.checked_sub(1).and_then(|c| self.col_checks.get(c));
        let found = index.and_then(|i| {
            let checks = self.root.checks.as_deref()?;
            checks.list.get(usize::from(*i))
        });
        let Some((check, _)) = found else {
            return Ok(());
        };
        let quoted = raw.first() == Some(&b'"');
        checker.csv_cell(check, &unquote(raw), quoted)
    }
}

/// A cell's text: without its quotes, `""` read as `"`.
fn unquote(raw: &[u8]) -> Cow<'_, [u8]> {
    match raw {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                i += if inner[i] == b'"' { 2 } else { 1 };
            }
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(raw),
    }
}

/// `text` as a cell: quoted when it holds a comma, a quote or a line break.
fn quoted(text: &str) -> Vec<u8> {
    if !text.contains([',', '"', '\r', '\n']) {
        return text.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'"');
    for b in text.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// Whether a header row, on a response whose plan hides something, can be
/// the row of the contract's columns; else the body is not the CSV its
/// type says and nothing of it goes: a row that names no declared column
/// (no header row, another delimiter, another encoding: `customer_email`
/// would pass as part of an undeclared column), or a cell holding a `;`,
/// a tab, a NUL or a second byte order mark (a `;`- or tab-separated body,
/// or an Excel `sep=` line, read as one column).
fn plausible_header(root: &Level, header: &[Vec<u8>]) -> Result<(), Failed> {
    let odd = |raw: &[u8]| {
        raw.iter().any(|b| matches!(b, b';' | b'\t' | 0)) || raw.windows(3).any(|w| w == BOM)
    };
    if header.iter().any(|raw| odd(raw)) {
        return Err("a header cell holding `;`, a tab, NUL or a byte order mark: not comma-separated columns the contract declares".into());
    }
    if !header.iter().any(|raw| root.rule(&unquote(raw)).is_some()) {
        return Err("a header row that names no declared column (a body without a header row, or in another format)".into());
    }
    Ok(())
}
