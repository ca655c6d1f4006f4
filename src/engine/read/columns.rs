//! Typed Arrow columns from the cells of a CSV or a sheet: declared types or inferred ones, nulls
//! by marker, and the first bad value named by its place (line and column, or cell).

use std::sync::Arc;

use chrono::{NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::dates::{DateFormat, from_excel_serial, parse_datetime};
use crate::semantic::days_since_epoch;
use crate::spec::read::{ColumnType, ReadSpec};

/// One cell as the file holds it: CSV has only text; a sheet also has numbers, booleans and
/// dates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Empty,
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    DateTime(NaiveDateTime),
}

/// Rows of cells with their places in the file, for error messages.
pub trait Grid {
    fn rows(&self) -> usize;
    fn cell(&self, row: usize, column: usize) -> Cell<'_>;
    /// `line 12` or `cell B7`, for the value at (row, column).
    fn place(&self, row: usize, column: usize) -> String;
}

struct ColumnPlan {
    name: String,
    data_type: ColumnType,
    format: DateFormat,
    century: Option<i32>,
    time_zone: Option<Tz>,
    declared_format: bool,
}

/// Builds the table: `names` in file order, types from `spec.columns` or inferred.
pub fn build(grid: &dyn Grid, names: &[String], spec: &ReadSpec) -> Result<RecordBatch, String> {
    for declared in spec.columns.keys() {
        if !names.contains(declared) {
            return Err(format!(
                "read.columns names '{declared}', which the file does not have (it has: {})",
                names.join(", ")
            ));
        }
    }
    let is_null = |cell: &Cell| match cell {
        Cell::Empty => true,
        Cell::Text(t) => t.is_empty() || spec.null.iter().any(|n| n == t),
        _ => false,
    };
    let mut fields = Vec::with_capacity(names.len());
    let mut arrays = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let plan = match spec.columns.get(name) {
            Some(declared) => ColumnPlan {
                name: name.clone(),
                data_type: declared.data_type(),
                format: DateFormat::parse(declared.format())
                    .map_err(|e| format!("read.columns.{name}: {e}"))?,
                century: declared.century(),
                declared_format: declared.format().is_some(),
                time_zone: match declared.time_zone() {
                    None => None,
                    Some(_) if declared.data_type() != ColumnType::Timestamp => {
                        return Err(format!(
                            "read.columns.{name}: time_zone applies to timestamps only"
                        ));
                    }
                    Some(zone) => Some(zone.parse::<Tz>().map_err(|_| {
                        format!("read.columns.{name}: unknown time zone '{zone}' (UTC, Asia/Shanghai, ...)")
                    })?),
                },
            },
            None => ColumnPlan {
                name: name.clone(),
                data_type: infer(grid, index, &is_null),
                format: DateFormat::Iso,
                century: None,
                time_zone: None,
                declared_format: false,
            },
        };
        let array = convert(grid, index, &plan, &is_null)?;
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

/// Exports write identifiers as digits too: a leading zero (`0012`, not `0.5`) makes it text.
fn leading_zero(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let whole = digits.split('.').next().unwrap_or(digits);
    whole.len() > 1 && whole.starts_with('0')
}

/// An integer, as inference reads it.
fn integer(text: &str) -> Option<i64> {
    let t = text.trim();
    if leading_zero(t) {
        return None;
    }
    t.parse().ok()
}

/// A number, as inference reads it. (A declared float64 column takes any number.)
fn inferred_number(text: &str) -> Option<f64> {
    let t = text.trim();
    if leading_zero(t) {
        return None;
    }
    number(t)
}

fn number(text: &str) -> Option<f64> {
    let t = text.trim();
    // `inf`/`NaN` are words in a bank export, not numbers.
    t.bytes()
        .any(|b| b.is_ascii_digit())
        .then(|| t.parse().ok())
        .flatten()
}

fn infer(grid: &dyn Grid, column: usize, is_null: &dyn Fn(&Cell) -> bool) -> ColumnType {
    let candidates = [
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Boolean,
        ColumnType::Date,
        ColumnType::Timestamp,
    ];
    let mut possible = candidates.map(|_| true);
    let mut seen = false;
    for row in 0..grid.rows() {
        let cell = grid.cell(row, column);
        if is_null(&cell) {
            continue;
        }
        seen = true;
        let fits = |t: ColumnType| match (t, cell) {
            (ColumnType::Int64, Cell::Int(_)) => true,
            (ColumnType::Int64, Cell::Text(s)) => integer(s).is_some(),
            (ColumnType::Float64, Cell::Int(_) | Cell::Float(_)) => true,
            (ColumnType::Float64, Cell::Text(s)) => inferred_number(s).is_some(),
            (ColumnType::Boolean, Cell::Bool(_)) => true,
            (ColumnType::Date, Cell::DateTime(d)) => d.time() == NaiveTime::MIN,
            (ColumnType::Date, Cell::Text(s)) => {
                s.trim().len() == 10 && parse_datetime(s, &DateFormat::Iso, None).is_some()
            }
            (ColumnType::Timestamp, Cell::DateTime(_)) => true,
            // Dates and date-times mixed are timestamps.
            (ColumnType::Timestamp, Cell::Text(s)) => {
                parse_datetime(s, &DateFormat::Iso, None).is_some()
            }
            _ => false,
        };
        for (p, t) in possible.iter_mut().zip(candidates) {
            *p = *p && fits(t);
        }
        if !possible.iter().any(|p| *p) {
            return ColumnType::String;
        }
    }
    if !seen {
        return ColumnType::String;
    }
    candidates
        .into_iter()
        .zip(possible)
        .find_map(|(t, p)| p.then_some(t))
        .unwrap_or(ColumnType::String)
}

fn convert(
    grid: &dyn Grid,
    column: usize,
    plan: &ColumnPlan,
    is_null: &dyn Fn(&Cell) -> bool,
) -> Result<ArrayRef, String> {
    let rows = grid.rows();
    let bad = |row: usize, cell: Cell| {
        let shown = match cell {
            Cell::Text(t) => format!("'{t}'"),
            other => format!("{other:?}"),
        };
        let hint = match (cell, plan.data_type) {
            (Cell::Text(t), ColumnType::Int64 | ColumnType::Float64 | ColumnType::Boolean)
                if !t.bytes().any(|b| b.is_ascii_digit()) =>
            {
                format!(" (if '{t}' means unknown, list it under read.null)")
            }
            (_, ColumnType::Date | ColumnType::Timestamp) if plan.declared_format => {
                " (not a valid date in the declared format)".to_string()
            }
            (_, ColumnType::Date | ColumnType::Timestamp) => format!(
                " (declare its format: read.columns.{}: {{ type: {}, format: yymmdd | yyyymmdd | iso | a chrono pattern }})",
                plan.name,
                plan.data_type.name()
            ),
            _ => String::new(),
        };
        format!(
            "{}, column '{}': cannot read {shown} as {}{hint}",
            grid.place(row, column),
            plan.name,
            plan.data_type.name()
        )
    };
    let datetime = |cell: Cell| match cell {
        Cell::DateTime(d) => Some(d),
        Cell::Text(t) => parse_datetime(t, &plan.format, plan.century),
        Cell::Int(i) if matches!(plan.format, DateFormat::Iso) => from_excel_serial(i as f64),
        Cell::Int(i) => parse_datetime(&i.to_string(), &plan.format, plan.century),
        Cell::Float(f) if matches!(plan.format, DateFormat::Iso) => from_excel_serial(f),
        Cell::Float(f) if f.fract() == 0.0 => {
            parse_datetime(&(f as i64).to_string(), &plan.format, plan.century)
        }
        _ => None,
    };
    macro_rules! fill {
        ($builder:expr, $value:expr) => {{
            let mut b = $builder;
            for row in 0..rows {
                let cell = grid.cell(row, column);
                if is_null(&cell) {
                    b.append_null();
                    continue;
                }
                let value: Option<_> = $value(cell);
                match value {
                    Some(v) => b.append_value(v),
                    None => return Err(bad(row, cell)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match plan.data_type {
        ColumnType::String => fill!(StringBuilder::with_capacity(rows, rows * 8), |c| match c {
            Cell::Text(t) => Some(t.to_string()),
            Cell::Int(i) => Some(i.to_string()),
            Cell::Float(f) => Some(f.to_string()),
            Cell::Bool(b) => Some(b.to_string()),
            Cell::DateTime(d) if d.time() == NaiveTime::MIN => Some(d.date().to_string()),
            Cell::DateTime(d) => Some(d.to_string()),
            Cell::Empty => None,
        }),
        ColumnType::Int64 => fill!(Int64Builder::with_capacity(rows), |c| match c {
            Cell::Int(i) => Some(i),
            Cell::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            Cell::Text(t) => t.trim().parse().ok(),
            _ => None,
        }),
        ColumnType::Float64 => fill!(Float64Builder::with_capacity(rows), |c| match c {
            Cell::Int(i) => Some(i as f64),
            Cell::Float(f) => Some(f),
            Cell::Text(t) => number(t),
            _ => None,
        }),
        ColumnType::Boolean => fill!(BooleanBuilder::with_capacity(rows), |c| match c {
            Cell::Bool(b) => Some(b),
            Cell::Int(1) => Some(true),
            Cell::Int(0) => Some(false),
            Cell::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Some(true),
                "false" | "f" | "no" | "n" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        }),
        ColumnType::Date => fill!(Date32Builder::with_capacity(rows), |c| datetime(c)
            .map(|d: NaiveDateTime| days_since_epoch(d.date()))),
        ColumnType::Timestamp => match plan.time_zone {
            // Wall-clock times in a declared zone, stored as instants (the earlier of a time
            // repeated when clocks go back).
            Some(zone) => fill!(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
                |c| datetime(c).and_then(|d: NaiveDateTime| zone
                    .from_local_datetime(&d)
                    .earliest()
                    .map(|t| t.timestamp_micros()))
            ),
            None => fill!(TimestampMicrosecondBuilder::with_capacity(rows), |c| {
                datetime(c).map(|d: NaiveDateTime| d.and_utc().timestamp_micros())
            }),
        },
    })
}
