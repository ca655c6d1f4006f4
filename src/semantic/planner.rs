//! Validated query -> DataFusion logical plan, built with the DataFrame/Expr API.
//!
//! The shape of every plan:
//! 1. Measures are grouped by (model, snapshot rule). Each group scans its model once, joins the
//!    dimension models it needs (many-to-one, so no fan-out), applies the time range and filters,
//!    keeps only the period's snapshot rows for semi-additive measures, and aggregates by
//!    (period, dimensions).
//! 2. Groups are combined by UNION ALL + a second GROUP BY on the keys. Each key appears at most
//!    once per group, so `max` just picks the one value. Unlike a chain of full outer joins this
//!    matches null dimension values, and it never multiplies rows across models.
//! 3. Metrics are expressions over the aggregated measures, so a ratio is a ratio of sums at
//!    every level and a derived metric is computed after aggregation.
//!
//! New metric kinds (churn, funnel, cohort) plug in as further group kinds in step 1.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::{date_trunc, nullif};
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType, LogicalPlan, SortExpr, cast, when};
use datafusion::prelude::{ident, lit};

use super::error::QueryError;
use super::request::Grain;
use super::validate::{PERIOD, ValidatedQuery, days_since_epoch};
use crate::catalog::{Catalog, DimensionBinding, Measure, MetricDefinition, Model};
use crate::spec::{Aggregation, SnapshotPick};

/// What the engine runs for one query.
pub struct PlannedQuery {
    pub rows: LogicalPlan,
    pub totals: Option<LogicalPlan>,
    pub columns: Vec<OutputColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    pub name: String,
    pub role: ColumnRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    Time,
    Dimension,
    Metric,
}

const TIME: &str = "__t";
const SNAP_PERIOD: &str = "__snap_period";
const SNAP_TIME: &str = "__snap_t";

fn measure_column(name: &str) -> String {
    format!("__m_{name}")
}

pub async fn plan(catalog: &Catalog, q: &ValidatedQuery) -> Result<PlannedQuery, QueryError> {
    let mut columns = Vec::new();
    if q.grain.is_some() {
        columns.push(OutputColumn {
            name: PERIOD.into(),
            role: ColumnRole::Time,
        });
    }
    columns.extend(q.dimensions.iter().map(|d| OutputColumn {
        name: d.clone(),
        role: ColumnRole::Dimension,
    }));
    columns.extend(q.metrics.iter().map(|m| OutputColumn {
        name: m.clone(),
        role: ColumnRole::Metric,
    }));

    // Without period or dimensions there is at most one row: nothing to sort, and it is the total.
    let has_keys = q.grain.is_some() || !q.dimensions.is_empty();
    let mut rows = metric_frame(catalog, q, &q.dimensions, q.grain).await?;
    if has_keys {
        let sort: Vec<SortExpr> = if q.order.is_empty() {
            // Time series read left to right; members alphabetically.
            columns
                .iter()
                .filter(|c| c.role != ColumnRole::Metric)
                .map(|c| ident(&c.name).sort(true, false))
                .collect()
        } else {
            q.order
                .iter()
                .map(|o| ident(&o.by).sort(!o.desc, false))
                .collect()
        };
        rows = rows.sort(sort).map_err(df_err)?;
    }
    // One row past the limit tells the caller the result was truncated.
    let rows = rows.limit(0, Some(q.limit + 1)).map_err(df_err)?;

    let totals = if q.totals && has_keys {
        Some(
            metric_frame(catalog, q, &[], None)
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
    })
}

/// Columns: [period], dimensions..., metrics... (by their names).
async fn metric_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let mut measures: Vec<&Measure> = Vec::new();
    for metric in &q.metrics {
        for m in catalog.measures_of(metric) {
            let m = &catalog.measures[&m];
            if !measures.iter().any(|x| x.name == m.name) {
                measures.push(m);
            }
        }
    }
    let mut groups: BTreeMap<(&str, Option<SnapshotPick>), Vec<&Measure>> = BTreeMap::new();
    for m in &measures {
        groups
            .entry((m.model.as_str(), m.snapshot))
            .or_default()
            .push(m);
    }

    let mut keys: Vec<String> = Vec::new();
    if grain.is_some() {
        keys.push(PERIOD.to_string());
    }
    keys.extend(dims.iter().cloned());

    let mut parts = Vec::new();
    for ((model, snapshot), group) in &groups {
        let model = &catalog.models[*model];
        parts.push(group_frame(catalog, q, model, *snapshot, group, dims, grain).await?);
    }

    let combined = if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        // Every part gets every measure column, typed nulls where the part lacks it.
        let mut types: BTreeMap<String, DataType> = BTreeMap::new();
        for part in &parts {
            for f in part.schema().fields() {
                types.insert(f.name().clone(), f.data_type().clone());
            }
        }
        let mut unioned: Option<DataFrame> = None;
        for part in parts {
            let mut select: Vec<Expr> = keys.iter().map(ident).collect();
            for m in &measures {
                let c = measure_column(&m.name);
                if part.schema().has_column_with_unqualified_name(&c) {
                    select.push(ident(&c));
                } else {
                    select.push(cast(lit(ScalarValue::Null), types[&c].clone()).alias(&c));
                }
            }
            let part = part.select(select).map_err(df_err)?;
            unioned = Some(match unioned {
                None => part,
                Some(u) => u.union(part).map_err(df_err)?,
            });
        }
        let unioned = unioned.expect("at least two parts");
        let aggs = measures
            .iter()
            .map(|m| max(ident(measure_column(&m.name))).alias(measure_column(&m.name)))
            .collect();
        unioned
            .aggregate(keys.iter().map(ident).collect(), aggs)
            .map_err(df_err)?
    };

    let mut select: Vec<Expr> = keys.iter().map(ident).collect();
    for metric in &q.metrics {
        select.push(metric_expr(catalog, metric)?.alias(metric));
    }
    combined.select(select).map_err(df_err)
}

