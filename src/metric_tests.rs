//! `kpilens test`: the golden-value tests analysts declare next to their metrics (`tests:` in
//! `metrics/*.yaml`). Each names a fixture directory laid out like the data directory, a query,
//! and the numbers it must give. Fixture tables may be CSV where the model reads Parquet, so that
//! a fixture stays readable and checkable by hand: they are converted into a temporary data
//! directory (timestamps without a zone are taken as UTC), and the project is loaded over it.
//! A test without a fixture reads the configured data folder as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::catalog::ProjectSources;
use crate::config::Settings;
use crate::semantic::QueryRequest;
use crate::service::{KpiService, QueryResponse};
use crate::spec::{Source, TestSpec};

#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub name: String,
    pub file: String,
    /// Empty when the test passed.
    pub failures: Vec<String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every test of the project. `settings` supplies everything but the fixtures' data
/// directories (tests without a fixture read `settings.data_dir`).
pub async fn run_all(settings: &Settings) -> Result<Vec<TestOutcome>, String> {
    let sources = ProjectSources::read(&settings.project_dir).map_err(|e| e.to_string())?;
    let mut tests: BTreeMap<String, (String, TestSpec)> = BTreeMap::new();
    for (file, def) in &sources.definitions {
        for (name, spec) in &def.tests {
            tests.insert(name.clone(), (file.clone(), spec.clone()));
        }
    }
    let mut by_fixture: BTreeMap<Option<String>, Vec<(String, String, TestSpec)>> = BTreeMap::new();
    for (name, (file, spec)) in tests {
        by_fixture
            .entry(spec.fixture.clone())
            .or_default()
            .push((name, file, spec));
    }
    let mut outcomes = Vec::new();
    for (fixture, tests) in by_fixture {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let loaded = async {
            let s = match &fixture {
                Some(fixture) => {
                    materialize_fixture(&sources, &settings.project_dir.join(fixture), data.path())
                        .await?;
                    Settings {
                        data_dir: data.path().to_path_buf(),
                        ..settings.clone()
                    }
                }
                // The real data is read as it is: nothing stored beside it.
                None => Settings {
                    no_rollup_store: true,
                    ..settings.clone()
                },
            };
            let over = match &fixture {
                Some(f) => format!("fixture {f}"),
                None => format!("the data folder {}", s.data_dir.display()),
            };
            KpiService::open(&s)
                .await
                .map_err(|e| format!("the project does not load over {over}:\n{e}"))
        }
        .await;
        for (name, file, spec) in tests {
            let failures = match &loaded {
                Err(e) => vec![e.clone()],
                Ok(service) => run_one(service, &spec).await,
            };
            outcomes.push(TestOutcome {
                name,
                file,
                failures,
            });
        }
    }
    Ok(outcomes)
}

async fn run_one(service: &KpiService, spec: &TestSpec) -> Vec<String> {
    let req: QueryRequest = match serde_json::from_value(spec.query.clone()) {
        Ok(r) => r,
        Err(e) => return vec![format!("query: {e}")],
    };
    match service
        .query(&crate::security::Principal::local(), &req)
        .await
    {
        Err(e) => vec![format!("query failed: {e}")],
        Ok(response) => check(&response, spec),
    }
}

/// Every expected cell, compared; numbers within a relative tolerance.
pub fn check(response: &QueryResponse, spec: &TestSpec) -> Vec<String> {
    let tolerance = spec.expect.tolerance.unwrap_or(1e-9);
    let schema = response.result.column_names();
    let mut failures = Vec::new();
    let compare = |failures: &mut Vec<String>,
                   place: &str,
                   row: &[Value],
                   expected: &BTreeMap<String, Value>| {
        for (column, want) in expected {
            let Some(i) = schema.iter().position(|c| c == column) else {
                failures.push(format!(
                    "{place}: no column '{column}' (columns: {schema:?})"
                ));
                continue;
            };
            if !same(&row[i], want, tolerance) {
                failures.push(format!("{place}.{column}: expected {want}, got {}", row[i]));
            }
        }
    };
    if let Some(rows) = &spec.expect.rows {
        let got = &response.result.rows;
        if got.len() != rows.len() {
            compare_rows_len(&mut failures, rows.len(), got);
        }
        for (i, (want, row)) in rows.iter().zip(got).enumerate() {
            compare(&mut failures, &format!("rows[{i}]"), row, want);
        }
    }
    if let Some(totals) = &spec.expect.totals {
        match &response.result.totals {
            Some(t) => compare(&mut failures, "totals", t, totals),
            None => failures.push("totals: the result has none".into()),
        }
    }
    failures
}

fn compare_rows_len(failures: &mut Vec<String>, want: usize, got: &[Vec<Value>]) {
    let shown: Vec<String> = got.iter().take(20).map(|r| format!("{r:?}")).collect();
    failures.push(format!(
        "expected {want} rows, got {}:\n      {}",
        got.len(),
        shown.join("\n      ")
    ));
}

fn same(got: &Value, want: &Value, tolerance: f64) -> bool {
    match (got.as_f64(), want.as_f64()) {
        (Some(g), Some(w)) => (g - w).abs() <= tolerance * w.abs().max(1.0),
        _ => got == want,
    }
}

/// Lays out a fixture as the project's file sources expect it in `out`.
pub async fn materialize_fixture(
    sources: &ProjectSources,
    fixture: &Path,
    out: &Path,
) -> Result<(), String> {
    for (_, def) in &sources.definitions {
        for (model, spec) in &def.models {
            let (rel, parquet) = match spec.source.source() {
                Ok(Source::Parquet(p)) => (p, true),
                Ok(Source::Csv(p) | Source::Xlsx(p)) => (p, false),
                _ => continue,
            };
            let target = out.join(rel);
            let as_is = fixture.join(rel);
            let csv = csv_for(fixture, rel);
            if as_is.exists() && (!parquet || !is_csv(&as_is)) {
                copy(&as_is, &target)?;
            } else if let Some(csv) = csv {
                if parquet {
                    crate::engine::csv_to_parquet(&csv, &target)
                        .await
                        .map_err(|e| format!("fixture {}: model {model}: {e}", csv.display()))?;
                } else {
                    copy(&csv, &target)?;
                }
            } else {
                return Err(format!(
                    "fixture {} has no data for model '{model}' (looked for {rel} and {rel}.csv)",
                    fixture.display()
                ));
            }
        }
    }
    Ok(())
}

fn is_csv(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "csv")
        || (p.is_dir()
            && std::fs::read_dir(p).is_ok_and(|mut d| {
                d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "csv")))
            }))
}

fn csv_for(fixture: &Path, rel: &str) -> Option<PathBuf> {
    let direct = fixture.join(rel);
    if direct.exists() && is_csv(&direct) {
        return Some(direct);
    }
    let with_ext = fixture.join(format!("{rel}.csv"));
    with_ext.exists().then_some(with_ext)
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("copy {} -> {}: {e}", from.display(), to.display());
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(err)?;
        for entry in std::fs::read_dir(from).map_err(err)? {
            let path = entry.map_err(err)?.path();
            copy(&path, &to.join(path.file_name().expect("a name")))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::copy(from, to).map(|_| ()).map_err(err)
    }
}
