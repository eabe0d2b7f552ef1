//! `mask_csv`: the streaming CSV masker (`pipeline/mask/csv.rs`) against a
//! reference that reads the whole body into records first (RFC 4180, with
//! the masker's documented refusals) and masks them column by column.
//!
//! Input: the same seven control bytes as `mask_json` (five masks,
//! `undeclared`, no hash key, the conformance checker, a chunk size; bit 4
//! unused), then the body, under the same plan: the columns `a` (visible),
//! `b` and `l` (hidden) and `c` and `i` (visible, but fields of their own
//! are hidden: a CSV cell cannot be masked inside, so either refuses the
//! response); any other column is undeclared (one that is a hidden
//! column's name written otherwise, `B` or ` l`, refuses it).
//!
//! Checked: fed in chunks and whole, the same bytes (or both fail); a body
//! the reference refuses fails; otherwise the output, read the same way,
//! has the reference's records: a byte-order mark (one that starts the
//! body: an encoding's mark, no part of the first cell) and line endings
//! where they were, kept cells byte for byte as sent (header cells included),
//! dropped columns gone, and each hidden cell's text as its method makes it.

use aws_lc_rs::hmac;

use super::mask::{hex, last4, near_miss, year, Setup};
use crate::decision::fields::tree::{self, Rule};
use crate::decision::fields::{Mask, Undeclared};
use crate::pipeline::mask::csv::CsvMasker;

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub fn mask_csv(data: &[u8]) {
    let Some(setup) = Setup::read(data) else {
        return;
    };
    let (level, key, body) = (&setup.level, &setup.key, setup.body);
    let whole = setup.mask(|checker| {
        let m = CsvMasker::new(level.clone(), key.clone());
        match checker {
            Some(c) => m.checking(c),
            None => m,
        }
    });
    // A byte-order mark that starts the body is no part of a cell, and
    // starts the output too.
    let bom = body.starts_with(BOM);
    let expected = reference(level, key.as_deref(), body);
    match (expected, whole) {
        (Ok((_, want)), Ok(out)) => {
            let sent = match (bom, out.strip_prefix(BOM)) {
                (false, _) => out.as_slice(),
                (true, Some(rest)) => rest,
                (true, None) => panic!("the byte-order mark is gone: {out:?}"),
            };
            let got = read(sent);
            let Ok(got) = got else {
                panic!(
                    "masked to {:?}, which does not read",
                    String::from_utf8_lossy(&out)
                );
            };
            assert!(
                same(&got, &want),
                "masked to {:?}, expected {want:?}",
                String::from_utf8_lossy(&out)
            );
        }
        (Err(why), Ok(out)) => panic!(
            "the reference refuses ({why}), the masker sent {:?}",
            String::from_utf8_lossy(&out)
        ),
        (Ok(_), Err(e)) => panic!("the reference masks it, the masker fails: {e}"),
        (Err(_), Err(_)) => {}
    }
}

/// The body's records (after a byte-order mark) and what masking makes
/// of them, or why the masker must refuse it.
pub(super) fn reference(
    level: &tree::Level,
    key: Option<&hmac::Key>,
    body: &[u8],
) -> Result<(Vec<Row>, Vec<WantRow>), String> {
    let rows = read(body.strip_prefix(BOM).unwrap_or(body))?;
    if let (true, Some(cells)) = (level.hides_anything(), header(&rows)) {
        // A header row the contract's columns cannot be.
        let odd = |c: &Vec<u8>| {
            c.contains(&b';')
                || c.contains(&b'\t')
                || c.contains(&0)
                || String::from_utf8_lossy(c).contains('\u{feff}')
        };
        if cells.iter().any(odd) {
            return Err("a header cell with a semicolon, tab, NUL or mark".into());
        }
        if cells.iter().all(|c| level.rule(&unquote(c)).is_none()) {
            return Err("a header naming no declared column".into());
        }
    }
    let columns = header(&rows)
        .map(|cells| {
            cells
                .iter()
                .map(|raw| column(level, &unquote(raw)))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let want = masked(&rows, columns.as_deref(), key)?;
    Ok((rows, want))
}

/// A line: its cells as sent (none: a blank line) and its ending.
#[derive(Debug)]
pub(super) struct Row {
    pub(super) cells: Vec<Vec<u8>>,
    ending: &'static [u8],
}

/// The records of a body, or why the masker must refuse it.
fn read(body: &[u8]) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let mut cells: Vec<Vec<u8>> = Vec::new();
    let mut cell = Vec::new();
    let mut i = 0;
    let mut quoted = false;
    let mut any = false;
    while i < body.len() {
        let b = body[i];
        if quoted {
            if b == b'"' {
                if body.get(i + 1) == Some(&b'"') {
                    cell.extend_from_slice(b"\"\"");
                    i += 2;
                    continue;
                }
                cell.push(b);
                quoted = false;
                match body.get(i + 1) {
                    None | Some(b',' | b'\n' | b'\r') => {}
                    Some(_) => return Err("text after a closing quote".into()),
                }
            } else {
                cell.push(b);
            }
            i += 1;
            continue;
        }
        match b {
            b'"' if cell.is_empty() => {
                quoted = true;
                any = true;
                cell.push(b);
            }
            b'"' => return Err("a quote inside an unquoted cell".into()),
            b',' => {
                cells.push(std::mem::take(&mut cell));
                any = true;
            }
            b'\n' | b'\r' => {
                let ending: &'static [u8] = if b == b'\r' {
                    if body.get(i + 1) != Some(&b'\n') {
                        return Err("a lone carriage return".into());
                    }
                    i += 1;
                    b"\r\n"
                } else {
                    b"\n"
                };
                if any || !cell.is_empty() {
                    cells.push(std::mem::take(&mut cell));
                }
                rows.push(Row {
                    cells: std::mem::take(&mut cells),
                    ending,
                });
                any = false;
            }
            _ => {
                any = true;
                cell.push(b);
            }
        }
        i += 1;
    }
    if quoted {
        return Err("the body ended inside quotes".into());
    }
    if any || !cell.is_empty() {
        cells.push(cell);
        rows.push(Row { cells, ending: b"" });
    }
    // Every record as long as the header.
    let mut width = None;
    for row in rows.iter().filter(|r| !r.cells.is_empty()) {
        match width {
            None => width = Some(row.cells.len()),
            Some(w) if w != row.cells.len() => return Err("a record of another length".into()),
            Some(_) => {}
        }
    }
    Ok(rows)
}

