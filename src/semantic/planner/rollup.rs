//! Rollups: building one (a GROUP BY over its model, kept in memory) and choosing one for a
//! query's measure group. A rollup keeps the model's time values as they are, so every range,
//! period and period-end snapshot computed over it is the one computed over the model; it answers
//! a group exactly when it holds the group's measures and every dimension the group groups or
//! filters by.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::{Expr, LogicalPlan, cast};
use datafusion::prelude::ident;
use std::collections::{BTreeMap, BTreeSet};

use super::{aggregate, measure_input, with_dimensions};
use crate::catalog::{
    Catalog, DimensionBinding, Measure, Model, Rollup, RollupDefinition, TimeColumn, reaggregation,
};
use crate::semantic::validate::ValidatedQuery;
use crate::text::first_line;

const ROLLUP_TIME: &str = "__rollup_time";

/// The rollup's column holding a measure's partial result.
fn partial_column(name: &str) -> String {
    format!("__rollup_{name}")
}

/// The table name a rollup's rows are registered under.
pub fn table_name(def: &RollupDefinition) -> String {
    format!("__rollup_{}", def.name)
}

/// The base measures a rollup holds.
fn measures_of<'a>(catalog: &'a Catalog, def: &RollupDefinition) -> Vec<&'a Measure> {
    def.spec
        .measures
        .iter()
        .map(|m| &catalog.measures[m])
        .collect()
}

/// The plan computing a rollup's rows: its measures' partial results grouped by the model's time
/// column and the rollup's dimensions (joins done once, here).
pub async fn plan(catalog: &Catalog, def: &RollupDefinition) -> Result<LogicalPlan, String> {
    let base = &catalog.models[&def.spec.model];
    let measures = measures_of(catalog, def);
    let engine_error = |e: crate::semantic::QueryError| e.message;
    let (df, exprs) = Box::pin(with_dimensions(catalog, base, &def.spec.dimensions, &mut 0))
        .await
        .map_err(engine_error)?;

    let mut keys: Vec<Expr> = Vec::new();
    if let Some(t) = &base.time {
        keys.push(ident(&t.column).alias(ROLLUP_TIME));
    }
    for d in &def.spec.dimensions {
        let data_type = catalog.dimensions[d].data_type.clone();
        keys.push(cast(exprs[d].clone(), data_type).alias(d));
    }
    let mut aggs = Vec::new();
    for m in &measures {
        let input = measure_input(m, df.schema()).map_err(engine_error)?;
        aggs.push(aggregate(m.agg, input).alias(partial_column(&m.name)));
    }
    let df = df.aggregate(keys, aggs).map_err(|e| first_line(&e))?;
    Ok(df.into_unoptimized_plan())
}

/// The rollup as the planner reads it, once the rows of [`plan`] are the table
/// [`table_name`] with `schema`.
pub fn materialised(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    rows: usize,
    build_ms: f64,
) -> Rollup {
    let base = &catalog.models[&def.spec.model];
    let measures = measures_of(catalog, def);
    let table_name = table_name(def);
    let model = Model {
        name: def.name.clone(),
        file: def.file.clone(),
        table: table_name,
        schema,
        time: base.time.as_ref().map(|t| TimeColumn {
            column: ROLLUP_TIME.to_string(),
            data_type: t.data_type.clone(),
        }),
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
    };
    let rolled = measures
        .iter()
        .map(|m| {
            let agg = reaggregation(m.agg).expect("validated: re-aggregatable");
            let rolled = Measure {
                name: m.name.clone(),
                model: m.model.clone(),
                agg,
                input: ident(partial_column(&m.name)),
                filter: None,
                snapshot: m.snapshot,
            };
            (m.name.clone(), rolled)
        })
        .collect();
    Rollup {
        name: def.name.clone(),
        file: def.file.clone(),
        base: def.spec.model.clone(),
        dimensions: def.spec.dimensions.iter().cloned().collect(),
        measures: def.spec.measures.iter().cloned().collect(),
        model,
        rolled,
        rows,
        build_ms,
    }
}

/// The smallest rollup that answers this group of one model's measures exactly, if any.
pub fn pick<'a>(
    catalog: &'a Catalog,
    q: &ValidatedQuery,
    model: &str,
    measures: &[&Measure],
    dims: &[String],
) -> Option<&'a Rollup> {
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
        .filter(|r| {
            r.base == model
                && measures.iter().all(|m| r.measures.contains(&m.name))
                && needed.iter().all(|d| r.dimensions.contains(*d))
        })
        .min_by_key(|r| r.rows)
}
