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
//! Churn plugs in as a further group kind in step 1 (`churn.rs`). Funnels and cohorts have their
//! own result shapes (a row per step, a triangle) and their own plans (`funnel.rs`, `cohort.rs`).

mod churn;
mod cohort;
mod cumulative;
mod funnel;
pub mod rollup;
pub mod sequential;
mod target;

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::{date_trunc, nullif, to_local_time};
use datafusion::functions_aggregate::expr_fn::{avg, count, count_distinct, max, min, sum};
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType, LogicalPlan, SortExpr, cast, when};
use datafusion::prelude::{ident, lit};

use super::calendar::CalendarConfig;
use super::error::QueryError;
use super::validate::{PERIOD, ValidatedQuery, days_since_epoch};
use crate::catalog::{Catalog, Combine, DimensionBinding, Measure, MetricDefinition, Model};
use crate::protocol::Grain;
use crate::spec::{
    Aggregation, ChurnValue, EmptyPeriod, FormatSpec, FormatStyle, Label, SnapshotPick,
};

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

const TIME: &str = "__t";
const SNAP_PERIOD: &str = "__snap_period";
const SNAP_TIME: &str = "__snap_t";

fn measure_column(name: &str) -> String {
    format!("__m_{name}")
}

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

/// [period], dimensions...: the keys every row-per-group result starts with.
fn key_columns(q: &ValidatedQuery) -> Vec<OutputColumn> {
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
fn sort_and_limit(
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
        parts.push(match rollup::pick_churn(catalog, q, base, dims, grain) {
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

/// Measures grouped by (model, snapshot rule): each group is one aggregation over one model.
fn by_model_and_pick<'a>(
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

/// What a metric's value is computed from, over a frame of aggregated measure columns.
struct MetricValues<'a> {
    catalog: &'a Catalog,
    /// Targets that cannot answer these rows: null.
    unanswered: &'a BTreeSet<String>,
}

/// Frames that each hold a key at most once, combined into one row per key with every value
/// column: UNION ALL (typed nulls where a frame lacks a column) and a GROUP BY on the keys, which
/// unlike a chain of outer joins matches null key values.
fn union_by_keys(mut parts: Vec<DataFrame>, keys: &[String]) -> Result<DataFrame, QueryError> {
    if parts.len() == 1 {
        return Ok(parts.pop().expect("one part"));
    }
    let mut types: BTreeMap<String, DataType> = BTreeMap::new();
    for part in &parts {
        for f in part.schema().fields() {
            if !keys.contains(f.name()) {
                types.insert(f.name().clone(), f.data_type().clone());
            }
        }
    }
    let mut unioned: Option<DataFrame> = None;
    for part in parts {
        let mut select: Vec<Expr> = keys.iter().map(ident).collect();
        for (c, t) in &types {
            if part.schema().has_column_with_unqualified_name(c) {
                select.push(ident(c));
            } else {
                select.push(cast(lit(ScalarValue::Null), t.clone()).alias(c));
            }
        }
        let part = part.select(select).map_err(df_err)?;
        unioned = Some(match unioned {
            None => part,
            Some(u) => u.union(part).map_err(df_err)?,
        });
    }
    let unioned = unioned.expect("at least two parts");
    let aggs = types.keys().map(|c| max(ident(c)).alias(c)).collect();
    unioned
        .aggregate(keys.iter().map(ident).collect(), aggs)
        .map_err(df_err)
}

/// One model's measures sharing a snapshot rule, aggregated by (period, dims): from the
/// smallest rollup holding them (named in `rollups`), else from the model.
#[allow(clippy::too_many_arguments)]
async fn measures_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &str,
    snapshot: Option<SnapshotPick>,
    group: &[&Measure],
    dims: &[String],
    grain: Option<Grain>,
    rollups: &mut BTreeSet<String>,
) -> Result<DataFrame, QueryError> {
    match rollup::pick(catalog, q, model, group, dims) {
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
async fn group_frame(
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
fn snapshot_dates(
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

/// A model's distinct non-null time values where `within` holds, as the column `alias`: what
/// snapshot dates, period ends and a churn rollup's pairs are computed from, a row per date.
pub(crate) fn distinct_dates(
    catalog: &Catalog,
    model: &Model,
    within: Expr,
    alias: &str,
) -> datafusion::error::Result<DataFrame> {
    let t = model.time.as_ref().expect("a model with a time column");
    catalog
        .scan(model)?
        .filter(ident(&t.column).is_not_null().and(within))?
        .aggregate(vec![ident(&t.column).alias(alias)], vec![])
}

/// The rows a semi-additive pick reads, with their period: for `last` / `first` only the rows
/// at the period's last (first) snapshot date — so a branch whose loans all ended in February
/// does not report February balances as March's — and for `average` the rows of every date.
/// The dates side is on the left, where DataFusion builds a hash join: a handful of rows, not
/// the model's millions.
fn on_snapshot_dates(
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
fn averaged_over_dates(
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
fn measure_input(m: &Measure, schema: &datafusion::common::DFSchema) -> Result<Expr, QueryError> {
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

fn aggregate(agg: Aggregation, input: Expr) -> Expr {
    match agg {
        Aggregation::Sum => sum(input),
        Aggregation::Count => count(input),
        Aggregation::CountDistinct => count_distinct(input),
        Aggregation::Avg => avg(input),
        Aggregation::Min => min(input),
        Aggregation::Max => max(input),
    }
}

/// The model's rows with `dims` reachable (joined as needed) and `filters` applied, and the
/// expression of each dimension over the joined frame.
pub(crate) async fn filtered_rows(
    catalog: &Catalog,
    model: &Model,
    dims: &[String],
    filters: &[super::validate::Filter],
) -> Result<(DataFrame, BTreeMap<String, Expr>), QueryError> {
    let mut needed: Vec<String> = dims.to_vec();
    for f in filters {
        if !needed.contains(&f.dimension) {
            needed.push(f.dimension.clone());
        }
    }
    let (mut df, exprs) = Box::pin(with_dimensions(catalog, model, &needed, &mut 0)).await?;
    for f in filters {
        df = df
            .filter(f.predicate.to_expr(exprs[&f.dimension].clone()))
            .map_err(df_err)?;
    }
    Ok((df, exprs))
}

/// Each dimension's expression over the joined frame, cast to the catalog's type and named after
/// the dimension: how every frame carries its grouping columns.
pub(super) fn dimension_columns(
    catalog: &Catalog,
    dims: &[String],
    dim_exprs: &BTreeMap<String, Expr>,
) -> Vec<Expr> {
    dims.iter()
        .map(|d| {
            let data_type = catalog.dimensions[d].data_type.clone();
            cast(dim_exprs[d].clone(), data_type).alias(d)
        })
        .collect()
}

/// The columns churn and cohort frames start from: the entity (`__e`), the snapshot date
/// (`__t`), the entity's activity in the row as 1/0 (`flag`), and the dimensions.
pub(super) fn entity_snapshot(
    catalog: &Catalog,
    entity: &str,
    time_column: &str,
    active: &Expr,
    flag_name: &str,
    dims: &[String],
    dim_exprs: &BTreeMap<String, Expr>,
) -> Result<Vec<Expr>, QueryError> {
    let mut select = vec![
        ident(entity).alias("__e"),
        ident(time_column).alias("__t"),
        flag(active)?.alias(flag_name),
    ];
    select.extend(dimension_columns(catalog, dims, dim_exprs));
    Ok(select)
}

/// The distinct non-null `value`s per group of `keys`, as the column `alias`: the distinct
/// (keys, value) pairs, then a count of them per group. Two plain group-bys, which spill when
/// memory is short, where `count(DISTINCT)` keeps a hash set per group inside the pool.
pub(super) fn count_distinct_by(
    rows: DataFrame,
    keys: Vec<Expr>,
    value: Expr,
    alias: &str,
) -> Result<DataFrame, QueryError> {
    let names: Vec<Expr> = keys
        .iter()
        .map(|k| ident(k.schema_name().to_string()))
        .collect();
    let mut pairs = keys;
    pairs.push(value.clone().alias("__distinct_value"));
    rows.filter(value.is_not_null())
        .and_then(|r| r.aggregate(pairs, vec![]))
        .and_then(|r| r.aggregate(names, vec![count(lit(1i64)).alias(alias)]))
        .map_err(df_err)
}

/// 1 where `predicate` holds, else 0: an entity's activity in a snapshot row.
fn flag(predicate: &Expr) -> Result<Expr, QueryError> {
    when(predicate.clone(), lit(1i64))
        .otherwise(lit(0i64))
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
    let mut df = catalog.scan(model).map_err(df_err)?;
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
    let to = match q.to {
        None => None,
        Some(to) => Some(
            to.succ_opt()
                .ok_or_else(|| QueryError::invalid("time.to is out of range").at("time.to"))?,
        ),
    };
    range_expr(ident(&t.column), &t.data_type, q.from, to, &q.calendar)
}

/// `from <= time < until` for local dates: on a zoned timestamp column the bounds are the
/// instants of local midnight in the configured time zone.
pub(crate) fn range_expr(
    column: Expr,
    data_type: &DataType,
    from: Option<chrono::NaiveDate>,
    until: Option<chrono::NaiveDate>,
    calendar: &CalendarConfig,
) -> Result<Option<Expr>, QueryError> {
    let bound = |d: chrono::NaiveDate| -> Result<Expr, QueryError> {
        let v = match data_type {
            DataType::Timestamp(_, Some(_)) => ScalarValue::TimestampMicrosecond(
                Some(calendar.first_instant(d)),
                Some("UTC".into()),
            ),
            _ => ScalarValue::Date32(Some(days_since_epoch(d))),
        };
        Ok(lit(v.cast_to(data_type).map_err(df_err)?))
    };
    let mut parts = Vec::new();
    if let Some(from) = from {
        parts.push(column.clone().gt_eq(bound(from)?));
    }
    if let Some(until) = until {
        parts.push(column.lt(bound(until)?));
    }
    Ok(parts.into_iter().reduce(Expr::and))
}

/// The first day of the period containing `time`, as a local date: zoned timestamps are read as
/// wall-clock time in the configured zone, weeks start on the configured day.
fn period_expr(grain: Grain, time: Expr, data_type: &DataType, calendar: &CalendarConfig) -> Expr {
    let local = match data_type {
        DataType::Timestamp(unit, Some(_)) => to_local_time(vec![cast(
            time,
            DataType::Timestamp(*unit, Some(calendar.time_zone.name().into())),
        )]),
        DataType::Timestamp(_, None) => time,
        _ => cast(time, DataType::Timestamp(TimeUnit::Second, None)),
    };
    let shift = (7 - calendar.week_start.num_days_from_monday()) % 7;
    if grain == Grain::Week && shift != 0 {
        // date_trunc weeks start on Monday: move the week start onto a Monday and back.
        let days = lit(ScalarValue::new_interval_dt(shift as i32, 0));
        cast(
            date_trunc(lit("week"), local + days.clone()) - days,
            DataType::Date32,
        )
    } else {
        cast(date_trunc(lit(grain.as_str()), local), DataType::Date32)
    }
}

impl MetricValues<'_> {
    /// A metric as an expression over the aggregated measure columns.
    fn expr(&self, name: &str) -> Result<Expr, QueryError> {
        let catalog = self.catalog;
        let metric = &catalog.metrics[name];
        let as_f64 = |e: Expr| cast(e, DataType::Float64);
        use MetricDefinition as D;
        Ok(match &metric.definition {
            D::Target(_) if self.unanswered.contains(name) => {
                cast(lit(ScalarValue::Null), DataType::Float64)
            }
            D::Target(t) => as_f64(ident(measure_column(&t.measure))),
            D::Attainment(a) => {
                let (actual, target) =
                    (as_f64(self.expr(&a.actual)?), as_f64(self.expr(&a.target)?));
                let (over, under) = if a.lower_is_better {
                    (target, actual)
                } else {
                    (actual, target)
                };
                over / nullif(under, lit(0.0f64))
            }
            // Set per row once the rows are known (`series::pace`), gap-filled ones too.
            D::TimeProgress(_) => cast(lit(ScalarValue::Null), DataType::Float64),
            // A metric that declares empty as zero shows 0 where its model has no rows for the group
            // (another model's metric in the same query may have some).
            D::Simple(s) if metric.empty == EmptyPeriod::Zero => {
                or_zero(ident(measure_column(&s.measure)))
            }
            D::Simple(s) => ident(measure_column(&s.measure)),
            // Ratio of sums; an empty or zero denominator gives null, never an error.
            D::Ratio(r) => {
                as_f64(ident(measure_column(&r.numerator)))
                    / nullif(as_f64(ident(measure_column(&r.denominator))), lit(0.0f64))
            }
            D::Churn(churn) => {
                let c = |v| ident(churn::column(churn.base, v));
                match churn.value {
                    ChurnValue::Rate => {
                        as_f64(c(ChurnValue::Churned))
                            / nullif(as_f64(c(ChurnValue::ActiveAtStart)), lit(0.0f64))
                    }
                    v
                    @ (ChurnValue::ActiveAtStart | ChurnValue::Churned | ChurnValue::Returned) => {
                        c(v)
                    }
                }
            }
            // A row another metric's part holds, with nothing in this one's window: 0, as declared.
            D::Cumulative(_) if metric.empty == EmptyPeriod::Zero => {
                or_zero(ident(cumulative::column(name)))
            }
            D::Cumulative(_) => ident(cumulative::column(name)),
            D::Funnel(_) | D::Cohort(_) => {
                return Err(QueryError::invalid(format!(
                    "'{name}' is a {} metric and is queried on its own",
                    metric.definition.kind()
                )));
            }
            D::Derived(d) => {
                d.expr
                    .clone()
                    .transform_up(|e| match e {
                        Expr::Column(c) => Ok(Transformed::yes(as_f64(
                            self.expr(&c.name)
                                .map_err(|e| datafusion::error::DataFusionError::Plan(e.message))?,
                        ))),
                        other => Ok(Transformed::no(other)),
                    })
                    .map_err(df_err)?
                    .data
            }
        })
    }
}

/// `value`, or 0 where it is null.
fn or_zero(value: Expr) -> Expr {
    datafusion::functions::expr_fn::coalesce(vec![value, cast(lit(0i64), DataType::Int64)])
}

/// A plan that cannot be built over validated definitions is a bug, not the client's fault.
pub(crate) fn df_err(e: datafusion::error::DataFusionError) -> QueryError {
    QueryError::internal(e.to_string())
}
