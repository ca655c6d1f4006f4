//! Dashboards and mobile snapshots over HTTP.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use serde::Serialize;

use super::ApiError;
use super::encoding::{Precompressed, respond};
use crate::dashboard;
use crate::security::Principal;
use crate::security::audit::AuditDetails;
use crate::semantic::QueryError;
use crate::service::KpiService;
use crate::spec::{Grain, Label};

#[derive(Serialize)]
pub struct DashboardSummary {
    pub id: String,
    title: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Label>,
    grain: Grain,
    panels: usize,
    filters: Vec<String>,
}

/// The switcher's list, in order (over HTTP and to agents).
pub fn summaries(catalog: &crate::catalog::Catalog) -> Vec<DashboardSummary> {
    catalog
        .dashboards
        .iter()
        .map(|d| DashboardSummary {
            id: d.id.clone(),
            title: d.title.clone(),
            description: d.description.clone(),
            grain: d.grain,
            panels: d.panels.len(),
            filters: d.filters.clone(),
        })
        .collect()
}

/// `GET /api/v1/dashboards`.
pub async fn list(State(service): State<Arc<KpiService>>) -> Json<Vec<DashboardSummary>> {
    Json(summaries(service.state().catalog()))
}

/// `GET /api/v1/dashboards/{id}?as_of=..&<filter>=a,b`: layout and every panel's data.
pub async fn show(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = dashboard::render(&service, &principal, &id, &params).await?;
    let mut response = respond(
        &headers,
        "application/json",
        to_json(&view)?,
        None,
        "no-store",
    );
    response.extensions_mut().insert(AuditDetails {
        metrics: view
            .panels
            .iter()
            .flat_map(|p| p.layout.metrics.iter().cloned())
            .collect(),
        filters: serde_json::to_value(&params).unwrap_or_default(),
        rows: Some(
            view.panels
                .iter()
                .filter_map(|p| p.result.as_ref())
                .map(|r| r.rows.len() as u64)
                .sum(),
        ),
        cached: Some(view.meta.panels_cached == view.meta.panels),
        ..AuditDetails::default()
    });
    Ok(response)
}

/// `GET /api/v1/snapshot/{id}`: the tiles only, with an ETag known before computing anything.
/// Snapshot bodies by ETag, compressed once per encoding. The tag names everything the body
/// depends on (catalog and data versions, the caller's scope, the parameters, the as-of date),
/// so a stored body is never stale and never another scope's; a phone that revalidates gets a 304,
/// one that does not gets the stored bytes without a query or a compression.
pub struct RenderedSnapshots(moka::future::Cache<String, Arc<Precompressed>>);

impl Default for RenderedSnapshots {
    fn default() -> Self {
        Self(moka::future::Cache::new(1024))
    }
}

pub async fn snapshot(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    Extension(rendered): Extension<Arc<RenderedSnapshots>>,
    Path(id): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let plan = dashboard::snapshot_plan(&service, &principal, &id, &params).await?;
    if super::encoding::not_modified(&headers, &plan.etag) {
        return Ok(respond(
            &headers,
            "application/json",
            Vec::new(),
            Some(&plan.etag),
            "no-cache",
        ));
    }
    let body = match rendered.0.get(&plan.etag).await {
        Some(body) => body,
        None => {
            let snapshot = dashboard::snapshot(&service, &plan).await;
            let body = Arc::new(Precompressed::new(to_json(&snapshot)?));
            // A tile that failed may not fail next time: not kept.
            if snapshot.tiles.iter().all(|t| t.error.is_none()) {
                rendered.0.insert(plan.etag.clone(), body.clone()).await;
            }
            body
        }
    };
    Ok(body.respond(&headers, "application/json", &plan.etag))
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, QueryError> {
    serde_json::to_vec(value).map_err(|e| QueryError::internal(e.to_string()))
}
