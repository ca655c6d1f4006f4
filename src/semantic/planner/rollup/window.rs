//! The local dates a refresh recomputes, and the rows of a model or rollup they cover.

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::lit;

use crate::semantic::calendar::CalendarConfig;
use crate::semantic::validate::days_since_epoch;

/// Spans of local dates (inclusive, in the calendar's time zone) that a refresh recomputes: the
/// model's rows whose time falls on them, and the rollup's rows keyed on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DateWindow(pub Vec<(NaiveDate, NaiveDate)>);

impl DateWindow {
    /// Adds a span, merging it with those it overlaps or touches.
    pub fn add(&mut self, from: NaiveDate, to: NaiveDate) {
        self.0.push((from.min(to), from.max(to)));
        self.0.sort();
        let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for (f, t) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if f <= last.1.succ_opt().unwrap_or(last.1) => last.1 = last.1.max(t),
                _ => merged.push((f, t)),
            }
        }
        self.0 = merged;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.0.iter().any(|(f, t)| *f <= d && d <= *t)
    }

    /// `time` (a model's time column of `data_type`) on one of the window's local dates.
    pub fn filter(&self, time: Expr, data_type: &DataType, calendar: &CalendarConfig) -> Expr {
        self.0
            .iter()
            .map(|(from, to)| {
                let next = to.succ_opt().unwrap_or(*to);
                match data_type {
                    DataType::Timestamp(unit, zone) => {
                        let bound = |d: NaiveDate| {
                            timestamp_literal(
                                *unit,
                                zone.clone(),
                                local_midnight(d, zone, calendar),
                            )
                        };
                        time.clone()
                            .gt_eq(bound(*from))
                            .and(time.clone().lt(bound(next)))
                    }
                    _ => {
                        let day = |d: NaiveDate| {
                            cast(
                                lit(ScalarValue::Date32(Some(days_since_epoch(d)))),
                                data_type.clone(),
                            )
                        };
                        time.clone()
                            .gt_eq(day(*from))
                            .and(time.clone().lt_eq(day(*to)))
                    }
                }
            })
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }
}

/// Nanoseconds since the epoch of `d`'s first instant: in the calendar's zone for a zoned
/// timestamp (as query ranges cut it), the naive midnight for one without a zone (already local).
pub(super) fn local_midnight(
    d: NaiveDate,
    zone: &Option<std::sync::Arc<str>>,
    calendar: &CalendarConfig,
) -> i64 {
    match zone {
        Some(_) => calendar.first_instant(d).saturating_mul(1_000),
        None => d
            .and_hms_opt(0, 0, 0)
            .expect("midnight is a valid time")
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap_or(i64::MAX),
    }
}

pub(super) fn timestamp_literal(
    unit: TimeUnit,
    zone: Option<std::sync::Arc<str>>,
    nanos: i64,
) -> Expr {
    lit(match unit {
        TimeUnit::Second => ScalarValue::TimestampSecond(Some(nanos / 1_000_000_000), zone),
        TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(nanos / 1_000_000), zone),
        TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(nanos / 1_000), zone),
        TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(nanos), zone),
    })
}
