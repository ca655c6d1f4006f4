//! The audit trail: one JSON line per request that touches data, appended and flushed before the
//! response leaves (a request that cannot be audited is refused). Size-based rotation keeps
//! `audit.log`, `audit.log.1`, ... `audit.log.N`, and drops rotated files older than the age
//! kept. No personal data values: personal data only exists in masked drill-through columns, and
//! rows are counted, never copied.
//!
//! Tamper-evident: each line carries `prev`, the SHA-256 of the line before it (across
//! rotations), so an edited, inserted or deleted line breaks the chain at the next one, and
//! [`verify`] names it. (What the chain cannot show is the newest lines cut off: ship the log to
//! a write-once store for that.)

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
    /// The SHA-256 (hex) of the previous line, set by the log.
    #[serde(default)]
    pub prev: String,
}

/// `prev` of the first line of a new trail.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn line_hash(line: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(line)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where a handler that cannot reach its response (an MCP tool, inside the protocol's own
/// service) leaves the details of its answer: the gate puts one in every request's extensions and
/// reads it when the response carries none.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(std::sync::Arc<std::sync::Mutex<Option<AuditDetails>>>);

impl AuditSlot {
    pub fn fill(&self, details: AuditDetails) {
        *self.0.lock().expect("audit slot") = Some(details);
    }

    pub fn take(&self) -> Option<AuditDetails> {
        self.0.lock().expect("audit slot").take()
    }
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
    /// Rotated files older than this are dropped (None: kept by count only).
    keep_for: Option<std::time::Duration>,
    file: Mutex<Open>,
}

/// The file appended to, its size, and the hash of its last line (the chain's head).
struct Open {
    file: File,
    size: u64,
    head: String,
}

impl AuditLog {
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: usize,
        keep_for: Option<std::time::Duration>,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        // The chain goes on from the newest line written, in this file or the last rotated one.
        let head = [path.to_path_buf(), rotated(path, 1)]
            .iter()
            .find_map(|f| last_line(f))
            .map_or_else(|| GENESIS.to_string(), |l| line_hash(l.as_bytes()));
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            keep_for,
            file: Mutex::new(Open { file, size, head }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line, chained to the one before, and flushes it to the OS before returning.
    pub fn append(&self, mut record: AuditRecord) -> std::io::Result<()> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit lock poisoned"))?;
        record.prev = guard.head.clone();
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        let hash = line_hash(&line);
        line.push(b'\n');
        if guard.size + line.len() as u64 > self.max_bytes && guard.size > 0 {
            self.rotate()?;
            guard.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            guard.size = 0;
        }
        guard.file.write_all(&line)?;
        guard.file.flush()?;
        guard.size += line.len() as u64;
        guard.head = hash;
        Ok(())
    }

    /// audit.log.(N-1) -> .N, ..., audit.log -> .1; the oldest beyond `keep`, and any older
    /// than the age kept, are dropped.
    fn rotate(&self) -> std::io::Result<()> {
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        if let Some(age) = self.keep_for {
            for i in 2..=self.keep {
                let f = rotated(&self.path, i);
                let old = std::fs::metadata(&f)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
                if old {
                    std::fs::remove_file(&f)?;
                }
            }
        }
        Ok(())
    }
}

fn last_line(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.is_empty())
        .last()
}

/// The log's files, oldest first.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..1000)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every line chains to the one before; `lines` over `files` files. `anchored` is false when
    /// the oldest kept line follows one rotated away (its own `prev` cannot be checked).
    Intact {
        lines: u64,
        files: usize,
        anchored: bool,
    },
    /// The first line that does not chain: file, line number (from 1), why.
    Broken {
        file: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Checks the chain over the log and its rotations, oldest first.
pub fn verify(path: &Path) -> std::io::Result<Verified> {
    let files = files_oldest_first(path);
    let mut prev: Option<String> = None;
    let mut lines = 0;
    let mut anchored = true;
    for f in &files {
        for (n, line) in BufReader::new(File::open(f)?).lines().enumerate() {
            let line = line?;
            let broken = |reason: String| Verified::Broken {
                file: f.clone(),
                line: n as u64 + 1,
                reason,
            };
            let record: AuditRecord = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => return Ok(broken(format!("not an audit record: {e}"))),
            };
            match &prev {
                None if record.prev == GENESIS => {}
                None => anchored = false,
                Some(p) if *p == record.prev => {}
                Some(_) => {
                    return Ok(broken(
                        "its prev is not the hash of the line before: that line, or this one, was changed, inserted or removed".into(),
                    ));
                }
            }
            prev = Some(line_hash(line.as_bytes()));
            lines += 1;
        }
    }
    Ok(Verified::Intact {
        lines,
        files: files.len(),
        anchored,
    })
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
    let mut out = Vec::new();
    for f in &files_oldest_first(path) {
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
