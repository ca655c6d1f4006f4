//! `GET /metrics` (Prometheus text format) and the layer that counts every API request. Gauges
//! are read from the service when scraped; counters and histograms are recorded as things
//! happen (`telemetry`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::alerts::AlertEngine;
use crate::service::KpiService;

/// Counts the request by its route template, method and status, and times it.
pub async fn track(State(service): State<Arc<KpiService>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    // A client may send any token as a method: the label keeps to the standard ones.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let t = service.telemetry();
    t.http_requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    t.http_duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The scrape: gauges brought up to date, then everything in the text format.
pub async fn scrape(service: Arc<KpiService>, alerts: Option<Arc<AlertEngine>>) -> Response {
    let t = service.telemetry();
    let cache = service.cache();
    cache.settle().await;
    t.cache_bytes.set(cache.weighted_size() as i64);
    t.cache_entries.set(cache.entry_count() as i64);
    t.engine_memory.set(service.engine_memory() as i64);
    let catalog = service.state();
    t.rollup_rows.reset();
    for r in catalog.catalog().rollups.values() {
        t.rollup_rows
            .with_label_values(&[r.name.as_str(), r.refresh.how])
            .set(r.rows as i64);
    }
    t.rollups_not_built
        .set(catalog.catalog().rollups_not_built.len() as i64);
    t.data_refresh_failed
        .set(i64::from(service.failed_refresh().is_some()));
    t.catalog_reloads
        .set(service.reload_status().reloads as i64);
    if let Some(alerts) = alerts {
        t.alerts_firing.set(alerts.firing() as i64);
    }
    let (body, content_type) = t.render();
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}
