//! The one path every query takes, whoever asks (HTTP, CLI, tests): validate, check data
//! freshness, look up the cache, plan, execute under a time budget, encode.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use serde::Serialize;
use serde_json::Value;

use crate::cache::{CacheKey, ResultCache};
use crate::catalog::{CatalogErrors, ProjectSources};
use crate::config::Settings;
use crate::engine::{DataFusionEngine, Explanation, QueryEngine};
use crate::security::{Principal, Scope};
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::compose::{self, member_values};
use crate::semantic::records::{self, RecordListing};
use crate::semantic::{
    self, ColumnRole, ErrorKind, QueryError, QueryLimits, QueryRequest, QueryResult, ValidatedQuery,
};
pub use crate::state::VersionMemo;
use crate::state::{DataState, combined_version, current_versions};

pub struct KpiService {
    /// The data state answering now; swapped whole on a definition or data change.
    state: RwLock<Arc<DataState>>,
    engine: Arc<dyn QueryEngine>,
    cache: ResultCache,
    limits: QueryLimits,
    calendar: CalendarConfig,
    timeout: Duration,
    /// Serialises catalog rebuilds after a data refresh, and remembers the data state whose
    /// rebuild failed (with why) so that it is not retried on every query.
    refresh: tokio::sync::Mutex<Option<FailedRefresh>>,
    engine_runs: AtomicU64,
    /// Completed dashboard warm-ups (see `dashboard::warm_up`).
    warm_ups: AtomicU64,
    next_query_id: AtomicU64,
    /// What the definition watcher last saw (hot reload).
    reload: std::sync::Mutex<ReloadStatus>,
}

