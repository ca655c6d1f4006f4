//! Churn over a per-entity period snapshot (e.g. `customer_month`).
//!
//! For a period P with end snapshot E(P) (the last snapshot date in P) and the previous period's
//! end snapshot E(P-1):
//! - active at start = entities active in the E(P-1) snapshot;
//! - churned = active at E(P-1) and not active at E(P) (no row at E(P) counts as not active);
//! - returned = present but not active at E(P-1), active at E(P).
//!
//! Dimensions and filters are read from the entity's row at E(P-1): churn is attributed to where
//! the customer was. Without a grain the whole range is one period: its start snapshot is the last
//! one before `time.from` (or the first one in the data), its end the last one in the range.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::{Expr, JoinType, when};
use datafusion::prelude::{ident, lit};

use super::rows::{
    df_err, distinct_dates, entity_snapshot, filtered_rows, period_expr, range_expr,
};
use crate::catalog::{Catalog, ChurnBase};
use crate::protocol::Grain;
use crate::semantic::calendar::{period_start, shift};
use crate::semantic::error::QueryError;
use crate::semantic::validate::PERIOD;
use crate::semantic::validate::{ValidatedQuery, days_since_epoch};
use crate::spec::ChurnValue;

/// The internal column holding one of a churn base's numbers.
pub(super) fn column(base: usize, value: ChurnValue) -> String {
    let v = match value {
        ChurnValue::Rate => "rate",
        ChurnValue::ActiveAtStart => "start",
        ChurnValue::Churned => "churned",
        ChurnValue::Returned => "returned",
    };
    format!("__churn{base}_{v}")
}

const END: &str = "__end";
const PREV_END: &str = "__prev_end";

/// A churn base with its model and the model's time column.
fn churn_model(
    catalog: &Catalog,
    base_index: usize,
) -> (
    &ChurnBase,
    &crate::catalog::Model,
    &crate::catalog::TimeColumn,
) {
    let base = &catalog.churn_bases[base_index];
    let model = &catalog.models[&base.model];
    let t = model
        .time
        .as_ref()
        .expect("validated: churn models have time");
    (base, model, t)
}

/// (period?, dims..., start, churned, returned) for one churn base. With a grain, each period
/// is planned on its own and the periods run one after another ([`sequential`]): a period's
/// pair reads two snapshots (the literal date bounds prune every other file), so memory holds
/// one pair's entities at a time, not every period's at once (at 218M snapshot rows the single
/// plan needed more than 8 GiB).
pub(super) async fn frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    base_index: usize,
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let Some(periods) = grain.and_then(|g| each_period(q, g)) else {
        return pairs_frame(catalog, q, base_index, dims, grain).await;
    };
    let mut frames = Vec::with_capacity(periods.len());
    for (from, to) in periods {
        let mut one = q.clone();
        (one.from, one.to) = (Some(from), Some(to));
        frames.push(pairs_frame(catalog, &one, base_index, dims, grain).await?);
    }
    sequential(frames)
}

/// The most periods a churn query is split into; past it (a day grain over years) one plan.
const MOST_PERIODS_PLANNED_APART: usize = 120;

/// The query's periods as (from, to) ranges, the first and last clipped to the query's range.
fn each_period(q: &ValidatedQuery, g: Grain) -> Option<Vec<(NaiveDate, NaiveDate)>> {
    let (from, to) = (q.from?, q.to?);
    let mut periods = Vec::new();
    let mut start = period_start(from, g, q.calendar.week_start);
    while start <= to {
        let next = shift(start, g, 1);
        let last = next.pred_opt()?.min(to);
        periods.push((start.max(from), last));
        if periods.len() > MOST_PERIODS_PLANNED_APART {
            return None;
        }
        start = next;
    }
    (periods.len() > 1).then_some(periods)
}

