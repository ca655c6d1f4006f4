//! Metrics: each kind's definition checked and resolved (its measures, its model and entity, its
//! predicates, its steps and window), then the defaults every metric gets (format, what an empty
//! period shows), then the derived metrics' dependency graph.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::{Builder, Declared};
use crate::catalog::{CatalogErrors, PlanContext};
use crate::catalog::{
    ChurnBase, CohortDefinition, CumulativeDefinition, CumulativeSpan, Dimension, FunnelDefinition,
    Measure, Metric, MetricDefinition, Model, is_temporal, kind_name,
};
use crate::spec::{
    Aggregation, ChurnValue, EmptyPeriod, FormatSpec, FormatStyle, Grain, Label, MetricKind,
    MetricSpec, SnapshotPick,
};
use crate::text::first_line;

impl Builder<'_> {
    pub(super) fn build_metrics(
        &mut self,
        measures: &BTreeMap<String, Measure>,
        models: &BTreeMap<String, Model>,
        dimensions: &BTreeMap<String, Dimension>,
        hierarchies: &BTreeMap<String, Vec<String>>,
    ) -> Result<(BTreeMap<String, Metric>, Vec<ChurnBase>), CatalogErrors> {
        let mut errors = CatalogErrors::default();
        // Derived expressions are parsed against a schema whose columns are the metric names.
        let metric_schema = DFSchema::try_from(Schema::new(
            self.metrics
                .keys()
                .map(|n| Field::new(*n, DataType::Float64, true))
                .collect::<Vec<_>>(),
        ))
        .expect("metric names are unique");
        let mut out = BTreeMap::new();
        let mut churn_bases: Vec<ChurnBase> = Vec::new();
        for (name, d) in &self.metrics {
            let mut check = MetricCheck {
                d,
                key: format!("metrics.{name}"),
                errors: &mut errors,
                plans: &self.plans,
            };
            check.fields_of_its_kind();
            let definition = match d.spec.kind {
                MetricKind::Simple => check
                    .measure_ref("measure", &d.spec.measure, measures)
                    .map(|measure| MetricDefinition::Simple { measure }),
                MetricKind::Ratio => {
                    let n = check.measure_ref("numerator", &d.spec.numerator, measures);
                    let den = check.measure_ref("denominator", &d.spec.denominator, measures);
                    n.zip(den)
                        .map(|(numerator, denominator)| MetricDefinition::Ratio {
                            numerator,
                            denominator,
                        })
                }
                MetricKind::Derived => check.derived(&metric_schema, &self.metrics),
                MetricKind::Churn => check.churn(models, &mut churn_bases),
                MetricKind::Funnel => check.funnel(models),
                MetricKind::Cohort => check.cohort(models, dimensions),
                MetricKind::Cumulative => check.cumulative(measures),
                MetricKind::Target => check.target(measures, models, hierarchies),
                MetricKind::Attainment => check.attainment(&self.metrics),
                MetricKind::TimeProgress => Some(MetricDefinition::TimeProgress),
            };
            let Some(definition) = definition else {
                continue;
            };
            let empty = check.empty_period(&definition, measures);
            out.insert(name.to_string(), finished(name, d, definition, empty));
        }
        errors.check()?;
        // Derived metrics form a DAG.
        for name in out.keys() {
            if let Err(cycle) = derived_cycle(&out, name, &mut Vec::new()) {
                let m = &out[name];
                errors.push(
                    &m.file,
                    format!("metrics.{name}.expr"),
                    format!("derived metrics form a cycle: {}", cycle.join(" -> ")),
                );
            }
        }
        errors.check()?;
        Ok((out, churn_bases))
    }
}

/// One metric being checked: where it is declared and where its errors go.
struct MetricCheck<'c, 'a> {
    d: &'c Declared<'a, MetricSpec>,
    key: String,
    errors: &'c mut CatalogErrors,
    plans: &'c PlanContext,
}

impl MetricCheck<'_, '_> {
    fn spec(&self) -> &MetricSpec {
        self.d.spec
    }

    fn push(&mut self, field: &str, reason: impl Into<String>) {
        let key = if field.is_empty() {
            self.key.clone()
        } else {
            format!("{}.{field}", self.key)
        };
        self.errors.push(self.d.file, key, reason);
    }

    fn required(&mut self, field: &str) {
        let kind = kind_name(self.spec().kind);
        self.push(field, format!("required for type '{kind}'"));
    }

