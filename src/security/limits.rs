//! Admission control. Two separate bounds, so that nobody can lock the others out:
//! - a per-principal token bucket on requests ([`RateLimiter`], 429 with Retry-After);
//! - compute slots ([`ComputeSlots`]): only work that reaches the engine takes one (a cached
//!   answer or a snapshot never does), a request holds at most one however many queries it runs
//!   (a dashboard's panels share it, see [`ComputeLease`]), and one principal holds at most a
//!   share of them. Past the queue wait: 503 when every slot is busy, 429 when the principal's
//!   own share is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

/// Refusal with the seconds a client should wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every compute slot stayed busy for the whole queue wait.
    Saturated { retry_after_secs: u64 },
    /// The principal spent its bucket.
    RateLimited { retry_after_secs: u64 },
    /// The principal's own requests held its whole share of the slots for the queue wait.
    PrincipalBusy { retry_after_secs: u64, share: usize },
}

/// The engine's slots: `total` computations at once, at most `per_principal` of them for one
/// principal; a request waits `queue_wait` at most for one.
pub struct ComputeSlots {
    total: Arc<Semaphore>,
    per_principal: usize,
    queue_wait: Duration,
    principals: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot: released (for everyone and for its principal) when dropped.
pub struct ComputeSlot {
    _total: OwnedSemaphorePermit,
    _own: OwnedSemaphorePermit,
}

/// Principals' semaphores are pruned when the map grows past this (idle ones hold nothing).
const MAX_PRINCIPALS: usize = 10_000;

impl ComputeSlots {
    pub fn new(total: usize, per_principal: usize, queue_wait: Duration) -> Self {
        let total = total.max(1);
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_principal: per_principal.clamp(1, total),
            queue_wait,
            principals: Mutex::new(HashMap::new()),
        }
    }

    /// Waits (at most the queue wait, for both) for a share of the principal's own and then for
    /// a slot.
    pub async fn acquire(&self, principal: &str) -> Result<ComputeSlot, Refusal> {
        let deadline = tokio::time::Instant::now() + self.queue_wait;
        let retry_after_secs = self.queue_wait.as_secs().max(1);
        let own = tokio::time::timeout_at(deadline, self.share_of(principal).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Refusal::PrincipalBusy {
                retry_after_secs,
                share: self.per_principal,
            })?;
        let total = tokio::time::timeout_at(deadline, self.total.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Refusal::Saturated { retry_after_secs })?;
        Ok(ComputeSlot {
            _total: total,
            _own: own,
        })
    }

    fn share_of(&self, principal: &str) -> Arc<Semaphore> {
        let mut principals = self.principals.lock().expect("compute shares");
        if principals.len() > MAX_PRINCIPALS {
            let idle = self.per_principal;
            principals.retain(|_, s| s.available_permits() < idle);
        }
        principals
            .entry(principal.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_principal)))
            .clone()
    }
}

/// One request's claim on a compute slot: taken the first time the request needs the engine,
/// shared by everything else it computes, released when the request is done.
pub struct ComputeLease {
    principal: String,
    slot: OnceCell<Result<ComputeSlot, Refusal>>,
}

impl ComputeLease {
    pub fn for_principal(principal: &str) -> Self {
        Self {
            principal: principal.to_string(),
            slot: OnceCell::new(),
        }
    }

    /// Holds a slot from `slots` for the rest of the request (a refusal, once met, stays).
    pub async fn hold(&self, slots: &ComputeSlots) -> Result<(), Refusal> {
        match self
            .slot
            .get_or_init(|| slots.acquire(&self.principal))
            .await
        {
            Ok(_) => Ok(()),
            Err(refusal) => Err(*refusal),
        }
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
