//! The query protocol as clients send it. Field names are a public contract.

use std::collections::BTreeMap;

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
    /// Comparison values (and delta, delta %) for every metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<Comparison>,
    /// Drill one level down a hierarchy from a parent member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRequest>,
    /// A time series returns every period of the range (and every period x member); each metric
    /// says what an empty period shows. On by default.
    #[serde(default = "default_true")]
    pub fill_gaps: bool,
    /// Let the planner answer from a rollup where one holds the answer exactly (the response's
    /// `meta.rollups` names it). `false` computes from the models, to check a rollup's numbers.
    #[serde(default = "default_true")]
    pub rollups: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    pub hierarchy: String,
    /// Members of the first levels of the hierarchy, e.g. `{region: 西北, branch: 西安分行}`.
    /// Empty: the top level.
    #[serde(default)]
    pub path: BTreeMap<String, serde_json::Value>,
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
    /// The day the numbers are as of (default: today in the configured time zone). A range
    /// reaching past it is clipped, and its last period, if unfinished, is partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<NaiveDate>,
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

/// Calendar buckets for time series, comparisons and cohorts.
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

/// The comparisons a query may ask for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    PreviousPeriod,
    SamePeriodLastYear,
    /// 较年初: a balance against its value at the end of the previous year (the last snapshot
    /// of that year), for every period of the year.
    #[serde(alias = "previous_year_end")]
    YearStart,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::PreviousPeriod => "previous_period",
            Comparison::SamePeriodLastYear => "same_period_last_year",
            Comparison::YearStart => "year_start",
        }
    }
}
