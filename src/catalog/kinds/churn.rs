//! `type: churn`: entities active at the end of the previous period and not at this one's end,
//! as a rate of those active before or as one of the counts (`value`). Churn metrics of the same
//! model, entity and activity rule share one computation (a [`ChurnBase`]).

use std::collections::BTreeMap;

use datafusion::logical_expr::Expr;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::Measure;
use crate::spec::{ChurnValue, EmptyPeriod, FormatStyle, MetricKind};

pub struct ChurnMetric {
    /// Its computation in `Catalog::churn_bases`.
    pub base: usize,
    /// The snapshot model the base counts entities of.
    pub model: String,
    pub value: ChurnValue,
}

/// One churn computation: a (model, entity, activity rule).
pub struct ChurnBase {
    pub model: String,
    pub entity: String,
    /// Over the model's columns: the entity is active in this snapshot row.
    pub active: Expr,
    pub active_sql: String,
}

impl Declare for ChurnMetric {
    const FIELDS: &'static [&'static str] = &["model", "entity", "active_when", "value"];
    const SHAPE: Shape = Shape::Series;
    const CAN_BE_ACTUAL: bool = true;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let (model, entity) = c.entity_model()?;
        let (active, active_sql) = c.active_when(model)?;
        let bases = &mut *c.churn_bases;
        let base = bases
            .iter()
            .position(|b| b.model == model.name && b.entity == entity && b.active_sql == active_sql)
            .unwrap_or_else(|| {
                bases.push(ChurnBase {
                    model: model.name.clone(),
                    entity,
                    active,
                    active_sql,
                });
                bases.len() - 1
            });
        Some(ChurnMetric {
            base,
            model: model.name.clone(),
            value: c.spec().value.unwrap_or(ChurnValue::Rate),
        })
    }
}

impl Kind for ChurnMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Churn
    }

    fn measures(&self) -> Vec<&str> {
        Vec::new()
    }

    fn metrics(&self) -> Vec<&str> {
        Vec::new()
    }

    fn entity_model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn constrains_dimensions(&self) -> bool {
        true
    }

    fn default_style(&self) -> FormatStyle {
        match self.value {
            ChurnValue::Rate => FormatStyle::Percent,
            ChurnValue::ActiveAtStart | ChurnValue::Churned | ChurnValue::Returned => {
                FormatStyle::Integer
            }
        }
    }

    fn default_empty(&self, _: &BTreeMap<String, Measure>) -> EmptyPeriod {
        EmptyPeriod::Null
    }

    fn refuses_empty(&self, _: EmptyPeriod) -> Option<&'static str> {
        None
    }

    /// The counts add up over members (an entity belongs to one); the rate does not.
    fn adds_up(&self, _: &BTreeMap<String, Measure>) -> bool {
        match self.value {
            ChurnValue::Rate => false,
            ChurnValue::ActiveAtStart | ChurnValue::Churned | ChurnValue::Returned => true,
        }
    }

    fn meaning(&self) -> &'static str {
        "entities active at the end of the previous period and not active at this period's end, counted or as a rate of those active before"
    }
}
