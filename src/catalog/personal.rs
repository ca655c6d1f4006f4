//! Personal data by declaration. A model over a file declares its personal columns once, with
//! how each is masked (`personal_data: { phone: phone }`); every SQL model reading that table
//! inherits them, column by column, through its plan: a column passed through (renamed, cast) keeps
//! its mask, a column computed from one (`concat(name, phone)`, `substr(id_number, 1, 6)`) is
//! personal too, masked whole. The catalog then refuses any definition that would show one
//! unmasked: a dimension (and so a filter, a hierarchy level, a rollup key), a measure other
//! than a count, a measure's `where`, a drill-through column without a mask, an alert's
//! `key` or `show`.

use std::collections::BTreeMap;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan};

use crate::spec::Mask;

/// A table's or view's personal columns and their masks.
pub type PersonalColumns = BTreeMap<String, Mask>;

/// A personal column a condition reads other than to ask whether it is there (`phone IS NULL`
/// is a fair question; `phone = '138...'` tells who has that number).
pub fn tested_column(condition: &Expr, personal: &PersonalColumns) -> Option<String> {
    let mut found = None;
    let _ = condition.apply(|node| match node {
        Expr::IsNull(_) | Expr::IsNotNull(_) => Ok(TreeNodeRecursion::Jump),
        Expr::Column(c) if personal.contains_key(c.name()) => {
            found = Some(c.name().to_string());
            Ok(TreeNodeRecursion::Stop)
        }
        _ => Ok(TreeNodeRecursion::Continue),
    });
    found
}

/// The personal columns of a view's output, from its plan and what the tables and views it
/// scans hold (`known`, by name).
pub fn view_columns(
    plan: &LogicalPlan,
    known: &BTreeMap<String, PersonalColumns>,
) -> PersonalColumns {
    let schema = plan.schema();
    (0..schema.fields().len())
        .filter_map(|i| {
            let sources = sources(plan, i, true);
            let personal: Vec<(Mask, bool)> = sources
                .into_iter()
                .filter_map(|(table, column, direct)| {
                    known
                        .get(&table)
                        .and_then(|cols| cols.get(&column))
                        .map(|m| (*m, direct))
                })
                .collect();
            let mask = match personal.as_slice() {
                [] => return None,
                // Passed through unchanged from one kind: its mask.
                [(m, true), rest @ ..] if rest.iter().all(|(r, d)| *d && r == m) => *m,
                _ => Mask::All,
            };
            Some((schema.field(i).name().clone(), mask))
        })
        .collect()
}

/// The scanned (table, column) output column `index` is made from, and whether it is that
/// column unchanged (`direct`). What this cannot follow counts every scanned column beneath as
/// a source, so that nothing personal is missed.
fn sources(plan: &LogicalPlan, index: usize, direct: bool) -> Vec<(String, String, bool)> {
    let from_expr = |input: &LogicalPlan, e: &Expr, direct: bool| -> Vec<(String, String, bool)> {
        if let Some(i) = passed_column(input, e) {
            return sources(input, i, direct);
        }
        let mut out = Vec::new();
        for c in e.column_refs() {
            if let Ok(i) = input.schema().index_of_column(c) {
                out.extend(sources(input, i, false));
            }
        }
        out.extend(subquery_columns(e));
        out
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let field = scan.projected_schema.field(index);
            vec![(
                scan.table_name.table().to_string(),
                field.name().clone(),
                direct,
            )]
        }
        LogicalPlan::Projection(p) => match p.expr.get(index) {
            Some(e) => from_expr(&p.input, e, direct),
            None => everything(plan),
        },
        LogicalPlan::Aggregate(a) => {
            if index < a.group_expr.len() {
                from_expr(&a.input, &a.group_expr[index], direct)
            } else {
                match a.aggr_expr.get(index - a.group_expr.len()) {
                    // A count tells how many, not what.
                    Some(e) if is_count(e) => Vec::new(),
                    Some(e) => from_expr(&a.input, e, false),
                    None => everything(plan),
                }
            }
        }
        LogicalPlan::Window(w) => {
            let width = w.input.schema().fields().len();
            if index < width {
                sources(&w.input, index, direct)
            } else {
                match w.window_expr.get(index - width) {
                    Some(e) => from_expr(&w.input, e, false),
                    None => everything(plan),
                }
            }
        }
        LogicalPlan::Filter(f) => sources(&f.input, index, direct),
        LogicalPlan::Sort(s) => sources(&s.input, index, direct),
        LogicalPlan::Limit(l) => sources(&l.input, index, direct),
        LogicalPlan::Repartition(r) => sources(&r.input, index, direct),
        LogicalPlan::SubqueryAlias(a) => sources(&a.input, index, direct),
        LogicalPlan::Distinct(Distinct::All(input)) => sources(input, index, direct),
        LogicalPlan::Union(u) => u
            .inputs
            .iter()
            .flat_map(|i| sources(i, index, direct))
            .collect(),
        LogicalPlan::Join(j) => {
            let left_len = j.left.schema().fields().len();
            match j.join_type {
                JoinType::LeftSemi | JoinType::LeftAnti if index < left_len => {
                    sources(&j.left, index, direct)
                }
                JoinType::RightSemi | JoinType::RightAnti => sources(&j.right, index, direct),
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    if index < left_len {
                        sources(&j.left, index, direct)
                    } else {
                        sources(&j.right, index - left_len, direct)
                    }
                }
                _ => everything(plan),
            }
        }
        _ => everything(plan),
    }
}

/// The input column `e` is, unchanged but for an alias or a cast.
fn passed_column(input: &LogicalPlan, e: &Expr) -> Option<usize> {
    match e {
        Expr::Alias(a) => passed_column(input, &a.expr),
        Expr::Cast(c) => passed_column(input, &c.expr),
        Expr::TryCast(c) => passed_column(input, &c.expr),
        Expr::Column(c) => input.schema().index_of_column(c).ok(),
        _ => None,
    }
}

fn is_count(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => is_count(&a.expr),
        Expr::AggregateFunction(f) => f.func.name().eq_ignore_ascii_case("count"),
        _ => false,
    }
}

/// Every column scanned inside the subqueries of `e` (a scalar subquery can return one).
fn subquery_columns(e: &Expr) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let _ = e.apply(|node| {
        let plan = match node {
            Expr::ScalarSubquery(s) => Some(&s.subquery),
            Expr::InSubquery(s) => Some(&s.subquery.subquery),
            Expr::Exists(s) => Some(&s.subquery.subquery),
            _ => None,
        };
        if let Some(plan) = plan {
            out.extend(everything(plan));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// Every column every scan beneath `plan` reads, as derived sources.
fn everything(plan: &LogicalPlan) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            for f in scan.projected_schema.fields() {
                out.push((scan.table_name.table().to_string(), f.name().clone(), false));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}
