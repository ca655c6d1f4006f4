//! Binding and serving, with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api;
use crate::config::Settings;
use crate::service::KpiService;

/// Serves until Ctrl-C / SIGTERM; in-flight requests finish first.
pub async fn serve(
    settings: &Settings,
    service: Arc<KpiService>,
    listener: TcpListener,
) -> std::io::Result<()> {
    let web = Arc::new(api::web::WebAssets::load(&settings.project_dir.join("web")));
    let app = api::router(service, web, settings.max_body_kb * 1024);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
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
