//! The `kpilens` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use kpilens::api::guard::AuthMode;
use kpilens::config::Settings;
use kpilens::datagen::{self, GenerateOptions};
use kpilens::demo;
use kpilens::security::Principal;
use kpilens::security::audit::{self, AuditQuery};
use kpilens::semantic::QueryRequest;
use kpilens::server;
use kpilens::service::{DataCheck, KpiService};

#[derive(Parser)]
#[command(
    name = "kpilens",
    version,
    about = "Bank KPI cockpit backend: YAML metrics on DataFusion"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "KPILENS_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum AuditAction {
    /// Check the hash chain of the log and its rotations; names the first broken line.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    kpilens::progress::install_for_stderr();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Demo {
            addr,
            scale,
            settings,
        } => {
            // The demo bank is generated only where it lives by default (`--data` names another
            // project's data, which is served as it is). `deposit_day` is the generator's newest
            // table: older demo data is generated again.
            let demo_bank = settings.data_dir == Path::new(DEMO_DATA);
            let mut settings = settings;
            if settings.check_state_dir().is_err() {
                // A read-only data set (the shared Berka copy): the demo's state goes to a
                // folder of its own under the system's temporary folder.
                let data = std::fs::canonicalize(&settings.data_dir)
                    .unwrap_or_else(|_| settings.data_dir.clone());
                let name = kpilens::text::hex_prefix(
                    &<sha2::Sha256 as sha2::Digest>::digest(data.to_string_lossy().as_bytes()),
                    12,
                );
                settings.state_dir =
                    Some(std::env::temp_dir().join(format!("kpilens-state-{name}")));
            }
            if demo_bank && !settings.data_dir.join("deposit_day").exists() {
                println!(
                    "generating the demo bank (scale {scale}) into {} ...",
                    settings.data_dir.display()
                );
                let report = datagen::generate(&GenerateOptions {
                    out: settings.data_dir.clone(),
                    scale,
                    seed: 42,
                    daily_days: datagen::DAILY_DAYS,
                })
                .map_err(|e| format!("generate: {e}"))?;
                println!("{report}");
            }
            serve_demo(addr, settings).await
        }
        Command::Serve { addr, settings } => serve(addr, settings).await,
        Command::Query {
            format,
            query_json,
            settings,
        } => {
            let (service, req) = open_for(&settings, &query_json).await?;
            let response = service
                .query(&Principal::local(), &req)
                .await
                .map_err(|e| format!("query failed: {e}"))?;
            match format {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&response).expect("serialisable")
                ),
                OutputFormat::Table => print_table(&response),
            }
            Ok(())
        }
        Command::Explain {
            query_json,
            analyze,
            settings,
        } => {
            let (service, req) = open_for(&settings, &query_json).await?;
            if analyze {
                let started = std::time::Instant::now();
                let profile = service
                    .analyze(&Principal::local(), &req)
                    .await
                    .map_err(|e| format!("explain --analyze failed: {e}"))?;
                println!(
                    "-- physical plan with metrics ({} ms)\n{profile}",
                    started.elapsed().as_millis()
                );
                return Ok(());
            }
            let e = service
                .explain(&Principal::local(), &req)
                .await
                .map_err(|e| format!("explain failed: {e}"))?;
            println!(
                "-- logical plan\n{}\n\n-- optimized plan\n{}\n\n-- equivalent SQL\n{}",
                e.logical_plan, e.optimized_plan, e.sql
            );
            Ok(())
        }
        Command::Validate {
            sample_rows,
            full,
            settings,
        } => match KpiService::open(&settings).await {
            Ok(service) => {
                let check = match (full, sample_rows) {
                    (true, _) => Some(DataCheck::Full),
                    (false, 0) => None,
                    (false, n) => Some(DataCheck::Sample(n)),
                };
                if let Some(check) = check {
                    let errors = service.check_data(check).await;
                    if !errors.is_empty() {
                        let errors = kpilens::catalog::CatalogErrors(errors);
                        return Err(format!("{} error(s):\n{errors}", errors.0.len()));
                    }
                }
                let c = service.catalog();
                println!(
                    "ok: catalog {} with {} models, {} measures, {} metrics, {} dimensions, {} hierarchies",
                    c.version,
                    c.models.len(),
                    c.measures.len(),
                    c.metrics.len(),
                    c.dimensions.len(),
                    c.hierarchies.len()
                );
                Ok(())
            }
            Err(errors) => Err(format!("{} error(s):\n{errors}", errors.0.len())),
        },
        Command::Test { settings } => {
            let outcomes = kpilens::metric_tests::run_all(&settings).await?;
            let failed = outcomes.iter().filter(|o| !o.passed()).count();
            for o in &outcomes {
                if o.passed() {
                    println!("ok      {} ({})", o.name, o.file);
                } else {
                    println!("FAILED  {} ({})", o.name, o.file);
                    for f in &o.failures {
                        println!("    {f}");
                    }
                }
            }
            println!(
                "{} metric tests: {} passed, {failed} failed",
                outcomes.len(),
                outcomes.len() - failed
            );
            if failed > 0 {
                Err(format!("{failed} metric test(s) failed"))
            } else {
                Ok(())
            }
        }
        Command::Audit {
            action: Some(AuditAction::Verify),
            file,
            data_dir,
            state_dir,
            ..
        } => {
            let file = audit_file(file, &data_dir, state_dir.as_deref());
            match audit::verify(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            {
                audit::Verified::Intact {
                    lines,
                    files,
                    start,
                } => {
                    let start = match start {
                        audit::TrailStart::FirstLine => {
                            "from the first line ever written".to_string()
                        }
                        audit::TrailStart::AfterRemoval { first_kept, policy } => format!(
                            "from line {first_kept}: the lines before it were removed by the retention policy ({policy}), as the trail records"
                        ),
                    };
                    println!("intact: {lines} line(s) over {files} file(s), {start}");
                    Ok(())
                }
                audit::Verified::Broken {
                    file,
                    line: 0,
                    reason,
                } => Err(format!("broken: {}: {reason}", file.display())),
                audit::Verified::Broken { file, line, reason } => {
                    Err(format!("broken at {}:{line}: {reason}", file.display()))
                }
            }
        }
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
            let query = AuditQuery {
                principal,
                route,
                metric,
                status,
                since,
            };
            let file = audit_file(file, &data_dir, state_dir.as_deref());
            let (records, matched) = audit::search(&file, &query, limit)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            for r in &records {
                println!("{}", serde_json::to_string(r).expect("serialisable"));
            }
            eprintln!("{matched} matching record(s), {} shown", records.len());
            Ok(())
        }
        Command::Generate {
            out,
            scale,
            seed,
            daily_days,
        } => {
            let report = datagen::generate(&GenerateOptions {
                out,
                scale,
                seed,
                daily_days,
            })
            .map_err(|e| format!("generate: {e}"))?;
            println!("{report}");
            Ok(())
        }
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

