//! The engine's one error type: what the layers above need to tell a client apart from a bug.

use crate::semantic::Cause;

/// A plan that could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The plan needs more memory than the pool grants: the query is too big, not broken.
    #[error("the query needs more memory than its budget allows: {0}")]
    MemoryExhausted(String),
    /// Anything else: a bug, unreadable files, a plan the engine cannot run.
    #[error("{message}")]
    Failed {
        message: String,
        /// DataFusion's error (with its own causes), for the log.
        #[source]
        cause: Option<Cause>,
    },
}

impl EngineError {
    pub fn failed(message: impl Into<String>) -> Self {
        EngineError::Failed {
            message: message.into(),
            cause: None,
        }
    }
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        match e.find_root() {
            datafusion::error::DataFusionError::ResourcesExhausted(m) => {
                EngineError::MemoryExhausted(m.clone())
            }
            _ => EngineError::Failed {
                message: e.to_string(),
                cause: Some(std::sync::Arc::new(e)),
            },
        }
    }
}

/// Upward, into the query path: memory exhaustion is the client's query being too big (503
/// `memory_limit`); anything else is ours (500, detail in the log only).
impl From<EngineError> for crate::semantic::QueryError {
    fn from(e: EngineError) -> Self {
        use crate::semantic::{ErrorKind, QueryError};
        match e {
            EngineError::MemoryExhausted(_) => {
                QueryError::new(ErrorKind::Exhausted, "memory_limit", e.to_string())
            }
            EngineError::Failed { message, cause } => {
                let mut e = QueryError::internal(message);
                e.cause = cause;
                e
            }
        }
    }
}
