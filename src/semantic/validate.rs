//! Request -> validated query: every name resolved against the catalog, every filter value turned
//! into a typed literal of its dimension's type. Client text never reaches a SQL parser.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;
use datafusion::prelude::lit;
use serde_json::Value;

use super::calendar::{CalendarConfig, Comparison, query_window};
use super::error::{ErrorKind, QueryError};
use crate::catalog::Catalog;
use crate::protocol::{FilterOp, FilterRequest, Grain, OrderRequest, QueryRequest};
use crate::security::Scope;
use crate::text::clip;

/// Bounds on what one request may ask for (DESIGN.md §8: bound everything).
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub max_metrics: usize,
    pub max_dimensions: usize,
    pub max_filters: usize,
    pub max_filter_values: usize,
    pub max_rows: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_metrics: 20,
            max_dimensions: 6,
            max_filters: 32,
            max_filter_values: 1000,
            max_rows: 50_000,
        }
    }
}

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

#[derive(Debug, Clone)]
pub struct Filter {
    pub dimension: String,
    pub predicate: Predicate,
}

#[derive(Debug, Clone)]
pub enum Predicate {
    Eq(ScalarValue),
    /// Like Cube's `notEquals`: rows where the dimension is null are kept.
    Ne(ScalarValue),
    In(Vec<ScalarValue>),
    /// Rows where the dimension is null are kept.
    NotIn(Vec<ScalarValue>),
    Gt(ScalarValue),
    Gte(ScalarValue),
    Lt(ScalarValue),
    Lte(ScalarValue),
    /// Inclusive on both ends.
    Between(ScalarValue, ScalarValue),
    IsNull(bool),
}

impl Predicate {
    /// The predicate over a dimension column expression.
    pub fn to_expr(&self, column: Expr) -> Expr {
        let lits = |v: &[ScalarValue]| v.iter().cloned().map(lit).collect::<Vec<_>>();
        match self {
            Predicate::Eq(v) => column.eq(lit(v.clone())),
            Predicate::Ne(v) => column.clone().is_null().or(column.not_eq(lit(v.clone()))),
            Predicate::In(v) => column.in_list(lits(v), false),
            Predicate::NotIn(v) => column.clone().is_null().or(column.in_list(lits(v), true)),
            Predicate::Gt(v) => column.gt(lit(v.clone())),
            Predicate::Gte(v) => column.gt_eq(lit(v.clone())),
            Predicate::Lt(v) => column.lt(lit(v.clone())),
            Predicate::Lte(v) => column.lt_eq(lit(v.clone())),
            Predicate::Between(lo, hi) => column.between(lit(lo.clone()), lit(hi.clone())),
            Predicate::IsNull(true) => column.is_null(),
            Predicate::IsNull(false) => column.is_not_null(),
        }
    }
}

pub const PERIOD: &str = "period";

