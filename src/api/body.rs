//! Typed JSON request bodies: [`JsonBody`] reads a handler's body (within the server's limit)
//! and deserialises it, naming the offending field (`filters[0].op`) when it does not fit; the
//! transport's own refusals (too large, too slow) are [`ApiError`]s of this layer.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::semantic::QueryError;

/// A request body of type `T`, parsed as JSON.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge
            } else {
                QueryError::malformed(format!("cannot read the request body: {rejection}")).into()
            }
        })?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// JSON -> `T`, with the path of the offending field in the error.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, QueryError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = deserialize_at(&mut de)?;
    de.end().map_err(|e| {
        QueryError::malformed(format!("trailing characters after the JSON body: {e}"))
    })?;
    Ok(value)
}

/// A request from JSON (a body, an MCP tool's arguments), with the path of the offending field in
/// the error (`filters[0].op`).
pub(super) fn deserialize_at<'de, T: DeserializeOwned, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<T, QueryError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let err = QueryError::malformed(format!("invalid request: {}", e.inner()));
        if path == "." { err } else { err.at(path) }
    })
}
