//! The audit trail: one JSON line per request that touches data, appended and flushed before the
//! response leaves (a request that cannot be audited is refused). Size-based rotation keeps
//! `audit.log`, `audit.log.1`, ... `audit.log.N`, and drops rotated files older than the age
//! kept. No personal data values: personal data only exists in masked drill-through columns, and
//! rows are counted, never copied.
//!
//! Tamper-evident: each line carries `seq`, its number in the trail since the first line ever,
//! and `prev`, the SHA-256 of the line before it (across rotations), so an edited, inserted or
//! deleted line breaks the chain at the next one, and [`verify`] names it. Lines leave the trail
//! only by the retention policy (rotated files older than the age kept, or past the count kept
//! when no age is set), and each removal is recorded in the trail (`removed`: which lines, the
//! hash of the last), so a trail that starts after its first line is accepted only where a
//! removal accounts for it; a missing file or a missing stretch of lines is named. (What the
//! chain cannot show is the newest lines cut off: ship the log to a write-once store for that.)
//!
//! Bounded: every string a client chooses (a principal's name from its token, a path, a filter
//! value, a metric name) is clipped in the line, with the hash of the whole, so that no request
//! can make its line long and a flood of them rotates little.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The line's number in the trail, from 1 at its first line ever; set by the log (0 in
    /// lines written before numbering).
    #[serde(default)]
    pub seq: u64,
    pub time: String,
    /// The client's address (its socket's peer; a proxy's where there is one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
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
    /// On the log's own line after a retention removal: the lines removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
    /// The SHA-256 (hex) of the previous line, set by the log.
    #[serde(default)]
    pub prev: String,
}

/// Lines the retention policy removed: `first_seq..=last_seq`, the hash of the last one (the
/// `prev` of the oldest line kept), and the rule that removed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub files: usize,
    pub policy: String,
}

/// How long a client-chosen string may be in a line; longer ones keep their start and the hash
/// of the whole (so equal values are still recognisable).
const MAX_FIELD: usize = 128;
const MAX_ROUTE: usize = 256;
const MAX_NAMES: usize = 32;
const MAX_FILTERS_JSON: usize = 1024;

fn bounded(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    let mut end = max.min(value.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}…(+{} bytes, sha256 {})",
        &value[..end],
        value.len() - end,
        &line_hash(value.as_bytes())[..16]
    )
}

fn bounded_names(names: Vec<String>) -> Vec<String> {
    let more = names.len().saturating_sub(MAX_NAMES);
    let mut kept: Vec<String> = names
        .into_iter()
        .take(MAX_NAMES)
        .map(|n| bounded(&n, MAX_FIELD))
        .collect();
    if more > 0 {
        kept.push(format!("…(+{more} more)"));
    }
    kept
}

