//! Measures: an aggregation over one model's rows, typed against its columns.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::Builder;
use crate::catalog::{CatalogErrors, Measure, Model};
use crate::spec::Aggregation;
use crate::text::first_line;

impl Builder<'_> {
    pub(super) fn build_measures(
        &mut self,
        models: &BTreeMap<String, Model>,
    ) -> Result<BTreeMap<String, Measure>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut out = BTreeMap::new();
        for (name, d) in &self.measures {
            let spec = d.spec;
            let key = format!("measures.{name}");
            let Some(model) = models.get(&spec.model) else {
                errors.push(
                    d.file,
                    format!("{key}.model"),
                    format!("unknown model '{}'", spec.model),
                );
                continue;
            };
            let df_schema = match DFSchema::try_from(model.schema.as_ref().clone()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(d.file, &key, e.to_string());
                    continue;
                }
            };
            let parse =
                |sql: &str, field: &str, errors: &mut CatalogErrors| -> Option<(Expr, DataType)> {
                    let parsed = self
                        .plans
                        .parse_expr(sql, &df_schema)
                        .and_then(|e| e.get_type(&df_schema).map(|t| (e, t)));
                    match parsed {
                        Ok(x) => Some(x),
                        Err(e) => {
                            errors.push(
                                d.file,
                                format!("{key}.{field}"),
                                format!("invalid expression '{sql}': {}", first_line(&e)),
                            );
                            None
                        }
                    }
                };
            let input = match (&spec.expr, spec.agg) {
                (None, Aggregation::Count) => Some(datafusion::prelude::lit(1i64)),
                (None, agg) => {
                    errors.push(
                        d.file,
                        format!("{key}.expr"),
                        format!("required for agg '{agg}'"),
                    );
                    None
                }
                (Some(sql), agg) => parse(sql, "expr", &mut errors).and_then(|(e, t)| {
                    let needs_number = matches!(agg, Aggregation::Sum | Aggregation::Avg);
                    if needs_number && !t.is_numeric() {
                        errors.push(
                            d.file,
                            format!("{key}.expr"),
                            format!("'{sql}' is {t}; agg '{agg}' needs a number"),
                        );
                        None
                    } else {
                        Some(e)
                    }
                }),
            };
            let filter = spec.filter.as_deref().and_then(|sql| {
                parse(sql, "where", &mut errors).and_then(|(e, t)| {
                    if t == DataType::Boolean {
                        Some(e)
                    } else {
                        errors.push(
                            d.file,
                            format!("{key}.where"),
                            format!("'{sql}' is {t}, not a boolean predicate"),
                        );
                        None
                    }
                })
            });
            // Personal data may be counted, never summed, averaged, picked or filtered on: each
            // of those can give a value (or whether one exists) away.
            let personal = |e: &Expr| {
                e.column_refs()
                    .into_iter()
                    .find(|c| model.personal.contains_key(c.name()))
                    .map(|c| c.name().to_string())
            };
            if let Some(input) = &input
                && !matches!(spec.agg, Aggregation::Count | Aggregation::CountDistinct)
                && let Some(col) = personal(input)
            {
                errors.push(
                    d.file,
                    format!("{key}.expr"),
                    format!(
                        "column '{col}' is personal data: a measure may only count it (count, count_distinct), agg '{}' would show it",
                        spec.agg
                    ),
                );
            }
            if let Some(col) = filter
                .as_ref()
                .and_then(|f| crate::catalog::tested_column(f, &model.personal))
            {
                errors.push(
                    d.file,
                    format!("{key}.where"),
                    format!("column '{col}' is personal data: a measure may not filter on its values (only IS NULL / IS NOT NULL)"),
                );
            }
            let snapshot = spec.semi_additive.as_ref().map(|s| s.pick);
            if snapshot.is_some() && model.time.is_none() {
                errors.push(
                    d.file,
                    format!("{key}.semi_additive"),
                    format!(
                        "model '{}' has no time column to take snapshots over",
                        model.name
                    ),
                );
            }
            if snapshot == Some(crate::spec::SnapshotPick::Average)
                && !matches!(spec.agg, Aggregation::Sum | Aggregation::Count)
            {
                errors.push(
                    d.file,
                    format!("{key}.semi_additive.pick"),
                    format!(
                        "an average averages the per-date totals: agg must be sum or count, not '{}'",
                        spec.agg
                    ),
                );
            }
            if let Some(input) = input {
                out.insert(
                    name.to_string(),
                    Measure {
                        name: name.to_string(),
                        model: model.name.clone(),
                        agg: spec.agg,
                        input,
                        filter,
                        snapshot,
                        combine: None,
                    },
                );
            }
        }
        errors.check()?;
        Ok(out)
    }
}
