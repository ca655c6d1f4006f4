//! The one path every query takes, whoever asks (HTTP, CLI, tests, dashboards, alerts):
//! validate, check data freshness, look up the cache, plan, execute under a time budget,
//! compose. Listings (`listings.rs`) and the data state's lifecycle (`lifecycle.rs`) beside it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::cache::{CacheKey, ResultCache};
use crate::catalog::{CatalogErrors, ProjectSources};
use crate::config::Settings;
use crate::engine::{DataFusionEngine, Explanation, QueryEngine};
use crate::security::limits::{ComputeLease, ComputeSlots};
use crate::security::{Principal, Scope};
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::compose::{self, member_values};
use crate::semantic::series::CellBudget;
use crate::semantic::{
    self, ErrorKind, QueryError, QueryLimits, QueryRequest, QueryResult, ValidatedQuery,
};
use crate::state::VersionMemo;
use crate::state::{DataState, DataWatch, RollupStore, RollupWork, combined_version};

mod events;
mod lifecycle;
mod listings;
mod profile;

pub use events::{StateChange, StateNow, TableVersion};

use events::now_rfc3339;
pub use lifecycle::{DataCheck, FailedRefresh, ReloadError, ReloadStatus};

/// What one client request shares across everything it computes (a dashboard's panels, an
/// alert's run): the data versions it has seen, so every part answers from one data state, and
/// the compute slot it takes the first time one of them needs the engine.
pub struct RequestContext {
    versions: VersionMemo,
    lease: ComputeLease,
}

impl RequestContext {
    pub fn for_principal(principal: &Principal) -> Self {
        Self::named(&principal.name)
    }

    /// A request of the server's own (warm-up, alerts, a data refresh), under its own share.
    pub fn named(who: &str) -> Self {
        Self {
            versions: VersionMemo::default(),
            lease: ComputeLease::for_principal(who),
        }
    }
}