impl AuditRecord {
    /// Every client-chosen string clipped (see the module's note).
    fn bounded(mut self) -> Self {
        self.principal = bounded(&self.principal, MAX_FIELD);
        self.role = bounded(&self.role, MAX_FIELD);
        self.scope = bounded(&self.scope, MAX_ROUTE);
        self.method = bounded(&self.method, 16);
        self.route = bounded(&self.route, MAX_ROUTE);
        self.client = bounded(&self.client, 64);
        self.metrics = bounded_names(std::mem::take(&mut self.metrics));
        self.dimensions = bounded_names(std::mem::take(&mut self.dimensions));
        if !self.filters.is_null() {
            let json = self.filters.to_string();
            if json.len() > MAX_FILTERS_JSON {
                self.filters = serde_json::json!({ "clipped": bounded(&json, MAX_ROUTE) });
            }
        }
        self.error = self.error.map(|e| bounded(&e, MAX_ROUTE));
        self
    }
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

/// The file appended to, its size, the hash of its last line (the chain's head) and its number.
struct Open {
    file: File,
    size: u64,
    head: String,
    seq: u64,
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
        let last = [path.to_path_buf(), rotated(path, 1)]
            .iter()
            .find_map(|f| last_line(f));
        let (head, seq) = match &last {
            None => (GENESIS.to_string(), 0),
            Some(l) => (
                line_hash(l.as_bytes()),
                serde_json::from_str::<AuditRecord>(l).map_or(0, |r| r.seq),
            ),
        };
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            keep_for,
            file: Mutex::new(Open {
                file,
                size,
                head,
                seq,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (its client-chosen strings clipped), numbered and chained to the one
    /// before, and flushes it to the OS before returning.
    pub fn append(&self, record: AuditRecord) -> std::io::Result<()> {
        let mut open = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit lock poisoned"))?;
        let record = record.bounded();
        // Its length but for `seq` and `prev`, set below (at most 20 digits and 64).
        let length = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)?
            .len() as u64
            + 85;
        if open.size + length > self.max_bytes && open.size > 0 {
            let removed = self.rotate()?;
            open.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            open.size = 0;
            if let Some(removed) = removed {
                // On record before anything else in the new file.
                let note = AuditRecord {
                    time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    principal: "kpilens".into(),
                    method: "AUDIT".into(),
                    route: "(lines removed by the retention policy)".into(),
                    removed: Some(removed),
                    ..AuditRecord::default()
                };
                self.write_line(&mut open, note)?;
            }
        }
        self.write_line(&mut open, record)
    }

    /// Numbers and chains the record, writes its line and flushes it; then the head moves on.
    fn write_line(&self, open: &mut Open, mut record: AuditRecord) -> std::io::Result<()> {
        record.seq = open.seq + 1;
        record.prev = open.head.clone();
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        let hash = line_hash(&line);
        line.push(b'\n');
        open.file.write_all(&line)?;
        open.file.flush()?;
        open.size += line.len() as u64;
        open.head = hash;
        open.seq = record.seq;
        Ok(())
    }

    /// audit.log.N -> .N+1, ..., audit.log -> .1; then the oldest files the retention policy
    /// lets go are removed: from the newest that is older than the age kept on (every file
    /// after it is older still), or, where no age is set, those beyond the count kept. Never a
    /// file the policy keeps, however many there are. What was removed, for the record.
    fn rotate(&self) -> std::io::Result<Option<Removed>> {
        let count = rotated_count(&self.path);
        for i in (1..=count).rev() {
            std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1))?;
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        let count = count + 1;
        let first_removed = match self.keep_for {
            Some(age) => (2..=count).find(|&i| {
                std::fs::metadata(rotated(&self.path, i))
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
            }),
            None => (count > self.keep).then_some(self.keep + 1),
        };
        let Some(first) = first_removed else {
            if count > self.keep {
                tracing::warn!(
                    files = count,
                    keep = self.keep,
                    "the audit trail holds more files than --audit-keep: none is older than --audit-keep-days, so all are kept"
                );
            }
            return Ok(None);
        };
        let policy = match self.keep_for {
            Some(age) => format!(
                "rotated files older than {} days (--audit-keep-days)",
                age.as_secs() / 86_400
            ),
            None => format!(
                "rotated files beyond the newest {} (--audit-keep)",
                self.keep
            ),
        };
        let newest = last_line(&rotated(&self.path, first));
        let oldest = first_line_of(&rotated(&self.path, count));
        for i in first..=count {
            std::fs::remove_file(rotated(&self.path, i))?;
        }
        let seq_of = |l: &Option<String>| {
            l.as_deref()
                .and_then(|l| serde_json::from_str::<AuditRecord>(l).ok())
                .map_or(0, |r| r.seq)
        };
        Ok(Some(Removed {
            first_seq: seq_of(&oldest),
            last_seq: seq_of(&newest),
            last_hash: newest.map_or_else(String::new, |l| line_hash(l.as_bytes())),
            files: count - first + 1,
            policy,
        }))
    }
}

/// How many rotated files there are: the highest N of `audit.log.N` beside the log.
fn rotated_count(path: &Path) -> usize {
    rotated_numbers(path).into_iter().max().unwrap_or(0)
}

/// The N of every `audit.log.N` beside the log, in no order.
fn rotated_numbers(path: &Path) -> Vec<usize> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix(&prefix)
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|&n| n > 0)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The non-empty lines of a file (none if it cannot be opened).
fn lines_of(path: &Path) -> impl Iterator<Item = String> {
    File::open(path)
        .ok()
        .into_iter()
        .flat_map(|f| BufReader::new(f).lines().map_while(Result::ok))
        .filter(|l| !l.is_empty())
}

fn first_line_of(path: &Path) -> Option<String> {
    lines_of(path).next()
}

fn last_line(path: &Path) -> Option<String> {
    lines_of(path).last()
}

