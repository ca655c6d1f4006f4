//! An optimizer rule DataFusion lacks: drop a left join to a lookup table when nothing above it
//! reads the lookup's columns and the lookup has at most one row per key. Such a join cannot add
//! or remove rows, so it is a no-op; SQL models that join silos (`customer_month_view` joins the
//! customer master for the RM) keep it in every query that does not use the RM, over every
//! snapshot row, only because DataFusion cannot know the key is unique.
//!
//! Uniqueness is never assumed from a declaration: the data state checks each declared primary
//! key over the files it reads (no key repeats) and tells the engine which hold.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use datafusion::common::NullEquality;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// (table, column) pairs whose column holds no value twice over the state's files.
pub(super) type UniqueKeys = Arc<RwLock<HashSet<(String, String)>>>;

#[derive(Debug)]
pub(super) struct DropUnusedLookups {
    pub unique: UniqueKeys,
}

impl OptimizerRule for DropUnusedLookups {
    fn name(&self) -> &str {
        "kpilens_drop_unused_lookups"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let (used, input): (Vec<&Expr>, _) = match &plan {
            LogicalPlan::Projection(p) => (p.expr.iter().collect(), &p.input),
            LogicalPlan::Aggregate(a) => {
                (a.group_expr.iter().chain(&a.aggr_expr).collect(), &a.input)
            }
            _ => return Ok(Transformed::no(plan)),
        };
        let LogicalPlan::Join(join) = input.as_ref() else {
            return Ok(Transformed::no(plan));
        };
        if join.join_type != JoinType::Left
            || join.filter.is_some()
            || join.null_equality == NullEquality::NullEqualsNull
        {
            return Ok(Transformed::no(plan));
        }
        let right = join.right.schema();
        let reads_right = used
            .iter()
            .flat_map(|e| e.column_refs())
            .any(|c| right.has_column(c));
        let unique = join.on.iter().any(|(_, r)| match r {
            Expr::Column(c) => right
                .index_of_column(c)
                .is_ok_and(|i| self.unique_at(&join.right, i)),
            _ => false,
        });
        if reads_right || !unique {
            return Ok(Transformed::no(plan));
        }
        let left = join.left.clone();
        Ok(Transformed::yes(match plan {
            LogicalPlan::Projection(p) => {
                LogicalPlan::Projection(Projection::try_new(p.expr, left)?)
            }
            LogicalPlan::Aggregate(a) => {
                LogicalPlan::Aggregate(Aggregate::try_new(left, a.group_expr, a.aggr_expr)?)
            }
            _ => unreachable!("matched above"),
        }))
    }
}

impl DropUnusedLookups {
    /// Whether output column `index` of `plan` holds each value at most once.
    fn unique_at(&self, plan: &LogicalPlan, index: usize) -> bool {
        let column_in = |input: &LogicalPlan, e: &Expr| match unalias(e) {
            Expr::Column(c) => input.schema().index_of_column(c).ok(),
            _ => None,
        };
        match plan {
            LogicalPlan::TableScan(scan) if scan.fetch.is_none() => {
                let field = scan.projected_schema.field(index).name().clone();
                let table = scan.table_name.table().to_string();
                self.unique
                    .read()
                    .expect("unique keys")
                    .contains(&(table, field))
            }
            LogicalPlan::Projection(p) => p
                .expr
                .get(index)
                .and_then(|e| column_in(&p.input, e))
                .is_some_and(|i| self.unique_at(&p.input, i)),
            LogicalPlan::Filter(f) => self.unique_at(&f.input, index),
            LogicalPlan::SubqueryAlias(a) => self.unique_at(&a.input, index),
            LogicalPlan::Sort(s) => self.unique_at(&s.input, index),
            LogicalPlan::Repartition(r) => self.unique_at(&r.input, index),
            LogicalPlan::Aggregate(a) => a.group_expr.len() == 1 && index == 0,
            LogicalPlan::Distinct(Distinct::All(input)) => input.schema().fields().len() == 1,
            // A left or inner join keeps the left side's uniqueness when each left row matches
            // at most one right row.
            LogicalPlan::Join(j)
                if matches!(j.join_type, JoinType::Left | JoinType::Inner)
                    && index < j.left.schema().fields().len() =>
            {
                self.unique_at(&j.left, index)
                    && j.on.iter().any(|(_, r)| {
                        column_in(&j.right, r).is_some_and(|i| self.unique_at(&j.right, i))
                    })
            }
            _ => false,
        }
    }
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}
