//! Cumulative metrics: running totals since a reset (YTD, QTD, MTD, since the first row) and
//! rolling windows of periods, over a flow measure.
//!
//! The measure is aggregated at a base grain whose periods never straddle a window's start (the
//! query's grain, or a finer one where a reset falls inside a period: a quarter's month-to-date
//! is its last month's, a week's year-to-date starts on January 1st), over the query's range
//! widened back to the first window's start. Each output period then adds the base periods in
//! its window: a join of the base rows to a literal table of the output periods, on the reset
//! period (an equality) or, for a rolling window, on the window's bounds. A period runs through
//! its last day or the query's `to`, whichever comes first, so a partial month's YTD (and its
//! comparison a year back, shifted the same way) runs through the same day.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlanBuilder, cast};
use datafusion::prelude::{ident, lit};

use super::measures::{measure_column, measures_frame};
use super::rows::{df_err, period_expr};
use crate::catalog::{Catalog, CumulativeMetric, CumulativeSpan};
use crate::protocol::Grain;
use crate::semantic::calendar::{period_start, shift};
use crate::semantic::error::{ErrorKind, QueryError};
use crate::semantic::validate::PERIOD;
use crate::semantic::validate::{ValidatedQuery, days_since_epoch};
use crate::spec::Reset;

/// The internal column holding a cumulative metric's value.
pub(super) fn column(metric: &str) -> String {
    format!("__cum_{metric}")
}

/// An output period: its start, where its window starts (none: since the first row), and the
/// day after its last day.
type Window = (NaiveDate, Option<NaiveDate>, NaiveDate);

const PERIOD_OUT: &str = "__cum_period";
/// The most periods a running total is computed for in one answer.
const MOST_PERIODS: usize = 3_660;
const WINDOW_FROM: &str = "__cum_from";
const WINDOW_UNTIL: &str = "__cum_until";

/// (period?, dims..., the metric's `__cum_` column) for one cumulative metric. Without a grain
/// (a query over a range, or a query's totals) the one value is the window ending on `to`.
pub(super) async fn frame(
    catalog: &Catalog,
    q: &ValidatedQuery,
    metric: &str,
    def: &CumulativeMetric,
    dims: &[String],
    grain: Option<Grain>,
    rollups: &mut BTreeSet<String>,
) -> Result<DataFrame, QueryError> {
    let Some(to) = q.to else {
        return Err(QueryError::invalid(format!(
            "'{metric}' is a running total: the query needs time.to, the day it runs through"
        )));
    };
    let week_start = q.calendar.week_start;
    let until_of = |p: NaiveDate, g: Grain| shift(p, g, 1).min(day_after(to));
    let (periods, base_grain): (Vec<Window>, Option<Grain>) = match grain {
        Some(g) => {
            let Some(from) = q.from else {
                return Err(QueryError::invalid(format!(
                    "'{metric}' is a running total: a query by period needs time.from"
                )));
            };
            let mut periods = Vec::new();
            let mut p = period_start(from, g, week_start);
            while p <= to {
                // Every period is a row of the answer and of the plan's window table (literal
                // values, copied by each optimiser pass): ten years of days at most.
                let most = q.limit.min(MOST_PERIODS);
                if periods.len() >= most {
                    return Err(QueryError::new(
                        ErrorKind::Invalid,
                        "answer_too_large",
                        format!(
                            "'{metric}' is a running total over more than {most} periods, more than one answer may hold: ask for a coarser grain or a shorter range"
                        ),
                    ));
                }
                let until = until_of(p, g);
                periods.push((p, window_start(def.span, g, p, until, week_start), until));
                p = shift(p, g, 1);
            }
            (periods, Some(base_grain(def.span, g)))
        }
        None => {
            // The range's last period of the query's grain carries a rolling window.
            let window_grain = match (def.span, q.grain) {
                (CumulativeSpan::LastPeriods(_), None) => {
                    return Err(QueryError::invalid(format!(
                        "'{metric}' is a rolling window of periods: the query needs time.grain"
                    )));
                }
                (_, g) => g.unwrap_or(Grain::Day),
            };
            let last = period_start(to, window_grain, week_start);
            let until = day_after(to);
            let from = window_start(def.span, window_grain, last, until, week_start);
            (vec![(last, from, until)], None)
        }
    };

    // The measure over the widened range, at the base grain (from a rollup where one holds it).
    let measure = &catalog.measures[&def.measure];
    let mut widened = q.clone();
    widened.from = periods.iter().map(|(_, from, _)| *from).min().flatten();
    widened.grain = base_grain;
    let base = measures_frame(
        catalog,
        &widened,
        &measure.model,
        None,
        &[measure],
        dims,
        base_grain,
        rollups,
    )
    .await?;
    let value = ident(measure_column(&measure.name));
    let finish = |total: Expr| match def.span {
        CumulativeSpan::LastPeriods(n) if def.average => {
            cast(total, DataType::Float64) / lit(f64::from(n))
        }
        _ => total,
    };

    if base_grain.is_none() {
        let mut select: Vec<Expr> = dims.iter().map(ident).collect();
        select.push(finish(value).alias(column(metric)));
        return base.select(select).map_err(df_err);
    }

    let date = |d: Option<NaiveDate>| lit(ScalarValue::Date32(d.map(days_since_epoch)));
    let rows: Vec<Vec<Expr>> = periods
        .iter()
        .map(|(p, from, until)| vec![date(Some(*p)), date(*from), date(Some(*until))])
        .collect();
    let (state, _) = base.clone().into_parts();
    let table = LogicalPlanBuilder::values(rows)
        .and_then(|b| b.build())
        .map_err(df_err)?;
    let windows = DataFrame::new(state, table)
        .select(vec![
            ident("column1").alias(PERIOD_OUT),
            ident("column2").alias(WINDOW_FROM),
            ident("column3").alias(WINDOW_UNTIL),
        ])
        .map_err(df_err)?;
    let before_until = ident(PERIOD).lt(ident(WINDOW_UNTIL));
    let on = match def.span {
        // The base period's reset period is the window's start: an equality to join on.
        CumulativeSpan::SinceReset(reset @ (Reset::Year | Reset::Quarter | Reset::Month)) => vec![
            period_expr(
                reset_grain(reset),
                ident(PERIOD),
                &DataType::Date32,
                &q.calendar,
            )
            .eq(ident(WINDOW_FROM)),
            before_until,
        ],
        CumulativeSpan::SinceReset(Reset::Never) => vec![before_until],
        CumulativeSpan::LastPeriods(_) => {
            vec![ident(PERIOD).gt_eq(ident(WINDOW_FROM)), before_until]
        }
    };
    let mut keys = vec![ident(PERIOD_OUT).alias(PERIOD)];
    keys.extend(dims.iter().map(ident));
    let summed = windows
        .join_on(base, JoinType::Inner, on)
        .and_then(|j| j.aggregate(keys, vec![sum(value).alias("__cum_total")]))
        .map_err(df_err)?;
    let mut select = vec![ident(PERIOD)];
    select.extend(dims.iter().map(ident));
    select.push(finish(ident("__cum_total")).alias(column(metric)));
    summed.select(select).map_err(df_err)
}

