//! Calendar arithmetic for periods, comparisons and gap filling. Pure date logic (no engine), so
//! it can be property-tested on its own: `tests/it/calendar.rs`.
//!
//! Rules that are easy to get wrong and are pinned here:
//! - shifting a month end by months lands on the target month's end (Feb 29 -> Jan 31,
//!   Mar 31 -> Feb 29 in a leap year, Feb 28 2025 -> Jan 31); any other day is clamped to the
//!   target month's length (Jan 30 + 1 month -> Feb 28/29);
//! - a year shift is twelve month shifts, so Feb 29 2024 -> Feb 28 2023;
//! - a partial current period is compared with the same number of days of the comparison period.

pub use crate::protocol::Comparison;
use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use serde::Serialize;

use crate::semantic::QueryError;
use crate::spec::Grain;

/// How the bank's calendar is configured: the time zone timestamps are bucketed in, the first
/// day of a week, and the years a request may name. Dates (not timestamps) are already local and
/// are never shifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarConfig {
    pub time_zone: chrono_tz::Tz,
    pub week_start: Weekday,
    /// A date a client gives outside these years is refused (422) before any arithmetic: the
    /// calendar then never nears chrono's limits, and a day-grain series stays bounded.
    pub years: std::ops::RangeInclusive<i32>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::Asia::Shanghai,
            week_start: Weekday::Mon,
            years: 1900..=2200,
        }
    }
}

impl CalendarConfig {
    /// A client's date, refused with the field's name when outside the configured years.
    pub fn check_date(&self, d: NaiveDate, field: &str) -> Result<NaiveDate, QueryError> {
        if self.years.contains(&d.year()) {
            Ok(d)
        } else {
            Err(QueryError::invalid(format!(
                "{d} is outside the years this server answers for ({} to {})",
                self.years.start(),
                self.years.end()
            ))
            .at(field))
        }
    }

    pub fn week_start_name(&self) -> &'static str {
        match self.week_start {
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
            Weekday::Sun => "sunday",
        }
    }

    /// Microseconds since the epoch of local date `d`'s first instant in the calendar's zone:
    /// its midnight, the first of two when clocks fall back over it, or the moment clocks spring
    /// past it when it does not exist (Havana's 2024-03-10 starts at 01:00). The one place a date
    /// becomes an instant: query ranges over the models and rollup refreshes share it, so both
    /// cut the same rows.
    pub fn first_instant(&self, d: NaiveDate) -> i64 {
        use chrono::TimeZone;
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight is a valid time");
        // Spring-forward gaps are whole minutes and shorter than a day.
        (0..24 * 60)
            .find_map(|minute| {
                self.time_zone
                    .from_local_datetime(&(midnight + chrono::Duration::minutes(minute)))
                    .earliest()
            })
            .map(|t| t.timestamp_micros())
            .unwrap_or_else(|| midnight.and_utc().timestamp_micros())
    }

    pub fn today(&self) -> NaiveDate {
        chrono::Utc::now()
            .with_timezone(&self.time_zone)
            .date_naive()
    }
}

/// The first day of the period containing `d`.
pub fn period_start(d: NaiveDate, grain: Grain, week_start: Weekday) -> NaiveDate {
    match grain {
        Grain::Day => d,
        Grain::Week => {
            let back =
                (d.weekday().num_days_from_monday() + 7 - week_start.num_days_from_monday()) % 7;
            d - Days::new(back as u64)
        }
        Grain::Month => d.with_day(1).expect("day 1 exists"),
        Grain::Quarter => {
            let month = (d.month0() / 3) * 3 + 1;
            NaiveDate::from_ymd_opt(d.year(), month, 1).expect("quarter start exists")
        }
        Grain::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("Jan 1 exists"),
    }
}

/// The first day of the period after the one starting at `start`.
pub fn next_period(start: NaiveDate, grain: Grain) -> NaiveDate {
    shift(start, grain, 1)
}

/// The last day of the period containing `d`.
pub fn period_end(d: NaiveDate, grain: Grain, week_start: Weekday) -> NaiveDate {
    next_period(period_start(d, grain, week_start), grain) - Days::new(1)
}

/// Every period start from the period containing `from` to the one containing `to`.
pub fn periods(
    from: NaiveDate,
    to: NaiveDate,
    grain: Grain,
    week_start: Weekday,
) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut p = period_start(from, grain, week_start);
    while p <= to {
        out.push(p);
        p = next_period(p, grain);
    }
    out
}

/// `d` moved by `n` periods of `grain` (negative: back). Month-based grains keep month ends at
/// month ends and clamp other days to the target month.
pub fn shift(d: NaiveDate, grain: Grain, n: i32) -> NaiveDate {
    match grain {
        Grain::Day => add_days(d, n as i64),
        Grain::Week => add_days(d, 7 * n as i64),
        Grain::Month => add_months(d, n),
        Grain::Quarter => add_months(d, 3 * n),
        Grain::Year => add_months(d, 12 * n),
    }
}

fn add_days(d: NaiveDate, n: i64) -> NaiveDate {
    if n >= 0 {
        d + Days::new(n as u64)
    } else {
        d - Days::new(n.unsigned_abs())
    }
}

/// Month arithmetic that keeps a month end a month end.
pub fn add_months(d: NaiveDate, n: i32) -> NaiveDate {
    let months = Months::new(n.unsigned_abs());
    let moved = if n >= 0 {
        d.checked_add_months(months)
    } else {
        d.checked_sub_months(months)
    }
    .expect("date in range"); // chrono clamps the day to the target month's length
    if is_month_end(d) {
        month_end(moved)
    } else {
        moved
    }
}

