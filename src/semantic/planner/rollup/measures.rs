//! Measure rollups: partial results by the model's time values as they are and the rollup's
//! dimensions, with the distinct counts' checks and partial parts.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::prelude::{ident, lit};
use std::collections::{BTreeMap, BTreeSet};

use super::super::measures::{aggregate, measure_input};
use super::super::rows::with_dimensions;
use super::common::{df_error, rollup_of, table_name};
use super::window::DateWindow;
use crate::catalog::{
    Catalog, Combine, Measure, Model, Reaggregation, Rollup, RollupDefinition, RollupForm,
    TimeColumn, reaggregation,
};
use crate::protocol::Grain;
use crate::semantic::QueryError;
use crate::semantic::calendar::CalendarConfig;
use crate::spec::Aggregation;

/// A measure rollup's time key column.
pub const ROLLUP_TIME: &str = "__rollup_time";

/// The model's time as it is, beside the key while a window restricts the rows.
pub(super) const RAW_TIME: &str = "__rollup_raw_time";

/// The column holding an average's partial count.
pub(super) fn partial_count_column(name: &str) -> String {
    format!("__rollup_{name}__n")
}

/// The base measures a measure rollup holds.
pub(super) fn measures_of<'a>(catalog: &'a Catalog, def: &RollupDefinition) -> Vec<&'a Measure> {
    def.spec
        .measures
        .iter()
        .map(|m| &catalog.measures[m])
        .collect()
}

/// A measure rollup's key columns: its time (when the model has one) and its dimensions.
pub(super) fn key_columns(catalog: &Catalog, def: &RollupDefinition) -> Vec<String> {
    let time = catalog.models[&def.spec.model]
        .time
        .as_ref()
        .map(|_| ROLLUP_TIME.to_string());
    time.into_iter()
        .chain(def.spec.dimensions.iter().cloned())
        .collect()
}

/// The model's rows under the rollup's keys (its time and dimensions, joins done) with every
/// measure's input as `__in_<measure>`, and the key names.
pub(super) async fn keyed_rows(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
    window: Option<&DateWindow>,
) -> Result<(DataFrame, Vec<String>), QueryError> {
    let base = &catalog.models[&def.spec.model];
    let measures = measures_of(catalog, def);
    let (df, exprs) =
        Box::pin(with_dimensions(catalog, base, &def.spec.dimensions, &mut 0)).await?;
    let mut select: Vec<Expr> = Vec::new();
    if let Some(t) = &base.time {
        let time = match local_days(base, &measures) {
            true => super::super::rows::period_expr(
                Grain::Day,
                ident(&t.column),
                &t.data_type,
                calendar,
            ),
            false => ident(&t.column),
        };
        select.push(time.alias(ROLLUP_TIME));
        if window.is_some() {
            select.push(ident(&t.column).alias(RAW_TIME));
        }
    }
    for d in &def.spec.dimensions {
        let data_type = catalog.dimensions[d].data_type.clone();
        select.push(cast(exprs[d].clone(), data_type).alias(d));
    }
    for m in &measures {
        select.push(measure_input(m, df.schema())?.alias(input_column(m)));
    }
    let mut rows = df.select(select).map_err(df_error)?;
    if let (Some(window), Some(t)) = (window, &base.time) {
        // On the raw time, so that the scan prunes by it; whole local days, so that a local-day
        // key is in the window exactly when its rows are.
        rows = rows
            .filter(window.filter(ident(RAW_TIME), &t.data_type, calendar))
            .map_err(df_error)?;
    }
    Ok((rows, key_columns(catalog, def)))
}

/// Whether a measure rollup keeps the model's timestamps as local dates: when they are
/// timestamps and no measure takes a snapshot (which needs the instants).
pub(super) fn local_days(base: &Model, measures: &[&Measure]) -> bool {
    matches!(
        base.time.as_ref().map(|t| &t.data_type),
        Some(DataType::Timestamp(..))
    ) && measures.iter().all(|m| m.snapshot.is_none())
}

pub(super) fn input_column(m: &Measure) -> String {
    format!("__in_{}", m.name)
}

/// The plan computing a measure rollup's rows: its measures' partial results grouped by the
/// model's time column and the rollup's dimensions (joins done once, here).
pub async fn plan(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
    window: Option<&DateWindow>,
) -> Result<LogicalPlan, QueryError> {
    let (rows, keys) = keyed_rows(catalog, def, calendar, window).await?;
    let mut aggs = Vec::new();
    for m in measures_of(catalog, def) {
        let value = ident(input_column(m));
        match reaggregation(m.agg) {
            Reaggregation::SumOverCount => {
                aggs.push(sum(value.clone()).alias(partial_column(&m.name)));
                aggs.push(count(value).alias(partial_count_column(&m.name)));
            }
            // A distinct count is first kept as the group's count of values: exact when no value
            // repeats within a group, which the build checks (see `distinct_part` otherwise).
            // Unlike per-group hash sets, a count stays inside the memory pool.
            Reaggregation::SumOfDistinct => aggs.push(count(value).alias(partial_column(&m.name))),
            Reaggregation::By(_) | Reaggregation::SumOfCounts => {
                aggs.push(aggregate(m.agg, value).alias(partial_column(&m.name)))
            }
        }
    }
    let rows = rows
        .aggregate(keys.iter().map(ident).collect(), aggs)
        .map_err(df_error)?;
    Ok(rows.into_unoptimized_plan())
}

