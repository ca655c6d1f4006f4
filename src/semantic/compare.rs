//! Comparisons (previous period, same period last year, year start). Each comparison is the same
//! query over the comparison range, computed like any query (so a ratio compares as a ratio of
//! sums and a balance as the snapshot at the comparison period's end); its rows are matched to
//! the query's by (the matching period, dimensions). Year start (较年初) runs by year over the
//! years before the range's, so each period meets the previous year-end's balance.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde_json::Value;

use super::calendar::{Comparison, ComparisonWindow, comparison_window, query_window};
use super::planner::ColumnRole;
use super::result::{QueryResult, SchemaField};
use super::validate::{PERIOD, ValidatedQuery};
use crate::spec::Grain;
use crate::spec::{FormatSpec, FormatStyle, Label};

/// The comparison windows of a query and the query each one runs.
pub fn comparison_queries(q: &ValidatedQuery) -> Vec<(ComparisonWindow, ValidatedQuery)> {
    let (Some(from), Some(to)) = (q.from, q.to) else {
        return Vec::new(); // validation requires both for `compare`
    };
    let window = query_window(
        from,
        q.requested_to.unwrap_or(to),
        q.grain,
        q.as_of,
        q.calendar.week_start,
    );
    q.compare
        .iter()
        .map(|c| {
            let w = comparison_window(*c, q.grain, &window, q.calendar.week_start);
            let mut cq = q.clone();
            cq.from = Some(w.from);
            cq.to = Some(w.to);
            cq.requested_to = Some(w.to);
            cq.partial_start = None;
            if *c == Comparison::YearStart {
                cq.grain = q.grain.map(|_| Grain::Year);
            }
            cq.compare = Vec::new();
            cq.order = Vec::new();
            // The rows a ranked, limited answer shows are ranked on this period's values: the
            // comparison must hold every row, not the first few in key order.
            cq.limit = q.max_rows;
            (w, cq)
        })
        .collect()
}

/// Appends, for every metric, `<metric>.<comparison>`, `.delta` and `.delta_pct` columns.
pub fn merge(
    main: &mut QueryResult,
    q: &ValidatedQuery,
    window: &ComparisonWindow,
    other: &QueryResult,
) {
    let name = window.compare.as_str();
    let period_ix = main.column(PERIOD);
    let key_ix = main.columns_where(|_, f| f.role == ColumnRole::Dimension);
    let metric_ix = main.columns_where(|_, f| f.role == ColumnRole::Metric);
    let other_ix = |n: &str| other.column(n);

    // The comparison's rows by (period, dimensions).
    let mut lookup: HashMap<(Option<String>, Vec<Value>), &Vec<Value>> = HashMap::new();
    let other_period = other_ix(PERIOD);
    let other_keys: Vec<Option<usize>> = key_ix
        .iter()
        .map(|i| other_ix(&main.schema[*i].name))
        .collect();
    for row in &other.rows {
        let p = other_period.and_then(|i| row[i].as_str().map(str::to_string));
        let k = other_keys
            .iter()
            .map(|i| i.map_or(Value::Null, |i| row[i].clone()))
            .collect();
        lookup.insert((p, k), row);
    }
    let to = q.to.unwrap_or(q.as_of);
    let back = |p: &str| -> Option<String> {
        let d = NaiveDate::parse_from_str(p, "%Y-%m-%d").ok()?;
        window
            .matching_period(d, q.grain, to, q.calendar.week_start)
            .map(|m| m.format("%Y-%m-%d").to_string())
    };

    let values = |mine: &[Value], theirs: Option<&Vec<Value>>| -> Vec<Value> {
        let mut out = Vec::new();
        for i in &metric_ix {
            let cur = &mine[*i];
            let prev = theirs
                .and_then(|r| other_ix(&main.schema[*i].name).map(|j| r[j].clone()))
                .unwrap_or(Value::Null);
            let (delta, pct) = deltas(cur, &prev);
            out.extend([prev, delta, pct]);
        }
        out
    };
    for row in &mut main.rows {
        let p = period_ix.and_then(|i| row[i].as_str().and_then(back));
        let k: Vec<Value> = key_ix.iter().map(|i| row[*i].clone()).collect();
        let extra = values(row, lookup.get(&(p, k)).copied());
        row.extend(extra);
    }
    if let Some(totals) = &mut main.totals {
        let extra = values(totals, other.totals.as_ref());
        totals.extend(extra);
    }

    let (zh, en) = match window.compare {
        super::calendar::Comparison::PreviousPeriod => ("上期", "previous period"),
        super::calendar::Comparison::SamePeriodLastYear => ("去年同期", "same period last year"),
        super::calendar::Comparison::YearStart => ("年初", "at the end of last year"),
    };
    let mut fields = Vec::new();
    for i in &metric_ix {
        let f = &main.schema[*i];
        let label = |suffix_zh: &str, suffix_en: &str| Label {
            zh: Some(format!(
                "{}{zh}{suffix_zh}",
                f.label.zh.clone().unwrap_or_default()
            )),
            en: Some(format!(
                "{} ({en}{suffix_en})",
                f.label.en.clone().unwrap_or_else(|| f.name.clone())
            )),
        };
        let derived = |suffix: &str, label: Label, format: Option<FormatSpec>| SchemaField {
            name: format!("{}.{name}{suffix}", f.name),
            role: ColumnRole::Derived,
            data_type: "number",
            label,
            format,
            direction: f.direction,
            thresholds: None,
            value_labels: Default::default(),
        };
        fields.push(derived("", label("", ""), f.format.clone()));
        fields.push(derived(
            ".delta",
            label("变动", ", change"),
            f.format.clone(),
        ));
        fields.push(derived(
            ".delta_pct",
            label("变动率", ", % change"),
            Some(FormatSpec {
                style: FormatStyle::Percent,
                decimals: Some(1),
                currency: None,
            }),
        ));
    }
    main.schema.extend(fields);
}

/// (current - comparison, that over |comparison|); null where either side is null, and the
/// percentage also where the comparison is zero.
pub fn deltas(cur: &Value, prev: &Value) -> (Value, Value) {
    match (cur.as_f64(), prev.as_f64()) {
        (Some(c), Some(p)) => {
            let delta = number(c - p);
            let pct = if p == 0.0 {
                Value::Null
            } else {
                number((c - p) / p.abs())
            };
            (delta, pct)
        }
        _ => (Value::Null, Value::Null),
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
