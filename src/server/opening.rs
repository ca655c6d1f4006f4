//! The port answers while the service opens. Validating the catalog, loading the stored rollups
//! and materialising the SQL models take seconds at 100M rows, and a liveness probe that gets no
//! answer kills the server before it is up. Until the service is open, `/healthz` says
//! `opening` (alive) and every other route, `/readyz` included, is a 503 `opening` with
//! `Retry-After` (not ready); then the same listener serves the application.

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::transport::{self, TransportLimits};

/// The opening answers on a listener, until [`Opening::finish`] takes the listener back.
pub struct Opening {
    stop: oneshot::Sender<()>,
    accepting: JoinHandle<TcpListener>,
}

impl Opening {
    pub fn answer(listener: TcpListener, limits: TransportLimits) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let accepting = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let (listener, draining) =
                transport::accept_until(listener, crate::api::opening_router(), limits, stopped)
                    .await;
            // The connections it answered finish their request and close; clients reconnect
            // to the application.
            tokio::spawn(draining);
            listener
        });
        Self { stop, accepting }
    }

    /// The listener back, for the opened service; no connection is refused in between (new
    /// ones wait in the kernel's backlog).
    pub async fn finish(self) -> std::io::Result<TcpListener> {
        let _ = self.stop.send(());
        self.accepting.await.map_err(std::io::Error::other)
    }
}