/// A distinct count's exact per-group counts, for when values repeat within a group: the
/// distinct (keys, value) pairs, then a count of them per group (two plain aggregations).
pub async fn distinct_part(
    catalog: &Catalog,
    def: &RollupDefinition,
    measure: &str,
    calendar: &CalendarConfig,
    window: Option<&DateWindow>,
) -> Result<LogicalPlan, QueryError> {
    let (rows, keys) = keyed_rows(catalog, def, calendar, window).await?;
    let value = ident(input_column(&catalog.measures[measure]));
    let keys = keys.iter().map(ident).collect();
    let part = super::super::rows::count_distinct_by(rows, keys, value, &partial_column(measure))?;
    Ok(part.into_unoptimized_plan())
}

/// The rollup's rows (table [`table_name`], `schema`) with one distinct count's partial column
/// replaced by the rows of `part_table` (from [`distinct_part`]), columns in `schema`'s order.
pub fn with_distinct_part(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    measure: &str,
    (part_table, part_schema): (&str, SchemaRef),
) -> Result<LogicalPlan, QueryError> {
    let column = partial_column(measure);
    let keep: Vec<Expr> = schema
        .fields()
        .iter()
        .filter(|f| *f.name() != column)
        .map(|f| ident(f.name()))
        .collect();
    let order: Vec<Expr> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let rest = catalog
        .plans
        .scan(&table_name(def), schema)
        .and_then(|r| r.select(keep))
        .map_err(df_error)?;
    let part = catalog
        .plans
        .scan(part_table, part_schema)
        .map_err(df_error)?;
    let merged = super::super::rows::union_by_keys(vec![rest, part], &key_columns(catalog, def))
        .and_then(|m| m.select(order).map_err(super::super::rows::df_err))?;
    Ok(merged.into_unoptimized_plan())
}

/// The rollup's column holding a measure's partial result.
pub fn partial_column(name: &str) -> String {
    format!("__rollup_{name}")
}

/// For each distinct count the rollup holds, a plan giving one row, `__distinct`: the entities
/// counted over the model (per snapshot date for a semi-additive measure, else overall). The
/// groups' partial counts add up to it exactly when each entity is counted in one group (at a
/// snapshot), so that summing groups counts it once.
///
/// With a window, the checks of distinct counts per snapshot date cover the window's dates only
/// (the others were checked before); a distinct count over the whole history is checked over it.
pub fn distinct_checks(
    catalog: &Catalog,
    def: &RollupDefinition,
    window: Option<&DateWindow>,
    calendar: &CalendarConfig,
) -> Result<Vec<(String, LogicalPlan)>, QueryError> {
    let base = &catalog.models[&def.spec.model];
    let mut out = Vec::new();
    for m in measures_of(catalog, def) {
        if m.agg != Aggregation::CountDistinct {
            continue;
        }
        let mut rows = catalog.scan(base).map_err(df_error)?;
        if let (Some(window), Some(_), Some(t)) = (window, m.snapshot, &base.time) {
            rows = rows
                .filter(window.filter(ident(&t.column), &t.data_type, calendar))
                .map_err(df_error)?;
        }
        let input = measure_input(m, rows.schema())?;
        let mut keys = vec![input.clone().alias("__entity")];
        if let (Some(_), Some(t)) = (m.snapshot, &base.time) {
            keys.push(ident(&t.column).alias("__at"));
        }
        let distinct = rows
            .filter(input.is_not_null())
            .and_then(|r| r.aggregate(keys, vec![]))
            .and_then(|r| r.aggregate(vec![], vec![count(lit(1i64)).alias("__distinct")]))
            .map_err(df_error)?;
        out.push((m.name.clone(), distinct.into_unoptimized_plan()));
    }
    Ok(out)
}

/// A measure rollup as the planner reads it, once the rows of [`plan`] are the table
/// [`table_name`] with `schema`; `refused` are distinct counts the build found inexact.
pub fn materialised(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    refused: &BTreeSet<String>,
    calendar: &CalendarConfig,
) -> Rollup {
    let base = &catalog.models[&def.spec.model];
    let days = local_days(base, &measures_of(catalog, def));
    let time = base.time.as_ref().map(|t| TimeColumn {
        column: ROLLUP_TIME.to_string(),
        data_type: if days {
            DataType::Date32
        } else {
            t.data_type.clone()
        },
    });
    let rolled: BTreeMap<String, Measure> = measures_of(catalog, def)
        .into_iter()
        .filter(|m| !refused.contains(&m.name))
        .map(|m| {
            let (agg, combine) = match reaggregation(m.agg) {
                Reaggregation::By(agg) => (agg, None),
                Reaggregation::SumOfCounts | Reaggregation::SumOfDistinct => {
                    (Aggregation::Sum, Some(Combine::CountOfParts))
                }
                Reaggregation::SumOverCount => (
                    Aggregation::Sum,
                    Some(Combine::SumOverCount(ident(partial_count_column(&m.name)))),
                ),
            };
            let rolled = Measure {
                name: m.name.clone(),
                model: m.model.clone(),
                agg,
                input: ident(partial_column(&m.name)),
                filter: None,
                snapshot: m.snapshot,
                combine,
            };
            (m.name.clone(), rolled)
        })
        .collect();
    let form = RollupForm::Measures {
        rolled,
        days_in: days.then_some(calendar.time_zone),
    };
    rollup_of(catalog, def, schema, time, form)
}