pub struct KpiService {
    /// The data state answering now; swapped whole on a definition or data change.
    state: RwLock<Arc<DataState>>,
    /// Data changes as the kernel reports them: versions are read from disk only after one.
    watch: Arc<DataWatch>,
    engine: Arc<dyn QueryEngine>,
    /// Where rollups are kept between data states and runs.
    rollup_store: RollupStore,
    cache: ResultCache,
    /// What may reach the engine at once (cached answers take none).
    slots: ComputeSlots,
    limits: QueryLimits,
    calendar: CalendarConfig,
    timeout: Duration,
    /// Serialises the swaps of the serving state after a data refresh. Never held by what only
    /// reads the serving state (health, status, queries over unchanged data).
    refresh: tokio::sync::Mutex<()>,
    /// The data whose rebuild failed (with why), so that it is not retried on every query.
    failed: std::sync::Mutex<Option<FailedRefresh>>,
    /// What each new state does about rollups: a server's leave what must be computed pending,
    /// for [`KpiService::run_rollup_builder`] behind it; the CLI's and tests' compute it at once.
    rollup_work: RollupWork,
    /// Wakes the rollup builder: a state with pending rollups serves.
    rollups_wanted: tokio::sync::Notify,
    /// Set while the builder computes rollups (for `/readyz`).
    building_rollups: std::sync::atomic::AtomicBool,
    /// The time budget of one rollup's build.
    rollup_budget: Duration,
    engine_runs: AtomicU64,
    /// The server's own metrics (`/metrics`).
    telemetry: crate::telemetry::Telemetry,
    /// Completed dashboard warm-ups (see `dashboard::warm_up`).
    warm_ups: AtomicU64,
    next_query_id: AtomicU64,
    /// What the definition watcher last saw (hot reload).
    reload: std::sync::Mutex<ReloadStatus>,
    /// Each swap of the serving state, for `GET /api/v1/events`.
    events: events::StateEvents,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResponse {
    #[serde(flatten)]
    pub result: Arc<QueryResult>,
    pub meta: QueryMeta,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryMeta {
    pub query_id: String,
    /// `cache` or `engine`. A request that waited on an identical in-flight query is `cache`.
    pub served_by: &'static str,
    pub elapsed_ms: f64,
    pub catalog_version: String,
    /// Hash of the data versions of the tables the query read.
    pub data_version: String,
    pub row_count: usize,
    /// The calendar the periods were bucketed in.
    pub time_zone: String,
    pub week_start: String,
    pub as_of: chrono::NaiveDate,
    #[serde(flatten)]
    pub notes: semantic::ResultNotes,
}

impl KpiService {
    /// The service a server answers with: as [`open`](Self::open), except that only stored
    /// rollups that are current are loaded; the others are built in the background by
    /// [`run_rollup_builder`](Self::run_rollup_builder) (until then their queries read the
    /// models, with the same numbers), those an earlier run could not build for memory last.
    pub async fn open_for_serving(settings: &Settings) -> Result<Self, CatalogErrors> {
        Self::open_with(settings, true).await
    }

    pub async fn open(settings: &Settings) -> Result<Self, CatalogErrors> {
        Self::open_with(settings, false).await
    }

    async fn open_with(settings: &Settings, serving: bool) -> Result<Self, CatalogErrors> {
        let engine: Arc<dyn QueryEngine> = Arc::new(
            DataFusionEngine::new(settings.memory_mb * 1024 * 1024).map_err(|e| {
                CatalogErrors::from(crate::catalog::CatalogError::new(
                    "engine",
                    "",
                    e.to_string(),
                ))
            })?,
        );
        let sources = ProjectSources::read(&settings.project_dir)?;
        let calendar = CalendarConfig {
            time_zone: settings.time_zone,
            week_start: settings.week_start,
            years: settings.min_year..=settings.max_year,
        };
        let telemetry = crate::telemetry::Telemetry::new();
        let rollup_store = RollupStore::new(settings.rollup_store(), settings.memory_mb as u64);
        if serving {
            rollup_store.defer_memory_retries();
        }
        let rollup_budget = Duration::from_millis(settings.rollup_build_timeout_ms.max(1));
        let work = match serving {
            true => RollupWork::LoadOnly,
            false => RollupWork::All,
        };
        let state = DataState::build(
            Arc::new(sources),
            &settings.data_dir,
            engine.as_ref(),
            &calendar,
            &rollup_store,
            work,
            rollup_budget,
        )
        .await?;
        let catalog_version = state.catalog().version.clone();
        let watch = DataWatch::start();
        watch.watch_tables(state.catalog());
        Ok(Self {
            state: RwLock::new(Arc::new(state)),
            watch,
            engine,
            rollup_store,
            cache: ResultCache::new(
                settings.cache_mb * 1024 * 1024,
                telemetry.cache_hits.clone(),
                telemetry.cache_misses.clone(),
            ),
            slots: ComputeSlots::new(
                settings.max_concurrent,
                settings.max_concurrent_per_principal,
                Duration::from_millis(settings.queue_wait_ms),
            ),
            limits: QueryLimits {
                max_rows: settings.max_rows,
                ..QueryLimits::default()
            },
            calendar,
            timeout: settings.query_timeout(),
            refresh: tokio::sync::Mutex::new(()),
            failed: std::sync::Mutex::new(None),
            rollup_work: work,
            rollups_wanted: tokio::sync::Notify::new(),
            building_rollups: Default::default(),
            rollup_budget,
            engine_runs: AtomicU64::new(0),
            telemetry,
            warm_ups: AtomicU64::new(0),
            next_query_id: AtomicU64::new(1),
            reload: std::sync::Mutex::new(ReloadStatus {
                version: catalog_version,
                loaded_at: now_rfc3339(),
                reloads: 0,
                last_error: None,
            }),
            events: events::StateEvents::new(),
        })
    }

    /// The data state answering now: its catalog (`service.state().catalog().metrics`), its
    /// tables and rollups.
    pub fn state(&self) -> Arc<DataState> {
        self.state.read().expect("catalog lock").clone()
    }

    /// How data changes are learnt: `inotify` (cached versions trusted until an event) or `scan`
    /// (read on every request), and how many times tables' files were listed.
    pub fn data_watch(&self) -> (&'static str, u64) {
        let mode = if self.watch.is_live() {
            "inotify"
        } else {
            "scan"
        };
        (mode, self.watch.scans())
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// Bytes of the engine's memory pool held now.
    pub fn engine_memory(&self) -> usize {
        self.engine.memory_reserved()
    }

    pub fn calendar(&self) -> &CalendarConfig {
        &self.calendar
    }

    /// Most rows one answer may hold (`--max-rows`): also the most rows an export lists.
    pub fn max_rows(&self) -> usize {
        self.limits.max_rows
    }

    /// The data versions of some tables (what cache keys and ETags are made of), as this
    /// request sees them.
    pub fn data_versions(
        &self,
        catalog: &DataState,
        tables: &BTreeSet<String>,
        request: &RequestContext,
    ) -> Result<Vec<(String, String)>, QueryError> {
        request
            .versions
            .versions(&self.watch, catalog.catalog(), tables)
    }

    /// A compute slot of the principal's share, held until the returned context is dropped:
    /// for CPU work outside the engine (encoding an export), so that it queues as queries do.
    pub async fn hold_compute_slot(
        &self,
        principal: &Principal,
    ) -> Result<RequestContext, QueryError> {
        let request = RequestContext::for_principal(principal);
        self.hold_slot(&request).await?;
        Ok(request)
    }

    /// Holds a compute slot for the request (once; its other computations share it).
    async fn hold_slot(&self, request: &RequestContext) -> Result<(), QueryError> {
        request
            .lease
            .hold(&self.slots)
            .await
            .map_err(QueryError::from)
    }

    /// Today in the configured time zone at an instant.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.calendar.time_zone).date_naive()
    }

    pub fn warm_ups(&self) -> u64 {
        self.warm_ups.load(Ordering::Relaxed)
    }

    pub fn count_warm_up(&self) {
        self.warm_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// How many queries actually reached the engine (cache misses that computed).
    pub fn engine_runs(&self) -> u64 {
        self.engine_runs.load(Ordering::Relaxed)
    }

    pub async fn query(
        &self,
        principal: &Principal,
        req: &QueryRequest,
    ) -> Result<QueryResponse, QueryError> {
        self.query_seeing(principal, req, &RequestContext::for_principal(principal))
            .await
    }

    /// A query as part of a larger request (its data versions and compute slot shared).
    pub async fn query_seeing(
        &self,
        principal: &Principal,
        req: &QueryRequest,
        request: &RequestContext,
    ) -> Result<QueryResponse, QueryError> {
        let started = Instant::now();
        let query_id = format!("q{}", self.next_query_id.fetch_add(1, Ordering::Relaxed));
        let (catalog, vq, data) = self.prepare(req, &principal.scope, request).await?;
        let key = CacheKey {
            catalog_version: catalog.catalog().version.clone(),
            // The as-of date is part of the answer (clipping, partial periods) even when the
            // request leaves it to the clock: a result cached yesterday is not today's.
            query: format!(
                "{}|as_of={}",
                serde_json::to_string(req).map_err(|e| QueryError::internal(e.to_string()))?,
                vq.as_of
            ),
            data: data.clone(),
            scope: principal.scope.key(),
        };
        let (result, computed) = self
            .cache
            .get_or_compute(key, self.compute(&catalog, &vq, request))
            .await?;
        let meta = QueryMeta {
            query_id,
            served_by: if computed { "engine" } else { "cache" },
            elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            catalog_version: catalog.catalog().version.clone(),
            data_version: combined_version(&data),
            row_count: result.rows.len(),
            time_zone: self.calendar.time_zone.name().to_string(),
            week_start: self.calendar.week_start_name().to_string(),
            as_of: vq.as_of,
            notes: result.notes.clone(),
        };
        self.telemetry
            .query_duration
            .with_label_values(&[meta.served_by])
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            query_id = %meta.query_id,
            metrics = ?req.metrics,
            dimensions = ?req.dimensions,
            served_by = meta.served_by,
            rows = meta.row_count,
            elapsed_ms = meta.elapsed_ms,
            "query"
        );
        Ok(QueryResponse { result, meta })
    }

    pub async fn explain(
        &self,
        principal: &Principal,
        req: &QueryRequest,
    ) -> Result<Explanation, QueryError> {
        let (catalog, rows) = self.main_plan(principal, req).await?;
        catalog.explain(&rows).map_err(QueryError::from)
    }

    /// Runs the query's main plan and returns the physical plan with each operator's metrics
    /// (`kpilens explain --analyze`: a profiling aid, not served over HTTP, where it would run a
    /// computation outside the compute slots).
    pub async fn analyze(
        &self,
        principal: &Principal,
        req: &QueryRequest,
    ) -> Result<String, QueryError> {
        let (catalog, rows) = self.main_plan(principal, req).await?;
        catalog.analyze(rows).await.map_err(QueryError::from)
    }

    /// The plan of the query's rows (no comparisons, parent or totals), over the current data.
    async fn main_plan(
        &self,
        principal: &Principal,
        req: &QueryRequest,
    ) -> Result<(Arc<DataState>, datafusion::logical_expr::LogicalPlan), QueryError> {
        let (catalog, vq, _) = self
            .prepare(
                req,
                &principal.scope,
                &RequestContext::for_principal(principal),
            )
            .await?;
        let planned = semantic::plan(catalog.catalog(), &vq).await?;
        Ok((catalog, planned.rows))
    }

    /// Validates against the current catalog, rebuilding it first if an input table changed.
    async fn prepare(
        &self,
        req: &QueryRequest,
        scope: &Scope,
        request: &RequestContext,
    ) -> Result<(Arc<DataState>, ValidatedQuery, Vec<(String, String)>), QueryError> {
        let mut catalog = self.state();
        let mut vq =
            semantic::validate(catalog.catalog(), req, &self.limits, &self.calendar, scope)?;
        let tables = catalog.catalog().tables_read_by(&vq.models);
        let data = self.data_versions(&catalog, &tables, request)?;
        let fresh = self.catalog_over(&catalog, &data).await;
        if !Arc::ptr_eq(&fresh, &catalog) {
            catalog = fresh;
            vq = semantic::validate(catalog.catalog(), req, &self.limits, &self.calendar, scope)?;
        }
        Ok((catalog, vq, data))
    }

    /// The query and what it is composed with (drill parent, comparisons, the drilled level's
    /// members), run concurrently under one time budget, then composed.
    async fn compute(
        &self,
        catalog: &Arc<DataState>,
        vq: &ValidatedQuery,
        request: &RequestContext,
    ) -> Result<Arc<QueryResult>, QueryError> {
        self.hold_slot(request).await?;
        self.engine_runs.fetch_add(1, Ordering::Relaxed);
        let subs = compose::sub_queries(vq);
        let run = async {
            let main = self.run_plan(catalog, vq);
            let parent = async {
                match &subs.parent {
                    Some(pq) => self.run_plan(catalog, pq).await.map(Some),
                    None => Ok(None),
                }
            };
            let compared =
                futures::future::try_join_all(subs.comparisons.iter().map(|(w, cq)| async move {
                    Ok::<_, QueryError>((w.clone(), self.run_plan(catalog, cq).await?))
                }));
            let members = async {
                match &subs.drilled_members {
                    Some(d) => {
                        let path = d.path.iter().cloned().collect();
                        let df = semantic::listing::members(
                            catalog.catalog(),
                            &d.hierarchy,
                            &d.level,
                            &path,
                            &vq.scope,
                        )
                        .await?;
                        let batches = catalog
                            .execute(df.into_unoptimized_plan())
                            .await
                            .map_err(QueryError::from)?;
                        Ok(member_values(&batches))
                    }
                    None => Ok(Vec::new()),
                }
            };
            tokio::try_join!(main, parent, compared, members)
        };
        let (result, parent, compared, drilled_members) = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                QueryError::new(
                    ErrorKind::Timeout,
                    "timeout",
                    format!(
                        "the query ran past its time budget of {} s",
                        self.timeout.as_secs()
                    ),
                )
            })??;
        // Composing (gap filling, comparisons) is CPU work on JSON rows outside any plan: on a
        // blocking thread, so it never stalls the async ones, and within the cell budget, taken
        // from the engine's pool.
        let (catalog, vq, max_cells) = (catalog.clone(), vq.clone(), self.limits.max_cells);
        let composed = tokio::task::spawn_blocking(move || {
            let mut hold = catalog.reserve("compose");
            let mut grant = |bytes: usize| hold.try_grow(bytes).is_ok();
            let mut budget = CellBudget::new(max_cells, &mut grant);
            compose::compose(
                catalog.catalog(),
                &vq,
                &subs,
                result,
                parent,
                compared,
                &drilled_members,
                &mut budget,
            )
        })
        .await
        .map_err(|e| QueryError::internal(format!("composing the answer failed: {e}")))??;
        Ok(Arc::new(composed))
    }

    /// Plans and executes one validated query: rows (at most `limit`) and totals.
    async fn run_plan(
        &self,
        catalog: &DataState,
        vq: &ValidatedQuery,
    ) -> Result<QueryResult, QueryError> {
        let planned = semantic::plan(catalog.catalog(), vq).await?;
        let rows_schema = planned.rows.schema().as_arrow().clone();
        let rows = catalog.execute(planned.rows.clone());
        let (batches, totals) = match &planned.totals {
            Some(totals) => {
                let totals = catalog.execute(totals.clone());
                let (r, t) = tokio::try_join!(rows, totals).map_err(QueryError::from)?;
                (r, Some(t))
            }
            None => (rows.await.map_err(QueryError::from)?, None),
        };
        Ok(compose::answer(
            catalog.catalog(),
            vq,
            &planned,
            &rows_schema,
            &batches,
            totals.as_deref(),
        ))
    }
}
