//! What changed in the serving state, as it happens (`GET /api/v1/events`): the data under some
//! tables, or the definitions. Published when the new state is swapped in, so a client that
//! refetches on an event gets answers over the new state (computed once, then cached).

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::state::DataState;

/// A change of the serving state. The SSE event's name is [`StateChange::name`], its data the
/// JSON of the variant.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StateChange {
    /// New data under these tables (their new versions); the catalog's definitions are the same.
    Data {
        tables: Vec<TableVersion>,
        #[serde(flatten)]
        now: StateNow,
    },
    /// New definitions (metrics, models, dashboards) were validated and are serving.
    Catalog(StateNow),
}

#[derive(Debug, Clone, Serialize)]
pub struct TableVersion {
    pub table: String,
    pub version: String,
}

impl StateChange {
    pub fn name(&self) -> &'static str {
        match self {
            StateChange::Data { .. } => "data_changed",
            StateChange::Catalog(_) => "catalog_changed",
        }
    }
}

/// The state serving now: what a new subscriber is told first, and what each change carries.
#[derive(Debug, Clone, Serialize)]
pub struct StateNow {
    pub catalog_version: String,
    pub loaded_at: String,
}

impl StateNow {
    pub fn of(state: &DataState) -> Self {
        Self {
            catalog_version: state.catalog().version.clone(),
            loaded_at: rfc3339(state.loaded_at()),
        }
    }
}

/// The publisher. A slow subscriber that falls `CAPACITY` changes behind is told it lagged (and
/// refetches everything) rather than holding the others back.
pub(super) struct StateEvents {
    changes: broadcast::Sender<StateChange>,
    /// Turns true when the server shuts down: every stream ends, so the shutdown is not held.
    closing: watch::Sender<bool>,
}

const CAPACITY: usize = 64;

impl StateEvents {
    pub(super) fn new() -> Self {
        Self {
            changes: broadcast::Sender::new(CAPACITY),
            closing: watch::Sender::new(false),
        }
    }

    pub(super) fn publish(&self, change: StateChange) {
        // No subscriber is not an error: nobody has the cockpit open.
        let _ = self.changes.send(change);
    }

    pub(super) fn subscribe(&self) -> (broadcast::Receiver<StateChange>, watch::Receiver<bool>) {
        (self.changes.subscribe(), self.closing.subscribe())
    }

    pub(super) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Event times: UTC, milliseconds.
pub(super) fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