/// One plan for every pair of the query's range.
async fn pairs_frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    base_index: usize,
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let (base, model, t) = churn_model(catalog, base_index);
    let until = q.to.and_then(|d| d.succ_opt());
    let within = |column: &str, from: Option<NaiveDate>, until: Option<NaiveDate>| {
        range_expr(ident(column), &t.data_type, from, until, &q.calendar)
    };
    // Bounds the scans prune files by. A pair starts in the period before its end's (without a
    // grain: at the last snapshot before `from`), so before the last period begins, and at most
    // one period before the first; it ends within the range.
    let week_start = q.calendar.week_start;
    let (start_from, start_until, end_from) = match grain {
        Some(g) => (
            q.from.map(|f| shift(period_start(f, g, week_start), g, -1)),
            q.to.map(|d| period_start(d, g, week_start)),
            q.from.map(|f| period_start(f, g, week_start)),
        ),
        None => (None, q.from.or(until), q.from),
    };
    // The rows at the previous period end: entity, activity, dimensions, after filters.
    let mut rows = start_rows(catalog, base, dims, &q.filters).await?;
    if let Some(r) = within("__t", start_from, start_until)? {
        rows = rows.filter(r).map_err(df_err)?;
    }
    let at_start = period_ends(catalog, q, model, grain, "cur")
        .await?
        .join_on(
            rows,
            JoinType::Inner,
            vec![ident(PREV_END).eq(ident("__t"))],
        )
        .map_err(df_err)?;

    // Who is active at this period's end, unfiltered: leaving the filtered slice is not churn.
    let mut now = catalog.scan(model).map_err(df_err)?;
    if let Some(r) = within(&t.column, end_from, until)? {
        now = now.filter(r).map_err(df_err)?;
    }
    let now = now
        .filter(base.active.clone())
        .and_then(|n| {
            n.select(vec![
                ident(&base.entity).alias("__e1"),
                ident(&t.column).alias("__t1"),
            ])
        })
        .map_err(df_err)?;
    let ends = period_ends(catalog, q, model, grain, "now")
        .await?
        .select(
            grain
                .map(|_| ident(PERIOD).alias("__p1"))
                .into_iter()
                .chain([ident(END).alias("__end1")])
                .collect::<Vec<Expr>>(),
        )
        .map_err(df_err)?;
    let active_at_end = ends
        .join_on(
            now,
            JoinType::Inner,
            vec![ident("__end1").eq(ident("__t1"))],
        )
        .map_err(df_err)?;

    counts(at_start, active_at_end, base_index, dims, grain.is_some())
}

/// Plans that run one after another, their rows in order: what keeps a plan split by period
/// within the memory of one period (a union runs its inputs at once).
fn sequential(mut frames: Vec<DataFrame>) -> Result<DataFrame, QueryError> {
    if frames.len() == 1 {
        return Ok(frames.pop().expect("one frame"));
    }
    let state = frames[0].clone().into_parts().0;
    let plans = frames
        .into_iter()
        .map(|f| f.into_unoptimized_plan())
        .collect();
    let node = super::sequential::Sequential::new(plans).map_err(df_err)?;
    Ok(DataFrame::new(
        state,
        datafusion::logical_expr::LogicalPlan::Extension(datafusion::logical_expr::Extension {
            node: std::sync::Arc::new(node),
        }),
    ))
}

/// Every snapshot row as a possible start: entity (`__e`), date (`__t`), activity (`__a0`) and
/// dimensions, after filters.
async fn start_rows(
    catalog: &Catalog,
    base: &ChurnBase,
    dims: &[String],
    filters: &[crate::semantic::validate::Filter],
) -> Result<DataFrame, QueryError> {
    let model = &catalog.models[&base.model];
    let t = model
        .time
        .as_ref()
        .expect("validated: churn models have time");
    let (rows, dim_exprs) = filtered_rows(catalog, model, dims, filters).await?;
    let select = entity_snapshot(
        catalog,
        &base.entity,
        &t.column,
        &base.active,
        "__a0",
        dims,
        &dim_exprs,
    )?;
    rows.select(select).map_err(df_err)
}

/// The counts of one pair of snapshots (`start`, `end`), by `dims` read at `start`, with the
/// pair as the columns [`PAIR_START`] and [`PAIR_END`]: what a churn rollup holds.
pub(super) async fn pair_frame(
    catalog: &Catalog,
    base_index: usize,
    dims: &[String],
    start: ScalarValue,
    end: ScalarValue,
) -> Result<DataFrame, QueryError> {
    let (base, model, t) = churn_model(catalog, base_index);
    let at_start = start_rows(catalog, base, dims, &[])
        .await?
        .filter(ident("__t").eq(lit(start.clone())))
        .map_err(df_err)?;
    let now = catalog
        .scan(model)
        .and_then(|s| {
            s.filter(
                ident(&t.column)
                    .eq(lit(end.clone()))
                    .and(base.active.clone()),
            )
        })
        .and_then(|s| s.select(vec![ident(&base.entity).alias("__e1")]))
        .map_err(df_err)?;
    let counted = counts(at_start, now, base_index, dims, false)?;
    let mut select = vec![lit(start).alias(PAIR_START), lit(end).alias(PAIR_END)];
    select.extend(dims.iter().map(ident));
    select.extend(
        [
            ChurnValue::ActiveAtStart,
            ChurnValue::Churned,
            ChurnValue::Returned,
        ]
        .map(|v| ident(column(base_index, v))),
    );
    counted.select(select).map_err(df_err)
}

