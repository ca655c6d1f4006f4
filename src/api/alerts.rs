//! `GET /api/v1/alerts`, `GET /api/v1/tasks` and `GET /api/v1/alerts/stream` (server-sent events
//! of every alert and task change). Behind the gate: each principal sees the alerts and tasks on
//! its own part of the org.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use serde_json::json;

use super::{ApiError, with_audit};
use crate::alerts::state::AlertState;
use crate::alerts::{AlertEngine, AlertEvent, TaskStatus, visible};
use crate::security::Principal;
use crate::security::audit::AuditDetails;
use crate::semantic::QueryError;
use crate::text::clip;

pub fn routes<S: Clone + Send + Sync + 'static>(engine: Arc<AlertEngine>) -> Router<S> {
    Router::new()
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/stream", get(stream))
        .route("/api/v1/alerts/evaluate", post(evaluate))
        .route("/api/v1/tasks", get(tasks))
        .with_state(engine)
}

/// `?name=value` parameters: only `allowed`, each parsed; anything else is a 422 naming it.
fn params<'a>(
    raw: &'a BTreeMap<String, String>,
    allowed: &[&str],
) -> Result<impl Fn(&str) -> Option<&'a str>, QueryError> {
    if let Some(unknown) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(QueryError::invalid(format!(
            "unknown parameter '{}' (parameters: {})",
            clip(unknown),
            allowed.join(", ")
        ))
        .at(clip(unknown)));
    }
    Ok(move |k: &str| raw.get(k).map(String::as_str))
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    name: &str,
    v: Option<&str>,
) -> Result<Option<T>, QueryError> {
    v.map(|s| {
        serde_json::from_value(json!(s)).map_err(|_| {
            QueryError::invalid(format!("'{}' is not a valid {name}", clip(s))).at(name.to_string())
        })
    })
    .transpose()
}

async fn alerts(
    State(engine): State<Arc<AlertEngine>>,
    Extension(principal): Extension<Principal>,
    Query(raw): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = params(&raw, &["rule", "state", "history"])?;
    let state: Option<AlertState> = parse_enum("state", p("state"))?;
    let history = match p("history") {
        None => 50,
        Some(h) => h
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| QueryError::invalid("history is a number up to 1000").at("history"))?,
    };
    let view = engine.alerts(&principal, p("rule"), state, history)?;
    let details = AuditDetails::listing(json!(raw), view.alerts.len());
    Ok(with_audit(Json(view).into_response(), details))
}

async fn tasks(
    State(engine): State<Arc<AlertEngine>>,
    Extension(principal): Extension<Principal>,
    Query(raw): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = params(&raw, &["owner", "status", "rule"])?;
    let status: Option<TaskStatus> = parse_enum("status", p("status"))?;
    let tasks = engine.tasks(&principal, p("owner"), status, p("rule"))?;
    let details = AuditDetails::listing(json!(raw), tasks.len());
    Ok(with_audit(
        Json(json!({ "now": engine.now(), "tasks": tasks })).into_response(),
        details,
    ))
}

/// `POST /api/v1/alerts/evaluate[?rule=name]`: evaluates every rule (or one) now, whatever its
/// interval, and answers how each run went. Only for principals who see the whole bank: a run
/// writes state every reader shares.
async fn evaluate(
    State(engine): State<Arc<AlertEngine>>,
    Extension(principal): Extension<Principal>,
    Query(raw): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = params(&raw, &["rule"])?;
    if !principal.scope.is_all() {
        return Err(QueryError::new(
            crate::semantic::ErrorKind::Forbidden,
            "forbidden",
            "only a principal who sees the whole bank runs the rules",
        )
        .into());
    }
    let names: Vec<String> = match p("rule") {
        Some(r) => vec![r.to_string()],
        None => engine.rule_names(),
    };
    let mut runs = BTreeMap::new();
    for name in names {
        let run = engine.evaluate(&name).await.ok_or_else(|| {
            QueryError::new(
                crate::semantic::ErrorKind::NotFound,
                "unknown_rule",
                format!("no alert rule '{}'", clip(&name)),
            )
            .at("rule")
        })?;
        runs.insert(name, run);
    }
    let details = AuditDetails::listing(json!(raw), runs.len());
    Ok(with_audit(
        Json(json!({ "runs": runs })).into_response(),
        details,
    ))
}

/// Every change the principal may see, as it happens: `event: alert` or `event: task`, the JSON
/// of the change as data, its sequence number as the id.
async fn stream(
    State(engine): State<Arc<AlertEngine>>,
    Extension(principal): Extension<Principal>,
    Extension(streams): Extension<Arc<super::events::OpenStreams>>,
    reserve: Option<Extension<super::ReservePlace>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let ticket = streams.admit(&principal, reserve)?;
    let (receiver, closing) = engine.subscribe();
    Ok(super::events::stream(
        ticket,
        None,
        receiver,
        closing,
        move |e: &AlertEvent| {
            visible(&principal.scope, &e.path)
                .then(|| super::events::json_event(e.kind(), e).id(e.seq.to_string()))
        },
    ))
}