    /// A field that another kind uses is an error here, not silently ignored.
    fn fields_of_its_kind(&mut self) {
        let spec = self.spec();
        let allowed: &[&str] = match spec.kind {
            MetricKind::Simple => &["measure"],
            MetricKind::Ratio => &["numerator", "denominator"],
            MetricKind::Derived => &["expr"],
            MetricKind::Churn => &["model", "entity", "active_when", "value"],
            MetricKind::Funnel => &["model", "entity", "step", "steps", "step_labels", "window"],
            MetricKind::Cohort => &["model", "entity", "active_when", "period", "cohort_by"],
            MetricKind::Cumulative => &["measure", "reset", "window", "average"],
            MetricKind::Target => &["measure", "level", "additive"],
            MetricKind::Attainment => &["actual", "target"],
            MetricKind::TimeProgress => &[],
        };
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
        let kind = kind_name(spec.kind);
        for (field, present) in present {
            if present && !allowed.contains(&field) {
                self.push(field, format!("not a field of type '{kind}'"));
            }
        }
    }

    /// A running total of a flow measure: since the last reset (YTD, QTD, MTD, since ever) or
    /// over the last `window` periods, summed or averaged.
    fn cumulative(&mut self, measures: &BTreeMap<String, Measure>) -> Option<MetricDefinition> {
        let measure = self.measure_ref("measure", &self.spec().measure.clone(), measures)?;
        let m = measures.get(&measure)?;
        if m.snapshot.is_some() {
            self.push(
                "measure",
                format!("'{measure}' is a balance (semi-additive over time): a running total adds periods, so its measure must be a flow"),
            );
            return None;
        }
        if !matches!(m.agg, Aggregation::Sum | Aggregation::Count) {
            self.push(
                "measure",
                format!("'{measure}' is not a sum or a count: a running total adds the periods' values, which only sums and counts allow"),
            );
            return None;
        }
        let spec = self.spec();
        let span = match (spec.reset, &spec.window) {
            (Some(reset), None) => CumulativeSpan::SinceReset(reset),
            (None, Some(crate::spec::Window::Periods(n))) if (1..=366).contains(n) => {
                CumulativeSpan::LastPeriods(*n)
            }
            (None, Some(w)) => {
                self.push(
                    "window",
                    format!("'{w}' is not a number of periods from 1 to 366"),
                );
                return None;
            }
            (Some(_), Some(_)) => {
                self.push(
                    "window",
                    "either `reset` (a running total) or `window` (a rolling one), not both",
                );
                return None;
            }
            (None, None) => {
                self.push(
                    "reset",
                    "required for type 'cumulative' (or `window`: a number of periods)",
                );
                return None;
            }
        };
        let average = spec.average.unwrap_or(false);
        if average && matches!(span, CumulativeSpan::SinceReset(_)) {
            self.push(
                "average",
                "an average is over a `window` of periods; a running total since a reset is a sum",
            );
            return None;
        }
        Some(MetricDefinition::Cumulative(CumulativeDefinition {
            measure,
            span,
            average,
        }))
    }

    /// Targets: a measure over a model that provides the org level they are set at.
    fn target(
        &mut self,
        measures: &BTreeMap<String, Measure>,
        models: &BTreeMap<String, Model>,
        hierarchies: &BTreeMap<String, Vec<String>>,
    ) -> Option<MetricDefinition> {
        let measure = self.measure_ref("measure", &self.spec().measure.clone(), measures)?;
        let model = &models[&measures.get(&measure)?.model];
        let Some(level) = self.spec().level.clone() else {
            self.required("level");
            return None;
        };
        if !hierarchies.values().any(|levels| levels.contains(&level)) {
            self.push(
                "level",
                format!("'{level}' is no level of a hierarchy (targets are set per member of one)"),
            );
            return None;
        }
        if !model.dimensions.contains_key(&level) {
            self.push(
                "level",
                format!(
                    "model '{}' of measure '{measure}' has no dimension '{level}'",
                    model.name
                ),
            );
            return None;
        }
        Some(MetricDefinition::Target {
            measure,
            level,
            additive: self.spec().additive.unwrap_or(false),
        })
    }

