//! Webhook delivery: every alert and task change is POSTed as JSON to the configured URL, signed
//! with HMAC-SHA256 over the body (`X-Kpilens-Signature: sha256=<hex>`), and retried with
//! exponential backoff until the receiver answers 2xx or the attempts run out. Each change has a
//! delivery id (`X-Kpilens-Delivery`, the event's sequence number) so that a receiver can drop a
//! repeat. `http://` or `https://` (rustls, the system's CA store) through [`HttpClient`].

use std::time::Duration;

use crate::config::Settings;
use crate::net::{HttpClient, HttpError, Reach, inside_host};

/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http(s)://host:port/path`
    pub url: String,
    pub secret: String,
    pub attempts: u32,
    /// The first retry waits this long; each next one twice as long.
    pub first_retry: Duration,
    /// `--webhook-allow-private`: the receiver may be on loopback or a private network.
    pub allow_private: bool,
}

/// A delivery's outcome, for the log and the tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub delivery: u64,
    pub attempts: u32,
    pub status: Option<u16>,
}

impl WebhookConfig {
    /// The webhook the settings ask for; a URL without a secret is refused (unsigned deliveries
    /// could be forged by anyone who can reach the receiver).
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, String> {
        match (&settings.webhook_url, &settings.webhook_secret) {
            (None, _) => Ok(None),
            (Some(_), None) => {
                Err("--webhook-url needs --webhook-secret (KPILENS_WEBHOOK_SECRET)".into())
            }
            (Some(url), Some(secret)) => {
                let uri = HttpClient::check_url(url).map_err(|e| format!("--webhook-url: {e}"))?;
                if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
                    return Err(format!(
                        "--webhook-url {url}: no user or password in the URL (it would be logged and sent on every redirect); the receiver checks the signature"
                    ));
                }
                let host = uri.host().unwrap_or_default();
                if let Some(why) = inside_host(host) {
                    if !settings.webhook_allow_private {
                        return Err(format!(
                            "--webhook-url {url}: {host} is {why}; give --webhook-allow-private if the receiver is meant to be there"
                        ));
                    }
                    tracing::warn!(%host, why, "webhook to an inside address (--webhook-allow-private)");
                }
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "--webhook-secret is {} bytes; at least {MIN_SECRET_BYTES} (a random one: `openssl rand -hex 32`)",
                        secret.len()
                    ));
                }
                Ok(Some(Self {
                    url: url.clone(),
                    secret: secret.clone(),
                    attempts: settings.webhook_attempts.max(1),
                    first_retry: Duration::from_millis(settings.webhook_retry_ms),
                    allow_private: settings.webhook_allow_private,
                }))
            }
        }
    }
}

/// The shortest signing secret accepted: HMAC-SHA256's key should carry 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// The client deliveries go through: a name resolving to an inside address is refused at each
/// connect unless the settings allowed inside receivers.
pub fn client(config: &WebhookConfig) -> HttpClient {
    let reach = if config.allow_private {
        Reach::Anywhere
    } else {
        Reach::OutsideOnly
    };
    HttpClient::new(ATTEMPT_TIMEOUT, reach)
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts `body` until a 2xx or the attempts run out.
pub async fn deliver(
    client: &HttpClient,
    config: &WebhookConfig,
    delivery: u64,
    kind: &str,
    body: &[u8],
) -> Delivered {
    let mut wait = config.first_retry;
    let mut status = None;
    for attempt in 1..=config.attempts.max(1) {
        match post(client, config, delivery, kind, body).await {
            Ok(code) if (200..300).contains(&code) => {
                return Delivered {
                    delivery,
                    attempts: attempt,
                    status: Some(code),
                };
            }
            Ok(code) => {
                status = Some(code);
                tracing::warn!(delivery, attempt, code, "webhook refused");
            }
            Err(e) => tracing::warn!(delivery, attempt, error = %e, "webhook unreachable"),
        }
        if attempt < config.attempts {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::error!(delivery, "webhook delivery given up");
    Delivered {
        delivery,
        attempts: config.attempts,
        status,
    }
}

async fn post(
    client: &HttpClient,
    config: &WebhookConfig,
    delivery: u64,
    kind: &str,
    body: &[u8],
) -> Result<u16, HttpError> {
    let headers = [
        ("x-kpilens-event", kind.to_string()),
        ("x-kpilens-delivery", delivery.to_string()),
        ("x-kpilens-signature", signature(&config.secret, body)),
    ];
    let response = client
        .post_json(&config.url, &headers, body.to_vec())
        .await?;
    Ok(response.status)
}
