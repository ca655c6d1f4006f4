//! Targets (任务) and where they answer; their attainment is a metric expression, and the share
//! of time gone (时间进度) is set per row once the rows are known (`series::pace`).
//!
//! A target metric reads a measure over a targets model (a member of an org level, a period, a
//! value) over *whole* periods: in May, the year's row of a year-grain query holds the whole
//! year's target, against which the actual so far and the time gone are read. A target is shown
//! only where the targets answer the row exactly: grouped at its level, or above it when the
//! targets are declared additive (a region's is its branches' sum), or for one member pinned by
//! a filter; never below its level, nor by a dimension or under a filter (a scope included) that
//! the targets model lacks. Elsewhere, and where no target was set, it is null, never 0.

use crate::catalog::Catalog;
use crate::protocol::Grain;
use crate::semantic::calendar::{period_end, period_start};
use crate::semantic::validate::{Predicate, ValidatedQuery};

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
