//! The engine's memory pool: DataFusion's greedy pool with its top consumers tracked (named in a
//! refusal), except that a `RepartitionExec`'s buffers are never refused.
//!
//! Why: when a `RepartitionExec` cannot reserve a batch it writes it to a spill pool, and in
//! DataFusion 55.2 two input tasks spilling to one output partition at once can deadlock it for
//! good (apache/datafusion#24883, fixed in #24891 after 55.2): the reader waits on the older
//! spill file while the batch it needs is in the newer one, and the channel's gate parks the
//! writers. Every tokio worker parks, the CPU drops to 0% and the query never ends. That was the
//! hang of the rollup builds under memory pressure (a grouped `count(distinct)` spilling at 10M
//! and 100M rows). A repartition's buffers are the batches in flight between operators (bounded
//! by the channel gate), so they are granted and counted: the operators that hold data (hash
//! aggregates, sorts, joins) are the ones the pool refuses, and they spill or fail cleanly.
//! Remove this once the fix is in a released DataFusion (the test
//! `engine::a_spilling_repartition_never_hangs` keeps it honest either way).

use std::num::NonZeroUsize;

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

/// See the module doc.
#[derive(Debug)]
pub(super) struct EnginePool {
    inner: TrackConsumersPool<GreedyMemoryPool>,
}

impl EnginePool {
    pub(super) fn new(limit_bytes: usize) -> Self {
        Self {
            inner: TrackConsumersPool::new(
                GreedyMemoryPool::new(limit_bytes),
                NonZeroUsize::new(5).expect("five"),
            ),
        }
    }
}

/// What the pool holds (DataFusion prints it in a refusal): the tracked pool's own account.
impl std::fmt::Display for EnginePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// A consumer whose refusal makes DataFusion 55.2 spill through its deadlocking spill pool.
fn granted_always(reservation: &MemoryReservation) -> bool {
    reservation.consumer().name().starts_with("RepartitionExec")
}

impl MemoryPool for EnginePool {
    fn name(&self) -> &str {
        "kpilens"
    }

    fn register(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if granted_always(reservation) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}
