//! A data state: the catalog (definitions validated over one snapshot of the data), the engine's
//! tables for that snapshot, and the rollups materialised over it. Every answer is computed from
//! one data state; a data or definition change builds a new one beside it and swaps it in, so a
//! request in flight keeps reading the state it started on.

mod versions;
mod watch;

pub use versions::{VersionMemo, combined_version, current_versions};
pub use watch::DataWatch;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::{
    Catalog, CatalogError, CatalogErrors, DefinitionForm, ProjectSources, Rollup, RollupDefinition,
    distinct_refusal,
};
use crate::engine::{EngineError, EngineTables, Explanation, QueryEngine};
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::rollup;

pub struct DataState {
    catalog: Catalog,
    tables: Arc<dyn EngineTables>,
}

/// A data state is read as its catalog: `state.models`, `state.metrics`, ...
impl Deref for DataState {
    type Target = Catalog;

    fn deref(&self) -> &Catalog {
        &self.catalog
    }
}

impl DataState {
    /// Validates the definitions over the data as it is now, registering the tables in a fresh
    /// set of the engine's, then builds the rollups. A rollup that cannot be built over this
    /// data (say, out of memory) is left out and reported: its queries are answered from the
    /// models, as without it.
    pub async fn build(
        sources: Arc<ProjectSources>,
        data_dir: &Path,
        engine: &dyn QueryEngine,
        calendar: &CalendarConfig,
    ) -> Result<Self, CatalogErrors> {
        let tables = engine.new_tables();
        let mut catalog = Catalog::build(sources, data_dir, tables.as_ref()).await?;
        for def in std::mem::take(&mut catalog.rollup_definitions) {
            match build_rollup(&catalog, tables.as_ref(), &def, calendar).await {
                Ok((rollup, refusals)) => {
                    for refusal in &refusals {
                        tracing::warn!(rollup = %def.name, reason = %refusal.reason, "part of a rollup refused");
                    }
                    catalog.rollups_not_built.extend(refusals);
                    catalog.rollups.insert(def.name.clone(), rollup);
                }
                Err(reason) => {
                    tracing::warn!(rollup = %def.name, %reason, "rollup not built; its queries read the model");
                    catalog.rollups_not_built.push(CatalogError::new(
                        &def.file,
                        format!("rollups.{}", def.name),
                        reason,
                    ));
                }
            }
        }
        Ok(Self { catalog, tables })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Runs a plan built over this state's catalog.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>, EngineError> {
        self.tables.execute(plan).await
    }

    /// Runs read-only SQL over this state's tables (to check what `explain` prints).
    pub async fn execute_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        self.tables.execute_sql(sql).await
    }

    pub fn explain(&self, plan: &LogicalPlan) -> Result<Explanation, EngineError> {
        self.tables.explain(plan)
    }
}

