//! HTTP: axum routes over the shared [`KpiService`]. Handlers only translate; the work happens
//! in the service.

mod alerts;
mod body;
mod catalog;
mod dashboards;
pub mod encoding;
mod error;
mod events;
pub mod guard;
pub mod mcp;
mod metrics;
pub mod web;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::trace::TraceLayer;

pub use catalog::CatalogView;
pub use error::ApiError;
pub use events::{OpenStreams, StreamLimits};

/// A request extension the transport sets on requests that came on a reserve connection (one
/// short request while every ordinary connection is taken): served, but not an event stream.
#[derive(Debug, Clone, Copy)]
pub struct ReservePlace;

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;

use crate::catalog::RollupForm;
use crate::security::Principal;
use crate::security::audit::AuditDetails;
use crate::semantic::listing::DrillThroughRequest;
use crate::semantic::{QueryError, QueryRequest};
use crate::service::KpiService;
use body::JsonBody;

/// The API and the cockpit's files (`web`), one router. Every route that reads data or tells of
/// the project's files sits behind the gate (authentication, request rate, audit); health, the
/// catalog's definitions, the OpenAPI document and the static files do not, and show no paths
/// or column names.
pub fn router(
    service: Arc<KpiService>,
    gate: Arc<guard::Gate>,
    web: Arc<web::WebAssets>,
    extra: Router<Arc<KpiService>>,
    max_body_bytes: usize,
    alert_engine: Option<Arc<crate::alerts::AlertEngine>>,
    // `/metrics` here (token-free), or on a separate listener (`metrics_router`).
    metrics_here: bool,
) -> Router {
    let alert_routes = match &alert_engine {
        Some(engine) => alerts::routes(engine.clone()),
        None => Router::new(),
    };
    let metrics = match metrics_here {
        true => metrics_router(service.clone(), alert_engine),
        false => Router::new(),
    };
    let data = Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/explain", post(explain))
        .route("/api/v1/drill_through", post(drill_through))
        .route("/api/v1/export", post(export))
        .route("/api/v1/customers/{id}", get(customer))
        .route("/api/v1/hierarchies/{hierarchy}/members", get(members))
        .route("/api/v1/dashboards", get(dashboards::list))
        .route("/api/v1/dashboards/{id}", get(dashboards::show))
        .route("/api/v1/snapshot/{id}", get(dashboards::snapshot))
        // Errors name files, columns and paths: for signed-in analysts and IT, not the world.
        .route("/api/v1/catalog/status", get(catalog_status))
        .route("/api/v1/events", get(events::changes))
        .nest_service("/mcp", mcp::service(service.clone(), max_body_bytes))
        .merge(alert_routes)
        .layer(Extension(
            Arc::new(dashboards::RenderedSnapshots::default()),
        ))
        .layer(Extension(gate.streams.clone()))
        .route_layer(axum::middleware::from_fn_with_state(gate, guard::guard));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/catalog", get(catalog))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(data)
        .merge(extra)
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            metrics::track,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(service.clone())
        // Outside the request trace: a balancer polls it, and its 503 while rollups build is an
        // answer, not a failure to log as an error.
        .merge(
            Router::new()
                .route("/readyz", get(readyz))
                .with_state(service),
        )
        .merge(web::routes(web))
        .merge(metrics)
}

/// What the port answers while the service opens (`server::Opening`): `/healthz` says the
/// process is alive and opening; every other route, `/readyz` included, is a 503 `opening`.
pub fn opening_router() -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "opening" })) }),
        )
        .fallback(|| async { ApiError::Opening })
}

/// `GET /metrics` alone: what a separate metrics listener serves.
pub fn metrics_router(
    service: Arc<KpiService>,
    alert_engine: Option<Arc<crate::alerts::AlertEngine>>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || metrics::scrape(service.clone(), alert_engine.clone())),
    )
}

/// The audit details of a response, attached for the gate.
fn with_audit(mut response: Response, details: AuditDetails) -> Response {
    response.extensions_mut().insert(details);
    response
}

