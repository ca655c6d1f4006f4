//! Binding and serving, with graceful shutdown: the gate (auth, request rate, body, audit) is
//! built from the settings, the catalog watcher runs beside the server, and the socket is
//! served within the transport's limits (`transport`).

mod opening;
pub mod transport;

pub use opening::Opening;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::alerts::clock::{Clock, ShiftedClock, SystemClock};
use crate::alerts::{AlertEngine, AlertOptions};
use crate::api;
use crate::api::guard::{AuthMode, Gate, UnauthenticatedBudget};
use crate::config::Settings;
use crate::security::Principal;
use crate::security::audit::AuditLog;
use crate::security::auth::Authenticator;
use crate::security::limits::RateLimiter;
use crate::service::KpiService;

/// The auth mode the settings ask for: `--auth FILE` or `--no-auth`; neither is an error
/// (default deny).
pub fn auth_from_settings(settings: &Settings, service: &KpiService) -> Result<AuthMode, String> {
    match (&settings.auth_file, settings.no_auth) {
        (Some(path), _) => {
            let catalog = service.state();
            Authenticator::load(path, |h| catalog.catalog().hierarchies.get(h).cloned())
                .map(|a| AuthMode::Tokens(Box::new(a)))
                .map_err(|e| format!("auth config: {e}"))
        }
        (None, true) => {
            tracing::warn!("serving WITHOUT authentication (--no-auth): every request sees the whole bank");
            Ok(AuthMode::Disabled)
        }
        (None, false) => Err(
            "no auth config: give --auth FILE (roles, JWT keys, API keys), or --no-auth for a trusted local setup"
                .to_string(),
        ),
    }
}

/// Serves until Ctrl-C / SIGTERM with the settings' auth; in-flight requests finish first.
pub async fn serve(
    settings: &Settings,
    service: Arc<KpiService>,
    listener: TcpListener,
) -> std::io::Result<()> {
    let auth = auth_from_settings(settings, &service).map_err(std::io::Error::other)?;
    serve_with(settings, service, listener, auth, Router::new(), Vec::new()).await
}

