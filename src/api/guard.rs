//! The gate in front of every data route: authenticate (401), check the principal's request
//! rate (429), read the body whole within its time limit (408; so that a slow upload holds no
//! compute slot, which the service takes only when a request reaches the engine), run the
//! handler with the principal in the request's extensions, then append the audit line before
//! the response leaves. Refusals become responses in `api::error`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::error::ErrorCode;
use crate::security::audit::{AuditDetails, AuditLog, AuditRecord, AuditSlot};
use crate::security::auth::Authenticator;
use crate::security::limits::RateLimiter;
use crate::security::{Principal, Scope};
use crate::semantic::QueryError;

/// How requests are authenticated.
pub enum AuthMode {
    Tokens(Box<Authenticator>),
    /// `--no-auth`: a trusted local setup; every request is one full-scope principal.
    Disabled,
}

pub struct Gate {
    pub auth: AuthMode,
    /// Requests per principal.
    pub rate: RateLimiter,
    /// The largest body read, and how long reading it may take.
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub audit: AuditLog,
    /// Refusals without a valid token are logged up to this rate; the rest are counted and
    /// logged as one summary line, so that nobody without a token can rotate genuine lines away.
    pub unauthenticated: UnauthenticatedBudget,
    /// The event streams open, within their limits.
    pub streams: Arc<super::events::OpenStreams>,
}

/// How many refusals without a valid token get their own audit line, and how many did not.
pub struct UnauthenticatedBudget {
    lines: RateLimiter,
    unlogged: AtomicU64,
}

impl UnauthenticatedBudget {
    /// `per_second` lines, `burst` at once.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            lines: RateLimiter::new(per_second, burst),
            unlogged: AtomicU64::new(0),
        }
    }
}

/// What the audit line says of the request, whatever its answer.
struct Asked {
    started: Instant,
    method: String,
    route: String,
    /// The peer's address, where the request came over a socket.
    client: String,
}

pub async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let asked = Asked {
        started: Instant::now(),
        method: req.method().to_string(),
        route: req.uri().path().to_string(),
        client: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(String::new, |c| c.0.ip().to_string()),
    };
    let principal = match &gate.auth {
        AuthMode::Disabled => Ok(anonymous("no_auth")),
        AuthMode::Tokens(auth) => {
            auth.authenticate(
                req.headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            )
            .await
        }
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            let response = ApiError::from(e).into_response();
            let budget = &gate.unauthenticated;
            if budget.lines.take("", Instant::now()).is_err() {
                budget.unlogged.fetch_add(1, Ordering::Relaxed);
                return response;
            }
            return audited(&gate, &anonymous(""), &asked, response);
        }
    };
    if let Err(refusal) = gate.rate.take(&principal.name, Instant::now()) {
        let response = ApiError::from(refusal).into_response();
        return audited(&gate, &principal, &asked, response);
    }
    let (mut req, body) = match read_body(&gate, req).await {
        Ok(read) => read,
        Err(e) => {
            let response = e.into_response();
            return audited(&gate, &principal, &asked, response);
        }
    };
    req.extensions_mut().insert(principal.clone());
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    if response.extensions().get::<AuditDetails>().is_none() {
        // A tool fills the slot; what no tool answered (an unknown tool or method, a
        // notification) is still named, from the JSON-RPC body.
        if let Some(details) = slot.take().or_else(|| mcp_call(&asked.route, &body)) {
            response.extensions_mut().insert(details);
        }
    }
    audited(&gate, &principal, &asked, response)
}

/// What an MCP request asked, from its JSON-RPC body: `mcp:<method>` (and the tool's name for
/// `tools/call`), for the audit line of a request no tool answered.
fn mcp_call(route: &str, body: &[u8]) -> Option<AuditDetails> {
    if !route.starts_with("/mcp") {
        return None;
    }
    let call: serde_json::Value = serde_json::from_slice(body).ok()?;
    let calls = match call {
        serde_json::Value::Array(batch) => batch,
        one => vec![one],
    };
    let metrics: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            let method = c["method"].as_str()?;
            Some(match c["params"]["name"].as_str() {
                Some(tool) => format!("mcp:{method}:{tool}"),
                None => format!("mcp:{method}"),
            })
        })
        .collect();
    (!metrics.is_empty()).then(|| AuditDetails {
        metrics,
        ..AuditDetails::default()
    })
}

/// The request with its body read whole (at most the limit, within the time limit), and the
/// body's bytes.
async fn read_body(gate: &Gate, req: Request) -> Result<(Request, Bytes), ApiError> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, gate.max_body_bytes);
    let bytes = match tokio::time::timeout(gate.body_timeout, limited.collect()).await {
        Err(_) => {
            return Err(ApiError::SlowBody(gate.body_timeout.as_millis()));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::BodyTooLarge);
        }
        Ok(Err(e)) => {
            return Err(QueryError::malformed(format!("cannot read the request body: {e}")).into());
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}

/// Who a request is without a token: under `--no-auth` the whole bank (masked), and in the
/// audit line of a refused request, nobody in particular.
fn anonymous(role: &str) -> Principal {
    Principal {
        name: "anonymous".to_string(),
        role: role.to_string(),
        scope: Scope::all(),
        personal_data: false,
    }
}

/// Appends the audit line; a response that cannot be audited is not sent.
fn audited(gate: &Gate, principal: &Principal, asked: &Asked, response: Response) -> Response {
    let unlogged = gate.unauthenticated.unlogged.swap(0, Ordering::Relaxed);
    if unlogged > 0 {
        // The refusals past the budget since the last line, as one line before this one.
        let summary = AuditRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            principal: "anonymous".into(),
            client: asked.client.clone(),
            method: "*".into(),
            route: "(refused without a valid token, not logged one by one)".into(),
            status: 401,
            rows: Some(unlogged),
            error: Some("unauthenticated".into()),
            ..AuditRecord::default()
        };
        if gate.audit.append(summary).is_err() {
            gate.unauthenticated
                .unlogged
                .fetch_add(unlogged, Ordering::Relaxed);
        }
    }
    let details = response
        .extensions()
        .get::<AuditDetails>()
        .cloned()
        .unwrap_or_default();
    let status = response.status();
    let record = AuditRecord {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        client: asked.client.clone(),
        // The log clips what a client chose (the name from its token, the path, filters).
        principal: principal.name.clone(),
        role: principal.role.clone(),
        scope: principal.scope.key(),
        method: asked.method.clone(),
        route: asked.route.clone(),
        status: status.as_u16(),
        elapsed_ms: (asked.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        metrics: details.metrics,
        dimensions: details.dimensions,
        filters: details.filters,
        rows: details.rows,
        cached: details.cached,
        error: response
            .extensions()
            .get::<ErrorCode>()
            .map(|c| c.0.to_string()),
        ..AuditRecord::default() // seq and prev: set by the log
    };
    match gate.audit.append(record) {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, path = %gate.audit.path().display(), "audit log write failed; refusing the response");
            ApiError::AuditUnavailable.into_response()
        }
    }
}
