//! Where plans run. The planner builds plans whose scans name tables by reference; an engine
//! owns the sessions, registers each data state's tables and runs plans over them. DataFusion
//! in process is the default; another engine (Ballista for a cluster, DuckDB as a second
//! opinion) implements the same two traits behind a cargo feature and receives the same plans.
//! Nothing above this layer touches a DataFusion session.

mod datafusion;
mod error;
mod files;
mod lookups;
mod pool;
mod read;
mod runtime;
pub use runtime::run_blocking;
mod sequential;

use ::datafusion::arrow::datatypes::SchemaRef;
use ::datafusion::arrow::record_batch::RecordBatch;
use ::datafusion::logical_expr::LogicalPlan;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;

pub use self::datafusion::DataFusionEngine;
use crate::catalog::TableRegistry;
pub use error::EngineError;
pub use files::csv_to_parquet;

pub trait QueryEngine: Send + Sync {
    /// An empty set of tables for one data state (a catalog over one snapshot of the data),
    /// sharing the engine's memory pool with every other.
    fn new_tables(&self) -> Arc<dyn EngineTables>;

    /// Bytes of the memory pool held by running work now.
    fn memory_reserved(&self) -> usize;
}

/// One data state's tables in an engine: registered through [`TableRegistry`] while the catalog
/// is built, then read by every plan over that state.
pub trait EngineTables: TableRegistry {
    /// Registers computed rows (a rollup) as the table `name`.
    fn register_batches(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(), EngineError>;

    /// Runs the SQL model `view` and writes its rows, sorted by `order_by`, as one new Parquet
    /// file at `path`; the number of rows written.
    fn store_view<'a>(
        &'a self,
        view: &'a str,
        order_by: &'a [String],
        path: &'a Path,
    ) -> BoxFuture<'a, Result<usize, EngineError>>;

    /// From now on, plans run here read the SQL model `view` from `path` (its rows, as
    /// [`store_view`](Self::store_view) wrote them over this same data) instead of computing
    /// it. [`resolved`](Self::resolved) still inlines the view, so fingerprints and lineage see
    /// what its rows come from.
    fn read_view_from(&self, view: &str, path: &Path) -> Result<(), EngineError>;

    /// Runs a plan whose scans name tables registered here.
    fn execute(
        &self,
        plan: LogicalPlan,
    ) -> BoxFuture<'static, Result<Vec<RecordBatch>, EngineError>>;

    /// Runs one read-only SQL query over these tables (what `explain`'s SQL is checked with).
    fn execute_sql(&self, sql: &str) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>>;

    /// Runs one read-only SQL query and counts its rows, keeping none: every column of every
    /// row is computed (what `validate` reads the data with).
    fn count_rows(&self, sql: &str) -> BoxFuture<'_, Result<usize, EngineError>>;

    /// The plan as the engine would run it, and as SQL (for reading, never executed).
    fn explain(&self, plan: &LogicalPlan) -> Result<Explanation, EngineError>;

    /// Runs the plan and returns its physical plan with each operator's metrics (rows, time,
    /// memory, spills): the profile that says where a slow query spends.
    fn analyze(&self, plan: LogicalPlan) -> BoxFuture<'static, Result<String, EngineError>>;

    /// `column` of `table` holds no value twice over this state's files (checked by the caller):
    /// a left join to it that nothing reads may be dropped.
    fn declare_unique(&self, table: &str, column: &str);

    /// The plan with every scan bound to this state's tables and SQL models inlined, before
    /// optimisation: what a stored rollup fingerprints and traces its time column through.
    fn resolved(&self, plan: LogicalPlan) -> Result<LogicalPlan, EngineError>;

    /// A claim on the engine's memory pool for work done outside a plan (composing an answer:
    /// gap filling, comparisons), grown as that work needs and given back when dropped.
    fn reserve(&self, what: &str) -> Box<dyn MemoryHold>;
}

/// Memory taken from the engine's pool (see [`EngineTables::reserve`]), given back on drop.
pub trait MemoryHold: Send {
    /// Takes `bytes` more, or refuses as a query that needs more than the pool grants.
    fn try_grow(&mut self, bytes: usize) -> Result<(), EngineError>;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub logical_plan: String,
    pub optimized_plan: String,
    /// The plan as SQL (DataFusion's unparser), for reading, never executed.
    pub sql: String,
}
