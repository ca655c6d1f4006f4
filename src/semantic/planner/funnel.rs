//! Ordered-step funnels over an event table (e.g. `opportunity_events`).
//!
//! An entity reaches step 1 at its first step-1 event (which must fall in the time range; its
//! period is the entity's period). It reaches step k at the earliest step-k event that is not
//! earlier than the step k-1 it reached and not later than the window after step 1. Earliest is
//! always the best choice, so repeated steps and out-of-order events are handled exactly: an
//! `approval` logged before the `application` does not count, a later one does.
//!
//! One row per (period?, dimensions..., step): entities, conversion from the previous step and
//! from step 1, drop-off, and the median hours from the previous step. Dimensions are read from
//! the entity's step-1 event.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::nullif;
use datafusion::functions_aggregate::expr_fn::{count, median, min};
use datafusion::logical_expr::{Expr, JoinType, cast};
use datafusion::prelude::{ident, lit};

use super::columns::{ColumnRole, OutputColumn, PlannedQuery, key_columns, sort_and_limit};
use super::rows::{df_err, dimension_columns, filtered_rows, period_expr, time_range};
use crate::catalog::{Catalog, FunnelMetric};
use crate::semantic::error::QueryError;
use crate::semantic::validate::PERIOD;
use crate::semantic::validate::ValidatedQuery;
use crate::spec::FormatStyle;

pub const STEP: &str = "step";
pub const STEP_ORDER: &str = "step_order";

fn reached(k: usize) -> String {
    format!("__t{k}")
}

/// The time of an entity's step-1 event, in the model's time type.
pub(super) const FIRST_TIME: &str = "__first_time";

