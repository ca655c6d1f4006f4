//! What a plan gives back: the output columns and their roles, and the keys-first order with
//! one row past the limit.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{LogicalPlan, SortExpr};
use datafusion::prelude::ident;

use super::rows::df_err;
use crate::semantic::error::QueryError;
use crate::semantic::validate::{PERIOD, ValidatedQuery};
use crate::spec::{FormatSpec, FormatStyle, Label};

/// What the engine runs for one query.
pub struct PlannedQuery {
    pub rows: LogicalPlan,
    pub totals: Option<LogicalPlan>,
    pub columns: Vec<OutputColumn>,
    /// Rollups read instead of their models.
    pub rollups: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub role: ColumnRole,
    /// Label and format of a column that is not a catalog metric or dimension (funnel steps,
    /// cohort offsets, comparisons).
    pub meta: Option<(Label, FormatSpec)>,
    /// How this column's values are shown (a funnel's steps), where declared.
    pub value_labels: BTreeMap<String, Label>,
}

impl OutputColumn {
    pub fn new(name: impl Into<String>, role: ColumnRole) -> Self {
        Self {
            name: name.into(),
            role,
            meta: None,
            value_labels: BTreeMap::new(),
        }
    }

    pub fn described(
        name: impl Into<String>,
        role: ColumnRole,
        zh: &str,
        en: &str,
        style: FormatStyle,
    ) -> Self {
        Self {
            name: name.into(),
            role,
            meta: Some((
                Label {
                    zh: Some(zh.into()),
                    en: Some(en.into()),
                },
                FormatSpec {
                    style,
                    decimals: None,
                    currency: None,
                },
            )),
            value_labels: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    Time,
    Dimension,
    /// A key that is neither time nor a dimension: a funnel step, periods since a cohort began.
    Key,
    Metric,
    /// A value derived from a metric after the query: comparison, delta, share, rank.
    Derived,
}

/// [period], dimensions...: the keys every row-per-group result starts with.
pub(super) fn key_columns(q: &ValidatedQuery) -> Vec<OutputColumn> {
    let mut columns = Vec::new();
    if q.grain.is_some() {
        columns.push(OutputColumn::new(PERIOD, ColumnRole::Time));
    }
    columns.extend(
        q.dimensions
            .iter()
            .map(|d| OutputColumn::new(d, ColumnRole::Dimension)),
    );
    columns
}

/// The requested order (by default the keys, so time series read left to right), then one row
/// past the limit, which tells the caller the result was truncated.
pub(super) fn sort_and_limit(
    rows: DataFrame,
    q: &ValidatedQuery,
    columns: &[OutputColumn],
    has_keys: bool,
) -> Result<DataFrame, QueryError> {
    let rows = if has_keys {
        let sort: Vec<SortExpr> = if q.order.is_empty() {
            columns
                .iter()
                .filter(|c| {
                    matches!(
                        c.role,
                        ColumnRole::Time | ColumnRole::Dimension | ColumnRole::Key
                    )
                })
                .map(|c| ident(&c.name).sort(true, false))
                .collect()
        } else {
            q.order
                .iter()
                .map(|o| ident(&o.by).sort(!o.desc, false))
                .collect()
        };
        rows.sort(sort).map_err(df_err)?
    } else {
        rows
    };
    rows.limit(0, Some(q.limit + 1)).map_err(df_err)
}
