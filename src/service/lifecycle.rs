//! The data state's lifecycle: definitions and data are watched; a change that validates builds
//! a new data state and swaps it in, one that does not keeps the last good state serving and is
//! reported (with file and key) until a later change fixes it.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::KpiService;
use super::events::{StateChange, StateNow, TableVersion, now_rfc3339};
use crate::catalog::ProjectSources;
use crate::semantic::QueryError;
use crate::state::{DataState, RollupWork, current_versions};

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
    /// The files' version that failed: not parsed again until they change.
    #[serde(skip)]
    pub version: String,
}

/// A data change the catalog could not be rebuilt over.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRefresh {
    /// (table, data version) as seen when the rebuild failed.
    pub data: Vec<(String, String)>,
    pub errors: Vec<String>,
}

impl KpiService {
    /// The catalog over the data as it is now, for the tables `models` read: rebuilt first if
    /// one of them changed (what a listing outside the query path, e.g. a record rule, reads).
    pub async fn catalog_for(
        &self,
        models: &BTreeSet<String>,
    ) -> Result<Arc<DataState>, QueryError> {
        let catalog = self.state();
        let data = self.data_versions(
            &catalog,
            &catalog.catalog().tables_read_by(models),
            &super::RequestContext::named("kpilens"),
        )?;
        Ok(self.catalog_over(&catalog, &data).await)
    }

    /// `catalog` if it was built over these data versions, else the catalog rebuilt over them.
    pub(super) async fn catalog_over(
        &self,
        catalog: &Arc<DataState>,
        data: &[(String, String)],
    ) -> Arc<DataState> {
        if data
            .iter()
            .any(|(t, v)| catalog.catalog().tables[t].version != *v)
        {
            self.refresh_data(data).await
        } else {
            catalog.clone()
        }
    }

