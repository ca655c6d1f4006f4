//! Time series after the engine: gap filling and the final order. Works on the JSON rows so the
//! same rules apply to every metric kind, the comparison runs and drill parents alike.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::Value;

use super::calendar::periods;
use super::planner::ColumnRole;
use super::result::QueryResult;
use super::validate::{PERIOD, ValidatedQuery};
use crate::catalog::Catalog;
use crate::spec::{EmptyPeriod, Grain};

/// What composing one answer may still hold, in cells (one value of one row): the engine's rows,
/// the rows gap filling adds and the columns comparisons add, across the main query, the drill
/// parent and every comparison. Each cell taken is also taken from the engine's memory pool
/// (`grant`, in bytes, about [`CELL_BYTES`] a cell), so composing counts against the same bound
/// as the plans.
pub struct CellBudget<'a> {
    left: usize,
    grant: &'a mut dyn FnMut(usize) -> bool,
}

/// What one JSON cell costs, about: the value, a short string's allocation, the row's share.
pub const CELL_BYTES: usize = 64;

impl<'a> CellBudget<'a> {
    pub fn new(cells: usize, grant: &'a mut dyn FnMut(usize) -> bool) -> Self {
        Self { left: cells, grant }
    }

    /// Takes `cells` if both the budget and the pool allow.
    pub fn take(&mut self, cells: usize) -> bool {
        if cells > self.left || !(self.grant)(cells.saturating_mul(CELL_BYTES)) {
            return false;
        }
        self.left -= cells;
        true
    }

    pub fn left(&self) -> usize {
        self.left
    }
}

/// The rows as answered, gaps filled where asked ([`fill_gaps`]; whether it filled), and each
/// `time_progress` metric set from its row's period: computed here, once, for rows the plan
/// returned and rows the filling added alike.
pub fn complete(
    result: &mut QueryResult,
    q: &ValidatedQuery,
    catalog: &Catalog,
    members: &[Value],
    budget: &mut CellBudget,
) -> bool {
    let filled = fill_gaps(result, q, catalog, members, budget);
    pace(result, q, catalog);
    filled
}

/// Sets every `time_progress` cell: the share of its row's period gone by the query's end (`to`,
/// clipped to the as-of date), 0 before the period, 1 after it; null without a grain.
fn pace(result: &mut QueryResult, q: &ValidatedQuery, catalog: &Catalog) {
    use crate::catalog::MetricDefinition;
    let (Some(grain), Some(period_ix)) = (q.grain, result.column(PERIOD)) else {
        return;
    };
    let paced = result.columns_where(|_, f| {
        f.role == ColumnRole::Metric
            && catalog
                .metrics
                .get(&f.name)
                .is_some_and(|m| matches!(m.definition, MetricDefinition::TimeProgress(_)))
    });
    if paced.is_empty() {
        return;
    }
    let through = q.to.unwrap_or(q.as_of).min(q.as_of);
    for row in &mut result.rows {
        let start = row[period_ix]
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
        let share = start.map(|start| {
            let days = (super::calendar::next_period(start, grain) - start).num_days();
            let gone = (through - start).num_days() + 1;
            gone.clamp(0, days) as f64 / days as f64
        });
        for i in &paced {
            row[*i] = share.map_or(Value::Null, Value::from);
        }
    }
}

