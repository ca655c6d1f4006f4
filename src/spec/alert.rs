//! Alert rules as an analyst writes them (`alerts:` in `metrics/*.yaml`). Two kinds: a KPI rule
//! watches a metric per member of an org level; a record rule turns every row of a model that
//! meets a condition into a task for the row's owner.

use serde::Deserialize;

use super::{Grain, Label};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSpec {
    pub kind: AlertKind,
    pub label: Option<Label>,
    pub description: Option<String>,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// How often the rule is evaluated: `15m`, `1h`, `1d`.
    pub every: String,

    /// kpi: the metric watched.
    pub metric: Option<String>,
    /// kpi: evaluate per member of this level (`branch`); absent: the whole bank.
    pub for_each: Option<String>,
    /// kpi: the period the value is taken over (default month): the one holding the latest data,
    /// or the clock's date if that is earlier.
    pub grain: Option<Grain>,
    /// kpi: the condition: `{ above: 0.05 }`, `{ below: 0.8 }`, `{ up_pct: 20, vs: previous_period }`.
    pub when: Option<KpiCondition>,
    /// kpi: how long the condition must hold before the alert fires (`0m`: at once).
    pub pending: Option<String>,

    /// record: the model whose rows are checked.
    pub model: Option<String>,
    /// record: SQL predicate over the model's columns; `now()` and `current_date()` are the
    /// evaluation clock's.
    #[serde(rename = "where")]
    pub condition: Option<String>,
    /// record: the column identifying a row (one task per row and rule).
    pub key: Option<String>,
    /// record: the dimension of the model that names who receives the task (an RM).
    pub owner: Option<String>,
    /// record: extra columns shown with the task.
    #[serde(default)]
    pub show: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Kpi,
    Record,
}

/// Declared in increasing order: lists sort the most severe first by it.
#[derive(
    Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KpiCondition {
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// The value rose by at least this many percent against `vs`.
    pub up_pct: Option<f64>,
    /// The value fell by at least this many percent against `vs`.
    pub down_pct: Option<f64>,
    /// `previous_period` or `same_period_last_year` (for up_pct / down_pct).
    pub vs: Option<crate::protocol::Comparison>,
}