async fn healthz(State(service): State<Arc<KpiService>>) -> Json<serde_json::Value> {
    service.cache().settle().await;
    let catalog = service.state();
    let (watch_mode, scans) = service.data_watch();
    Json(json!({
        "status": "ok",
        "catalog_version": catalog.catalog().version,
        "metrics": catalog.catalog().metrics.len(),
        "cache": { "entries": service.cache().entry_count(), "bytes": service.cache().weighted_size() },
        "engine_runs": service.engine_runs(),
        "data_watch": { "mode": watch_mode, "scans": scans },
        "warm_ups": service.warm_ups(),
        // Which tables failed to load, not why: the reasons name paths and columns, and are at
        // the signed-in `/api/v1/catalog/status`.
        "data_refresh_error": service.failed_refresh().map(|f| json!({
            "tables": f.data.iter()
                .filter(|(t, v)| catalog.catalog().tables.get(t).is_none_or(|s| s.version != *v))
                .map(|(t, _)| t)
                .collect::<Vec<_>>(),
        })),
    }))
}

/// Readiness for a load balancer: 200 once every pre-aggregation of the serving state is
/// current, else 503 naming those still building (the server answers meanwhile, from the
/// models; `/healthz` is the liveness check).
async fn readyz(State(service): State<Arc<KpiService>>) -> Response {
    let (ready, pending) = service.rollups_ready();
    let body = Json(json!({
        "status": if ready { "ready" } else { "building" },
        "rollups_building": pending,
    }));
    match ready {
        true => body.into_response(),
        false => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            body,
        )
            .into_response(),
    }
}

/// The OpenAPI 3 document of every route (kept by hand next to the routes; a test checks that
/// each documented path is served and each route is documented).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The document with the serving catalog's names as enums (metrics, dimensions, hierarchies,
/// levels, drillable models, dashboards), so clients and fuzzers can build valid requests.
async fn openapi(State(service): State<Arc<KpiService>>) -> Json<serde_json::Value> {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let c = service.state();
    let names = |it: &mut dyn Iterator<Item = &String>| -> serde_json::Value {
        it.map(|s| json!(s)).collect()
    };
    let members = "/paths/~1api~1v1~1hierarchies~1{hierarchy}~1members/get/parameters";
    let enums = [
        (
            "/components/schemas/QueryRequest/properties/metrics/items",
            names(&mut c.catalog().metrics.keys()),
        ),
        (
            "/components/schemas/QueryRequest/properties/dimensions/items",
            names(&mut c.catalog().dimensions.keys()),
        ),
        (
            "/components/schemas/Filter/properties/dimension",
            names(&mut c.catalog().dimensions.keys()),
        ),
        (
            "/components/schemas/Drill/properties/hierarchy",
            names(&mut c.catalog().hierarchies.keys()),
        ),
        (
            "/components/schemas/DrillThroughRequest/properties/model",
            names(
                &mut c
                    .catalog()
                    .models
                    .values()
                    .filter(|m| !m.drill_through.is_empty())
                    .map(|m| &m.name),
            ),
        ),
        (
            "/components/parameters/DashboardId/schema",
            names(&mut c.catalog().dashboards.iter().map(|d| &d.id)),
        ),
        (
            "/components/schemas/ExportRequest/properties/dashboard",
            names(&mut c.catalog().dashboards.iter().map(|d| &d.id)),
        ),
        (
            &format!("{members}/0/schema"),
            names(&mut c.catalog().hierarchies.keys()),
        ),
        (
            &format!("{members}/1/schema"),
            names(
                &mut c
                    .catalog()
                    .hierarchies
                    .values()
                    .flatten()
                    .collect::<BTreeSet<_>>()
                    .into_iter(),
            ),
        ),
    ];
    for (pointer, values) in enums {
        if let Some(schema) = doc.pointer_mut(pointer) {
            schema["enum"] = values;
        }
    }
    Json(doc)
}

