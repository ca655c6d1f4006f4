//! Row listings that are not queries: a record rule's matching rows and a model's latest date.
//! Plans built here and run by the service, so the applications that need them (alerts,
//! dashboards) never build plans of their own.

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{ident, lit};

use super::error::QueryError;
use super::planner::{ColumnRole, OutputColumn, df_err, filtered_rows};
use crate::catalog::Catalog;

/// Which rows of a model a record rule lists, and what of each.
pub struct RecordListing<'a> {
    pub model: &'a str,
    /// Over the model's columns; `now()` and `current_date()` are the given clock's.
    pub condition: &'a Expr,
    pub key: &'a str,
    /// A dimension: who the row belongs to.
    pub owner: &'a str,
    /// The org levels above the owner, for scoping.
    pub path: &'a [String],
    pub show: &'a [String],
    pub now: DateTime<Utc>,
    pub today: NaiveDate,
    /// At most this many rows (the plan asks one more, to tell a cut from a complete list).
    pub limit: usize,
}

/// The plan listing the rows, and its columns: `__key`, `__owner`, one per path level, one per
/// shown column.
pub async fn record_rows(
    catalog: &Catalog,
    r: &RecordListing<'_>,
) -> Result<(DataFrame, Vec<OutputColumn>), QueryError> {
    let model = catalog
        .models
        .get(r.model)
        .ok_or_else(|| QueryError::internal(format!("unknown model '{}'", r.model)))?;
    let mut dims = r.path.to_vec();
    if !dims.iter().any(|d| d == r.owner) {
        dims.push(r.owner.to_string());
    }
    let (df, exprs) = filtered_rows(catalog, model, &dims, &[]).await?;
    let condition = at_clock(r.condition.clone(), r.now, r.today)?;
    let mut select = vec![
        ident(r.key).alias("__key"),
        exprs[r.owner].clone().alias("__owner"),
    ];
    let mut columns = vec![
        OutputColumn::new("__key", ColumnRole::Key),
        OutputColumn::new("__owner", ColumnRole::Key),
    ];
    for level in r.path {
        select.push(exprs[level].clone().alias(format!("__path_{level}")));
        columns.push(OutputColumn::new(
            format!("__path_{level}"),
            ColumnRole::Dimension,
        ));
    }
    for c in r.show {
        select.push(ident(c).alias(format!("__show_{c}")));
        columns.push(OutputColumn::new(
            format!("__show_{c}"),
            ColumnRole::Dimension,
        ));
    }
    let df = df
        .filter(condition)
        .and_then(|d| d.select(select))
        .and_then(|d| d.sort(vec![ident("__key").sort(true, false)]))
        .and_then(|d| d.limit(0, Some(r.limit + 1)))
        .map_err(df_err)?;
    Ok((df, columns))
}

/// The condition with `now()` and `current_date()` replaced by the clock's values.
fn at_clock(condition: Expr, now: DateTime<Utc>, today: NaiveDate) -> Result<Expr, QueryError> {
    let instant = now
        .timestamp_nanos_opt()
        .ok_or_else(|| QueryError::internal("the clock is out of the nanosecond range"))?;
    let days = (today - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    condition
        .transform_up(|e| match &e {
            Expr::ScalarFunction(f) if f.name() == "now" => Ok(Transformed::yes(lit(
                ScalarValue::TimestampNanosecond(Some(instant), Some("+00:00".into())),
            ))),
            Expr::ScalarFunction(f) if f.name() == "current_date" => {
                Ok(Transformed::yes(lit(ScalarValue::Date32(Some(days)))))
            }
            _ => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
        .map_err(df_err)
}

/// The plan of a model's last date (its time column), as a one-row `member` listing.
pub fn latest_date(catalog: &Catalog, model: &str) -> Result<DataFrame, QueryError> {
    let m = catalog
        .models
        .get(model)
        .ok_or_else(|| QueryError::internal(format!("unknown model '{model}'")))?;
    let t = m
        .time
        .as_ref()
        .ok_or_else(|| QueryError::internal(format!("model '{model}' has no time column")))?;
    catalog
        .scan(m)
        .and_then(|df| {
            df.aggregate(
                vec![],
                vec![max(cast(ident(&t.column), DataType::Date32)).alias("member")],
            )
        })
        .map_err(df_err)
}
