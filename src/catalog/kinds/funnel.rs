//! `type: funnel`: entities reaching each step, in order, within a window after their first
//! step. Its answer is a row per step.

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::catalog::build::parse_duration_micros;
use crate::spec::{EmptyPeriod, FormatStyle, Label, MetricKind, Window};

pub struct FunnelMetric {
    pub model: String,
    pub entity: String,
    pub step: String,
    pub steps: Vec<String>,
    /// How steps are shown, by step (those declared).
    pub step_labels: BTreeMap<String, Label>,
    /// The window after the first step, in microseconds.
    pub window_micros: i64,
    pub window: String,
}

impl Declare for FunnelMetric {
    const FIELDS: &'static [&'static str] =
        &["model", "entity", "step", "steps", "step_labels", "window"];
    const SHAPE: Shape = Shape::Steps;
    const CAN_BE_ACTUAL: bool = false;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let (model, entity) = c.entity_model()?;
        let spec = c.d.spec;
        let step = match &spec.step {
            None => {
                c.required("step");
                return None;
            }
            Some(s) if model.schema.field_with_name(s).is_err() => {
                c.push(
                    "step",
                    format!("model '{}' has no column '{s}'", model.name),
                );
                return None;
            }
            Some(s) => s.clone(),
        };
        if spec.steps.len() < 2 {
            c.push("steps", "a funnel needs at least two steps");
            return None;
        }
        for step in spec.step_labels.keys() {
            if !spec.steps.contains(step) {
                c.push(
                    &format!("step_labels.{step}"),
                    format!(
                        "'{step}' is not one of the steps ({})",
                        spec.steps.join(", ")
                    ),
                );
            }
        }
        for (i, st) in spec.steps.iter().enumerate() {
            if spec.steps[..i].contains(st) {
                c.push(&format!("steps[{i}]"), format!("step '{st}' appears twice"));
            }
        }
        let Some(window) = &spec.window else {
            c.required("window");
            return None;
        };
        let Some(window_micros) = (match window {
            Window::Span(w) => parse_duration_micros(w),
            Window::Periods(_) => None,
        }) else {
            c.push(
                "window",
                format!("'{window}' is not a duration like 90d, 36h or 2w"),
            );
            return None;
        };
        Some(FunnelMetric {
            model: model.name.clone(),
            entity,
            step,
            steps: spec.steps.clone(),
            step_labels: spec.step_labels.clone(),
            window_micros,
            window: window.to_string(),
        })
    }
}

impl Kind for FunnelMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Funnel
    }

    fn measures(&self) -> Vec<&str> {
        Vec::new()
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn entity_model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn constrains_dimensions(&self) -> bool {
        true
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Integer
    }

    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Null
    }

    fn refuses_empty(&self, _: EmptyPeriod) -> Option<&'static str> {
        None
    }

    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        false
    }

    fn meaning(&self) -> &'static str {
        "entities reaching each step within the window after their first step"
    }
}
