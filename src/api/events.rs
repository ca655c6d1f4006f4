//! Server-sent event streams: `GET /api/v1/events` (the serving state's changes, for the open
//! cockpit to refetch) and the one stream shape the alert stream shares. A stream holds a
//! connection for as long as it is open, so streams are admitted within limits
//! ([`OpenStreams`]): a number overall and per principal, none on a reserve connection, and a
//! maximum lifetime (clients reconnect and catch up).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, watch};

use super::{ApiError, ReservePlace};
use crate::security::Principal;
use crate::semantic::{ErrorKind, QueryError};
use crate::service::{KpiService, StateChange};

/// Comments this often keep proxies and the browser from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub overall: usize,
    pub per_principal: usize,
    pub max_lifetime: Duration,
}

impl StreamLimits {
    pub fn of(settings: &crate::config::Settings) -> Self {
        Self {
            overall: settings.max_streams.max(1),
            per_principal: settings.max_streams_per_principal.max(1),
            max_lifetime: Duration::from_secs(settings.stream_max_lifetime_secs.max(1)),
        }
    }
}

/// The streams open now, overall and by principal.
pub struct OpenStreams {
    limits: StreamLimits,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

impl OpenStreams {
    pub fn new(limits: StreamLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for one more stream of `principal`: its ticket, or the refusal to answer with.
    pub(super) fn admit(
        self: &Arc<Self>,
        principal: &Principal,
        reserve: Option<Extension<ReservePlace>>,
    ) -> Result<StreamTicket, ApiError> {
        let refused = |kind, code, message: String, retry| {
            let mut e = QueryError::new(kind, code, message);
            e.retry_after_secs = Some(retry);
            ApiError::Query(e)
        };
        if reserve.is_some() {
            return Err(refused(
                ErrorKind::Saturated,
                "busy",
                "the server is too busy to open an event stream now; retry shortly".into(),
                5,
            ));
        }
        let mut open = self.open.lock().expect("open streams");
        let own = open.1.get(&principal.name).copied().unwrap_or(0);
        if own >= self.limits.per_principal {
            return Err(refused(
                ErrorKind::RateLimited,
                "too_many_streams",
                format!(
                    "this principal has {own} event streams open, its share; close one (a tab) or retry later"
                ),
                30,
            ));
        }
        if open.0 >= self.limits.overall {
            return Err(refused(
                ErrorKind::Saturated,
                "streams_full",
                format!(
                    "{} event streams are open, the server's most; retry shortly",
                    open.0
                ),
                10,
            ));
        }
        open.0 += 1;
        *open.1.entry(principal.name.clone()).or_default() += 1;
        Ok(StreamTicket {
            streams: self.clone(),
            principal: principal.name.clone(),
            ends: tokio::time::Instant::now() + self.limits.max_lifetime,
        })
    }
}

/// One admitted stream: its place, given back when the stream ends, and when it must end.
pub(super) struct StreamTicket {
    streams: Arc<OpenStreams>,
    principal: String,
    ends: tokio::time::Instant,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("open streams");
        open.0 -= 1;
        if let Some(own) = open.1.get_mut(&self.principal) {
            *own -= 1;
            if *own == 0 {
                open.1.remove(&self.principal);
            }
        }
    }
}

/// A stream of `first` (if any), then each message `to_event` makes an event of (it returns
/// `None` for one this client may not see), until the server closes or the ticket's lifetime
/// ends. A client that fell behind gets `event: lagged` with how many it missed, and the stream
/// goes on.
pub(super) fn stream<T: Clone + Send + 'static>(
    ticket: StreamTicket,
    first: Option<Event>,
    receiver: broadcast::Receiver<T>,
    closing: watch::Receiver<bool>,
    to_event: impl Fn(&T) -> Option<Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = futures::stream::iter(first.map(Ok));
    let changes = futures::stream::unfold(
        (receiver, closing, to_event, ticket),
        |(mut receiver, mut closing, to_event, ticket)| async move {
            loop {
                let received = tokio::select! {
                    r = receiver.recv() => r,
                    // The server is shutting down: end the stream, so the shutdown is not held.
                    _ = closing.wait_for(|closing| *closing) => return None,
                    // Its lifetime is over: the client reconnects (and is told what serves).
                    () = tokio::time::sleep_until(ticket.ends) => return None,
                };
                let event = match received {
                    Ok(message) => match to_event(&message) {
                        Some(event) => event,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        Event::default().event("lagged").data(n.to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(event), (receiver, closing, to_event, ticket)));
            }
        },
    );
    Sse::new(futures::StreamExt::chain(first, changes))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// A named event with JSON data.
pub(super) fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("unserialisable"))
}

/// `GET /api/v1/events`: `event: state` (what serves now) first, then `data_changed` (the
/// tables with new data and their versions) and `catalog_changed` (new definitions) as the
/// serving state changes. Table names are the catalog's, which every signed-in principal sees.
pub(super) async fn changes(
    State(service): State<Arc<KpiService>>,
    Extension(principal): Extension<Principal>,
    Extension(streams): Extension<Arc<OpenStreams>>,
    reserve: Option<Extension<ReservePlace>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let ticket = streams.admit(&principal, reserve)?;
    let (receiver, closing, now) = service.subscribe_changes();
    Ok(stream(
        ticket,
        Some(json_event("state", &now)),
        receiver,
        closing,
        |change: &StateChange| Some(json_event(change.name(), change)),
    ))
}