    /// Rebuilds the catalog over the data as it is now. A rebuild that fails (say, a file with a
    /// wrong schema was dropped in) keeps the last good catalog serving, from the files it
    /// validated, and is not retried until the data changes again.
    pub(super) async fn refresh_data(&self, seen: &[(String, String)]) -> Arc<DataState> {
        let _serialised = self.refresh.lock().await;
        let current = self.state();
        if seen
            .iter()
            .all(|(t, v)| current.catalog().tables[t].version == *v)
        {
            return current; // another request rebuilt it meanwhile
        }
        if self
            .failed_lock()
            .as_ref()
            .is_some_and(|f| seen.iter().all(|s| f.data.contains(s)))
        {
            return current;
        }
        match self.rebuild(&current, self.rollup_work).await {
            Ok(fresh) => {
                *self.failed_lock() = None;
                self.swap_in(&current, fresh)
            }
            Err(errors) => {
                tracing::error!(%errors, "data changed but the catalog does not validate over it; serving the last good catalog");
                *self.failed_lock() = Some(FailedRefresh {
                    data: seen.to_vec(),
                    errors: errors.0.iter().map(|e| e.to_string()).collect(),
                });
                current
            }
        }
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, Option<FailedRefresh>> {
        self.failed.lock().expect("failed refresh")
    }

    /// A new data state over the same definitions and the data as it is now.
    async fn rebuild(
        &self,
        current: &DataState,
        work: RollupWork,
    ) -> Result<DataState, crate::catalog::CatalogErrors> {
        DataState::build(
            current.catalog().sources.clone(),
            &current.catalog().data_dir,
            self.engine.as_ref(),
            &self.calendar,
            &self.rollup_store,
            work,
            self.rollup_budget,
        )
        .await
    }

    /// Serves `fresh` from now on; wakes the rollup builder if it left rollups pending.
    fn serve_state(&self, fresh: Arc<DataState>) {
        self.watch.watch_tables(fresh.catalog());
        let pending = !fresh.pending_rollups().is_empty();
        *self.state.write().expect("catalog lock") = fresh;
        if pending {
            self.rollups_wanted.notify_one();
        }
    }

    /// Serves `fresh` from now on, dropping the cached answers of tables whose data changed.
    fn swap_in(&self, current: &DataState, fresh: DataState) -> Arc<DataState> {
        let mut changed = Vec::new();
        for (table, source) in &fresh.catalog().tables {
            if current
                .catalog()
                .tables
                .get(table)
                .is_none_or(|old| old.version != source.version)
            {
                tracing::info!(table, version = %source.version, "data refreshed");
                self.cache.invalidate_table(table, &source.version);
                changed.push(TableVersion {
                    table: table.clone(),
                    version: source.version.clone(),
                });
            }
        }
        let fresh = Arc::new(fresh);
        self.serve_state(fresh.clone());
        if !changed.is_empty() {
            self.events.publish(StateChange::Data {
                tables: changed,
                now: StateNow::of(&fresh),
            });
        }
        fresh
    }

    /// The serving state's changes from now on (`GET /api/v1/events`), what serves now, and a
    /// receiver that turns true when the streams must end.
    pub fn subscribe_changes(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<StateChange>,
        tokio::sync::watch::Receiver<bool>,
        StateNow,
    ) {
        let (changes, closing) = self.events.subscribe();
        (changes, closing, StateNow::of(&self.state()))
    }

    /// Ends every change stream (the server is shutting down).
    pub fn close_change_streams(&self) {
        self.events.close();
    }

    /// The server's rollup builder: computes, behind the state that serves, the rollups each
    /// new state left pending, and swaps in a state with them. Runs until the server stops.
    pub async fn run_rollup_builder(self: Arc<Self>) {
        loop {
            let wanted = self.rollups_wanted.notified();
            self.build_pending_rollups().await;
            wanted.await;
        }
    }

    /// One pass of the builder: a state with every rollup computed, over the data as it is
    /// now, swapped in unless a newer state serves meanwhile (whose own pending ones are built
    /// next); then, once, the builds an earlier run could not make for memory (deferred at
    /// start, so that they do not hold back the others). Until it is done the queries of the
    /// pending rollups read the models, with the same numbers.
    pub async fn build_pending_rollups(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut retry_deferred = false;
        loop {
            let current = self.state();
            if current.pending_rollups().is_empty() && !retry_deferred {
                if self.rollup_store.stop_deferring() {
                    retry_deferred = true;
                    continue;
                }
                return;
            }
            retry_deferred = false;
            let started = std::time::Instant::now();
            self.building_rollups.store(true, Relaxed);
            let built = self.rebuild(&current, RollupWork::All).await;
            self.building_rollups.store(false, Relaxed);
            match built {
                Ok(fresh) => {
                    let _serialised = self.refresh.lock().await;
                    if Arc::ptr_eq(&self.state(), &current) {
                        tracing::info!(
                            rollups = fresh.catalog().rollups.len(),
                            not_built = fresh.catalog().rollups_not_built.len(),
                            ms = started.elapsed().as_millis() as u64,
                            "rollups built in the background"
                        );
                        self.swap_in(&current, fresh);
                    }
                }
                Err(errors) => {
                    // The definitions or the data no longer validate: the watcher reports it.
                    tracing::warn!(%errors, "building the pending rollups failed; the state serving stays");
                    return;
                }
            }
        }
    }

    /// Whether every rollup of the serving state is current (`/readyz`), and those still to be
    /// built when not.
    pub fn rollups_ready(&self) -> (bool, Vec<String>) {
        use std::sync::atomic::Ordering::Relaxed;
        let pending = self.state().pending_rollups().to_vec();
        let ready = pending.is_empty() && !self.building_rollups.load(Relaxed);
        (ready, pending)
    }

    /// The last data change that could not be loaded, while the catalog still predates it: once
    /// the files it failed on are back as the serving catalog read them (the bad file removed),
    /// it is forgotten. Never waits on a build.
    pub fn failed_refresh(&self) -> Option<FailedRefresh> {
        let mut failed = self.failed_lock();
        if let Some(f) = failed.as_ref() {
            let current = self.state();
            let tables: BTreeSet<String> = f.data.iter().map(|(t, _)| t.clone()).collect();
            let now =
                self.data_versions(&current, &tables, &super::RequestContext::named("kpilens"));
            if now.is_ok_and(|now| {
                now.iter().all(|(t, v)| {
                    current
                        .catalog()
                        .tables
                        .get(t)
                        .is_some_and(|s| s.version == *v)
                })
            }) {
                *failed = None;
            }
        }
        failed.clone()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().expect("reload status").clone()
    }

    /// What the answers depend on: the catalog version and the data versions it was built over.
    /// A change means cached answers are for another state (and warm-up should run again).
    pub fn state_stamp(&self) -> String {
        let c = self.state();
        let mut stamp = c.catalog().version.clone();
        for (table, source) in &c.catalog().tables {
            stamp.push_str(&format!("|{table}={}", source.version));
        }
        stamp
    }

    /// One watcher pass. Changed definitions are validated into a new catalog and swapped in
    /// atomically; a change that does not validate leaves the last good catalog serving and is
    /// reported (status, log) with file and key, and is not parsed again until the files change.
    /// Changed data rebuilds as a query would.
    pub async fn reload_if_changed(&self) {
        let current = self.state();
        let dir = &current.catalog().sources.project_dir;
        let version = ProjectSources::version_of(dir);
        let failed_before = self
            .reload_status()
            .last_error
            .is_some_and(|e| e.version == version);
        if version == current.catalog().sources.version {
            let mut status = self.reload.lock().expect("reload status");
            if status.last_error.is_some() {
                // The files are back to what is serving.
                tracing::info!(version = %current.catalog().version, "definitions reverted to the serving catalog");
                status.last_error = None;
            }
        } else if !failed_before {
            // Reading and parsing every definition is blocking work (a hostile file can make
            // it seconds): off the request runtime's workers.
            let read = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || ProjectSources::read(&dir))
                    .await
                    .unwrap_or_else(|e| {
                        Err(crate::catalog::CatalogError::new(
                            "",
                            "",
                            format!("reading the definitions failed: {e}"),
                        )
                        .into())
                    })
            };
            let built = match read {
                Ok(s) => {
                    DataState::build(
                        Arc::new(s),
                        &current.catalog().data_dir,
                        self.engine.as_ref(),
                        &self.calendar,
                        &self.rollup_store,
                        self.rollup_work,
                        self.rollup_budget,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match built {
                Ok(fresh) => {
                    let version = fresh.catalog().version.clone();
                    let change = StateChange::Catalog(StateNow::of(&fresh));
                    {
                        // Not between the builder's look at the serving state and its swap.
                        let _serialised = self.refresh.lock().await;
                        self.serve_state(Arc::new(fresh));
                    }
                    self.events.publish(change);
                    let mut status = self.reload.lock().expect("reload status");
                    status.version = version.clone();
                    status.loaded_at = now_rfc3339();
                    status.reloads += 1;
                    status.last_error = None;
                    tracing::info!(%version, "definitions reloaded");
                }
                Err(errors) => {
                    tracing::error!(%errors, "definitions changed but do not validate; the last good catalog keeps serving");
                    self.reload.lock().expect("reload status").last_error = Some(ReloadError {
                        at: now_rfc3339(),
                        errors: errors.0,
                        version,
                    });
                }
            }
        }
        let current = self.state();
        let tables: BTreeSet<String> = current.catalog().tables.keys().cloned().collect();
        // The safety net under the watcher: what the files say now.
        if let Ok(data) = current_versions(current.catalog(), &tables) {
            self.watch.reconcile(current.catalog(), &data);
            if data
                .iter()
                .any(|(t, v)| current.catalog().tables[t].version != *v)
            {
                self.refresh_data(&data).await;
            }
        }
    }
}

/// How much of each model `kpilens validate` reads to catch what only the data shows (a cast
/// that fails on `?`, a value DataFusion's CSV inference did not expect).
#[derive(Debug, Clone, Copy)]
pub enum DataCheck {
    /// The first rows of each model.
    Sample(usize),
    /// Every row.
    Full,
}

impl KpiService {
    /// Reads every model's rows (computing each SQL model's columns over them), as `validate`
    /// does before serving: each model that fails, with the engine's reason (it names the value).
    pub async fn check_data(&self, check: DataCheck) -> Vec<crate::catalog::CatalogError> {
        let state = self.state();
        let mut errors = Vec::new();
        for (name, model) in &state.catalog().models {
            let table = format!("\"{}\"", model.table.replace('"', "\"\""));
            let sql = match check {
                DataCheck::Sample(n) => format!("SELECT * FROM {table} LIMIT {n}"),
                DataCheck::Full => format!("SELECT * FROM {table}"),
            };
            if let Err(e) = state.count_rows(&sql).await {
                let within = match check {
                    DataCheck::Sample(n) => format!(" (within its first {n} rows)"),
                    DataCheck::Full => String::new(),
                };
                // A cast of text the file did not type: what `read:` on its source is for.
                let hint = if e.to_string().contains("Cannot cast string") {
                    " (if that value means unknown, list it under the file source's read.null; or declare the column's type under read.columns)"
                } else {
                    ""
                };
                errors.push(crate::catalog::CatalogError::new(
                    &model.file,
                    format!("models.{name}"),
                    format!("reading its data fails{within}: {e}{hint}"),
                ));
            }
        }
        errors
    }
}
