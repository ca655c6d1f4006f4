//! Rollups kept on disk between runs: one folder per rollup under the store's directory, with
//! its rows as Parquet and a manifest naming what they were computed from (a fingerprint of the
//! definitions, and each file of each table read, with its size, modification time and the
//! dates its rows cover). A start or a data change loads a rollup whose manifest still matches,
//! recomputes only the dates changed files cover where it can, and rebuilds it otherwise.
//!
//! A copy that cannot be read (deleted, truncated, from another version) is rebuilt, never an
//! error; writes go to a new file and the manifest is replaced by a rename, so a reader sees the
//! old copy or the new one.

use super::error::StateError;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Date32Type, Date64Type, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchReader};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use serde::{Deserialize, Serialize};

use crate::catalog::{FileFormat, FileSignature, TableSource};

/// Bumped whenever what a manifest or its rows mean changes: older copies are rebuilt.
const FORMAT: u32 = 1;

/// Beside the rollups' folders: the stored rows of materialized SQL models.
const MODELS: &str = "_models";

/// Beside the rollups' folders: which declared primary keys hold over which files.
const UNIQUE_KEYS: &str = "unique_keys.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UniqueKey {
    column: String,
    files: Vec<FileSignature>,
    unique: bool,
}

pub struct RollupStore {
    dir: Option<PathBuf>,
    /// The engine's memory pool: a build that failed is tried again under another.
    memory_mb: u64,
    /// While set (a server starting), a build an earlier run refused for memory is not tried
    /// before the server listens: it waits for [`RollupStore::stop_deferring`].
    deferring: std::sync::atomic::AtomicBool,
    /// How many were deferred so.
    deferred: std::sync::atomic::AtomicUsize,
}

/// What a stored rollup was computed from, and what its build found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub fingerprint: String,
    /// Every table the rollup reads.
    pub tables: BTreeMap<String, StoredTable>,
    pub rows_file: String,
    pub rows: usize,
    /// Distinct counts the build refused (not in the rows), each with its key and reason.
    pub refused: BTreeMap<String, (String, String)>,
    /// A churn rollup's snapshot dates.
    pub snapshots: Vec<NaiveDate>,
    /// Set when the build failed (no rows stored): not tried again while the definitions, the
    /// files and the memory pool are what they were.
    #[serde(default)]
    pub failed: Option<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub reason: String,
    pub memory_mb: u64,
    /// Refused for memory (not by a check over the data).
    #[serde(default)]
    pub out_of_memory: bool,
    /// The process that recorded it: a refusal for memory holds for that process only (how
    /// much memory a build needs at the margin varies from run to run; a new start tries again).
    #[serde(default)]
    pub process: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTable {
    /// The table's column that the model's time is, row for row (none: any change rebuilds).
    pub aligned: Option<String>,
    pub files: Vec<StoredFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    pub signature: FileSignature,
    pub dates: FileDates,
}

/// The local dates a file's rows cover on the aligned column, from its Parquet statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileDates {
    /// Not aligned, not Parquet, no statistics or null times: a change to it rebuilds.
    Unknown,
    NoRows,
    Span(NaiveDate, NaiveDate),
}

impl RollupStore {
    /// A store in `dir` (created when first written), or none (every rollup is built), for an
    /// engine with a pool of `memory_mb`.
    pub fn new(dir: Option<PathBuf>, memory_mb: u64) -> Self {
        Self {
            dir,
            memory_mb,
            deferring: Default::default(),
            deferred: Default::default(),
        }
    }

    /// From now until [`stop_deferring`](Self::stop_deferring), builds that an earlier run
    /// refused for memory wait (a start that would otherwise spend minutes retrying them).
    pub fn defer_memory_retries(&self) {
        self.deferring
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ends the deferral; whether any build was deferred (and is worth a rebuild now).
    pub fn stop_deferring(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.deferring.store(false, Relaxed);
        self.deferred.swap(0, Relaxed) > 0
    }

    /// Whether this stored failure is a refusal for memory, by an earlier run under this pool,
    /// to be retried later rather than now (counted).
    pub fn defers(&self, manifest: &Manifest) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let defer = self.deferring.load(Relaxed)
            && manifest
                .failed
                .as_ref()
                .is_some_and(|f| f.out_of_memory && f.memory_mb == self.memory_mb);
        if defer {
            self.deferred.fetch_add(1, Relaxed);
        }
        defer
    }

