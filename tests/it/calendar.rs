//! Property tests on the calendar code: thousands of seeded random dates (1900-2199) per property,
//! plus the named edge cases. A tiny SplitMix64 stands in for a property-testing crate, which
//! would change the features of crates DataFusion shares and force a second DataFusion build.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use kpilens::semantic::Grain;
use kpilens::semantic::calendar::{
    Comparison, add_months, comparison_window, is_month_end, month_end, period_end, period_start,
    periods, query_window, shift,
};

const CASES: usize = 5_000;
const GRAINS: [Grain; 5] = [
    Grain::Day,
    Grain::Week,
    Grain::Month,
    Grain::Quarter,
    Grain::Year,
];
const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// Random cases from the generator's own PRNG (deterministic per seed).
struct Gen(kpilens::datagen::rng::Rng);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(kpilens::datagen::rng::Rng::for_entity(seed, 0, 0))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Dates biased towards the awkward ones: a third are month ends, some Feb 28/29.
    fn date(&mut self) -> NaiveDate {
        let d = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + Days::new(self.below(109_572));
        match self.below(6) {
            0 | 1 => month_end(d),
            2 => NaiveDate::from_ymd_opt(d.year(), 2, 28).unwrap(),
            _ => d,
        }
    }
    fn grain(&mut self) -> Grain {
        GRAINS[self.below(5) as usize]
    }
    fn weekday(&mut self) -> Weekday {
        WEEKDAYS[self.below(7) as usize]
    }
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

#[test]
fn a_date_lies_in_its_period_and_periods_tile_the_timeline() {
    let mut g = Gen::new(1);
    for _ in 0..CASES {
        let (x, grain, ws) = (g.date(), g.grain(), g.weekday());
        let start = period_start(x, grain, ws);
        let end = period_end(x, grain, ws);
        assert!(
            start <= x && x <= end,
            "{x} not in [{start}, {end}] ({grain:?})"
        );
        assert_eq!(period_start(start, grain, ws), start, "idempotent");
        assert_eq!(period_start(end, grain, ws), start);
        // The next period starts the day after this one ends.
        assert_eq!(
            period_start(end + Days::new(1), grain, ws),
            end + Days::new(1)
        );
        if grain == Grain::Week {
            assert_eq!(start.weekday(), ws);
            assert_eq!((end - start).num_days(), 6);
        }
    }
}

#[test]
fn enumerated_periods_are_contiguous_and_cover_the_range() {
    let mut g = Gen::new(2);
    for _ in 0..CASES / 5 {
        let (a, grain, ws) = (g.date(), g.grain(), g.weekday());
        let b = a + Days::new(g.below(if grain == Grain::Day { 60 } else { 900 }));
        let ps = periods(a, b, grain, ws);
        assert_eq!(ps[0], period_start(a, grain, ws));
        assert_eq!(*ps.last().unwrap(), period_start(b, grain, ws));
        for w in ps.windows(2) {
            assert_eq!(period_end(w[0], grain, ws) + Days::new(1), w[1]);
        }
    }
}

#[test]
fn month_shifts_keep_month_ends_and_clamp_other_days() {
    let mut g = Gen::new(3);
    for _ in 0..CASES {
        let x = g.date();
        let n = g.below(49) as i32 - 24;
        let y = add_months(x, n);
        let months = (y.year() - x.year()) * 12 + y.month() as i32 - x.month() as i32;
        assert_eq!(months, n, "{x} + {n} months = {y}");
        if is_month_end(x) {
            assert!(is_month_end(y), "{x} is a month end, {y} is not");
        } else {
            assert_eq!(y.day(), x.day().min(month_end(y).day()), "{x} + {n} = {y}");
        }
        // Moving back from a month end returns to the month end.
        if is_month_end(x) {
            assert_eq!(add_months(y, -n), x);
        }
    }
}

#[test]
fn period_shifts_move_period_starts_to_period_starts() {
    let mut g = Gen::new(4);
    for _ in 0..CASES {
        let (x, grain, ws) = (g.date(), g.grain(), g.weekday());
        let start = period_start(x, grain, ws);
        let back = shift(start, grain, -1);
        assert_eq!(period_start(back, grain, ws), back);
        assert_eq!(period_end(back, grain, ws) + Days::new(1), start);
    }
}

#[test]
fn named_edge_cases() {
    // Month ends and leap days.
    assert_eq!(add_months(d("2024-03-31"), -1), d("2024-02-29"));
    assert_eq!(add_months(d("2024-02-29"), -1), d("2024-01-31"));
    assert_eq!(add_months(d("2025-02-28"), -1), d("2025-01-31"));
    assert_eq!(add_months(d("2024-02-29"), -12), d("2023-02-28"));
    assert_eq!(add_months(d("2023-02-28"), 12), d("2024-02-29"));
    assert_eq!(add_months(d("2024-01-30"), 1), d("2024-02-29"));
    assert_eq!(add_months(d("2024-02-28"), 12), d("2025-02-28")); // not a month end in 2024
    // Quarter and year boundaries.
    assert_eq!(
        period_start(d("2024-12-31"), Grain::Quarter, Weekday::Mon),
        d("2024-10-01")
    );
    assert_eq!(shift(d("2025-01-01"), Grain::Quarter, -1), d("2024-10-01"));
    assert_eq!(
        period_end(d("2024-02-10"), Grain::Month, Weekday::Mon),
        d("2024-02-29")
    );
    // Weeks: 2024-02-29 is a Thursday.
    assert_eq!(
        period_start(d("2024-02-29"), Grain::Week, Weekday::Mon),
        d("2024-02-26")
    );
    assert_eq!(
        period_start(d("2024-02-29"), Grain::Week, Weekday::Sun),
        d("2024-02-25")
    );
}

