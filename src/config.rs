//! Runtime settings shared by `serve`, `query` and `explain`. Every bound has a default that
//! suits a 2-core, few-GiB machine; each is a CLI flag and a `KPILENS_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

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
    /// The years a request may name (time ranges, as-of dates): a date outside them is a 422.
    #[arg(long, env = "KPILENS_MIN_YEAR", default_value_t = 1900)]
    pub min_year: i32,
    #[arg(long, env = "KPILENS_MAX_YEAR", default_value_t = 2200)]
    pub max_year: i32,
    /// The auth config (roles, JWT keys, API keys). Without it the server refuses to start,
    /// unless --no-auth is given.
    #[arg(long = "auth", env = "KPILENS_AUTH")]
    pub auth_file: Option<PathBuf>,
    /// Serve without authentication (a trusted local setup): every request sees the whole bank,
    /// personal data masked.
    #[arg(long, env = "KPILENS_NO_AUTH", conflicts_with = "auth_file")]
    pub no_auth: bool,
    /// The audit log (JSON lines), rotated by size. Default: `audit.log` in the state folder.
    #[arg(long, env = "KPILENS_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    #[arg(long, env = "KPILENS_AUDIT_MAX_MB", default_value_t = 64)]
    pub audit_max_mb: u64,
    /// With `--audit-keep-days 0`: rotated audit files kept (audit.log.1 ... .N), the older
    /// ones removed at the next rotation (and the removal recorded in the trail).
    #[arg(long, env = "KPILENS_AUDIT_KEEP", default_value_t = 5)]
    pub audit_keep: usize,
    /// Rotated audit files older than this many days are removed at the next rotation (and the
    /// removal recorded in the trail); younger ones are kept however many there are (0: by
    /// count only).
    #[arg(long, env = "KPILENS_AUDIT_KEEP_DAYS", default_value_t = 180)]
    pub audit_keep_days: u64,
    /// Refusals without a valid token that get their own audit line per second (ten times that
    /// at once); the rest are counted in one summary line, so they cannot flush genuine lines.
    #[arg(
        long,
        env = "KPILENS_AUDIT_UNAUTHENTICATED_PER_SECOND",
        default_value_t = 5.0
    )]
    pub audit_unauthenticated_per_second: f64,
    /// Computations that reach the engine at once (a request holds one however many queries it
    /// runs; cached answers take none); others queue.
    #[arg(long, env = "KPILENS_MAX_CONCURRENT", default_value_t = 8)]
    pub max_concurrent: usize,
    /// Of those, the most one principal holds at once, so one user cannot starve the others
    /// (past it: 429 with Retry-After).
    #[arg(
        long,
        env = "KPILENS_MAX_CONCURRENT_PER_PRINCIPAL",
        default_value_t = 3
    )]
    pub max_concurrent_per_principal: usize,
    /// How long a request queues for a slot before a 503 (or 429) with Retry-After.
    #[arg(long, env = "KPILENS_QUEUE_WAIT_MS", default_value_t = 2000)]
    pub queue_wait_ms: u64,
    /// Requests per second per principal (a token bucket), and its burst.
    #[arg(long, env = "KPILENS_RATE_PER_SECOND", default_value_t = 50.0)]
    pub rate_per_second: f64,
    #[arg(long, env = "KPILENS_RATE_BURST", default_value_t = 200.0)]
    pub rate_burst: f64,
    /// Open connections at most; past it new ones wait in the kernel's backlog, so the server
    /// never runs out of file handles.
    #[arg(long, env = "KPILENS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections from one client address at most (its share of `max_connections` and of
    /// the reserve); past it its new connections are closed at once. Behind a reverse proxy
    /// every client has the proxy's address: raise it there.
    #[arg(
        long,
        env = "KPILENS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,
    /// Connections kept beyond `max_connections` for short requests: each answers one request
    /// (`/healthz`, a query) and closes, and serves no event stream. While hogs hold every
    /// ordinary connection, a probe and a user still get in.
    #[arg(long, env = "KPILENS_RESERVE_CONNECTIONS", default_value_t = 32)]
    pub reserve_connections: usize,
    /// A request's head must arrive within this; it is also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "KPILENS_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A response must make progress within this: a connection whose client stops reading (so
    /// that nothing of its response can be written for this long) is closed.
    #[arg(long, env = "KPILENS_WRITE_TIMEOUT_MS", default_value_t = 15_000)]
    pub write_timeout_ms: u64,
    /// Requests on one connection at most, pipelined or not; the last is answered with
    /// `Connection: close` (nginx's `keepalive_requests`).
    #[arg(
        long,
        env = "KPILENS_MAX_REQUESTS_PER_CONNECTION",
        default_value_t = 1000
    )]
    pub max_requests_per_connection: usize,
    /// A request's body must arrive within this (408 past it). Bodies are read before a request
    /// may take a compute slot.
    #[arg(long, env = "KPILENS_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Event streams (`/api/v1/events`, `/api/v1/alerts/stream`) open at once at most, and for
    /// one principal at most; past them a new stream is refused (503, 429) with Retry-After.
    #[arg(long, env = "KPILENS_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: usize,
    #[arg(long, env = "KPILENS_MAX_STREAMS_PER_PRINCIPAL", default_value_t = 8)]
    pub max_streams_per_principal: usize,
    /// An event stream ends after this (clients reconnect and catch up), so that none is held
    /// for ever.
    #[arg(long, env = "KPILENS_STREAM_MAX_LIFETIME_SECS", default_value_t = 1800)]
    pub stream_max_lifetime_secs: u64,
    /// On shutdown, how long in-flight requests get to finish before their connections close.
    #[arg(long, env = "KPILENS_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Serve `/metrics` (Prometheus) on this address instead of the main one; without it,
    /// `/metrics` is on the main address, token-free.
    #[arg(long, env = "KPILENS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The time budget of one rollup's build: past it the build is cancelled, reported as not
    /// built, and its queries read the models.
    #[arg(
        long,
        env = "KPILENS_ROLLUP_BUILD_TIMEOUT_MS",
        default_value_t = 300_000
    )]
    pub rollup_build_timeout_ms: u64,
    /// How often the server checks metrics/, sql/, dashboards/ and the data for changes (0: off).
    #[arg(long, env = "KPILENS_RELOAD_MS", default_value_t = 1000)]
    pub reload_ms: u64,
    /// Compute every dashboard's default view at start and after each data or definition change,
    /// so the first reader gets cached answers.
    #[arg(long, env = "KPILENS_WARM_UP", default_value_t = true, action = clap::ArgAction::Set)]
    pub warm_up: bool,
    /// What the server writes (alert store, stored rollups and models, audit log). Default:
    /// `.kpilens` in the data folder, so each data set has its own; give it when the data
    /// folder is read-only.
    #[arg(long = "state", env = "KPILENS_STATE")]
    pub state_dir: Option<PathBuf>,
    /// Serve the cockpit from this folder (index.html, app/, node_modules/) instead of the copy
    /// built into the binary: for front-end work without rebuilding.
    #[arg(long, env = "KPILENS_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// The embedded store of alert states, history and tasks (created if absent). Default:
    /// `alerts.redb` in the state folder.
    #[arg(long, env = "KPILENS_ALERTS_DB")]
    pub alerts_db: Option<PathBuf>,
    /// Where rollups are stored between runs (Parquet and a manifest per rollup), so a start or
    /// a data change loads them or recomputes only the changed dates. Default: `rollups` in
    /// the state folder.
    #[arg(long, env = "KPILENS_ROLLUP_STORE")]
    pub rollup_store: Option<PathBuf>,
    /// Keep rollups in memory only: every start builds them all.
    #[arg(long, env = "KPILENS_NO_ROLLUP_STORE")]
    pub no_rollup_store: bool,
    /// How often the alert scheduler looks for due rules (0: rules are not evaluated).
    #[arg(long, env = "KPILENS_ALERTS_TICK_MS", default_value_t = 1000)]
    pub alerts_tick_ms: u64,
    /// Start the alert clock at this instant (RFC 3339) and let it run from there; the demo
    /// starts it where its data ends. Default: the system clock.
    #[arg(long, env = "KPILENS_ALERTS_CLOCK_START")]
    pub alerts_clock_start: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// POST every alert and task change here (http(s)://host:port/path), signed with the secret.
    #[arg(long, env = "KPILENS_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the X-Kpilens-Signature header (required with --webhook-url).
    #[arg(long, env = "KPILENS_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Let the webhook go to a loopback, private or link-local address (a receiver on the
    /// bank's own network, a test). Refused otherwise: a URL pointing inside is how alerts
    /// would be turned against internal services. Logged as a warning when used.
    #[arg(long, env = "KPILENS_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    #[arg(long, env = "KPILENS_WEBHOOK_ATTEMPTS", default_value_t = 5)]
    pub webhook_attempts: u32,
    /// The first retry's wait; each next one waits twice as long.
    #[arg(long, env = "KPILENS_WEBHOOK_RETRY_MS", default_value_t = 1000)]
    pub webhook_retry_ms: u64,
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
            time_zone: chrono_tz::Asia::Shanghai,
            week_start: chrono::Weekday::Mon,
            min_year: 1900,
            max_year: 2200,
            auth_file: None,
            no_auth: false,
            audit_log: None,
            audit_max_mb: 64,
            audit_keep: 5,
            audit_keep_days: 180,
            audit_unauthenticated_per_second: 5.0,
            max_concurrent: 8,
            max_concurrent_per_principal: 3,
            max_connections: 1024,
            max_connections_per_address: 256,
            reserve_connections: 32,
            header_timeout_ms: 10_000,
            write_timeout_ms: 15_000,
            max_requests_per_connection: 1000,
            body_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
            max_streams: 256,
            max_streams_per_principal: 8,
            stream_max_lifetime_secs: 1800,
            metrics_addr: None,
            rollup_build_timeout_ms: 300_000,
            queue_wait_ms: 2000,
            rate_per_second: 50.0,
            rate_burst: 200.0,
            reload_ms: 1000,
            warm_up: true,
            state_dir: None,
            web_dir: None,
            alerts_db: None,
            rollup_store: None,
            no_rollup_store: false,
            alerts_tick_ms: 1000,
            alerts_clock_start: None,
            webhook_url: None,
            webhook_secret: None,
            webhook_allow_private: false,
            webhook_attempts: 5,
            webhook_retry_ms: 1000,
        }
    }
}

