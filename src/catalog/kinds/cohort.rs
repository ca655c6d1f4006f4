//! `type: cohort`: of the entities starting in a period (their cohort), the share still active
//! so many periods later. Its answer is a triangle of cohorts by periods since.

use std::collections::BTreeMap;

use datafusion::logical_expr::Expr;

use super::{Declare, Kind, MetricCheck, Shape};
use crate::catalog::{Measure, is_temporal};
use crate::spec::{EmptyPeriod, FormatStyle, Grain, MetricKind};

pub struct CohortMetric {
    pub model: String,
    pub entity: String,
    pub active: Expr,
    pub grain: Grain,
    /// A date dimension that places an entity in its cohort; else its first active snapshot.
    pub cohort_by: Option<String>,
}

impl Declare for CohortMetric {
    const FIELDS: &'static [&'static str] =
        &["model", "entity", "active_when", "period", "cohort_by"];
    const SHAPE: Shape = Shape::Triangle;
    const CAN_BE_ACTUAL: bool = false;

    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        let (model, entity) = c.entity_model()?;
        let (active, _) = c.active_when(model)?;
        let spec = c.d.spec;
        let grain = spec.period.unwrap_or(Grain::Month);
        if !matches!(grain, Grain::Month | Grain::Quarter | Grain::Year) {
            c.push("period", "cohorts are monthly, quarterly or yearly");
            return None;
        }
        if let Some(dim) = &spec.cohort_by {
            let problem = match c.dimensions.get(dim) {
                None => Some(format!("unknown dimension '{dim}'")),
                Some(x) if !x.models.contains(&model.name) => Some(format!(
                    "model '{}' does not declare dimension '{dim}'",
                    model.name
                )),
                Some(x) if !is_temporal(&x.data_type) => {
                    Some(format!("dimension '{dim}' is not a date"))
                }
                Some(_) => None,
            };
            if let Some(p) = problem {
                c.push("cohort_by", p);
                return None;
            }
        }
        Some(CohortMetric {
            model: model.name.clone(),
            entity,
            active,
            grain,
            cohort_by: spec.cohort_by.clone(),
        })
    }
}

impl Kind for CohortMetric {
    fn kind(&self) -> MetricKind {
        MetricKind::Cohort
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
        FormatStyle::Percent
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
        "entities of each starting cohort still active so many periods later"
    }
}
