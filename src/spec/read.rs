//! How to read a file as it comes from a bank's systems: CSV dialects and encodings, Excel
//! sheets, and the type of each column (`source.read` in a model).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `read:` beside `csv:` or `xlsx:`. Every key is optional; without `read` a CSV is read by
/// DataFusion as comma-separated UTF-8 with a header and inferred types.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadSpec {
    /// CSV: the field separator, one character (`;`, `|`, `\t`). Default `,`.
    pub delimiter: Option<String>,
    /// CSV: the quote character. Default `"`; inside quotes a doubled quote is one quote.
    pub quote: Option<String>,
    /// CSV: an escape character inside quotes (`\`), when the export escapes rather than doubles.
    pub escape: Option<String>,
    /// CSV: `utf-8` (default), `gbk`, `gb18030`, `big5`, `utf-16le`, ... (WHATWG labels). A byte
    /// order mark is honoured and dropped whatever is declared.
    pub encoding: Option<String>,
    /// CSV: lines starting with this character are skipped (`#`).
    pub comment: Option<String>,
    /// Excel: the sheet by name. Default the first sheet.
    pub sheet: Option<String>,
    /// Excel: the cells holding the table, header row first (`A1:F200`, or `B3:F` to the last
    /// row). Default the sheet's used range.
    pub range: Option<String>,
    /// Whether the first row names the columns. Default true.
    pub header: Option<bool>,
    /// Column names, in file order: replace the header's (`A1..A16` in a district file) or name
    /// the columns of a file without one.
    pub names: Option<Vec<String>>,
    /// Values that mean "unknown" in every column: `["?", "NA"]`. An empty field is always null
    /// (except in a `string` column, where it is the empty string unless `""` is listed here).
    #[serde(default)]
    pub null: Vec<String>,
    /// Column types by name. A column not listed is inferred from its values: int64 when every
    /// value is an integer without a leading zero (an account number `0012` stays text), float64
    /// when every value is a number, date for `YYYY-MM-DD`, timestamp for ISO date-times, else
    /// string.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnTypeSpec>,
}

/// `amount: float64` or `opened: { type: date, format: yymmdd, century: 1900 }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ColumnTypeSpec {
    Plain(ColumnType),
    Detailed(DetailedColumnType),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetailedColumnType {
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Dates and timestamps: `yymmdd`, `yyyymmdd` (also as integers: `10203` is `010203`), `iso`
    /// (default), or a chrono pattern such as `%d.%m.%Y` or `%y%m%d %H:%M:%S`.
    pub format: Option<String>,
    /// Two-digit years: the century they are in (`1900`: `93` is 1993). Without it, 00-68 are
    /// 2000-2068 and 69-99 are 1969-1999 (the POSIX rule).
    pub century: Option<i32>,
    /// Timestamps: the zone their wall-clock times are in (`UTC`, `Asia/Shanghai`); stored as
    /// instants. Without it they are wall-clock times of the bank's calendar.
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Boolean,
    Date,
    Timestamp,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

impl ColumnTypeSpec {
    pub fn data_type(&self) -> ColumnType {
        match self {
            ColumnTypeSpec::Plain(t) => *t,
            ColumnTypeSpec::Detailed(d) => d.data_type,
        }
    }

    pub fn format(&self) -> Option<&str> {
        match self {
            ColumnTypeSpec::Plain(_) => None,
            ColumnTypeSpec::Detailed(d) => d.format.as_deref(),
        }
    }

    pub fn century(&self) -> Option<i32> {
        match self {
            ColumnTypeSpec::Plain(_) => None,
            ColumnTypeSpec::Detailed(d) => d.century,
        }
    }

    pub fn time_zone(&self) -> Option<&str> {
        match self {
            ColumnTypeSpec::Plain(_) => None,
            ColumnTypeSpec::Detailed(d) => d.time_zone.as_deref(),
        }
    }
}
