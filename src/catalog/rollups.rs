//! Rollups declared in YAML (`rollups:`): validated here against the models, measures and
//! metrics. They are materialized by the layer above the planner once the catalog exists, since
//! building one is a query over its model (`semantic::planner::rollup` plans it).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use datafusion::arrow::datatypes::DataType;

use super::build::Declared;
use super::{Measure, Metric, MetricDefinition, Model};
use crate::catalog::CatalogErrors;
use crate::protocol::Grain;
use crate::spec::{Aggregation, RollupSpec};

/// A materialized rollup: the planner reads `model` instead of the base model when it answers a
/// query exactly.
pub struct Rollup {
    pub name: String,
    pub file: String,
    /// The model it pre-aggregates.
    pub base: String,
    pub dimensions: BTreeSet<String>,
    /// The rollup as a model: its in-memory table, one column per dimension (no joins left to
    /// do), and for measure rollups the base's time values as they are.
    pub model: Model,
    pub form: RollupForm,
    pub rows: usize,
    pub build_ms: f64,
    pub refresh: RollupRefresh,
}

/// How a rollup came to be current over this data state (`GET /api/v1/catalog/status`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RollupRefresh {
    /// `loaded` (the stored copy matched), `updated` (only `dates` recomputed) or `built`.
    pub how: &'static str,
    /// Why it was updated or built rather than loaded.
    pub reason: Option<String>,
    /// The local dates an update recomputed (inclusive spans).
    pub dates: Vec<(NaiveDate, NaiveDate)>,
    /// Set when the rollup could not be stored (it serves from memory and is built next start).
    pub store_error: Option<String>,
}

pub enum RollupForm {
    /// Partial results of measures by time and dimensions.
    Measures {
        /// Each base measure it holds, by name, as it re-aggregates over the rollup's columns (a sum of partial sums, of
        /// partial counts or of distinct counts, a min of mins, a max of maxes, a sum over a
        /// count).
        rolled: BTreeMap<String, Measure>,
        /// Set when the model's timestamps are kept as local dates in this time zone (no
        /// snapshot measure needs the instants): exact for every query bucketed in that zone,
        /// since ranges and periods are whole local days.
        days_in: Option<chrono_tz::Tz>,
    },
    /// Churn counts of one churn base for pairs of period-end snapshots.
    Churn {
        base: usize,
        /// Every snapshot date of the model when the rollup was built, ascending: a query's
        /// periods and their end snapshots are computed from these, without reading the model.
        snapshots: Vec<NaiveDate>,
        /// The (previous period end, period end) pairs it holds counts for.
        pairs: BTreeSet<(NaiveDate, NaiveDate)>,
    },
    /// One row per entity of a funnel metric: its first-step time and when it reached each step.
    Funnel { metric: String },
    /// A cohort metric's triangle by the rollup's dimensions, bucketed in this time zone with
    /// weeks starting on this day (a query on another calendar reads the model).
    Cohort {
        metric: String,
        time_zone: chrono_tz::Tz,
        week_start: chrono::Weekday,
    },
}

/// A rollup that validated and is ready to be built.
pub struct RollupDefinition {
    pub name: String,
    pub file: String,
    pub spec: RollupSpec,
    pub form: DefinitionForm,
}

pub enum DefinitionForm {
    Measures,
    Churn { base: usize, grains: Vec<Grain> },
    Funnel { metric: String },
    Cohort { metric: String },
}

/// How partial results of `agg` combine exactly, if they can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaggregation {
    /// Partial results combined by this aggregation.
    By(Aggregation),
    /// Partial counts, summed: 0 over no rows, as the count itself gives.
    SumOfCounts,
    /// A partial sum and a partial count, combined as sum / count.
    SumOverCount,
    /// Partial distinct counts, summed: exact only when each entity falls in one group (at a
    /// snapshot, for semi-additive measures), which the build checks.
    SumOfDistinct,
}

pub fn reaggregation(agg: Aggregation) -> Reaggregation {
    match agg {
        Aggregation::Sum => Reaggregation::By(Aggregation::Sum),
        Aggregation::Count => Reaggregation::SumOfCounts,
        Aggregation::Min => Reaggregation::By(Aggregation::Min),
        Aggregation::Max => Reaggregation::By(Aggregation::Max),
        Aggregation::Avg => Reaggregation::SumOverCount,
        Aggregation::CountDistinct => Reaggregation::SumOfDistinct,
    }
}

