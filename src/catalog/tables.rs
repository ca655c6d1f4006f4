//! Physical tables: the Parquet/CSV files behind file-sourced models, their snapshot (the files a
//! data state reads) and their data version (what the result cache keys on).

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::text::hex_prefix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Parquet,
    Csv,
    Xlsx,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
            FileFormat::Xlsx => "xlsx",
        }
    }
}

/// A file or directory of files registered as one DataFusion table.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub name: String,
    pub format: FileFormat,
    pub path: PathBuf,
    /// Changes whenever a file of the table is added, removed, rewritten or touched.
    pub version: String,
    /// The files seen when the version was taken. The table reads exactly these, so a catalog
    /// keeps answering from the snapshot it validated even if a bad file is dropped in later.
    pub files: Vec<PathBuf>,
    /// Each of those files' path relative to the table's path (empty for a single file), size
    /// and modification time: what a stored rollup compares to see which files changed.
    pub signatures: Vec<FileSignature>,
    /// `read:` options: the engine reads the files itself, typed as declared (a CSV dialect, a
    /// workbook), instead of DataFusion's readers.
    pub read: Option<crate::spec::read::ReadSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FileSignature {
    pub file: String,
    pub len: u64,
    pub mtime_ns: u128,
}

impl TableSource {
    pub fn new(name: &str, format: FileFormat, path: PathBuf) -> std::io::Result<Self> {
        let (version, signatures) = snapshot(&path, format)?;
        let files = signatures
            .iter()
            .map(|s| {
                if s.file.is_empty() {
                    path.clone()
                } else {
                    path.join(&s.file)
                }
            })
            .collect();
        Ok(Self {
            name: name.to_string(),
            format,
            path,
            version,
            files,
            signatures,
            read: None,
        })
    }

    pub fn with_read(mut self, read: Option<crate::spec::read::ReadSpec>) -> Self {
        self.read = read;
        self
    }

    /// Read by the engine's own typed reader (see `engine::read`), not a streaming scan.
    pub fn read_in_memory(&self) -> bool {
        self.read.is_some() || self.format == FileFormat::Xlsx
    }
}

/// The data version of a file or directory: a hash of every data file's relative path, size and
/// modification time. Cheap (a directory listing, no reads), so it is checked on every query.
pub fn data_version(path: &Path, format: FileFormat) -> std::io::Result<String> {
    snapshot(path, format).map(|(version, _)| version)
}

/// The data version and the files it covers.
fn snapshot(path: &Path, format: FileFormat) -> std::io::Result<(String, Vec<FileSignature>)> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect_files(path, path, format.extension(), &mut files)?;
        if files.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no .{} files in {}", format.extension(), path.display()),
            ));
        }
    } else {
        let meta = std::fs::metadata(path)?;
        files.push((String::new(), meta.len(), mtime_nanos(&meta)));
    }
    files.sort();
    let mut hasher = Sha256::new();
    for (rel, len, mtime) in &files {
        hasher.update(rel.as_bytes());
        hasher.update(len.to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    let signatures = files
        .into_iter()
        .map(|(file, len, mtime_ns)| FileSignature {
            file,
            len,
            mtime_ns,
        })
        .collect();
    Ok((hex_prefix(&hasher.finalize(), 12), signatures))
}

fn collect_files(
    root: &Path,
    dir: &Path,
    extension: &str,
    out: &mut Vec<(String, u64, u128)>,
) -> std::io::Result<()> {
    // The directory entry's own type and metadata (statx relative to the open directory): this
    // runs on every query and every snapshot, so one system call per file, not two path walks.
    // A symlink (a data file linked in) is followed.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let linked = entry.file_type()?.is_symlink();
        let is_dir = if linked {
            path.is_dir()
        } else {
            entry.file_type()?.is_dir()
        };
        if is_dir {
            collect_files(root, &path, extension, out)?;
        } else if path.extension().and_then(|e| e.to_str()) == Some(extension) {
            let meta = if linked {
                std::fs::metadata(&path)?
            } else {
                entry.metadata()?
            };
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            out.push((rel, meta.len(), mtime_nanos(&meta)));
        }
    }
    Ok(())
}

fn mtime_nanos(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
