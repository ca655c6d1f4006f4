//! DataFusion in process: every data state's tables in their own session, every query under one
//! bounded memory pool. Plans arrive with scans by reference (the catalog's schemas); they are
//! resolved to this session's tables before DataFusion optimises and runs them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::datasource::file_format::FileFormat as DataFileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use futures::future::BoxFuture;

use super::lookups::{DropUnusedLookups, UniqueKeys};
use super::pool::EnginePool;
use super::runtime;
use super::{EngineError, EngineTables, Explanation, MemoryHold, QueryEngine};
use crate::catalog::{FileFormat, TableRegistry, TableSource, canonical_type};
use crate::text::first_line;

pub struct DataFusionEngine {
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
}

impl DataFusionEngine {
    pub fn new(memory_limit_bytes: usize) -> Result<Self> {
        // DataFusion's defaults (one partition per core), tunable by its own environment
        // variables (`DATAFUSION_EXECUTION_BATCH_SIZE=16384`, ...) without a rebuild. Measured
        // and not kept: building a hash join's side whole up to 1 GiB (or 128 MiB) instead of
        // partitioning both sides took the overdue ratio by region x month from the models from
        // 5.8 to 4.5 s at 101M rows, but let the retention triangle build its 21M-row snapshot
        // side in one piece and run out of the pool at 10M.
        Self::with_config(
            memory_limit_bytes,
            SessionConfig::from_env()?.with_information_schema(false),
        )
    }

    /// An engine whose sessions start from `config` (tests set partitions and batch sizes).
    pub fn with_config(memory_limit_bytes: usize, config: SessionConfig) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(EnginePool::new(memory_limit_bytes)))
            // Data versions are checked against the directory listing on every query; DataFusion's
            // own listing cache (infinite TTL by default) would hide newly dropped files.
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        Ok(Self { runtime, config })
    }
}

impl QueryEngine for DataFusionEngine {
    fn memory_reserved(&self) -> usize {
        self.runtime.memory_pool.reserved()
    }

    fn new_tables(&self) -> Arc<dyn EngineTables> {
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(self.config.clone())
            .with_runtime_env(self.runtime.clone())
            .with_default_features()
            .with_query_planner(Arc::new(super::sequential::KpilensQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let unique = UniqueKeys::default();
        ctx.add_optimizer_rule(Arc::new(DropUnusedLookups {
            unique: unique.clone(),
        }));
        Arc::new(DataFusionTables {
            ctx,
            providers: RwLock::new(HashMap::new()),
            stored_views: RwLock::new(HashMap::new()),
            unique,
        })
    }
}

/// Memory of the session's pool held for work outside a plan.
struct PoolHold(datafusion::execution::memory_pool::MemoryReservation);

impl MemoryHold for PoolHold {
    fn try_grow(&mut self, bytes: usize) -> Result<(), EngineError> {
        Ok(self.0.try_grow(bytes)?)
    }
}

/// How a scan of a SQL model that is also stored resolves.
#[derive(Clone, Copy)]
enum Views {
    /// To its stored rows: what runs.
    Stored,
    /// To its view: what fingerprints and lineage read.
    Inline,
}

/// One data state's session and its tables by name.
struct DataFusionTables {
    ctx: SessionContext,
    /// What a scan by reference resolves to (the session holds the same providers).
    providers: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// SQL models read from their stored rows when a plan runs.
    stored_views: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
    /// Columns checked to hold no value twice (lookups the optimiser may drop when unread).
    unique: UniqueKeys,
}

impl DataFusionTables {
    /// Registers `provider` as `name`, replacing a table of that name (a rollup rebuilt in place).
    fn add(&self, name: &str, provider: Arc<dyn TableProvider>) -> Result<()> {
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, provider.clone())?;
        self.providers
            .write()
            .expect("providers")
            .insert(name.to_string(), provider);
        Ok(())
    }

    /// The plan with each scan by reference replaced by this session's table of that name: to
    /// run, a stored SQL model's file; else (`Inline`) every SQL model as its view.
    fn resolve(&self, plan: LogicalPlan, views: Views) -> Result<LogicalPlan> {
        let providers = self.providers.read().expect("providers");
        let stored = self.stored_views.read().expect("stored views");
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                let provider = match views {
                    Views::Stored => stored.get(name).or_else(|| providers.get(name)),
                    Views::Inline => providers.get(name),
                }
                .ok_or_else(|| {
                    DataFusionError::Plan(format!("no table '{name}' in this data state"))
                })?;
                // Built as DataFusion builds a scan, so a view (a SQL model) is inlined as its
                // plan and optimised together with the query, not run as a black box.
                let resolved = LogicalPlanBuilder::scan_with_filters_fetch(
                    scan.table_name,
                    provider_as_source(provider.clone()),
                    scan.projection,
                    scan.filters,
                    scan.fetch,
                )?
                .build()?;
                Ok(Transformed::yes(resolved))
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
    }

    async fn listing_table(&self, source: &TableSource) -> Result<Arc<dyn TableProvider>> {
        let format: Arc<dyn DataFileFormat> = match source.format {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            FileFormat::Xlsx => {
                return Err(DataFusionError::Plan(
                    "a workbook is read in memory, not scanned".into(),
                ));
            }
        };
        let extension = if source.path.is_dir() {
            format!(".{}", source.format.extension())
        } else {
            String::new()
        };
        let options = ListingOptions::new(format).with_file_extension(extension);
        let state = self.ctx.state();
        // The schema is inferred over the whole location (merging all files), as DataFusion
        // does for a directory; the scan is then pinned to the snapshot's files.
        let mut location = source.path.to_string_lossy().to_string();
        if source.path.is_dir() && !location.ends_with('/') {
            location.push('/');
        }
        let schema = options
            .infer_schema(&state, &ListingTableUrl::parse(&location)?)
            .await?;
        let urls = source
            .files
            .iter()
            .map(|f| ListingTableUrl::parse(f.to_string_lossy()))
            .collect::<Result<Vec<_>>>()?;
        // Every file of a table has the same columns: a file with another schema dropped into
        // the folder is a load error naming it, not rows of nulls merged in silently.
        if urls.len() > 1 {
            let columns = |schema: &Schema| {
                let mut c: Vec<(String, DataType)> = schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), canonical_type(f.data_type())))
                    .collect();
                c.sort_by(|a, b| a.0.cmp(&b.0));
                c
            };
            let first = columns(&*options.infer_schema(&state, &urls[0]).await?);
            for (url, file) in urls.iter().zip(&source.files).skip(1) {
                let these = columns(&*options.infer_schema(&state, url).await?);
                if these != first {
                    let names = |c: &[(String, DataType)]| {
                        c.iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(DataFusionError::Plan(format!(
                        "{} has other columns than {} ({} vs {})",
                        file.display(),
                        source.files[0].display(),
                        names(&these),
                        names(&first)
                    )));
                }
            }
        }
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config)?))
    }
}

