//! Funnel and cohort rollups: every entity of the metric (a funnel's steps, a cohort's
//! triangle) by the rollup's dimensions, with the checks that an entity falls in one group.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{LogicalPlan, cast};
use datafusion::prelude::{ident, lit};

use super::super::{cohort, funnel};
use super::common::{df_error, rollup_of};
use crate::catalog::{
    Catalog, DefinitionForm, MetricDefinition, Model, Rollup, RollupDefinition, RollupForm,
    TimeColumn,
};
use crate::semantic::QueryError;
use crate::semantic::calendar::CalendarConfig;

/// The funnel metric a funnel rollup holds.
pub(super) fn funnel_of<'a>(
    catalog: &'a Catalog,
    metric: &str,
) -> &'a crate::catalog::FunnelMetric {
    let MetricDefinition::Funnel(f) = &catalog.metrics[metric].definition else {
        unreachable!("validated: a funnel metric")
    };
    f
}

/// The plan computing a funnel rollup's rows: every entity over the whole history.
pub async fn funnel_plan(
    catalog: &Catalog,
    def: &RollupDefinition,
) -> Result<LogicalPlan, QueryError> {
    let DefinitionForm::Funnel { metric } = &def.form else {
        return Err(QueryError::internal("not a funnel rollup"));
    };
    let f = funnel_of(catalog, metric);
    let df = funnel::entities(catalog, f, &def.spec.dimensions, &[], None).await?;
    Ok(df.into_unoptimized_plan())
}

/// The plan checking that each entity of a funnel rollup has one step-1 event, one row:
/// `__first_steps` and `__first_step_entities`, equal exactly when it does, so that the range a
/// query cuts keeps an entity whole or not at all.
pub async fn funnel_first_steps(
    catalog: &Catalog,
    def: &RollupDefinition,
) -> Result<LogicalPlan, QueryError> {
    let DefinitionForm::Funnel { metric } = &def.form else {
        return Err(QueryError::internal("not a funnel rollup"));
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
pub(super) fn cohort_of<'a>(
    catalog: &'a Catalog,
    metric: &str,
) -> &'a crate::catalog::CohortMetric {
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
) -> Result<LogicalPlan, QueryError> {
    let DefinitionForm::Cohort { metric } = &def.form else {
        return Err(QueryError::internal("not a cohort rollup"));
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
    .await?;
    Ok(df.into_unoptimized_plan())
}

/// The model a funnel or cohort rollup reads, and its entity.
pub(super) fn entity_of<'a>(
    catalog: &'a Catalog,
    def: &RollupDefinition,
) -> Option<(&'a Model, &'a str)> {
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
) -> Result<LogicalPlan, QueryError> {
    let (model, entity) = entity_of(catalog, def)
        .ok_or_else(|| QueryError::internal("not a funnel or cohort rollup"))?;
    let dims = &def.spec.dimensions;
    let (rows, exprs) = super::super::rows::filtered_rows(catalog, model, dims, &[]).await?;
    let mut keys = vec![ident(entity).alias("__e")];
    keys.extend(super::super::rows::dimension_columns(catalog, dims, &exprs));
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
