//! CSV as exports come: any one-character delimiter, quote and escape, CRLF or LF, a byte order
//! mark, GBK / GB18030 and the other WHATWG encodings (through `encoding_rs`), comments, with or
//! without a header. Parsing is the `csv` crate's (already in DataFusion's tree).

use std::path::Path;

use csv::{ReaderBuilder, StringRecord};
use encoding_rs::{Encoding, UTF_8};

use super::columns::{Cell, Grid};
use crate::spec::read::ReadSpec;

/// The records of one file, with the line each starts on.
pub struct CsvGrid {
    records: Vec<StringRecord>,
    lines: Vec<u64>,
}

impl Grid for CsvGrid {
    fn rows(&self) -> usize {
        self.records.len()
    }

    fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        match self.records[row].get(column) {
            Some(text) => Cell::Text(text),
            None => Cell::Empty,
        }
    }

    fn place(&self, row: usize, _column: usize) -> String {
        format!("line {}", self.lines[row])
    }
}

fn one_byte(key: &str, value: &Option<String>, default: Option<u8>) -> Result<Option<u8>, String> {
    let Some(v) = value else {
        return Ok(default);
    };
    let v = if v == "\\t" || v.eq_ignore_ascii_case("tab") {
        "\t"
    } else {
        v
    };
    match v.as_bytes() {
        [b] if b.is_ascii() => Ok(Some(*b)),
        _ => Err(format!("read.{key} must be one ASCII character, not '{v}'")),
    }
}

/// The file as UTF-8 text: the declared encoding, a byte order mark winning over it.
fn decode(path: &Path, bytes: &[u8], spec: &ReadSpec) -> Result<String, String> {
    let declared = match &spec.encoding {
        Some(label) => Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
            format!("read.encoding: unknown encoding '{label}' (utf-8, gbk, gb18030, big5, utf-16le, ...)")
        })?,
        None => UTF_8,
    };
    let (text, used, malformed) = declared.decode(bytes);
    if malformed {
        let at = text.find('\u{FFFD}').unwrap_or(0);
        let line = text[..at].matches('\n').count() + 1;
        let hint = if used == UTF_8 {
            ": declare its encoding, e.g. read.encoding: gbk"
        } else {
            ""
        };
        return Err(format!(
            "{}: line {line} is not valid {}{hint}",
            path.display(),
            used.name()
        ));
    }
    Ok(text.into_owned())
}

/// Reads one CSV file: its column names (from the header or `read.names`) and records.
pub fn read(path: &Path, spec: &ReadSpec) -> Result<(Vec<String>, CsvGrid), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = decode(path, &bytes, spec)?;
    let escape = one_byte("escape", &spec.escape, None)?;
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .delimiter(one_byte("delimiter", &spec.delimiter, Some(b','))?.unwrap_or(b','))
        .quote(one_byte("quote", &spec.quote, Some(b'"'))?.unwrap_or(b'"'))
        .escape(escape)
        .double_quote(escape.is_none())
        .comment(one_byte("comment", &spec.comment, None)?)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut lines = Vec::new();
    // Lines counted from each record's byte offset (a quoted field may span lines).
    let (mut counted_to, mut line) = (0usize, 1u64);
    let mut line_at = |byte: u64| {
        // After a CR the reader places the next record on the LF that follows it.
        let mut byte = (byte as usize).min(text.len());
        while matches!(text.as_bytes().get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        line += text.as_bytes()[counted_to..byte]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        counted_to = byte;
        line
    };
    for record in reader.records() {
        let record = record.map_err(|e| describe(path, &e, &mut line_at))?;
        // A trailing empty line in a one-column file is no record.
        if record.len() == 1 && record.get(0) == Some("") {
            continue;
        }
        lines.push(record.position().map_or(0, |p| line_at(p.byte())));
        records.push(record);
    }
    let header = spec.header.unwrap_or(true);
    let from_header: Option<Vec<String>> = header.then(|| {
        records
            .first()
            .map(|r| r.iter().map(|f| f.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if header && !records.is_empty() {
        records.remove(0);
        lines.remove(0);
    }
    let width = records
        .first()
        .map(StringRecord::len)
        .or(from_header.as_ref().map(Vec::len))
        .unwrap_or(0);
    let names = match (&spec.names, from_header) {
        (Some(names), _) if names.len() != width => {
            return Err(format!(
                "{}: read.names lists {} columns, the file has {width}",
                path.display(),
                names.len()
            ));
        }
        (Some(names), _) => names.clone(),
        (None, Some(names)) => names,
        (None, None) => {
            return Err(format!(
                "{}: read.header is false, so read.names must name the {width} columns",
                path.display()
            ));
        }
    };
    super::check_names(path, &names)?;
    Ok((names, CsvGrid { records, lines }))
}

fn describe(path: &Path, e: &csv::Error, line_at: &mut dyn FnMut(u64) -> u64) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "{}: line {} has {len} fields where the first line has {expected_len} (is read.delimiter right?)",
            path.display(),
            pos.as_ref().map_or(0, |p| line_at(p.byte()))
        ),
        _ => format!("{}: {e}", path.display()),
    }
}
