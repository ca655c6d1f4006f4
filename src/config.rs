//! Runtime settings shared by `serve`, `query` and `explain`. Every bound has a default that
//! suits a 2-core, few-GiB machine; each is a CLI flag and a `KPILENS_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::semantic::QueryLimits;
use crate::semantic::calendar::CalendarConfig;

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
    /// IANA time zone timestamps are bucketed in (dates are taken as they are).
    #[arg(long, env = "KPILENS_TIME_ZONE", default_value = "Asia/Shanghai", value_parser = parse_time_zone)]
    pub time_zone: chrono_tz::Tz,
    /// First day of a week: monday ... sunday.
    #[arg(long, env = "KPILENS_WEEK_START", default_value = "monday", value_parser = parse_weekday)]
    pub week_start: chrono::Weekday,
}

fn parse_time_zone(s: &str) -> Result<chrono_tz::Tz, String> {
    s.parse()
        .map_err(|_| format!("unknown time zone '{s}' (an IANA name such as Asia/Shanghai)"))
}

fn parse_weekday(s: &str) -> Result<chrono::Weekday, String> {
    s.parse()
        .map_err(|_| format!("unknown weekday '{s}' (monday ... sunday)"))
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
            time_zone: CalendarConfig::default().time_zone,
            week_start: CalendarConfig::default().week_start,
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

    pub fn calendar(&self) -> CalendarConfig {
        CalendarConfig {
            time_zone: self.time_zone,
            week_start: self.week_start,
        }
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }
}
