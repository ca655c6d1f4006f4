//! Request -> validated query: every name resolved against the catalog, every filter value turned
//! into a typed literal of its dimension's type. Client text never reaches a SQL parser.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde_json::Value;

mod dimensions;
mod filters;
mod limits;

pub(crate) use dimensions::{check_dimension, did_you_mean};
pub use filters::{Filter, Predicate, days_since_epoch, literal, type_name};
pub(crate) use filters::{member_filter, scope_filters, typed_filters};
pub use limits::QueryLimits;

use super::calendar::{CalendarConfig, Comparison, query_window};
use super::error::{ErrorKind, QueryError};
use crate::catalog::{Catalog, MetricDefinition};
use crate::protocol::{Grain, OrderRequest, QueryRequest};
use crate::security::Scope;
use crate::text::clip;

/// A query the planner can trust.
#[derive(Debug, Clone)]
pub struct ValidatedQuery {
    pub metrics: Vec<String>,
    pub dimensions: Vec<String>,
    pub grain: Option<Grain>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub filters: Vec<Filter>,
    pub order: Vec<OrderRequest>,
    pub limit: usize,
    /// The most rows any answer may hold (`--max-rows`): what a query's own parts (a limited
    /// answer's comparisons) are bounded by.
    pub max_rows: usize,
    pub totals: bool,
    /// Models the query reads (through its metrics' measures).
    pub models: BTreeSet<String>,
    pub calendar: CalendarConfig,
    pub compare: Vec<Comparison>,
    pub as_of: NaiveDate,
    /// `to` as asked, before clipping to `as_of`.
    pub requested_to: Option<NaiveDate>,
    /// First day of the last period when it is unfinished at `as_of`.
    pub partial_start: Option<NaiveDate>,
    pub drill: Option<Drill>,
    pub fill_gaps: bool,
    /// Rollups may answer (the request's `rollups`).
    pub use_rollups: bool,
    /// The principal's scope (already among `filters`); listings the query runs take it too.
    pub scope: Scope,
}

/// A drill request resolved against its hierarchy.
#[derive(Debug, Clone)]
pub struct Drill {
    pub hierarchy: String,
    /// (level, member) from the top, as given.
    pub path: Vec<(String, Value)>,
    /// The level whose members are the result rows.
    pub level: String,
}

pub const PERIOD: &str = "period";

