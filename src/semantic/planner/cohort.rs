//! Cohort retention over a per-entity period snapshot.
//!
//! An entity's cohort is the period of its first active snapshot (or of its `cohort_by` date).
//! Snapshots are read at each period's end (the last snapshot date in the period, over the whole
//! model). For a cohort C and every period P from C to the last period with data:
//! `active` = cohort members active in P's end snapshot, `retention` = active / cohort size.
//! Periods in which no member is active still appear (0), so the triangle has no holes.
//! The time range selects cohorts; the periods after them run to the end of the data.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::{date_part, nullif};
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Expr, JoinType, cast};
use datafusion::prelude::{ident, lit};

use super::columns::{ColumnRole, OutputColumn, PlannedQuery, sort_and_limit};
use super::rows::{
    count_distinct_by, df_err, entity_snapshot, filtered_rows, period_expr, range_expr,
};
use crate::catalog::{Catalog, CohortMetric};
use crate::protocol::Grain;
use crate::semantic::calendar::period_start;
use crate::semantic::error::QueryError;
use crate::semantic::validate::ValidatedQuery;
use crate::spec::FormatStyle;

pub const COHORT: &str = "cohort";
pub const PERIODS_SINCE: &str = "periods_since";

pub(super) async fn plan(
    catalog: &Catalog,
    q: &ValidatedQuery,
    c: &CohortMetric,
) -> Result<PlannedQuery, QueryError> {
    let dims = &q.dimensions;
    let g = c.grain;
    let metric = &q.metrics[0];
    let mut rollups = std::collections::BTreeSet::new();
    let combined = match super::pick::pick_cohort(catalog, q, metric) {
        Some(r) => {
            rollups.insert(r.name.clone());
            from_rollup(catalog, q, r, g).await?
        }
        None => triangle(catalog, c, dims, &q.filters, (q.from, q.to), &q.calendar).await?,
    };
    finish(q, dims, g, metric, combined, rollups)
}

/// The cohorts a query's range selects from a cohort rollup, with its filters, summed over the
/// dimensions the query does not group by.
async fn from_rollup(
    catalog: &Catalog,
    q: &ValidatedQuery,
    r: &crate::catalog::Rollup,
    g: Grain,
) -> Result<DataFrame, QueryError> {
    let (mut rows, _) = filtered_rows(catalog, &r.model, &[], &q.filters).await?;
    let first = q.from.map(|f| period_start(f, g, q.calendar.week_start));
    if let Some(range) = range_expr(
        ident(COHORT),
        &DataType::Date32,
        first,
        q.to.and_then(|d| d.succ_opt()),
        &q.calendar,
    )? {
        rows = rows.filter(range).map_err(df_err)?;
    }
    let mut keys: Vec<Expr> = vec![ident(COHORT)];
    keys.extend(q.dimensions.iter().map(ident));
    keys.push(ident("__p"));
    rows.aggregate(
        keys,
        vec![
            sum(ident("__size")).alias("__size"),
            sum(ident("__active")).alias("__active"),
        ],
    )
    .map_err(df_err)
}