fn day_after(d: NaiveDate) -> NaiveDate {
    d.succ_opt().unwrap_or(d)
}

fn reset_grain(reset: Reset) -> Grain {
    match reset {
        Reset::Year => Grain::Year,
        Reset::Quarter => Grain::Quarter,
        Reset::Month | Reset::Never => Grain::Month,
    }
}

/// Where the window of the period starting `p` (at `grain`, ending the day before `until`)
/// starts: the start of the reset period holding its last day, none (since the first row), or
/// `n - 1` periods back.
fn window_start(
    span: CumulativeSpan,
    grain: Grain,
    p: NaiveDate,
    until: NaiveDate,
    week_start: chrono::Weekday,
) -> Option<NaiveDate> {
    match span {
        CumulativeSpan::SinceReset(Reset::Never) => None,
        CumulativeSpan::SinceReset(reset) => {
            let last_day = until.pred_opt().unwrap_or(until);
            Some(period_start(last_day, reset_grain(reset), week_start))
        }
        CumulativeSpan::LastPeriods(n) => Some(shift(p, grain, 1 - n as i32)),
    }
}

/// The grain the measure is aggregated at: the query's, unless a reset can fall inside one of
/// its periods (weeks straddle months and years; a year holds its months' starts).
fn base_grain(span: CumulativeSpan, grain: Grain) -> Grain {
    let rank = |g: Grain| match g {
        Grain::Day => 0,
        Grain::Week => 1,
        Grain::Month => 2,
        Grain::Quarter => 3,
        Grain::Year => 4,
    };
    match span {
        CumulativeSpan::SinceReset(Reset::Never) | CumulativeSpan::LastPeriods(_) => grain,
        CumulativeSpan::SinceReset(reset) => {
            let r = reset_grain(reset);
            match grain {
                Grain::Day => grain,
                Grain::Week => Grain::Day,
                g if rank(g) <= rank(r) => g,
                _ => r,
            }
        }
    }
}
