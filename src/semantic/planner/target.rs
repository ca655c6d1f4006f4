//! Targets (任务), their attainment (任务完成率) and the share of time gone (时间进度).
//!
//! A target metric reads a measure over a targets model (a member of an org level, a period, a
//! value) over *whole* periods: in May, the year's row of a year-grain query holds the whole
//! year's target, against which the actual so far and the time gone are read. A target is shown
//! only where the targets answer the row exactly: grouped at its level, or above it when the
//! targets are declared additive (a region's is its branches' sum), or for one member pinned by
//! a filter; never below its level, nor by a dimension or under a filter (a scope included) that
//! the targets model lacks. Elsewhere, and where no target was set, it is null, never 0.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::{greatest, least};
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{ident, lit};

use super::super::calendar::{next_period, period_end, period_start};
use super::super::validate::{PERIOD, Predicate, ValidatedQuery, days_since_epoch};
use crate::catalog::Catalog;
use crate::protocol::Grain;

/// Whether a target set at `level` over `measure`'s model answers rows grouped by `dims` under
/// the query's filters.
pub(super) fn answerable(
    catalog: &Catalog,
    q: &ValidatedQuery,
    measure: &str,
    level: &str,
    additive: bool,
    dims: &[String],
) -> bool {
    let model = &catalog.models[&catalog.measures[measure].model];
    let constrained = dims.iter().chain(q.filters.iter().map(|f| &f.dimension));
    if constrained
        .clone()
        .any(|d| !model.dimensions.contains_key(d))
    {
        return false;
    }
    let Some(levels) = catalog
        .hierarchies
        .values()
        .find(|l| l.iter().any(|x| x == level))
    else {
        return false;
    };
    let depth = |d: &String| levels.iter().position(|l| l == d);
    let at = depth(&level.to_string()).expect("level is in its hierarchy");
    match dims.iter().filter_map(depth).max() {
        Some(finest) if finest > at => false,
        Some(finest) if finest == at => true,
        _ => {
            let pinned = q.filters.iter().any(|f| {
                f.dimension == level
                    && match &f.predicate {
                        Predicate::Eq(_) => true,
                        Predicate::In(members) => members.len() == 1,
                        _ => false,
                    }
            });
            pinned || additive
        }
    }
}

/// The query over the whole periods it touches (from the first's start to the last's end): the
/// range targets are read over.
pub(super) fn whole_periods(q: &ValidatedQuery, grain: Option<Grain>) -> ValidatedQuery {
    let mut whole = q.clone();
    if let Some(g) = grain {
        let week_start = q.calendar.week_start;
        whole.from = q.from.map(|d| period_start(d, g, week_start));
        whole.to = q.to.map(|d| period_end(d, g, week_start));
        whole.partial_start = None;
    }
    whole
}

/// The share of each row's period gone by the query's end (its `to`, clipped to the as-of
/// date): 0 for a period not begun, 1 for one over. Null without a grain (a range has no period
/// to be part of).
pub(super) fn time_progress(q: &ValidatedQuery, grain: Option<Grain>) -> Expr {
    let Some(g) = grain else {
        return cast(lit(ScalarValue::Null), DataType::Float64);
    };
    let day = |e: Expr| cast(cast(e, DataType::Date32), DataType::Int64);
    let start = day(ident(PERIOD));
    // The period's length in days, from its start: months, quarters and years vary.
    let next = match g {
        Grain::Day => start.clone() + lit(1i64),
        Grain::Week => start.clone() + lit(7i64),
        Grain::Month | Grain::Quarter | Grain::Year => {
            let months = match g {
                Grain::Month => 1,
                Grain::Quarter => 3,
                _ => 12,
            };
            day(cast(ident(PERIOD), DataType::Date32)
                + lit(ScalarValue::new_interval_ym(0, months)))
        }
    };
    let end = q.to.unwrap_or(q.as_of).min(q.as_of);
    let through = lit(days_since_epoch(next_period(end, Grain::Day)) as i64);
    let gone = greatest(vec![
        lit(0i64),
        least(vec![through, next.clone()]) - start.clone(),
    ]);
    cast(gone, DataType::Float64) / cast(next - start, DataType::Float64)
}