pub fn validate(
    catalog: &Catalog,
    req: &QueryRequest,
    limits: &QueryLimits,
    calendar: &CalendarConfig,
    scope: &Scope,
) -> Result<ValidatedQuery, QueryError> {
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

    let mut models = BTreeSet::new();
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
        models.extend(catalog.models_of(name));
        if catalog.metrics[name].definition.is_shaped() && req.metrics.len() > 1 {
            return Err(QueryError::invalid(format!(
                "'{name}' is a {} metric: its result has its own shape, so query it on its own",
                crate::catalog::kind_name(catalog.metrics[name].definition.kind())
            ))
            .at(format!("metrics[{i}]")));
        }
    }
    let shaped = catalog.metrics[&req.metrics[0]].definition.is_shaped();
    if shaped {
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
        if matches!(
            catalog.metrics[&req.metrics[0]].definition,
            crate::catalog::MetricDefinition::Cohort(_)
        ) && req.time.as_ref().is_some_and(|t| t.grain.is_some())
        {
            return refuse(
                "time.grain",
                "a time grain (cohorts use their declared period)",
            );
        }
    }

    let mut dimensions = req.dimensions.clone();
    let mut drill_filters = Vec::new();
    let drill = match &req.drill {
        None => None,
        Some(d) => {
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
            for level in &levels[..depth] {
                let value = &d.path[level];
                let field = format!("drill.path.{level}");
                check_dimension(catalog, level, &models, &req.metrics, &field)?;
                drill_filters.push(member_filter(catalog, level, value, &field)?);
                path.push((level.clone(), value.clone()));
            }
            let level = levels[depth].clone();
            check_dimension(catalog, &level, &models, &req.metrics, "drill")?;
            dimensions.insert(0, level.clone());
            Some(Drill {
                hierarchy: d.hierarchy.clone(),
                path,
                level,
            })
        }
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

    let (grain, from, to) = match &req.time {
        None => (None, None, None),
        Some(t) => {
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
            for model in &models {
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
    if !req.compare.is_empty() && (from.is_none() || to.is_none()) {
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

    let mut filters = drill_filters;
    filters.extend(typed_filters(
        catalog,
        &req.filters,
        &models,
        &req.metrics,
        limits,
    )?);
    filters.extend(scope_filters(catalog, scope, &models, &req.metrics)?);

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

    let limit = match req.limit {
        None => limits.max_rows,
        Some(0) => return Err(QueryError::invalid("limit must be at least 1").at("limit")),
        Some(n) if n > limits.max_rows => {
            return Err(QueryError::invalid(format!(
                "limit {n} exceeds the maximum of {} rows",
                limits.max_rows
            ))
            .at("limit"));
        }
        Some(n) => n,
    };

    Ok(ValidatedQuery {
        metrics: req.metrics.clone(),
        dimensions,
        grain,
        from,
        to,
        filters,
        order: req.order.clone(),
        limit,
        totals: req.totals,
        models,
        calendar: calendar.clone(),
        compare: req.compare.clone(),
        as_of,
        requested_to: req.time.as_ref().and_then(|t| t.to),
        partial_start,
        drill,
        fill_gaps: req.fill_gaps,
        use_rollups: req.rollups,
        scope: scope.clone(),
    })
}

/// The principal's org scope as filters that every model the request reads must take. They are
/// ANDed with the request's own filters and drill path, so nothing in a request can widen them;
/// a model that cannot be narrowed to the scope is refused (403), never answered unscoped.
pub(crate) fn scope_filters(
    catalog: &Catalog,
    scope: &Scope,
    models: &BTreeSet<String>,
    metrics: &[String],
) -> Result<Vec<Filter>, QueryError> {
    scope
        .0
        .iter()
        .map(|(level, member)| {
            check_dimension(catalog, level, models, metrics, "scope").map_err(|e| {
                QueryError::new(
                    ErrorKind::Forbidden,
                    "out_of_scope",
                    format!(
                        "this cannot be narrowed to your scope ({}): {}",
                        scope.key(),
                        e.message
                    ),
                )
            })?;
            member_filter(catalog, level, &member.to_json(), "scope")
        })
        .collect()
}

/// Request filters as typed predicates, each dimension reachable from every model read.
pub(crate) fn typed_filters(
    catalog: &Catalog,
    requested: &[FilterRequest],
    models: &BTreeSet<String>,
    metrics: &[String],
    limits: &QueryLimits,
) -> Result<Vec<Filter>, QueryError> {
    requested
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = format!("filters[{i}]");
            check_dimension(
                catalog,
                &f.dimension,
                models,
                metrics,
                &format!("{field}.dimension"),
            )?;
            let data_type = &catalog.dimensions[&f.dimension].data_type;
            Ok(Filter {
                dimension: f.dimension.clone(),
                predicate: typed_predicate(f, data_type, limits, &field)?,
            })
        })
        .collect()
}

/// `level = member` for a hierarchy path, the member typed like the level's dimension.
pub(crate) fn member_filter(
    catalog: &Catalog,
    level: &str,
    member: &Value,
    field: &str,
) -> Result<Filter, QueryError> {
    let t = &catalog.dimensions[level].data_type;
    Ok(Filter {
        dimension: level.to_string(),
        predicate: Predicate::Eq(literal(member, t, field)?),
    })
}

/// The dimension exists and every model the query reads can reach it.
pub(crate) fn check_dimension(
    catalog: &Catalog,
    name: &str,
    models: &BTreeSet<String>,
    metrics: &[String],
    field: &str,
) -> Result<(), QueryError> {
    let Some(dim) = catalog.dimensions.get(name) else {
        return Err(QueryError::new(
            ErrorKind::NotFound,
            "unknown_dimension",
            format!(
                "unknown dimension '{}'{}",
                clip(name),
                did_you_mean(name, catalog.dimensions.keys())
            ),
        )
        .at(field));
    };
    if let Some(model) = models.iter().find(|m| !dim.models.contains(*m)) {
        let metric = metrics
            .iter()
            .find(|m| catalog.models_of(m).contains(model))
            .cloned()
            .unwrap_or_default();
        return Err(QueryError::invalid(format!(
            "dimension '{name}' is not available for metric '{metric}' (model '{model}' does not declare it)"
        ))
        .at(field));
    }
    Ok(())
}

fn typed_predicate(
    f: &FilterRequest,
    t: &DataType,
    limits: &QueryLimits,
    field: &str,
) -> Result<Predicate, QueryError> {
    let one = || -> Result<ScalarValue, QueryError> {
        if f.values.is_some() {
            return Err(QueryError::invalid(format!(
                "op '{}' takes 'value', not 'values'",
                op_name(f.op)
            ))
            .at(field));
        }
        let v = f.value.as_ref().ok_or_else(|| {
            QueryError::invalid(format!("op '{}' needs a 'value'", op_name(f.op)))
                .at(format!("{field}.value"))
        })?;
        literal(v, t, &format!("{field}.value"))
    };
    let many = |exact: Option<usize>| -> Result<Vec<ScalarValue>, QueryError> {
        if f.value.is_some() {
            return Err(QueryError::invalid(format!(
                "op '{}' takes 'values', not 'value'",
                op_name(f.op)
            ))
            .at(field));
        }
        let vs = f.values.as_ref().ok_or_else(|| {
            QueryError::invalid(format!("op '{}' needs 'values'", op_name(f.op)))
                .at(format!("{field}.values"))
        })?;
        if let Some(n) = exact
            && vs.len() != n
        {
            return Err(QueryError::invalid(format!(
                "op '{}' needs exactly {n} values",
                op_name(f.op)
            ))
            .at(format!("{field}.values")));
        }
        if vs.is_empty() || vs.len() > limits.max_filter_values {
            return Err(QueryError::invalid(format!(
                "op '{}' needs between 1 and {} values, got {}",
                op_name(f.op),
                limits.max_filter_values,
                vs.len()
            ))
            .at(format!("{field}.values")));
        }
        vs.iter()
            .enumerate()
            .map(|(i, v)| literal(v, t, &format!("{field}.values[{i}]")))
            .collect()
    };
    Ok(match f.op {
        FilterOp::Eq => Predicate::Eq(one()?),
        FilterOp::Ne => Predicate::Ne(one()?),
        FilterOp::Gt => Predicate::Gt(one()?),
        FilterOp::Gte => Predicate::Gte(one()?),
        FilterOp::Lt => Predicate::Lt(one()?),
        FilterOp::Lte => Predicate::Lte(one()?),
        FilterOp::In => Predicate::In(many(None)?),
        FilterOp::NotIn => Predicate::NotIn(many(None)?),
        FilterOp::Between => {
            let mut v = many(Some(2))?;
            let hi = v.pop().expect("two values");
            Predicate::Between(v.pop().expect("two values"), hi)
        }
        FilterOp::IsNull => {
            if f.values.is_some() {
                return Err(
                    QueryError::invalid("op 'is_null' takes an optional boolean 'value'").at(field),
                );
            }
            match &f.value {
                None => Predicate::IsNull(true),
                Some(Value::Bool(b)) => Predicate::IsNull(*b),
                Some(_) => {
                    return Err(QueryError::invalid(
                        "op 'is_null' takes an optional boolean 'value'",
                    )
                    .at(format!("{field}.value")));
                }
            }
        }
    })
}

/// A JSON value as a literal of the dimension's type, or a 422 naming the field.
pub fn literal(v: &Value, t: &DataType, field: &str) -> Result<ScalarValue, QueryError> {
    let mismatch = |expected: &str| {
        QueryError::invalid(format!(
            "expected {expected} for a {} dimension, got {}",
            type_name(t),
            describe(v)
        ))
        .at(field)
    };
    let scalar = match t {
        DataType::Utf8 => match v {
            Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
            _ => return Err(mismatch("a string")),
        },
        t if t.is_integer() => match v.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => return Err(mismatch("an integer")),
        },
        t if t.is_floating() || matches!(t, DataType::Decimal128(_, _)) => match v.as_f64() {
            Some(x) => ScalarValue::Float64(Some(x)),
            None => return Err(mismatch("a number")),
        },
        DataType::Boolean => match v {
            Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
            _ => return Err(mismatch("true or false")),
        },
        DataType::Date32 | DataType::Date64 => match v
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        {
            Some(d) => ScalarValue::Date32(Some(days_since_epoch(d))),
            None => return Err(mismatch("a date \"YYYY-MM-DD\"")),
        },
        DataType::Timestamp(_, _) => match v
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        {
            Some(ts) => {
                ScalarValue::TimestampMicrosecond(Some(ts.timestamp_micros()), Some("UTC".into()))
            }
            None => return Err(mismatch("an RFC 3339 timestamp")),
        },
        other => {
            return Err(QueryError::invalid(format!(
                "filters on a {other} dimension are not supported"
            ))
            .at(field));
        }
    };
    scalar.cast_to(t).map_err(|_| {
        QueryError::invalid(format!(
            "{} does not fit a {} dimension",
            describe(v),
            type_name(t)
        ))
        .at(field)
    })
}

pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32
}

/// The JSON type name clients see for an Arrow type.
pub fn type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "string",
        t if t.is_integer() => "integer",
        t if t.is_numeric() => "number",
        DataType::Boolean => "boolean",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(
            TimeUnit::Second | TimeUnit::Millisecond | TimeUnit::Microsecond | TimeUnit::Nanosecond,
            _,
        ) => "timestamp",
        _ => "string",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null (use op 'is_null')".into(),
        Value::String(s) => format!("the string \"{}\"", clip(s)),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("{b}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// "; did you mean 'x'?" for the closest known name within two edits, else nothing.
fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    if name.len() > 64 {
        return String::new();
    }
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("; did you mean '{k}'?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Echoes client text in errors, but never more than a screenful of it.
pub fn op_name(op: FilterOp) -> &'static str {
    match op {
        FilterOp::Eq => "eq",
        FilterOp::Ne => "ne",
        FilterOp::In => "in",
        FilterOp::NotIn => "not_in",
        FilterOp::Gt => "gt",
        FilterOp::Gte => "gte",
        FilterOp::Lt => "lt",
        FilterOp::Lte => "lte",
        FilterOp::Between => "between",
        FilterOp::IsNull => "is_null",
    }
}
