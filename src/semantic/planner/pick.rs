//! Which pre-aggregation answers a part of a query: the smallest rollup holding every dimension
//! the part reads (grouped by or filtered on, the scope included) in the form it needs. Called by
//! the planner at query time; `rollup.rs` builds them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;

use super::churn;
use crate::catalog::{Catalog, Measure, Rollup, RollupForm};
use crate::protocol::Grain;
use crate::semantic::validate::ValidatedQuery;

/// The smallest measure rollup that answers this group of one model's measures exactly, if any,
/// with its measures as they re-aggregate.
pub fn pick<'a>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    model: &str,
    measures: &[&Measure],
    dims: &[String],
) -> Option<(&'a Rollup, &'a BTreeMap<String, Measure>)> {
    pick_answering(catalog, q, dims, |r| match &r.form {
        RollupForm::Measures { rolled, days_in }
            if r.base == model
                && days_in.is_none_or(|tz| tz == q.calendar.time_zone)
                && measures.iter().all(|m| rolled.contains_key(&m.name)) =>
        {
            Some(rolled)
        }
        _ => None,
    })
}

/// The smallest churn rollup of `base` holding the dimensions and every snapshot pair the query
/// needs, with those pairs.
pub fn pick_churn<'a>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    base_index: usize,
    dims: &[String],
    grain: Option<Grain>,
) -> Option<(&'a Rollup, Vec<(NaiveDate, NaiveDate)>)> {
    pick_answering(catalog, q, dims, |r| match &r.form {
        RollupForm::Churn {
            base,
            snapshots,
            pairs,
        } if *base == base_index => {
            let wanted = churn::needed_pairs(snapshots, q.from, q.to, grain, q.calendar.week_start);
            wanted.iter().all(|p| pairs.contains(p)).then_some(wanted)
        }
        _ => None,
    })
}

/// The smallest funnel rollup of `metric` holding every dimension the query reads.
pub fn pick_funnel<'a>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    metric: &str,
) -> Option<&'a Rollup> {
    pick_answering(catalog, q, &q.dimensions, |r| {
        matches!(&r.form, RollupForm::Funnel { metric: m } if m == metric).then_some(())
    })
    .map(|(r, _)| r)
}

/// The smallest cohort rollup of `metric` holding every dimension the query reads, built in the
/// query's calendar.
pub fn pick_cohort<'a>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    metric: &str,
) -> Option<&'a Rollup> {
    pick_answering(catalog, q, &q.dimensions, |r| {
        matches!(&r.form, RollupForm::Cohort { metric: m, time_zone, week_start }
            if m == metric
                && *time_zone == q.calendar.time_zone
                && *week_start == q.calendar.week_start)
        .then_some(())
    })
    .map(|(r, _)| r)
}

/// The smallest rollup holding every dimension the query's group reads (grouped by or filtered
/// on, the scope included) that `answers` accepts, with what `answers` found; none when the query
/// asks for the models.
fn pick_answering<'a, T>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    dims: &[String],
    answers: impl Fn(&'a Rollup) -> Option<T>,
) -> Option<(&'a Rollup, T)> {
    if !q.use_rollups {
        return None;
    }
    let needed: BTreeSet<&String> = dims
        .iter()
        .chain(q.filters.iter().map(|f| &f.dimension))
        .collect();
    catalog
        .rollups
        .values()
        .filter(|r| needed.iter().all(|d| r.dimensions.contains(*d)))
        .filter_map(|r| answers(r).map(|found| (r, found)))
        .min_by_key(|(r, _)| r.rows)
}
