//! Rollups: the plans that build one, and choosing one for a query. Three forms:
//! - measures: partial results by the model's time values as they are and the rollup's
//!   dimensions, so every range, period and period-end snapshot computed over it is the one
//!   computed over the model; it answers a measure group exactly when it holds the group's
//!   measures and every dimension the group groups or filters by;
//! - churn: one churn base's counts for pairs of snapshot dates (the end of a period and of the
//!   one before), by the dimensions read at the first; it answers when it holds every pair the
//!   query's periods need;
//! - funnel: each entity with its first-step time and when it reached each later step, so a
//!   query only filters and counts.

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::prelude::{ident, lit};
use std::collections::{BTreeMap, BTreeSet};

use super::{aggregate, churn, cohort, funnel, measure_input, with_dimensions};
use crate::catalog::{
    Catalog, Combine, DefinitionForm, DimensionBinding, Measure, MetricDefinition, Model,
    Reaggregation, Rollup, RollupDefinition, RollupForm, TimeColumn, reaggregation,
};
use crate::protocol::Grain;
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::validate::{ValidatedQuery, days_since_epoch};
use crate::spec::Aggregation;
use crate::text::first_line;

/// A measure rollup's time key column.
pub const ROLLUP_TIME: &str = "__rollup_time";
/// The model's time as it is, beside the key while a window restricts the rows.
const RAW_TIME: &str = "__rollup_raw_time";

/// Spans of local dates (inclusive, in the calendar's time zone) that a refresh recomputes: the
/// model's rows whose time falls on them, and the rollup's rows keyed on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DateWindow(pub Vec<(NaiveDate, NaiveDate)>);

impl DateWindow {
    /// Adds a span, merging it with those it overlaps or touches.
    pub fn add(&mut self, from: NaiveDate, to: NaiveDate) {
        self.0.push((from.min(to), from.max(to)));
        self.0.sort();
        let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for (f, t) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if f <= last.1.succ_opt().unwrap_or(last.1) => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        self.0 = merged;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.0.iter().any(|(f, t)| *f <= d && d <= *t)
    }

    /// `time` (a model's time column of `data_type`) on one of the window's local dates.
    pub fn filter(&self, time: Expr, data_type: &DataType, calendar: &CalendarConfig) -> Expr {
        self.0
            .iter()
            .map(|(from, to)| {
                let next = to.succ_opt().unwrap_or(*to);
                match data_type {
                    DataType::Timestamp(unit, zone) => {
                        let bound = |d: NaiveDate| {
                            timestamp_literal(
                                *unit,
                                zone.clone(),
                                local_midnight(d, zone, calendar),
                            )
                        };
                        time.clone()
                            .gt_eq(bound(*from))
                            .and(time.clone().lt(bound(next)))
                    }
                    _ => {
                        let day = |d: NaiveDate| {
                            cast(
                                lit(ScalarValue::Date32(Some(days_since_epoch(d)))),
                                data_type.clone(),
                            )
                        };
                        time.clone()
                            .gt_eq(day(*from))
                            .and(time.clone().lt_eq(day(*to)))
                    }
                }
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }
}

/// Nanoseconds since the epoch of `d`'s first instant: in the calendar's zone for a zoned
/// timestamp (as query ranges cut it), the naive midnight for one without a zone (already local).
fn local_midnight(
    d: NaiveDate,
    zone: &Option<std::sync::Arc<str>>,
    calendar: &CalendarConfig,
) -> i64 {
    match zone {
        Some(_) => calendar.first_instant(d).saturating_mul(1_000),
        None => d
            .and_hms_opt(0, 0, 0)
            .expect("midnight is a valid time")
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap_or(i64::MAX),
    }
}

fn timestamp_literal(unit: TimeUnit, zone: Option<std::sync::Arc<str>>, nanos: i64) -> Expr {
    lit(match unit {
        TimeUnit::Second => ScalarValue::TimestampSecond(Some(nanos / 1_000_000_000), zone),
        TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(nanos / 1_000_000), zone),
        TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(nanos / 1_000), zone),
        TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(nanos), zone),
    })
}

/// The column holding an average's partial count.
fn partial_count_column(name: &str) -> String {
    format!("__rollup_{name}__n")
}

/// The table name a rollup's rows are registered under.
pub fn table_name(def: &RollupDefinition) -> String {
    format!("__rollup_{}", def.name)
}

fn plan_error(e: crate::semantic::QueryError) -> String {
    e.message
}

fn df_error(e: datafusion::error::DataFusionError) -> String {
    first_line(&e)
}

/// The base measures a measure rollup holds.
fn measures_of<'a>(catalog: &'a Catalog, def: &RollupDefinition) -> Vec<&'a Measure> {
    def.spec
        .measures
        .iter()
        .map(|m| &catalog.measures[m])
        .collect()
}

