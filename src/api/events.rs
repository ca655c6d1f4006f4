//! Server-sent event streams: `GET /api/v1/events` (the serving state's changes, for the open
//! cockpit to refetch) and the one stream shape the alert stream shares.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, watch};

use crate::service::{KpiService, StateChange};

/// Comments this often keep proxies and the browser from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A stream of `first` (if any), then each message `to_event` makes an event of (it returns
/// `None` for one this client may not see), until the server closes. A client that fell behind
/// gets `event: lagged` with how many it missed, and the stream goes on.
pub(super) fn stream<T: Clone + Send + 'static>(
    first: Option<Event>,
    receiver: broadcast::Receiver<T>,
    closing: watch::Receiver<bool>,
    to_event: impl Fn(&T) -> Option<Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = futures::stream::iter(first.map(Ok));
    let changes = futures::stream::unfold(
        (receiver, closing, to_event),
        |(mut receiver, mut closing, to_event)| async move {
            loop {
                let received = tokio::select! {
                    r = receiver.recv() => r,
                    // The server is shutting down: end the stream, so the shutdown is not held.
                    _ = closing.wait_for(|closing| *closing) => return None,
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
                return Some((Ok(event), (receiver, closing, to_event)));
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
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (receiver, closing, now) = service.subscribe_changes();
    stream(
        Some(json_event("state", &now)),
        receiver,
        closing,
        |change: &StateChange| Some(json_event(change.name(), change)),
    )
}
