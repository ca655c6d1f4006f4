//! Measures aggregated by (period, dimensions): grouped by model and snapshot rule, each group
//! from its smallest answering rollup or its model, balances at each period's snapshot dates.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::DataType;
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::nullif;
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType, cast, when};
use datafusion::prelude::{ident, lit};

use super::rows::or_zero;
use super::rows::{
    SNAP_PERIOD, SNAP_TIME, TIME, df_err, dimension_columns, distinct_dates, filtered_rows,
    period_expr, time_range,
};
use crate::catalog::{Catalog, Combine, Measure, Model};
use crate::protocol::Grain;
use crate::semantic::error::QueryError;
use crate::semantic::validate::{PERIOD, ValidatedQuery};
use crate::spec::{Aggregation, SnapshotPick};

pub(super) fn measure_column(name: &str) -> String {
    format!("__m_{name}")
}

/// Measures grouped by (model, snapshot rule): each group is one aggregation over one model.
pub(super) fn by_model_and_pick<'a>(
    measures: &[&'a Measure],
) -> BTreeMap<(&'a str, Option<SnapshotPick>), Vec<&'a Measure>> {
    let mut groups: BTreeMap<(&str, Option<SnapshotPick>), Vec<&Measure>> = BTreeMap::new();
    for m in measures {
        groups
            .entry((m.model.as_str(), m.snapshot))
            .or_default()
            .push(m);
    }
    groups
}

/// One model's measures sharing a snapshot rule, aggregated by (period, dims): from the
/// smallest rollup holding them (named in `rollups`), else from the model.
#[allow(clippy::too_many_arguments)]
pub(super) async fn measures_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &str,
    snapshot: Option<SnapshotPick>,
    group: &[&Measure],
    dims: &[String],
    grain: Option<Grain>,
    rollups: &mut BTreeSet<String>,
) -> Result<DataFrame, QueryError> {
    match super::pick::pick(catalog, q, model, group, dims) {
        Some((r, rolled)) => {
            rollups.insert(r.name.clone());
            let rolled: Vec<&Measure> = group.iter().map(|m| &rolled[&m.name]).collect();
            group_frame(catalog, q, &r.model, snapshot, &rolled, dims, grain).await
        }
        None => {
            let model = &catalog.models[model];
            group_frame(catalog, q, model, snapshot, group, dims, grain).await
        }
    }
}

/// One model's measures sharing a snapshot rule, aggregated by (period, dims).
pub(super) async fn group_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &Model,
    snapshot: Option<SnapshotPick>,
    measures: &[&Measure],
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let (mut df, dim_exprs) = filtered_rows(catalog, model, dims, &q.filters).await?;
    if let Some(range) = time_range(model, q)? {
        df = df.filter(range).map_err(df_err)?;
    }

    // Project to exactly what the aggregation needs, under internal names. A semi-additive
    // model's period comes from its snapshot dates (below), computed once per date.
    let mut select: Vec<Expr> = Vec::new();
    let time = model.time.as_ref();
    if let Some(t) = time {
        select.push(ident(&t.column).alias(TIME));
    }
    if let (Some(g), Some(t), None) = (grain, time, snapshot) {
        select.push(period_expr(g, ident(&t.column), &t.data_type, &q.calendar).alias(PERIOD));
    }
    select.extend(dimension_columns(catalog, dims, &dim_exprs));
    for m in measures {
        select.push(measure_input(m, df.schema())?.alias(format!("__in_{}", m.name)));
        if let Some(Combine::SumOverCount(n)) = &m.combine {
            select.push(n.clone().alias(format!("__n_{}", m.name)));
        }
    }
    df = df.select(select).map_err(df_err)?;
    let dates = match snapshot {
        Some(pick) => {
            let dates = snapshot_dates(catalog, q, model, grain)?;
            df = on_snapshot_dates(pick, grain, &dates, df)?;
            Some(dates)
        }
        None => None,
    };

    let mut keys: Vec<Expr> = Vec::new();
    if grain.is_some() {
        keys.push(ident(PERIOD));
    }
    keys.extend(dims.iter().map(ident));
    let aggs = measures
        .iter()
        .map(|m| {
            let input = ident(format!("__in_{}", m.name));
            let value = match &m.combine {
                // An average from partial sums and counts: null where nothing was counted, as
                // `avg` gives.
                Some(Combine::SumOverCount(_)) => {
                    let as_f64 = |e: Expr| cast(e, DataType::Float64);
                    as_f64(sum(input))
                        / nullif(as_f64(sum(ident(format!("__n_{}", m.name)))), lit(0.0f64))
                }
                Some(Combine::CountOfParts) => or_zero(sum(input)),
                None => aggregate(m.agg, input),
            };
            value.alias(measure_column(&m.name))
        })
        .collect();
    let df = df.aggregate(keys, aggs).map_err(df_err)?;
    match (snapshot, dates) {
        (Some(SnapshotPick::Average), Some(dates)) => {
            averaged_over_dates(measures, dims, grain, dates, df)
        }
        _ => Ok(df),
    }
}

