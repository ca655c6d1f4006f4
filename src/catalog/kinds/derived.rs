//! `type: derived`: a SQL expression over other metrics, computed after they are aggregated (so
//! a difference of ratios is of the ratios at each row's level).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::logical_expr::Expr;

use super::{Declare, Kind, MetricCheck, Shape, declared};
use crate::catalog::Measure;
use crate::spec::{EmptyPeriod, FormatStyle, MetricKind};
use crate::text::first_line;

pub struct DerivedMetric {
    /// Over the metrics' names as columns.
    pub expr: Expr,
    pub sql: String,
    pub depends_on: Vec<String>,
}

impl Declare for DerivedMetric {
    const FIELDS: &'static [&'static str] = &["expr"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = true;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let Some(sql) = c.spec().expr.clone() else {
            c.required("expr");
            return None;
        };
        let expr = match c.plans.parse_expr(&sql, c.metric_schema) {
            Ok(expr) => expr,
            Err(e) => {
                c.push(
                    "expr",
                    format!("invalid expression '{sql}': {}", first_line(&e)),
                );
                return None;
            }
        };
        let depends_on: Vec<String> = expr
            .column_refs()
            .iter()
            .map(|c| c.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for dep in &depends_on {
            let Some(kind) = c.declared.get(dep.as_str()).map(|m| m.spec.kind) else {
                continue;
            };
            if declared(kind).shape != Shape::Series {
                c.push(
                    "expr",
                    format!(
                        "'{dep}' is a {kind} metric; derived metrics combine per-period values, which funnels and cohorts do not have"
                    ),
                );
            }
        }
        Some(DerivedMetric {
            expr,
            sql,
            depends_on,
        })
    }
}

impl Kind for DerivedMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Derived
    }

    fn measures(&self) -> Vec<&str> {
        Vec::new()
    }

    fn metrics(&self) -> Vec<&str> {
        self.depends_on.iter().map(String::as_str).collect()
    }

    fn entity_model(&self) -> Option<&str> {
        None
    }

    /// Its metrics constrain the query, each by its own kind.
    fn constrains_dimensions(&self) -> bool {
        false
    }

    fn default_style(&self) -> FormatStyle {
        FormatStyle::Number
    }

    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Null
    }

    fn refuses_empty(&self, _: EmptyPeriod) -> Option<&'static str> {
        None
    }

    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        false
    }

    fn meaning(&self) -> &'static str {
        "an expression over other metrics, computed after they are aggregated"
    }
}
