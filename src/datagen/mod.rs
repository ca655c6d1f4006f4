//! The synthetic demo bank: deterministic for a seed, realistic in shape, written
//! as Parquet in bounded memory at any scale.
//!
//! What the data is made to show: skewed branch sizes; seasonal AUM and customer acquisition
//! (the Q1 "开门红" push, year-end bonuses); three branches whose overdue ratios rise month by
//! month; churn that depends on segment (retail leaves most); a credit funnel that leaks most at
//! approval; complaint handling that misses its SLA more often in some branches.

mod org;
mod people;
pub mod rng;
mod simulate;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Field};

use org::Org;
pub use org::RISING_OVERDUE;
use rng::Rng;
use simulate::simulate_customer;
use writer::{MonthPartitionedWriter, TableWriter, V, utc_micros};

/// First and last month of the generated history (24 month ends, 2024-01-31 .. 2025-12-31,
/// including the leap day 2024-02-29).
pub const FIRST_MONTH: (i32, u32) = (2024, 1);
pub const MONTHS: usize = 24;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub out: PathBuf,
    /// 1.0 = 10,000 customers (about 100,000 loan_month rows).
    pub scale: f64,
    pub seed: u64,
    /// Days of daily deposit balances (`deposit_day`) at the end of the history; 0 writes the
    /// table empty (at bench scale a quarter of days would be a billion rows).
    pub daily_days: u32,
}

/// The demo's daily balances: the last quarter of the history (Oct-Dec 2025).
pub const DAILY_DAYS: u32 = 92;

#[derive(Debug)]
pub struct Report {
    pub tables: Vec<(&'static str, u64)>,
    pub seconds: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.tables.iter().map(|(_, n)| n).sum();
        for (t, n) in &self.tables {
            writeln!(f, "{t:<20} {n:>12} rows")?;
        }
        write!(
            f,
            "{total} rows in {:.1} s ({:.0} rows/s)",
            self.seconds,
            total as f64 / self.seconds.max(1e-9)
        )
    }
}

/// Segment of a customer, with everything that depends on it.
#[derive(Clone, Copy, PartialEq)]
enum Segment {
    Retail,
    Sme,
    Corporate,
}

impl Segment {
    fn name(self) -> &'static str {
        match self {
            Segment::Retail => "retail",
            Segment::Sme => "sme",
            Segment::Corporate => "corporate",
        }
    }
    /// Monthly probability that an active customer goes dormant.
    fn dormancy(self) -> f64 {
        match self {
            Segment::Retail => 0.014,
            Segment::Sme => 0.008,
            Segment::Corporate => 0.004,
        }
    }
    fn aum_median(self) -> f64 {
        match self {
            Segment::Retail => 80_000.0,
            Segment::Sme => 900_000.0,
            Segment::Corporate => 9_000_000.0,
        }
    }
}

struct Tables {
    org: TableWriter,
    customers: TableWriter,
    customer_month: MonthPartitionedWriter,
    loans: TableWriter,
    loan_month: MonthPartitionedWriter,
    deposit_day: MonthPartitionedWriter,
    /// How many days `deposit_day` covers, ending with the history.
    daily_days: u32,
    opportunity_events: TableWriter,
    tickets: TableWriter,
    contacts: TableWriter,
    /// Per branch, what its targets are set from.
    actuals: Vec<BranchActuals>,
}

/// A branch's month-end loan balance and loans disbursed, per month of the history.
#[derive(Clone, Default)]
struct BranchActuals {
    loan_balance: [f64; MONTHS],
    disbursed: [f64; MONTHS],
}