/// The log's files, oldest first.
fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut numbers = rotated_numbers(path);
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    let mut files: Vec<PathBuf> = numbers.into_iter().map(|n| rotated(path, n)).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Where an intact trail starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailStart {
    /// At the first line ever written.
    FirstLine,
    /// At line `first_kept`, after lines the retention policy removed, as the trail records.
    AfterRemoval { first_kept: u64, policy: String },
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every line chains to the one before; `lines` over `files` files.
    Intact {
        lines: u64,
        files: usize,
        start: TrailStart,
    },
    /// The first line that does not chain: file, line number (from 1; 0 for a file missing
    /// whole), why.
    Broken {
        file: PathBuf,
        line: u64,
        reason: String,
    },
}

/// Checks the trail: no rotated file missing between the others, every line chained to and
/// numbered after the one before, and a start at the first line ever written or where a
/// recorded retention removal left it.
pub fn verify(path: &Path) -> std::io::Result<Verified> {
    let mut numbers = rotated_numbers(path);
    numbers.sort_unstable();
    if let Some(missing) = (1..).zip(&numbers).find(|(expected, n)| *n != expected) {
        return Ok(Verified::Broken {
            file: rotated(path, missing.0),
            line: 0,
            reason: format!(
                "the file is missing: the rotated files go up to {}, and only the oldest are ever removed (by the retention policy)",
                rotated(path, numbers[numbers.len() - 1]).display()
            ),
        });
    }
    let files = files_oldest_first(path);
    let removals = recorded_removals(&files)?;
    // The hash and number of the line before.
    let mut before: Option<(String, u64)> = None;
    let mut start = TrailStart::FirstLine;
    let mut lines = 0;
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
            match &before {
                None if record.prev == GENESIS => {}
                None => match removals.iter().find(|r| {
                    r.last_hash == record.prev && (record.seq == 0 || r.last_seq + 1 == record.seq)
                }) {
                    Some(removal) => {
                        start = TrailStart::AfterRemoval {
                            first_kept: record.seq,
                            policy: removal.policy.clone(),
                        }
                    }
                    None => {
                        return Ok(broken(format!(
                            "the trail starts here, at line {} of all written: the lines before it are missing, and no removal by the retention policy is recorded for them",
                            record.seq
                        )));
                    }
                },
                Some((hash, seq)) if *hash != record.prev => {
                    return Ok(broken(if *seq > 0 && record.seq > seq + 1 {
                        format!(
                            "lines {} to {} of all written are missing before this one (removed from a file, or with a file)",
                            seq + 1,
                            record.seq - 1
                        )
                    } else {
                        "its prev is not the hash of the line before: that line, or this one, was changed, inserted or removed".into()
                    }));
                }
                Some((_, seq)) if *seq > 0 && record.seq != seq + 1 => {
                    return Ok(broken(format!(
                        "numbered {} after line {}: the numbering was changed",
                        record.seq, seq
                    )));
                }
                Some(_) => {}
            }
            before = Some((line_hash(line.as_bytes()), record.seq));
            lines += 1;
        }
    }
    Ok(Verified::Intact {
        lines,
        files: files.len(),
        start,
    })
}

/// The retention removals the trail records (the log's own lines after a rotation).
fn recorded_removals(files: &[PathBuf]) -> std::io::Result<Vec<Removed>> {
    let mut removals = Vec::new();
    for f in files {
        for line in BufReader::new(File::open(f)?).lines() {
            let line = line?;
            if line.contains("\"removed\":")
                && let Ok(AuditRecord {
                    removed: Some(r), ..
                }) = serde_json::from_str(&line)
            {
                removals.push(r);
            }
        }
    }
    Ok(removals)
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

/// The newest `limit` matching records of the log and its rotations, oldest first, and how
/// many matched in all. Holds no more than `limit` records, however large the trail.
pub fn search(
    path: &Path,
    query: &AuditQuery,
    limit: usize,
) -> std::io::Result<(Vec<AuditRecord>, u64)> {
    let mut newest = std::collections::VecDeque::with_capacity(limit.min(4096));
    let mut matched = 0;
    for f in &files_oldest_first(path) {
        for line in BufReader::new(File::open(f)?).lines() {
            let line = line?;
            if let Ok(r) = serde_json::from_str::<AuditRecord>(&line)
                && query.matches(&r)
            {
                matched += 1;
                if limit == 0 {
                    continue;
                }
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(r);
            }
        }
    }
    Ok((newest.into(), matched))
}
