//! One metric being checked: where it is declared, where its errors go, what the catalog holds
//! so far, and the checks several kinds share (a measure reference, an entity model, an activity
//! predicate).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::ChurnBase;
use crate::catalog::build::Declared;
use crate::catalog::{CatalogErrors, Dimension, Measure, Model, PlanContext};
use crate::spec::MetricSpec;
use crate::text::first_line;

pub(in crate::catalog) struct MetricCheck<'c, 'a> {
    pub(in crate::catalog) d: &'c Declared<'a, MetricSpec>,
    pub(in crate::catalog) key: String,
    pub(in crate::catalog) errors: &'c mut CatalogErrors,
    pub(in crate::catalog) plans: &'c PlanContext,
    pub(in crate::catalog) measures: &'c BTreeMap<String, Measure>,
    pub(in crate::catalog) models: &'c BTreeMap<String, Model>,
    pub(in crate::catalog) dimensions: &'c BTreeMap<String, Dimension>,
    pub(in crate::catalog) hierarchies: &'c BTreeMap<String, Vec<String>>,
    /// Every metric as declared (derived metrics and attainments name others).
    pub(in crate::catalog) declared: &'c BTreeMap<&'a str, Declared<'a, MetricSpec>>,
    /// The metric names as Float64 columns: derived expressions are parsed against it.
    pub(in crate::catalog) metric_schema: &'c DFSchema,
    /// Churn computations found so far (churn metrics of one base share it).
    pub(in crate::catalog) churn_bases: &'c mut Vec<ChurnBase>,
}

impl<'c> MetricCheck<'c, '_> {
    pub(in crate::catalog) fn spec(&self) -> &MetricSpec {
        self.d.spec
    }

    pub(in crate::catalog) fn push(&mut self, field: &str, reason: impl Into<String>) {
        let key = if field.is_empty() {
            self.key.clone()
        } else {
            format!("{}.{field}", self.key)
        };
        self.errors.push(self.d.file, key, reason);
    }

    pub(in crate::catalog) fn required(&mut self, field: &str) {
        let kind = self.spec().kind;
        self.push(field, format!("required for type '{kind}'"));
    }

    /// A field that another kind uses is an error here, not silently ignored.
    pub(in crate::catalog) fn fields_of_its_kind(&mut self, allowed: &[&str]) {
        let spec = self.spec();
        let present = [
            ("measure", spec.measure.is_some()),
            ("numerator", spec.numerator.is_some()),
            ("denominator", spec.denominator.is_some()),
            ("expr", spec.expr.is_some()),
            ("model", spec.model.is_some()),
            ("entity", spec.entity.is_some()),
            ("active_when", spec.active_when.is_some()),
            ("value", spec.value.is_some()),
            ("step", spec.step.is_some()),
            ("steps", !spec.steps.is_empty()),
            ("step_labels", !spec.step_labels.is_empty()),
            ("window", spec.window.is_some()),
            ("period", spec.period.is_some()),
            ("cohort_by", spec.cohort_by.is_some()),
            ("reset", spec.reset.is_some()),
            ("average", spec.average.is_some()),
            ("level", spec.level.is_some()),
            ("additive", spec.additive.is_some()),
            ("actual", spec.actual.is_some()),
            ("target", spec.target.is_some()),
        ];
        let kind = spec.kind;
        for (field, present) in present {
            if present && !allowed.contains(&field) {
                self.push(field, format!("not a field of type '{kind}'"));
            }
        }
    }

    /// A required reference to a measure: present and known.
    pub(in crate::catalog) fn measure_ref(
        &mut self,
        field: &str,
        value: &Option<String>,
    ) -> Option<String> {
        match value {
            None => self.required(field),
            Some(m) if !self.measures.contains_key(m) => {
                self.push(field, format!("unknown measure '{m}'"))
            }
            Some(_) => {}
        }
        value.clone()
    }

    /// The model of a churn, funnel or cohort metric (it must have a time column) and its
    /// entity column.
    pub(in crate::catalog) fn entity_model(&mut self) -> Option<(&'c Model, String)> {
        let models = self.models;
        let Some(model_name) = self.spec().model.clone() else {
            self.required("model");
            return None;
        };
        let Some(model) = models.get(&model_name) else {
            self.push("model", format!("unknown model '{model_name}'"));
            return None;
        };
        if model.time.is_none() {
            self.push("model", format!("model '{model_name}' has no time column"));
            return None;
        }
        let Some(entity) = self.spec().entity.clone() else {
            self.required("entity");
            return None;
        };
        if model.schema.field_with_name(&entity).is_err() {
            self.push(
                "entity",
                format!("model '{model_name}' has no column '{entity}'"),
            );
            return None;
        }
        Some((model, entity))
    }

    /// `active_when`: a boolean predicate over the model's columns.
    pub(in crate::catalog) fn active_when(&mut self, model: &Model) -> Option<(Expr, String)> {
        let Some(sql) = self.spec().active_when.clone() else {
            self.required("active_when");
            return None;
        };
        let schema = DFSchema::try_from(model.schema.as_ref().clone()).ok()?;
        match self
            .plans
            .parse_expr(&sql, &schema)
            .and_then(|e| e.get_type(&schema).map(|t| (e, t)))
        {
            Ok((e, DataType::Boolean)) => Some((e, sql)),
            Ok((_, t)) => {
                self.push(
                    "active_when",
                    format!("'{sql}' is {t}, not a boolean predicate"),
                );
                None
            }
            Err(e) => {
                self.push(
                    "active_when",
                    format!("invalid expression '{sql}': {}", first_line(&e)),
                );
                None
            }
        }
    }
}
