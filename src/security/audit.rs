//! The audit trail: one JSON line per request that touches data, appended and flushed before the
//! response leaves (a request that cannot be audited is refused). Size-based rotation keeps
//! `audit.log`, `audit.log.1`, ... `audit.log.N`. No personal data values: personal data only
//! exists in masked drill-through columns, and rows are counted, never copied.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: String,
    pub principal: String,
    pub role: String,
    pub scope: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub elapsed_ms: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub filters: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Served from the result cache (every part of the answer) or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a handler knows about its answer, for the audit line (put in the response's extensions).
#[derive(Debug, Clone, Default)]
pub struct AuditDetails {
    pub metrics: Vec<String>,
    pub dimensions: Vec<String>,
    pub filters: Value,
    pub rows: Option<u64>,
    pub cached: Option<bool>,
}

impl AuditDetails {
    /// What a query asked: its metrics, dimensions and filters.
    pub fn of_query(req: &crate::protocol::QueryRequest) -> Self {
        Self {
            metrics: req.metrics.clone(),
            dimensions: req.dimensions.clone(),
            filters: serde_json::to_value(&req.filters).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// A listing: what it was asked with and how many rows it gave.
    pub fn listing(filters: Value, rows: usize) -> Self {
        Self {
            filters,
            rows: Some(rows as u64),
            ..Self::default()
        }
    }
}

pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Mutex<(File, u64)>,
}

impl AuditLog {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            file: Mutex::new((file, size)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and flushes it to the OS before returning.
    pub fn append(&self, record: &AuditRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit lock poisoned"))?;
        if guard.1 + line.len() as u64 > self.max_bytes && guard.1 > 0 {
            self.rotate()?;
            *guard = (
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
                0,
            );
        }
        guard.0.write_all(&line)?;
        guard.0.flush()?;
        guard.1 += line.len() as u64;
        Ok(())
    }

    /// audit.log.(N-1) -> .N, ..., audit.log -> .1; the oldest beyond `keep` is dropped.
    fn rotate(&self) -> std::io::Result<()> {
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
    }
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// What `kpilens audit` looks for; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub principal: Option<String>,
    pub route: Option<String>,
    pub metric: Option<String>,
    /// `403`, or a class such as `4xx`.
    pub status: Option<String>,
    /// RFC 3339 prefix comparison: records at or after this time.
    pub since: Option<String>,
}

impl AuditQuery {
    fn matches(&self, r: &AuditRecord) -> bool {
        let status_ok = self.status.as_ref().is_none_or(|s| {
            let code = r.status.to_string();
            match s.strip_suffix("xx") {
                Some(class) => code.starts_with(class),
                None => code == *s,
            }
        });
        self.principal.as_ref().is_none_or(|p| r.principal == *p)
            && self
                .route
                .as_ref()
                .is_none_or(|p| r.route.contains(p.as_str()))
            && self.metric.as_ref().is_none_or(|m| r.metrics.contains(m))
            && self
                .since
                .as_ref()
                .is_none_or(|t| r.time.as_str() >= t.as_str())
            && status_ok
    }
}

/// Matching records of the log and its rotations, oldest first.
pub fn search(path: &Path, query: &AuditQuery) -> std::io::Result<Vec<AuditRecord>> {
    let mut files: Vec<PathBuf> = (1..1000)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files.iter().filter(|f| f.exists()) {
        for line in BufReader::new(File::open(f)?).lines() {
            let line = line?;
            if let Ok(r) = serde_json::from_str::<AuditRecord>(&line)
                && query.matches(&r)
            {
                out.push(r);
            }
        }
    }
    Ok(out)
}
