//! The listening socket, bounded so that no client can take the port off line:
//! - each connection is served by hyper's HTTP/1 with a header read timeout (restarted whenever
//!   it waits for a request head, so it also closes idle keep-alive connections and connections
//!   that send half a header) and a write timeout (a client that stops reading is closed);
//! - at most `max_requests_per_connection` requests on one connection, pipelined or not;
//! - at most `max_connections` ordinary connections, a reserve of short ones beyond it, and a
//!   share of both per client address (`places`); past that new ones wait in the kernel's
//!   backlog rather than take the process's last file handles;
//! - shutdown lets in-flight requests finish for a grace period, then closes what is left (an
//!   event stream, a stuck client).

mod connection;
mod places;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::config::Settings;
use connection::ConnectionService;
use places::Places;

#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub reserve_connections: usize,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
    pub max_requests_per_connection: usize,
    pub shutdown_grace: Duration,
}

impl TransportLimits {
    pub fn of(settings: &Settings) -> Self {
        Self {
            max_connections: settings.max_connections.max(1),
            max_connections_per_address: settings.max_connections_per_address.max(1),
            reserve_connections: settings.reserve_connections,
            header_timeout: Duration::from_millis(settings.header_timeout_ms.max(1)),
            write_timeout: Duration::from_millis(settings.write_timeout_ms.max(1)),
            max_requests_per_connection: settings.max_requests_per_connection.max(1),
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
    let (listener, draining) = accept_until(listener, router, limits, shutdown).await;
    drop(listener);
    draining.await;
}

/// Serves `router` on `listener` until `shutdown` completes; then gives the listener back (to
/// serve another router on the same port) with the drain of the connections still open: they
/// finish their request, keep-alive ones are closed, and past the grace period the rest.
pub async fn accept_until(
    listener: TcpListener,
    router: Router,
    limits: TransportLimits,
    shutdown: impl Future<Output = ()>,
) -> (TcpListener, impl Future<Output = ()>) {
    let places = Places::new(
        limits.max_connections,
        limits.reserve_connections,
        limits.max_connections_per_address,
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as we go.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            () = places.room() => {}
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        let place = match places.take(peer.ip()) {
            Ok(place) => place,
            Err(why) => {
                // Closed at once: its address holds its share. (`Full` cannot happen: only
                // this loop takes places, and it waited for room.)
                tracing::debug!(address = %peer.ip(), ?why, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let service = ConnectionService::new(
            router.clone(),
            peer,
            place.kind,
            limits.max_requests_per_connection,
        );
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(place);
        });
    }
    let draining = async move {
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
    };
    (listener, draining)
}
