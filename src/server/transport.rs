//! The listening socket, bounded: each connection is served by hyper's HTTP/1 with a header
//! read timeout (hyper restarts it whenever it waits for a request head, so it also closes idle
//! keep-alive connections and connections that send half a header), at most `max_connections`
//! are open at once (past that, new ones wait in the kernel's backlog rather than take the
//! process's last file handles), and shutdown lets in-flight requests finish for a grace period,
//! then closes what is left (an alert stream, a stuck client).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Settings;

#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl TransportLimits {
    pub fn of(settings: &Settings) -> Self {
        Self {
            max_connections: settings.max_connections.max(1),
            header_timeout: Duration::from_millis(settings.header_timeout_ms.max(1)),
            shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains for the grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: TransportLimits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as we go.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file handles or a connection reset before accept: wait a little
                    // rather than spin; the connections already open keep being served.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the shutdown grace period; closing them"
            );
        }
    }
    connections.shutdown().await;
}