/// Computes a rollup's rows and registers them beside the tables they came from. Besides the
/// rollup, the parts of it the build refused (distinct counts whose entities fall in several
/// groups), each with the reason.
async fn build_rollup(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
) -> Result<(Rollup, Vec<CatalogError>), String> {
    let started = Instant::now();
    let run = |plan: LogicalPlan| async move {
        tables.execute(plan).await.map_err(|e| {
            format!(
                "building the rollup failed: {}",
                crate::text::first_line(&e)
            )
        })
    };
    let register = |schema: SchemaRef, batches: Vec<RecordBatch>| {
        tables
            .register_batches(&rollup::table_name(def), schema, batches)
            .map_err(|e| e.to_string())
    };
    let mut refusals = Vec::new();
    let (mut built, rows) = match &def.form {
        DefinitionForm::Measures => {
            let plan = rollup::plan(catalog, def, calendar).await?;
            let mut schema = Arc::new(plan.schema().as_arrow().clone());
            let mut batches = run(plan).await?;
            let mut refused = BTreeSet::new();
            for (measure, check) in rollup::distinct_checks(catalog, def)? {
                let distinct = single_i64(&run(check).await?, "__distinct")?;
                let column = rollup::partial_column(&measure);
                let mut summed = column_sum(&batches, &column)?;
                if summed != distinct {
                    // Values repeat within groups (a customer on one row per product): count
                    // each group's distinct values instead, and check again.
                    let part =
                        run(rollup::distinct_part(catalog, def, &measure, calendar).await?).await?;
                    summed = column_sum(&part, &column)?;
                    if summed == distinct {
                        let part_table = format!("{}__{measure}", rollup::table_name(def));
                        let part_schema = part
                            .first()
                            .map(|b| b.schema())
                            .ok_or("the distinct counts came back empty")?;
                        register(schema.clone(), std::mem::take(&mut batches))?;
                        tables
                            .register_batches(&part_table, part_schema.clone(), part)
                            .map_err(|e| e.to_string())?;
                        let merged = rollup::with_distinct_part(
                            catalog,
                            def,
                            schema.clone(),
                            &measure,
                            (&part_table, part_schema.clone()),
                        )?;
                        // Same columns, in order; only nullability may differ.
                        schema = Arc::new(merged.schema().as_arrow().clone());
                        batches = run(merged).await?;
                        // The part is merged in: free it.
                        tables
                            .register_batches(&part_table, part_schema, Vec::new())
                            .map_err(|e| e.to_string())?;
                    }
                }
                if summed != distinct {
                    let i = def.spec.measures.iter().position(|m| *m == measure);
                    let snapshot = catalog.measures[&measure].snapshot.is_some();
                    refusals.push(CatalogError::new(
                        &def.file,
                        format!("rollups.{}.measures[{}]", def.name, i.unwrap_or(0)),
                        distinct_refusal(&measure, distinct, summed, snapshot),
                    ));
                    refused.insert(measure);
                }
            }
            let rows = row_count(&batches);
            register(schema.clone(), batches)?;
            (
                rollup::materialised(catalog, def, schema, &refused, calendar),
                rows,
            )
        }
        DefinitionForm::Churn { .. } => {
            let snapshots = dates(&run(rollup::snapshot_dates(catalog, def)?).await?)?;
            let pairs = rollup::churn_pairs(def, &snapshots);
            // The schema does not depend on the pair; plan one even when there is none to run.
            let any = pairs.first().copied().unwrap_or_default();
            let schema = Arc::new(
                rollup::churn_pair_plan(catalog, def, any)
                    .await?
                    .schema()
                    .as_arrow()
                    .clone(),
            );
            let mut batches = Vec::new();
            for pair in &pairs {
                batches.extend(run(rollup::churn_pair_plan(catalog, def, *pair).await?).await?);
            }
            let rows = row_count(&batches);
            register(schema.clone(), batches)?;
            (
                rollup::materialised_churn(catalog, def, schema, snapshots, pairs),
                rows,
            )
        }
        DefinitionForm::Funnel { metric } | DefinitionForm::Cohort { metric } => {
            let check = run(rollup::entity_dimension_check(catalog, def).await?).await?;
            let entities = single_i64(&check, "__entities")?;
            let entity_dims = single_i64(&check, "__entity_dims")?;
            if entity_dims != entities {
                return Err(format!(
                    "the dimensions change between an entity's rows ({entity_dims} distinct \
                     entity and dimension values for {entities} entities): a filter would drop \
                     part of an entity's rows, so '{metric}' is computed from the model; keep \
                     only dimensions that are attributes of the entity"
                ));
            }
            let plan = match &def.form {
                DefinitionForm::Funnel { .. } => {
                    let check = run(rollup::funnel_first_steps(catalog, def).await?).await?;
                    let first_steps = single_i64(&check, "__first_steps")?;
                    let first_entities = single_i64(&check, "__first_step_entities")?;
                    if first_steps != first_entities {
                        return Err(format!(
                            "some entities have more than one first-step event ({first_steps} \
                             events for {first_entities} entities): which one starts the funnel \
                             depends on the query's range, so '{metric}' is computed from the \
                             model"
                        ));
                    }
                    rollup::funnel_plan(catalog, def).await?
                }
                _ => rollup::cohort_plan(catalog, def, calendar).await?,
            };
            let schema = Arc::new(plan.schema().as_arrow().clone());
            let batches = run(plan).await?;
            let rows = row_count(&batches);
            register(schema.clone(), batches)?;
            let built = match &def.form {
                DefinitionForm::Funnel { .. } => rollup::materialised_funnel(catalog, def, schema),
                _ => rollup::materialised_cohort(catalog, def, schema, calendar),
            };
            (built, rows)
        }
    };
    built.rows = rows;
    built.build_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    tracing::info!(rollup = %def.name, model = %def.spec.model, rows, build_ms = built.build_ms, "rollup built");
    Ok((built, refusals))
}

/// The sum of an Int64 column over batches (a rollup's partial counts).
fn column_sum(batches: &[RecordBatch], column: &str) -> Result<i64, String> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let mut total = 0i64;
    for b in batches {
        let c = b
            .column_by_name(column)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| format!("the rollup has no count column '{column}'"))?;
        total += c.iter().flatten().sum::<i64>();
    }
    Ok(total)
}

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The one value of an Int64 column in a one-row result.
fn single_i64(batches: &[RecordBatch], column: &str) -> Result<i64, String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column_by_name(column))
        .map(|c| {
            let values = c.as_primitive::<Int64Type>();
            if values.is_null(0) {
                0
            } else {
                values.value(0)
            }
        })
        .ok_or_else(|| format!("the rollup's check returned no '{column}'"))
}

/// The dates of a one-column Date32 result, ascending.
fn dates(batches: &[RecordBatch]) -> Result<Vec<chrono::NaiveDate>, String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Date32Type;
    let mut out = Vec::new();
    for b in batches {
        let column = b
            .column(0)
            .as_primitive_opt::<Date32Type>()
            .ok_or("snapshot dates are not dates")?;
        for i in 0..column.len() {
            if let Some(d) = column.value_as_date(i).filter(|_| column.is_valid(i)) {
                out.push(d);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