/// The branches' monthly targets (`targets`: region, branch, month_end, metric, target), as a
/// head office sets them: the month-end loan balance and the loans disbursed, each the branch's
/// outcome scaled by a factor drawn per branch and year (some branches beat their targets, some
/// miss them), and an overdue-ratio ceiling per branch. Two branches get no disbursement target
/// for 2025 (a target not set shows as none, not as 0).
fn write_targets(
    out: &std::path::Path,
    seed: u64,
    org: &Org,
    cal: &Calendar,
    actuals: &[BranchActuals],
) -> std::io::Result<u64> {
    use DataType::{Date32, Float64, Utf8};
    let f = |name: &str, t: DataType| Field::new(name, t, false);
    let mut w = TableWriter::create(
        out,
        "targets",
        vec![
            f("region", Utf8),
            f("branch", Utf8),
            f("month_end", Date32),
            f("metric", Utf8),
            f("target", Float64),
        ],
    )?;
    for (b, branch) in org.branches.iter().enumerate() {
        let mut rng = Rng::for_entity(seed, 9, b as u64);
        let ceiling = round4(0.02 + 0.03 * rng.f64());
        let years: Vec<(f64, f64)> = (0..MONTHS.div_ceil(12))
            .map(|_| (0.9 + 0.25 * rng.f64(), 0.8 + 0.45 * rng.f64()))
            .collect();
        for (i, me) in cal.month_ends.iter().enumerate() {
            let (balance_factor, disbursed_factor) = years[i / 12];
            let mut row = |metric: &str, value: f64| {
                w.row(&[
                    V::Str(branch.region),
                    V::Str(branch.name),
                    V::Date(days(*me)),
                    V::Str(metric),
                    V::F64(value),
                ])
            };
            let a = &actuals[b];
            row(
                "loan_balance",
                round_to(a.loan_balance[i] / balance_factor, 10_000.0),
            )?;
            if !(i >= 12 && b % 9 == 4) {
                row(
                    "disbursed_amount",
                    round_to(a.disbursed[i] / disbursed_factor, 10_000.0),
                )?;
            }
            row("overdue_ratio", ceiling)?;
        }
    }
    w.finish()
}

