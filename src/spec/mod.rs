//! Plain serde types for the YAML an analyst writes. No I/O and no validation beyond shape:
//! `deny_unknown_fields` everywhere so a typo is an error, not a silently ignored key.
//! The catalog turns these into validated, frozen definitions.

pub mod alert;
pub mod dashboard;
pub mod nesting;
pub mod profile;
pub mod read;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::protocol::Grain;

/// One `metrics/*.yaml` file. Every section is optional so definitions can be split across files.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionFile {
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    pub hierarchies: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub measures: BTreeMap<String, MeasureSpec>,
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSpec>,
    /// Golden-value tests an analyst pins next to the metrics (run by `kpilens test`).
    #[serde(default)]
    pub tests: BTreeMap<String, TestSpec>,
    /// Pre-aggregated tables the planner reads instead of a model when they answer exactly.
    #[serde(default)]
    pub rollups: BTreeMap<String, RollupSpec>,
    /// KPI and record alert rules, evaluated by the server's scheduler.
    #[serde(default)]
    pub alerts: BTreeMap<String, alert::AlertSpec>,
    /// The 360° customer view: one project declares it once.
    pub profile: Option<profile::ProfileSpec>,
}

/// A rollup: a pre-aggregated form of one model, by a set of dimensions, in one of three forms:
/// - `measures`: the measures' partial results by the model's time column (kept as it is, so
///   snapshots and period ends stay exact);
/// - `churn`: a churn metric's counts (active at start, churned, returned) for every pair of
///   consecutive period ends at `grains`;
/// - `funnel`: each entity of a funnel metric with its first-step time and the time it reached
///   each later step;
/// - `cohort`: a cohort metric's sizes and active counts per (cohort, period, dimensions).
///
/// Built when the catalog loads and after every data refresh; a query uses it when it answers
/// the query exactly (its dimensions and filters all in it, the periods it needs held).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupSpec {
    pub model: String,
    pub dimensions: Vec<String>,
    /// Measures of `model` whose partial results combine exactly: sum, count, min, max, avg (as
    /// a sum and a count), and distinct counts where each entity falls in one group.
    #[serde(default)]
    pub measures: Vec<String>,
    /// A churn metric of `model`: every churn metric with its entity and activity rule reads it.
    pub churn: Option<String>,
    /// The grains a churn rollup holds consecutive period-end pairs for (default: month).
    #[serde(default)]
    pub grains: Vec<Grain>,
    /// A funnel metric of `model`.
    pub funnel: Option<String>,
    /// A cohort metric of `model`.
    pub cohort: Option<String>,
    pub description: Option<String>,
}

