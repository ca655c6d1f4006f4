//! `type: cumulative`: a running total of a flow measure, since a reset (YTD, QTD, MTD, since
//! ever) or over the last `window` periods, summed or averaged.

use std::collections::BTreeMap;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{Aggregation, EmptyPeriod, FormatStyle, MetricKind, Reset, Window};

#[derive(Debug, Clone, PartialEq)]
pub struct CumulativeMetric {
    pub measure: String,
    pub span: CumulativeSpan,
    /// With `LastPeriods`: the mean of the window's periods rather than their sum.
    pub average: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CumulativeSpan {
    /// From the start of the reset period holding the period's last day (YTD, QTD, MTD), or from
    /// the first row (`Reset::Never`), through the period's last day.
    SinceReset(Reset),
    /// The period and the ones before it, this many in all (a rolling 12 months).
    LastPeriods(u32),
}

impl Declare for CumulativeMetric {
    const FIELDS: &'static [&'static str] = &["measure", "reset", "window", "average"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = true;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let measure = c.measure_ref("measure", &c.spec().measure.clone())?;
        let m = c.measures.get(&measure)?;
        if m.snapshot.is_some() {
            c.push(
                "measure",
                format!("'{measure}' is a balance (semi-additive over time): a running total adds periods, so its measure must be a flow"),
            );
            return None;
        }
        match m.agg {
            Aggregation::Sum | Aggregation::Count => {}
            Aggregation::CountDistinct | Aggregation::Avg | Aggregation::Min | Aggregation::Max => {
                c.push(
                    "measure",
                    format!("'{measure}' is not a sum or a count: a running total adds the periods' values, which only sums and counts allow"),
                );
                return None;
            }
        }
        let spec = c.d.spec;
        let span = match (spec.reset, &spec.window) {
            (Some(reset), None) => CumulativeSpan::SinceReset(reset),
            (None, Some(Window::Periods(n))) if (1..=366).contains(n) => {
                CumulativeSpan::LastPeriods(*n)
            }
            (None, Some(w)) => {
                c.push(
                    "window",
                    format!("'{w}' is not a number of periods from 1 to 366"),
                );
                return None;
            }
            (Some(_), Some(_)) => {
                c.push(
                    "window",
                    "either `reset` (a running total) or `window` (a rolling one), not both",
                );
                return None;
            }
            (None, None) => {
                c.push(
                    "reset",
                    "required for type 'cumulative' (or `window`: a number of periods)",
                );
                return None;
            }
        };
        let average = spec.average.unwrap_or(false);
        if average && matches!(span, CumulativeSpan::SinceReset(_)) {
            c.push(
                "average",
                "an average is over a `window` of periods; a running total since a reset is a sum",
            );
            return None;
        }
        Some(CumulativeMetric {
            measure,
            span,
            average,
        })
    }
}

impl Kind for CumulativeMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Cumulative
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

    /// A period whose window holds no rows adds nothing: its running total is 0.
    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Zero
    }

    fn refuses_empty(&self, _: EmptyPeriod) -> Option<&'static str> {
        None
    }

    /// Running totals of sums and counts (checked), and their means over a fixed window.
    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        true
    }

    fn meaning(&self) -> &'static str {
        "a running total over periods (from the start of the year, quarter or over a rolling window)"
    }
}
