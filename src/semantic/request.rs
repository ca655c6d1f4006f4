//! The query protocol as clients send it (DESIGN.md §4). Field names are a public contract.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub metrics: Vec<String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub time: Option<TimeRequest>,
    #[serde(default)]
    pub filters: Vec<FilterRequest>,
    #[serde(default)]
    pub order: Vec<OrderRequest>,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Adds a grand-total row over the whole range (ratios as ratio of sums, balances at the
    /// range's last snapshot). On by default.
    #[serde(default = "default_true")]
    pub totals: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeRequest {
    /// Bucket rows by period; without a grain the whole range is one period.
    #[serde(default)]
    pub grain: Option<Grain>,
    /// First day included.
    #[serde(default)]
    pub from: Option<NaiveDate>,
    /// Last day included.
    #[serde(default)]
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterRequest {
    pub dimension: String,
    pub op: FilterOp,
    /// For eq, ne, gt, gte, lt, lte; for is_null, `false` means IS NOT NULL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// For in, not_in (any number) and between (exactly two, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
    IsNull,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// A metric, a dimension, or `period`.
    pub by: String,
    #[serde(default)]
    pub desc: bool,
}