/// One model's measures sharing a snapshot rule, aggregated by (period, dims).
async fn group_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &Model,
    snapshot: Option<SnapshotPick>,
    measures: &[&Measure],
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let mut needed: Vec<String> = dims.to_vec();
    for f in &q.filters {
        if !needed.contains(&f.dimension) {
            needed.push(f.dimension.clone());
        }
    }
    let (mut df, dim_exprs) = Box::pin(with_dimensions(catalog, model, &needed, &mut 0)).await?;

    if let Some(range) = time_range(model, q)? {
        df = df.filter(range).map_err(df_err)?;
    }
    for f in &q.filters {
        df = df
            .filter(f.predicate.to_expr(dim_exprs[&f.dimension].clone()))
            .map_err(df_err)?;
    }

    // Project to exactly what the aggregation needs, under internal names.
    let mut select: Vec<Expr> = Vec::new();
    let time = model.time.as_ref();
    if let Some(t) = time {
        select.push(ident(&t.column).alias(TIME));
    }
    if let (Some(g), Some(t)) = (grain, time) {
        select.push(period_expr(g, ident(&t.column), &t.data_type).alias(PERIOD));
    }
    for d in dims {
        let data_type = catalog.dimensions[d].data_type.clone();
        select.push(cast(dim_exprs[d].clone(), data_type).alias(d));
    }
    for m in measures {
        let input = match (&m.filter, m.agg) {
            // Rows failing `where` add 0 to a sum: a branch with loans but none overdue has 0
            // overdue balance, while a group without any rows stays empty (null).
            (Some(f), Aggregation::Sum) => {
                let t = m.input.get_type(df.schema()).map_err(df_err)?;
                when(f.clone(), m.input.clone())
                    .otherwise(cast(lit(0i64), t))
                    .map_err(df_err)?
            }
            // Other aggregates ignore the nulls of failing rows.
            (Some(f), _) => when(f.clone(), m.input.clone()).end().map_err(df_err)?,
            (None, _) => m.input.clone(),
        };
        select.push(input.alias(format!("__in_{}", m.name)));
    }
    df = df.select(select).map_err(df_err)?;

    if let Some(pick) = snapshot {
        df = keep_snapshot_rows(catalog, q, model, pick, grain, df).await?;
    }

    let mut keys: Vec<Expr> = Vec::new();
    if grain.is_some() {
        keys.push(ident(PERIOD));
    }
    keys.extend(dims.iter().map(ident));
    let mut aggs = Vec::new();
    for m in measures {
        let input = ident(format!("__in_{}", m.name));
        let agg = match m.agg {
            Aggregation::Sum => sum(input),
            Aggregation::Count => count(input),
            Aggregation::CountDistinct => count_distinct(input),
            Aggregation::Avg => avg(input),
            Aggregation::Min => min(input),
            Aggregation::Max => max(input),
        };
        aggs.push(agg.alias(measure_column(&m.name)));
    }
    df.aggregate(keys, aggs).map_err(df_err)
}

/// Semi-additive measures: keep only rows at the period's last (or first) snapshot date. The
/// snapshot date comes from the whole model within the time range, not from the filtered rows, so
/// a branch whose loans all ended in February does not report February balances as March's.
async fn keep_snapshot_rows(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &Model,
    pick: SnapshotPick,
    grain: Option<Grain>,
    df: DataFrame,
) -> Result<DataFrame, QueryError> {
    let t = model
        .time
        .as_ref()
        .expect("validated: semi-additive models have a time column");
    let mut snaps = catalog
        .ctx
        .table(model.table.as_str())
        .await
        .map_err(df_err)?;
    if let Some(range) = time_range(model, q)? {
        snaps = snaps.filter(range).map_err(df_err)?;
    }
    let edge = match pick {
        SnapshotPick::Last => max(ident(&t.column)),
        SnapshotPick::First => min(ident(&t.column)),
    };
    let mut group = Vec::new();
    let mut on = vec![ident(TIME).eq(ident(SNAP_TIME))];
    if let Some(g) = grain {
        group.push(period_expr(g, ident(&t.column), &t.data_type).alias(SNAP_PERIOD));
        on.push(ident(PERIOD).eq(ident(SNAP_PERIOD)));
    }
    let snaps = snaps
        .aggregate(group, vec![edge.alias(SNAP_TIME)])
        .and_then(|s| s.alias("snapshots"))
        .map_err(df_err)?;
    // An inner join rather than a semi join: the snapshot side has one row per period, so rows
    // cannot multiply, and DataFusion's unparser renders it faithfully for `explain`.
    let keep: Vec<Expr> = df
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    df.join_on(snaps, JoinType::Inner, on)
        .map_err(df_err)?
        .select(keep)
        .map_err(df_err)
}

