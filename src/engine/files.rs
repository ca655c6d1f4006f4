//! Files written by the engine: the metric tests' CSV fixtures become the Parquet their models
//! read, with the same types DataFusion would infer reading the CSV.

use std::path::Path;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::logical_expr::cast;
use datafusion::prelude::{CsvReadOptions, SessionContext, ident};

use super::EngineError;
use crate::text::hex_prefix;

/// Converts a CSV file to Parquet at `target` (a `.parquet` file, or a folder to write a part
/// into). Timestamps without a zone are taken as UTC.
pub async fn csv_to_parquet(csv: &Path, target: &Path) -> Result<(), EngineError> {
    let ctx = SessionContext::new();
    let path = csv.to_string_lossy().to_string();
    let df = ctx
        .read_csv(&path, CsvReadOptions::new().file_extension(".csv"))
        .await?;
    let select: Vec<_> = df
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, None) => cast(
                ident(f.name()),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
            .alias(f.name()),
            _ => ident(f.name()),
        })
        .collect();
    let file = if target.extension().is_some_and(|e| e == "parquet") {
        target.to_path_buf()
    } else {
        std::fs::create_dir_all(target).map_err(|e| EngineError::failed(e.to_string()))?;
        target.join(format!("part-{}.parquet", hex_prefix(path.as_bytes(), 8)))
    };
    df.select(select)?
        .write_parquet(
            &file.to_string_lossy(),
            DataFrameWriteOptions::new().with_single_file_output(true),
            None,
        )
        .await?;
    Ok(())
}