/// A semi-additive model's distinct snapshot dates within the query's range (`__snap_t`), each
/// with its period (`__snap_period`; a constant without a grain). The dates come from the whole
/// model, unfiltered, not from a group's rows. One row per date: periods are computed once per
/// date instead of once per row, and the joins to it are built on this side.
pub(super) fn snapshot_dates(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &Model,
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let t = model
        .time
        .as_ref()
        .expect("validated: semi-additive models have a time column");
    let within = time_range(model, q)?.unwrap_or(lit(true));
    let period = match grain {
        Some(g) => period_expr(g, ident(SNAP_TIME), &t.data_type, &q.calendar),
        None => lit(1i64),
    };
    distinct_dates(catalog, model, within, SNAP_TIME)
        .and_then(|d| d.select(vec![ident(SNAP_TIME), period.alias(SNAP_PERIOD)]))
        .map_err(df_err)
}

/// The rows a semi-additive pick reads, with their period: for `last` / `first` only the rows
/// at the period's last (first) snapshot date — so a branch whose loans all ended in February
/// does not report February balances as March's — and for `average` the rows of every date.
/// The dates side is on the left, where DataFusion builds a hash join: a handful of rows, not
/// the model's millions.
pub(super) fn on_snapshot_dates(
    pick: SnapshotPick,
    grain: Option<Grain>,
    dates: &DataFrame,
    rows: DataFrame,
) -> Result<DataFrame, QueryError> {
    let snaps = match pick {
        SnapshotPick::Average => dates.clone(),
        SnapshotPick::Last | SnapshotPick::First => {
            let edge = if pick == SnapshotPick::Last {
                max(ident(SNAP_TIME))
            } else {
                min(ident(SNAP_TIME))
            };
            dates
                .clone()
                .aggregate(vec![ident(SNAP_PERIOD)], vec![edge.alias(SNAP_TIME)])
                .map_err(df_err)?
        }
    };
    let mut keep: Vec<Expr> = Vec::new();
    if grain.is_some() {
        keep.push(ident(SNAP_PERIOD).alias(PERIOD));
    }
    keep.extend(rows.schema().columns().into_iter().map(Expr::Column));
    // An inner join: the dates side has each date once, so rows cannot multiply.
    snaps
        .alias("snapshots")
        .and_then(|s| {
            s.join_on(
                rows,
                JoinType::Inner,
                vec![ident(SNAP_TIME).eq(ident(TIME))],
            )
        })
        .and_then(|j| j.select(keep))
        .map_err(df_err)
}

/// Average balances: each measure's sum over the period's rows (the sum of its per-date totals)
/// over the number of snapshot dates the period has. The dates come from the whole model within
/// the time range, not from the group's rows, so a branch with no rows on a date has 0 for it.
pub(super) fn averaged_over_dates(
    measures: &[&Measure],
    dims: &[String],
    grain: Option<Grain>,
    dates: DataFrame,
    df: DataFrame,
) -> Result<DataFrame, QueryError> {
    const DATES: &str = "__snapshot_dates";
    const ONE: &str = "__one";
    // Joined on the period, or on the constant period without a grain (the range is one).
    let (df, on) = match grain {
        Some(_) => (df, ident(PERIOD).eq(ident(SNAP_PERIOD))),
        None => (
            df.with_column(ONE, lit(1i64)).map_err(df_err)?,
            ident(ONE).eq(ident(SNAP_PERIOD)),
        ),
    };
    let counts = dates
        .aggregate(
            vec![ident(SNAP_PERIOD)],
            vec![count(ident(SNAP_TIME)).alias(DATES)],
        )
        .and_then(|s| s.alias("snapshot_dates"))
        .map_err(df_err)?;
    let mut out: Vec<Expr> = Vec::new();
    if grain.is_some() {
        out.push(ident(PERIOD));
    }
    out.extend(dims.iter().map(ident));
    for m in measures {
        let column = measure_column(&m.name);
        out.push(
            (cast(ident(&column), DataType::Float64) / cast(ident(DATES), DataType::Float64))
                .alias(column),
        );
    }
    df.join_on(counts, JoinType::Inner, vec![on])
        .and_then(|d| d.select(out))
        .map_err(df_err)
}

/// What a measure aggregates, row by row, with its `where` applied.
pub(super) fn measure_input(
    m: &Measure,
    schema: &datafusion::common::DFSchema,
) -> Result<Expr, QueryError> {
    Ok(match (&m.filter, m.agg) {
        // Rows failing `where` add 0 to a sum: a branch with loans but none overdue has 0
        // overdue balance, while a group without any rows stays empty (null).
        (Some(f), Aggregation::Sum) => {
            let t = m.input.get_type(schema).map_err(df_err)?;
            when(f.clone(), m.input.clone())
                .otherwise(cast(lit(0i64), t))
                .map_err(df_err)?
        }
        // Other aggregates ignore the nulls of failing rows.
        (Some(f), _) => when(f.clone(), m.input.clone()).end().map_err(df_err)?,
        (None, _) => m.input.clone(),
    })
}

pub(super) fn aggregate(agg: Aggregation, input: Expr) -> Expr {
    match agg {
        Aggregation::Sum => sum(input),
        Aggregation::Count => count(input),
        Aggregation::CountDistinct => count_distinct(input),
        Aggregation::Avg => avg(input),
        Aggregation::Min => min(input),
        Aggregation::Max => max(input),
    }
}
