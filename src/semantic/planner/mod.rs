//! Validated query -> DataFusion logical plan, built with the DataFrame/Expr API. This file
//! dispatches; the floors below it flow one way:
//!
//! - `rows.rs`: a model's rows filtered, scoped and joined to the dimensions asked; ranges and
//!   periods in the calendar's zone; frames combined by key. Knows no kind.
//! - `pick.rs`: which rollup answers a part of a query (`rollup.rs` builds them, for `state`).
//! - `measures.rs`: measures grouped by (model, snapshot rule), each group scanned once (or read
//!   from its rollup) and aggregated by (period, dimensions); balances at snapshot dates.
//! - one file per kind with a plan of its own: `churn.rs` (a further part of the metric frame),
//!   `cumulative.rs`, `target.rs`; `funnel.rs` and `cohort.rs` have their own result shapes.
//! - `values.rs`: each metric as an expression over the parts' aggregated columns, so a ratio is
//!   a ratio of sums at every level and a derived metric is computed after aggregation.
//! - `columns.rs`: the output columns, their roles, the keys-first order and the limit.
//!
//! Parts are combined by UNION ALL + a second GROUP BY on the keys (`rows::union_by_keys`): each
//! key appears at most once per part, this matches null dimension values, and it never
//! multiplies rows across models.

mod churn;
mod cohort;
mod columns;
mod cumulative;
mod funnel;
mod measures;
mod pick;
pub mod rollup;
mod rows;
pub mod sequential;
mod target;
mod values;

use std::collections::BTreeSet;

use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::Expr;
use datafusion::prelude::ident;

use super::error::QueryError;
use super::validate::{PERIOD, ValidatedQuery};
use crate::catalog::{Catalog, Measure, MetricDefinition};
use crate::protocol::Grain;
pub use columns::{ColumnRole, OutputColumn, PlannedQuery};
use columns::{key_columns, sort_and_limit};
use measures::{by_model_and_pick, measures_frame};
use rows::union_by_keys;
pub(crate) use rows::{df_err, filtered_rows, range_expr};
use values::MetricValues;

pub async fn plan(catalog: &Catalog, q: &ValidatedQuery) -> Result<PlannedQuery, QueryError> {
    use MetricDefinition as D;
    match &catalog.metrics[&q.metrics[0]].definition {
        D::Funnel(f) => return funnel::plan(catalog, q, f).await,
        D::Cohort(c) => return cohort::plan(catalog, q, c).await,
        // A value per period and group: the metric frame below.
        D::Simple(_)
        | D::Ratio(_)
        | D::Derived(_)
        | D::Churn(_)
        | D::Cumulative(_)
        | D::Target(_)
        | D::Attainment(_)
        | D::TimeProgress(_) => {}
    }
    let mut columns = key_columns(q);
    columns.extend(
        q.metrics
            .iter()
            .map(|m| OutputColumn::new(m, ColumnRole::Metric)),
    );

    // Without period or dimensions there is at most one row: nothing to sort, and it is the total.
    let has_keys = q.grain.is_some() || !q.dimensions.is_empty();
    let mut rollups = BTreeSet::new();
    let rows = metric_frame(catalog, q, &q.dimensions, q.grain, &mut rollups).await?;
    let rows = sort_and_limit(rows, q, &columns, has_keys)?;

    let totals = if q.totals && has_keys {
        Some(
            metric_frame(catalog, q, &[], None, &mut rollups)
                .await?
                .into_unoptimized_plan(),
        )
    } else {
        None
    };
    Ok(PlannedQuery {
        rows: rows.into_unoptimized_plan(),
        totals,
        columns,
        rollups,
    })
}

