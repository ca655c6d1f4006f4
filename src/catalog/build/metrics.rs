//! Metrics: each checked by its kind (`catalog/kinds/`), then given the defaults every metric
//! gets (label, format, what an empty period shows), then the derived metrics' dependency graph.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;

use super::{Builder, Declared};
use crate::catalog::CatalogErrors;
use crate::catalog::kinds::{self, ChurnBase, MetricCheck, MetricDefinition};
use crate::catalog::{Dimension, Measure, Metric, Model};
use crate::spec::{EmptyPeriod, FormatSpec, Label, MetricSpec};

impl Builder<'_> {
    pub(super) fn build_metrics(
        &mut self,
        measures: &BTreeMap<String, Measure>,
        models: &BTreeMap<String, Model>,
        dimensions: &BTreeMap<String, Dimension>,
        hierarchies: &BTreeMap<String, Vec<String>>,
    ) -> Result<(BTreeMap<String, Metric>, Vec<ChurnBase>), CatalogErrors> {
        let mut errors = CatalogErrors::default();
        // Derived expressions are parsed against a schema whose columns are the metric names.
        let metric_schema = DFSchema::try_from(Schema::new(
            self.metrics
                .keys()
                .map(|n| Field::new(*n, DataType::Float64, true))
                .collect::<Vec<_>>(),
        ))
        .expect("metric names are unique");
        let mut out = BTreeMap::new();
        let mut churn_bases: Vec<ChurnBase> = Vec::new();
        for (name, d) in &self.metrics {
            let mut check = MetricCheck {
                d,
                key: format!("metrics.{name}"),
                errors: &mut errors,
                plans: &self.plans,
                measures,
                models,
                dimensions,
                hierarchies,
                declared: &self.metrics,
                metric_schema: &metric_schema,
                churn_bases: &mut churn_bases,
            };
            check.fields_of_its_kind(kinds::declared(d.spec.kind).fields);
            let Some(definition) = MetricDefinition::check(&mut check) else {
                continue;
            };
            // What a gap-filled period without data shows: as declared, else the kind's default.
            let empty = match d.spec.empty {
                Some(declared) => match definition.refuses_empty(declared) {
                    Some(reason) => {
                        check.push("empty", reason);
                        EmptyPeriod::Null
                    }
                    None => declared,
                },
                None => definition.default_empty(measures),
            };
            out.insert(name.to_string(), finished(name, d, definition, empty));
        }
        errors.check()?;
        // Derived metrics form a DAG.
        for name in out.keys() {
            if let Err(cycle) = derived_cycle(&out, name, &mut Vec::new()) {
                let m = &out[name];
                errors.push(
                    &m.file,
                    format!("metrics.{name}.expr"),
                    format!("derived metrics form a cycle: {}", cycle.join(" -> ")),
                );
            }
        }
        errors.check()?;
        Ok((out, churn_bases))
    }
}

/// The metric with its label, format and direction (declared, or the kind's defaults).
fn finished(
    name: &str,
    d: &Declared<'_, MetricSpec>,
    definition: MetricDefinition,
    empty: EmptyPeriod,
) -> Metric {
    let spec = d.spec;
    let default_style = definition.default_style();
    Metric {
        name: name.to_string(),
        file: d.file.to_string(),
        definition,
        label: spec.label.clone().unwrap_or_else(|| Label {
            zh: None,
            en: Some(name.replace('_', " ")),
        }),
        description: spec.description.clone(),
        format: spec.format.clone().unwrap_or(FormatSpec {
            style: default_style,
            decimals: None,
            currency: None,
        }),
        direction: spec.direction.unwrap_or_default(),
        thresholds: spec.thresholds.clone(),
        empty,
    }
}

/// `90d`, `36h`, `2w`, `30m` as microseconds.
pub(in crate::catalog) fn parse_duration_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "w" => 7 * 86_400,
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000)
}

fn derived_cycle(
    metrics: &BTreeMap<String, Metric>,
    name: &str,
    stack: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    if stack.iter().any(|s| s == name) {
        let mut cycle = stack.clone();
        cycle.push(name.to_string());
        return Err(cycle);
    }
    if let Some(m) = metrics.get(name) {
        stack.push(name.to_string());
        for dep in m.definition.metrics_read() {
            derived_cycle(metrics, &dep, stack)?;
        }
        stack.pop();
    }
    Ok(())
}
