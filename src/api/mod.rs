//! HTTP: axum routes over the shared [`KpiService`]. Handlers only translate; the work happens
//! in the service.

mod catalog;
mod dashboards;
pub mod encoding;
mod error;
pub mod web;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tower_http::trace::TraceLayer;

pub use catalog::CatalogView;
pub use error::{ApiError, status_of};

use std::collections::BTreeMap;

use crate::semantic::listing::DrillThroughRequest;
use crate::semantic::{ErrorKind, QueryError, QueryRequest};
use crate::service::KpiService;

/// The API and the cockpit's files (`web`), one router.
pub fn router(service: Arc<KpiService>, web: Arc<web::WebAssets>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/catalog", get(catalog))
        .route("/api/v1/query", post(query))
        .route("/api/v1/explain", post(explain))
        .route("/api/v1/drill_through", post(drill_through))
        .route("/api/v1/hierarchies/{hierarchy}/members", get(members))
        .route("/api/v1/dashboards", get(dashboards::list))
        .route("/api/v1/dashboards/{id}", get(dashboards::show))
        .route("/api/v1/snapshot/{id}", get(dashboards::snapshot))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
        .merge(web::routes(web))
}

async fn healthz(State(service): State<Arc<KpiService>>) -> Json<serde_json::Value> {
    service.cache().settle().await;
    let catalog = service.catalog();
    Json(json!({
        "status": "ok",
        "catalog_version": catalog.version,
        "metrics": catalog.metrics.len(),
        "cache": { "entries": service.cache().entry_count(), "bytes": service.cache().weighted_size() },
        "engine_runs": service.engine_runs(),
        "data_refresh_error": service.failed_refresh().await,
    }))
}

async fn catalog(State(service): State<Arc<KpiService>>) -> Json<CatalogView> {
    Json(CatalogView::of(&service.catalog()))
}

async fn query(
    State(service): State<Arc<KpiService>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: QueryRequest = parse_body(body)?;
    let response = service.query(&req).await?;
    Ok(Json(response).into_response())
}

async fn explain(
    State(service): State<Arc<KpiService>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: QueryRequest = parse_body(body)?;
    Ok(Json(service.explain(&req).await?).into_response())
}

async fn drill_through(
    State(service): State<Arc<KpiService>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: DrillThroughRequest = parse_body(body)?;
    Ok(Json(service.drill_through(&req).await?).into_response())
}

/// `GET /api/v1/hierarchies/org/members?level=branch&region=西北`: the other parameters are
/// ancestors of the level.
async fn members(
    State(service): State<Arc<KpiService>>,
    Path(hierarchy): Path<String>,
    Query(mut params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let level = params
        .remove("level")
        .ok_or_else(|| QueryError::invalid("give the level to list: ?level=branch").at("level"))?;
    Ok(Json(service.members(&hierarchy, &level, &params).await?).into_response())
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "no_route", "message": "no such route" } })),
    )
}

/// JSON body -> DTO, with the path of the offending field in the error (`filters[0].op`).
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, QueryError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            QueryError::new(
                ErrorKind::TooLarge,
                "body_too_large",
                "the request body exceeds the configured limit",
            )
        } else {
            QueryError::malformed(format!("cannot read the request body: {rejection}"))
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let err = QueryError::malformed(format!("invalid request: {}", e.inner()));
        if path == "." { err } else { err.at(path) }
    })?;
    de.end().map_err(|e| {
        QueryError::malformed(format!("trailing characters after the JSON body: {e}"))
    })?;
    Ok(value)
}
