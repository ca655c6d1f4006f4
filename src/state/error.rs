//! The state layer's one error type: why a rollup or a materialised model could not be loaded,
//! updated or built. Its text is the reason `GET /api/v1/catalog/status` shows and the store
//! remembers; its source, where there is one, goes to the log.

use crate::engine::EngineError;
use crate::semantic::QueryError;
use crate::text::one_line;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A build plan could not be made over the definitions.
    /// Its text is the plan's message; the cause stays its source (the warning naming the
    /// rollup prints the chain).
    #[error("{}", .0.message)]
    Plan(#[from] QueryError),
    /// The engine could not plan the rows.
    #[error("planning the rollup failed: {0}")]
    Resolve(#[source] EngineError),
    /// The engine could not compute them (memory refusals included).
    #[error("building the rollup failed: {}", one_line(.0, 600))]
    Build(#[source] EngineError),
    /// The engine could not compute a materialised model's rows.
    #[error("computing it failed: {}", one_line(.0, 600))]
    Compute(#[source] EngineError),
    /// The engine refused a table or a plan it was only to read (registering rows, reading a
    /// stored file, a materialised model's plan).
    #[error("{0}")]
    Register(#[source] EngineError),
    /// A stored or storing file: the file and what went wrong with it.
    #[error("{file}: {source}")]
    File {
        file: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Arrow refused rows (a refresh's rows that no longer fit the stored ones).
    #[error("{context}: {source}")]
    Rows {
        context: &'static str,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    /// A rule the build relies on does not hold (a check over the rows, a missing store, a
    /// build past its budget): the reason says which.
    #[error("{0}")]
    Refused(String),
}

impl StateError {
    pub fn file(
        file: impl std::fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StateError::File {
            file: file.to_string(),
            source: source.into(),
        }
    }

    pub fn refused(reason: impl Into<String>) -> Self {
        StateError::Refused(reason.into())
    }

    /// Whether the engine refused it for memory (a bigger pool could build it).
    pub fn out_of_memory(&self) -> bool {
        matches!(
            self,
            StateError::Build(EngineError::MemoryExhausted(_))
                | StateError::Compute(EngineError::MemoryExhausted(_))
        )
    }
}
