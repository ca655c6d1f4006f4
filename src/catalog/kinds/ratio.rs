//! `type: ratio`: the sum of a numerator over the sum of a denominator at every level, never an
//! average of sub-ratios; null where the denominator is 0.

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{EmptyPeriod, FormatStyle, MetricKind};

pub struct RatioMetric {
    pub numerator: String,
    pub denominator: String,
}

impl Declare for RatioMetric {
    const FIELDS: &'static [&'static str] = &["numerator", "denominator"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = true;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let (n, d) = (c.spec().numerator.clone(), c.spec().denominator.clone());
        let numerator = c.measure_ref("numerator", &n);
        let denominator = c.measure_ref("denominator", &d);
        Some(RatioMetric {
            numerator: numerator?,
            denominator: denominator?,
        })
    }
}

impl Kind for RatioMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Ratio
    }

    fn measures(&self) -> Vec<&str> {
        vec![&self.numerator, &self.denominator]
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn entity_model(&self) -> Option<&str> {
        None
    }

    fn constrains_dimensions(&self) -> bool {
        true
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Percent
    }

    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Null
    }

    fn refuses_empty(&self, declared: EmptyPeriod) -> Option<&'static str> {
        (declared == EmptyPeriod::Zero).then_some("a ratio of empty parts is null, not zero")
    }

    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        false
    }

    fn meaning(&self) -> &'static str {
        "the sum of a numerator over the sum of a denominator across all rows asked: never an average of sub-ratios; null where the denominator is 0"
    }
}