pub fn is_month_end(d: NaiveDate) -> bool {
    d.succ_opt().is_none_or(|n| n.month() != d.month())
}

pub fn month_end(d: NaiveDate) -> NaiveDate {
    d.with_day(1)
        .and_then(|first| first.checked_add_months(Months::new(1)))
        .expect("date in range")
        - Days::new(1)
}

/// The range a comparison reads, and how a period of the query maps onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComparisonWindow {
    pub compare: Comparison,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The unit one step back is measured in, and how many of them.
    #[serde(skip)]
    pub step: (Grain, i32),
    /// Days compared when the current period is partial (same number of days on both sides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_days: Option<i64>,
}

impl ComparisonWindow {
    /// The comparison date for a date of the query (e.g. a period start).
    pub fn back(&self, d: NaiveDate) -> NaiveDate {
        shift(d, self.step.0, -self.step.1)
    }

    /// The period of the comparison's answer that a period of the query (its start `p`; the
    /// query's last day `to`) is compared with; none without a grain (one row each side).
    /// Year start compares every period with the year before the one its last day is in (a week
    /// from Dec 30 to Jan 5 compares with the year just ended); the others step back.
    pub fn matching_period(
        &self,
        p: NaiveDate,
        grain: Option<Grain>,
        to: NaiveDate,
        week_start: Weekday,
    ) -> Option<NaiveDate> {
        let g = grain?;
        Some(match self.compare {
            Comparison::YearStart => {
                let end = period_end(p, g, week_start).min(to);
                NaiveDate::from_ymd_opt(end.year() - 1, 1, 1).expect("checked years")
            }
            _ => period_start(self.back(p), g, week_start),
        })
    }
}

/// A query's time range after clipping to the as-of date. A period that has started but not
/// ended by `as_of` is partial: comparisons then use the same number of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryWindow {
    pub from: NaiveDate,
    /// The last day read: the requested `to`, or `as_of` when that is earlier.
    pub to: NaiveDate,
    pub requested_to: NaiveDate,
    /// First day of the partial last period, if the last period is partial.
    pub partial_start: Option<NaiveDate>,
}

pub fn query_window(
    from: NaiveDate,
    to: NaiveDate,
    grain: Option<Grain>,
    as_of: NaiveDate,
    week_start: Weekday,
) -> QueryWindow {
    if as_of < from || as_of >= to {
        return QueryWindow {
            from,
            to,
            requested_to: to,
            partial_start: None,
        };
    }
    let partial_start = match grain {
        Some(g) if period_end(as_of, g, week_start) == as_of => None,
        Some(g) => Some(period_start(as_of, g, week_start).max(from)),
        None => Some(from),
    };
    QueryWindow {
        from,
        to: as_of,
        requested_to: to,
        partial_start,
    }
}

/// The comparison range for a query window.
pub fn comparison_window(
    compare: Comparison,
    grain: Option<Grain>,
    w: &QueryWindow,
    week_start: Weekday,
) -> ComparisonWindow {
    if compare == Comparison::YearStart {
        // Every year the range ends in, a year back: the comparison runs by year, and a balance's
        // value for a year is its last snapshot in it (Dec 30 if that is the last).
        let year = |d: NaiveDate, month, day| {
            NaiveDate::from_ymd_opt(d.year() - 1, month, day).expect("checked years")
        };
        return ComparisonWindow {
            compare,
            from: year(w.from, 1, 1),
            to: year(w.to, 12, 31),
            step: (Grain::Year, 1),
            partial_days: None,
        };
    }
    let step = match (compare, grain) {
        (Comparison::SamePeriodLastYear, _) | (Comparison::YearStart, _) => (Grain::Year, 1),
        (Comparison::PreviousPeriod, Some(g)) => (g, 1),
        // The whole range is one period: a calendar unit steps back by that unit, any other
        // range by its own length in days.
        (Comparison::PreviousPeriod, None) => whole_unit(w.from, w.requested_to, week_start)
            .unwrap_or((
                Grain::Day,
                ((w.requested_to - w.from).num_days() + 1) as i32,
            )),
    };
    let back = |d: NaiveDate| shift(d, step.0, -step.1);
    match w.partial_start {
        None => ComparisonWindow {
            compare,
            from: back(w.from),
            to: back(w.to),
            step,
            partial_days: None,
        },
        Some(p) => {
            // Same number of days from the comparison period's start, never past its end.
            let days = (w.to - p).num_days() + 1;
            let cstart = back(p);
            let cend = match grain {
                Some(g) => period_end(cstart, g, week_start),
                None => back(w.requested_to),
            };
            let cto = add_days(cstart, days - 1).min(cend);
            ComparisonWindow {
                compare,
                from: back(w.from),
                to: cto,
                step,
                partial_days: Some((cto - cstart).num_days() + 1),
            }
        }
    }
}

/// The largest calendar unit `[from, to]` covers exactly, if any (a whole month, quarter, ...).
fn whole_unit(from: NaiveDate, to: NaiveDate, week_start: Weekday) -> Option<(Grain, i32)> {
    [Grain::Year, Grain::Quarter, Grain::Month, Grain::Week]
        .into_iter()
        .find_map(|g| {
            if period_start(from, g, week_start) != from {
                return None;
            }
            let n = periods(from, to, g, week_start).len() as i32;
            (period_end(to, g, week_start) == to).then_some((g, n))
        })
}