/// `GET /api/v1/catalog/status`: the catalog serving now and the last change that failed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub version: String,
    pub loaded_at: String,
    /// Successful reloads since start.
    pub reloads: u64,
    /// The last definition change that did not validate (the previous catalog kept serving),
    /// until a later change validates.
    pub last_error: Option<ReloadError>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadError {
    pub at: String,
    pub errors: Vec<crate::catalog::CatalogError>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A data change the catalog could not be rebuilt over.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRefresh {
    /// (table, data version) as seen when the rebuild failed.
    pub data: Vec<(String, String)>,
    pub errors: Vec<String>,
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
    pub async fn open(settings: &Settings) -> Result<Self, CatalogErrors> {
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
        let state =
            DataState::build(Arc::new(sources), &settings.data_dir, engine.as_ref()).await?;
        let catalog_version = state.version.clone();
        Ok(Self {
            state: RwLock::new(Arc::new(state)),
            engine,
            cache: ResultCache::new(settings.cache_mb * 1024 * 1024),
            limits: QueryLimits {
                max_rows: settings.max_rows,
                ..QueryLimits::default()
            },
            calendar: CalendarConfig {
                time_zone: settings.time_zone,
                week_start: settings.week_start,
            },
            timeout: settings.query_timeout(),
            refresh: tokio::sync::Mutex::new(None),
            engine_runs: AtomicU64::new(0),
            warm_ups: AtomicU64::new(0),
            next_query_id: AtomicU64::new(1),
            reload: std::sync::Mutex::new(ReloadStatus {
                version: catalog_version,
                loaded_at: now_rfc3339(),
                reloads: 0,
                last_error: None,
            }),
        })
    }

    /// The data state answering now (read as its catalog: `service.catalog().metrics`).
    pub fn catalog(&self) -> Arc<DataState> {
        self.state.read().expect("catalog lock").clone()
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    pub fn calendar(&self) -> &CalendarConfig {
        &self.calendar
    }

    /// The data versions of some tables (what cache keys and ETags are made of), as this
    /// request sees them.
    pub fn data_versions(
        &self,
        catalog: &DataState,
        tables: &BTreeSet<String>,
        seen: &VersionMemo,
    ) -> Result<Vec<(String, String)>, QueryError> {
        seen.versions(catalog, tables)
    }

    /// A one-column listing (`member`) cached like a query result: keyed by catalog version,
    /// `name` and the data versions of `tables`, so it is recomputed only when they change. The
    /// plan is built only on a miss.
    async fn cached_members(
        &self,
        catalog: &DataState,
        name: String,
        scope: &Scope,
        tables: &BTreeSet<String>,
        df: impl Future<Output = Result<DataFrame, QueryError>>,
        seen: &VersionMemo,
    ) -> Result<Vec<Value>, QueryError> {
        let key = CacheKey {
            catalog_version: catalog.version.clone(),
            query: name,
            data: seen.versions(catalog, tables)?,
            scope: scope.key(),
        };
        let compute = async {
            let batches = self.run_listing(catalog, df.await?).await?;
            Ok(Arc::new(QueryResult {
                schema: Vec::new(),
                rows: member_values(&batches)
                    .into_iter()
                    .map(|v| vec![v])
                    .collect(),
                totals: None,
                truncated: false,
                drill: None,
                notes: Default::default(),
            }))
        };
        let (result, _) = self.cache.get_or_compute(key, compute).await?;
        Ok(result.rows.iter().map(|r| r[0].clone()).collect())
    }

    /// The members of a dimension a dashboard filter offers: those of the given models, within
    /// the scope, cached by data version.
    pub async fn dimension_options(
        &self,
        catalog: &DataState,
        dimension: &str,
        models: &BTreeSet<String>,
        scope: &Scope,
        seen: &VersionMemo,
    ) -> Result<Vec<Value>, QueryError> {
        let tables = catalog.tables_read_by(models.iter());
        let df = semantic::listing::dimension_members(catalog, dimension, models, scope);
        self.cached_members(
            catalog,
            format!("members:{dimension}:{models:?}"),
            scope,
            &tables,
            df,
            seen,
        )
        .await
    }

    /// The last date a model has rows for (its time column), or None for an empty model.
    pub async fn latest_date(
        &self,
        catalog: &DataState,
        model: &str,
        seen: &VersionMemo,
    ) -> Result<Option<NaiveDate>, QueryError> {
        let reads = catalog
            .models
            .get(model)
            .map(|m| m.reads.clone())
            .unwrap_or_default();
        let values = self
            .cached_members(
                catalog,
                format!("latest_date:{model}"),
                &Scope::all(),
                &reads,
                async { records::latest_date(catalog, model) },
                seen,
            )
            .await?;
        Ok(values
            .first()
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok()))
    }

    /// The rows a record rule lists (the model's rows meeting its condition at the clock's time),
    /// over the data as it is now: at most `limit`, and whether that is all of them. Each row is
    /// key, owner, the path's levels, the shown columns.
    pub async fn records(
        &self,
        listing: &RecordListing<'_>,
    ) -> Result<(Vec<Vec<Value>>, bool), QueryError> {
        let catalog = self
            .catalog_for(&BTreeSet::from([listing.model.to_string()]))
            .await?;
        let (df, columns) = records::record_rows(&catalog, listing).await?;
        let batches = self.run_listing(&catalog, df).await?;
        let mut rows = semantic::rows_of(&batches, &columns);
        let complete = rows.len() <= listing.limit;
        rows.truncate(listing.limit);
        Ok((rows, complete))
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
        self.query_seeing(principal, req, &VersionMemo::default())
            .await
    }

    /// A query as part of a larger request that has already seen some data versions.
    pub async fn query_seeing(
        &self,
        principal: &Principal,
        req: &QueryRequest,
        seen: &VersionMemo,
    ) -> Result<QueryResponse, QueryError> {
        let started = Instant::now();
        let query_id = format!("q{}", self.next_query_id.fetch_add(1, Ordering::Relaxed));
        let (catalog, vq, data) = self.prepare(req, &principal.scope, seen).await?;
        let key = CacheKey {
            catalog_version: catalog.version.clone(),
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
            .get_or_compute(key, self.compute(&catalog, &vq))
            .await?;
        let meta = QueryMeta {
            query_id,
            served_by: if computed { "engine" } else { "cache" },
            elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            catalog_version: catalog.version.clone(),
            data_version: combined_version(&data),
            row_count: result.rows.len(),
            time_zone: self.calendar.time_zone.name().to_string(),
            week_start: self.calendar.week_start_name().to_string(),
            as_of: vq.as_of,
            notes: result.notes.clone(),
        };
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
        let (catalog, vq, _) = self
            .prepare(req, &principal.scope, &VersionMemo::default())
            .await?;
        let planned = semantic::plan(&catalog, &vq).await?;
        catalog.explain(&planned.rows).map_err(QueryError::from)
    }

    /// Members of a hierarchy level under the given ancestors, for filter pickers.
    pub async fn members(
        &self,
        principal: &Principal,
        hierarchy: &str,
        level: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<semantic::listing::Members, QueryError> {
        let catalog = self.catalog();
        let path: BTreeMap<String, Value> = params
            .iter()
            .map(|(k, v)| {
                let t = catalog
                    .dimensions
                    .get(k)
                    .map(|d| d.data_type.clone())
                    .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8);
                (k.clone(), semantic::listing::param_value(v, &t))
            })
            .collect();
        let df =
            semantic::listing::members(&catalog, hierarchy, level, &path, &principal.scope).await?;
        let mut members = member_values(&self.run_listing(&catalog, df).await?);
        let truncated = members.len() > semantic::listing::MAX_MEMBERS;
        members.truncate(semantic::listing::MAX_MEMBERS);
        Ok(semantic::listing::Members {
            hierarchy: hierarchy.to_string(),
            level: level.to_string(),
            members,
            truncated,
        })
    }

    /// A page of a model's underlying rows (only its declared drill-through columns).
    pub async fn drill_through(
        &self,
        principal: &Principal,
        req: &semantic::listing::DrillThroughRequest,
    ) -> Result<semantic::listing::DrillThroughPage, QueryError> {
        let catalog = self.catalog();
        let (page, total, names) = semantic::listing::drill_through(
            &catalog,
            req,
            &self.limits,
            &self.calendar,
            principal,
        )
        .await?;
        let columns_meta = semantic::listing::column_types(page.schema(), &names);
        let (rows, total) = tokio::try_join!(
            self.run_listing(&catalog, page),
            self.run_listing(&catalog, total)
        )?;
        let columns: Vec<semantic::OutputColumn> = names
            .iter()
            .map(|n| semantic::OutputColumn::new(n, ColumnRole::Dimension))
            .collect();
        let total = semantic::rows_of(
            &total,
            &[semantic::OutputColumn::new("total", ColumnRole::Metric)],
        )
        .first()
        .and_then(|r| r[0].as_u64())
        .unwrap_or(0);
        tracing::info!(model = %req.model, total, "drill_through");
        Ok(semantic::listing::DrillThroughPage {
            model: req.model.clone(),
            columns: columns_meta,
            rows: semantic::rows_of(&rows, &columns),
            total,
            page: req.page,
            page_size: req.page_size,
        })
    }

    /// Runs a listing plan under the query time budget.
    async fn run_listing(
        &self,
        catalog: &DataState,
        df: DataFrame,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        tokio::time::timeout(self.timeout, catalog.execute(df.into_unoptimized_plan()))
            .await
            .map_err(|_| {
                QueryError::new(
                    ErrorKind::Timeout,
                    "timeout",
                    "the listing ran past its time budget",
                )
            })?
            .map_err(QueryError::from)
    }

    /// Validates against the current catalog, rebuilding it first if an input table changed.
    async fn prepare(
        &self,
        req: &QueryRequest,
        scope: &Scope,
        seen: &VersionMemo,
    ) -> Result<(Arc<DataState>, ValidatedQuery, Vec<(String, String)>), QueryError> {
        let mut catalog = self.catalog();
        let mut vq = semantic::validate(&catalog, req, &self.limits, &self.calendar, scope)?;
        let tables = catalog.tables_read_by(&vq.models);
        let data = seen.versions(&catalog, &tables)?;
        let fresh = self.catalog_over(&catalog, &data).await;
        if !Arc::ptr_eq(&fresh, &catalog) {
            catalog = fresh;
            vq = semantic::validate(&catalog, req, &self.limits, &self.calendar, scope)?;
        }
        Ok((catalog, vq, data))
    }

    /// The catalog over the data as it is now, for the tables `models` read: rebuilt first if
    /// one of them changed (what a listing outside the query path, e.g. a record rule, reads).
    pub async fn catalog_for(
        &self,
        models: &BTreeSet<String>,
    ) -> Result<Arc<DataState>, QueryError> {
        let catalog = self.catalog();
        let data = current_versions(&catalog, &catalog.tables_read_by(models))?;
        Ok(self.catalog_over(&catalog, &data).await)
    }

    /// `catalog` if it was built over these data versions, else the catalog rebuilt over them.
    async fn catalog_over(
        &self,
        catalog: &Arc<DataState>,
        data: &[(String, String)],
    ) -> Arc<DataState> {
        if data.iter().any(|(t, v)| catalog.tables[t].version != *v) {
            self.refresh_data(data).await
        } else {
            catalog.clone()
        }
    }

    /// Rebuilds the catalog over the data as it is now. A rebuild that fails (say, a file with a
    /// wrong schema was dropped in) keeps the last good catalog serving, from the files it
    /// validated, and is not retried until the data changes again.
    async fn refresh_data(&self, seen: &[(String, String)]) -> Arc<DataState> {
        let mut failed = self.refresh.lock().await;
        let current = self.catalog();
        if seen.iter().all(|(t, v)| current.tables[t].version == *v) {
            return current; // another request rebuilt it meanwhile
        }
        if failed
            .as_ref()
            .is_some_and(|f| seen.iter().all(|s| f.data.contains(s)))
        {
            return current;
        }
        match DataState::build(
            current.sources.clone(),
            &current.data_dir,
            self.engine.as_ref(),
        )
        .await
        {
            Ok(fresh) => {
                for (table, source) in &fresh.tables {
                    if current
                        .tables
                        .get(table)
                        .is_none_or(|old| old.version != source.version)
                    {
                        tracing::info!(table, version = %source.version, "data refreshed");
                        self.cache.invalidate_table(table, &source.version);
                    }
                }
                *failed = None;
                let fresh = Arc::new(fresh);
                *self.state.write().expect("catalog lock") = fresh.clone();
                fresh
            }
            Err(errors) => {
                tracing::error!(%errors, "data changed but the catalog does not validate over it; serving the last good catalog");
                *failed = Some(FailedRefresh {
                    data: seen.to_vec(),
                    errors: errors.0.iter().map(|e| e.to_string()).collect(),
                });
                current
            }
        }
    }

    /// The last data change that could not be loaded, while the catalog still predates it.
    pub async fn failed_refresh(&self) -> Option<FailedRefresh> {
        self.refresh.lock().await.clone()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().expect("reload status").clone()
    }

    /// What the answers depend on: the catalog version and the data versions it was built over.
    /// A change means cached answers are for another state (and warm-up should run again).
    pub fn state_stamp(&self) -> String {
        let c = self.catalog();
        let mut stamp = c.version.clone();
        for (table, source) in &c.tables {
            stamp.push_str(&format!("|{table}={}", source.version));
        }
        stamp
    }

    /// One watcher pass. Changed definitions are validated into a new catalog and swapped in
    /// atomically; a change that does not validate leaves the last good catalog serving and is
    /// reported (status, log) with file and key. Changed data rebuilds as a query would.
    pub async fn reload_if_changed(&self) {
        let current = self.catalog();
        let sources = ProjectSources::read(&current.sources.project_dir);
        let outcome = match sources {
            Ok(s) if s.version == current.sources.version => Ok(None),
            Ok(s) => DataState::build(Arc::new(s), &current.data_dir, self.engine.as_ref())
                .await
                .map(Some),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(None) => {
                let mut status = self.reload.lock().expect("reload status");
                if status.last_error.is_some() {
                    // The files are back to what is serving.
                    tracing::info!(version = %current.version, "definitions reverted to the serving catalog");
                    status.last_error = None;
                }
            }
            Ok(Some(fresh)) => {
                let version = fresh.version.clone();
                *self.state.write().expect("catalog lock") = Arc::new(fresh);
                let mut status = self.reload.lock().expect("reload status");
                status.version = version.clone();
                status.loaded_at = now_rfc3339();
                status.reloads += 1;
                status.last_error = None;
                tracing::info!(%version, "definitions reloaded");
            }
            Err(errors) => {
                let mut status = self.reload.lock().expect("reload status");
                let unchanged = status
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.errors == errors.0);
                if !unchanged {
                    tracing::error!(%errors, "definitions changed but do not validate; the last good catalog keeps serving");
                    status.last_error = Some(ReloadError {
                        at: now_rfc3339(),
                        errors: errors.0,
                    });
                }
            }
        }
        let current = self.catalog();
        let tables: BTreeSet<String> = current.tables.keys().cloned().collect();
        if let Ok(data) = current_versions(&current, &tables)
            && data.iter().any(|(t, v)| current.tables[t].version != *v)
        {
            self.refresh_data(&data).await;
        }
    }

    /// The query and what it is composed with (drill parent, comparisons, the drilled level's
    /// members), run concurrently under one time budget, then composed.
    async fn compute(
        &self,
        catalog: &DataState,
        vq: &ValidatedQuery,
    ) -> Result<Arc<QueryResult>, QueryError> {
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
                            catalog,
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
        Ok(Arc::new(compose::compose(
            catalog,
            vq,
            &subs,
            result,
            parent,
            compared,
            &drilled_members,
        )))
    }

    /// Plans and executes one validated query: rows (at most `limit`) and totals.
    async fn run_plan(
        &self,
        catalog: &DataState,
        vq: &ValidatedQuery,
    ) -> Result<QueryResult, QueryError> {
        let planned = semantic::plan(catalog, vq).await?;
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
            catalog,
            vq,
            &planned,
            &rows_schema,
            &batches,
            totals.as_deref(),
        ))
    }
}