fn header(rows: &[Row]) -> Option<&[Vec<u8>]> {
    rows.iter()
        .find(|r| !r.cells.is_empty())
        .map(|r| r.cells.as_slice())
}

/// A cell's text: a quoted one without its quotes, each `""` one `"`.
pub(super) fn unquote(raw: &[u8]) -> Vec<u8> {
    let Some(inner) = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) else {
        return raw.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        out.push(inner[i]);
        i += if inner[i] == b'"' { 2 } else { 1 };
    }
    out
}

/// What the masker is documented to do with a column.
#[derive(Debug, Clone, Copy)]
enum Column {
    Keep,
    Drop,
    /// Replaced by a cell whose text this makes.
    Hide(Mask),
}

fn column(level: &tree::Level, name: &[u8]) -> Result<Column, String> {
    Ok(match level.rule(name) {
        Some(Rule::Show(_, Some(below))) if below.hides_anything() => {
            return Err("a column with hidden fields of its own".into())
        }
        Some(Rule::Show(..)) => Column::Keep,
        Some(Rule::Hide(Mask::Omit)) => Column::Drop,
        Some(Rule::Hide(m)) => Column::Hide(*m),
        None if near_miss(level, name) => {
            return Err("a hidden column's name written otherwise".into())
        }
        None => match level.undeclared {
            Some(Undeclared::Omit) => Column::Drop,
            Some(Undeclared::Refuse) => return Err("an undeclared column".into()),
            Some(Undeclared::Pass) | None => Column::Keep,
        },
    })
}

/// A cell of the expected output: as sent, or the text it must read as.
#[derive(Debug)]
enum Want {
    Sent(Vec<u8>),
    Text(Vec<u8>),
}

#[derive(Debug)]
pub(super) struct WantRow {
    cells: Vec<Want>,
    ending: &'static [u8],
    /// A blank line, or a row whose every cell was dropped.
    empty: bool,
}

fn masked(
    rows: &[Row],
    columns: Option<&[Column]>,
    key: Option<&hmac::Key>,
) -> Result<Vec<WantRow>, String> {
    let mut out = Vec::new();
    let mut first = true;
    for row in rows {
        let (Some(columns), false) = (columns, row.cells.is_empty()) else {
            out.push(WantRow {
                cells: Vec::new(),
                ending: row.ending,
                empty: true,
            });
            continue;
        };
        let header = std::mem::take(&mut first);
        let mut cells = Vec::new();
        for (raw, column) in row.cells.iter().zip(columns) {
            match (header, column) {
                (_, Column::Drop) => {}
                (true, _) | (false, Column::Keep) => cells.push(Want::Sent(raw.to_vec())),
                (false, Column::Hide(mask)) => cells.push(Want::Text(hide(*mask, raw, key)?)),
            }
        }
        out.push(WantRow {
            empty: cells.is_empty(),
            cells,
            ending: row.ending,
        });
    }
    Ok(out)
}

/// A hidden cell's text, as the README says each method works on CSV.
fn hide(mask: Mask, raw: &[u8], key: Option<&hmac::Key>) -> Result<Vec<u8>, String> {
    let text = || {
        String::from_utf8(unquote(raw)).map_err(|_| "a hidden cell that is not UTF-8".to_string())
    };
    Ok(match mask {
        Mask::Omit | Mask::Null => Vec::new(),
        Mask::Redact => b"***".to_vec(),
        Mask::Hash => {
            let key = key.ok_or("no hash key")?;
            format!(
                "hmac-sha256:{}",
                hex(hmac::sign(key, text()?.as_bytes()).as_ref())
            )
            .into_bytes()
        }
        Mask::Last4 => last4(&text()?).into_bytes(),
        Mask::Year => year(&text()?).unwrap_or("***").as_bytes().to_vec(),
    })
}

/// Whether the output's rows are the expected ones.
fn same(got: &[Row], want: &[WantRow]) -> bool {
    // A last record with nothing left in it and no line ending is no bytes.
    let nothing = |w: &WantRow| {
        w.ending.is_empty()
            && (w.empty
                || matches!(w.cells.as_slice(), [Want::Sent(c) | Want::Text(c)] if c.is_empty()))
    };
    let want = match want.split_last() {
        Some((last, rest)) if nothing(last) => rest,
        _ => want,
    };
    got.len() == want.len() && got.iter().zip(want).all(|(row, w)| {
        if row.ending != w.ending {
            return false;
        }
        if w.empty {
            return row.cells.is_empty();
        }
        // One empty cell reads back as a blank line.
        if row.cells.is_empty() {
            return matches!(w.cells.as_slice(), [Want::Sent(c) | Want::Text(c)] if c.is_empty());
        }
        let (cells, want) = (&row.cells, &w.cells);
        cells.len() == want.len()
            && cells.iter().zip(want).all(|(c, w)| match w {
                Want::Sent(b) => c == b,
                Want::Text(t) => unquote(c) == *t,
            })
    })
}
