//! Streams rows into Parquet: bounded buffers (one batch), files rotated by row count, so memory
//! stays flat whatever the scale.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;

const BATCH_ROWS: usize = 64 * 1024;
const FILE_ROWS: u64 = 8 * 1024 * 1024;

/// One cell. Columns are typed by the schema; a mismatch is a generator bug and panics.
pub enum V<'a> {
    I64(i64),
    I32(i32),
    F64(f64),
    Str(&'a str),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Ts(i64),
    Null,
}

enum Column {
    I64(Int64Builder),
    I32(Int32Builder),
    F64(Float64Builder),
    Str(StringBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub struct TableWriter {
    dir: PathBuf,
    /// File names start with it: `part` or the month of a month-partitioned table.
    prefix: String,
    schema: SchemaRef,
    columns: Vec<Column>,
    buffered: usize,
    in_file: u64,
    file_index: usize,
    writer: Option<ArrowWriter<File>>,
    pub rows: u64,
}

impl TableWriter {
    pub fn create(out: &Path, table: &str, fields: Vec<Field>) -> std::io::Result<Self> {
        let dir = out.join(table);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self::in_dir(dir, "part", Arc::new(Schema::new(fields))))
    }

    /// A writer of `<prefix>-NNNNN.parquet` files in an existing directory.
    fn in_dir(dir: PathBuf, prefix: &str, schema: SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| new_column(f.data_type()))
            .collect();
        Self {
            dir,
            prefix: prefix.to_string(),
            schema,
            columns,
            buffered: 0,
            in_file: 0,
            file_index: 0,
            writer: None,
            rows: 0,
        }
    }

    pub fn row(&mut self, values: &[V]) -> std::io::Result<()> {
        debug_assert_eq!(values.len(), self.columns.len());
        for (column, value) in self.columns.iter_mut().zip(values) {
            match (column, value) {
                (Column::I64(b), V::I64(v)) => b.append_value(*v),
                (Column::I32(b), V::I32(v)) => b.append_value(*v),
                (Column::F64(b), V::F64(v)) => b.append_value(*v),
                (Column::Str(b), V::Str(v)) => b.append_value(v),
                (Column::Date(b), V::Date(v)) => b.append_value(*v),
                (Column::Ts(b), V::Ts(v)) => b.append_value(*v),
                (Column::I64(b), V::Null) => b.append_null(),
                (Column::I32(b), V::Null) => b.append_null(),
                (Column::F64(b), V::Null) => b.append_null(),
                (Column::Str(b), V::Null) => b.append_null(),
                (Column::Date(b), V::Null) => b.append_null(),
                (Column::Ts(b), V::Null) => b.append_null(),
                _ => panic!("generator bug: value does not match the column type"),
            }
        }
        self.buffered += 1;
        self.rows += 1;
        if self.buffered == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(finish).collect();
        let batch =
            RecordBatch::try_new(self.schema.clone(), arrays).map_err(std::io::Error::other)?;
        if self.writer.is_none() {
            let path = self
                .dir
                .join(format!("{}-{:05}.parquet", self.prefix, self.file_index));
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build();
            let file = File::create(path)?;
            self.writer = Some(
                ArrowWriter::try_new(file, self.schema.clone(), Some(props))
                    .map_err(std::io::Error::other)?,
            );
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer.write(&batch).map_err(std::io::Error::other)?;
        self.in_file += self.buffered as u64;
        self.buffered = 0;
        if self.in_file >= FILE_ROWS {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> std::io::Result<()> {
        if let Some(w) = self.writer.take() {
            w.close().map_err(std::io::Error::other)?;
            self.file_index += 1;
            self.in_file = 0;
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<u64> {
        self.flush()?;
        if self.rows == 0 {
            // An empty table still gets a file, so its schema is known.
            let path = self.dir.join(format!("{}-00000.parquet", self.prefix));
            let w = ArrowWriter::try_new(File::create(path)?, self.schema.clone(), None)
                .map_err(std::io::Error::other)?;
            w.close().map_err(std::io::Error::other)?;
        }
        self.close_file()?;
        Ok(self.rows)
    }
}

/// A snapshot table written one set of files per month of its date column (`2024-03-00000.parquet`),
/// rows in generation order (by customer) within a month. Every row group then spans one month,
/// so a query for some months skips the others' row groups by their statistics.
pub struct MonthPartitionedWriter {
    dir: PathBuf,
    schema: SchemaRef,
    /// Index of the Date32 column that places a row in a month.
    date_column: usize,
    months: std::collections::BTreeMap<(i32, u32), TableWriter>,
    pub rows: u64,
}

impl MonthPartitionedWriter {
    pub fn create(
        out: &Path,
        table: &str,
        fields: Vec<Field>,
        date_column: &str,
    ) -> std::io::Result<Self> {
        let empty = TableWriter::create(out, table, fields)?;
        let date_column = empty
            .schema
            .index_of(date_column)
            .map_err(std::io::Error::other)?;
        Ok(Self {
            dir: empty.dir,
            schema: empty.schema,
            date_column,
            months: Default::default(),
            rows: 0,
        })
    }

    pub fn row(&mut self, values: &[V]) -> std::io::Result<()> {
        use chrono::Datelike;
        let V::Date(days) = values[self.date_column] else {
            panic!("generator bug: the partition column holds a date");
        };
        let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
            .expect("generator dates are in range");
        let (dir, schema) = (&self.dir, &self.schema);
        let writer = self
            .months
            .entry((date.year(), date.month()))
            .or_insert_with(|| {
                let prefix = format!("{}-{:02}", date.year(), date.month());
                TableWriter::in_dir(dir.clone(), &prefix, schema.clone())
            });
        writer.row(values)?;
        self.rows += 1;
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<u64> {
        if self.months.is_empty() {
            return TableWriter::in_dir(self.dir, "part", self.schema).finish();
        }
        for (_, w) in self.months {
            w.finish()?;
        }
        Ok(self.rows)
    }
}

fn new_column(t: &DataType) -> Column {
    match t {
        DataType::Int64 => Column::I64(Int64Builder::with_capacity(BATCH_ROWS)),
        DataType::Int32 => Column::I32(Int32Builder::with_capacity(BATCH_ROWS)),
        DataType::Float64 => Column::F64(Float64Builder::with_capacity(BATCH_ROWS)),
        DataType::Utf8 => Column::Str(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8)),
        DataType::Date32 => Column::Date(Date32Builder::with_capacity(BATCH_ROWS)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Column::Ts(
            TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone_opt(tz.clone()),
        ),
        other => panic!("generator bug: unsupported column type {other}"),
    }
}

fn finish(c: &mut Column) -> ArrayRef {
    match c {
        Column::I64(b) => Arc::new(b.finish()),
        Column::I32(b) => Arc::new(b.finish()),
        Column::F64(b) => Arc::new(b.finish()),
        Column::Str(b) => Arc::new(b.finish()),
        Column::Date(b) => Arc::new(b.finish()),
        Column::Ts(b) => ArrayBuilder::finish(b),
    }
}
