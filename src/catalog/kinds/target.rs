//! `type: target`: targets set per member of an org level and period (a measure over a targets
//! model), read over whole periods; null where none is set or the query's grouping cannot be
//! answered from them (below `level`, above it unless `additive`, by another dimension).

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{EmptyPeriod, FormatStyle, MetricKind};

pub struct TargetMetric {
    pub measure: String,
    pub level: String,
    /// Whether targets add up the hierarchy above `level`.
    pub additive: bool,
}

impl Declare for TargetMetric {
    const FIELDS: &'static [&'static str] = &["measure", "level", "additive"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = false;

    /// A measure over a model that provides the org level the targets are set at.
    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let measure = c.measure_ref("measure", &c.spec().measure.clone())?;
        let model = &c.models[&c.measures.get(&measure)?.model];
        let Some(level) = c.spec().level.clone() else {
            c.required("level");
            return None;
        };
        if !c.hierarchies.values().any(|levels| levels.contains(&level)) {
            c.push(
                "level",
                format!("'{level}' is no level of a hierarchy (targets are set per member of one)"),
            );
            return None;
        }
        if !model.dimensions.contains_key(&level) {
            c.push(
                "level",
                format!(
                    "model '{}' of measure '{measure}' has no dimension '{level}'",
                    model.name
                ),
            );
            return None;
        }
        Some(TargetMetric {
            measure,
            level,
            additive: c.spec().additive.unwrap_or(false),
        })
    }
}

impl Kind for TargetMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Target
    }

    fn measures(&self) -> Vec<&str> {
        vec![&self.measure]
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn entity_model(&self) -> Option<&str> {
        None
    }

    /// Null where its model lacks a dimension, never an error.
    fn constrains_dimensions(&self) -> bool {
        false
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Number
    }

    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Null
    }

    fn refuses_empty(&self, declared: EmptyPeriod) -> Option<&'static str> {
        (declared == EmptyPeriod::Zero).then_some("a target not set is null (unknown), never 0")
    }

    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        false
    }

    fn meaning(&self) -> &'static str {
        "the target set for the period at its org level; null where none was set or the rows are below that level"
    }
}