/// A measure rollup's key columns: its time (when the model has one) and its dimensions.
fn key_columns(catalog: &Catalog, def: &RollupDefinition) -> Vec<String> {
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
async fn keyed_rows(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
    window: Option<&DateWindow>,
) -> Result<(DataFrame, Vec<String>), String> {
    let base = &catalog.models[&def.spec.model];
    let measures = measures_of(catalog, def);
    let (df, exprs) = Box::pin(with_dimensions(catalog, base, &def.spec.dimensions, &mut 0))
        .await
        .map_err(plan_error)?;
    let mut select: Vec<Expr> = Vec::new();
    if let Some(t) = &base.time {
        let time = match local_days(base, &measures) {
            true => super::period_expr(Grain::Day, ident(&t.column), &t.data_type, calendar),
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
        select.push(
            measure_input(m, df.schema())
                .map_err(plan_error)?
                .alias(input_column(m)),
        );
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
fn local_days(base: &Model, measures: &[&Measure]) -> bool {
    matches!(
        base.time.as_ref().map(|t| &t.data_type),
        Some(DataType::Timestamp(..))
    ) && measures.iter().all(|m| m.snapshot.is_none())
}

fn input_column(m: &Measure) -> String {
    format!("__in_{}", m.name)
}

/// The plan computing a measure rollup's rows: its measures' partial results grouped by the
/// model's time column and the rollup's dimensions (joins done once, here).
pub async fn plan(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
    window: Option<&DateWindow>,
) -> Result<LogicalPlan, String> {
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
) -> Result<LogicalPlan, String> {
    let (rows, keys) = keyed_rows(catalog, def, calendar, window).await?;
    let value = ident(input_column(&catalog.measures[measure]));
    let keys = keys.iter().map(ident).collect();
    let part = super::count_distinct_by(rows, keys, value, &partial_column(measure))
        .map_err(plan_error)?;
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
) -> Result<LogicalPlan, String> {
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
    let merged = super::union_by_keys(vec![rest, part], &key_columns(catalog, def))
        .and_then(|m| m.select(order).map_err(super::df_err))
        .map_err(plan_error)?;
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
) -> Result<Vec<(String, LogicalPlan)>, String> {
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
        let input = measure_input(m, rows.schema()).map_err(plan_error)?;
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

/// The parts every form shares: a model over the rollup's table with one column per dimension.
fn rollup_of(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    time: Option<TimeColumn>,
    form: RollupForm,
) -> Rollup {
    let base = &catalog.models[&def.spec.model];
    let model = Model {
        name: def.name.clone(),
        label: base.label.clone(),
        file: def.file.clone(),
        table: table_name(def),
        schema,
        time,
        primary_key: None,
        joins: BTreeMap::new(),
        dimensions: def
            .spec
            .dimensions
            .iter()
            .map(|d| (d.clone(), DimensionBinding::Column(d.clone())))
            .collect(),
        reads: base.reads.clone(),
        drill_through: Vec::new(),
        // Its columns are dimensions and aggregates, which the catalog keeps free of it.
        personal: Default::default(),
        materialize: None,
    };
    Rollup {
        name: def.name.clone(),
        file: def.file.clone(),
        base: def.spec.model.clone(),
        dimensions: def.spec.dimensions.iter().cloned().collect(),
        model,
        form,
        rows: 0,
        build_ms: 0.0,
        refresh: Default::default(),
    }
}

/// The plan listing a model's distinct snapshot dates (a churn rollup's periods come from them).
pub fn snapshot_dates(
    catalog: &Catalog,
    def: &RollupDefinition,
    window: Option<&DateWindow>,
    calendar: &CalendarConfig,
) -> Result<LogicalPlan, String> {
    let base = &catalog.models[&def.spec.model];
    let t = base
        .time
        .as_ref()
        .expect("validated: churn models have time");
    let within = match window {
        Some(w) => w.filter(ident(&t.column), &t.data_type, calendar),
        None => lit(true),
    };
    let df = super::distinct_dates(catalog, base, within, "__snapshot").map_err(df_error)?;
    Ok(df.into_unoptimized_plan())
}

/// The snapshot pairs a churn rollup holds: consecutive period ends at each of its grains.
/// Weeks start on Monday here; a query with another week start finds its pairs or reads the
/// model, never a wrong pair.
pub fn churn_pairs(def: &RollupDefinition, snapshots: &[NaiveDate]) -> Vec<(NaiveDate, NaiveDate)> {
    let DefinitionForm::Churn { grains, .. } = &def.form else {
        return Vec::new();
    };
    let pairs: BTreeSet<(NaiveDate, NaiveDate)> = grains
        .iter()
        .flat_map(|g| churn::needed_pairs(snapshots, None, None, Some(*g), chrono::Weekday::Mon))
        .collect();
    pairs.into_iter().collect()
}

/// The plan computing a churn rollup's rows for one pair of snapshots: built a pair at a time so
/// that only two snapshots are in memory at once.
pub async fn churn_pair_plan(
    catalog: &Catalog,
    def: &RollupDefinition,
    (start, end): (NaiveDate, NaiveDate),
) -> Result<LogicalPlan, String> {
    let DefinitionForm::Churn { base, .. } = def.form else {
        return Err("not a churn rollup".into());
    };
    let date = |d: NaiveDate| ScalarValue::Date32(Some(days_since_epoch(d)));
    let df = churn::pair_frame(catalog, base, &def.spec.dimensions, date(start), date(end))
        .await
        .map_err(plan_error)?;
    Ok(df.into_unoptimized_plan())
}

pub fn materialised_churn(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    snapshots: Vec<NaiveDate>,
    pairs: Vec<(NaiveDate, NaiveDate)>,
) -> Rollup {
    let DefinitionForm::Churn { base, .. } = def.form else {
        unreachable!("a churn rollup")
    };
    let form = RollupForm::Churn {
        base,
        snapshots,
        pairs: pairs.into_iter().collect(),
    };
    rollup_of(catalog, def, schema, None, form)
}

/// The funnel metric a funnel rollup holds.
fn funnel_of<'a>(catalog: &'a Catalog, metric: &str) -> &'a crate::catalog::FunnelMetric {
    let MetricDefinition::Funnel(f) = &catalog.metrics[metric].definition else {
        unreachable!("validated: a funnel metric")
    };
    f
}

/// The plan computing a funnel rollup's rows: every entity over the whole history.
pub async fn funnel_plan(catalog: &Catalog, def: &RollupDefinition) -> Result<LogicalPlan, String> {
    let DefinitionForm::Funnel { metric } = &def.form else {
        return Err("not a funnel rollup".into());
    };
    let f = funnel_of(catalog, metric);
    let df = funnel::entities(catalog, f, &def.spec.dimensions, &[], None)
        .await
        .map_err(plan_error)?;
    Ok(df.into_unoptimized_plan())
}

/// The plan checking that each entity of a funnel rollup has one step-1 event, one row:
/// `__first_steps` and `__first_step_entities`, equal exactly when it does, so that the range a
/// query cuts keeps an entity whole or not at all.
pub async fn funnel_first_steps(
    catalog: &Catalog,
    def: &RollupDefinition,
) -> Result<LogicalPlan, String> {
    let DefinitionForm::Funnel { metric } = &def.form else {
        return Err("not a funnel rollup".into());
    };
    let f = funnel_of(catalog, metric);
    let first =
        cast(ident(&f.step), DataType::Utf8).eq(lit(ScalarValue::Utf8(Some(f.steps[0].clone()))));
    let first_steps = catalog
        .scan(&catalog.models[&f.model])
        .and_then(|e| e.filter(first))
        .and_then(|e| {
            e.aggregate(
                vec![],
                vec![
                    count(lit(1i64)).alias("__first_steps"),
                    datafusion::functions_aggregate::expr_fn::count_distinct(ident(&f.entity))
                        .alias("__first_step_entities"),
                ],
            )
        })
        .map_err(df_error)?;
    Ok(first_steps.into_unoptimized_plan())
}

pub fn materialised_funnel(catalog: &Catalog, def: &RollupDefinition, schema: SchemaRef) -> Rollup {
    let DefinitionForm::Funnel { metric } = &def.form else {
        unreachable!("a funnel rollup")
    };
    let f = funnel_of(catalog, metric);
    let time = catalog.models[&f.model].time.as_ref().map(|t| TimeColumn {
        column: funnel::FIRST_TIME.to_string(),
        data_type: t.data_type.clone(),
    });
    let form = RollupForm::Funnel {
        metric: metric.clone(),
    };
    rollup_of(catalog, def, schema, time, form)
}

/// The cohort metric a cohort rollup holds.
fn cohort_of<'a>(catalog: &'a Catalog, metric: &str) -> &'a crate::catalog::CohortMetric {
    let MetricDefinition::Cohort(c) = &catalog.metrics[metric].definition else {
        unreachable!("validated: a cohort metric")
    };
    c
}

/// The plan computing a cohort rollup's rows: the whole triangle by every dimension it holds.
pub async fn cohort_plan(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
) -> Result<LogicalPlan, String> {
    let DefinitionForm::Cohort { metric } = &def.form else {
        return Err("not a cohort rollup".into());
    };
    let c = cohort_of(catalog, metric);
    let df = cohort::triangle(
        catalog,
        c,
        &def.spec.dimensions,
        &[],
        (None, None),
        calendar,
    )
    .await
    .map_err(plan_error)?;
    Ok(df.into_unoptimized_plan())
}

/// The model a funnel or cohort rollup reads, and its entity.
fn entity_of<'a>(catalog: &'a Catalog, def: &RollupDefinition) -> Option<(&'a Model, &'a str)> {
    let (model, entity) = match &def.form {
        DefinitionForm::Funnel { metric } => {
            let f = funnel_of(catalog, metric);
            (&f.model, &f.entity)
        }
        DefinitionForm::Cohort { metric } => {
            let c = cohort_of(catalog, metric);
            (&c.model, &c.entity)
        }
        _ => return None,
    };
    Some((&catalog.models[model], entity.as_str()))
}

