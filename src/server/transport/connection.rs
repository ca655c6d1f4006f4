//! The service one connection is answered by: the application's router, counting the requests
//! of the connection so that the last one it may make is answered with `Connection: close`
//! (hyper then reads no further pipelined request), giving each request the peer's address, and
//! marking requests that came on a reserve place so that the application serves them no event
//! stream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::Incoming;
use tower::Service;

use super::places::PlaceKind;
use crate::api::ReservePlace;

pub(super) struct ConnectionService {
    router: Router,
    peer: SocketAddr,
    kind: PlaceKind,
    served: AtomicUsize,
    last: usize,
}

impl ConnectionService {
    pub(super) fn new(
        router: Router,
        peer: SocketAddr,
        kind: PlaceKind,
        max_requests: usize,
    ) -> Self {
        let last = match kind {
            PlaceKind::Ordinary => max_requests.max(1),
            PlaceKind::Reserve => 1,
        };
        Self {
            router,
            peer,
            kind,
            served: AtomicUsize::new(0),
            last,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        let close = served >= self.last;
        // Who asked, for the audit line (axum's `ConnectInfo`, as its own serving would set).
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if self.kind == PlaceKind::Reserve {
            request.extensions_mut().insert(ReservePlace);
        }
        let answer = self.router.clone().call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if close {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}
