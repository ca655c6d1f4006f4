//! The result cache. A key names everything a result depends on: the catalog version, the
//! canonical query, the data version of each input table and the caller's security scope. A stale entry can therefore never be hit; refreshed tables also evict their entries
//! so they stop holding memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moka::future::Cache;

use crate::semantic::{QueryError, QueryResult};

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct CacheKey {
    pub catalog_version: String,
    /// The request re-serialised from its parsed form: key order and whitespace do not matter.
    pub query: String,
    /// (table, data version), sorted by table.
    pub data: Vec<(String, String)>,
    /// The principal's org scope (`*` for the whole bank): one scope's rows never answer another.
    pub scope: String,
}

pub struct ResultCache {
    inner: Cache<CacheKey, Arc<QueryResult>>,
    /// Lookups answered from the cache, and those that computed (the `/metrics` counters).
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

impl ResultCache {
    pub fn new(
        max_bytes: u64,
        hits: prometheus::IntCounter,
        misses: prometheus::IntCounter,
    ) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &CacheKey, v: &Arc<QueryResult>| {
                u32::try_from(v.weight() + k.query.len() + 64 * k.data.len()).unwrap_or(u32::MAX)
            })
            .support_invalidation_closures()
            .build();
        Self {
            inner,
            hits,
            misses,
        }
    }

    /// Returns the cached result or computes it. Concurrent callers with the same key share one
    /// computation (single flight). The flag says whether this caller ran the computation.
    pub async fn get_or_compute<F>(
        &self,
        key: CacheKey,
        compute: F,
    ) -> Result<(Arc<QueryResult>, bool), QueryError>
    where
        F: Future<Output = Result<Arc<QueryResult>, QueryError>>,
    {
        let ran = AtomicBool::new(false);
        let result = self
            .inner
            .try_get_with(key, async {
                ran.store(true, Ordering::Relaxed);
                compute.await
            })
            .await
            .map_err(|e: Arc<QueryError>| (*e).clone())?;
        let ran = ran.load(Ordering::Relaxed);
        if ran { &self.misses } else { &self.hits }.inc();
        Ok((result, ran))
    }

    /// Evicts every entry that read `table` at a version other than `current`.
    pub fn invalidate_table(&self, table: &str, current: &str) {
        let (table, current) = (table.to_string(), current.to_string());
        let outcome = self.inner.invalidate_entries_if(move |k, _| {
            k.data.iter().any(|(t, v)| *t == table && *v != current)
        });
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "cache invalidation predicate rejected");
        }
    }

    /// Applies pending inserts and evictions: moka's counts are eventually consistent.
    pub async fn settle(&self) {
        self.inner.run_pending_tasks().await;
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }
}
