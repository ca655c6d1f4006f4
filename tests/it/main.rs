//! All integration tests in one binary: each test binary links DataFusion again, so few binaries
//! keep builds fast. Modules by subject.

mod alerts;
mod calendar;
mod catalog_errors;
mod dashboards;
mod datagen;
mod engine;
mod export;
mod golden;
mod hostile;
mod http;
mod layers;
mod profile;
mod rollups;
mod security;
mod semantics;
mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpilens::config::Settings;
use kpilens::semantic::QueryRequest;
use kpilens::service::{KpiService, QueryResponse};
use serde_json::Value;

/// The repository root, read at run time: the target dir is shared between checkouts (CI keeps
/// it), and a test binary reused from another checkout must not look in that one's folder.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixture_dir() -> PathBuf {
    repo_dir().join("tests/fixtures/golden")
}

pub fn settings_for(project: &Path) -> Settings {
    Settings {
        project_dir: project.to_path_buf(),
        data_dir: project.join("data"),
        warm_up: false,
        alerts_tick_ms: 0,
        // The fixture's data is in the repository: store no rollups beside it.
        no_rollup_store: true,
        ..Settings::default()
    }
}

/// The demo project (this repository's metrics/ and sql/) over the hand-checked bank fixture,
/// converted to Parquet as `kpilens test` does. Keep the TempDir alive while the data is used.
pub async fn bank_settings() -> (tempfile::TempDir, Settings) {
    let data = tempfile::tempdir().expect("temp dir");
    let sources = kpilens::catalog::ProjectSources::read(&repo_dir()).expect("project reads");
    kpilens::metric_tests::materialize_fixture(
        &sources,
        &repo_dir().join("tests/fixtures/bank"),
        data.path(),
    )
    .await
    .expect("fixture converts");
    let settings = repo_project_over(data.path());
    (data, settings)
}

/// This repository's project over a data directory; warm-up off, so tests count engine runs.
fn repo_project_over(data: &Path) -> Settings {
    Settings {
        project_dir: repo_dir(),
        data_dir: data.to_path_buf(),
        warm_up: false,
        // Tests run the alert rules themselves, on a clock they set.
        alerts_tick_ms: 0,
        ..Settings::default()
    }
}

/// The repository's project over the default demo bank (scale 1, seed 42), as `kpilens demo`
/// serves it. Keep the TempDir alive while the data is used.
pub fn demo_settings() -> (tempfile::TempDir, Settings) {
    let data = tempfile::tempdir().expect("temp dir");
    kpilens::datagen::generate(&kpilens::datagen::GenerateOptions {
        out: data.path().to_path_buf(),
        scale: 1.0,
        seed: 42,
        daily_days: kpilens::datagen::DAILY_DAYS,
    })
    .expect("the demo bank generates");
    let settings = repo_project_over(data.path());
    (data, settings)
}

pub async fn fixture_service() -> KpiService {
    KpiService::open(&settings_for(&fixture_dir()))
        .await
        .expect("fixture project validates")
}

/// A writable copy of the fixture project, with extra or replaced files (path relative to the
/// project -> content). An empty content deletes the file.
pub fn temp_project(changes: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&fixture_dir(), dir.path());
    for (rel, content) in changes {
        let path = dir.path().join(rel);
        if content.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, content).expect("write");
        }
    }
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

pub fn request(json: Value) -> QueryRequest {
    serde_json::from_value(json).expect("valid request")
}

pub async fn run(service: &KpiService, json: Value) -> QueryResponse {
    service
        .query(&kpilens::security::Principal::local(), &request(json))
        .await
        .unwrap_or_else(|e| panic!("query failed: {e}"))
}

/// Rows as maps from column name to value, for readable assertions.
pub fn records(r: &QueryResponse) -> Vec<serde_json::Map<String, Value>> {
    r.result
        .rows
        .iter()
        .map(|row| {
            r.result
                .schema
                .iter()
                .map(|f| f.name.clone())
                .zip(row.iter().cloned())
                .collect()
        })
        .collect()
}

pub fn totals(r: &QueryResponse) -> serde_json::Map<String, Value> {
    let t = r.result.totals.as_ref().expect("totals present");
    r.result
        .schema
        .iter()
        .map(|f| f.name.clone())
        .zip(t.iter().cloned())
        .collect()
}

/// Asserts a numeric cell equals `expected` (to 1e-9), or is null when `expected` is None.
#[track_caller]
pub fn assert_num(actual: &Value, expected: Option<f64>) {
    match (actual, expected) {
        (Value::Null, None) => {}
        (Value::Number(n), Some(e)) => {
            let a = n.as_f64().expect("number");
            assert!((a - e).abs() < 1e-9, "expected {e}, got {a}");
        }
        (a, e) => panic!("expected {e:?}, got {a}"),
    }
}

pub type Shared = Arc<KpiService>;

/// Equal JSON, numbers to a relative `tolerance` (float sums differ in the last bits with the
/// order they are added in; serde_json parses floats to within an ulp).
pub fn close(a: &Value, b: &Value, tolerance: f64) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q, tolerance))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| close(v, w, tolerance)))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= tolerance * x.abs().max(1.0)
        }
        _ => a == b,
    }
}
