//! A data state: the catalog (definitions validated over one snapshot of the data), the engine's
//! tables for that snapshot, and the rollups materialised over it. Every answer is computed from
//! one data state; a data or definition change builds a new one beside it and swaps it in, so a
//! request in flight keeps reading the state it started on.

mod error;
mod lineage;
mod materialize;
mod refresh;
mod store;
mod versions;
mod watch;

pub use error::StateError;
pub use store::RollupStore;
pub use versions::{VersionMemo, combined_version, current_versions};
pub use watch::DataWatch;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;

use crate::catalog::{Catalog, CatalogError, CatalogErrors, ProjectSources};
use crate::engine::{EngineError, EngineTables, Explanation, MemoryHold, QueryEngine};
use crate::semantic::calendar::CalendarConfig;

pub struct DataState {
    catalog: Catalog,
    tables: Arc<dyn EngineTables>,
    /// When this state was built over its data (what the cockpit shows as "data as of").
    loaded_at: chrono::DateTime<chrono::Utc>,
    /// Rollups left for a build in the background ([`RollupWork::LoadOnly`]): until a state
    /// with them serves, their queries read the models.
    pending_rollups: Vec<String>,
}

/// How much of the rollups' work a data state's build does.
#[derive(Debug, Clone, Copy)]
pub enum RollupWork {
    /// Load, update or build every rollup.
    All,
    /// Load the stored copies that are current and nothing else: what a server does before it
    /// listens (at any scale, in seconds); the rest is pending.
    LoadOnly,
}

/// How often a build still running says so in the log (a watchdog's line: what, for how long).
const STILL_BUILDING_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A build (a rollup, a materialized model: `what`) within its time budget, saying every
/// [`STILL_BUILDING_EVERY`] that it is still running. Past the budget it is dropped, which
/// cancels its plans (their tasks end, their memory returns).
async fn within_budget<T>(
    what: &str,
    budget: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, StateError>>,
) -> Result<T, StateError> {
    let started = std::time::Instant::now();
    let deadline = tokio::time::sleep(budget);
    let mut still = tokio::time::interval_at(
        tokio::time::Instant::now() + STILL_BUILDING_EVERY,
        STILL_BUILDING_EVERY,
    );
    tokio::pin!(work, deadline);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = &mut deadline => {
                tracing::warn!(what, budget_ms = budget.as_millis() as u64, "build past its budget: cancelled; its queries read the models");
                return Err(StateError::refused(format!(
                    "its build ran past its budget of {} ms (--rollup-build-timeout-ms) and was \
                     cancelled; tried again at the next data or definition change, or start",
                    budget.as_millis()
                )));
            }
            _ = still.tick() => {
                tracing::warn!(what, running_s = started.elapsed().as_secs(), "build still running");
            }
        }
    }
}

/// Checks each primary key declared on a file-backed or stored model over the files this state
/// reads (no value twice; the check is stored with the files' signatures) and tells the engine
/// which hold, so that it may drop joins to them that nothing reads. A key that does not hold
/// is logged.
async fn declare_unique_keys(catalog: &Catalog, tables: &dyn EngineTables, store: &RollupStore) {
    use crate::catalog::{FileFormat, TableSource};
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::{ident, lit};
    let stored: Vec<TableSource> = catalog
        .materialized
        .iter()
        .filter_map(|m| TableSource::new(&m.view, FileFormat::Parquet, m.file.clone()?).ok())
        .collect();
    let mut checked = BTreeSet::new();
    for model in catalog.models.values() {
        let source = catalog
            .tables
            .get(&model.table)
            .or_else(|| stored.iter().find(|s| s.name == model.table));
        let (Some(pk), Some(source)) = (&model.primary_key, source) else {
            continue;
        };
        if !checked.insert((model.table.clone(), pk.clone())) {
            continue;
        }
        let unique = match store.known_unique(&model.table, pk, &source.signatures) {
            Some(known) => known,
            None => {
                let repeated = catalog
                    .plans
                    .scan(&model.table, model.schema.clone())
                    .and_then(|s| s.aggregate(vec![ident(pk)], vec![count(lit(1i64)).alias("__n")]))
                    .and_then(|s| s.filter(ident("__n").gt(lit(1i64))))
                    .and_then(|s| s.aggregate(vec![], vec![count(lit(1i64)).alias("__repeated")]));
                let found = match repeated {
                    Ok(plan) => tables.execute(plan.into_unoptimized_plan()).await.ok(),
                    Err(_) => None,
                };
                let Some(batches) = found else {
                    continue; // not checked (memory): joins to it stay
                };
                let unique = refresh::single_i64(&batches, "__repeated").is_ok_and(|n| n == 0);
                store.save_unique(&model.table, pk, &source.signatures, unique);
                unique
            }
        };
        if unique {
            tables.declare_unique(&model.table, pk);
        } else {
            tracing::warn!(model = %model.name, key = %pk, "the primary key repeats in the data");
        }
    }
}