/// The model's table with the joins needed to reach `dims`, and the expression of each dimension
/// over the joined frame. Joins are many-to-one (to a primary key), so rows never multiply.
async fn with_dimensions(
    catalog: &Catalog,
    model: &Model,
    dims: &[String],
    counter: &mut usize,
) -> Result<(DataFrame, BTreeMap<String, Expr>), QueryError> {
    let mut df = catalog
        .ctx
        .table(model.table.as_str())
        .await
        .map_err(df_err)?;
    let mut exprs = BTreeMap::new();
    let mut via: BTreeMap<&str, Vec<(&String, &String)>> = BTreeMap::new();
    for d in dims {
        match &model.dimensions[d] {
            DimensionBinding::Column(c) => {
                exprs.insert(d.clone(), ident(c));
            }
            DimensionBinding::Via { join, dimension } => {
                via.entry(join.as_str()).or_default().push((d, dimension))
            }
        }
    }
    for (join_name, wanted) in via {
        let join = &model.joins[join_name];
        let target = &catalog.models[&join.model];
        let target_dims: Vec<String> = wanted.iter().map(|(_, td)| (*td).clone()).collect();
        let (right, right_exprs) =
            Box::pin(with_dimensions(catalog, target, &target_dims, counter)).await?;
        *counter += 1;
        let prefix = format!("__j{counter}");
        let key = format!("{prefix}_key");
        let pk = target
            .primary_key
            .as_ref()
            .expect("validated: join targets have a primary key");
        let mut select = vec![ident(pk).alias(&key)];
        for (d, td) in &wanted {
            let alias = format!("{prefix}_{td}");
            select.push(right_exprs[*td].clone().alias(&alias));
            exprs.insert((*d).clone(), ident(alias));
        }
        let right = right.select(select).map_err(df_err)?;
        df = df
            .join(
                right,
                JoinType::Left,
                &[join.on.as_str()],
                &[key.as_str()],
                None,
            )
            .map_err(df_err)?;
    }
    Ok((df, exprs))
}

/// `from <= time < to + 1 day`, with literals of the time column's own type so Parquet
/// statistics can prune row groups.
fn time_range(model: &Model, q: &ValidatedQuery) -> Result<Option<Expr>, QueryError> {
    let Some(t) = &model.time else {
        return Ok(None);
    };
    let bound = |d: chrono::NaiveDate| -> Result<Expr, QueryError> {
        let v = ScalarValue::Date32(Some(days_since_epoch(d)))
            .cast_to(&t.data_type)
            .map_err(df_err)?;
        Ok(lit(v))
    };
    let mut parts = Vec::new();
    if let Some(from) = q.from {
        parts.push(ident(&t.column).gt_eq(bound(from)?));
    }
    if let Some(to) = q.to {
        let next = to
            .succ_opt()
            .ok_or_else(|| QueryError::invalid("time.to is out of range").at("time.to"))?;
        parts.push(ident(&t.column).lt(bound(next)?));
    }
    Ok(parts.into_iter().reduce(Expr::and))
}

/// The first day of the period containing `time`, as a date.
fn period_expr(grain: Grain, time: Expr, data_type: &DataType) -> Expr {
    let ts = match data_type {
        DataType::Timestamp(_, _) => time,
        _ => cast(time, DataType::Timestamp(TimeUnit::Second, None)),
    };
    cast(date_trunc(lit(grain.as_str()), ts), DataType::Date32)
}

/// A metric as an expression over the aggregated measure columns.
fn metric_expr(catalog: &Catalog, name: &str) -> Result<Expr, QueryError> {
    let metric = &catalog.metrics[name];
    let as_f64 = |e: Expr| cast(e, DataType::Float64);
    Ok(match &metric.definition {
        MetricDefinition::Simple { measure } => ident(measure_column(measure)),
        // Ratio of sums; an empty or zero denominator gives null, never an error.
        MetricDefinition::Ratio {
            numerator,
            denominator,
        } => {
            as_f64(ident(measure_column(numerator)))
                / nullif(as_f64(ident(measure_column(denominator))), lit(0.0f64))
        }
        MetricDefinition::Derived { expr, .. } => {
            expr.clone()
                .transform_up(|e| match e {
                    Expr::Column(c) => Ok(Transformed::yes(as_f64(
                        metric_expr(catalog, &c.name)
                            .map_err(|e| datafusion::error::DataFusionError::Plan(e.message))?,
                    ))),
                    other => Ok(Transformed::no(other)),
                })
                .map_err(df_err)?
                .data
        }
    })
}

fn df_err(e: datafusion::error::DataFusionError) -> QueryError {
    QueryError::from_engine(e)
}
