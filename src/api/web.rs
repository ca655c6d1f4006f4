//! The cockpit's static files: `index.html` at `/`, `app/*` at `/app/*`, and Apache ECharts at
//! `/vendor/echarts.min.js`. Embedded in the binary at build time (see `build.rs`), so a server
//! installed anywhere serves its cockpit; `--web-dir` serves them from a folder instead (front-end
//! work without rebuilding). Compressed once at startup.

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

/// ECharts, vendored in the repository (web/vendor/README.md says which build).
const ECHARTS: &str = "vendor/echarts.min.js";

#[allow(dead_code)] // CONTENT_HASH is there to change the source when an asset changes
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

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
    /// The embedded cockpit, or the one in `web_dir`. A `web_dir` without the front end or
    /// ECharts is not fatal: the API still serves, and the page says what is missing.
    pub fn load(web_dir: Option<&Path>) -> WebAssets {
        let mut assets = WebAssets::default();
        match web_dir {
            Some(dir) => {
                assets.add_file("index.html", &dir.join("index.html"));
                assets.add_file(ECHARTS, &dir.join(ECHARTS));
                if let Ok(entries) = std::fs::read_dir(dir.join("app")) {
                    for entry in entries.flatten() {
                        let name = entry.file_name().to_string_lossy().to_string();
                        assets.add_file(&format!("app/{name}"), &entry.path());
                    }
                }
            }
            None => {
                for (url, bytes) in embedded::EMBEDDED {
                    assets.add(url, bytes.to_vec());
                }
            }
        }
        if !assets.files.contains_key(ECHARTS) {
            tracing::warn!(
                "ECharts is missing from --web-dir: copy web/vendor/echarts.min.js into its vendor/ folder for the cockpit's charts"
            );
        }
        assets
    }

    fn add_file(&mut self, url: &str, path: &Path) {
        if self.files.contains_key(url) {
            return;
        }
        if let Ok(bytes) = std::fs::read(path) {
            self.add(url, bytes);
        }
    }

    fn add(&mut self, url: &str, bytes: Vec<u8>) {
        let Some(content_type) = content_type(Path::new(url)) else {
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
        .layer(axum::middleware::map_response(with_page_policy))
}

/// What the cockpit's page may do (its token sits in session storage): run only its own scripts
/// (no inline script, no eval), talk only to this server, never be framed (clickjacking), send
/// no referrer, and have its files read as the types they are. Styles may be inline: ECharts
/// styles its tooltips so, and a style cannot run code.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

async fn with_page_policy(mut response: Response) -> Response {
    use axum::http::HeaderValue;
    use axum::http::header::{
        CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
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
