use crate::security::limits::Refusal;

/// What went wrong, in terms a client can act on. The API maps each kind to an HTTP status in
/// exactly one place (`api::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is not valid JSON or not of the protocol's shape.
    Malformed,
    /// A metric or dimension that the catalog does not have.
    NotFound,
    /// Well-formed, but the combination cannot be answered (e.g. a dimension a metric lacks).
    Invalid,
    /// The query ran past its time budget.
    Timeout,
    /// The query needed more memory than its pool grants.
    Exhausted,
    /// Authenticated, but the principal may not ask this (e.g. a metric that cannot be
    /// narrowed to their org scope).
    Forbidden,
    /// A bug or an environment failure; details go to the log only.
    Internal,
    /// The principal spent its request rate or its share of the compute slots.
    RateLimited,
    /// Every compute slot stayed busy.
    Saturated,
}

/// What caused an error, kept for the log and `std::error::Error::source`: shared, so errors
/// stay cheap to clone (answers and refusals are cached and broadcast).
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// An error and its causes, outermost first, joined by ": " (for a log line).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        // DataFusion's contexts repeat their cause's text: say each once.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The query layer's one error type: the planner's, the validator's and (converted) the engine's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct QueryError {
    pub kind: ErrorKind,
    /// Stable machine-readable code, e.g. `unknown_metric`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, e.g. `filters[1].values`.
    pub field: Option<String>,
    /// When to retry (a refusal for load: rate limited, saturated).
    pub retry_after_secs: Option<u64>,
    /// What caused it (an engine error under an internal one): logged, never sent to a client.
    #[source]
    pub cause: Option<Cause>,
}

impl QueryError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
            cause: None,
        }
    }

    /// The same error, remembering what caused it.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// What a client is told: code, message and field, except for internal errors, whose detail
    /// may hold paths or engine internals and goes to the log instead.
    pub fn client_view(&self) -> serde_json::Value {
        if self.kind == ErrorKind::Internal {
            tracing::error!(detail = %with_causes(self), "internal error");
            return serde_json::json!({ "code": self.code, "message": "internal error; see the server log" });
        }
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            err["field"] = serde_json::json!(field);
        }
        err
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, "malformed_request", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, "invalid_query", message)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal", detail)
    }
}

impl From<Refusal> for QueryError {
    fn from(refusal: Refusal) -> Self {
        let (kind, code, message, retry) = match refusal {
            Refusal::RateLimited { retry_after_secs } => (
                ErrorKind::RateLimited,
                "rate_limited",
                "too many requests from this principal".to_string(),
                retry_after_secs,
            ),
            Refusal::PrincipalBusy {
                retry_after_secs,
                share,
            } => (
                ErrorKind::RateLimited,
                "principal_busy",
                format!("this principal already runs {share} computations at once, its share"),
                retry_after_secs,
            ),
            Refusal::Saturated { retry_after_secs } => (
                ErrorKind::Saturated,
                "saturated",
                "every query slot stayed busy; retry shortly".to_string(),
                retry_after_secs,
            ),
        };
        let mut e = QueryError::new(kind, code, message);
        e.retry_after_secs = Some(retry);
        e
    }
}
