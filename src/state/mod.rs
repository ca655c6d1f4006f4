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

use crate::catalog::{
    Catalog, CatalogError, CatalogErrors, ProjectSources, Rollup, RollupDefinition,
};
use crate::engine::{EngineError, EngineTables, Explanation, QueryEngine};
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
    ) -> Result<Self, CatalogErrors> {
        let tables = engine.new_tables();
        let mut catalog = Catalog::build(sources, data_dir, tables.as_ref()).await?;
        for def in std::mem::take(&mut catalog.rollup_definitions) {
            match build_rollup(&catalog, tables.as_ref(), &def).await {
                Ok(rollup) => {
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

/// Computes a rollup's rows and registers them beside the tables they came from.
async fn build_rollup(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    def: &RollupDefinition,
) -> Result<Rollup, String> {
    let started = Instant::now();
    let plan = rollup::plan(catalog, def).await?;
    let schema = Arc::new(plan.schema().as_arrow().clone());
    let batches = tables.execute(plan).await.map_err(|e| {
        format!(
            "building the rollup failed: {}",
            crate::text::first_line(&e)
        )
    })?;
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    tables
        .register_batches(&rollup::table_name(def), schema.clone(), batches)
        .map_err(|e| e.to_string())?;
    let build_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    tracing::info!(rollup = %def.name, model = %def.spec.model, rows, build_ms, "rollup built");
    Ok(rollup::materialised(catalog, def, schema, rows, build_ms))
}
