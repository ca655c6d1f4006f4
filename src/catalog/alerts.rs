//! Alert rules (`alerts:` in `metrics/*.yaml`) validated against the catalog: every name they
//! use exists, conditions parse over the model's columns, durations read.

use std::collections::BTreeMap;

use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::Catalog;
use super::build::{Declared, parse_duration_micros};
use crate::catalog::CatalogErrors;
use crate::protocol::Comparison;
use crate::spec::alert::{AlertKind, AlertSpec, KpiCondition, Severity};
use crate::spec::{Grain, Label};
use crate::text::first_line;

pub struct AlertRule {
    pub name: String,
    pub file: String,
    pub label: Label,
    pub description: Option<String>,
    pub severity: Severity,
    /// Seconds between evaluations.
    pub every_secs: i64,
    pub check: AlertCheck,
}

pub enum AlertCheck {
    Kpi {
        metric: String,
        /// The level evaluated per member; None: the whole bank.
        for_each: Option<String>,
        /// The hierarchy's levels from the top down to `for_each`: each alert carries its
        /// member's path, which is what scopes say yes or no to.
        path: Vec<String>,
        grain: Grain,
        condition: Condition,
        pending_secs: i64,
    },
    Record {
        model: String,
        condition: Expr,
        condition_sql: String,
        key: String,
        owner: String,
        /// Org levels the model has (for the task's path, so scopes apply).
        path: Vec<String>,
        show: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Above(f64),
    Below(f64),
    UpPct { pct: f64, vs: Comparison },
    DownPct { pct: f64, vs: Comparison },
}

/// Durations like `15m`, `2h`, `1d`; `0m` (or `0`) is allowed where `zero_ok`.
fn seconds(s: &str, zero_ok: bool) -> Option<i64> {
    if zero_ok && s.trim().trim_end_matches(['m', 'h', 'd', 'w']) == "0" {
        return Some(0);
    }
    parse_duration_micros(s).map(|us| us / 1_000_000)
}

pub(super) fn validate(
    catalog: &Catalog,
    declared: &BTreeMap<&str, Declared<'_, AlertSpec>>,
) -> Result<BTreeMap<String, AlertRule>, CatalogErrors> {
    let mut errors = CatalogErrors::default();
    let mut out = BTreeMap::new();
    for (name, d) in declared {
        let (file, spec, key) = (d.file, d.spec, format!("alerts.{name}"));
        let before = errors.0.len();
        let mut err = |field: &str, reason: String| {
            let at = if field.is_empty() {
                key.clone()
            } else {
                format!("{key}.{field}")
            };
            errors.push(file, at, reason)
        };
        let every_secs = seconds(&spec.every, false).unwrap_or_else(|| {
            err(
                "every",
                format!("'{}' is not a duration like 15m, 1h or 1d", spec.every),
            );
            0
        });
        let misplaced = |fields: &[(&str, bool)]| -> Vec<String> {
            fields
                .iter()
                .filter(|(_, set)| *set)
                .map(|(f, _)| f.to_string())
                .collect()
        };
        let check = match spec.kind {
            AlertKind::Kpi => {
                for f in misplaced(&[
                    ("model", spec.model.is_some()),
                    ("where", spec.condition.is_some()),
                    ("key", spec.key.is_some()),
                    ("owner", spec.owner.is_some()),
                    ("show", !spec.show.is_empty()),
                ]) {
                    err(&f, "only for kind: record".into());
                }
                kpi_check(catalog, spec, &mut err)
            }
            AlertKind::Record => {
                for f in misplaced(&[
                    ("metric", spec.metric.is_some()),
                    ("for_each", spec.for_each.is_some()),
                    ("grain", spec.grain.is_some()),
                    ("when", spec.when.is_some()),
                    ("pending", spec.pending.is_some()),
                ]) {
                    err(&f, "only for kind: kpi".into());
                }
                record_check(catalog, spec, &mut err)
            }
        };
        if let Some(check) = check
            && errors.0.len() == before
        {
            out.insert(
                name.to_string(),
                AlertRule {
                    name: name.to_string(),
                    file: file.to_string(),
                    label: spec.label.clone().unwrap_or_default(),
                    description: spec.description.clone(),
                    severity: spec.severity,
                    every_secs,
                    check,
                },
            );
        }
    }
    errors.check()?;
    Ok(out)
}

/// The hierarchy levels from the top down to `level` (just `[level]` outside any hierarchy).
fn path_to(catalog: &Catalog, level: &str) -> Vec<String> {
    catalog
        .hierarchies
        .values()
        .find_map(|levels| {
            levels
                .iter()
                .position(|l| l == level)
                .map(|i| levels[..=i].to_vec())
        })
        .unwrap_or_else(|| vec![level.to_string()])
}

fn kpi_check(
    catalog: &Catalog,
    spec: &AlertSpec,
    err: &mut impl FnMut(&str, String),
) -> Option<AlertCheck> {
    let Some(metric_name) = &spec.metric else {
        err("metric", "required for kind: kpi".into());
        return None;
    };
    let Some(metric) = catalog.metrics.get(metric_name) else {
        err("metric", format!("unknown metric '{metric_name}'"));
        return None;
    };
    if metric.definition.is_shaped() {
        err(
            "metric",
            format!("'{metric_name}' is not one number per period (funnels and cohorts are not)"),
        );
        return None;
    }
    let models = catalog.models_of(metric_name);
    let path = match &spec.for_each {
        None => Vec::new(),
        Some(level) => {
            let path = path_to(catalog, level);
            for l in &path {
                let available = catalog
                    .dimensions
                    .get(l)
                    .is_some_and(|d| models.iter().all(|m| d.models.contains(m)));
                if !available {
                    err(
                        "for_each",
                        format!("'{metric_name}' cannot be sliced by '{l}'"),
                    );
                    return None;
                }
            }
            path
        }
    };
    if !models.iter().all(|m| catalog.models[m].time.is_some()) {
        err(
            "metric",
            format!("'{metric_name}' has no time axis to take a period of"),
        );
        return None;
    }
    let condition = match &spec.when {
        None => {
            err(
                "when",
                "required: { above: x }, { below: x }, { up_pct: x } or { down_pct: x }".into(),
            );
            return None;
        }
        Some(w) => condition(w, err)?,
    };
    if let Condition::UpPct { vs, .. } | Condition::DownPct { vs, .. } = &condition
        && *vs == Comparison::YearStart
        && let Some(flow) = catalog.flow_measure_of(metric_name)
    {
        err(
            "when.vs",
            format!(
                "year_start compares a balance with the end of last year; '{metric_name}' reads '{flow}', a flow: use same_period_last_year"
            ),
        );
        return None;
    }
    let pending_secs = match &spec.pending {
        None => 0,
        Some(p) => seconds(p, true).or_else(|| {
            err(
                "pending",
                format!("'{p}' is not a duration like 0m, 2h or 1d"),
            );
            None
        })?,
    };
    Some(AlertCheck::Kpi {
        metric: metric_name.clone(),
        for_each: spec.for_each.clone(),
        path,
        grain: spec.grain.unwrap_or(Grain::Month),
        condition,
        pending_secs,
    })
}

fn condition(w: &KpiCondition, err: &mut impl FnMut(&str, String)) -> Option<Condition> {
    let set: Vec<(&str, f64)> = [
        ("above", w.above),
        ("below", w.below),
        ("up_pct", w.up_pct),
        ("down_pct", w.down_pct),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let [(op, value)] = set.as_slice() else {
        err(
            "when",
            format!(
                "give exactly one of above, below, up_pct, down_pct (found {})",
                set.len()
            ),
        );
        return None;
    };
    if !value.is_finite() {
        err(&format!("when.{op}"), "must be a finite number".into());
        return None;
    }
    let vs = w.vs.unwrap_or(Comparison::PreviousPeriod);
    match *op {
        "above" | "below" if w.vs.is_some() => {
            err("when.vs", format!("only with up_pct or down_pct, not {op}"));
            None
        }
        "above" => Some(Condition::Above(*value)),
        "below" => Some(Condition::Below(*value)),
        _ if *value <= 0.0 => {
            err(&format!("when.{op}"), "a percentage above 0".into());
            None
        }
        "up_pct" => Some(Condition::UpPct { pct: *value, vs }),
        _ => Some(Condition::DownPct { pct: *value, vs }),
    }
}

fn record_check(
    catalog: &Catalog,
    spec: &AlertSpec,
    err: &mut impl FnMut(&str, String),
) -> Option<AlertCheck> {
    let (Some(model_name), Some(sql), Some(key), Some(owner)) =
        (&spec.model, &spec.condition, &spec.key, &spec.owner)
    else {
        for (f, set) in [
            ("model", spec.model.is_some()),
            ("where", spec.condition.is_some()),
            ("key", spec.key.is_some()),
            ("owner", spec.owner.is_some()),
        ] {
            if !set {
                err(f, "required for kind: record".into());
            }
        }
        return None;
    };
    let Some(model) = catalog.models.get(model_name) else {
        err("model", format!("unknown model '{model_name}'"));
        return None;
    };
    let schema = match DFSchema::try_from(model.schema.as_ref().clone()) {
        Ok(s) => s,
        Err(e) => {
            err("model", first_line(&e));
            return None;
        }
    };
    let column = |c: &str| model.schema.field_with_name(c).is_ok();
    let mut ok = true;
    if !column(key) {
        err("key", format!("model '{model_name}' has no column '{key}'"));
        ok = false;
    }
    if !model.dimensions.contains_key(owner) {
        err(
            "owner",
            format!("'{owner}' is not a dimension of model '{model_name}'"),
        );
        ok = false;
    }
    if model.personal.contains_key(key.as_str()) {
        err(
            "key",
            format!(
                "column '{key}' is personal data: a task's key is shown to everyone who sees the task"
            ),
        );
        ok = false;
    }
    for (i, c) in spec.show.iter().enumerate() {
        if !column(c) {
            err(
                &format!("show[{i}]"),
                format!("model '{model_name}' has no column '{c}'"),
            );
            ok = false;
        } else if model.personal.contains_key(c.as_str()) {
            err(
                &format!("show[{i}]"),
                format!(
                    "column '{c}' is personal data: tasks are stored and listed unmasked, so it cannot be shown"
                ),
            );
            ok = false;
        }
    }
    let condition = match catalog.plans.parse_expr(sql, &schema) {
        Ok(e) if let Some(col) = crate::catalog::tested_column(&e, &model.personal) => {
            err(
                "where",
                format!(
                    "column '{col}' is personal data: a rule may not select rows by its values (only IS NULL / IS NOT NULL)"
                ),
            );
            None
        }
        Ok(e) => match e.get_type(&schema) {
            Ok(datafusion::arrow::datatypes::DataType::Boolean) => Some(e),
            Ok(t) => {
                err("where", format!("'{sql}' is {t}, not a condition"));
                None
            }
            Err(e) => {
                err(
                    "where",
                    format!("invalid condition '{sql}': {}", first_line(&e)),
                );
                None
            }
        },
        Err(e) => {
            err(
                "where",
                format!("invalid condition '{sql}': {}", first_line(&e)),
            );
            None
        }
    };
    let path = path_to(catalog, owner)
        .into_iter()
        .filter(|l| model.dimensions.contains_key(l))
        .collect();
    Some(AlertCheck::Record {
        model: model_name.clone(),
        condition: condition.filter(|_| ok)?,
        condition_sql: sql.clone(),
        key: key.clone(),
        owner: owner.clone(),
        path,
        show: spec.show.clone(),
    })
}
