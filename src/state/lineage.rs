//! Which tables' rows land on which of a model's dates. A refresh recomputes only the dates that
//! changed files cover, which is exact only for a table whose every row reaches the model's rows
//! at one time value, its own: the model's time column is that table's column passed through
//! (renamed at most; projections, filters, unions, groupings by it, joins on it). Any other table
//! the plan reads (a customer master joined in, a table behind a window function) may change any
//! date's rows, so a change to it rebuilds the whole rollup.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan};

/// The tables a plan reads, split by whether the plan's time column is tied to one of theirs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Table -> its column that the time column is, row for row.
    pub aligned: BTreeMap<String, String>,
    pub unaligned: BTreeSet<String>,
}

/// Every table a resolved plan (views inlined) scans, subqueries included.
pub fn tables_read(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

/// Traces output column `index` of a resolved plan (views inlined) back to the tables.
pub fn trace(plan: &LogicalPlan, index: usize) -> Lineage {
    let mut scans: BTreeMap<String, usize> = BTreeMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            *scans
                .entry(scan.table_name.table().to_string())
                .or_default() += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in aligned_scans(plan, index) {
        found.entry(table).or_default().push(column);
    }
    let mut lineage = Lineage::default();
    for (table, count) in scans {
        // Aligned only if every scan of the table is, on the same column.
        match found.get(&table) {
            Some(columns) if columns.len() == count && columns.iter().all(|c| *c == columns[0]) => {
                lineage.aligned.insert(table, columns[0].clone());
            }
            _ => {
                lineage.unaligned.insert(table);
            }
        }
    }
    lineage
}

/// The scans (table, column) whose rows reach output column `index` with that column's value.
fn aligned_scans(plan: &LogicalPlan, index: usize) -> Vec<(String, String)> {
    let column_in = |input: &LogicalPlan, e: &Expr| match strip_alias(e) {
        Expr::Column(c) => input.schema().index_of_column(c).ok(),
        _ => None,
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let field = scan.projected_schema.field(index);
            vec![(scan.table_name.table().to_string(), field.name().clone())]
        }
        LogicalPlan::Projection(p) => p
            .expr
            .get(index)
            .and_then(|e| column_in(&p.input, e))
            .map(|i| aligned_scans(&p.input, i))
            .unwrap_or_default(),
        LogicalPlan::Filter(f) => aligned_scans(&f.input, index),
        LogicalPlan::Sort(s) if s.fetch.is_none() => aligned_scans(&s.input, index),
        LogicalPlan::Repartition(r) => aligned_scans(&r.input, index),
        LogicalPlan::SubqueryAlias(a) => aligned_scans(&a.input, index),
        LogicalPlan::Distinct(Distinct::All(input)) => aligned_scans(input, index),
        LogicalPlan::Union(u) => u
            .inputs
            .iter()
            .flat_map(|i| aligned_scans(i, index))
            .collect(),
        LogicalPlan::Aggregate(a) if index < a.group_expr.len() => {
            column_in(&a.input, &a.group_expr[index])
                .map(|i| aligned_scans(&a.input, i))
                .unwrap_or_default()
        }
        LogicalPlan::Join(j) => {
            let left_len = j.left.schema().fields().len();
            let (side, other, at, keys_on_left) = match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    if index < left_len {
                        (&j.left, &j.right, index, true)
                    } else {
                        (&j.right, &j.left, index - left_len, false)
                    }
                }
                JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark
                    if index < left_len =>
                {
                    (&j.left, &j.right, index, true)
                }
                JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                    (&j.right, &j.left, index, false)
                }
                _ => return Vec::new(),
            };
            let mut out = aligned_scans(side, at);
            // The other side is tied to the same dates when the join matches on the time.
            for (l, r) in &j.on {
                let (mine, theirs) = if keys_on_left { (l, r) } else { (r, l) };
                if column_in(side, mine) == Some(at)
                    && let Some(k) = column_in(other, theirs)
                {
                    out.extend(aligned_scans(other, k));
                    break;
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}