/// Validates a request in steps, each naming the field at fault: sizes, metrics, the shaped
/// kinds' restrictions, the drill path, dimensions, time, comparisons, filters (the request's,
/// the drill path's and the principal's scope), order, limit.
pub fn validate(
    catalog: &Catalog,
    req: &QueryRequest,
    limits: &QueryLimits,
    calendar: &CalendarConfig,
    scope: &Scope,
) -> Result<ValidatedQuery, QueryError> {
    check_sizes(req, limits)?;
    let (models, read) = check_metrics(catalog, req)?;
    if catalog.metrics[&req.metrics[0]].definition.is_shaped() {
        check_shaped(catalog, req)?;
    }
    let mut dimensions = req.dimensions.clone();
    let (drill, mut filters) = match &req.drill {
        Some(d) => {
            let (drill, path_filters) = resolve_drill(catalog, req, d, &models)?;
            dimensions.insert(0, drill.level.clone());
            (Some(drill), path_filters)
        }
        None => (None, Vec::new()),
    };
    for (i, name) in req.dimensions.iter().enumerate() {
        let field = format!("dimensions[{i}]");
        check_dimension(catalog, name, &models, &req.metrics, &field)?;
        if req.dimensions[..i].contains(name) {
            return Err(
                QueryError::invalid(format!("dimension '{name}' is listed twice")).at(field),
            );
        }
    }
    let time = resolve_time(catalog, req, &models, calendar)?;
    check_comparisons(req, &time)?;
    if time.grain.is_none()
        && let Some(i) = req.metrics.iter().position(|m| {
            matches!(
                catalog.metrics[m].definition,
                MetricDefinition::TimeProgress(_)
            )
        })
    {
        return Err(QueryError::invalid(format!(
            "'{}' is the share of each period gone: ask with a time grain",
            req.metrics[i]
        ))
        .at(format!("metrics[{i}]")));
    }
    if let Some(i) = req.compare.iter().position(|c| *c == Comparison::YearStart) {
        for metric in &req.metrics {
            if let Some(flow) = catalog.flow_measure_of(metric) {
                return Err(QueryError::invalid(format!(
                    "year_start (较年初) compares a balance with its value at the end of last year; '{metric}' reads '{flow}', a flow summed over time, for which that means nothing: compare it with same_period_last_year"
                ))
                .at(format!("compare[{i}]")));
            }
        }
    }
    filters.extend(typed_filters(
        catalog,
        &req.filters,
        &models,
        &req.metrics,
        limits,
    )?);
    filters.extend(scope_filters(catalog, scope, &models, &req.metrics)?);
    check_order(req, &dimensions, time.grain)?;
    let limit = resolve_limit(req, limits)?;

    Ok(ValidatedQuery {
        metrics: req.metrics.clone(),
        dimensions,
        grain: time.grain,
        from: time.from,
        to: time.to,
        filters,
        order: req.order.clone(),
        limit,
        max_rows: limits.max_rows,
        totals: req.totals,
        models: read,
        calendar: calendar.clone(),
        compare: req.compare.clone(),
        as_of: time.as_of,
        requested_to: req.time.as_ref().and_then(|t| t.to),
        partial_start: time.partial_start,
        drill,
        fill_gaps: req.fill_gaps,
        use_rollups: req.rollups,
        scope: scope.clone(),
    })
}

fn check_sizes(req: &QueryRequest, limits: &QueryLimits) -> Result<(), QueryError> {
    let too_many = |what: &str, n: usize, max: usize| {
        QueryError::invalid(format!("{n} {what} requested; at most {max} per query")).at(what)
    };
    if req.metrics.is_empty() {
        return Err(QueryError::invalid("ask for at least one metric").at("metrics"));
    }
    if req.metrics.len() > limits.max_metrics {
        return Err(too_many("metrics", req.metrics.len(), limits.max_metrics));
    }
    if req.dimensions.len() > limits.max_dimensions {
        return Err(too_many(
            "dimensions",
            req.dimensions.len(),
            limits.max_dimensions,
        ));
    }
    if req.filters.len() > limits.max_filters {
        return Err(too_many("filters", req.filters.len(), limits.max_filters));
    }
    Ok(())
}

/// Every metric known and listed once, a shaped one alone; the models they read.
fn check_metrics(
    catalog: &Catalog,
    req: &QueryRequest,
) -> Result<(BTreeSet<String>, BTreeSet<String>), QueryError> {
    let mut models = BTreeSet::new();
    let mut read = BTreeSet::new();
    let progress_only = req.metrics.iter().all(|m| {
        catalog
            .metrics
            .get(m)
            .is_some_and(|m| matches!(m.definition, MetricDefinition::TimeProgress(_)))
    });
    if progress_only && !req.metrics.is_empty() {
        return Err(QueryError::invalid(
            "time_progress paces other metrics: ask it together with them (an actual, a target)",
        )
        .at("metrics"));
    }
    for (i, name) in req.metrics.iter().enumerate() {
        if !catalog.metrics.contains_key(name) {
            return Err(QueryError::new(
                ErrorKind::NotFound,
                "unknown_metric",
                format!(
                    "unknown metric '{}'{}",
                    clip(name),
                    did_you_mean(name, catalog.metrics.keys())
                ),
            )
            .at(format!("metrics[{i}]")));
        }
        if req.metrics[..i].contains(name) {
            return Err(
                QueryError::invalid(format!("metric '{name}' is listed twice"))
                    .at(format!("metrics[{i}]")),
            );
        }
        models.extend(catalog.models_constraining(name));
        read.extend(catalog.models_of(name));
        if catalog.metrics[name].definition.is_shaped() && req.metrics.len() > 1 {
            return Err(QueryError::invalid(format!(
                "'{name}' is a {} metric: its result has its own shape, so query it on its own",
                catalog.metrics[name].definition.kind()
            ))
            .at(format!("metrics[{i}]")));
        }
    }
    Ok((models, read))
}

