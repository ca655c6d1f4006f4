//! Alerts and tasks. The rules are part of the catalog (`alerts:` in `metrics/*.yaml`); this
//! module evaluates them on their intervals through the same service every query takes (so the
//! planner, rollups, cache and time budget apply), keeps state in an embedded store, publishes
//! every change to subscribers (the SSE stream) and, optionally, to a webhook.
//!
//! - `state`: the alert state machine (ok > pending > firing > resolved, no_data, error);
//! - `evaluate`: what a KPI rule and a record rule observe;
//! - `store`: redb persistence; `webhook`: signed deliveries with retries; `clock`: time source.

pub mod clock;
mod error;
mod evaluate;
pub mod state;
mod store;
pub mod webhook;

pub use error::AlertError;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::catalog::{AlertCheck, AlertRule};
use crate::net::HttpClient;
use crate::security::{Principal, Scope};
use crate::service::KpiService;
use crate::spec::Label;
use crate::spec::alert::Severity;
use clock::Clock;
use state::{AlertInstance, AlertState, Observation};
use store::{AlertStore, Changes};
use webhook::{Delivered, WebhookConfig};

/// One change, as stored in the history, streamed and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Increasing; the webhook's delivery id.
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub rule: String,
    pub severity: Severity,
    pub label: Label,
    pub path: Map<String, Value>,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Alert {
        from: Option<AlertState>,
        to: AlertState,
        value: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        period: Option<String>,
    },
    Task {
        id: String,
        status: TaskStatus,
        owner: Value,
    },
}

impl AlertEvent {
    pub fn kind(&self) -> &'static str {
        match self.change {
            Change::Alert { .. } => "alert",
            Change::Task { .. } => "task",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    Closed,
}

/// A record that meets a record rule: one task per (rule, record), for the record's owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// `rule/key`: the same record never makes a second task.
    pub id: String,
    pub rule: String,
    pub key: Value,
    pub owner: Value,
    pub path: Map<String, Value>,
    /// The rule's `show` columns, as last seen.
    pub fields: Map<String, Value>,
    pub status: TaskStatus,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// How many times the record started meeting the rule (a reopened task counts again).
    pub times_opened: u32,
}

/// When a rule last ran and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRun {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub error: Option<String>,
    pub elapsed_ms: f64,
}

/// Where an alert engine keeps its state and sends its changes.
pub struct AlertOptions {
    pub store: std::path::PathBuf,
    pub webhook: Option<WebhookConfig>,
}

pub struct AlertEngine {
    service: Arc<KpiService>,
    store: AlertStore,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<AlertEvent>,
    /// Set when the server shuts down: every subscriber's stream ends, so that an open alert
    /// stream does not hold the shutdown.
    closing: tokio::sync::watch::Sender<bool>,
    webhook: Option<(WebhookConfig, HttpClient)>,
    /// One evaluation at a time (scheduler ticks and explicit runs): sequence numbers and
    /// state transitions stay in order.
    evaluating: tokio::sync::Mutex<()>,
    deliveries: Mutex<Vec<tokio::task::JoinHandle<Delivered>>>,
}

/// Tasks listed per rule evaluation at most; beyond it the rule's open tasks are not closed
/// (the unseen rows may still match) and the run reports the cut.
const MAX_TASKS_PER_RULE: usize = 10_000;

impl AlertEngine {
    pub fn open(
        service: Arc<KpiService>,
        clock: Arc<dyn Clock>,
        options: AlertOptions,
    ) -> Result<Arc<Self>, AlertError> {
        let store = AlertStore::open(&options.store)?;
        let (changes, _) = broadcast::channel(1024);
        Ok(Arc::new(Self {
            service,
            store,
            clock,
            changes,
            closing: tokio::sync::watch::Sender::new(false),
            webhook: options.webhook.map(|w| {
                let client = webhook::client(&w);
                (w, client)
            }),
            evaluating: tokio::sync::Mutex::new(()),
            deliveries: Mutex::new(Vec::new()),
        }))
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn rule_names(&self) -> Vec<String> {
        self.service
            .state()
            .catalog()
            .alerts
            .keys()
            .cloned()
            .collect()
    }

    /// The changes as they happen, and a receiver that turns true when streams must end.
    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<AlertEvent>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        (self.changes.subscribe(), self.closing.subscribe())
    }