impl Settings {
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.data_dir, self.state_dir.as_deref())
    }

    /// A server writes its state beside the data unless told otherwise; a data folder without
    /// write permission (a shared, read-only copy) needs `--state`.
    pub fn check_state_dir(&self) -> Result<(), String> {
        if self.state_dir.is_none() && self.data_dir_read_only() {
            return Err(format!(
                "the data folder {} is read-only: give --state DIR (KPILENS_STATE) for the audit log, alert store and stored rollups",
                self.data_dir.display()
            ));
        }
        Ok(())
    }

    pub fn alerts_db(&self) -> PathBuf {
        self.alerts_db
            .clone()
            .unwrap_or_else(|| self.state_dir().join("alerts.redb"))
    }

    pub fn audit_log(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| self.state_dir().join("audit.log"))
    }

    /// The rollup store's folder, or none when rollups live in memory only: asked for, or the
    /// default state folder would be inside a read-only data folder (`validate` and `test` over
    /// a shared data set write nothing into it; `serve` refuses it first, `check_state_dir`).
    pub fn rollup_store(&self) -> Option<PathBuf> {
        if self.no_rollup_store {
            return None;
        }
        if let Some(dir) = &self.rollup_store {
            return Some(dir.clone());
        }
        (self.state_dir.is_some() || !self.data_dir_read_only())
            .then(|| self.state_dir().join("rollups"))
    }

    /// A data set shared read-only (the bank's extract, `../shared`): nothing is written into it.
    fn data_dir_read_only(&self) -> bool {
        std::fs::metadata(&self.data_dir).is_ok_and(|m| m.permissions().readonly())
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs(self.query_timeout_secs)
    }
}

/// The state folder: the one given, else `.kpilens` in the data folder.
pub fn state_dir(data_dir: &std::path::Path, given: Option<&std::path::Path>) -> PathBuf {
    given
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join(".kpilens"))
}