/// Funnels and cohorts have their own result shape: no comparisons, drill or order.
fn check_shaped(catalog: &Catalog, req: &QueryRequest) -> Result<(), QueryError> {
    let refuse = |field: &str, what: &str| {
        Err(QueryError::invalid(format!(
            "{what} is not available for funnel and cohort metrics"
        ))
        .at(field.to_string()))
    };
    if !req.compare.is_empty() {
        return refuse("compare", "compare");
    }
    if req.drill.is_some() {
        return refuse("drill", "drill (filter and slice by a dimension instead)");
    }
    if !req.order.is_empty() {
        return refuse("order", "order (rows come in step or cohort order)");
    }
    if catalog.metrics[&req.metrics[0]].definition.shape() == crate::catalog::Shape::Triangle
        && req.time.as_ref().is_some_and(|t| t.grain.is_some())
    {
        return refuse(
            "time.grain",
            "a time grain (cohorts use their declared period)",
        );
    }
    Ok(())
}

/// The drill path: the first levels of its hierarchy, in order, short of the leaf; its members
/// become filters and the next level the first dimension.
fn resolve_drill(
    catalog: &Catalog,
    req: &QueryRequest,
    d: &crate::protocol::DrillRequest,
    models: &BTreeSet<String>,
) -> Result<(Drill, Vec<Filter>), QueryError> {
    let levels = catalog.hierarchies.get(&d.hierarchy).ok_or_else(|| {
        QueryError::new(
            ErrorKind::NotFound,
            "unknown_hierarchy",
            format!(
                "unknown hierarchy '{}'{}",
                clip(&d.hierarchy),
                did_you_mean(&d.hierarchy, catalog.hierarchies.keys())
            ),
        )
        .at("drill.hierarchy")
    })?;
    let depth = d.path.len();
    for key in d.path.keys() {
        match levels.iter().position(|l| l == key) {
            Some(i) if i < depth => {}
            Some(_) => {
                return Err(QueryError::invalid(format!(
                    "the path must name the first {depth} levels of '{}' ({}), not '{key}'",
                    d.hierarchy,
                    levels[..depth.min(levels.len())].join(" > ")
                ))
                .at(format!("drill.path.{}", clip(key))));
            }
            None => {
                return Err(QueryError::invalid(format!(
                    "'{}' is not a level of hierarchy '{}' ({})",
                    clip(key),
                    d.hierarchy,
                    levels.join(" > ")
                ))
                .at(format!("drill.path.{}", clip(key))));
            }
        }
    }
    if depth >= levels.len() {
        return Err(QueryError::invalid(format!(
            "the path reaches the leaf level '{}'; its rows come from drill-through",
            levels[levels.len() - 1]
        ))
        .at("drill.path"));
    }
    if let Some((i, _)) = req
        .dimensions
        .iter()
        .enumerate()
        .find(|(_, dim)| levels.contains(dim))
    {
        return Err(QueryError::invalid(
            "a drill sets the hierarchy level itself; do not also ask for a level as a dimension",
        )
        .at(format!("dimensions[{i}]")));
    }
    let mut path = Vec::new();
    let mut filters = Vec::new();
    for level in &levels[..depth] {
        let value = &d.path[level];
        let field = format!("drill.path.{level}");
        check_dimension(catalog, level, models, &req.metrics, &field)?;
        filters.push(member_filter(catalog, level, value, &field)?);
        path.push((level.clone(), value.clone()));
    }
    let level = levels[depth].clone();
    check_dimension(catalog, &level, models, &req.metrics, "drill")?;
    let drill = Drill {
        hierarchy: d.hierarchy.clone(),
        path,
        level,
    };
    Ok((drill, filters))
}