/// The application: the router with its gate, and the background tasks it needs (the watcher
/// that reloads and warms, the alert scheduler), stopped when it is dropped. Served over a socket
/// by [`serve_with`]; tests also call its router directly.
pub struct App {
    pub router: Router,
    service: Arc<KpiService>,
    alerts: Arc<AlertEngine>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    /// The server stops taking requests: open streams end.
    pub fn begin_shutdown(&self) {
        self.alerts.close_streams();
        self.service.close_change_streams();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Builds the application over a service: the gate (auth, admission, audit), the alert engine,
/// the cockpit's files, the routes; starts its background tasks.
pub fn app(
    settings: &Settings,
    service: Arc<KpiService>,
    auth: AuthMode,
    extra: Router<Arc<KpiService>>,
    // Principals whose dashboards are warmed besides the whole bank's (the demo's people).
    warm_for: Vec<Principal>,
) -> std::io::Result<App> {
    let gate = Arc::new(Gate {
        auth,
        rate: RateLimiter::new(settings.rate_per_second, settings.rate_burst),
        max_body_bytes: settings.max_body_kb * 1024,
        body_timeout: Duration::from_millis(settings.body_timeout_ms),
        audit: AuditLog::open(
            &settings.audit_log(),
            settings.audit_max_mb * 1024 * 1024,
            settings.audit_keep,
            (settings.audit_keep_days > 0)
                .then(|| Duration::from_secs(settings.audit_keep_days * 86_400)),
        )?,
        streams: api::OpenStreams::new(api::StreamLimits::of(settings)),
        unauthenticated: UnauthenticatedBudget::new(
            settings.audit_unauthenticated_per_second,
            settings.audit_unauthenticated_per_second * 10.0,
        ),
    });
    let web = Arc::new(api::web::WebAssets::load(settings.web_dir.as_deref()));
    let clock: Arc<dyn Clock> = match settings.alerts_clock_start {
        Some(start) => Arc::new(ShiftedClock::starting_at(start.with_timezone(&chrono::Utc))),
        None => Arc::new(SystemClock),
    };
    let alerts = AlertEngine::open(
        service.clone(),
        clock,
        AlertOptions {
            store: settings.alerts_db(),
            webhook: crate::alerts::webhook::WebhookConfig::from_settings(settings)
                .map_err(std::io::Error::other)?,
        },
    )
    .map_err(std::io::Error::other)?;
    let mut tasks = Vec::new();
    if settings.alerts_tick_ms > 0 {
        tasks.push(tokio::spawn(
            alerts
                .clone()
                .run(Duration::from_millis(settings.alerts_tick_ms)),
        ));
    }
    tasks.push(tokio::spawn(service.clone().run_rollup_builder()));
    tasks.push(tokio::spawn(watch(
        service.clone(),
        Duration::from_millis(settings.reload_ms),
        settings.warm_up.then(|| {
            let mut all = vec![Principal::local()];
            all.extend(warm_for);
            all
        }),
    )));
    let router = api::router(
        service.clone(),
        gate,
        web,
        extra,
        settings.max_body_kb * 1024,
        Some(alerts.clone()),
        settings.metrics_addr.is_none(),
    );
    Ok(App {
        router,
        service,
        alerts,
        tasks,
    })
}

/// Serves with a given auth mode and extra routes (the demo's user list) until Ctrl-C / SIGTERM.
pub async fn serve_with(
    settings: &Settings,
    service: Arc<KpiService>,
    listener: TcpListener,
    auth: AuthMode,
    extra: Router<Arc<KpiService>>,
    warm_for: Vec<Principal>,
) -> std::io::Result<()> {
    let app = app(settings, service.clone(), auth, extra, warm_for)?;
    let metrics = match settings.metrics_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
            let router = api::metrics_router(service, Some(app.alerts.clone()));
            let limits = transport::TransportLimits::of(settings);
            Some(tokio::spawn(transport::serve(
                listener,
                router,
                limits,
                std::future::pending(),
            )))
        }
        None => None,
    };
    serve_app(listener, &app, settings, shutdown_signal()).await;
    if let Some(m) = metrics {
        m.abort();
    }
    Ok(())
}

/// Serves an application on a socket within the settings' transport limits until `shutdown`.
pub async fn serve_app(
    listener: TcpListener,
    app: &App,
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()>,
) {
    transport::serve(
        listener,
        app.router.clone(),
        transport::TransportLimits::of(settings),
        async {
            shutdown.await;
            app.begin_shutdown();
        },
    )
    .await
}

/// The server's background loop: reload changed definitions and data every `every` (0: never),
/// and warm the dashboards at start and whenever what answers depend on has changed.
async fn watch(service: Arc<KpiService>, every: Duration, warm_for: Option<Vec<Principal>>) {
    let mut warmed: Option<String> = None;
    loop {
        // Warming waits for the rollups the builder is making: from the models, it would only
        // compete with them for the cores and the pool.
        if let Some(principals) = warm_for.as_ref().filter(|_| service.rollups_ready().0) {
            let stamp = service.state_stamp();
            if warmed.as_ref() != Some(&stamp) {
                crate::dashboard::warm_up(&service, principals).await;
                warmed = Some(stamp);
            }
        }
        let warming_done = warm_for.is_none() || warmed.is_some();
        if every.is_zero() && warming_done {
            return;
        }
        // With reloads off, only the wait for the rollups before warming.
        let tick = if every.is_zero() {
            Duration::from_millis(500)
        } else {
            every
        };
        tokio::time::sleep(tick).await;
        if !every.is_zero() {
            service.reload_if_changed().await;
        }
    }
}

/// Binds first so that the caller can print (or a test can read) the real address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