/// The serving catalog's version and the last definition change that failed to validate.
async fn catalog_status(State(service): State<Arc<KpiService>>) -> Json<serde_json::Value> {
    let catalog = service.state();
    let rollups: Vec<serde_json::Value> = catalog
        .catalog()
        .rollups
        .values()
        .map(|r| {
            let (form, holds) = match &r.form {
                RollupForm::Measures { rolled, .. } => {
                    ("measures", json!(rolled.keys().collect::<Vec<_>>()))
                }
                RollupForm::Churn { pairs, .. } => {
                    ("churn", json!({"snapshot_pairs": pairs.len()}))
                }
                RollupForm::Funnel { metric } => ("funnel", json!(metric)),
                RollupForm::Cohort { metric, .. } => ("cohort", json!(metric)),
            };
            json!({"name": r.name, "model": r.base, "form": form, "holds": holds,
                   "rows": r.rows, "build_ms": r.build_ms, "refresh": r.refresh})
        })
        .collect();
    Json(json!({
        "catalog": service.reload_status(),
        "data_refresh_error": service.failed_refresh(),
        "rollups": rollups,
        "rollups_not_built": catalog.catalog().rollups_not_built,
        "materialized": catalog.catalog().materialized,
    }))
}

async fn catalog(State(service): State<Arc<KpiService>>) -> Json<CatalogView> {
    Json(CatalogView::of(service.state().catalog()))
}

async fn query(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let response = service.query(&principal, &req).await?;
    let details = AuditDetails {
        rows: Some(response.result.rows.len() as u64),
        cached: Some(response.meta.served_by == "cache"),
        ..AuditDetails::of_query(&req)
    };
    Ok(with_audit(Json(response).into_response(), details))
}

async fn explain(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Response, ApiError> {
    let details = AuditDetails::of_query(&req);
    let plan = service.explain(&principal, &req).await?;
    Ok(with_audit(Json(plan).into_response(), details))
}

async fn drill_through(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<DrillThroughRequest>,
) -> Result<Response, ApiError> {
    let page = service.drill_through(&principal, &req).await?;
    let details = AuditDetails {
        metrics: vec![format!("model:{}", req.model)],
        cached: Some(false),
        ..AuditDetails::listing(
            json!({ "drill": req.drill, "filters": req.filters }),
            page.rows.len(),
        )
    };
    Ok(with_audit(Json(page).into_response(), details))
}

/// `POST /api/v1/export`: the file, as an attachment.
async fn export(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<crate::export::ExportRequest>,
) -> Result<Response, ApiError> {
    let file = crate::export::export(&service, &principal, &req).await?;
    let details = AuditDetails {
        metrics: file.subjects.clone(),
        cached: Some(false),
        ..AuditDetails::listing(
            json!({ "format": req.format, "dashboard": req.dashboard, "panel": req.panel, "params": req.params, "query": req.query.as_ref().map(|q| json!({"dimensions": q.dimensions, "filters": q.filters})), "drill_through": req.drill_through.as_ref().map(|d| json!({"model": d.model, "drill": d.drill, "filters": d.filters})) }),
            file.rows,
        )
    };
    let disposition = format!("attachment; filename=\"{}.{}\"", file.name, file.extension);
    let response = (
        [
            (
                axum::http::header::CONTENT_TYPE,
                file.content_type.to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
            (axum::http::header::CACHE_CONTROL, "no-store".to_string()),
        ],
        file.bytes,
    )
        .into_response();
    Ok(with_audit(response, details))
}

/// `GET /api/v1/customers/42`: the 360° customer view.
async fn customer(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let profile = service.customer_profile(&principal, &id).await?;
    let details = AuditDetails {
        metrics: vec!["profile".to_string()],
        cached: Some(false),
        ..AuditDetails::listing(
            json!({ "customer": profile.customer }),
            profile.sections.iter().map(|s| s.rows.len()).sum(),
        )
    };
    Ok(with_audit(Json(profile).into_response(), details))
}

/// `GET /api/v1/hierarchies/org/members?level=branch&region=西北`: the other parameters are
/// ancestors of the level.
async fn members(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    Path(hierarchy): Path<String>,
    Query(mut params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let level = params
        .remove("level")
        .ok_or_else(|| QueryError::invalid("give the level to list: ?level=branch").at("level"))?;
    let members = service
        .members(&principal, &hierarchy, &level, &params)
        .await?;
    let details = AuditDetails {
        dimensions: vec![level],
        cached: Some(false),
        ..AuditDetails::listing(json!(params), members.members.len())
    };
    Ok(with_audit(Json(members).into_response(), details))
}

async fn not_found() -> ApiError {
    ApiError::NoRoute
}
