//! Rollups declared in YAML (`rollups:`): validated here against the models and measures. They
//! are materialized by `semantic::planner::rollup` once the catalog exists, since building one is
//! a query over its model.

use std::collections::{BTreeMap, BTreeSet};

use super::build::Declared;
use super::{Measure, Model, agg_name};
use crate::catalog::CatalogErrors;
use crate::spec::{Aggregation, RollupSpec};

/// A materialized rollup: the planner reads `model` instead of the base model when it holds every
/// measure, dimension and filter dimension a query's group needs.
pub struct Rollup {
    pub name: String,
    pub file: String,
    /// The model it pre-aggregates.
    pub base: String,
    pub dimensions: BTreeSet<String>,
    /// Names of the base measures it holds.
    pub measures: BTreeSet<String>,
    /// The rollup as a model: its in-memory table, the base's time values as they are, one column
    /// per dimension (no joins left to do).
    pub model: Model,
    /// Each measure as it re-aggregates over the rollup's columns (a sum of partial sums or of
    /// partial counts, a min of mins, a max of maxes).
    pub rolled: BTreeMap<String, Measure>,
    pub rows: usize,
    pub build_ms: f64,
}

/// A rollup that validated and is ready to be built.
pub struct RollupDefinition {
    pub name: String,
    pub file: String,
    pub spec: RollupSpec,
}

/// The aggregation that combines partial results of `agg` exactly, if there is one.
pub fn reaggregation(agg: Aggregation) -> Option<Aggregation> {
    match agg {
        Aggregation::Sum | Aggregation::Count => Some(Aggregation::Sum),
        Aggregation::Min => Some(Aggregation::Min),
        Aggregation::Max => Some(Aggregation::Max),
        // An average of averages and a sum of distinct counts are not the answer.
        Aggregation::Avg | Aggregation::CountDistinct => None,
    }
}

pub(super) fn validate(
    declared: &BTreeMap<&str, Declared<'_, RollupSpec>>,
    models: &BTreeMap<String, Model>,
    measures: &BTreeMap<String, Measure>,
) -> Result<Vec<RollupDefinition>, CatalogErrors> {
    let mut errors = CatalogErrors::default();
    let mut out = Vec::new();
    for (name, d) in declared {
        let spec = d.spec;
        let key = format!("rollups.{name}");
        let before = errors.0.len();
        let Some(model) = models.get(&spec.model) else {
            errors.push(
                d.file,
                format!("{key}.model"),
                format!("unknown model '{}'", spec.model),
            );
            continue;
        };
        let mut seen = BTreeSet::new();
        for (i, dim) in spec.dimensions.iter().enumerate() {
            let at = format!("{key}.dimensions[{i}]");
            if !seen.insert(dim) {
                errors.push(d.file, at, format!("'{dim}' is listed twice"));
            } else if !model.dimensions.contains_key(dim) {
                let known: Vec<&str> = model.dimensions.keys().map(String::as_str).collect();
                errors.push(
                    d.file,
                    at,
                    format!(
                        "'{dim}' is not a dimension of model '{}' (it has: {})",
                        spec.model,
                        known.join(", ")
                    ),
                );
            }
        }
        if spec.measures.is_empty() {
            errors.push(
                d.file,
                format!("{key}.measures"),
                "list at least one measure",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, m) in spec.measures.iter().enumerate() {
            let at = format!("{key}.measures[{i}]");
            match measures.get(m) {
                _ if !seen.insert(m) => errors.push(d.file, at, format!("'{m}' is listed twice")),
                None => errors.push(d.file, at, format!("unknown measure '{m}'")),
                Some(measure) if measure.model != spec.model => errors.push(
                    d.file,
                    at,
                    format!(
                        "'{m}' aggregates model '{}', not '{}'",
                        measure.model, spec.model
                    ),
                ),
                Some(measure) if reaggregation(measure.agg).is_none() => errors.push(
                    d.file,
                    at,
                    format!(
                        "'{m}' is a {}: partial results cannot be combined exactly, so it is \
                         always computed from the model",
                        agg_name(measure.agg)
                    ),
                ),
                Some(_) => {}
            }
        }
        if errors.0.len() == before {
            out.push(RollupDefinition {
                name: name.to_string(),
                file: d.file.to_string(),
                spec: spec.clone(),
            });
        }
    }
    errors.check()?;
    Ok(out)
}
