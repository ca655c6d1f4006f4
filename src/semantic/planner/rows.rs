//! The planner's floor: a model's rows filtered, scoped and joined to the dimensions asked, time
//! ranges and periods in the calendar's zone, snapshot dates, and frames combined by key. Every
//! kind's plan builds on these; nothing here knows a kind.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::expr_fn::{date_trunc, to_local_time};
use datafusion::functions_aggregate::expr_fn::{count, max};
use datafusion::logical_expr::{Expr, JoinType, cast, when};
use datafusion::prelude::{ident, lit};

use crate::catalog::{Catalog, DimensionBinding, Model};
use crate::protocol::Grain;
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::error::QueryError;
use crate::semantic::validate::{ValidatedQuery, days_since_epoch};

pub(super) const TIME: &str = "__t";

pub(super) const SNAP_PERIOD: &str = "__snap_period";

pub(super) const SNAP_TIME: &str = "__snap_t";

/// Frames that each hold a key at most once, combined into one row per key with every value
/// column: UNION ALL (typed nulls where a frame lacks a column) and a GROUP BY on the keys, which
/// unlike a chain of outer joins matches null key values.
pub(super) fn union_by_keys(
    mut parts: Vec<DataFrame>,
    keys: &[String],
) -> Result<DataFrame, QueryError> {
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

/// The model's rows with `dims` reachable (joined as needed) and `filters` applied, and the
/// expression of each dimension over the joined frame.
pub(crate) async fn filtered_rows(
    catalog: &Catalog,
    model: &Model,
    dims: &[String],
    filters: &[crate::semantic::validate::Filter],
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
pub(super) fn flag(predicate: &Expr) -> Result<Expr, QueryError> {
    when(predicate.clone(), lit(1i64))
        .otherwise(lit(0i64))
        .map_err(df_err)
}

/// The model's table with the joins needed to reach `dims`, and the expression of each dimension
/// over the joined frame. Joins are many-to-one (to a primary key), so rows never multiply.
pub(super) async fn with_dimensions(
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
pub(super) fn time_range(model: &Model, q: &ValidatedQuery) -> Result<Option<Expr>, QueryError> {
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
pub(super) fn period_expr(
    grain: Grain,
    time: Expr,
    data_type: &DataType,
    calendar: &CalendarConfig,
) -> Expr {
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

/// A plan that cannot be built over validated definitions is a bug, not the client's fault; the
/// engine's error is kept as its cause.
pub(crate) fn df_err(e: datafusion::error::DataFusionError) -> QueryError {
    QueryError::internal(e.to_string()).caused_by(std::sync::Arc::new(e) as crate::semantic::Cause)
}

/// `value`, or 0 where it is null.
pub(super) fn or_zero(value: Expr) -> Expr {
    datafusion::functions::expr_fn::coalesce(vec![value, cast(lit(0i64), DataType::Int64)])
}
