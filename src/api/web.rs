//! The cockpit's static files, served by the binary itself: `web/index.html` at `/`, `web/app/*`
//! at `/app/*`, and Apache ECharts from `web/node_modules` (installed by npm from the lockfile)
//! at `/vendor/echarts.min.js`. Read and compressed once at startup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::encoding::Precompressed;
use crate::text::hex_prefix;

pub const ECHARTS: &str = "node_modules/echarts/dist/echarts.min.js";

struct Asset {
    content_type: &'static str,
    etag: String,
    body: Precompressed,
}

/// URL path (without the leading slash) -> file.
#[derive(Default)]
pub struct WebAssets {
    files: BTreeMap<String, Asset>,
}

impl WebAssets {
    /// Loads what exists; a missing front end or ECharts is not fatal (the API still serves,
    /// and the page says what to install).
    pub fn load(web_dir: &Path) -> WebAssets {
        let mut assets = WebAssets::default();
        assets.add("index.html", &web_dir.join("index.html"));
        assets.add("vendor/echarts.min.js", &web_dir.join(ECHARTS));
        if let Ok(entries) = std::fs::read_dir(web_dir.join("app")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                assets.add(&format!("app/{name}"), &entry.path());
            }
        }
        if !assets.files.contains_key("vendor/echarts.min.js") {
            tracing::warn!(
                "{} is missing: run `npm ci --prefix web` for the cockpit's charts",
                web_dir.join(ECHARTS).display()
            );
        }
        assets
    }

    fn add(&mut self, url: &str, path: &Path) {
        let Some(content_type) = content_type(path) else {
            return;
        };
        let Ok(bytes) = std::fs::read(path) else {
            return;
        };
        let etag = format!("\"{}\"", hex_prefix(&Sha256::digest(&bytes), 16));
        self.files.insert(
            url.to_string(),
            Asset {
                content_type,
                etag,
                body: Precompressed::new(bytes),
            },
        );
    }

    fn respond(&self, url: &str, headers: &HeaderMap) -> Response {
        match self.files.get(url) {
            Some(a) => a.body.respond(headers, a.content_type, &a.etag),
            None => super::ApiError::NoRoute.into_response(),
        }
    }
}

fn content_type(path: &Path) -> Option<&'static str> {
    Some(match path.extension()?.to_str()? {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => return None,
    })
}

pub fn routes(assets: Arc<WebAssets>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app/{file}", get(app_file))
        .route("/vendor/echarts.min.js", get(echarts))
        .with_state(assets)
}

async fn index(State(assets): State<Arc<WebAssets>>, headers: HeaderMap) -> Response {
    assets.respond("index.html", &headers)
}

async fn app_file(
    State(assets): State<Arc<WebAssets>>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    // Only names loaded at startup are served: no path from the URL reaches the file system.
    assets.respond(&format!("app/{file}"), &headers)
}

async fn echarts(State(assets): State<Arc<WebAssets>>, headers: HeaderMap) -> Response {
    assets.respond("vendor/echarts.min.js", &headers)
}