/// The (previous period end, period end) snapshot pairs a query needs, from the model's
/// snapshot dates (ascending), exactly as [`period_ends`] computes them in the plan: with a grain,
/// one pair per period in the range whose previous period has a snapshot; without one, the last
/// snapshot before `from` (or the first) and the last one in the range.
pub(super) fn needed_pairs(
    snapshots: &[NaiveDate],
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    grain: Option<Grain>,
    week_start: chrono::Weekday,
) -> Vec<(NaiveDate, NaiveDate)> {
    let until = to.and_then(|d| d.succ_opt());
    let before_until = |s: &NaiveDate| until.is_none_or(|u| *s < u);
    match grain {
        Some(g) => {
            let read_from = from.map(|f| shift(period_start(f, g, week_start), g, -1));
            let mut ends: BTreeMap<NaiveDate, NaiveDate> = BTreeMap::new();
            for &s in snapshots
                .iter()
                .filter(|s| read_from.is_none_or(|f| **s >= f) && before_until(s))
            {
                let end = ends.entry(period_start(s, g, week_start)).or_insert(s);
                *end = (*end).max(s);
            }
            let first = from.map(|f| period_start(f, g, week_start));
            ends.iter()
                .filter(|(p, _)| first.is_none_or(|f| **p >= f))
                .filter_map(|(p, end)| {
                    let previous = period_start(*p - chrono::Days::new(1), g, week_start);
                    ends.get(&previous).map(|prev_end| (*prev_end, *end))
                })
                .collect()
        }
        None => {
            let end = snapshots
                .iter()
                .filter(|s| from.is_none_or(|f| **s >= f) && before_until(s))
                .max();
            let start = match from {
                Some(f) => snapshots.iter().filter(|s| **s < f).max(),
                None => snapshots.first(),
            };
            start.zip(end).map(|(s, e)| (*s, *e)).into_iter().collect()
        }
    }
}

/// A query's churn counts from a churn rollup holding every pair it needs: the rows of those
/// pairs, each pair's period read from its end snapshot, summed by (period?, dims).
pub(super) async fn from_rollup(
    catalog: &Catalog,
    q: &ValidatedQuery,
    rollup: &crate::catalog::Rollup,
    base_index: usize,
    pairs: &[(NaiveDate, NaiveDate)],
    dims: &[String],
    grain: Option<Grain>,
) -> Result<DataFrame, QueryError> {
    let date = |d: NaiveDate| lit(ScalarValue::Date32(Some(days_since_epoch(d))));
    let wanted = pairs
        .iter()
        .map(|(s, e)| {
            ident(PAIR_START)
                .eq(date(*s))
                .and(ident(PAIR_END).eq(date(*e)))
        })
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    let (rows, _) = filtered_rows(catalog, &rollup.model, &[], &q.filters).await?;
    let rows = rows.filter(wanted).map_err(df_err)?;
    let mut keys: Vec<Expr> = Vec::new();
    if let Some(g) = grain {
        keys.push(period_expr(g, ident(PAIR_END), &DataType::Date32, &q.calendar).alias(PERIOD));
    }
    keys.extend(dims.iter().map(ident));
    let values = [
        ChurnValue::ActiveAtStart,
        ChurnValue::Churned,
        ChurnValue::Returned,
    ];
    rows.aggregate(
        keys,
        values
            .map(|v| sum(ident(column(base_index, v))).alias(column(base_index, v)))
            .to_vec(),
    )
    .map_err(df_err)
}

/// The columns of a churn rollup holding its pair of snapshot dates.
pub const PAIR_START: &str = "__pair_start";
pub const PAIR_END: &str = "__pair_end";

/// Entities at the start snapshot (`__e`, `__a0`, dims, and `PERIOD` when `by_period`), each
/// marked by whether it is active at the end (a row of `active_at_end`: `__e1`, and `__p1` when
/// `by_period`), counted by (period?, dims). A mark join: an entity with two active rows at the
/// end is still counted once, without grouping the end's rows by entity first.
fn counts(
    at_start: DataFrame,
    active_at_end: DataFrame,
    base_index: usize,
    dims: &[String],
    by_period: bool,
) -> Result<DataFrame, QueryError> {
    let mut on = vec![ident("__e").eq(ident("__e1"))];
    if by_period {
        on.push(ident(PERIOD).eq(ident("__p1")));
    }
    let joined = at_start
        .join_on(
            active_at_end.alias("__end").map_err(df_err)?,
            JoinType::LeftMark,
            on,
        )
        .map_err(df_err)?;

    let active_now = ident("mark");
    let churned = when(
        ident("__a0")
            .eq(lit(1i64))
            .and(active_now.clone().is_false()),
        lit(1i64),
    )
    .otherwise(lit(0i64))
    .map_err(df_err)?;
    let returned = when(ident("__a0").eq(lit(0i64)).and(active_now), lit(1i64))
        .otherwise(lit(0i64))
        .map_err(df_err)?;
    let mut keys: Vec<Expr> = Vec::new();
    if by_period {
        keys.push(ident(PERIOD));
    }
    keys.extend(dims.iter().map(ident));
    joined
        .aggregate(
            keys,
            vec![
                sum(ident("__a0")).alias(column(base_index, ChurnValue::ActiveAtStart)),
                sum(churned).alias(column(base_index, ChurnValue::Churned)),
                sum(returned).alias(column(base_index, ChurnValue::Returned)),
            ],
        )
        .map_err(df_err)
}

