//! `type: simple`: one measure as it aggregates (a balance taken at each period's snapshot,
//! never summed across periods).

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{Aggregation, EmptyPeriod, FormatStyle, MetricKind, SnapshotPick};

pub struct SimpleMetric {
    pub measure: String,
}

impl Declare for SimpleMetric {
    const FIELDS: &'static [&'static str] = &["measure"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = true;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let measure = c.spec().measure.clone();
        c.measure_ref("measure", &measure)
            .map(|measure| SimpleMetric { measure })
    }
}

impl Kind for SimpleMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Simple
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

    fn constrains_dimensions(&self) -> bool {
        true
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Number
    }

    /// Zero for sums and counts of flows, the last value for balances, null for the rest.
    fn default_empty(&self, measures: &BTreeMap<String, Measure>) -> EmptyPeriod {
        // An unknown measure is already an error of this metric.
        let Some(m) = measures.get(&self.measure) else {
            return EmptyPeriod::Null;
        };
        match (m.snapshot, m.agg) {
            // A period without snapshot dates has no average to carry.
            (Some(SnapshotPick::Average), _) => EmptyPeriod::Null,
            (Some(SnapshotPick::Last | SnapshotPick::First), _) => EmptyPeriod::Carry,
            (None, Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct) => {
                EmptyPeriod::Zero
            }
            (None, Aggregation::Avg | Aggregation::Min | Aggregation::Max) => EmptyPeriod::Null,
        }
    }

    fn refuses_empty(&self, _: EmptyPeriod) -> Option<&'static str> {
        None
    }

    /// Sums and counts add up over members (a balance too: it is semi-additive over time only).
    fn adds_up(&self, measures: &BTreeMap<String, Measure>) -> bool {
        measures.get(&self.measure).is_some_and(|m| match m.agg {
            Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct => true,
            Aggregation::Avg | Aggregation::Min | Aggregation::Max => false,
        })
    }

    fn meaning(&self) -> &'static str {
        "an aggregate of one measure over the rows asked (a balance is taken at each period's end, never summed across periods)"
    }
}
