//! The command line: one file per command, each a thin caller of the library (the service, the
//! server, the generator, the audit trail). `main.rs` parses and reports.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kpilens::config::Settings;
use kpilens::datagen;
use kpilens::service::KpiService;

mod audit;
mod demo;
mod generate;
mod query;
mod serve;
mod test;
mod validate;

#[derive(Parser)]
#[command(
    name = "kpilens",
    version,
    about = "Bank KPI cockpit backend: YAML metrics on DataFusion"
)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "KPILENS_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate the demo bank if absent, then serve this repository's metrics on 127.0.0.1:8080.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[command(flatten)]
        settings: Settings,
    },
    /// Serve the HTTP API.
    Serve {
        #[arg(long, env = "KPILENS_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        #[command(flatten)]
        settings: Settings,
    },
    /// Run one query (JSON, as for POST /api/v1/query) and print the result.
    Query {
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        query_json: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Show the logical plan (raw and optimised) and the equivalent SQL of a query.
    Explain {
        query_json: String,
        /// Also run the query and print its physical plan with each operator's metrics.
        #[arg(long)]
        analyze: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Validate the project's definitions against the data; exits non-zero on any error.
    Validate {
        /// Rows of each model read to catch errors only the data shows (0: definitions only).
        #[arg(long, default_value_t = 10_000)]
        sample_rows: usize,
        /// Read every row of every model instead of a sample.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        settings: Settings,
    },
    /// Run the metric tests declared in `tests:` blocks; exits non-zero if any fails.
    Test {
        #[command(flatten)]
        settings: Settings,
    },
    /// Search the audit log (and its rotations); prints matching JSON lines, oldest first.
    /// `kpilens audit verify` checks its hash chain instead.
    Audit {
        #[command(subcommand)]
        action: Option<AuditAction>,
        /// Default: `audit.log` in the state folder, as the server writes it.
        #[arg(long, env = "KPILENS_AUDIT_LOG", global = true)]
        file: Option<PathBuf>,
        /// The data and state folders the server ran with (to find its audit log).
        #[arg(
            long = "data",
            env = "KPILENS_DATA",
            default_value = "data/demo",
            global = true
        )]
        data_dir: PathBuf,
        #[arg(long = "state", env = "KPILENS_STATE", global = true)]
        state_dir: Option<PathBuf>,
        #[arg(long)]
        principal: Option<String>,
        /// A part of the request path, e.g. /api/v1/query.
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        metric: Option<String>,
        /// A status (403) or a class (4xx).
        #[arg(long)]
        status: Option<String>,
        /// RFC 3339 time: records at or after it.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Write the synthetic demo bank as Parquet.
    Generate {
        #[arg(long, default_value = "data/demo")]
        out: PathBuf,
        /// 1.0 = 10,000 customers and about 100,000 loan_month rows; scales linearly.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Days of daily deposit balances at the end of the history (0: an empty deposit_day).
        #[arg(long, default_value_t = datagen::DAILY_DAYS)]
        daily_days: u32,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the hash chain of the log and its rotations; names the first broken line.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Runs one command; the error is the message to print.
pub async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Demo {
            addr,
            scale,
            settings,
        } => demo::run(addr, scale, settings).await,
        Command::Serve { addr, settings } => serve::run(addr, settings).await,
        Command::Query {
            format,
            query_json,
            settings,
        } => query::query(format, &query_json, &settings).await,
        Command::Explain {
            query_json,
            analyze,
            settings,
        } => query::explain(&query_json, analyze, &settings).await,
        Command::Validate {
            sample_rows,
            full,
            settings,
        } => validate::run(sample_rows, full, &settings).await,
        Command::Test { settings } => test::run(&settings).await,
        Command::Audit {
            action: Some(AuditAction::Verify),
            file,
            data_dir,
            state_dir,
            ..
        } => audit::verify(audit::file(file, &data_dir, state_dir.as_deref())),
        Command::Audit {
            action: None,
            file,
            data_dir,
            state_dir,
            principal,
            route,
            metric,
            status,
            since,
            limit,
        } => {
            let query = kpilens::security::audit::AuditQuery {
                principal,
                route,
                metric,
                status,
                since,
            };
            audit::search(
                audit::file(file, &data_dir, state_dir.as_deref()),
                &query,
                limit,
            )
        }
        Command::Generate {
            out,
            scale,
            seed,
            daily_days,
        } => generate::run(out, scale, seed, daily_days),
    }
}

async fn open(settings: &Settings) -> Result<KpiService, String> {
    KpiService::open(settings).await.map_err(not_valid)
}

/// As a server opens it: stored rollups that are current load, the rest build once it listens.
async fn open_for_serving(settings: &Settings) -> Result<KpiService, String> {
    KpiService::open_for_serving(settings)
        .await
        .map_err(not_valid)
}

fn not_valid(errors: kpilens::catalog::CatalogErrors) -> String {
    format!("the project does not validate:\n{errors}")
}
