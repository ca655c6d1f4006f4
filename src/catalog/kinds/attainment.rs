//! `type: attainment`: an actual metric over its target (任务完成率), or the target over the
//! actual when lower is better.

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape, declared};
use crate::catalog::Measure;
use crate::spec::{Direction, EmptyPeriod, FormatStyle, MetricKind};

pub struct AttainmentMetric {
    pub actual: String,
    pub target: String,
    pub lower_is_better: bool,
}

impl Declare for AttainmentMetric {
    const FIELDS: &'static [&'static str] = &["actual", "target"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = false;

    /// The actual: a metric of a kind with a value per period and group; the target: a target.
    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let spec = c.spec();
        let (actual, target) = (spec.actual.clone(), spec.target.clone());
        let kind_of = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| c.declared.get(n))
                .map(|m| m.spec.kind)
        };
        let (actual_kind, target_kind) = (kind_of(&actual), kind_of(&target));
        match (&actual, actual_kind) {
            (None, _) => c.required("actual"),
            (Some(a), None) => c.push("actual", format!("unknown metric '{a}'")),
            (Some(a), Some(k)) if !declared(k).can_be_actual => c.push(
                "actual",
                format!("'{a}' is a {k} metric: attainment measures a value per period and group"),
            ),
            (Some(_), Some(_)) => {}
        }
        match (&target, target_kind) {
            (None, _) => c.required("target"),
            (Some(t), None) => c.push("target", format!("unknown metric '{t}'")),
            (Some(t), Some(k)) if k != MetricKind::Target => c.push(
                "target",
                format!("'{t}' is a {k} metric, not a target (type: target)"),
            ),
            (Some(_), Some(_)) => {}
        }
        let lower_is_better = actual
            .as_deref()
            .and_then(|a| c.declared.get(a))
            .is_some_and(|m| m.spec.direction == Some(Direction::LowerIsBetter));
        Some(AttainmentMetric {
            actual: actual?,
            target: target?,
            lower_is_better,
        })
    }
}

impl Kind for AttainmentMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Attainment
    }

    fn measures(&self) -> Vec<&str> {
        Vec::new()
    }

    fn metrics(&self) -> Vec<&str> {
        vec![&self.actual, &self.target]
    }

    fn entity_model(&self) -> Option<&str> {
        None
    }

    /// Its actual constrains the query; its target is null where it cannot answer.
    fn constrains_dimensions(&self) -> bool {
        false
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Percent
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
        "the actual value over its target (target over actual where lower is better)"
    }
}