/// One row per period in the range: (period?, end snapshot date, previous period's end).
/// Snapshot dates come from the whole model, not the filtered rows.
async fn period_ends(
    catalog: &Catalog,
    q: &ValidatedQuery,
    model: &crate::catalog::Model,
    grain: Option<Grain>,
    alias: &str,
) -> Result<DataFrame, QueryError> {
    let t = model.time.as_ref().expect("validated");
    let snaps = catalog
        .scan(model)
        .map_err(df_err)?
        .select(vec![ident(&t.column).alias("__s")])
        .map_err(df_err)?;
    let until = q.to.and_then(|d| d.succ_opt());
    let df = match grain {
        Some(g) => {
            // Read one period more at the front: its end is the first period's start.
            let from = q
                .from
                .map(|f| shift(period_start(f, g, q.calendar.week_start), g, -1));
            let within = range_expr(ident(&t.column), &t.data_type, from, until, &q.calendar)?
                .unwrap_or(lit(true));
            // The distinct dates first: periods computed once per date, not once per row.
            let ends = distinct_dates(catalog, model, within, "__s")
                .and_then(|d| {
                    d.aggregate(
                        vec![period_expr(g, ident("__s"), &t.data_type, &q.calendar).alias(PERIOD)],
                        vec![max(ident("__s")).alias(END)],
                    )
                })
                .map_err(df_err)?;
            let prev = ends
                .clone()
                .select(vec![
                    ident(PERIOD).alias("__pp"),
                    ident(END).alias(PREV_END),
                ])
                .map_err(df_err)?;
            let day = lit(ScalarValue::new_interval_dt(1, 0));
            let prev_period = period_expr(
                g,
                ident(PERIOD) - day,
                &datafusion::arrow::datatypes::DataType::Date32,
                &q.calendar,
            );
            let mut cur = ends
                .join_on(prev, JoinType::Inner, vec![ident("__pp").eq(prev_period)])
                .map_err(df_err)?;
            if let Some(f) = q.from {
                // On the period's end date, not its period: a filter on the period would be
                // pushed below the grouping as a per-row date_trunc.
                let first = period_start(f, g, q.calendar.week_start);
                if let Some(r) =
                    range_expr(ident(END), &t.data_type, Some(first), None, &q.calendar)?
                {
                    cur = cur.filter(r).map_err(df_err)?;
                }
            }
            cur.select(vec![ident(PERIOD), ident(END), ident(PREV_END)])
                .map_err(df_err)?
        }
        None => {
            let mut in_range = snaps.clone();
            if let Some(r) = range_expr(ident("__s"), &t.data_type, q.from, until, &q.calendar)? {
                in_range = in_range.filter(r).map_err(df_err)?;
            }
            let end = in_range
                .aggregate(vec![], vec![max(ident("__s")).alias(END)])
                .map_err(df_err)?;
            let start = match q.from {
                Some(f) => {
                    let before =
                        range_expr(ident("__s"), &t.data_type, None, Some(f), &q.calendar)?
                            .expect("an upper bound");
                    snaps
                        .filter(before)
                        .and_then(|s| s.aggregate(vec![], vec![max(ident("__s")).alias(PREV_END)]))
                        .map_err(df_err)?
                }
                None => snaps
                    .aggregate(vec![], vec![min(ident("__s")).alias(PREV_END)])
                    .map_err(df_err)?,
            };
            // No snapshot in the range (or none before it): no pair, so no counts, as
            // `needed_pairs` says; not every customer at the start counted as churned.
            end.join(start, JoinType::Inner, &[], &[], None)
                .and_then(|p| p.filter(ident(END).is_not_null().and(ident(PREV_END).is_not_null())))
                .map_err(df_err)?
        }
    };
    df.alias(alias).map_err(df_err)
}
