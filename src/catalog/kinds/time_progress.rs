//! `type: time_progress`: the share of each period gone by the query's end (时间进度), set per
//! row once the rows are known, to pace actuals against targets.

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{EmptyPeriod, FormatStyle, MetricKind};

pub struct TimeProgressMetric;

impl Declare for TimeProgressMetric {
    const FIELDS: &'static [&'static str] = &[];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = false;

    fn check(_: &mut MetricCheck<'_, '_>) -> Option<Self> {
        Some(TimeProgressMetric)
    }
}

impl Kind for TimeProgressMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::TimeProgress
    }

    fn measures(&self) -> Vec<&str> {
        Vec::new()
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn entity_model(&self) -> Option<&str> {
        None
    }

    /// It reads no model.
    fn constrains_dimensions(&self) -> bool {
        true
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
        "the share of the period's days gone by (时间进度)"
    }
}
