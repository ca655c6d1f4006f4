//! The gate in front of every data route: authenticate (401), admit (429 per principal, 503
//! when saturated, both with Retry-After), run the handler with the principal in the request's
//! extensions, then append the audit line before the response leaves.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::security::audit::{AuditDetails, AuditLog, AuditRecord};
use crate::security::auth::Authenticator;
use crate::security::limits::{Admission, Refusal};
use crate::security::{Principal, Scope};

/// How requests are authenticated.
pub enum AuthMode {
    Tokens(Box<Authenticator>),
    /// `--no-auth`: a trusted local setup; every request is one full-scope principal.
    Disabled,
}

pub struct Gate {
    pub auth: AuthMode,
    pub admission: Admission,
    pub audit: AuditLog,
}

pub async fn guard(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.uri().path().to_string();
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
            let mut response = error(StatusCode::UNAUTHORIZED, e.code, &e.message);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kpilens\""),
            );
            return audited(&gate, &anonymous(""), &method, &route, started, response);
        }
    };
    let permit = match gate.admission.admit(&principal.name).await {
        Ok(permit) => permit,
        Err(refusal) => {
            let (status, code, message, retry) = match refusal {
                Refusal::RateLimited { retry_after_secs } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests from this principal",
                    retry_after_secs,
                ),
                Refusal::Saturated { retry_after_secs } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "saturated",
                    "every query slot stayed busy; retry shortly",
                    retry_after_secs,
                ),
            };
            let mut response = error(status, code, message);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry));
            return audited(&gate, &principal, &method, &route, started, response);
        }
    };
    req.extensions_mut().insert(principal.clone());
    let response = next.run(req).await;
    drop(permit);
    audited(&gate, &principal, &method, &route, started, response)
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
fn audited(
    gate: &Gate,
    principal: &Principal,
    method: &str,
    route: &str,
    started: Instant,
    response: Response,
) -> Response {
    let details = response
        .extensions()
        .get::<AuditDetails>()
        .cloned()
        .unwrap_or_default();
    let status = response.status();
    let record = AuditRecord {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        principal: principal.name.clone(),
        role: principal.role.clone(),
        scope: principal.scope.key(),
        method: method.to_string(),
        route: route.to_string(),
        status: status.as_u16(),
        elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        metrics: details.metrics,
        dimensions: details.dimensions,
        filters: details.filters,
        rows: details.rows,
        cached: details.cached,
        error: response
            .extensions()
            .get::<ErrorCode>()
            .map(|c| c.0.to_string()),
    };
    match gate.audit.append(&record) {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, path = %gate.audit.path().display(), "audit log write failed; refusing the response");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit log cannot be written; no data is served without it",
            )
        }
    }
}

/// The error code of a failed response, for the audit line.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

pub fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    response.extensions_mut().insert(ErrorCode(code));
    response
}
