//! `kpilens serve`: the port first (it answers while the catalog opens), then the service.

use std::net::SocketAddr;
use std::sync::Arc;

use kpilens::config::Settings;
use kpilens::server;
use kpilens::service::KpiService;

use super::open_for_serving;

/// Where a server keeps what it writes, printed at start.
pub(super) fn print_paths(settings: &Settings) {
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
pub(super) async fn open_answering(
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

pub async fn run(addr: SocketAddr, settings: Settings) -> Result<(), String> {
    settings.check_state_dir()?;
    let (listener, service) = open_answering(addr, &settings).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    print_paths(&settings);
    println!(
        "kpilens serving {} metrics on http://{local}",
        service.state().catalog().metrics.len()
    );
    server::serve(&settings, service, listener)
        .await
        .map_err(|e| e.to_string())
}
