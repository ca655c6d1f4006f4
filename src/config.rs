//! Runtime settings shared by `serve`, `query` and `explain`. Every bound has a default that
//! suits a 2-core, few-GiB machine; each is a CLI flag and a `KPILENS_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::semantic::QueryLimits;

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Folder holding metrics/, sql/ and dashboards/.
    #[arg(long = "project", env = "KPILENS_PROJECT", default_value = ".")]
    pub project_dir: PathBuf,
    /// Where the relative paths of file sources resolve.
    #[arg(long = "data", env = "KPILENS_DATA", default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Result cache budget in MiB (weighed by the size of cached results).
    #[arg(long, env = "KPILENS_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,
    /// DataFusion memory pool in MiB, shared by all running queries.
    #[arg(long, env = "KPILENS_MEMORY_MB", default_value_t = 2048)]
    pub memory_mb: usize,
    /// Per-query time budget in seconds.
    #[arg(long, env = "KPILENS_QUERY_TIMEOUT_SECS", default_value_t = 30)]
    pub query_timeout_secs: u64,
    /// Most rows one query may return.
    #[arg(long, env = "KPILENS_MAX_ROWS", default_value_t = 50_000)]
    pub max_rows: usize,
    /// Largest accepted request body in KiB.
    #[arg(long, env = "KPILENS_MAX_BODY_KB", default_value_t = 256)]
    pub max_body_kb: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            project_dir: PathBuf::from("."),
            data_dir: PathBuf::from("data/demo"),
            cache_mb: 256,
            memory_mb: 2048,
            query_timeout_secs: 30,
            max_rows: 50_000,
            max_body_kb: 256,
        }
    }
}

impl Settings {
    pub fn limits(&self) -> QueryLimits {
        QueryLimits {
            max_rows: self.max_rows,
            ..QueryLimits::default()
        }
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }
}