    /// Alert instances firing now (for `/metrics`).
    pub fn firing(&self) -> usize {
        self.store.alerts().map_or(0, |all| {
            all.iter()
                .filter(|a| a.state == state::AlertState::Firing)
                .count()
        })
    }

    /// Ends every subscriber's stream (the server is shutting down).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Evaluates every rule whose interval has passed since its last run (by the clock); returns
    /// the rules evaluated.
    pub async fn evaluate_due(&self) -> Vec<String> {
        let catalog = self.service.state();
        let now = self.clock.now();
        let runs: BTreeMap<String, RuleRun> = match self.store.runs() {
            Ok(r) => r.into_iter().collect(),
            Err(e) => {
                tracing::error!(error = %e, "alert store unreadable; rules not evaluated");
                return Vec::new();
            }
        };
        let due: Vec<String> = catalog
            .catalog()
            .alerts
            .values()
            .filter(|r| {
                runs.get(&r.name)
                    .is_none_or(|run| (now - run.at).num_seconds() >= r.every_secs)
            })
            .map(|r| r.name.clone())
            .collect();
        for name in &due {
            self.evaluate(name).await;
        }
        due
    }

    /// Evaluates one rule now, records what changed and publishes it.
    pub async fn evaluate(&self, name: &str) -> Option<RuleRun> {
        let _one = self.evaluating.lock().await;
        let catalog = self.service.state();
        let rule = catalog.catalog().alerts.get(name)?;
        let now = self.clock.now();
        let started = std::time::Instant::now();
        let mut changes = Changes::default();
        let outcome = match &rule.check {
            AlertCheck::Kpi { .. } => self.evaluate_kpi(rule, now, &mut changes).await,
            AlertCheck::Record { .. } => self.evaluate_record(rule, now, &mut changes).await,
        };
        let run = RuleRun {
            at: now,
            ok: outcome.is_ok(),
            error: outcome.err().map(|e| e.public_message()),
            elapsed_ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        };
        if let Some(e) = &run.error {
            tracing::warn!(rule = name, error = %e, "alert rule failed");
        }
        changes.run = Some((name.to_string(), run.clone()));
        if let Err(e) = self.store.apply(&changes) {
            tracing::error!(rule = name, error = %e, "alert changes not stored");
            return Some(run);
        }
        for event in changes.events {
            self.publish(event);
        }
        Some(run)
    }

    fn event(
        &self,
        rule: &AlertRule,
        seq: u64,
        at: DateTime<Utc>,
        path: &Map<String, Value>,
        change: Change,
    ) -> AlertEvent {
        AlertEvent {
            seq,
            at,
            rule: rule.name.clone(),
            severity: rule.severity,
            label: rule.label.clone(),
            path: path.clone(),
            change,
        }
    }

