//! SQL models declared `materialize`: computed once per data version and stored as one Parquet
//! file under the store's `_models/<view>/`, named by a fingerprint of the view's plan (nested
//! SQL models inlined), its sort and every file of every table it reads; every plan of the data
//! state then reads that file instead of computing the view again (a customer view joining the
//! master to the org chart is otherwise joined in every query, over the whole master).
//!
//! A state over the same files loads the stored file; one over changed files computes a new one.
//! The file of the state before is kept (a request still running on it reads it), older ones are
//! deleted. Without a store, or when the build fails (memory), the view is computed in every
//! query, as if not declared, and `GET /api/v1/catalog/status` says why.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::RollupStore;
use super::error::StateError;
use crate::catalog::{Catalog, MaterializedModel};
use crate::engine::EngineTables;
use crate::text::hex_prefix;

/// Makes every materialized SQL model of `catalog` read from its stored rows, building those
/// not stored over these files. Returns how each came to be read.
pub(super) async fn materialize_models(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    store: &RollupStore,
    budget: std::time::Duration,
) -> Vec<MaterializedModel> {
    let mut views: Vec<(&str, &[String], &crate::catalog::Model)> = catalog
        .models
        .values()
        .filter_map(|m| m.materialize.as_deref().map(|o| (m.table.as_str(), o, m)))
        .collect();
    views.sort_by_key(|(view, _, _)| *view);
    views.dedup_by_key(|(view, _, _)| *view);
    let mut done = Vec::new();
    for (view, order_by, model) in views {
        let started = Instant::now();
        let building = materialize(catalog, tables, store, view, order_by, model);
        let outcome = super::within_budget(view, budget, building).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let (how, rows, file, reason) = match outcome {
            Ok((how, rows, file)) => {
                tracing::info!(view, how, rows, ms, "materialized SQL model");
                (how, rows, Some(file), None)
            }
            Err(e) => {
                let cause = crate::semantic::with_causes(&e);
                tracing::warn!(view, reason = %cause, "SQL model not materialized; every query computes it");
                ("inline", 0, None, Some(e.to_string()))
            }
        };
        done.push(MaterializedModel {
            view: view.to_string(),
            how,
            rows,
            ms,
            reason,
            file,
        });
    }
    done
}

/// Loads or builds one view's stored rows: (`loaded` | `built`, rows, file).
async fn materialize(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    store: &RollupStore,
    view: &str,
    order_by: &[String],
    model: &crate::catalog::Model,
) -> Result<(&'static str, usize, PathBuf), StateError> {
    let folder = store
        .models_folder()
        .ok_or_else(|| {
            StateError::refused("no rollup store (--no-rollup-store): nowhere to keep its rows")
        })?
        .join(view);
    let fingerprint = fingerprint(catalog, tables, view, order_by, model)?;
    let file = folder.join(format!("{fingerprint}.parquet"));
    let (how, rows) = match stored_rows(&file) {
        Some(rows) => ("loaded", rows),
        None => (
            "built",
            build(tables, view, order_by, &folder, &fingerprint, &file).await?,
        ),
    };
    tables
        .read_view_from(view, &file)
        .map_err(StateError::Register)?;
    keep_only(&folder, &file);
    Ok((how, rows, file))
}

/// Computes the view's rows into `file`: written beside it, then renamed, so a file under the
/// final name is always whole. The rows written.
async fn build(
    tables: &dyn EngineTables,
    view: &str,
    order_by: &[String],
    folder: &Path,
    fingerprint: &str,
    file: &Path,
) -> Result<usize, StateError> {
    std::fs::create_dir_all(folder).map_err(|e| StateError::file(folder.display(), e))?;
    let partial = folder.join(format!(".{fingerprint}.{}.partial", std::process::id()));
    let rows = tables
        .store_view(view, order_by, &partial)
        .await
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            StateError::Compute(e)
        })?;
    std::fs::rename(&partial, file).map_err(|e| StateError::file(file.display(), e))?;
    Ok(rows)
}

/// What the view's rows depend on: its plan with nested SQL models inlined, the sort, and each
/// file of each table the plan reads (path, size, modification time).
fn fingerprint(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    view: &str,
    order_by: &[String],
    model: &crate::catalog::Model,
) -> Result<String, StateError> {
    let scan = catalog
        .plans
        .scan(view, model.schema.clone())
        .map_err(|e| StateError::Register(e.into()))?
        .into_unoptimized_plan();
    let resolved = tables.resolved(scan).map_err(StateError::Register)?;
    let mut hasher = Sha256::new();
    hasher.update(resolved.display_indent_schema().to_string());
    hasher.update(format!("{order_by:?}"));
    for table in super::lineage::tables_read(&resolved) {
        let source = catalog.tables.get(&table).ok_or_else(|| {
            StateError::refused(format!(
                "it reads '{table}', which is no file-sourced table"
            ))
        })?;
        hasher.update(format!("{table}|{:?}", source.signatures));
    }
    Ok(hex_prefix(&hasher.finalize(), 16))
}

/// The row count of a whole stored file (its footer reads), or none.
fn stored_rows(file: &Path) -> Option<usize> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(file).ok()?).ok()?;
    Some(reader.metadata().file_metadata().num_rows() as usize)
}

/// Deletes the folder's other files but the newest of them (the state before may still read
/// it), and what a process that stopped mid-write left.
fn keep_only(folder: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let ours = format!(".{}.partial", std::process::id());
    let paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    for partial in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "partial"))
    {
        if !partial.to_string_lossy().ends_with(&ours) {
            let _ = std::fs::remove_file(partial);
        }
    }
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = paths
        .into_iter()
        .filter(|p| p != current && p.extension().is_some_and(|x| x == "parquet"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    others.sort();
    others.pop();
    for (_, old) in others {
        let _ = std::fs::remove_file(old);
    }
}