/// The plan checking that an entity's dimensions never change, one row: `__entities` (entities
/// with any row) and `__entity_dims` (distinct entity and dimension values), equal exactly when
/// a filter on the dimensions keeps or drops all of an entity's rows, and the entity falls in
/// one group.
pub async fn entity_dimension_check(
    catalog: &Catalog,
    def: &RollupDefinition,
) -> Result<LogicalPlan, String> {
    let (model, entity) = entity_of(catalog, def).ok_or("not a funnel or cohort rollup")?;
    let dims = &def.spec.dimensions;
    let (rows, exprs) = super::filtered_rows(catalog, model, dims, &[])
        .await
        .map_err(plan_error)?;
    let mut keys = vec![ident(entity).alias("__e")];
    keys.extend(super::dimension_columns(catalog, dims, &exprs));
    let count_rows = |alias: &str| vec![count(lit(1i64)).alias(alias)];
    let entity_dims = rows
        .clone()
        .aggregate(keys, vec![])
        .and_then(|e| e.aggregate(vec![], count_rows("__entity_dims")))
        .map_err(df_error)?;
    let entities = rows
        .aggregate(vec![ident(entity)], vec![])
        .and_then(|e| e.aggregate(vec![], count_rows("__entities")))
        .and_then(|e| {
            e.join(
                entity_dims,
                datafusion::logical_expr::JoinType::Inner,
                &[],
                &[],
                None,
            )
        })
        .map_err(df_error)?;
    Ok(entities.into_unoptimized_plan())
}

