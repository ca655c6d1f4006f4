//! Each entity's life, simulated on its own random stream (so the bank is the same whatever
//! order entities are generated in): a customer's months, their loans, the credit funnel's
//! opportunities, service tickets and the RM's onboarding contacts.

use chrono::{Datelike, NaiveDate};

use super::org::Org;
use super::rng::Rng;
use super::writer::V;
use super::{
    Calendar, Ids, MONTHS, Segment, Tables, add_months, aum_season, days, local_micros, people,
    round2,
};

/// The RM's onboarding contacts with a customer who joins during the history: the first mostly
/// within a day of the account opening, some later, a few never (what the "new customer not
/// contacted within 24 hours" rule finds). Contacts after the data's horizon are not known yet.
/// Its own random stream, so the other tables do not change with it.
pub(super) fn onboarding_contacts(
    seed: u64,
    customer_id: i64,
    rm_id: &str,
    opened_on: NaiveDate,
    cal: &Calendar,
    ids: &mut Ids,
    t: &mut Tables,
) -> std::io::Result<()> {
    let mut rng = Rng::for_entity(seed, 9, customer_id as u64);
    if rng.chance(0.04) {
        return Ok(());
    }
    let horizon = local_micros(cal.end(), 24.0);
    let opened = local_micros(opened_on, 9.0 + 8.0 * rng.f64());
    // Mean 14 hours: about one in five first contacts comes after 24 hours.
    let mut at = opened + (rng.exponential(14.0) * 3.6e9) as i64;
    for _ in 0..1 + rng.range(0, 2) {
        if at > horizon {
            break;
        }
        ids.contact += 1;
        let channel = ["phone", "wechat", "visit"][rng.weighted(&[0.6, 0.3, 0.1])];
        t.contacts.row(&[
            V::I64(ids.contact),
            V::I64(customer_id),
            V::Str(rm_id),
            V::Ts(at),
            V::Str(channel),
        ])?;
        at += (rng.exponential(20.0 * 24.0) * 3.6e9) as i64;
    }
    Ok(())
}

