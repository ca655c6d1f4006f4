//! The alert state machine, pure: an observation and the previous state give the next state and,
//! when the state changes, the event to record and deliver.
//!
//! ok ──holds──▶ pending ──held for `pending`──▶ firing ──stops holding──▶ resolved
//! (with `pending: 0` a holding condition fires at once; a value that cannot be computed is
//! no_data; an evaluation that fails puts the rule's instances in error.)

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Ok,
    Pending,
    Firing,
    Resolved,
    NoData,
    Error,
}

/// One rule's alert for one member (a branch, a region, or the whole bank).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInstance {
    pub rule: String,
    /// The member's path from the top of its hierarchy (`{region: 西北, branch: 西安分行}`);
    /// empty for a bank-wide rule. Scopes are checked against it.
    pub path: serde_json::Map<String, Value>,
    pub state: AlertState,
    /// When the current state began.
    pub since: DateTime<Utc>,
    /// The value observed last, the comparison value (for changes), and the period they are for.
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    pub evaluated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AlertInstance {
    /// The store key: rule and member path.
    pub fn key(&self) -> String {
        instance_key(&self.rule, &self.path)
    }
}

pub fn instance_key(rule: &str, path: &serde_json::Map<String, Value>) -> String {
    format!("{rule}\u{1f}{}", Value::Object(path.clone()))
}

/// What one evaluation saw for one member.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Value {
        value: f64,
        compared: Option<f64>,
        holds: bool,
        period: String,
    },
    NoData {
        period: Option<String>,
    },
    Error(String),
}

/// The next state of one instance. `previous` is None for a member seen the first time.
pub fn next(
    rule: &str,
    path: &serde_json::Map<String, Value>,
    previous: Option<&AlertInstance>,
    seen: Observation,
    now: DateTime<Utc>,
    pending_secs: i64,
) -> AlertInstance {
    let was = previous.map(|p| p.state);
    let held_since = previous
        .filter(|p| p.state == AlertState::Pending)
        .map(|p| p.since);
    let (state, value, compared, period, error) = match seen {
        Observation::Value {
            value,
            compared,
            holds,
            period,
        } => {
            let state = match (holds, was) {
                (true, Some(AlertState::Firing)) => AlertState::Firing,
                (true, Some(AlertState::Pending)) => {
                    let since = held_since.expect("pending has a start");
                    if (now - since).num_seconds() >= pending_secs {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    }
                }
                (true, _) if pending_secs == 0 => AlertState::Firing,
                (true, _) => AlertState::Pending,
                (false, Some(AlertState::Firing)) => AlertState::Resolved,
                (false, Some(AlertState::Resolved)) => AlertState::Resolved,
                (false, _) => AlertState::Ok,
            };
            (state, Some(value), compared, Some(period), None)
        }
        Observation::NoData { period } => (AlertState::NoData, None, None, period, None),
        Observation::Error(e) => (AlertState::Error, None, None, None, Some(e)),
    };
    let since = match previous {
        Some(p) if p.state == state => p.since,
        _ => now,
    };
    AlertInstance {
        rule: rule.to_string(),
        path: path.clone(),
        state,
        since,
        value,
        compared,
        period,
        evaluated_at: now,
        error,
    }
}
