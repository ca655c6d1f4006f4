//! Excel workbooks (`.xlsx`, also `.xls` and `.ods`) through `calamine`: one sheet, optionally a
//! range of it, header row first.

use std::path::Path;

use calamine::{Data, Range, Reader, open_workbook_auto};
use chrono::NaiveDate;

use super::columns::{Cell, Grid};
use crate::spec::read::ReadSpec;

pub struct SheetGrid {
    sheet: String,
    cells: Range<Data>,
    /// Absolute (row, column) of the first data row's first cell.
    origin: (u32, u32),
    /// The first data row within `cells` (1 when the range starts with the header).
    first_row: usize,
}

impl Grid for SheetGrid {
    fn rows(&self) -> usize {
        self.cells.height().saturating_sub(self.first_row)
    }

    fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        match self.cells.get((row + self.first_row, column)) {
            None | Some(Data::Empty) => Cell::Empty,
            Some(Data::Int(i)) => Cell::Int(*i),
            Some(Data::Float(f)) => Cell::Float(*f),
            Some(Data::Bool(b)) => Cell::Bool(*b),
            Some(Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s)) => Cell::Text(s),
            Some(Data::DateTime(d)) => {
                let (y, m, day, h, min, s, ms) = d.to_ymd_hms_milli();
                NaiveDate::from_ymd_opt(y.into(), m.into(), day.into())
                    .and_then(|date| {
                        date.and_hms_milli_opt(h.into(), min.into(), s.into(), ms.into())
                    })
                    .map_or(Cell::Float(d.as_f64()), Cell::DateTime)
            }
            // `#N/A`, `#DIV/0!`: shown as written, so a typed column names it as a bad value.
            Some(Data::Error(_)) => Cell::Text("#error"),
        }
    }

    fn place(&self, row: usize, column: usize) -> String {
        let r = self.origin.0 + row as u32;
        let c = self.origin.1 + column as u32;
        format!("sheet '{}' cell {}{}", self.sheet, column_letters(c), r + 1)
    }
}

fn column_letters(mut c: u32) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'A' + (c % 26) as u8);
        if c < 26 {
            break;
        }
        c = c / 26 - 1;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

/// `B7` -> (6, 1); `F` alone (an open end) -> (None, 5).
fn cell_ref(text: &str) -> Option<(Option<u32>, u32)> {
    let text = text.trim().to_ascii_uppercase();
    let split = text
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(text.len());
    let (letters, digits) = text.split_at(split);
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let column = letters.bytes().try_fold(0u32, |acc, b| {
        acc.checked_mul(26)?.checked_add((b - b'A' + 1) as u32)
    })? - 1;
    let row = match digits {
        "" => None,
        d => Some(d.parse::<u32>().ok().filter(|r| *r > 0)? - 1),
    };
    Some((row, column))
}

pub fn read(path: &Path, spec: &ReadSpec) -> Result<(Vec<String>, SheetGrid), String> {
    let file = path.display();
    let mut workbook = open_workbook_auto(path).map_err(|e| format!("{file}: {e}"))?;
    let sheets = workbook.sheet_names();
    let sheet = match &spec.sheet {
        Some(s) if sheets.contains(s) => s.clone(),
        Some(s) => {
            return Err(format!(
                "{file}: no sheet '{s}' (it has: {})",
                sheets.join(", ")
            ));
        }
        None => sheets
            .first()
            .cloned()
            .ok_or_else(|| format!("{file}: the workbook has no sheets"))?,
    };
    let used = workbook
        .worksheet_range(&sheet)
        .map_err(|e| format!("{file}: sheet '{sheet}': {e}"))?;
    let (start, end) = match &spec.range {
        None => match (used.start(), used.end()) {
            (Some(s), Some(e)) => (s, e),
            _ => return Err(format!("{file}: sheet '{sheet}' is empty")),
        },
        Some(range) => {
            let bad =
                || format!("read.range: '{range}' is not a cell range such as A1:F200 or B3:F");
            let (from, to) = range.split_once(':').ok_or_else(bad)?;
            let (Some(r0), c0) = cell_ref(from).ok_or_else(bad)? else {
                return Err(bad());
            };
            let (r1, c1) = cell_ref(to).ok_or_else(bad)?;
            let r1 = r1.unwrap_or_else(|| used.end().map_or(r0, |e| e.0));
            if r1 < r0 || c1 < c0 {
                return Err(bad());
            }
            ((r0, c0), (r1, c1))
        }
    };
    let cells = used.range(start, end);
    let header = spec.header.unwrap_or(true);
    let width = cells.width();
    let names: Vec<String> = match (&spec.names, header) {
        (Some(names), _) if names.len() != width => {
            return Err(format!(
                "{file}: read.names lists {} columns, the range has {width}",
                names.len()
            ));
        }
        (Some(names), _) => names.clone(),
        (None, true) => (0..width)
            .map(|c| match cells.get((0, c)) {
                Some(Data::Empty) | None => String::new(),
                Some(d) => d.to_string().trim().to_string(),
            })
            .collect(),
        (None, false) => {
            return Err(format!(
                "{file}: read.header is false, so read.names must name the {width} columns"
            ));
        }
    };
    super::check_names(path, &names)?;
    let first_row = usize::from(header);
    Ok((
        names,
        SheetGrid {
            sheet,
            cells,
            origin: (start.0 + first_row as u32, start.1),
            first_row,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_references() {
        assert_eq!(cell_ref("A1"), Some((Some(0), 0)));
        assert_eq!(cell_ref("b7"), Some((Some(6), 1)));
        assert_eq!(cell_ref("AA10"), Some((Some(9), 26)));
        assert_eq!(cell_ref("F"), Some((None, 5)));
        assert_eq!(cell_ref("A0"), None);
        assert_eq!(cell_ref("7"), None);
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(27), "AB");
    }
}