/// `x` to the nearest multiple of `unit` (targets are set in round numbers).
fn round_to(x: f64, unit: f64) -> f64 {
    (x / unit).round() * unit
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

pub fn generate(opts: &GenerateOptions) -> std::io::Result<Report> {
    let started = Instant::now();
    let out = &opts.out;
    std::fs::create_dir_all(out)?;
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    use DataType::{Date32, Float64, Int32, Int64, Utf8};
    let mut t = Tables {
        org: TableWriter::create(
            out,
            "org",
            vec![
                f("rm_id", Utf8, false),
                f("rm_name", Utf8, false),
                f("team", Utf8, false),
                f("branch", Utf8, false),
                f("region", Utf8, false),
            ],
        )?,
        customers: TableWriter::create(
            out,
            "customers",
            vec![
                f("customer_id", Int64, false),
                f("name", Utf8, false),
                f("id_number", Utf8, false),
                f("phone", Utf8, false),
                f("segment", Utf8, false),
                f("rm_id", Utf8, false),
                f("opened_on", Date32, false),
                f("closed_on", Date32, true),
            ],
        )?,
        customer_month: MonthPartitionedWriter::create(
            out,
            "customer_month",
            vec![
                f("customer_id", Int64, false),
                f("month_end", Date32, false),
                f("aum", Float64, false),
                f("deposit_balance", Float64, false),
                f("status", Utf8, false),
            ],
            "month_end",
        )?,
        loans: TableWriter::create(
            out,
            "loans",
            vec![
                f("loan_id", Int64, false),
                f("customer_id", Int64, false),
                f("product", Utf8, false),
                f("principal", Float64, false),
                f("disbursed_on", Date32, false),
                f("maturity_on", Date32, false),
            ],
        )?,
        loan_month: MonthPartitionedWriter::create(
            out,
            "loan_month",
            vec![
                f("loan_id", Int64, false),
                f("customer_id", Int64, false),
                f("month_end", Date32, false),
                f("balance", Float64, false),
                f("dpd", Int32, false),
                f("classification", Utf8, false),
            ],
            "month_end",
        )?,
        deposit_day: MonthPartitionedWriter::create(
            out,
            "deposit_day",
            vec![
                f("customer_id", Int64, false),
                f("day", Date32, false),
                f("balance", Float64, false),
            ],
            "day",
        )?,
        daily_days: opts.daily_days,
        opportunity_events: TableWriter::create(
            out,
            "opportunity_events",
            vec![
                f("opportunity_id", Int64, false),
                f("customer_id", Int64, false),
                f("rm_id", Utf8, false),
                f("product", Utf8, false),
                f("stage", Utf8, false),
                f("entered_at", utc_micros(), false),
                f("amount", Float64, false),
            ],
        )?,
        tickets: TableWriter::create(
            out,
            "tickets",
            vec![
                f("ticket_id", Int64, false),
                f("customer_id", Int64, false),
                f("channel", Utf8, false),
                f("category", Utf8, false),
                f("opened_at", utc_micros(), false),
                f("first_response_at", utc_micros(), true),
                f("resolved_at", utc_micros(), true),
                f("sla_hours", Int32, false),
            ],
        )?,
        contacts: TableWriter::create(
            out,
            "contacts",
            vec![
                f("contact_id", Int64, false),
                f("customer_id", Int64, false),
                f("rm_id", Utf8, false),
                f("contacted_at", utc_micros(), false),
                f("channel", Utf8, false),
            ],
        )?,
        actuals: Vec::new(),
    };

    let org = Org::build(opts.seed);
    t.actuals = vec![BranchActuals::default(); org.branches.len()];
    for rm in &org.rms {
        let b = &org.branches[rm.branch_index];
        t.org.row(&[
            V::Str(&rm.id),
            V::Str(&rm.name),
            V::Str(&rm.team),
            V::Str(b.name),
            V::Str(b.region),
        ])?;
    }

    let calendar = Calendar::new();
    let customers = ((10_000.0 * opts.scale).round() as u64).max(1);
    let mut ids = Ids::default();
    let progress = crate::progress::begin("generate", customers, "customers");
    for customer_id in 1..=customers {
        let mut rng = Rng::for_entity(opts.seed, 2, customer_id);
        simulate_customer(
            opts.seed,
            customer_id as i64,
            &org,
            &calendar,
            &mut rng,
            &mut ids,
            &mut t,
        )?;
        progress.advance(1, "");
    }
    progress.finish(&format!("{} loan_month rows", t.loan_month.rows));
    drop(progress);

    let tables = vec![
        ("org", t.org.finish()?),
        ("customers", t.customers.finish()?),
        ("customer_month", t.customer_month.finish()?),
        ("loans", t.loans.finish()?),
        ("loan_month", t.loan_month.finish()?),
        ("deposit_day", t.deposit_day.finish()?),
        ("opportunity_events", t.opportunity_events.finish()?),
        ("tickets", t.tickets.finish()?),
        ("contacts", t.contacts.finish()?),
        (
            "targets",
            write_targets(out, opts.seed, &org, &calendar, &t.actuals)?,
        ),
    ];
    Ok(Report {
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[derive(Default)]
struct Ids {
    loan: i64,
    opportunity: i64,
    ticket: i64,
    contact: i64,
}

/// Month ends of the history, as dates and as days since the epoch.
struct Calendar {
    month_ends: Vec<NaiveDate>,
}

impl Calendar {
    fn new() -> Self {
        let (y, m) = FIRST_MONTH;
        let month_ends = (0..MONTHS as u32)
            .map(|i| {
                let (year, month) = (y + ((m - 1 + i) / 12) as i32, (m - 1 + i) % 12 + 1);
                month_end(year, month)
            })
            .collect();
        Self { month_ends }
    }

    /// Which month of the history `d` falls in.
    fn month_index(&self, d: NaiveDate) -> Option<usize> {
        let first = self.start();
        if d < first || d > self.end() {
            return None;
        }
        Some(((d.year() - first.year()) * 12 + d.month() as i32 - first.month() as i32) as usize)
    }

    fn start(&self) -> NaiveDate {
        self.month_ends[0].with_day(1).expect("day 1")
    }

    fn end(&self) -> NaiveDate {
        *self.month_ends.last().expect("months")
    }

    /// A uniformly random day in month `i`.
    fn day_in(&self, i: usize, rng: &mut Rng) -> NaiveDate {
        let end = self.month_ends[i];
        end.with_day(rng.range(1, end.day() as i64) as u32)
            .expect("valid day")
    }

    /// Index of a month drawn with seasonal weights: Q1 campaigns, a December push.
    fn seasonal_month(&self, rng: &mut Rng) -> usize {
        let weights: Vec<f64> = self
            .month_ends
            .iter()
            .map(|d| season_weight(d.month()))
            .collect();
        rng.weighted(&weights)
    }
}

fn season_weight(month: u32) -> f64 {
    match month {
        1 => 1.9,
        2 => 1.3,
        3 => 1.6,
        12 => 1.3,
        7 | 8 => 0.8,
        _ => 1.0,
    }
}

/// Balances swell at year end (bonuses) and dip after the Spring Festival.
fn aum_season(month: u32) -> f64 {
    match month {
        12 => 1.04,
        1 => 1.06,
        2 => 0.97,
        6 => 1.02,
        _ => 1.0,
    }
}

pub fn month_end(year: i32, month: u32) -> NaiveDate {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .expect("valid date")
        .pred_opt()
        .expect("valid date")
}

fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

fn add_months(d: NaiveDate, months: u32) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(months))
        .unwrap_or(d)
}

/// Local business time (Asia/Shanghai, UTC+8) -> UTC microseconds.
fn local_micros(d: NaiveDate, hour: f64) -> i64 {
    (days(d) as i64 * 86_400 + ((hour - 8.0) * 3600.0) as i64) * 1_000_000
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