    async fn evaluate_kpi(
        &self,
        rule: &AlertRule,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) -> Result<(), AlertError> {
        let AlertCheck::Kpi { pending_secs, .. } = &rule.check else {
            unreachable!("a kpi rule");
        };
        let previous: BTreeMap<String, AlertInstance> = self
            .store
            .alerts()?
            .into_iter()
            .filter(|a| a.rule == rule.name)
            .map(|a| (a.key(), a))
            .collect();
        let (observed, failure) = match evaluate::kpi(&self.service, rule, now).await {
            Ok(o) => (o, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let mut seen: BTreeMap<String, (Map<String, Value>, Observation)> = observed
            .into_iter()
            .map(|(path, o)| (state::instance_key(&rule.name, &path), (path, o)))
            .collect();
        // Members seen before but not now have no data; a failed run puts every known member
        // (or, for a rule never run, the rule itself) in error.
        let known: Vec<&AlertInstance> = previous.values().collect();
        for p in &known {
            let o = match &failure {
                Some(e) => Observation::Error(e.public_message()),
                None => Observation::NoData { period: None },
            };
            seen.entry(p.key()).or_insert_with(|| (p.path.clone(), o));
        }
        if let (Some(e), true) = (&failure, known.is_empty()) {
            seen.insert(
                state::instance_key(&rule.name, &Map::new()),
                (Map::new(), Observation::Error(e.public_message())),
            );
        }
        let mut seq = self.store.next_seq()?;
        for (key, (path, observation)) in seen {
            let before = previous.get(&key);
            let after = state::next(&rule.name, &path, before, observation, now, *pending_secs);
            let from = before.map(|b| b.state);
            if from != Some(after.state) && !(from.is_none() && after.state == AlertState::Ok) {
                let change = Change::Alert {
                    from,
                    to: after.state,
                    value: after.value,
                    period: after.period.clone(),
                };
                changes
                    .events
                    .push(self.event(rule, seq, now, &path, change));
                seq += 1;
            }
            if before != Some(&after) {
                changes.alerts.push(after);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn evaluate_record(
        &self,
        rule: &AlertRule,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) -> Result<(), AlertError> {
        let (rows, complete) =
            evaluate::records(&self.service, rule, now, MAX_TASKS_PER_RULE).await?;
        let mut tasks: BTreeMap<String, Task> = self
            .store
            .tasks()?
            .into_iter()
            .filter(|t| t.rule == rule.name)
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut seq = self.store.next_seq()?;
        let mut matching = BTreeSet::new();
        for row in rows {
            let id = format!("{}/{}", rule.name, value_text(&row.key));
            matching.insert(id.clone());
            let task = match tasks.remove(&id) {
                Some(t) if t.status == TaskStatus::Open => {
                    if t.fields == row.fields && t.path == row.path && t.owner == row.owner {
                        continue; // still open, nothing new
                    }
                    Task {
                        fields: row.fields,
                        path: row.path,
                        owner: row.owner,
                        ..t
                    }
                }
                reopened => {
                    let times = reopened.as_ref().map_or(0, |t| t.times_opened);
                    let task = Task {
                        id: id.clone(),
                        rule: rule.name.clone(),
                        key: row.key,
                        owner: row.owner,
                        path: row.path,
                        fields: row.fields,
                        status: TaskStatus::Open,
                        opened_at: now,
                        closed_at: None,
                        times_opened: times + 1,
                    };
                    self.task_changed(rule, &mut seq, now, &task, changes);
                    task
                }
            };
            changes.tasks.push(task);
        }
        if complete {
            // Open tasks whose records no longer meet the rule close themselves.
            for (_, t) in tasks
                .into_iter()
                .filter(|(id, t)| t.status == TaskStatus::Open && !matching.contains(id))
            {
                let closed = Task {
                    status: TaskStatus::Closed,
                    closed_at: Some(now),
                    ..t
                };
                self.task_changed(rule, &mut seq, now, &closed, changes);
                changes.tasks.push(closed);
            }
        } else {
            tracing::warn!(rule = %rule.name, limit = MAX_TASKS_PER_RULE, "more matching records than listed; open tasks left as they are");
        }
        Ok(())
    }

    /// Records a task's opening or closing (its status now) as the next event.
    fn task_changed(
        &self,
        rule: &AlertRule,
        seq: &mut u64,
        now: DateTime<Utc>,
        task: &Task,
        changes: &mut Changes,
    ) {
        let change = Change::Task {
            id: task.id.clone(),
            status: task.status,
            owner: task.owner.clone(),
        };
        changes
            .events
            .push(self.event(rule, *seq, now, &task.path, change));
        *seq += 1;
    }

    fn publish(&self, event: AlertEvent) {
        if let Some((config, client)) = &self.webhook {
            let (config, client) = (config.clone(), client.clone());
            let body = serde_json::to_vec(&event).expect("events serialise");
            let (seq, kind) = (event.seq, event.kind());
            let handle =
                tokio::spawn(
                    async move { webhook::deliver(&client, &config, seq, kind, &body).await },
                );
            let mut pending = self.deliveries.lock().expect("deliveries");
            pending.retain(|h| !h.is_finished());
            pending.push(handle);
        }
        // No subscriber is not an error.
        let _ = self.changes.send(event);
    }

    /// Waits for the webhook deliveries started so far (tests; shutdown).
    pub async fn flush_deliveries(&self) -> Vec<Delivered> {
        let pending: Vec<_> = std::mem::take(&mut *self.deliveries.lock().expect("deliveries"));
        let mut out = Vec::new();
        for h in pending {
            if let Ok(d) = h.await {
                out.push(d);
            }
        }
        out
    }

    /// Current alert instances a principal may see, most severe first, and the latest changes.
    pub fn alerts(
        &self,
        principal: &Principal,
        rule: Option<&str>,
        state: Option<AlertState>,
        history: usize,
    ) -> Result<AlertsView, AlertError> {
        let catalog = self.service.state();
        let mut alerts: Vec<AlertView> = self
            .store
            .alerts()?
            .into_iter()
            .filter(|a| catalog.catalog().alerts.contains_key(&a.rule))
            .filter(|a| visible(&principal.scope, &a.path))
            .filter(|a| rule.is_none_or(|r| a.rule == r))
            .filter(|a| state.is_none_or(|s| a.state == s))
            .map(|a| {
                let r = &catalog.catalog().alerts[&a.rule];
                let format = match &r.check {
                    AlertCheck::Kpi { metric, .. } => catalog
                        .catalog()
                        .metrics
                        .get(metric)
                        .map(|m| m.format.clone()),
                    AlertCheck::Record { .. } => None,
                };
                AlertView {
                    label: r.label.clone(),
                    severity: r.severity,
                    format,
                    instance: a,
                }
            })
            .collect();
        alerts.sort_by_key(|a| {
            (
                state_rank(a.instance.state),
                std::cmp::Reverse(a.severity),
                a.instance.rule.clone(),
                Value::Object(a.instance.path.clone()).to_string(),
            )
        });
        let history = self.store.history(history, |e| {
            visible(&principal.scope, &e.path)
                && matches!(e.change, Change::Alert { .. })
                && rule.is_none_or(|r| e.rule == r)
        })?;
        let runs = self
            .store
            .runs()?
            .into_iter()
            .filter(|(r, _)| catalog.catalog().alerts.contains_key(r))
            .collect();
        Ok(AlertsView {
            now: self.clock.now(),
            alerts,
            history,
            runs,
        })
    }

    /// Tasks a principal may see: by owner and status, the most severe first, then the newest.
    pub fn tasks(
        &self,
        principal: &Principal,
        owner: Option<&str>,
        status: Option<TaskStatus>,
        rule: Option<&str>,
    ) -> Result<Vec<TaskView>, AlertError> {
        let catalog = self.service.state();
        let mut tasks: Vec<TaskView> = self
            .store
            .tasks()?
            .into_iter()
            .filter(|t| visible(&principal.scope, &t.path))
            .filter(|t| owner.is_none_or(|o| value_text(&t.owner) == o))
            .filter(|t| status.is_none_or(|s| t.status == s))
            .filter(|t| rule.is_none_or(|r| t.rule == r))
            .filter_map(|t| {
                let r = catalog.catalog().alerts.get(&t.rule)?;
                Some(TaskView {
                    label: r.label.clone(),
                    severity: r.severity,
                    task: t,
                })
            })
            .collect();
        // The most severe first, then the newest.
        tasks.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.task.opened_at.cmp(&a.task.opened_at))
                .then(a.task.id.cmp(&b.task.id))
        });
        Ok(tasks)
    }

    /// The scheduler: evaluates due rules every `tick` until the task is dropped.
    pub async fn run(self: Arc<Self>, tick: Duration) {
        loop {
            self.evaluate_due().await;
            tokio::time::sleep(tick).await;
        }
    }
}

/// Whether a principal's scope admits an alert's or task's org path: every level the scope
/// names must be on the path with the same member (a branch head sees the branch's alerts and
/// its RMs' tasks, not the region's alert).
pub fn visible(scope: &Scope, path: &Map<String, Value>) -> bool {
    scope
        .0
        .iter()
        .all(|(level, member)| path.get(level) == Some(&member.to_json()))
}

fn state_rank(s: AlertState) -> u8 {
    match s {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Error => 2,
        AlertState::NoData => 3,
        AlertState::Resolved => 4,
        AlertState::Ok => 5,
    }
}

/// A JSON value as plain text (strings without quotes): task ids, owner filters.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Serialize)]
pub struct AlertView {
    pub label: Label,
    pub severity: Severity,
    /// How the watched metric's values are written (percent, currency...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::spec::FormatSpec>,
    #[serde(flatten)]
    pub instance: AlertInstance,
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub label: Label,
    pub severity: Severity,
    #[serde(flatten)]
    pub task: Task,
}

#[derive(Debug, Serialize)]
pub struct AlertsView {
    /// The alert clock's time.
    pub now: DateTime<Utc>,
    pub alerts: Vec<AlertView>,
    /// Newest state changes first.
    pub history: Vec<AlertEvent>,
    pub runs: BTreeMap<String, RuleRun>,
}
