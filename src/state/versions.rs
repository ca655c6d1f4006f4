//! Data versions: what cache keys and ETags are made of. A table's version changes whenever a
//! file of it is added, removed, rewritten or touched; a request reads each table's version once
//! (a [`VersionMemo`]), so every panel of a dashboard answers from the same data state.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::DataWatch;
use crate::catalog::{Catalog, data_version};
use crate::semantic::QueryError;
use crate::text::hex_prefix;

/// The data versions one request has seen (through the [`DataWatch`]: from disk only when
/// something may have changed).
#[derive(Default)]
pub struct VersionMemo(std::sync::Mutex<BTreeMap<String, String>>);

impl VersionMemo {
    /// (table, version) of each table, sorted by table: read once per request.
    pub fn versions(
        &self,
        watch: &DataWatch,
        catalog: &Catalog,
        tables: &BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, QueryError> {
        let mut seen = self.0.lock().expect("version memo");
        tables
            .iter()
            .map(|t| {
                if let Some(v) = seen.get(t) {
                    return Ok((t.clone(), v.clone()));
                }
                let v = watch.version(catalog, t)?;
                seen.insert(t.clone(), v.clone());
                Ok((t.clone(), v))
            })
            .collect()
    }
}

/// (table, version) of each table as the files are now.
pub fn current_versions(
    catalog: &Catalog,
    tables: &BTreeSet<String>,
) -> Result<Vec<(String, String)>, QueryError> {
    tables
        .iter()
        .map(|t| table_version(catalog, t).map(|v| (t.clone(), v)))
        .collect()
}

/// A table's version as its files are now (no cache).
pub(super) fn table_version(catalog: &Catalog, table: &str) -> Result<String, QueryError> {
    let source = &catalog.tables[table];
    data_version(&source.path, source.format)
        .map_err(|e| QueryError::internal(format!("table '{table}' is unreadable: {e}")))
}

/// One version for a set of (table, version): the response's `meta.data_version`.
pub fn combined_version(data: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (t, v) in data {
        h.update(t.as_bytes());
        h.update(v.as_bytes());
    }
    hex_prefix(&h.finalize(), 12)
}
