//! Alert state that survives restarts, in an embedded redb database (one file): current alert
//! instances, the history of state changes, tasks, and when each rule last ran. One evaluation's
//! changes commit in one transaction, so a crash leaves either all of them or none: after a
//! restart nothing is lost and nothing is recorded twice.

use super::AlertError;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::state::AlertInstance;
use super::{AlertEvent, RuleRun, Task};

const ALERTS: TableDefinition<&str, &str> = TableDefinition::new("alerts");
const TASKS: TableDefinition<&str, &str> = TableDefinition::new("tasks");
const HISTORY: TableDefinition<u64, &str> = TableDefinition::new("history");
const RUNS: TableDefinition<&str, &str> = TableDefinition::new("rule_runs");

pub struct AlertStore {
    db: Database,
}

/// What one rule evaluation changed, written atomically.
#[derive(Default)]
pub struct Changes {
    pub alerts: Vec<AlertInstance>,
    pub tasks: Vec<Task>,
    pub events: Vec<AlertEvent>,
    pub run: Option<(String, RuleRun)>,
}

pub type StoreResult<T> = Result<T, AlertError>;

fn err(e: impl std::fmt::Display) -> AlertError {
    AlertError::store(e)
}

fn json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(err)
}

impl AlertStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        // Create the tables up front so that reads never meet a missing table.
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(ALERTS).map_err(err)?;
        txn.open_table(TASKS).map_err(err)?;
        txn.open_table(HISTORY).map_err(err)?;
        txn.open_table(RUNS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db })
    }

    fn all<T: DeserializeOwned>(&self, table: TableDefinition<&str, &str>) -> StoreResult<Vec<T>> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(table).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            out.push(serde_json::from_str(v.value()).map_err(err)?);
        }
        Ok(out)
    }

    pub fn alerts(&self) -> StoreResult<Vec<AlertInstance>> {
        self.all(ALERTS)
    }

    pub fn tasks(&self) -> StoreResult<Vec<Task>> {
        self.all(TASKS)
    }

    pub fn runs(&self) -> StoreResult<Vec<(String, RuleRun)>> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(RUNS).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            out.push((
                k.value().to_string(),
                serde_json::from_str(v.value()).map_err(err)?,
            ));
        }
        Ok(out)
    }

    /// The newest `limit` events, newest first, that pass `keep`.
    pub fn history(
        &self,
        limit: usize,
        keep: impl Fn(&AlertEvent) -> bool,
    ) -> StoreResult<Vec<AlertEvent>> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(HISTORY).map_err(err)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(err)?.rev() {
            let (_, v) = entry.map_err(err)?;
            let event: AlertEvent = serde_json::from_str(v.value()).map_err(err)?;
            if keep(&event) {
                out.push(event);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(HISTORY).map_err(err)?;
        let last = t.last().map_err(err)?.map(|(k, _)| k.value());
        Ok(last.map_or(1, |s| s + 1))
    }

    pub fn apply(&self, changes: &Changes) -> StoreResult<()> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut alerts = txn.open_table(ALERTS).map_err(err)?;
            for a in &changes.alerts {
                alerts
                    .insert(a.key().as_str(), json(a)?.as_str())
                    .map_err(err)?;
            }
            let mut tasks = txn.open_table(TASKS).map_err(err)?;
            for t in &changes.tasks {
                tasks
                    .insert(t.id.as_str(), json(t)?.as_str())
                    .map_err(err)?;
            }
            let mut history = txn.open_table(HISTORY).map_err(err)?;
            for e in &changes.events {
                history.insert(e.seq, json(e)?.as_str()).map_err(err)?;
            }
            if let Some((rule, run)) = &changes.run {
                let mut runs = txn.open_table(RUNS).map_err(err)?;
                runs.insert(rule.as_str(), json(run)?.as_str())
                    .map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }
}