/// The triangle before its metrics: (cohort, dims..., `__p`, `__size`, `__active`), a row for
/// every period from each cohort to the last with data. What a cohort rollup holds, over every
/// cohort.
pub(super) async fn triangle(
    catalog: &Catalog,
    c: &CohortMetric,
    dims: &[String],
    filters: &[crate::semantic::validate::Filter],
    (from, to): (Option<chrono::NaiveDate>, Option<chrono::NaiveDate>),
    calendar: &crate::semantic::calendar::CalendarConfig,
) -> Result<DataFrame, QueryError> {
    let model = &catalog.models[&c.model];
    let t = model
        .time
        .as_ref()
        .expect("validated: cohort models have time");
    let g = c.grain;

    // Each period's end snapshot date, over the whole model.
    let ends = catalog
        .scan(model)
        .map_err(df_err)?
        .aggregate(
            vec![period_expr(g, ident(&t.column), &t.data_type, calendar).alias("__p")],
            vec![max(ident(&t.column)).alias("__end")],
        )
        .map_err(df_err)?;

    let mut needed: Vec<String> = dims.to_vec();
    needed.extend(c.cohort_by.iter().filter(|cb| !dims.contains(cb)).cloned());
    let (rows, dim_exprs) = filtered_rows(catalog, model, &needed, filters).await?;
    let mut select = entity_snapshot(
        catalog, &c.entity, &t.column, &c.active, "__act", dims, &dim_exprs,
    )?;
    if let Some(cb) = &c.cohort_by {
        let cb_type = &catalog.dimensions[cb].data_type;
        select.push(period_expr(g, dim_exprs[cb].clone(), cb_type, calendar).alias("__cb"));
    }
    // The period ends (a few dozen rows) on the left, the side a hash join builds its table on:
    // with the model's rows there, the build held every snapshot row in memory (1.8 GB at 10M
    // `customer_month` rows) and the retention rollup was refused for memory.
    let at_end = ends
        .clone()
        .join_on(
            rows.select(select).map_err(df_err)?,
            JoinType::Inner,
            vec![ident("__end").eq(ident("__t"))],
        )
        .map_err(df_err)?;

    let mut entity_keys: Vec<Expr> = vec![ident("__e")];
    entity_keys.extend(dims.iter().map(ident));
    let cohorts = match &c.cohort_by {
        Some(_) => at_end
            .clone()
            .aggregate(entity_keys, vec![min(ident("__cb")).alias(COHORT)]),
        None => at_end
            .clone()
            .filter(ident("__act").eq(lit(1i64)))
            .and_then(|a| a.aggregate(entity_keys, vec![min(ident("__p")).alias(COHORT)])),
    }
    .map_err(df_err)?;
    let first = from.map(|f| period_start(f, g, calendar.week_start));
    let cohorts = match range_expr(
        ident(COHORT),
        &DataType::Date32,
        first,
        to.and_then(|d| d.succ_opt()),
        calendar,
    )? {
        Some(r) => cohorts.filter(r).map_err(df_err)?,
        None => cohorts,
    };

    let mut keys: Vec<Expr> = vec![ident(COHORT)];
    keys.extend(dims.iter().map(ident));
    let sizes = count_distinct_by(cohorts.clone(), keys.clone(), ident("__e"), "__size")?;

    // Members active at each later period end.
    let active = at_end
        .filter(ident("__act").eq(lit(1i64)))
        .and_then(|a| a.select(vec![ident("__e").alias("__e2"), ident("__p").alias("__p2")]))
        .map_err(df_err)?;
    let counts = cohorts
        .join_on(
            active,
            JoinType::Inner,
            vec![
                ident("__e").eq(ident("__e2")),
                ident("__p2").gt_eq(ident(COHORT)),
            ],
        )
        .map_err(df_err)
        .and_then(|j| {
            let by = keys.iter().cloned().chain([ident("__p2")]).collect();
            count_distinct_by(j, by, ident("__e"), "__active")
        })?
        .select({
            let mut s = keys.clone();
            s.extend([
                ident("__p2").alias("__p"),
                cast(lit(ScalarValue::Null), DataType::Int64).alias("__size"),
                ident("__active"),
            ]);
            s
        })
        .map_err(df_err)?;

    // Every (cohort, period) from the cohort to the last period with data, active 0 unless
    // counted: a union then a GROUP BY, which also matches null dimension members.
    let periods = ends
        .select(vec![ident("__p").alias("__pg")])
        .map_err(df_err)?;
    let grid = sizes
        .join_on(
            periods,
            JoinType::Inner,
            vec![ident("__pg").gt_eq(ident(COHORT))],
        )
        .and_then(|j| {
            let mut s = keys.clone();
            s.extend([
                ident("__pg").alias("__p"),
                ident("__size"),
                lit(0i64).alias("__active"),
            ]);
            j.select(s)
        })
        .map_err(df_err)?;
    let mut group = keys.clone();
    group.push(ident("__p"));
    let combined = grid
        .union(counts)
        .and_then(|u| {
            u.aggregate(
                group,
                vec![
                    max(ident("__size")).alias("__size"),
                    sum(ident("__active")).alias("__active"),
                ],
            )
        })
        .map_err(df_err)?;

    Ok(combined)
}

/// Metrics and order over the triangle.
fn finish(
    q: &ValidatedQuery,
    dims: &[String],
    g: Grain,
    metric: &str,
    combined: DataFrame,
    rollups: std::collections::BTreeSet<String>,
) -> Result<PlannedQuery, QueryError> {
    let mut select = vec![
        ident(COHORT),
        periods_between(g, ident(COHORT), ident("__p")).alias(PERIODS_SINCE),
    ];
    select.extend(dims.iter().map(ident));
    select.extend([
        ident("__size").alias("cohort_size"),
        ident("__active").alias("active"),
        (cast(ident("__active"), DataType::Float64)
            / nullif(cast(ident("__size"), DataType::Float64), lit(0.0f64)))
        .alias(metric),
    ]);
    let rows: DataFrame = combined.select(select).map_err(df_err)?;

    let mut columns = vec![
        OutputColumn::described(
            COHORT,
            ColumnRole::Time,
            "批次",
            "Cohort",
            FormatStyle::Number,
        ),
        OutputColumn::described(
            PERIODS_SINCE,
            ColumnRole::Key,
            "间隔期数",
            "Periods since",
            FormatStyle::Integer,
        ),
    ];
    columns.extend(
        dims.iter()
            .map(|d| OutputColumn::new(d, ColumnRole::Dimension)),
    );
    columns.extend([
        OutputColumn::described(
            "cohort_size",
            ColumnRole::Metric,
            "批次规模",
            "Cohort size",
            FormatStyle::Integer,
        ),
        OutputColumn::described(
            "active",
            ColumnRole::Metric,
            "仍活跃",
            "Still active",
            FormatStyle::Integer,
        ),
        OutputColumn::new(metric, ColumnRole::Metric),
    ]);
    // Cohort, then dimensions, then periods since: one triangle row after another.
    let sort_cols: Vec<OutputColumn> = [0usize]
        .into_iter()
        .chain(2..2 + dims.len())
        .chain([1])
        .map(|i| columns[i].clone())
        .collect();
    let rows = sort_and_limit(rows, q, &sort_cols, true)?;
    Ok(PlannedQuery {
        rows: rows.into_unoptimized_plan(),
        totals: None,
        columns,
        rollups,
    })
}

/// Whole periods from `from` to `to` (both period starts).
fn periods_between(g: Grain, from: Expr, to: Expr) -> Expr {
    let part = |unit: &str, e: Expr| cast(date_part(lit(unit), e), DataType::Int64);
    let months = |e: Expr| part("year", e.clone()) * lit(12i64) + part("month", e);
    match g {
        Grain::Year => part("year", to) - part("year", from),
        Grain::Quarter => (months(to) - months(from)) / lit(3i64),
        _ => months(to) - months(from),
    }
}