    /// The failure recorded in `manifest`, if it happened under this store's memory pool, and
    /// whether it holds whatever the data (a refusal for memory, in the process that recorded it).
    pub fn same_failure<'a>(&self, manifest: &'a Manifest) -> Option<(&'a str, bool)> {
        manifest
            .failed
            .as_ref()
            .filter(|f| f.memory_mb == self.memory_mb)
            .filter(|f| !f.out_of_memory || f.process == std::process::id())
            .map(|f| (f.reason.as_str(), f.out_of_memory))
    }

    pub fn is_on(&self) -> bool {
        self.dir.is_some()
    }

    /// Where materialized SQL models are stored (see `state::materialize`), if anywhere.
    pub fn models_folder(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(MODELS))
    }

    fn folder(&self, rollup: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(rollup))
    }

    /// The stored manifest of a rollup, if any that this version reads.
    pub fn manifest(&self, rollup: &str) -> Option<Manifest> {
        let path = self.folder(rollup)?.join("manifest.json");
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice::<Manifest>(&text)
            .ok()
            .filter(|m| m.format == FORMAT)
    }

    /// A stored rollup's rows.
    pub fn rows(
        &self,
        rollup: &str,
        manifest: &Manifest,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), StateError> {
        let folder = self
            .folder(rollup)
            .ok_or_else(|| StateError::refused("no rollup store"))?;
        let unreadable =
            |e: Box<dyn std::error::Error + Send + Sync>| StateError::file(&manifest.rows_file, e);
        let file =
            File::open(folder.join(&manifest.rows_file)).map_err(|e| unreadable(e.into()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| unreadable(e.into()))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(e.into()))?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows != manifest.rows {
            return Err(StateError::refused(format!(
                "{} holds {rows} rows, the manifest says {}",
                manifest.rows_file, manifest.rows
            )));
        }
        Ok((schema, batches))
    }

    /// Records that a rollup's build failed over what `manifest` names (its rows are dropped).
    pub fn save_failure(
        &self,
        rollup: &str,
        mut manifest: Manifest,
        reason: &str,
        out_of_memory: bool,
    ) -> Result<(), StateError> {
        manifest.failed = Some(Failure {
            reason: reason.to_string(),
            memory_mb: self.memory_mb,
            out_of_memory,
            process: std::process::id(),
        });
        self.save(rollup, manifest, &Arc::new(Schema::empty()), &[])
    }

    /// Stores a rollup's rows and manifest (its `rows_file` and `rows` are set here), replacing
    /// the copy before.
    pub fn save(
        &self,
        rollup: &str,
        mut manifest: Manifest,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(), StateError> {
        let Some(folder) = self.folder(rollup) else {
            return Ok(());
        };
        std::fs::create_dir_all(&folder).map_err(|e| StateError::file(folder.display(), e))?;
        let previous = self.manifest(rollup).map(|m| m.rows_file);
        let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        manifest.format = FORMAT;
        manifest.rows_file = format!("rows-{stamp:x}-{}.parquet", std::process::id());
        manifest.rows = batches.iter().map(|b| b.num_rows()).sum();
        let rows_path = folder.join(&manifest.rows_file);
        let write = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let mut writer = ArrowWriter::try_new(File::create(&rows_path)?, schema.clone(), None)?;
            for b in batches {
                writer.write(b)?;
            }
            writer.close()?;
            let temp = folder.join(format!("manifest.json.{stamp:x}"));
            std::fs::write(&temp, serde_json::to_vec_pretty(&manifest)?)?;
            std::fs::rename(&temp, folder.join("manifest.json"))?;
            Ok(())
        };
        write().map_err(|e| {
            StateError::file(
                format!("storing rollup '{rollup}' in {}", folder.display()),
                e,
            )
        })?;
        if let Some(old) = previous.filter(|old| *old != manifest.rows_file) {
            let _ = std::fs::remove_file(folder.join(old));
        }
        Ok(())
    }

    /// Whether `column` of a table was found unique over exactly these files.
    pub fn known_unique(&self, table: &str, column: &str, files: &[FileSignature]) -> Option<bool> {
        let path = self.dir.as_ref()?.join(UNIQUE_KEYS);
        let keys: BTreeMap<String, UniqueKey> =
            serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        keys.get(table)
            .filter(|k| k.column == column && k.files == files)
            .map(|k| k.unique)
    }

    /// Records whether `column` of a table is unique over these files.
    pub fn save_unique(&self, table: &str, column: &str, files: &[FileSignature], unique: bool) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(UNIQUE_KEYS);
        let mut keys: BTreeMap<String, UniqueKey> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        keys.insert(
            table.to_string(),
            UniqueKey {
                column: column.to_string(),
                files: files.to_vec(),
                unique,
            },
        );
        let temp = dir.join(format!("{UNIQUE_KEYS}.{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&temp, serde_json::to_vec(&keys).unwrap_or_default()))
            .and_then(|_| std::fs::rename(&temp, &path));
        if let Err(e) = written {
            tracing::warn!(table, error = %e, "key check not stored; it runs again at the next start");
        }
    }

    /// Deletes the stored copy of every rollup not in `keep` (a rollup removed from the YAML).
    pub fn prune(&self, keep: &BTreeSet<String>) {
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            // `_models` (stored SQL models) is no rollup: rollup names start with a letter.
            if entry.path().is_dir() && !keep.contains(&name) && name != MODELS {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A table's files as stored now: dates read from Parquet statistics of `aligned`, reused from
/// `before` for a file whose signature has not changed.
pub fn stored_table(
    source: &TableSource,
    aligned: Option<&str>,
    before: Option<&StoredTable>,
    time_zone: chrono_tz::Tz,
) -> StoredTable {
    let files = source
        .signatures
        .iter()
        .zip(&source.files)
        .map(|(signature, path)| {
            let known = before
                .filter(|b| b.aligned.as_deref() == aligned)
                .and_then(|b| b.files.iter().find(|f| f.signature == *signature));
            let dates = match (known, aligned) {
                (Some(f), _) => f.dates,
                (None, Some(column)) if source.format == FileFormat::Parquet => {
                    parquet_dates(path, column, time_zone).unwrap_or(FileDates::Unknown)
                }
                _ => FileDates::Unknown,
            };
            StoredFile {
                signature: signature.clone(),
                dates,
            }
        })
        .collect();
    StoredTable {
        aligned: aligned.map(str::to_string),
        files,
    }
}

/// The local dates a Parquet file's `column` spans, from its row-group statistics.
fn parquet_dates(path: &Path, column: &str, time_zone: chrono_tz::Tz) -> Option<FileDates> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).ok()?).ok()?;
    let metadata = builder.metadata();
    if metadata.file_metadata().num_rows() == 0 {
        return Some(FileDates::NoRows);
    }
    let schema: &Schema = builder.schema();
    let converter =
        StatisticsConverter::try_new(column, schema, metadata.file_metadata().schema_descr())
            .ok()?;
    let groups = metadata.row_groups();
    let nulls = converter.row_group_null_counts(groups.iter()).ok()?;
    if nulls.null_count() > 0 || nulls.values().iter().any(|n| *n > 0) {
        return None; // rows without a time, or unknown: cannot be placed on a date
    }
    let mins = converter.row_group_mins(groups.iter()).ok()?;
    let maxes = converter.row_group_maxes(groups.iter()).ok()?;
    let mut span: Option<(NaiveDate, NaiveDate)> = None;
    for (i, group) in groups.iter().enumerate() {
        if group.num_rows() == 0 {
            continue;
        }
        let lo = local_date(&mins, i, time_zone)?;
        let hi = local_date(&maxes, i, time_zone)?;
        span = Some(match span {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        });
    }
    Some(match span {
        Some((lo, hi)) => FileDates::Span(lo, hi),
        None => FileDates::NoRows,
    })
}

