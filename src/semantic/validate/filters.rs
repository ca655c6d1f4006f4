//! Filters: the request's, a drill path's and the principal's scope, each value turned into a
//! typed literal of its dimension's type (client text never reaches a SQL parser).

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;
use datafusion::prelude::lit;
use serde_json::Value;

use super::dimensions::check_dimension;
use super::limits::QueryLimits;
use crate::catalog::Catalog;
use crate::protocol::{FilterOp, FilterRequest};
use crate::security::Scope;
use crate::semantic::error::{ErrorKind, QueryError};
use crate::text::clip;

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
