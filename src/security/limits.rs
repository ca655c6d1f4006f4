//! Admission control for data requests: a bounded number run at once (others queue for a while,
//! then get 503 with Retry-After) and a per-principal token bucket (429 with Retry-After).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusal with the seconds a client should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot stayed busy for the whole queue wait.
    Saturated { retry_after_secs: u64 },
    /// The principal spent its bucket.
    RateLimited { retry_after_secs: u64 },
}

pub struct Admission {
    slots: std::sync::Arc<Semaphore>,
    queue_wait: Duration,
    rate: RateLimiter,
}

impl Admission {
    pub fn new(concurrent: usize, queue_wait: Duration, per_second: f64, burst: f64) -> Self {
        Self {
            slots: std::sync::Arc::new(Semaphore::new(concurrent.max(1))),
            queue_wait,
            rate: RateLimiter::new(per_second, burst),
        }
    }

    /// Checks the principal's rate, then waits (bounded) for a slot held until the permit drops.
    pub async fn admit(&self, principal: &str) -> Result<OwnedSemaphorePermit, Refusal> {
        self.rate.take(principal, Instant::now())?;
        tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Refusal::Saturated {
                retry_after_secs: self.queue_wait.as_secs().max(1),
            })
    }
}

/// A token bucket per principal: `burst` requests at once, refilled at `per_second`.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets are pruned when the map grows past this (idle ones are full anyway).
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second: per_second.max(0.001),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn take(&self, who: &str, now: Instant) -> Result<(), Refusal> {
        let mut buckets = self.buckets.lock().expect("rate buckets");
        if buckets.len() > MAX_BUCKETS {
            let full = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < full);
        }
        let (tokens, at) = buckets.entry(who.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(Refusal::RateLimited {
                retry_after_secs: wait.ceil().max(1.0) as u64,
            })
        }
    }
}