impl DataState {
    /// Validates the definitions over the data as it is now, registering the tables in a fresh
    /// set of the engine's, then makes the rollups current: loaded from the store where their
    /// stored copy matches, updated for the dates that changed where it can be, built otherwise.
    /// A rollup that cannot be built over this data (say, out of memory) is left out and
    /// reported: its queries are answered from the models, as without it.
    pub async fn build(
        sources: Arc<ProjectSources>,
        data_dir: &Path,
        engine: &dyn QueryEngine,
        calendar: &CalendarConfig,
        store: &RollupStore,
        work: RollupWork,
        budget: std::time::Duration,
    ) -> Result<Self, CatalogErrors> {
        let tables = engine.new_tables();
        let mut catalog = Catalog::build(sources, data_dir, tables.as_ref()).await?;
        catalog.materialized =
            materialize::materialize_models(&catalog, tables.as_ref(), store, budget).await;
        declare_unique_keys(&catalog, tables.as_ref(), store).await;
        let definitions = std::mem::take(&mut catalog.rollup_definitions);
        store.prune(
            &definitions
                .iter()
                .map(|d| d.name.clone())
                .collect::<BTreeSet<_>>(),
        );
        // On a terminal, a bar: at 100M rows the builds take minutes.
        let progress = (!definitions.is_empty())
            .then(|| crate::progress::begin("rollups", definitions.len() as u64, "rollups"));
        let mut pending_rollups = Vec::new();
        for def in definitions {
            let load_only = matches!(work, RollupWork::LoadOnly);
            let refresh = refresh::refresh_rollup(
                &catalog,
                tables.as_ref(),
                &def,
                calendar,
                store,
                load_only,
            );
            let result = match work {
                RollupWork::All => within_budget(&def.name, budget, refresh).await,
                RollupWork::LoadOnly => refresh.await,
            };
            if let Some(p) = &progress {
                p.advance(1, &def.name);
            }
            match result {
                Ok(None) => pending_rollups.push(def.name.clone()),
                Ok(Some((rollup, refusals))) => {
                    for refusal in &refusals {
                        tracing::warn!(rollup = %def.name, reason = %refusal.reason, "part of a rollup refused");
                    }
                    catalog.rollups_not_built.extend(refusals);
                    catalog.rollups.insert(def.name.clone(), rollup);
                }
                Err(e) => {
                    let cause = crate::semantic::with_causes(&e);
                    tracing::warn!(rollup = %def.name, reason = %cause, "rollup not built; its queries read the model");
                    catalog.rollups_not_built.push(CatalogError::new(
                        &def.file,
                        format!("rollups.{}", def.name),
                        e.to_string(),
                    ));
                }
            }
        }
        if let Some(p) = progress {
            p.finish("");
        }
        Ok(Self {
            catalog,
            tables,
            loaded_at: chrono::Utc::now(),
            pending_rollups,
        })
    }

    /// The rollups a build in the background has still to make current over this state.
    pub fn pending_rollups(&self) -> &[String] {
        &self.pending_rollups
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn loaded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.loaded_at
    }

    /// Runs a plan built over this state's catalog.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>, EngineError> {
        self.tables.execute(plan).await
    }

    /// Runs read-only SQL over this state's tables (to check what `explain` prints).
    pub async fn execute_sql(&self, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        self.tables.execute_sql(sql).await
    }

    /// Counts the rows of read-only SQL, computing every column (see `EngineTables::count_rows`).
    pub async fn count_rows(&self, sql: &str) -> Result<usize, EngineError> {
        self.tables.count_rows(sql).await
    }

    pub fn explain(&self, plan: &LogicalPlan) -> Result<Explanation, EngineError> {
        self.tables.explain(plan)
    }

    /// Runs a plan and returns its physical plan with metrics (see `EngineTables::analyze`).
    pub async fn analyze(&self, plan: LogicalPlan) -> Result<String, EngineError> {
        self.tables.analyze(plan).await
    }

    /// A claim on the engine's pool for work outside a plan (see `EngineTables::reserve`).
    pub fn reserve(&self, what: &str) -> Box<dyn MemoryHold> {
        self.tables.reserve(what)
    }
}
