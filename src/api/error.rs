//! The single place where errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::semantic::{ErrorKind, QueryError};

pub struct ApiError(pub QueryError);

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        Self(e)
    }
}

pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Malformed => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = status_of(e.kind);
        let body = if e.kind == ErrorKind::Internal {
            // The detail may hold paths or engine internals: it goes to the log, not the client.
            tracing::error!(detail = %e.message, "internal error");
            json!({ "error": { "code": e.code, "message": "internal error; see the server log" } })
        } else {
            let mut err = json!({ "code": e.code, "message": e.message });
            if let Some(field) = e.field {
                err["field"] = json!(field);
            }
            json!({ "error": err })
        };
        (status, Json(body)).into_response()
    }
}