impl TableRegistry for DataFusionTables {
    fn register_file<'a>(
        &'a self,
        source: &'a TableSource,
    ) -> BoxFuture<'a, Result<SchemaRef, String>> {
        Box::pin(async move {
            if source.read_in_memory() {
                let owned = source.clone();
                let (schema, batches) =
                    tokio::task::spawn_blocking(move || super::read::read_table(&owned))
                        .await
                        .map_err(|e| e.to_string())??;
                self.register_batches(&source.name, schema.clone(), batches)
                    .map_err(|e| e.to_string())?;
                return Ok(schema);
            }
            let table = self
                .listing_table(source)
                .await
                .map_err(|e| first_line(&e))?;
            let schema = table.schema();
            self.add(&source.name, table).map_err(|e| first_line(&e))?;
            Ok(schema)
        })
    }

    fn register_view<'a>(
        &'a self,
        name: &'a str,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<(SchemaRef, LogicalPlan), String>> {
        Box::pin(async move {
            let df = self
                .ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(|e| first_line(&e))?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let plan = df.logical_plan().clone();
            self.add(name, df.into_view()).map_err(|e| first_line(&e))?;
            Ok((schema, plan))
        })
    }
}

impl EngineTables for DataFusionTables {
    fn register_batches(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<(), EngineError> {
        // Spread the batches over the session's partitions so scans run in parallel.
        let partitions = self.ctx.state().config().target_partitions().max(1);
        let mut parts = vec![Vec::new(); partitions];
        for (i, b) in batches.into_iter().enumerate() {
            parts[i % partitions].push(b);
        }
        let table = MemTable::try_new(schema, parts)?;
        self.add(name, Arc::new(table))?;
        Ok(())
    }

    fn store_view<'a>(
        &'a self,
        view: &'a str,
        order_by: &'a [String],
        path: &'a Path,
    ) -> BoxFuture<'a, Result<usize, EngineError>> {
        use datafusion::common::config::TableParquetOptions;
        use datafusion::dataframe::DataFrameWriteOptions;
        use datafusion::prelude::ident;
        let ctx = self.ctx.clone();
        let (view, order_by, path) = (view.to_string(), order_by.to_vec(), path.to_path_buf());
        Box::pin(runtime::run(async move {
            let mut rows = ctx.table(view.as_str()).await?;
            if !order_by.is_empty() {
                rows = rows.sort(
                    order_by
                        .iter()
                        .map(|c| ident(c).sort(true, false))
                        .collect(),
                )?;
            }
            // Small row groups: a filter on the sort columns skips all but a few of them.
            let mut parquet = TableParquetOptions::default();
            parquet.global.max_row_group_size = 128 * 1024;
            let written = rows
                .write_parquet(
                    &path.to_string_lossy(),
                    DataFrameWriteOptions::new().with_single_file_output(true),
                    Some(parquet),
                )
                .await?;
            Ok(written
                .first()
                .and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>())
                .map(|counts| counts.value(0) as usize)
                .unwrap_or(0))
        }))
    }

    fn read_view_from(&self, view: &str, path: &Path) -> Result<(), EngineError> {
        let schema = self
            .providers
            .read()
            .expect("providers")
            .get(view)
            .ok_or_else(|| DataFusionError::Plan(format!("no SQL model '{view}'")))?
            .schema();
        // The view's own schema: the file's columns are read as the plans above expect them.
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(String::new());
        let config = ListingTableConfig::new(ListingTableUrl::parse(path.to_string_lossy())?)
            .with_listing_options(options)
            .with_schema(schema);
        let table: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
        self.stored_views
            .write()
            .expect("stored views")
            .insert(view.to_string(), table);
        Ok(())
    }

    fn execute(
        &self,
        plan: LogicalPlan,
    ) -> BoxFuture<'static, Result<Vec<RecordBatch>, EngineError>> {
        let resolved = self.resolve(plan, Views::Stored);
        let state = self.ctx.state();
        Box::pin(runtime::run(async move {
            let df = datafusion::dataframe::DataFrame::new(state, resolved?);
            Ok(df.collect().await?)
        }))
    }

    fn execute_sql(&self, sql: &str) -> BoxFuture<'_, Result<Vec<RecordBatch>, EngineError>> {
        let (ctx, sql) = (self.ctx.clone(), sql.to_string());
        Box::pin(runtime::run(async move {
            let df = ctx.sql_with_options(&sql, read_only()).await?;
            Ok(df.collect().await?)
        }))
    }

    fn count_rows(&self, sql: &str) -> BoxFuture<'_, Result<usize, EngineError>> {
        let (ctx, sql) = (self.ctx.clone(), sql.to_string());
        Box::pin(runtime::run(async move {
            let mut stream = ctx
                .sql_with_options(&sql, read_only())
                .await?
                .execute_stream()
                .await?;
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows();
            }
            Ok(rows)
        }))
    }

    fn declare_unique(&self, table: &str, column: &str) {
        self.unique
            .write()
            .expect("unique keys")
            .insert((table.to_string(), column.to_string()));
    }

    fn resolved(&self, plan: LogicalPlan) -> Result<LogicalPlan, EngineError> {
        Ok(self.resolve(plan, Views::Inline)?)
    }

    fn reserve(&self, what: &str) -> Box<dyn MemoryHold> {
        use datafusion::execution::memory_pool::MemoryConsumer;
        Box::new(PoolHold(
            MemoryConsumer::new(what).register(&self.ctx.runtime_env().memory_pool),
        ))
    }

    fn analyze(&self, plan: LogicalPlan) -> BoxFuture<'static, Result<String, EngineError>> {
        use datafusion::physical_plan::{collect, display::DisplayableExecutionPlan};
        let resolved = self.resolve(plan, Views::Stored);
        let state = self.ctx.state();
        Box::pin(runtime::run(async move {
            let physical = state.create_physical_plan(&resolved?).await?;
            collect(physical.clone(), state.task_ctx()).await?;
            Ok(DisplayableExecutionPlan::with_metrics(physical.as_ref())
                .indent(true)
                .to_string())
        }))
    }

    fn explain(&self, plan: &LogicalPlan) -> Result<Explanation, EngineError> {
        let resolved = self.resolve(plan.clone(), Views::Stored)?;
        let optimized = self.ctx.state().optimize(&resolved)?;
        let sql = match datafusion::sql::unparser::plan_to_sql(plan) {
            Ok(statement) => statement.to_string(),
            Err(e) => format!("-- the unparser cannot express this plan: {e}"),
        };
        Ok(Explanation {
            logical_plan: plan.display_indent().to_string(),
            optimized_plan: optimized.display_indent().to_string(),
            sql,
        })
    }
}

/// SQL that reads: nothing that defines or changes anything plans.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}