/// Value `i` of a date or timestamp array as a local date: a zoned timestamp in `time_zone`, a
/// naive one as it is (already local), as the planner buckets them.
pub fn local_date(array: &ArrayRef, i: usize, time_zone: chrono_tz::Tz) -> Option<NaiveDate> {
    if array.is_null(i) {
        return None;
    }
    let instant = |value: i64, unit: &TimeUnit| {
        let nanos = match unit {
            TimeUnit::Second => value.checked_mul(1_000_000_000)?,
            TimeUnit::Millisecond => value.checked_mul(1_000_000)?,
            TimeUnit::Microsecond => value.checked_mul(1_000)?,
            TimeUnit::Nanosecond => value,
        };
        Some(chrono::DateTime::from_timestamp_nanos(nanos))
    };
    match array.data_type() {
        DataType::Date32 => array.as_primitive::<Date32Type>().value_as_date(i),
        DataType::Date64 => array.as_primitive::<Date64Type>().value_as_date(i),
        DataType::Timestamp(unit, zone) => {
            use datafusion::arrow::datatypes::*;
            let value = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i),
            };
            let at = instant(value, unit)?;
            Some(match zone {
                Some(_) => at.with_timezone(&time_zone).date_naive(),
                None => at.naive_utc().date(),
            })
        }
        _ => None,
    }
}

/// The dates a refresh must recompute for one table: those of every file added, removed or
/// changed, before and after. `Err` names the first file whose dates are unknown.
pub fn changed_dates(
    before: &StoredTable,
    now: &StoredTable,
) -> Result<Vec<(NaiveDate, NaiveDate)>, String> {
    let mut spans = Vec::new();
    let mut take = |f: &StoredFile| match f.dates {
        FileDates::Span(a, b) => {
            spans.push((a, b));
            Ok(())
        }
        FileDates::NoRows => Ok(()),
        FileDates::Unknown => Err(if f.signature.file.is_empty() {
            "the file".to_string()
        } else {
            f.signature.file.clone()
        }),
    };
    for f in &before.files {
        if !now.files.contains(f) {
            take(f)?;
        }
    }
    for f in &now.files {
        if !before.files.contains(f) {
            take(f)?;
        }
    }
    Ok(spans)
}

/// Batches of one schema, `schema`'s fields nullable wherever a batch's are (a refresh's rows
/// may differ from the stored ones in nullability only).
pub fn unify(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), StateError> {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let nullable = f.is_nullable()
                || batches
                    .iter()
                    .any(|b| b.schema().fields().get(i).is_none_or(|f| f.is_nullable()));
            f.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| StateError::Rows {
            context: "the refreshed rows do not fit the stored ones",
            source,
        })?;
    Ok((schema, batches))
}