/// The last `t.daily_days` days of the history, one deposit balance a day (what 日均 averages):
/// moving from the month end before to the month's own end, with a little daily noise; none
/// before the customer opened or from the day it closed; and no extract at all on National Day
/// (Oct 1), as a bank's daily files skip holidays. Its own random stream, so the other tables
/// are the same with or without it.
fn daily_deposits(
    seed: u64,
    customer_id: i64,
    months: &[(usize, &'static str, f64)],
    deposit_share: f64,
    (opened_on, closed_on): (NaiveDate, Option<NaiveDate>),
    cal: &Calendar,
    t: &mut Tables,
) -> std::io::Result<()> {
    if t.daily_days == 0 {
        return Ok(());
    }
    let mut rng = Rng::for_entity(seed, 7, customer_id as u64);
    let end = cal.end();
    let deposit_at = |i: usize| {
        months
            .iter()
            .find(|(m, _, _)| *m == i)
            .map(|(_, _, aum)| aum * deposit_share)
    };
    let first = end - chrono::Duration::days(i64::from(t.daily_days) - 1);
    let mut d = first;
    while d <= end {
        let day = d;
        d = d.succ_opt().expect("a day after");
        if (day.month(), day.day()) == (10, 1)
            || day < opened_on
            || closed_on.is_some_and(|c| day >= c)
        {
            continue;
        }
        let Some(i) = cal.month_ends.iter().position(|m| *m >= day) else {
            continue;
        };
        let Some(now) = deposit_at(i) else {
            continue;
        };
        let before = i.checked_sub(1).and_then(deposit_at).unwrap_or(now);
        let progress = f64::from(day.day()) / f64::from(cal.month_ends[i].day());
        let balance = (before + (now - before) * progress) * (1.0 + 0.01 * rng.normal());
        t.deposit_day.row(&[
            V::I64(customer_id),
            V::Date(days(day)),
            V::F64(round2(balance.max(0.0))),
        ])?;
    }
    Ok(())
}

pub(super) fn simulate_customer(
    seed: u64,
    customer_id: i64,
    org: &Org,
    cal: &Calendar,
    rng: &mut Rng,
    ids: &mut Ids,
    t: &mut Tables,
) -> std::io::Result<()> {
    let rm_index = org.assign_rm(rng);
    let rm = &org.rms[rm_index];
    let branch = &org.branches[rm.branch_index];
    let segment = match rng.weighted(&[0.85, 0.12, 0.03]) {
        0 => Segment::Retail,
        1 => Segment::Sme,
        _ => Segment::Corporate,
    };

    // Two thirds are customers from before the history; the rest join during it, seasonally.
    let joined_in: Option<usize> = if rng.chance(0.66) {
        None
    } else {
        Some(cal.seasonal_month(rng))
    };
    let opened_on = match joined_in {
        Some(i) => cal.day_in(i, rng),
        None => cal.start() - chrono::Duration::days(rng.range(30, 12 * 365)),
    };

    // Status through the month ends: active -> dormant -> (back to active | closed).
    let mut status = "active";
    let mut closed_on: Option<NaiveDate> = None;
    let mut level = rng.lognormal(segment.aum_median(), 1.1);
    let deposit_share = match segment {
        Segment::Retail => 0.55 + 0.35 * rng.f64(),
        Segment::Sme => 0.8,
        Segment::Corporate => 0.7,
    };
    let mut months_rows: Vec<(usize, &'static str, f64)> = Vec::new();
    let first = joined_in.unwrap_or(0);
    for i in first..MONTHS {
        let month = cal.month_ends[i].month();
        if i == first && joined_in.is_some() && rng.chance(0.01) {
            status = "closed"; // opened and closed within the same month
        } else if i > first || joined_in.is_none() {
            let spring = if month == 2 { 1.5 } else { 1.0 };
            status = match status {
                "active" if rng.chance(segment.dormancy() * spring) => "dormant",
                "active" if rng.chance(0.002) => "closed",
                "dormant" if rng.chance(0.15) => "active",
                "dormant" if rng.chance(0.08) => "closed",
                s => s,
            };
        }
        level *= (0.004 + 0.035 * rng.normal()).exp();
        if status == "dormant" {
            level *= 0.7;
        }
        let aum = match status {
            "closed" => 0.0,
            _ => round2(level * aum_season(month)),
        };
        months_rows.push((i, status, aum));
        if status == "closed" {
            let d = cal.day_in(i, rng);
            closed_on = Some(if d < opened_on { opened_on } else { d });
            break;
        }
    }

    let name = people::name(rng);
    let id_number = people::id_number(rng);
    let phone = people::phone(rng);
    t.customers.row(&[
        V::I64(customer_id),
        V::Str(&name),
        V::Str(&id_number),
        V::Str(&phone),
        V::Str(segment.name()),
        V::Str(&rm.id),
        V::Date(days(opened_on)),
        closed_on.map_or(V::Null, |d| V::Date(days(d))),
    ])?;
    for (i, status, aum) in &months_rows {
        t.customer_month.row(&[
            V::I64(customer_id),
            V::Date(days(cal.month_ends[*i])),
            V::F64(*aum),
            V::F64(round2(aum * deposit_share)),
            V::Str(status),
        ])?;
    }

    daily_deposits(
        seed,
        customer_id,
        &months_rows,
        deposit_share,
        (opened_on, closed_on),
        cal,
        t,
    )?;
    if joined_in.is_some() {
        onboarding_contacts(seed, customer_id, &rm.id, opened_on, cal, ids, t)?;
    }
    simulate_loans(
        customer_id,
        segment,
        opened_on,
        (rm.branch_index, branch.rising_overdue),
        cal,
        rng,
        ids,
        t,
    )?;
    simulate_opportunities(customer_id, segment, &rm.id, cal, rng, ids, t)?;
    simulate_tickets(
        customer_id,
        segment,
        closed_on,
        rm.branch_index,
        cal,
        rng,
        ids,
        t,
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) fn simulate_loans(
    customer_id: i64,
    segment: Segment,
    opened_on: NaiveDate,
    (branch_index, rising): (usize, bool),
    cal: &Calendar,
    rng: &mut Rng,
    ids: &mut Ids,
    t: &mut Tables,
) -> std::io::Result<()> {
    let count = match segment {
        Segment::Retail => rng.chance(0.5) as u32 + rng.chance(0.15) as u32,
        Segment::Sme => rng.chance(0.75) as u32 + rng.chance(0.35) as u32,
        Segment::Corporate => {
            rng.chance(0.85) as u32 + rng.chance(0.55) as u32 + rng.chance(0.35) as u32
        }
    };
    for _ in 0..count {
        // (product, term in months, median principal, monthly delinquency hazard)
        let (product, term, median, hazard) = match segment {
            Segment::Retail => *rng.pick(&[
                ("mortgage", 240u32, 1_200_000.0, 0.0025),
                ("mortgage", 300, 1_500_000.0, 0.0025),
                ("consumer", 24, 80_000.0, 0.009),
                ("consumer", 36, 120_000.0, 0.009),
                ("card_installment", 12, 20_000.0, 0.014),
            ]),
            Segment::Sme => *rng.pick(&[
                ("sme_business", 24u32, 1_500_000.0, 0.007),
                ("sme_business", 36, 2_000_000.0, 0.007),
            ]),
            Segment::Corporate => *rng.pick(&[
                ("working_capital", 12u32, 5_000_000.0, 0.003),
                ("working_capital", 24, 8_000_000.0, 0.003),
                ("project", 60, 20_000_000.0, 0.002),
            ]),
        };
        // Disbursed early enough to still be running at some month end of the history.
        let earliest = opened_on.max(
            cal.start()
                .checked_sub_months(chrono::Months::new(term))
                .unwrap_or(opened_on),
        );
        let span = (cal.end() - chrono::Duration::days(20) - earliest)
            .num_days()
            .max(1);
        let disbursed_on = earliest + chrono::Duration::days(rng.range(0, span));
        let maturity_on = add_months(disbursed_on, term);
        let principal = round2(rng.lognormal(median, 0.5));
        ids.loan += 1;
        let loan_id = ids.loan;
        if let Some(i) = cal.month_index(disbursed_on) {
            t.actuals[branch_index].disbursed[i] += principal;
        }
        t.loans.row(&[
            V::I64(loan_id),
            V::I64(customer_id),
            V::Str(product),
            V::F64(principal),
            V::Date(days(disbursed_on)),
            V::Date(days(maturity_on)),
        ])?;

        let mut dpd: i32 = if !rising && rng.chance(0.01) {
            rng.range(1, 120) as i32
        } else {
            0
        };
        let total_days = (maturity_on - disbursed_on).num_days().max(1) as f64;
        let mut balance = principal;
        for (i, me) in cal.month_ends.iter().enumerate() {
            if *me < disbursed_on || *me >= maturity_on {
                continue;
            }
            // Rising branches start below the bank's hazard and end at about four times it.
            let climb = if rising { 0.5 + 0.15 * i as f64 } else { 1.0 };
            if dpd == 0 {
                if rng.chance(hazard * climb) {
                    dpd = rng.range(1, 29) as i32;
                }
            } else if rng.chance(0.22 / climb.sqrt()) {
                dpd = 0; // cured
            } else if rng.chance(0.7) {
                dpd = (dpd + 30).min(720);
            }
            if dpd == 0 {
                // Straight-line amortisation while performing; arrears freeze the balance.
                let elapsed = (*me - disbursed_on).num_days() as f64;
                balance = round2(principal * (1.0 - elapsed / total_days)).max(0.0);
            }
            let classification = match dpd {
                0 if rng.chance(0.005) => "special_mention",
                0 => "normal",
                1..=90 => "special_mention",
                91..=180 => "substandard",
                181..=360 => "doubtful",
                _ => "loss",
            };
            t.actuals[branch_index].loan_balance[i] += balance;
            t.loan_month.row(&[
                V::I64(loan_id),
                V::I64(customer_id),
                V::Date(days(*me)),
                V::F64(balance),
                V::I32(dpd),
                V::Str(classification),
            ])?;
        }
    }
    Ok(())
}

/// The credit pipeline. Conversion per step is where the funnel leaks: approval most of all.
const STAGES: &[(&str, f64, f64)] = &[
    // (stage, probability of reaching it from the previous one, mean days after the previous)
    ("lead", 1.0, 0.0),
    ("due_diligence", 0.78, 6.0),
    ("application", 0.72, 12.0),
    ("approval", 0.46, 16.0),
    ("contract", 0.86, 8.0),
    ("disbursement", 0.93, 5.0),
];

pub(super) fn simulate_opportunities(
    customer_id: i64,
    segment: Segment,
    rm_id: &str,
    cal: &Calendar,
    rng: &mut Rng,
    ids: &mut Ids,
    t: &mut Tables,
) -> std::io::Result<()> {
    let rate = match segment {
        Segment::Retail => 0.06,
        Segment::Sme => 0.6,
        Segment::Corporate => 0.9,
    };
    let count = rng.chance(rate) as u32 + rng.chance(rate * 0.4) as u32;
    let horizon = local_micros(cal.end(), 24.0);
    for _ in 0..count {
        ids.opportunity += 1;
        let (product, median) = match segment {
            Segment::Retail => *rng.pick(&[("mortgage", 1_200_000.0), ("consumer", 100_000.0)]),
            Segment::Sme => ("sme_business", 1_500_000.0),
            Segment::Corporate => *rng.pick(&[
                ("working_capital", 12_000_000.0),
                ("project", 50_000_000.0),
                ("trade_finance", 5_000_000.0),
            ]),
        };
        let amount = round2(rng.lognormal(median, 0.6));
        let lead_day = cal.day_in(cal.seasonal_month(rng), rng);
        let mut at = local_micros(lead_day, 9.0 + 9.0 * rng.f64());
        for (k, (stage, p, mean_days)) in STAGES.iter().enumerate() {
            if k > 0 {
                if !rng.chance(*p) {
                    break;
                }
                at += (rng.exponential(*mean_days) * 86_400e6) as i64 + 3_600_000_000;
            }
            if at > horizon {
                break;
            }
            t.opportunity_events.row(&[
                V::I64(ids.opportunity),
                V::I64(customer_id),
                V::Str(rm_id),
                V::Str(product),
                V::Str(stage),
                V::Ts(at),
                V::F64(amount),
            ])?;
            // Now and then a stage is entered twice (re-submitted paperwork).
            if k == 2 && rng.chance(0.04) && at + 86_400_000_000 * 3 < horizon {
                t.opportunity_events.row(&[
                    V::I64(ids.opportunity),
                    V::I64(customer_id),
                    V::Str(rm_id),
                    V::Str(product),
                    V::Str(stage),
                    V::Ts(at + 86_400_000_000 * 3),
                    V::F64(amount),
                ])?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn simulate_tickets(
    customer_id: i64,
    segment: Segment,
    closed_on: Option<NaiveDate>,
    branch_index: usize,
    cal: &Calendar,
    rng: &mut Rng,
    ids: &mut Ids,
    t: &mut Tables,
) -> std::io::Result<()> {
    let rate = if segment == Segment::Retail {
        0.35
    } else {
        0.5
    };
    let count =
        rng.chance(rate) as u32 + rng.chance(rate * 0.5) as u32 + rng.chance(rate * 0.2) as u32;
    // Some branches answer slowly: SLA breaches cluster there.
    let slow = 1.0 + (branch_index % 7 == 3) as u32 as f64 * 1.5;
    let horizon = local_micros(cal.end(), 24.0);
    for _ in 0..count {
        let day = cal.day_in(rng.range(0, MONTHS as i64 - 1) as usize, rng);
        if closed_on.is_some_and(|c| day > c) {
            continue;
        }
        ids.ticket += 1;
        let channel = ["phone", "app", "branch", "wechat"][rng.weighted(&[0.4, 0.3, 0.2, 0.1])];
        let (category, sla) = *rng.pick(&[
            ("card", 24),
            ("fees", 24),
            ("loan", 72),
            ("deposit", 48),
            ("service", 48),
        ]);
        let opened = local_micros(day, 8.0 + 12.0 * rng.f64());
        let first = opened + (rng.exponential(2.5 * slow) * 3.6e9) as i64;
        let resolved = first + (rng.exponential(sla as f64 * 0.45 * slow) * 3.6e9) as i64;
        let opt = |ts: i64| if ts <= horizon { V::Ts(ts) } else { V::Null };
        t.tickets.row(&[
            V::I64(ids.ticket),
            V::I64(customer_id),
            V::Str(channel),
            V::Str(category),
            V::Ts(opened),
            opt(first),
            if rng.chance(0.02) {
                V::Null
            } else {
                opt(resolved)
            },
            V::I32(sla),
        ])?;
    }
    Ok(())
}