/// Adds the missing (period x member combination) rows of a time series. The periods run over
/// the query's range (or, without one, from the first to the last period returned); the member
/// combinations are those the result holds. Each metric fills as it declares: zero, null, or the
/// last earlier value of the same series. `members` adds the members of a drilled level that
/// have no rows at all (used when the level is the only dimension). Returns false when it could
/// not fill (no grain, a funnel/cohort shape, a truncated result, whose missing rows might lie
/// past the limit, or more rows than the budget holds).
fn fill_gaps(
    result: &mut QueryResult,
    q: &ValidatedQuery,
    catalog: &Catalog,
    members: &[Value],
    budget: &mut CellBudget,
) -> bool {
    let Some(grain) = q.grain else {
        return false;
    };
    if result.truncated || !q.fill_gaps {
        return false;
    }
    let Some(period_ix) = result.column(PERIOD) else {
        return false;
    };
    if result.schema.iter().any(|f| {
        f.role == ColumnRole::Key
            || (f.role == ColumnRole::Metric && !catalog.metrics.contains_key(&f.name))
    }) {
        return false;
    }
    let dim_ix = result.columns_where(|_, f| f.role == ColumnRole::Dimension);
    let metric_ix: Vec<(usize, EmptyPeriod)> = result
        .columns_where(|_, f| f.role == ColumnRole::Metric)
        .into_iter()
        .map(|i| (i, catalog.metrics[&result.schema[i].name].empty))
        .collect();

    let date = |v: &Value| {
        v.as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
    };
    let present: Vec<NaiveDate> = result
        .rows
        .iter()
        .filter_map(|r| date(&r[period_ix]))
        .collect();
    let (Some(first), Some(last)) = (
        q.from.or_else(|| present.iter().min().copied()),
        q.to.or_else(|| present.iter().max().copied()),
    ) else {
        return true; // nothing to fill: no range and no rows
    };
    let width = result.schema.len().max(1);
    // Counted before listing: a day grain over centuries is refused without building it.
    if first
        .max(last)
        .signed_duration_since(first.min(last))
        .num_days()
        / min_period_days(grain)
        > (budget.left() / width) as i64
    {
        return false;
    }
    let all_periods = periods(first, last, grain, q.calendar.week_start);

    // Member combinations in order of first appearance; without dimensions, the one empty one.
    let mut combos: Vec<Vec<Value>> = Vec::new();
    let mut seen: HashSet<Vec<Value>> = HashSet::new();
    let mut by_key: HashMap<(NaiveDate, Vec<Value>), Vec<Value>> = HashMap::new();
    for row in result.rows.drain(..) {
        let combo: Vec<Value> = dim_ix.iter().map(|i| row[*i].clone()).collect();
        if seen.insert(combo.clone()) {
            combos.push(combo.clone());
        }
        if let Some(p) = date(&row[period_ix]) {
            by_key.insert((p, combo), row);
        }
    }
    if dim_ix.len() == 1 {
        for m in members {
            if seen.insert(vec![m.clone()]) {
                combos.push(vec![m.clone()]);
            }
        }
    }
    if combos.is_empty() && dim_ix.is_empty() {
        combos.push(Vec::new());
    }
    // A range of many periods over many members would fill more rows than the answer may hold:
    // leave the gaps (the meta says so) rather than build it. The rows held are counted already.
    let filled = all_periods.len().saturating_mul(combos.len().max(1));
    if !budget.take(filled.saturating_sub(by_key.len()).saturating_mul(width)) {
        result.rows.extend(by_key.into_values());
        return false;
    }
    for combo in &combos {
        let mut last_seen: BTreeMap<usize, Value> = BTreeMap::new();
        for p in &all_periods {
            let row = match by_key.remove(&(*p, combo.clone())) {
                Some(row) => row,
                None => {
                    let mut row = vec![Value::Null; width];
                    row[period_ix] = Value::String(p.format("%Y-%m-%d").to_string());
                    for (i, v) in dim_ix.iter().zip(combo) {
                        row[*i] = v.clone();
                    }
                    for (i, empty) in &metric_ix {
                        row[*i] = match empty {
                            EmptyPeriod::Zero => Value::from(0),
                            EmptyPeriod::Null => Value::Null,
                            EmptyPeriod::Carry => last_seen.get(i).cloned().unwrap_or(Value::Null),
                        };
                    }
                    row
                }
            };
            for (i, _) in &metric_ix {
                if !row[*i].is_null() {
                    last_seen.insert(*i, row[*i].clone());
                }
            }
            result.rows.push(row);
        }
    }
    // Rows outside the range (none in practice) are kept rather than lost.
    result.rows.extend(by_key.into_values());
    true
}

fn min_period_days(grain: Grain) -> i64 {
    match grain {
        Grain::Day => 1,
        Grain::Week => 7,
        Grain::Month => 28,
        Grain::Quarter => 90,
        Grain::Year => 365,
    }
}

/// Sorts rows as the engine did: the requested order, else the keys ascending; nulls last.
pub fn sort_rows(result: &mut QueryResult, q: &ValidatedQuery) {
    let order: Vec<(usize, bool)> = if q.order.is_empty() {
        result
            .columns_where(|_, f| matches!(f.role, ColumnRole::Time | ColumnRole::Dimension))
            .into_iter()
            .map(|i| (i, false))
            .collect()
    } else {
        q.order
            .iter()
            .filter_map(|o| result.column(&o.by).map(|i| (i, o.desc)))
            .collect()
    };
    result.rows.sort_by(|a, b| {
        order
            .iter()
            .map(|(i, desc)| compare_values(&a[*i], &b[*i], *desc))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    });
}

/// Orders JSON cells like SQL with NULLS LAST: numbers numerically, strings by bytes (dates are
/// ISO strings, so chronologically).
pub fn compare_values(a: &Value, b: &Value, desc: bool) -> Ordering {
    let directed = |o: Ordering| if desc { o.reverse() } else { o };
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Number(x), Value::Number(y)) => directed(
            x.as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
        ),
        (Value::String(x), Value::String(y)) => directed(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => directed(x.cmp(y)),
        _ => Ordering::Equal,
    }
}
