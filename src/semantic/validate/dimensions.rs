//! A dimension named in a request: known, and reachable from every model the query reads; an
//! unknown name is answered with the closest known one.

use std::collections::BTreeSet;

use crate::catalog::Catalog;
use crate::semantic::error::{ErrorKind, QueryError};
use crate::text::clip;

/// The dimension exists and every model the query reads can reach it.
pub(crate) fn check_dimension(
    catalog: &Catalog,
    name: &str,
    models: &BTreeSet<String>,
    metrics: &[String],
    field: &str,
) -> Result<(), QueryError> {
    let Some(dim) = catalog.dimensions.get(name) else {
        return Err(QueryError::new(
            ErrorKind::NotFound,
            "unknown_dimension",
            format!(
                "unknown dimension '{}'{}",
                clip(name),
                did_you_mean(name, catalog.dimensions.keys())
            ),
        )
        .at(field));
    };
    if let Some(model) = models.iter().find(|m| !dim.models.contains(*m)) {
        let metric = metrics
            .iter()
            .find(|m| catalog.models_of(m).contains(model))
            .cloned()
            .unwrap_or_default();
        return Err(QueryError::invalid(format!(
            "dimension '{name}' is not available for metric '{metric}' (model '{model}' does not declare it)"
        ))
        .at(field));
    }
    Ok(())
}

/// "; did you mean 'x'?" for the closest known name within two edits, else nothing.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    if name.len() > 64 {
        return String::new();
    }
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("; did you mean '{k}'?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