/// One metric test: a fixture data directory, a query, and the numbers it must give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Directory (relative to the project) laid out like the data directory. Files may be CSV
    /// even where the model reads Parquet: `kpilens test` converts them. Without it the test
    /// reads the data folder itself (`--data`): counts pinned on a real data set.
    pub fixture: Option<String>,
    /// A query in the JSON protocol, written as YAML.
    pub query: serde_json::Value,
    pub expect: TestExpectation,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestExpectation {
    /// Expected rows in order; each lists only the columns it checks.
    #[serde(default)]
    pub rows: Option<Vec<BTreeMap<String, serde_json::Value>>>,
    /// Expected totals, by column.
    #[serde(default)]
    pub totals: Option<BTreeMap<String, serde_json::Value>>,
    /// Relative tolerance for numbers (default 1e-9).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// A data model: one table (file source or SQL model) with its time column, keys and dimensions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub source: SourceSpec,
    /// The date/timestamp column that places a row in time (snapshot date or event time).
    pub time: Option<String>,
    /// Unique key of the model; required for a model that other models join to.
    pub primary_key: Option<String>,
    /// Many-to-one joins to other models: `customer: { model: customer_dim, on: customer_id }`.
    #[serde(default)]
    pub joins: BTreeMap<String, JoinSpec>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, DimensionSpec>,
    pub label: Option<Label>,
    pub description: Option<String>,
    /// Columns a drill-through may return, row by row. Empty: the model is not drillable
    /// (default deny: personal data never leaves by accident). Personal data is listed only
    /// masked: `{ column: phone, mask: phone }`.
    #[serde(default)]
    pub drill_through: Vec<DrillColumnSpec>,
    /// Personal columns and how each is masked: `{ name: name, phone: phone, id_number:
    /// id_number }`. Declared once, on the model over the file; every SQL model reading it
    /// inherits them (see `catalog::personal`).
    #[serde(default)]
    pub personal_data: BTreeMap<String, Mask>,
    /// A SQL model computed once per data version and stored beside the rollups, then read from
    /// there by every query instead of being recomputed in each (a view joining silos):
    /// `materialize: true`, or `{ order_by: [region, branch] }` to store the rows sorted so a
    /// filter on those columns reads only the row groups that hold its values.
    pub materialize: Option<MaterializeSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum MaterializeSpec {
    On(bool),
    Sorted { order_by: Vec<String> },
}

impl MaterializeSpec {
    /// The columns to sort by when on (empty: stored in the order computed), none when off.
    pub fn order_by(&self) -> Option<&[String]> {
        match self {
            MaterializeSpec::On(true) => Some(&[]),
            MaterializeSpec::On(false) => None,
            MaterializeSpec::Sorted { order_by } => Some(order_by),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DrillColumnSpec {
    Column(String),
    Masked { column: String, mask: Mask },
}

impl DrillColumnSpec {
    pub fn column(&self) -> &str {
        match self {
            DrillColumnSpec::Column(c) | DrillColumnSpec::Masked { column: c, .. } => c,
        }
    }

    pub fn mask(&self) -> Option<Mask> {
        match self {
            DrillColumnSpec::Column(_) => None,
            DrillColumnSpec::Masked { mask, .. } => Some(*mask),
        }
    }
}

/// How a personal-data column is shown: `name` 张** (first character), `phone` 138****5678,
/// `id_number` 110101********1234, `all` ***.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    Name,
    Phone,
    IdNumber,
    All,
}

impl Mask {
    /// As written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Mask::Name => "name",
            Mask::Phone => "phone",
            Mask::IdNumber => "id_number",
            Mask::All => "all",
        }
    }
}

/// Where a model's rows come from: exactly one of the four. File paths are relative to the data
/// directory. (A struct rather than an enum: YAML enums would need `!tag` syntax.)
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A Parquet file or a directory of Parquet files.
    pub parquet: Option<String>,
    /// A CSV file (with header) or a directory of CSV files.
    pub csv: Option<String>,
    /// An Excel workbook (`.xlsx`), one sheet of it.
    pub xlsx: Option<String>,
    /// A SQL model: `sql/<name>.sql`.
    pub sql: Option<String>,
    /// How to read a CSV or a workbook: dialect, encoding, sheet and range, column types.
    pub read: Option<read::ReadSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Parquet(&'a str),
    Csv(&'a str),
    Xlsx(&'a str),
    Sql(&'a str),
}

impl SourceSpec {
    pub fn source(&self) -> Result<Source<'_>, &'static str> {
        let source = match (&self.parquet, &self.csv, &self.xlsx, &self.sql) {
            (Some(p), None, None, None) => Source::Parquet(p),
            (None, Some(c), None, None) => Source::Csv(c),
            (None, None, Some(x), None) => Source::Xlsx(x),
            (None, None, None, Some(s)) => Source::Sql(s),
            _ => return Err("give exactly one of 'parquet', 'csv', 'xlsx' or 'sql'"),
        };
        match (&source, &self.read) {
            (Source::Parquet(_) | Source::Sql(_), Some(_)) => {
                Err("'read' options apply to 'csv' and 'xlsx' sources only")
            }
            (Source::Csv(_), Some(r)) if r.sheet.is_some() || r.range.is_some() => {
                Err("read.sheet and read.range apply to 'xlsx' sources, not 'csv'")
            }
            (Source::Xlsx(_), Some(r))
                if r.delimiter.is_some()
                    || r.quote.is_some()
                    || r.escape.is_some()
                    || r.encoding.is_some()
                    || r.comment.is_some() =>
            {
                Err(
                    "read.delimiter, quote, escape, encoding and comment apply to 'csv' sources, not 'xlsx'",
                )
            }
            _ => Ok(source),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// The target model; joined on its `primary_key`.
    pub model: String,
    /// The column of this model holding the target's key.
    pub on: String,
}

/// A dimension is either a column of the model or reached through a declared join
/// (`via: customer.region`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionSpec {
    pub column: Option<String>,
    pub via: Option<String>,
    pub label: Option<Label>,
    pub description: Option<String>,
    /// How coded values are shown (码值): `{ retail: { zh: 零售, en: Retail } }`. Values not
    /// listed show as they are.
    #[serde(default)]
    pub value_labels: BTreeMap<String, Label>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Label {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// An aggregation over one model's rows. Measures are building blocks; queries ask for metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureSpec {
    pub model: String,
    pub agg: Aggregation,
    /// SQL expression over the model's columns; required except for `count` (which counts rows).
    pub expr: Option<String>,
    /// SQL predicate over the model's columns; rows failing it do not contribute.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub semi_additive: Option<SemiAdditiveSpec>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Sum,
    Count,
    CountDistinct,
    Avg,
    Min,
    Max,
}

/// Balances and AUM: taken at the period's snapshot, never summed over time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemiAdditiveSpec {
    /// Only `time` is supported: the snapshot axis is the model's time column.
    pub over: SemiAdditiveAxis,
    pub pick: SnapshotPick,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SemiAdditiveAxis {
    Time,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotPick {
    /// The period's last snapshot date (e.g. the quarter's last `month_end`).
    Last,
    /// The period's first snapshot date (opening balances).
    First,
    /// The mean over the period's snapshot dates of the per-date totals (日均 with daily
    /// snapshots; the average of month ends with monthly ones), never a mean of rows: a date a
    /// group has no rows on counts as 0 for it; a date without any snapshot (a holiday without a
    /// file) is not a date of the period.
    Average,
}

/// A metric as an analyst declares it. One flat struct rather than a tagged enum so that a
/// missing or misplaced field gets a precise message from validation (naming the key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    #[serde(rename = "type")]
    pub kind: MetricKind,
    /// `simple`: the measure it exposes.
    pub measure: Option<String>,
    /// `ratio`: numerator and denominator measures (ratio of sums at every level).
    pub numerator: Option<String>,
    pub denominator: Option<String>,
    /// `derived`: a SQL expression over other metrics.
    pub expr: Option<String>,
    /// `churn`, `funnel`, `cohort`: the model holding the per-entity snapshots or events.
    pub model: Option<String>,
    /// `churn`, `funnel`, `cohort`: the column identifying an entity (customer, opportunity).
    pub entity: Option<String>,
    /// `churn`, `cohort`: SQL predicate over the model's columns saying an entity is active.
    pub active_when: Option<String>,
    /// `churn`: which number the metric shows (default `rate`).
    pub value: Option<ChurnValue>,
    /// `funnel`: the column naming the step, and the steps in order.
    pub step: Option<String>,
    #[serde(default)]
    pub steps: Vec<String>,
    /// `funnel`: how each step is shown: `{ due_diligence: { zh: 尽职调查, en: Due diligence } }`
    /// (a step without one shows its key).
    #[serde(default)]
    pub step_labels: BTreeMap<String, Label>,
    /// `funnel`: how long after its first step an entity may take to reach the others, e.g.
    /// `90d`; `cumulative`: how many periods a rolling total spans, e.g. `12`.
    pub window: Option<Window>,
    /// `cumulative`: where the running total starts again (`year` for YTD, `quarter`, `month`,
    /// `never` for a running total).
    pub reset: Option<Reset>,
    /// `cumulative` with a `window`: the mean of the window's periods instead of their sum.
    pub average: Option<bool>,
    /// `cohort`: the grain of cohorts and of the periods after them.
    pub period: Option<Grain>,
    /// `cohort`: a date dimension defining the cohort (e.g. the opening date); by default the
    /// period of the entity's first active snapshot.
    pub cohort_by: Option<String>,
    /// `target`: the org level targets are set at (a level of a hierarchy, e.g. `branch`).
    pub level: Option<String>,
    /// `target`: whether targets add up the hierarchy above `level` (a branch's balance
    /// targets make its region's); without it a target is shown at its level only.
    pub additive: Option<bool>,
    /// `attainment`: the metric achieved, and the `target` metric it is measured against.
    pub actual: Option<String>,
    pub target: Option<String>,
    /// What a period without data shows: `zero`, `null` or `carry` (the last value).
    pub empty: Option<EmptyPeriod>,
    pub label: Option<Label>,
    pub description: Option<String>,
    pub format: Option<FormatSpec>,
    pub direction: Option<Direction>,
    pub thresholds: Option<Thresholds>,
}

/// The name YAML gives a unit variant: serde's own, so each is spelled once.
fn yaml_name(value: &impl Serialize, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => f.write_str(&name),
        _ => Err(std::fmt::Error),
    }
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        yaml_name(self, f)
    }
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        yaml_name(self, f)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Simple,
    Ratio,
    Derived,
    Churn,
    Funnel,
    Cohort,
    Cumulative,
    Target,
    Attainment,
    TimeProgress,
}

/// A metric's `window`: a span of time (funnels) or a number of periods (rolling totals).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Window {
    Periods(u32),
    Span(String),
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Window::Periods(n) => write!(f, "{n}"),
            Window::Span(s) => f.write_str(s),
        }
    }
}

/// Where a cumulative total starts again.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    Year,
    Quarter,
    Month,
    Never,
}

/// The numbers a churn metric can show. They come from one computation.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ChurnValue {
    /// churned / active at the end of the previous period.
    Rate,
    /// Entities active at the end of the previous period.
    ActiveAtStart,
    /// Active at the end of the previous period and not at the end of this one.
    Churned,
    /// Present but not active at the end of the previous period, active at the end of this one.
    Returned,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EmptyPeriod {
    Zero,
    Null,
    /// The last earlier value of the same series (balances).
    Carry,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    pub style: FormatStyle,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
    /// ISO currency code for `currency` style, e.g. CNY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatStyle {
    Number,
    Integer,
    Percent,
    Currency,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
    #[default]
    Neutral,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub warn: f64,
    pub alert: f64,
}