    /// Attainment of a target: the actual metric (any kind computed per row) over a `target`.
    fn attainment(
        &mut self,
        metrics: &BTreeMap<&str, Declared<'_, MetricSpec>>,
    ) -> Option<MetricDefinition> {
        let spec = self.spec();
        let (actual, target) = (spec.actual.clone(), spec.target.clone());
        let kind_of = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| metrics.get(n))
                .map(|m| m.spec.kind)
        };
        let (actual_kind, target_kind) = (kind_of(&actual), kind_of(&target));
        match (&actual, actual_kind) {
            (None, _) => self.required("actual"),
            (Some(a), None) => self.push("actual", format!("unknown metric '{a}'")),
            (Some(a), Some(k))
                if matches!(
                    k,
                    MetricKind::Funnel
                        | MetricKind::Cohort
                        | MetricKind::Target
                        | MetricKind::Attainment
                        | MetricKind::TimeProgress
                ) =>
            {
                self.push(
                    "actual",
                    format!(
                        "'{a}' is a {} metric: attainment measures a value per period and group",
                        kind_name(k)
                    ),
                )
            }
            _ => {}
        }
        match (&target, target_kind) {
            (None, _) => self.required("target"),
            (Some(t), None) => self.push("target", format!("unknown metric '{t}'")),
            (Some(t), Some(k)) if k != MetricKind::Target => self.push(
                "target",
                format!(
                    "'{t}' is a {} metric, not a target (type: target)",
                    kind_name(k)
                ),
            ),
            _ => {}
        }
        let lower_is_better = actual
            .as_deref()
            .and_then(|a| metrics.get(a))
            .is_some_and(|m| m.spec.direction == Some(crate::spec::Direction::LowerIsBetter));
        Some(MetricDefinition::Attainment {
            actual: actual?,
            target: target?,
            lower_is_better,
        })
    }

    /// A required reference to a measure: present and known.
    fn measure_ref(
        &mut self,
        field: &str,
        value: &Option<String>,
        measures: &BTreeMap<String, Measure>,
    ) -> Option<String> {
        match value {
            None => self.required(field),
            Some(m) if !measures.contains_key(m) => {
                self.push(field, format!("unknown measure '{m}'"))
            }
            Some(_) => {}
        }
        value.clone()
    }

    fn derived(
        &mut self,
        metric_schema: &DFSchema,
        metrics: &BTreeMap<&str, Declared<'_, MetricSpec>>,
    ) -> Option<MetricDefinition> {
        let Some(sql) = self.spec().expr.clone() else {
            self.required("expr");
            return None;
        };
        let expr = match self.plans.parse_expr(&sql, metric_schema) {
            Ok(expr) => expr,
            Err(e) => {
                self.push(
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
            if let Some(m) = metrics
                .get(dep.as_str())
                .filter(|m| matches!(m.spec.kind, MetricKind::Funnel | MetricKind::Cohort))
            {
                let kind = kind_name(m.spec.kind);
                self.push(
                    "expr",
                    format!(
                        "'{dep}' is a {kind} metric; derived metrics combine per-period values, which funnels and cohorts do not have"
                    ),
                );
            }
        }
        Some(MetricDefinition::Derived {
            expr,
            sql,
            depends_on,
        })
    }

    /// The model of a churn, funnel or cohort metric (it must have a time column) and its
    /// entity column.
    fn entity_model<'m>(
        &mut self,
        models: &'m BTreeMap<String, Model>,
    ) -> Option<(&'m Model, String)> {
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
    fn active_when(&mut self, model: &Model) -> Option<(Expr, String)> {
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

    /// Churn metrics showing different numbers of one (model, entity, activity rule) share one
    /// computation.
    fn churn(
        &mut self,
        models: &BTreeMap<String, Model>,
        churn_bases: &mut Vec<ChurnBase>,
    ) -> Option<MetricDefinition> {
        let (model, entity) = self.entity_model(models)?;
        let (active, active_sql) = self.active_when(model)?;
        let base = churn_bases
            .iter()
            .position(|b| b.model == model.name && b.entity == entity && b.active_sql == active_sql)
            .unwrap_or_else(|| {
                churn_bases.push(ChurnBase {
                    model: model.name.clone(),
                    entity,
                    active,
                    active_sql,
                });
                churn_bases.len() - 1
            });
        Some(MetricDefinition::Churn {
            base,
            value: self.spec().value.unwrap_or(ChurnValue::Rate),
        })
    }

    fn funnel(&mut self, models: &BTreeMap<String, Model>) -> Option<MetricDefinition> {
        let (model, entity) = self.entity_model(models)?;
        let spec = self.d.spec;
        let step = match &spec.step {
            None => {
                self.required("step");
                return None;
            }
            Some(s) if model.schema.field_with_name(s).is_err() => {
                self.push(
                    "step",
                    format!("model '{}' has no column '{s}'", model.name),
                );
                return None;
            }
            Some(s) => s.clone(),
        };
        if spec.steps.len() < 2 {
            self.push("steps", "a funnel needs at least two steps");
            return None;
        }
        for step in spec.step_labels.keys() {
            if !spec.steps.contains(step) {
                self.push(
                    &format!("step_labels.{step}"),
                    format!(
                        "'{step}' is not one of the steps ({})",
                        spec.steps.join(", ")
                    ),
                );
            }
        }
        for (i, st) in spec.steps.iter().enumerate() {
            if spec.steps[..i].contains(st) {
                self.push(&format!("steps[{i}]"), format!("step '{st}' appears twice"));
            }
        }
        let Some(window) = &spec.window else {
            self.required("window");
            return None;
        };
        let Some(window_micros) = (match window {
            crate::spec::Window::Span(w) => parse_duration_micros(w),
            crate::spec::Window::Periods(_) => None,
        }) else {
            self.push(
                "window",
                format!("'{window}' is not a duration like 90d, 36h or 2w"),
            );
            return None;
        };
        Some(MetricDefinition::Funnel(FunnelDefinition {
            model: model.name.clone(),
            entity,
            step,
            steps: spec.steps.clone(),
            step_labels: spec.step_labels.clone(),
            window_micros,
            window: window.to_string(),
        }))
    }

    fn cohort(
        &mut self,
        models: &BTreeMap<String, Model>,
        dimensions: &BTreeMap<String, Dimension>,
    ) -> Option<MetricDefinition> {
        let (model, entity) = self.entity_model(models)?;
        let (active, _) = self.active_when(model)?;
        let spec = self.d.spec;
        let grain = spec.period.unwrap_or(Grain::Month);
        if !matches!(grain, Grain::Month | Grain::Quarter | Grain::Year) {
            self.push("period", "cohorts are monthly, quarterly or yearly");
            return None;
        }
        if let Some(dim) = &spec.cohort_by {
            let problem = match dimensions.get(dim) {
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
                self.push("cohort_by", p);
                return None;
            }
        }
        Some(MetricDefinition::Cohort(CohortDefinition {
            model: model.name.clone(),
            entity,
            active,
            grain,
            cohort_by: spec.cohort_by.clone(),
        }))
    }

    /// What a gap-filled period without data shows: as declared, else zero for non-snapshot
    /// sums and counts, the last value for balances, null for the rest. A ratio is never zero.
    fn empty_period(
        &mut self,
        definition: &MetricDefinition,
        measures: &BTreeMap<String, Measure>,
    ) -> EmptyPeriod {
        match (definition, self.spec().empty) {
            (MetricDefinition::Ratio { .. }, Some(EmptyPeriod::Zero)) => {
                self.push("empty", "a ratio of empty parts is null, not zero");
                EmptyPeriod::Null
            }
            (MetricDefinition::Target { .. }, Some(EmptyPeriod::Zero)) => {
                self.push("empty", "a target not set is null (unknown), never 0");
                EmptyPeriod::Null
            }
            (_, Some(e)) => e,
            // A period whose window holds no rows adds nothing: its running total is 0.
            (MetricDefinition::Cumulative(_), None) => EmptyPeriod::Zero,
            (MetricDefinition::Simple { measure }, None) => {
                // An unknown measure is already an error of this metric.
                let Some(m) = measures.get(measure) else {
                    return EmptyPeriod::Null;
                };
                match (m.snapshot, m.agg) {
                    // A period without snapshot dates has no average to carry.
                    (Some(SnapshotPick::Average), _) => EmptyPeriod::Null,
                    (Some(_), _) => EmptyPeriod::Carry,
                    (None, Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct) => {
                        EmptyPeriod::Zero
                    }
                    _ => EmptyPeriod::Null,
                }
            }
            _ => EmptyPeriod::Null,
        }
    }
}

/// The metric with its label, format and direction (declared, or the kind's defaults).
fn finished(
    name: &str,
    d: &Declared<'_, MetricSpec>,
    definition: MetricDefinition,
    empty: EmptyPeriod,
) -> Metric {
    let spec = d.spec;
    let default_style = match &definition {
        MetricDefinition::Attainment { .. } | MetricDefinition::TimeProgress => {
            FormatStyle::Percent
        }
        MetricDefinition::Ratio { .. }
        | MetricDefinition::Cohort(_)
        | MetricDefinition::Churn {
            value: ChurnValue::Rate,
            ..
        } => FormatStyle::Percent,
        MetricDefinition::Churn { .. } | MetricDefinition::Funnel(_) => FormatStyle::Integer,
        _ => FormatStyle::Number,
    };
    Metric {
        name: name.to_string(),
        file: d.file.to_string(),
        definition,
        label: spec.label.clone().unwrap_or_else(|| Label {
            zh: None,
            en: Some(name.replace('_', " ")),
        }),
        description: spec.description.clone(),
        format: spec.format.clone().unwrap_or(FormatSpec {
            style: default_style,
            decimals: None,
            currency: None,
        }),
        direction: spec.direction.unwrap_or_default(),
        thresholds: spec.thresholds.clone(),
        empty,
    }
}

/// `90d`, `36h`, `2w`, `30m` as microseconds.
pub(in crate::catalog) fn parse_duration_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "w" => 7 * 86_400,
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000)
}

fn derived_cycle(
    metrics: &BTreeMap<String, Metric>,
    name: &str,
    stack: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    if stack.iter().any(|s| s == name) {
        let mut cycle = stack.clone();
        cycle.push(name.to_string());
        return Err(cycle);
    }
    if let Some(m) = metrics.get(name) {
        stack.push(name.to_string());
        for dep in m.definition.metrics_read() {
            derived_cycle(metrics, &dep, stack)?;
        }
        stack.pop();
    }
    Ok(())
}
