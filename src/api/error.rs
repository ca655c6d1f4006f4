//! The one place errors become HTTP: a status, a JSON body `{ "error": { code, message, field? } }`,
//! the headers the status calls for (`WWW-Authenticate` on 401, `Retry-After` on 429 and 503),
//! and the code for the audit line. Every layer's error arrives here converted into [`ApiError`].

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::alerts::AlertError;
use crate::security::auth::AuthError;
use crate::security::limits::Refusal;
use crate::semantic::{ErrorKind, QueryError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The query path's errors: their kind says the status.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// No valid credentials: 401 with the challenge.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// The audit trail cannot be written, so nothing is served.
    #[error("the audit log cannot be written")]
    AuditUnavailable,
    /// A route that does not exist.
    #[error("no such route")]
    NoRoute,
    /// The server is still opening its catalog and data (it answers `/healthz` meanwhile).
    #[error("the server is opening")]
    Opening,
    /// The request body is larger than the configured limit.
    #[error("the request body exceeds the configured limit")]
    BodyTooLarge,
    /// The client sent its request body too slowly.
    #[error("the request body did not arrive within {0} ms")]
    SlowBody(u128),
}

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        ApiError::Query(e.into())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::Query(r.into())
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Malformed => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Saturated => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The error code of a failed response, for the audit line.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

fn body(status: StatusCode, code: &'static str, error: serde_json::Value) -> Response {
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    response.extensions_mut().insert(ErrorCode(code));
    response
}

fn plain(status: StatusCode, code: &'static str, message: &str) -> Response {
    body(status, code, json!({ "code": code, "message": message }))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Query(e) => {
                let mut response = body(status_of(e.kind), e.code, e.client_view());
                if let Some(retry) = e.retry_after_secs {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry));
                }
                response
            }
            ApiError::Unauthenticated(e) => {
                let mut response = plain(StatusCode::UNAUTHORIZED, e.code, &e.message);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"kpilens\""),
                );
                response
            }
            ApiError::AuditUnavailable => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log cannot be written; no data is served without it",
            ),
            ApiError::NoRoute => plain(StatusCode::NOT_FOUND, "no_route", "no such route"),
            ApiError::BodyTooLarge => plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &self.to_string(),
            ),
            ApiError::SlowBody(_) => plain(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                &self.to_string(),
            ),
            ApiError::Opening => {
                let mut response = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "opening",
                    "kpilens is opening its catalog and data; retry in a few seconds",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(2));
                response
            }
        }
    }
}