/// Columns: [period], dimensions..., metrics... (by their names).
async fn metric_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    dims: &[String],
    grain: Option<Grain>,
    rollups: &mut BTreeSet<String>,
) -> Result<DataFrame, QueryError> {
    // The measures read as they are (a cumulative metric's own measure is read per window,
    // below), and the cumulative metrics, through derived ones.
    let under: Vec<String> = q
        .metrics
        .iter()
        .flat_map(|m| catalog.metrics_under(m))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut measures: Vec<&Measure> = Vec::new();
    let mut cumulative: Vec<(&str, &crate::catalog::CumulativeMetric)> = Vec::new();
    // Targets read over whole periods, where they answer the rows (else null: `unanswered`).
    let mut targets: Vec<&Measure> = Vec::new();
    let mut unanswered: BTreeSet<String> = BTreeSet::new();
    for metric in &under {
        use MetricDefinition as D;
        match &catalog.metrics[metric].definition {
            D::Target(t) => {
                if target::answerable(catalog, q, &t.measure, &t.level, t.additive, dims) {
                    let m = &catalog.measures[&t.measure];
                    if !targets.iter().any(|x| x.name == m.name) {
                        targets.push(m);
                    }
                } else {
                    unanswered.insert(metric.clone());
                }
            }
            D::Simple(_) | D::Ratio(_) => {
                for m in catalog.measures_of(metric) {
                    let m = &catalog.measures[&m];
                    if !measures.iter().any(|x| x.name == m.name) {
                        measures.push(m);
                    }
                }
            }
            D::Cumulative(c) => cumulative.push((metric, c)),
            // Churn has its own part (below); funnels and cohorts their own plans; the rest are
            // computed from the metrics they read.
            D::Churn(_)
            | D::Funnel(_)
            | D::Cohort(_)
            | D::Derived(_)
            | D::Attainment(_)
            | D::TimeProgress(_) => {}
        }
    }
    let groups = by_model_and_pick(&measures);

    let mut keys: Vec<String> = Vec::new();
    if grain.is_some() {
        keys.push(PERIOD.to_string());
    }
    keys.extend(dims.iter().cloned());

    let mut parts = Vec::new();
    for ((model, snapshot), group) in &groups {
        parts
            .push(measures_frame(catalog, q, model, *snapshot, group, dims, grain, rollups).await?);
    }
    let mut churn_bases: Vec<usize> = Vec::new();
    for metric in &q.metrics {
        for m in catalog.metrics_under(metric) {
            if let MetricDefinition::Churn(c) = &catalog.metrics[&m].definition
                && !churn_bases.contains(&c.base)
            {
                churn_bases.push(c.base);
            }
        }
    }
    for base in churn_bases {
        parts.push(match pick::pick_churn(catalog, q, base, dims, grain) {
            Some((r, pairs)) => {
                rollups.insert(r.name.clone());
                churn::from_rollup(catalog, q, r, base, &pairs, dims, grain).await?
            }
            None => churn::frame(catalog, q, base, dims, grain).await?,
        });
    }

    for (metric, def) in cumulative {
        parts.push(cumulative::frame(catalog, q, metric, def, dims, grain, rollups).await?);
    }
    let whole = target::whole_periods(q, grain);
    for ((model, snapshot), group) in &by_model_and_pick(&targets) {
        parts.push(
            measures_frame(
                catalog, &whole, model, *snapshot, group, dims, grain, rollups,
            )
            .await?,
        );
    }

    if parts.is_empty() {
        // Only targets that cannot answer these rows (and the time gone): nothing says which
        // rows there are.
        let named: Vec<&String> = unanswered.iter().collect();
        return Err(QueryError::invalid(format!(
            "the targets {named:?} are set per member of their level and cannot be shown by {dims:?} under these filters; ask them with the metric they measure, or by their level"
        )));
    }
    let combined = union_by_keys(parts, &keys)?;

    let values = MetricValues {
        catalog,
        unanswered: &unanswered,
    };
    let mut select: Vec<Expr> = keys.iter().map(ident).collect();
    for metric in &q.metrics {
        select.push(values.expr(metric)?.alias(metric));
    }
    combined.select(select).map_err(df_err)
}