const DEMO_DATA: &str = "data/demo";

/// Where a server keeps what it writes, printed at start.
fn print_paths(settings: &Settings) {
    println!(
        "project {}, data {}, state {} (audit log {}, alerts {}, stored rollups {})",
        settings.project_dir.display(),
        settings.data_dir.display(),
        settings.state_dir().display(),
        settings.audit_log().display(),
        settings.alerts_db().display(),
        settings
            .rollup_store()
            .map_or("off".to_string(), |p| p.display().to_string()),
    );
}

/// The port first: a clash fails at once, and `/healthz` answers (`opening`) while the catalog
/// and the data open behind it. The listener and the opened service.
async fn open_answering(
    addr: SocketAddr,
    settings: &Settings,
) -> Result<(tokio::net::TcpListener, Arc<KpiService>), String> {
    let listener = server::bind(addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("kpilens at http://{local}: opening the catalog and the data (/healthz answers)");
    let opening =
        server::Opening::answer(listener, server::transport::TransportLimits::of(settings));
    let service = Arc::new(open_for_serving(settings).await?);
    let listener = opening.finish().await.map_err(|e| e.to_string())?;
    Ok((listener, service))
}

async fn serve(addr: SocketAddr, settings: Settings) -> Result<(), String> {
    settings.check_state_dir()?;
    let (listener, service) = open_answering(addr, &settings).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    print_paths(&settings);
    println!(
        "kpilens serving {} metrics on http://{local}",
        service.catalog().metrics.len()
    );
    server::serve(&settings, service, listener)
        .await
        .map_err(|e| e.to_string())
}

/// The demo: named users with printed tokens, and a route the cockpit lists them from.
async fn serve_demo(addr: SocketAddr, mut settings: Settings) -> Result<(), String> {
    let (listener, service) = open_answering(addr, &settings).await?;
    if settings.alerts_clock_start.is_none() && service.catalog().models.contains_key("tickets") {
        // The demo bank's history ends before today: the alert clock starts at 18:00 on its
        // last day, so the record rules (SLAs, maturities, first contacts) see a live bank.
        let catalog = service.catalog();
        let last = service
            .latest_date(
                &catalog,
                "tickets",
                &kpilens::service::RequestContext::named("kpilens"),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(day) = last {
            let zone = settings.time_zone;
            settings.alerts_clock_start = day
                .and_hms_opt(18, 0, 0)
                .and_then(|t| t.and_local_timezone(zone).earliest())
                .map(|t| t.fixed_offset());
        }
        if let Some(start) = settings.alerts_clock_start {
            println!("alert clock starts at {start} (where the demo data ends)");
        }
    }
    // Demo users need the demo bank's org chart (region > branch > rm); another project is
    // served as `serve --no-auth` serves it.
    let (auth, users) = match demo::demo_auth(&service).await {
        Ok((auth, users)) => (AuthMode::Tokens(Box::new(auth)), users),
        Err(why) => {
            println!("no demo users ({why}): serving without sign-in, as --no-auth does");
            (AuthMode::Disabled, Vec::new())
        }
    };
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    print_paths(&settings);
    if !users.is_empty() {
        println!("demo users (tokens valid 12 h; the cockpit lets you pick one):");
    }
    for u in &users {
        println!("  {:<12} {:<28} {}", u.id, u.scope.key(), u.token);
    }
    println!(
        "kpilens serving {} metrics on http://{local}",
        service.catalog().metrics.len()
    );
    let listed = serde_json::to_value(&users).map_err(|e| e.to_string())?;
    let extra = if users.is_empty() {
        axum::Router::new()
    } else {
        axum::Router::new().route(
            "/api/v1/demo/users",
            axum::routing::get(move || async move { axum::Json(listed) }),
        )
    };
    let warm_for = users
        .iter()
        .filter(|u| !u.scope.is_all())
        .map(|u| Principal {
            name: u.id.clone(),
            role: u.role.clone(),
            scope: u.scope.clone(),
            personal_data: false,
        })
        .collect();
    server::serve_with(&settings, service, listener, auth, extra, warm_for)
        .await
        .map_err(|e| e.to_string())
}

/// The audit log `kpilens audit` reads: the one given, else the server's default.
fn audit_file(given: Option<PathBuf>, data_dir: &Path, state_dir: Option<&Path>) -> PathBuf {
    given.unwrap_or_else(|| kpilens::config::state_dir(data_dir, state_dir).join("audit.log"))
}

fn parse_query(text: &str) -> Result<QueryRequest, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("invalid query at {}: {}", e.path(), e.inner()))
}

/// The service and the parsed query of `kpilens query` and `kpilens explain`.
async fn open_for(
    settings: &Settings,
    query_json: &str,
) -> Result<(KpiService, QueryRequest), String> {
    let req = parse_query(query_json)?;
    Ok((open(settings).await?, req))
}

fn print_table(response: &kpilens::service::QueryResponse) {
    let header = response.result.column_names();
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "∅".into(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = response
        .result
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    if let Some(t) = &response.result.totals {
        let mut total: Vec<String> = t.iter().map(cell).collect();
        total[0] = "TOTAL".into();
        rows.push(total);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
    let m = &response.meta;
    println!(
        "-- {} rows, {} in {} ms (data {})",
        m.row_count, m.served_by, m.elapsed_ms, m.data_version
    );
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,datafusion=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines lift a progress bar drawn on the terminal, rather than cut through it.
        .with_writer(|| kpilens::progress::Stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