#[test]
fn comparison_windows() {
    let ws = Weekday::Mon;
    let full = |from, to| query_window(d(from), d(to), Some(Grain::Month), d("2030-01-01"), ws);
    // A whole month compares with the whole previous month, month end to month end.
    let w = comparison_window(
        Comparison::PreviousPeriod,
        Some(Grain::Month),
        &full("2024-03-01", "2024-03-31"),
        ws,
    );
    assert_eq!((w.from, w.to), (d("2024-02-01"), d("2024-02-29")));
    // Same period last year from a leap day.
    let w = comparison_window(
        Comparison::SamePeriodLastYear,
        Some(Grain::Day),
        &full("2024-02-29", "2024-02-29"),
        ws,
    );
    assert_eq!((w.from, w.to), (d("2023-02-28"), d("2023-02-28")));
    // Without a grain a whole quarter steps back a quarter; an arbitrary range by its length.
    let q = query_window(d("2024-04-01"), d("2024-06-30"), None, d("2030-01-01"), ws);
    let w = comparison_window(Comparison::PreviousPeriod, None, &q, ws);
    assert_eq!((w.from, w.to), (d("2024-01-01"), d("2024-03-31")));
    let r = query_window(d("2024-03-10"), d("2024-03-19"), None, d("2030-01-01"), ws);
    let w = comparison_window(Comparison::PreviousPeriod, None, &r, ws);
    assert_eq!((w.from, w.to), (d("2024-02-29"), d("2024-03-09")));

    // A partial current month: March 1-30 as of the 30th against February 1-29 (all of it,
    // never spilling into March), and as of the 6th against February 1-6.
    let p = query_window(
        d("2024-03-01"),
        d("2024-03-31"),
        Some(Grain::Month),
        d("2024-03-30"),
        ws,
    );
    assert_eq!(p.partial_start, Some(d("2024-03-01")));
    let w = comparison_window(Comparison::PreviousPeriod, Some(Grain::Month), &p, ws);
    assert_eq!(
        (w.from, w.to, w.partial_days),
        (d("2024-02-01"), d("2024-02-29"), Some(29))
    );
    let p = query_window(
        d("2024-03-01"),
        d("2024-03-31"),
        Some(Grain::Month),
        d("2024-03-06"),
        ws,
    );
    let w = comparison_window(Comparison::PreviousPeriod, Some(Grain::Month), &p, ws);
    assert_eq!((w.to, w.partial_days), (d("2024-02-06"), Some(6)));
    // As of a month's last day the month is complete.
    let p = query_window(
        d("2024-01-01"),
        d("2024-06-30"),
        Some(Grain::Month),
        d("2024-03-31"),
        ws,
    );
    assert_eq!((p.to, p.partial_start), (d("2024-03-31"), None));
}

#[test]
fn partial_comparisons_never_exceed_the_comparison_period() {
    let mut g = Gen::new(5);
    let ws = Weekday::Mon;
    for _ in 0..CASES {
        let grain = g.grain();
        let as_of = g.date();
        let from = shift(period_start(as_of, grain, ws), grain, -(g.below(4) as i32));
        let to = period_end(as_of, grain, ws);
        let w = query_window(from, to, Some(grain), as_of, ws);
        for compare in [Comparison::PreviousPeriod, Comparison::SamePeriodLastYear] {
            let c = comparison_window(compare, Some(grain), &w, ws);
            assert!(c.from <= c.to, "{c:?}");
            if let (Some(p), Some(days)) = (w.partial_start, c.partial_days) {
                let current = (w.to - p).num_days() + 1;
                assert!(days <= current && days >= 1, "{c:?} vs {current} days");
                let cstart = c.back(p);
                assert!(c.to <= period_end(cstart, grain, ws), "{c:?}");
            }
        }
    }
}

#[test]
fn a_day_starts_at_its_first_local_instant() {
    use chrono::TimeZone;
    let at = |tz: chrono_tz::Tz, d: &str| {
        let calendar = kpilens::semantic::calendar::CalendarConfig {
            time_zone: tz,
            ..Default::default()
        };
        let instant = calendar.first_instant(d.parse().unwrap());
        chrono::Utc
            .timestamp_micros(instant)
            .unwrap()
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    assert_eq!(
        at(chrono_tz::Asia::Shanghai, "2024-03-10"),
        "2024-03-09T16:00"
    );
    assert_eq!(at(chrono_tz::UTC, "2024-02-29"), "2024-02-29T00:00");
    // Havana springs from 00:00 to 01:00 (UTC-5 to UTC-4): the day begins at 01:00 local.
    assert_eq!(
        at(chrono_tz::America::Havana, "2024-03-10"),
        "2024-03-10T05:00"
    );
    // Santiago too (UTC-4 to UTC-3), on the first Sunday of September.
    assert_eq!(
        at(chrono_tz::America::Santiago, "2024-09-08"),
        "2024-09-08T04:00"
    );
    // Havana falls back from 01:00 to 00:00 on 2024-11-03: midnight happens twice (UTC-4, then
    // UTC-5); the day starts at the first.
    assert_eq!(
        at(chrono_tz::America::Havana, "2024-11-03"),
        "2024-11-03T04:00"
    );
    // Santiago falls back from 00:00 to 23:00 the day before on 2024-04-07: its midnight happens
    // once, after the repeated hour, at UTC-4.
    assert_eq!(
        at(chrono_tz::America::Santiago, "2024-04-07"),
        "2024-04-07T04:00"
    );
}