/// The query's time frame: grain, range (clipped to the as-of date) and partial last period.
struct TimeFrame {
    grain: Option<Grain>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    as_of: NaiveDate,
    partial_start: Option<NaiveDate>,
}

fn resolve_time(
    catalog: &Catalog,
    req: &QueryRequest,
    models: &BTreeSet<String>,
    calendar: &CalendarConfig,
) -> Result<TimeFrame, QueryError> {
    let (grain, from, to) = match &req.time {
        None => (None, None, None),
        Some(t) => {
            for (d, field) in [
                (t.from, "time.from"),
                (t.to, "time.to"),
                (t.as_of, "time.as_of"),
            ] {
                if let Some(d) = d {
                    calendar.check_date(d, field)?;
                }
            }
            if let (Some(f), Some(a)) = (t.from, t.as_of)
                && a < f
            {
                return Err(
                    QueryError::invalid(format!("time.as_of {a} is before time.from {f}"))
                        .at("time.as_of"),
                );
            }
            if let (Some(f), Some(to)) = (t.from, t.to)
                && f > to
            {
                return Err(
                    QueryError::invalid(format!("time.from {f} is after time.to {to}")).at("time"),
                );
            }
            for model in models {
                if catalog.models[model].time.is_none() {
                    return Err(QueryError::invalid(format!(
                        "model '{model}' has no time column, so its metrics cannot be bucketed or ranged in time"
                    ))
                    .at("time"));
                }
            }
            (t.grain, t.from, t.to)
        }
    };
    let as_of = req
        .time
        .as_ref()
        .and_then(|t| t.as_of)
        .unwrap_or_else(|| calendar.today());
    let (to, partial_start) = match (from, to) {
        (Some(f), Some(t)) => {
            let w = query_window(f, t, grain, as_of, calendar.week_start);
            (Some(w.to), w.partial_start)
        }
        (None, Some(t)) => (Some(t.min(as_of)), None),
        _ => (to, None),
    };
    Ok(TimeFrame {
        grain,
        from,
        to,
        as_of,
        partial_start,
    })
}

fn check_comparisons(req: &QueryRequest, time: &TimeFrame) -> Result<(), QueryError> {
    if !req.compare.is_empty() && (time.from.is_none() || time.to.is_none()) {
        return Err(QueryError::invalid(
            "compare needs time.from and time.to: the range to compare with is derived from them",
        )
        .at("compare"));
    }
    for (i, c) in req.compare.iter().enumerate() {
        if req.compare[..i].contains(c) {
            return Err(QueryError::invalid(format!(
                "comparison '{}' is listed twice",
                c.as_str()
            ))
            .at(format!("compare[{i}]")));
        }
    }
    Ok(())
}

fn check_order(
    req: &QueryRequest,
    dimensions: &[String],
    grain: Option<Grain>,
) -> Result<(), QueryError> {
    for (i, o) in req.order.iter().enumerate() {
        let known = req.metrics.contains(&o.by)
            || dimensions.contains(&o.by)
            || (o.by == PERIOD && grain.is_some());
        if !known {
            return Err(QueryError::invalid(format!(
                "cannot order by '{}': order by a requested metric, dimension or 'period'",
                clip(&o.by)
            ))
            .at(format!("order[{i}].by")));
        }
    }
    Ok(())
}

fn resolve_limit(req: &QueryRequest, limits: &QueryLimits) -> Result<usize, QueryError> {
    match req.limit {
        None => Ok(limits.max_rows),
        Some(0) => Err(QueryError::invalid("limit must be at least 1").at("limit")),
        Some(n) if n > limits.max_rows => Err(QueryError::invalid(format!(
            "limit {n} exceeds the maximum of {} rows",
            limits.max_rows
        ))
        .at("limit")),
        Some(n) => Ok(n),
    }
}
