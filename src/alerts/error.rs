//! The alert layer's one error type. What a reader of an alert sees of it (the instance's and the
//! run's `error`) is [`AlertError::public_message`]: never a path or an engine's internals.

use crate::semantic::{ErrorKind, QueryError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AlertError {
    /// The embedded store failed (a disk, a corrupt file).
    #[error("alert store: {0}")]
    Store(String),
    /// The query a rule asks failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The rule cannot be evaluated as written (it validated, but the data cannot answer it).
    #[error("{0}")]
    Rule(String),
}

impl AlertError {
    pub fn store(e: impl std::fmt::Display) -> Self {
        AlertError::Store(e.to_string())
    }

    /// The reason as readers of the alert see it; internal detail goes to the log.
    pub fn public_message(&self) -> String {
        match self {
            AlertError::Query(q) if q.kind != ErrorKind::Internal => q.to_string(),
            AlertError::Rule(m) => m.clone(),
            other => {
                tracing::error!(error = %other, "alert rule failed internally");
                "internal error; see the server log".to_string()
            }
        }
    }
}

impl From<AlertError> for QueryError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::Query(q) => q,
            AlertError::Rule(m) => QueryError::invalid(m),
            AlertError::Store(m) => QueryError::internal(m),
        }
    }
}
