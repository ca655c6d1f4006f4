//! Files read by kpilens itself rather than by DataFusion's streaming readers: a CSV with
//! `read:` options or an Excel sheet becomes typed Arrow batches in memory, once per data
//! version. The point is exactness at load: every value is converted as declared and the first
//! one that is not is reported with its file, line (or cell) and column, so `validate` fails
//! instead of the first query. Meant for exports and workbooks (up to a few million rows); a
//! large history belongs in Parquet.

mod columns;
mod dates;
mod delimited;
mod xlsx;

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::catalog::{FileFormat, TableSource};
use crate::spec::read::ReadSpec;

/// Rows per batch: what lets a scan of the table run on every core.
const BATCH_ROWS: usize = 8192;

/// Reads every file of `source` with its options; all files must give the same columns.
pub fn read_table(source: &TableSource) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let default = ReadSpec::default();
    let spec = source.read.as_ref().unwrap_or(&default);
    let mut schema: Option<(SchemaRef, &Path)> = None;
    let mut batches = Vec::new();
    for file in &source.files {
        let batch = match source.format {
            FileFormat::Xlsx => {
                let (names, grid) = xlsx::read(file, spec)?;
                columns::build(&grid, &names, spec)
            }
            _ => {
                let (names, grid) = delimited::read(file, spec)?;
                columns::build(&grid, &names, spec)
            }
        }
        .map_err(|e| format!("{}: {e}", file.display()))?;
        match &schema {
            None => schema = Some((batch.schema(), file)),
            Some((first, first_file)) if first.fields() != batch.schema().fields() => {
                return Err(format!(
                    "{} has other columns or types than {} ({:?} vs {:?}): declare the types under read.columns",
                    file.display(),
                    first_file.display(),
                    batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>(),
                    first
                        .fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>(),
                ));
            }
            Some(_) => {}
        }
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = BATCH_ROWS.min(batch.num_rows() - offset);
            batches.push(batch.slice(offset, len));
            offset += len;
        }
    }
    let schema = schema
        .map(|(s, _)| s)
        .ok_or_else(|| format!("no files in {}", source.path.display()))?;
    Ok((schema, batches))
}

/// Column names a model can use: present and each once.
fn check_names(path: &Path, names: &[String]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(format!(
                "{}: column {} has no name: give read.names",
                path.display(),
                i + 1
            ));
        }
        if !seen.insert(name) {
            return Err(format!(
                "{}: two columns are named '{name}': give read.names",
                path.display()
            ));
        }
    }
    Ok(())
}
