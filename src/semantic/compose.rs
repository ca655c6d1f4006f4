//! A query is composed of sub-queries: the query itself, its drill parent, one per comparison,
//! and the drilled level's members (so children without data still get rows). This module says
//! which sub-queries a query needs and puts their answers together (gap filling, drill shares and
//! ranks, comparison columns, ordering, the partial period). Running them is the service's job;
//! composing them is protocol logic and lives here, with the rest of the protocol.

use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::calendar::ComparisonWindow;
use super::planner::{ColumnRole, OutputColumn, PlannedQuery};
use super::result::{PartialPeriod, QueryResult, ResultNotes, json_value, rows_of, schema_fields};
use super::series::CellBudget;
use super::validate::{Drill, ValidatedQuery};
use super::{ErrorKind, QueryError, compare, drill, series};
use crate::catalog::Catalog;

/// The sub-queries a validated query needs besides itself.
pub struct SubQueries {
    /// The drill parent's subtotals: the same query without the drilled level.
    pub parent: Option<ValidatedQuery>,
    /// Each comparison's query over its own range.
    pub comparisons: Vec<(ComparisonWindow, ValidatedQuery)>,
    /// The drilled level's members are listed (a drill by period fills every member).
    pub drilled_members: Option<Drill>,
}

pub fn sub_queries(q: &ValidatedQuery) -> SubQueries {
    SubQueries {
        parent: q.drill.as_ref().map(|_| drill::parent_query(q)),
        comparisons: compare::comparison_queries(q),
        drilled_members: match &q.drill {
            Some(d) if q.grain.is_some() && q.fill_gaps && q.dimensions.len() == 1 => {
                Some(d.clone())
            }
            _ => None,
        },
    }
}

/// One sub-query's answer from its plan's batches: rows (at most `limit`) and totals.
pub fn answer(
    catalog: &Catalog,
    q: &ValidatedQuery,
    planned: &PlannedQuery,
    rows_schema: &datafusion::arrow::datatypes::Schema,
    batches: &[RecordBatch],
    totals: Option<&[RecordBatch]>,
) -> QueryResult {
    let mut rows = rows_of(batches, &planned.columns);
    let truncated = rows.len() > q.limit;
    rows.truncate(q.limit);
    QueryResult {
        schema: schema_fields(catalog, &planned.columns, rows_schema),
        rows,
        totals: totals.map(|t| totals_row(t, &planned.columns)),
        truncated,
        drill: None,
        notes: ResultNotes {
            rollups: planned.rollups.clone(),
            averages: averages(catalog, q),
            ..Default::default()
        },
    }
}

/// The query's average-balance metrics, if any.
fn averages(catalog: &Catalog, q: &ValidatedQuery) -> Option<super::result::Averages> {
    let metrics: Vec<String> =
        q.metrics
            .iter()
            .filter(|m| {
                catalog.measures_of(m).iter().any(|x| {
                    catalog.measures[x].snapshot == Some(crate::spec::SnapshotPick::Average)
                })
            })
            .cloned()
            .collect();
    (!metrics.is_empty()).then_some(super::result::Averages {
        metrics,
        over: "the snapshot dates present in each period",
    })
}

/// The answer to the query from its sub-queries' answers, within the cell budget: gap filling
/// that would not fit leaves the gaps (the meta says so); an answer whose comparison or drill
/// columns would not fit is refused, naming what to narrow.
#[allow(clippy::too_many_arguments)]
pub fn compose(
    catalog: &Catalog,
    q: &ValidatedQuery,
    subs: &SubQueries,
    mut result: QueryResult,
    parent: Option<QueryResult>,
    mut compared: Vec<(ComparisonWindow, QueryResult)>,
    drilled_members: &[Value],
    budget: &mut CellBudget,
) -> Result<QueryResult, QueryError> {
    let held: usize = std::iter::once(&result)
        .chain(parent.iter())
        .chain(compared.iter().map(|(_, r)| r))
        .map(cells_of)
        .sum();
    if !budget.take(held) {
        return Err(too_large(held));
    }
    for other in parent.iter().chain(compared.iter().map(|(_, r)| r)) {
        result
            .notes
            .rollups
            .extend(other.notes.rollups.iter().cloned());
    }
    result.notes.gaps_filled = series::complete(&mut result, q, catalog, drilled_members, budget);
    // Columns a drill or a comparison adds to each row: at most three per metric.
    let added = |r: &QueryResult| (r.rows.len() + 1) * 3 * q.metrics.len();
    if let (Some(mut parent), Some(pq)) = (parent, &subs.parent) {
        series::complete(&mut parent, pq, catalog, &[], budget);
        if !budget.take(added(&result)) {
            return Err(too_large(cells_of(&result) + added(&result)));
        }
        drill::merge(&mut result, q, catalog, &parent);
    }
    for ((window, other), (_, cq)) in compared.iter_mut().zip(&subs.comparisons) {
        series::complete(other, cq, catalog, &[], budget);
        if !budget.take(added(&result)) {
            return Err(too_large(cells_of(&result) + added(&result)));
        }
        compare::merge(&mut result, q, window, other);
        result.notes.comparisons.push(window.clone());
    }
    if result.notes.gaps_filled {
        series::sort_rows(&mut result, q);
        result.truncated = result.rows.len() > q.limit;
        result.rows.truncate(q.limit);
    }
    if let (Some(start), Some(to)) = (q.partial_start, q.to) {
        result.notes.partial_period = Some(PartialPeriod {
            from: start,
            to,
            days: (to - start).num_days() + 1,
        });
    }
    Ok(result)
}

fn cells_of(r: &QueryResult) -> usize {
    (r.rows.len() + 1) * r.schema.len().max(1)
}

fn too_large(cells: usize) -> QueryError {
    QueryError::new(
        ErrorKind::Invalid,
        "answer_too_large",
        format!(
            "the answer would hold about {cells} values, more than one answer may: ask for fewer metrics, comparisons or rows (limit), or a shorter range"
        ),
    )
}

/// The `member` column of a members listing.
pub fn member_values(batches: &[RecordBatch]) -> Vec<Value> {
    let columns = [OutputColumn::new("member", ColumnRole::Dimension)];
    rows_of(batches, &columns)
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
}

/// The grand-total row aligned with the schema: metrics filled, time and dimensions null.
fn totals_row(batches: &[RecordBatch], columns: &[OutputColumn]) -> Vec<Value> {
    let batch = batches.iter().find(|b| b.num_rows() > 0);
    columns
        .iter()
        .map(|c| match (c.role, batch) {
            (ColumnRole::Metric, Some(b)) => b
                .column_by_name(&c.name)
                .map(|a| json_value(a.as_ref(), 0))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        })
        .collect()
}
