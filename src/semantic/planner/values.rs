//! A metric's value as an expression over the aggregated columns of its parts, per kind.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions::expr_fn::nullif;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{ident, lit};

use super::measures::measure_column;
use super::rows::{df_err, or_zero};
use crate::catalog::{Catalog, MetricDefinition};
use crate::semantic::error::QueryError;
use crate::spec::{ChurnValue, EmptyPeriod};

/// What a metric's value is computed from, over a frame of aggregated measure columns.
pub(super) struct MetricValues<'a> {
    pub(super) catalog: &'a Catalog,
    /// Targets that cannot answer these rows: null.
    pub(super) unanswered: &'a BTreeSet<String>,
}

impl MetricValues<'_> {
    /// A metric as an expression over the aggregated measure columns.
    pub(super) fn expr(&self, name: &str) -> Result<Expr, QueryError> {
        let catalog = self.catalog;
        let metric = &catalog.metrics[name];
        let as_f64 = |e: Expr| cast(e, DataType::Float64);
        use MetricDefinition as D;
        Ok(match &metric.definition {
            D::Target(_) if self.unanswered.contains(name) => {
                cast(lit(ScalarValue::Null), DataType::Float64)
            }
            D::Target(t) => as_f64(ident(measure_column(&t.measure))),
            D::Attainment(a) => {
                let (actual, target) =
                    (as_f64(self.expr(&a.actual)?), as_f64(self.expr(&a.target)?));
                let (over, under) = if a.lower_is_better {
                    (target, actual)
                } else {
                    (actual, target)
                };
                over / nullif(under, lit(0.0f64))
            }
            // Set per row once the rows are known (`series::pace`), gap-filled ones too.
            D::TimeProgress(_) => cast(lit(ScalarValue::Null), DataType::Float64),
            // A metric that declares empty as zero shows 0 where its model has no rows for the group
            // (another model's metric in the same query may have some).
            D::Simple(s) if metric.empty == EmptyPeriod::Zero => {
                or_zero(ident(measure_column(&s.measure)))
            }
            D::Simple(s) => ident(measure_column(&s.measure)),
            // Ratio of sums; an empty or zero denominator gives null, never an error.
            D::Ratio(r) => {
                as_f64(ident(measure_column(&r.numerator)))
                    / nullif(as_f64(ident(measure_column(&r.denominator))), lit(0.0f64))
            }
            D::Churn(churn) => {
                let c = |v| ident(super::churn::column(churn.base, v));
                match churn.value {
                    ChurnValue::Rate => {
                        as_f64(c(ChurnValue::Churned))
                            / nullif(as_f64(c(ChurnValue::ActiveAtStart)), lit(0.0f64))
                    }
                    v
                    @ (ChurnValue::ActiveAtStart | ChurnValue::Churned | ChurnValue::Returned) => {
                        c(v)
                    }
                }
            }
            // A row another metric's part holds, with nothing in this one's window: 0, as declared.
            D::Cumulative(_) if metric.empty == EmptyPeriod::Zero => {
                or_zero(ident(super::cumulative::column(name)))
            }
            D::Cumulative(_) => ident(super::cumulative::column(name)),
            D::Funnel(_) | D::Cohort(_) => {
                return Err(QueryError::invalid(format!(
                    "'{name}' is a {} metric and is queried on its own",
                    metric.definition.kind()
                )));
            }
            D::Derived(d) => {
                d.expr
                    .clone()
                    .transform_up(|e| match e {
                        Expr::Column(c) => Ok(Transformed::yes(as_f64(
                            self.expr(&c.name)
                                .map_err(|e| datafusion::error::DataFusionError::Plan(e.message))?,
                        ))),
                        other => Ok(Transformed::no(other)),
                    })
                    .map_err(df_err)?
                    .data
            }
        })
    }
}
