//! Webhook delivery: every alert and task change is POSTed as JSON to the configured URL, signed
//! with HMAC-SHA256 over the body (`X-Kpilens-Signature: sha256=<hex>`), and retried with
//! exponential backoff until the receiver answers 2xx or the attempts run out. Each change has a
//! delivery id (`X-Kpilens-Delivery`, the event's sequence number) so that a receiver can drop a
//! repeat. Plain HTTP/1.1 over TCP: bank-internal receivers; no TLS client here.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path`
    pub url: String,
    pub secret: String,
    pub attempts: u32,
    /// The first retry waits this long; each next one twice as long.
    pub first_retry: Duration,
}

/// A delivery's outcome, for the log and the tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub delivery: u64,
    pub attempts: u32,
    pub status: Option<u16>,
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts `body` until a 2xx or the attempts run out.
pub async fn deliver(config: &WebhookConfig, delivery: u64, kind: &str, body: &[u8]) -> Delivered {
    let mut wait = config.first_retry;
    let mut status = None;
    for attempt in 1..=config.attempts.max(1) {
        match post(config, delivery, kind, body).await {
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
    config: &WebhookConfig,
    delivery: u64,
    kind: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let rest = config
        .url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("webhook URLs are http://host:port/path"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = async {
        let mut stream = TcpStream::connect(host).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nX-Kpilens-Event: {kind}\r\nX-Kpilens-Delivery: {delivery}\r\n\
             X-Kpilens-Signature: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            signature(&config.secret, body)
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await?;
        let code = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        // Drain the rest so the receiver is not reset mid-answer.
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest).await;
        Ok(code)
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| std::io::Error::other("webhook timed out"))?
}