pub(super) fn validate(
    declared: &BTreeMap<&str, Declared<'_, RollupSpec>>,
    models: &BTreeMap<String, Model>,
    measures: &BTreeMap<String, Measure>,
    metrics: &BTreeMap<String, Metric>,
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
        let forms = [
            !spec.measures.is_empty(),
            spec.churn.is_some(),
            spec.funnel.is_some(),
            spec.cohort.is_some(),
        ];
        let form = match forms.iter().filter(|f| **f).count() {
            0 => {
                errors.push(
                    d.file,
                    &key,
                    "list at least one measure (or name a churn, funnel or cohort metric)",
                );
                None
            }
            1 if spec.churn.is_some() => churn_form(d, &key, model, metrics, &mut errors),
            1 if spec.funnel.is_some() || spec.cohort.is_some() => {
                entity_metric_form(d, &key, metrics, &mut errors)
            }
            1 => {
                measures_of_model(d, &key, measures, &mut errors);
                Some(DefinitionForm::Measures)
            }
            _ => {
                errors.push(
                    d.file,
                    &key,
                    "a rollup holds measures, a churn, a funnel or a cohort metric: declare \
                     one rollup for each",
                );
                None
            }
        };
        if !spec.grains.is_empty() && spec.churn.is_none() {
            errors.push(
                d.file,
                format!("{key}.grains"),
                "grains apply to churn rollups only (measure rollups keep the model's time)",
            );
        }
        if let (Some(form), true) = (form, errors.0.len() == before) {
            out.push(RollupDefinition {
                name: name.to_string(),
                file: d.file.to_string(),
                spec: spec.clone(),
                form,
            });
        }
    }
    errors.check()?;
    Ok(out)
}

fn measures_of_model(
    d: &Declared<'_, RollupSpec>,
    key: &str,
    measures: &BTreeMap<String, Measure>,
    errors: &mut CatalogErrors,
) {
    let spec = d.spec;
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
            Some(_) => {}
        }
    }
}

/// The metric a churn, funnel or cohort rollup names (under `field`): of `kind`, over the
/// rollup's model, with `counts` saying which model a metric of that kind counts.
fn named_metric<'a>(
    d: &Declared<'_, RollupSpec>,
    key: &str,
    (field, name): (&str, &str),
    kind: crate::spec::MetricKind,
    metrics: &'a BTreeMap<String, Metric>,
    counts: impl Fn(&Metric) -> String,
    errors: &mut CatalogErrors,
) -> Option<&'a Metric> {
    let at = format!("{key}.{field}");
    let reason = match metrics.get(name) {
        None => format!("unknown metric '{name}'"),
        Some(m) if m.definition.kind() != kind => format!(
            "'{name}' is a {} metric, not a {} metric",
            m.definition.kind(),
            kind
        ),
        Some(m) if counts(m) != d.spec.model => format!(
            "'{name}' counts model '{}', not '{}'",
            counts(m),
            d.spec.model
        ),
        Some(m) => return Some(m),
    };
    errors.push(d.file, at, reason);
    None
}

fn churn_form(
    d: &Declared<'_, RollupSpec>,
    key: &str,
    model: &Model,
    metrics: &BTreeMap<String, Metric>,
    errors: &mut CatalogErrors,
) -> Option<DefinitionForm> {
    let name = d.spec.churn.as_deref().expect("a churn rollup");
    let counts = |m: &Metric| m.definition.entity_model().unwrap_or_default().to_string();
    let metric = named_metric(
        d,
        key,
        ("churn", name),
        crate::spec::MetricKind::Churn,
        metrics,
        counts,
        errors,
    )?;
    let MetricDefinition::Churn(churn) = &metric.definition else {
        unreachable!("named_metric checked: a churn metric")
    };
    let base = churn.base;
    // Periods are computed from the snapshot dates in Rust, which reads them as calendar dates.
    if model.time.as_ref().map(|t| &t.data_type) != Some(&DataType::Date32) {
        errors.push(
            d.file,
            format!("{key}.churn"),
            format!(
                "churn rollups need a model whose time column is a date; '{}' has {}",
                model.name,
                model
                    .time
                    .as_ref()
                    .map(|t| t.data_type.to_string())
                    .unwrap_or_else(|| "none".into())
            ),
        );
        return None;
    }
    let mut grains = d.spec.grains.clone();
    if grains.is_empty() {
        grains.push(Grain::Month);
    }
    grains.dedup();
    Some(DefinitionForm::Churn { base, grains })
}

/// A funnel or cohort rollup: the metric it names, checked.
fn entity_metric_form(
    d: &Declared<'_, RollupSpec>,
    key: &str,
    metrics: &BTreeMap<String, Metric>,
    errors: &mut CatalogErrors,
) -> Option<DefinitionForm> {
    use crate::spec::MetricKind;
    let (field, name, kind, form): (_, _, _, fn(String) -> DefinitionForm) =
        match (&d.spec.funnel, &d.spec.cohort) {
            (Some(f), _) => ("funnel", f, MetricKind::Funnel, |metric| {
                DefinitionForm::Funnel { metric }
            }),
            (_, Some(c)) => ("cohort", c, MetricKind::Cohort, |metric| {
                DefinitionForm::Cohort { metric }
            }),
            (None, None) => unreachable!("a funnel or cohort rollup"),
        };
    let counts = |m: &Metric| m.definition.entity_model().unwrap_or_default().to_string();
    named_metric(d, key, (field, name), kind, metrics, counts, errors)?;
    Some(form(name.to_string()))
}

/// What the build found that a rollup's measure cannot answer exactly, per measure.
pub fn distinct_refusal(measure: &str, entity_rows: i64, summed: i64, snapshot: bool) -> String {
    let at = if snapshot { " at a snapshot" } else { "" };
    format!(
        "'{measure}' is a distinct count and some of its entities are counted more than once{at} \
         (in two groups of this rollup, or on two rows of one: {summed} values against \
         {entity_rows} distinct): summing the groups would count them twice, so it is computed \
         from the model; drop dimensions that are not attributes of the entity"
    )
}