pub fn materialised_cohort(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    calendar: &CalendarConfig,
) -> Rollup {
    let DefinitionForm::Cohort { metric } = &def.form else {
        unreachable!("a cohort rollup")
    };
    let form = RollupForm::Cohort {
        metric: metric.clone(),
        time_zone: calendar.time_zone,
        week_start: calendar.week_start,
    };
    rollup_of(catalog, def, schema, None, form)
}

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

pub use super::churn::{PAIR_END, PAIR_START};

/// The rollup's model reduced to its time column (column 0), for a measure or churn rollup:
/// what a refresh traces back to the tables, to tell which of their rows land on which dates.
pub fn time_plan(catalog: &Catalog, def: &RollupDefinition) -> Result<Option<LogicalPlan>, String> {
    if !matches!(
        def.form,
        DefinitionForm::Measures | DefinitionForm::Churn { .. }
    ) {
        return Ok(None);
    }
    let base = &catalog.models[&def.spec.model];
    let Some(t) = &base.time else {
        return Ok(None);
    };
    let df = catalog
        .scan(base)
        .and_then(|s| s.select(vec![ident(&t.column)]))
        .map_err(df_error)?;
    Ok(Some(df.into_unoptimized_plan()))
}

/// Every plan a rollup's rows and checks come from: a stored copy is reused only while these,
/// with the SQL models they read inlined, are what they were (so an edit elsewhere in the
/// definitions keeps it).
pub async fn definition_plans(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
) -> Result<Vec<LogicalPlan>, String> {
    let mut plans = Vec::new();
    match &def.form {
        DefinitionForm::Measures => {
            plans.push(plan(catalog, def, calendar, None).await?);
            plans.extend(
                distinct_checks(catalog, def, None, calendar)?
                    .into_iter()
                    .map(|(_, p)| p),
            );
        }
        DefinitionForm::Churn { .. } => {
            plans.push(snapshot_dates(catalog, def, None, calendar)?);
            plans.push(churn_pair_plan(catalog, def, Default::default()).await?);
        }
        DefinitionForm::Funnel { .. } => {
            plans.push(entity_dimension_check(catalog, def).await?);
            plans.push(funnel_first_steps(catalog, def).await?);
            plans.push(funnel_plan(catalog, def).await?);
        }
        DefinitionForm::Cohort { .. } => {
            plans.push(entity_dimension_check(catalog, def).await?);
            plans.push(cohort_plan(catalog, def, calendar).await?);
        }
    }
    Ok(plans)
}