/// One row per (entity, dims) that reached step 1 in `range`: `__e`, dims, `__first_time` (the
/// step-1 event's time, in the model's type) and `__t1`.. (microseconds at which it reached each
/// step, null where it did not). What a funnel rollup holds, over the whole range.
pub(super) async fn entities(
    catalog: &Catalog,
    f: &FunnelMetric,
    dims: &[String],
    filters: &[crate::semantic::validate::Filter],
    range: Option<Expr>,
) -> Result<DataFrame, QueryError> {
    let model = &catalog.models[&f.model];
    let t = model
        .time
        .as_ref()
        .expect("validated: funnel models have time");
    let (events, dim_exprs) = filtered_rows(catalog, model, dims, filters).await?;
    let micros = cast(
        cast(
            ident(&t.column),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        DataType::Int64,
    );
    let mut select = vec![
        ident(&f.entity).alias("__e"),
        ident(&t.column).alias("__time"),
        micros.alias("__us"),
        cast(ident(&f.step), DataType::Utf8).alias("__step"),
    ];
    select.extend(dimension_columns(catalog, dims, &dim_exprs));
    // The time range applies to step 1 only: later steps may fall after it, within the window.
    let events = events
        .select(
            select
                .into_iter()
                .chain([range.unwrap_or(lit(true)).alias("__in_range")])
                .collect::<Vec<Expr>>(),
        )
        .map_err(df_err)?;

    let is_step = |name: &str| ident("__step").eq(lit(ScalarValue::Utf8(Some(name.to_string()))));
    let mut group: Vec<Expr> = vec![ident("__e")];
    group.extend(dims.iter().map(ident));
    let mut entities = events
        .clone()
        .filter(is_step(&f.steps[0]).and(ident("__in_range")))
        .map_err(df_err)?
        .aggregate(
            group.clone(),
            vec![
                min(ident("__us")).alias(reached(1)),
                min(ident("__time")).alias(FIRST_TIME),
            ],
        )
        .map_err(df_err)?;
    group.push(ident(FIRST_TIME));
    group.push(ident(reached(1)));

    for (i, step) in f.steps.iter().enumerate().skip(1) {
        let k = i + 1;
        let step_events = events
            .clone()
            .filter(is_step(step))
            .map_err(df_err)?
            .select(vec![
                ident("__e").alias("__ek"),
                ident("__us").alias("__usk"),
            ])
            .map_err(df_err)?;
        let on = vec![
            ident("__e").eq(ident("__ek")),
            ident("__usk").gt_eq(ident(reached(k - 1))),
            ident("__usk").lt_eq(ident(reached(1)) + lit(f.window_micros)),
        ];
        entities = entities
            .join_on(step_events, JoinType::Left, on)
            .map_err(df_err)?
            .aggregate(group.clone(), vec![min(ident("__usk")).alias(reached(k))])
            .map_err(df_err)?;
        group.push(ident(reached(k)));
    }
    Ok(entities)
}

pub(super) async fn plan(
    catalog: &Catalog,
    q: &ValidatedQuery,
    f: &FunnelMetric,
) -> Result<PlannedQuery, QueryError> {
    let model = &catalog.models[&f.model];
    let t = model
        .time
        .as_ref()
        .expect("validated: funnel models have time");
    let dims = &q.dimensions;
    let metric = &q.metrics[0];

    let mut rollups = std::collections::BTreeSet::new();
    let entities = match super::pick::pick_funnel(catalog, q, metric) {
        Some(r) => {
            rollups.insert(r.name.clone());
            let (mut rows, _) = filtered_rows(catalog, &r.model, &[], &q.filters).await?;
            if let Some(range) = time_range(&r.model, q)? {
                rows = rows.filter(range).map_err(df_err)?;
            }
            rows
        }
        None => entities(catalog, f, dims, &q.filters, time_range(model, q)?).await?,
    };
    // Per (period, dims): entities reaching each step, median hours from the previous step.
    let mut keys: Vec<Expr> = Vec::new();
    if let Some(g) = q.grain {
        keys.push(period_expr(g, ident(FIRST_TIME), &t.data_type, &q.calendar).alias(PERIOD));
    }
    keys.extend(dims.iter().map(ident));
    let mut aggs = Vec::new();
    for k in 1..=f.steps.len() {
        aggs.push(count(ident(reached(k))).alias(format!("__n{k}")));
        if k > 1 {
            let hours = cast(ident(reached(k)) - ident(reached(k - 1)), DataType::Float64)
                / lit(3_600_000_000.0f64);
            aggs.push(median(hours).alias(format!("__h{k}")));
        }
    }
    let counted = entities.aggregate(keys, aggs).map_err(df_err)?;

    // One row per step.
    let mut key_cols: Vec<Expr> = Vec::new();
    if q.grain.is_some() {
        key_cols.push(ident(PERIOD));
    }
    key_cols.extend(dims.iter().map(ident));
    let as_f64 = |e: Expr| cast(e, DataType::Float64);
    let mut rows: Option<DataFrame> = None;
    for (i, step) in f.steps.iter().enumerate() {
        let k = i + 1;
        let n = ident(format!("__n{k}"));
        let prev = if k == 1 {
            cast(lit(ScalarValue::Null), DataType::Int64)
        } else {
            ident(format!("__n{}", k - 1))
        };
        let hours = if k == 1 {
            cast(lit(ScalarValue::Null), DataType::Float64)
        } else {
            ident(format!("__h{k}"))
        };
        let mut select = key_cols.clone();
        select.extend([
            lit(ScalarValue::Utf8(Some(step.clone()))).alias(STEP),
            lit(k as i64).alias(STEP_ORDER),
            n.clone().alias(metric),
            (as_f64(n.clone()) / nullif(as_f64(prev.clone()), lit(0.0f64)))
                .alias("step_conversion"),
            (as_f64(n.clone()) / nullif(as_f64(ident("__n1")), lit(0.0f64)))
                .alias("overall_conversion"),
            (prev - n).alias("drop_off"),
            hours.alias("median_hours_from_previous"),
        ]);
        let part = counted.clone().select(select).map_err(df_err)?;
        rows = Some(match rows {
            None => part,
            Some(r) => r.union(part).map_err(df_err)?,
        });
    }
    let rows = rows.expect("at least two steps");

    let mut columns = key_columns(q);
    columns.push(OutputColumn {
        value_labels: f.step_labels.clone(),
        ..OutputColumn::described(STEP, ColumnRole::Key, "步骤", "Step", FormatStyle::Number)
    });
    columns.push(OutputColumn::described(
        STEP_ORDER,
        ColumnRole::Key,
        "步骤序号",
        "Step order",
        FormatStyle::Integer,
    ));
    columns.push(OutputColumn::new(metric, ColumnRole::Metric));
    columns.push(OutputColumn::described(
        "step_conversion",
        ColumnRole::Metric,
        "环节转化率",
        "Conversion from previous step",
        FormatStyle::Percent,
    ));
    columns.push(OutputColumn::described(
        "overall_conversion",
        ColumnRole::Metric,
        "整体转化率",
        "Conversion from first step",
        FormatStyle::Percent,
    ));
    columns.push(OutputColumn::described(
        "drop_off",
        ColumnRole::Metric,
        "流失数",
        "Drop-off",
        FormatStyle::Integer,
    ));
    columns.push(OutputColumn::described(
        "median_hours_from_previous",
        ColumnRole::Metric,
        "距上一步中位时长(小时)",
        "Median hours from previous step",
        FormatStyle::Number,
    ));
    // Default order: period, dimensions, then steps in funnel order (not alphabetically).
    let sort_cols: Vec<OutputColumn> = columns.iter().filter(|c| c.name != STEP).cloned().collect();
    let rows = sort_and_limit(rows, q, &sort_cols, true)?;
    Ok(PlannedQuery {
        rows: rows.into_unoptimized_plan(),
        totals: None,
        columns,
        rollups,
    })
}
