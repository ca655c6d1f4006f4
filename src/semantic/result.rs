//! Arrow batches -> the JSON result clients get: a typed schema and compact rows.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;
use serde_json::{Number, Value};

use super::calendar::ComparisonWindow;
use super::planner::{ColumnRole, OutputColumn};
use super::validate::type_name;
use crate::catalog::Catalog;
use crate::spec::{Direction, FormatSpec, Label, Thresholds};

/// A computed answer, as cached: independent of who asked and when.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub schema: Vec<SchemaField>,
    pub rows: Vec<Vec<Value>>,
    /// One value per schema field: null for time and dimensions, the grand total for metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totals: Option<Vec<Value>>,
    /// True when more rows matched than `limit`.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillResult>,
    /// How the numbers were framed in time; served in the response's `meta`.
    #[serde(skip)]
    pub notes: ResultNotes,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultNotes {
    /// Missing periods (x members) were added, filled as each metric declares.
    pub gaps_filled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_period: Option<PartialPeriod>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comparisons: Vec<ComparisonWindow>,
    /// Rollups that answered instead of their models (the query, its totals, drill parent and
    /// comparisons).
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub rollups: std::collections::BTreeSet<String>,
    /// Metrics that are average balances, and what they average over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub averages: Option<Averages>,
}

/// How the answer's average balances are taken (日均): the metrics, and the rule.
#[derive(Debug, Clone, Serialize)]
pub struct Averages {
    pub metrics: Vec<String>,
    /// The mean of the per-date totals over the snapshot dates present in each period (a date
    /// without any snapshot, a holiday without a file, is not one of them).
    pub over: &'static str,
}

/// The last period of the range had not ended on the as-of date: it holds `days` days, and its
/// comparisons the same number of days.
#[derive(Debug, Clone, Serialize)]
pub struct PartialPeriod {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: i64,
}

impl QueryResult {
    /// The columns' names, in order.
    pub fn column_names(&self) -> Vec<&str> {
        self.schema.iter().map(|f| f.name.as_str()).collect()
    }

    /// The index of a column, by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.schema.iter().position(|f| f.name == name)
    }

    /// The indexes of the columns a predicate keeps, in schema order.
    pub fn columns_where(&self, keep: impl Fn(usize, &SchemaField) -> bool) -> Vec<usize> {
        self.schema
            .iter()
            .enumerate()
            .filter(|(i, f)| keep(*i, f))
            .map(|(i, _)| i)
            .collect()
    }

    /// Approximate heap size, for the cache's byte budget.
    pub fn weight(&self) -> usize {
        let value_size = |v: &Value| match v {
            Value::String(s) => 32 + s.len(),
            _ => 16,
        };
        let rows: usize = self
            .rows
            .iter()
            .map(|r| 24 + r.iter().map(value_size).sum::<usize>())
            .sum();
        let totals: usize = self.totals.iter().flatten().map(value_size).sum();
        256 + rows + totals + self.schema.len() * 128
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaField {
    pub name: String,
    pub role: ColumnRole,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    pub label: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// How values are shown, by value (a dimension's coded values, a funnel's step labels).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub value_labels: std::collections::BTreeMap<String, Label>,
}

pub fn schema_fields(
    catalog: &Catalog,
    columns: &[OutputColumn],
    batches_schema: &datafusion::arrow::datatypes::Schema,
) -> Vec<SchemaField> {
    columns
        .iter()
        .map(|c| {
            let data_type = batches_schema
                .field_with_name(&c.name)
                .map(|f| type_name(f.data_type()))
                .unwrap_or("number");
            let plain = |label: Label, format: Option<FormatSpec>| SchemaField {
                name: c.name.clone(),
                role: c.role,
                data_type,
                label,
                format,
                direction: None,
                thresholds: None,
                value_labels: c.value_labels.clone(),
            };
            if let Some((label, format)) = &c.meta {
                return plain(label.clone(), Some(format.clone()));
            }
            match c.role {
                ColumnRole::Time => SchemaField {
                    data_type: "date",
                    ..plain(
                        Label {
                            zh: Some("期间".into()),
                            en: Some("Period".into()),
                        },
                        None,
                    )
                },
                ColumnRole::Dimension => {
                    let d = &catalog.dimensions[&c.name];
                    SchemaField {
                        value_labels: d.value_labels.clone(),
                        ..plain(d.label.clone(), None)
                    }
                }
                ColumnRole::Metric => {
                    let m = &catalog.metrics[&c.name];
                    SchemaField {
                        direction: Some(m.direction),
                        thresholds: m.thresholds.clone(),
                        ..plain(m.label.clone(), Some(m.format.clone()))
                    }
                }
                ColumnRole::Key | ColumnRole::Derived => plain(
                    Label {
                        zh: None,
                        en: Some(c.name.clone()),
                    },
                    None,
                ),
            }
        })
        .collect()
}

/// Rows as arrays of JSON values in `columns` order.
pub fn rows_of(batches: &[RecordBatch], columns: &[OutputColumn]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        let arrays: Vec<Arc<dyn Array>> = columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(&c.name)
                    .cloned()
                    .expect("planned column present")
            })
            .collect();
        for i in 0..batch.num_rows() {
            rows.push(arrays.iter().map(|a| json_value(a.as_ref(), i)).collect());
        }
    }
    rows
}

/// One cell as JSON. Non-finite floats (a derived metric dividing by zero) become null.
pub fn json_value(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(i))
        };
    }
    let float = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(i).to_string()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(i);
            date_value(
                NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|e| e.checked_add_signed(chrono::Duration::days(days as i64))),
            )
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(i);
            date_value(DateTime::from_timestamp_millis(ms).map(|d| d.date_naive()))
        }
        DataType::Timestamp(unit, _) => {
            let micros = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(i)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(i)
                    .saturating_mul(1_000),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000
                }
            };
            DateTime::from_timestamp_micros(micros)
                .map(|d| Value::String(d.to_rfc3339()))
                .unwrap_or(Value::Null)
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            let s = ArrayFormatter::try_new(array, &FormatOptions::default())
                .map(|f| f.value(i).to_string())
                .unwrap_or_default();
            s.parse::<f64>().ok().map(float).unwrap_or(Value::String(s))
        }
        _ => ArrayFormatter::try_new(array, &FormatOptions::default())
            .map(|f| Value::String(f.value(i).to_string()))
            .unwrap_or(Value::Null),
    }
}

fn date_value(d: Option<NaiveDate>) -> Value {
    d.map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
        .unwrap_or(Value::Null)
}

/// A drilled answer's place in its hierarchy (`semantic::drill` fills it).
#[derive(Debug, Clone, Serialize)]
pub struct DrillResult {
    pub hierarchy: String,
    /// The level the rows are members of.
    pub level: String,
    /// The level a click on a row drills to; null when the rows are the leaf level.
    pub next_level: Option<String>,
    /// From the top: each crumb is a level and the path that shows it.
    pub breadcrumbs: Vec<Breadcrumb>,
    /// The parent's subtotal rows, aligned with the schema (the level column is null).
    pub parent: Vec<Vec<Value>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Breadcrumb {
    pub level: Option<String>,
    pub member: Option<Value>,
    pub path: serde_json::Map<String, Value>,
}
