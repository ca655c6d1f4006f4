//! Where logical plans run. DataFusion in process is the default; another engine (e.g. Ballista
//! for a cluster) implements [`QueryEngine`] behind a cargo feature and receives the same plans.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::future::BoxFuture;

pub trait QueryEngine: Send + Sync {
    /// A fresh session sharing the engine's memory pool, for a catalog to register tables in.
    fn new_session(&self) -> SessionContext;

    /// Runs a plan built against `session`.
    fn execute(
        &self,
        session: &SessionContext,
        plan: LogicalPlan,
    ) -> BoxFuture<'static, Result<Vec<RecordBatch>>>;
}

/// DataFusion in process, every query under one bounded memory pool.
pub struct DataFusionEngine {
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
}

impl DataFusionEngine {
    pub fn new(memory_limit_bytes: usize) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(memory_limit_bytes, 1.0)
            // Data versions are checked against the directory listing on every query; DataFusion's
            // own listing cache (infinite TTL by default) would hide newly dropped files.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        // DataFusion's defaults (one partition per core), tunable by its own environment
        // variables (`DATAFUSION_EXECUTION_BATCH_SIZE=16384`, ...) without a rebuild.
        let config = SessionConfig::from_env()?.with_information_schema(false);
        Ok(Self { runtime, config })
    }
}

impl QueryEngine for DataFusionEngine {
    fn new_session(&self) -> SessionContext {
        SessionContext::new_with_config_rt(self.config.clone(), self.runtime.clone())
    }

    fn execute(
        &self,
        session: &SessionContext,
        plan: LogicalPlan,
    ) -> BoxFuture<'static, Result<Vec<RecordBatch>>> {
        let df = DataFrame::new(session.state(), plan);
        Box::pin(df.collect())
    }
}
