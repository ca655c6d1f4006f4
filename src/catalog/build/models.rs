//! Models (their time column, joins, dimensions, drill-through columns), the dimensions they
//! provide, and hierarchies over those dimensions.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, Schema};

use super::Builder;
use crate::catalog::{
    CatalogErrors, Dimension, DimensionBinding, Join, Model, TimeColumn, canonical_type,
    is_identifier, is_temporal,
};
use crate::spec::{Label, Source};

impl Builder<'_> {
    pub(super) async fn build_models(
        &mut self,
        view_reads: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<BTreeMap<String, Model>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut models = BTreeMap::new();
        for (name, d) in &self.models {
            let spec = d.spec;
            let (table, reads) = match spec.source.source() {
                Ok(Source::Sql(view)) => match view_reads.get(view) {
                    Some(r) => (view.to_string(), r.clone()),
                    None => {
                        errors.push(
                            d.file,
                            format!("models.{name}.source.sql"),
                            format!("no SQL model sql/{view}.sql"),
                        );
                        continue;
                    }
                },
                _ => (name.to_string(), BTreeSet::from([name.to_string()])),
            };
            let schema = match self.schemas.get(&table) {
                Some(schema) => schema.clone(),
                None => {
                    errors.push(
                        d.file,
                        format!("models.{name}.source"),
                        format!("no table or view '{table}' was registered"),
                    );
                    continue;
                }
            };
            let column_type = |col: &str| {
                schema
                    .field_with_name(col)
                    .ok()
                    .map(|f| f.data_type().clone())
            };
            let unknown =
                |col: &str| format!("unknown column '{col}' (columns: {})", column_list(&schema));
            // Declared on the file (or on this model) and traced through its SQL model.
            let mut personal = self.personal.get(&table).cloned().unwrap_or_default();
            for (column, mask) in &spec.personal_data {
                if column_type(column).is_none() {
                    errors.push(
                        d.file,
                        format!("models.{name}.personal_data.{column}"),
                        unknown(column),
                    );
                }
                personal.insert(column.clone(), *mask);
            }
            let exposed = |col: &str| {
                personal.get(col).map(|mask| {
                    format!(
                        "column '{col}' is personal data (masked as {}): it can only be listed masked in drill_through",
                        mask.name()
                    )
                })
            };

            let time = match &spec.time {
                None => None,
                Some(col) => match column_type(col) {
                    Some(t) if is_temporal(&t) => Some(TimeColumn {
                        column: col.clone(),
                        data_type: t,
                    }),
                    Some(t) => {
                        errors.push(
                            d.file,
                            format!("models.{name}.time"),
                            format!("column '{col}' is {t}, not a date or timestamp"),
                        );
                        None
                    }
                    None => {
                        errors.push(d.file, format!("models.{name}.time"), unknown(col));
                        None
                    }
                },
            };
            if let Some(pk) = &spec.primary_key
                && column_type(pk).is_none()
            {
                errors.push(d.file, format!("models.{name}.primary_key"), unknown(pk));
            }
            for (i, column) in spec.drill_through.iter().enumerate() {
                let col = column.column();
                if column.mask().is_none()
                    && let Some(mask) = personal.get(col)
                {
                    errors.push(
                        d.file,
                        format!("models.{name}.drill_through[{i}]"),
                        format!(
                            "column '{col}' is personal data: list it masked, {{ column: {col}, mask: {} }}",
                            mask.name()
                        ),
                    );
                }
                if column_type(col).is_none() {
                    errors.push(
                        d.file,
                        format!("models.{name}.drill_through[{i}]"),
                        unknown(col),
                    );
                }
            }
            let materialize = spec.materialize.as_ref().and_then(|m| m.order_by());
            if let Some(order_by) = materialize {
                let key = format!("models.{name}.materialize");
                if !matches!(spec.source.source(), Ok(Source::Sql(_))) {
                    errors.push(
                        d.file,
                        &key,
                        "only a SQL model is materialized (a file source is read as it is)",
                    );
                }
                for (i, col) in order_by.iter().enumerate() {
                    if column_type(col).is_none() {
                        errors.push(d.file, format!("{key}.order_by[{i}]"), unknown(col));
                    }
                }
            }
            let mut joins = BTreeMap::new();
            for (jname, j) in &spec.joins {
                let key = format!("models.{name}.joins.{jname}");
                if column_type(&j.on).is_none() {
                    errors.push(d.file, format!("{key}.on"), unknown(&j.on));
                }
                match self.models.get(j.model.as_str()) {
                    None => errors.push(
                        d.file,
                        format!("{key}.model"),
                        format!("unknown model '{}'", j.model),
                    ),
                    Some(t) if t.spec.primary_key.is_none() => errors.push(
                        d.file,
                        format!("{key}.model"),
                        format!("model '{}' has no primary_key to join on", j.model),
                    ),
                    Some(_) => {}
                }
                joins.insert(
                    jname.clone(),
                    Join {
                        model: j.model.clone(),
                        on: j.on.clone(),
                    },
                );
            }
            let mut dimensions = BTreeMap::new();
            for (dname, dim) in &spec.dimensions {
                let key = format!("models.{name}.dimensions.{dname}");
                if !is_identifier(dname) {
                    errors.push(
                        d.file,
                        &key,
                        "names must be lowercase snake_case ([a-z][a-z0-9_]*)",
                    );
                }
                let binding = match (&dim.column, &dim.via) {
                    (Some(col), None) => {
                        if column_type(col).is_none() {
                            errors.push(d.file, format!("{key}.column"), unknown(col));
                        }
                        if let Some(why) = exposed(col) {
                            errors.push(d.file, format!("{key}.column"), why);
                        }
                        DimensionBinding::Column(col.clone())
                    }
                    (None, Some(via)) => {
                        match via.split_once('.') {
                            Some((join, dimension)) if spec.joins.contains_key(join) => {
                                DimensionBinding::Via {
                                    join: join.to_string(),
                                    dimension: dimension.to_string(),
                                }
                            }
                            Some((join, _)) => {
                                errors.push(d.file, format!("{key}.via"), format!("unknown join '{join}' (declare it under models.{name}.joins)"));
                                continue;
                            }
                            None => {
                                errors.push(
                                    d.file,
                                    format!("{key}.via"),
                                    "expected '<join>.<dimension>'",
                                );
                                continue;
                            }
                        }
                    }
                    _ => {
                        errors.push(d.file, &key, "give exactly one of 'column' or 'via'");
                        continue;
                    }
                };
                dimensions.insert(dname.clone(), binding);
            }
            models.insert(
                name.to_string(),
                Model {
                    name: name.to_string(),
                    label: spec.label.clone().unwrap_or_default(),
                    file: d.file.to_string(),
                    table,
                    schema,
                    time,
                    primary_key: spec.primary_key.clone(),
                    joins,
                    dimensions,
                    reads,
                    drill_through: spec.drill_through.clone(),
                    personal,
                    materialize: materialize.map(<[String]>::to_vec),
                },
            );
        }
        // A SQL model is stored once, however many models read it: one way.
        let mut stored: BTreeMap<&str, (&str, &Option<Vec<String>>)> = BTreeMap::new();
        for (name, model) in &models {
            if !matches!(
                self.models[name.as_str()].spec.source.source(),
                Ok(Source::Sql(_))
            ) {
                continue;
            }
            match stored.get(model.table.as_str()) {
                Some((other, how)) if **how != model.materialize => errors.push(
                    &model.file,
                    format!("models.{name}.materialize"),
                    format!(
                        "model '{other}' reads sql/{}.sql too, materialized otherwise: give both the same materialize",
                        model.table
                    ),
                ),
                _ => {
                    stored.insert(&model.table, (name, &model.materialize));
                }
            }
        }
        errors.check()?;
        // Joins bring the target's data dependencies along.
        let direct: BTreeMap<String, BTreeSet<String>> = models
            .iter()
            .map(|(n, m)| (n.clone(), m.reads.clone()))
            .collect();
        for model in models.values_mut() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<String> = model.joins.values().map(|j| j.model.clone()).collect();
            while let Some(next) = stack.pop() {
                if seen.insert(next.clone()) {
                    model.reads.extend(direct[&next].iter().cloned());
                    stack.extend(
                        self.models[next.as_str()]
                            .spec
                            .joins
                            .values()
                            .map(|j| j.model.clone()),
                    );
                }
            }
        }
        Ok(models)
    }

    /// Follows `via` chains to a column, typing every dimension and rejecting cycles and type
    /// conflicts between models.
    pub(super) fn resolve_dimensions(
        &mut self,
        models: &mut BTreeMap<String, Model>,
    ) -> Result<BTreeMap<String, Dimension>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut dims: BTreeMap<String, Dimension> = BTreeMap::new();
        for (mname, model) in models.iter() {
            for dname in model.dimensions.keys() {
                let file = &model.file;
                let key = format!("models.{mname}.dimensions.{dname}");
                let data_type = match resolve_dimension(models, mname, dname, &mut Vec::new()) {
                    Ok(t) => canonical_type(&t),
                    Err(reason) => {
                        errors.push(file, &key, reason);
                        continue;
                    }
                };
                let spec = &self.models[mname.as_str()].spec.dimensions[dname];
                if !spec.value_labels.is_empty() && data_type != DataType::Utf8 {
                    errors.push(
                        file,
                        format!("{key}.value_labels"),
                        format!("value labels are for coded text values; '{dname}' is {data_type}"),
                    );
                }
                match dims.get_mut(dname) {
                    Some(existing) => {
                        if existing.data_type != data_type {
                            errors.push(file, &key, format!(
                                "type {data_type} differs from {} in model(s) {:?}; one dimension name must mean one type",
                                existing.data_type, existing.models
                            ));
                        }
                        existing.models.insert(mname.clone());
                        if existing.label == Label::default()
                            && let Some(l) = &spec.label
                        {
                            existing.label = l.clone();
                        }
                        for (value, label) in &spec.value_labels {
                            match existing.value_labels.get(value) {
                                Some(other) if other != label => errors.push(
                                    file,
                                    format!("{key}.value_labels.{value}"),
                                    format!(
                                        "labelled differently by another model declaring '{dname}' ({}); one value, one label",
                                        [&other.zh, &other.en].into_iter().flatten().cloned().collect::<Vec<_>>().join(" / ")
                                    ),
                                ),
                                _ => {
                                    existing.value_labels.insert(value.clone(), label.clone());
                                }
                            }
                        }
                    }
                    None => {
                        dims.insert(
                            dname.clone(),
                            Dimension {
                                name: dname.clone(),
                                label: spec.label.clone().unwrap_or_default(),
                                description: spec.description.clone(),
                                data_type,
                                models: BTreeSet::from([mname.clone()]),
                                value_labels: spec.value_labels.clone(),
                            },
                        );
                    }
                }
            }
        }
        errors.check()?;
        // Labels come from whichever model labels the dimension; one nobody labels shows its name.
        for dim in dims.values_mut() {
            if dim.label == Label::default() {
                dim.label = Label {
                    zh: None,
                    en: Some(dim.name.replace('_', " ")),
                };
            }
        }
        Ok(dims)
    }

    pub(super) fn validate_hierarchies(
        &mut self,
        dims: &BTreeMap<String, Dimension>,
    ) -> Result<BTreeMap<String, Vec<String>>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut out = BTreeMap::new();
        for (name, d) in &self.hierarchies {
            if d.spec.is_empty() {
                errors.push(
                    d.file,
                    format!("hierarchies.{name}"),
                    "a hierarchy needs at least one level",
                );
            }
            for (i, level) in d.spec.iter().enumerate() {
                if !dims.contains_key(level) {
                    errors.push(
                        d.file,
                        format!("hierarchies.{name}[{i}]"),
                        format!("unknown dimension '{level}'"),
                    );
                }
                if d.spec[..i].contains(level) {
                    errors.push(
                        d.file,
                        format!("hierarchies.{name}[{i}]"),
                        format!("level '{level}' appears twice"),
                    );
                }
            }
            out.insert(name.to_string(), d.spec.clone());
        }
        errors.check()?;
        Ok(out)
    }
}

/// Follows a dimension through `via` joins to its column; returns the column's type.
fn resolve_dimension(
    models: &BTreeMap<String, Model>,
    model: &str,
    dim: &str,
    stack: &mut Vec<String>,
) -> Result<DataType, String> {
    let here = format!("{model}.{dim}");
    if stack.contains(&here) {
        stack.push(here);
        return Err(format!(
            "dimension 'via' chain forms a cycle: {}",
            stack.join(" -> ")
        ));
    }
    stack.push(here);
    let m = models
        .get(model)
        .ok_or_else(|| format!("unknown model '{model}'"))?;
    match m.dimensions.get(dim) {
        None => Err(format!(
            "model '{model}' has no dimension '{dim}' (reached via {})",
            stack.join(" -> ")
        )),
        Some(DimensionBinding::Column(c)) => Ok(m
            .schema
            .field_with_name(c)
            .map_err(|e| e.to_string())?
            .data_type()
            .clone()),
        Some(DimensionBinding::Via { join, dimension }) => {
            let target = &m.joins[join].model;
            resolve_dimension(models, target, dimension, stack)
        }
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
