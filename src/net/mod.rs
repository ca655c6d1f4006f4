//! Outgoing HTTP(S) for the few places kpilens calls out: alert webhooks and an identity
//! provider's JWK set. hyper's client (hyper is in the tree through axum) over rustls on ring,
//! trusting the system's CA store, where a bank installs its internal CA. No HTTP is written by
//! hand: URLs are parsed by `http`, responses read by hyper.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

mod reach;
use reach::CheckedResolver;
pub use reach::{Reach, inside_host};

/// The largest response body read; bigger answers are an error, not a memory spike.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("'{url}' is not an http:// or https:// URL: {reason}")]
    Url { url: String, reason: String },
    #[error("{0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer could not be read: {0}")]
    Body(String),
}

/// A response's status and body (at most 1 MiB).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector<CheckedResolver>>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose every request (connect, send, read the answer) ends within `timeout`, and
    /// which connects only where `reach` allows.
    pub fn new(timeout: Duration, reach: Reach) -> Self {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver::new(reach));
        // The TLS layer above takes https:// URLs; it hands them down as TCP connects.
        http.enforce_http(false);
        let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
            Err(e) => {
                // http:// still works; https:// fails to verify, and says so, per request.
                tracing::warn!(error = %e, "no system CA certificates: https:// requests will be refused");
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
        let inner = Client::builder(TokioExecutor::new()).build(connector);
        Self { inner, timeout }
    }

    /// Checks a URL without calling it (configuration errors at start, not at first use).
    pub fn check_url(url: &str) -> Result<Uri, HttpError> {
        let bad = |reason: &str| HttpError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("the scheme must be http or https")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        Ok(uri)
    }

    pub async fn get(&self, url: &str) -> Result<HttpResponse, HttpError> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, HttpError> {
        let mut all = vec![("content-type", "application/json".to_string())];
        all.extend(headers.iter().map(|(k, v)| (*k, v.clone())));
        self.send(Method::POST, url, &all, Bytes::from(body)).await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<HttpResponse, HttpError> {
        let uri = Self::check_url(url)?;
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| HttpError::Request(error_chain(&e)))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::Body(e.to_string()))?
                .to_bytes();
            Ok(HttpResponse { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// hyper's errors say "client error (Connect)"; the cause (refused, certificate) is below it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
