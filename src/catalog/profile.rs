//! The 360° customer view (`profile:`) validated against the catalog: every section's model
//! exists, holds the customer key as a column and reaches the org hierarchy (so a scope narrows
//! it), every column shown is one of its columns or dimensions, personal columns carry the mask
//! their table declares.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;

use super::build::Declared;
use super::{Catalog, CatalogErrors, Model, is_identifier};
use crate::spec::profile::{ProfileColumnSpec, ProfileSpec, SectionShow};
use crate::spec::{FormatSpec, Label, Mask};

/// Most rows one section returns.
pub const MAX_SECTION_ROWS: usize = 1_000;
const DEFAULT_SECTION_ROWS: usize = 100;

pub struct Profile {
    pub file: String,
    pub label: Label,
    /// The column naming the customer in every section's model.
    pub key: String,
    /// The key's type (the first section's column): what an id in a request is read as.
    pub key_type: DataType,
    pub sections: Vec<ProfileSection>,
}

pub struct ProfileSection {
    pub id: String,
    pub label: Label,
    pub model: String,
    pub show: SectionShow,
    pub columns: Vec<ProfileColumn>,
    /// The model's time column, for charts, timelines and `latest`; shown first where set.
    pub time: Option<String>,
    /// The time column's label: that of the dimension bound to it, if any.
    pub time_label: Label,
    pub latest: bool,
    pub limit: usize,
}

pub struct ProfileColumn {
    pub name: String,
    /// A dimension of the model (reached through its joins), else one of its own columns.
    pub dimension: bool,
    pub label: Label,
    pub format: Option<FormatSpec>,
    /// Personal data: shown masked so to roles without `personal_data`.
    pub mask: Option<Mask>,
    /// How coded values are shown: the value labels of the dimension the column is.
    pub value_labels: BTreeMap<String, Label>,
}

pub(super) fn validate(
    catalog: &Catalog,
    declared: Option<&Declared<'_, ProfileSpec>>,
) -> Result<Option<Profile>, CatalogErrors> {
    let Some(d) = declared else { return Ok(None) };
    let (file, spec) = (d.file, d.spec);
    let mut errors = CatalogErrors::default();
    let mut err = |key: String, reason: String| errors.push(file, key, reason);
    if spec.sections.is_empty() {
        err(
            "profile.sections".into(),
            "list at least one section: the first shows the customer's own row".into(),
        );
    }
    let org_levels: Vec<&String> = catalog.hierarchies.values().flatten().collect();
    let mut sections = Vec::new();
    let mut key_type = DataType::Null;
    for (i, s) in spec.sections.iter().enumerate() {
        let at = format!("profile.sections[{i}]");
        if !is_identifier(&s.id) {
            err(
                format!("{at}.id"),
                "ids are lowercase snake_case ([a-z][a-z0-9_]*)".into(),
            );
        }
        if spec.sections[..i].iter().any(|p| p.id == s.id) {
            err(format!("{at}.id"), format!("'{}' is used twice", s.id));
        }
        let Some(model) = catalog.models.get(&s.model) else {
            err(
                format!("{at}.model"),
                format!("unknown model '{}'", s.model),
            );
            continue;
        };
        let Ok(key_field) = model.schema.field_with_name(&spec.key) else {
            err(
                format!("{at}.model"),
                format!(
                    "model '{}' has no column '{}' (profile.key) to find the customer's rows by",
                    s.model, spec.key
                ),
            );
            continue;
        };
        if i == 0 {
            key_type = key_field.data_type().clone();
            if s.show != SectionShow::Fields || model.primary_key.as_deref() != Some(&spec.key) {
                err(
                    at.clone(),
                    format!(
                        "the first section is the customer's own row: show: fields, over a model whose primary_key is '{}'",
                        spec.key
                    ),
                );
            }
        }
        if let Some(level) = org_levels
            .iter()
            .find(|l| !model.dimensions.contains_key(l.as_str()))
        {
            err(
                format!("{at}.model"),
                format!(
                    "model '{}' does not reach '{level}': a scope could not narrow it to the viewer's customers",
                    s.model
                ),
            );
        }
        let needs_time = matches!(s.show, SectionShow::Chart | SectionShow::Timeline) || s.latest;
        let time = model.time.as_ref().map(|t| t.column.clone());
        if needs_time && time.is_none() {
            err(
                format!("{at}.model"),
                format!(
                    "model '{}' has no time column, which {} needs",
                    s.model,
                    if s.latest {
                        "latest".to_string()
                    } else {
                        format!("show: {}", s.show.name())
                    }
                ),
            );
        }
        if s.latest && s.show != SectionShow::Table {
            err(format!("{at}.latest"), "only for show: table".into());
        }
        let limit = match (s.show, s.limit) {
            (SectionShow::Fields, None | Some(1)) => 1,
            (SectionShow::Fields, Some(_)) => {
                err(format!("{at}.limit"), "show: fields shows one row".into());
                1
            }
            (_, Some(n)) if n == 0 || n > MAX_SECTION_ROWS => {
                err(
                    format!("{at}.limit"),
                    format!("between 1 and {MAX_SECTION_ROWS}"),
                );
                1
            }
            (_, limit) => limit.unwrap_or(DEFAULT_SECTION_ROWS),
        };
        if s.columns.is_empty() {
            err(format!("{at}.columns"), "list the columns shown".into());
        }
        let mut columns = Vec::new();
        for (j, c) in s.columns.iter().enumerate() {
            let field = format!("{at}.columns[{j}]");
            match column(catalog, model, c, s.show) {
                Ok(column)
                    if columns
                        .iter()
                        .any(|p: &ProfileColumn| p.name == column.name) =>
                {
                    err(field, format!("'{}' is listed twice", column.name))
                }
                Ok(column) if Some(&column.name) == time.as_ref() && needs_time => err(
                    field,
                    format!("'{}' is the time column, shown anyway", column.name),
                ),
                Ok(column) => columns.push(column),
                Err(reason) => err(field, reason),
            }
        }
        sections.push(ProfileSection {
            id: s.id.clone(),
            label: s.label.clone().unwrap_or_else(|| model.label.clone()),
            model: model.name.clone(),
            show: s.show,
            columns,
            time_label: time
                .as_deref()
                .and_then(|t| catalog.dimension_of_column(&model.name, t))
                .map(|d| d.label.clone())
                .unwrap_or_default(),
            time: time.filter(|_| s.show != SectionShow::Fields),
            latest: s.latest,
            limit,
        });
    }
    errors.check()?;
    Ok(Some(Profile {
        file: file.to_string(),
        label: spec.label.clone().unwrap_or_default(),
        key: spec.key.clone(),
        key_type,
        sections,
    }))
}

fn column(
    catalog: &Catalog,
    model: &Model,
    spec: &ProfileColumnSpec,
    show: SectionShow,
) -> Result<ProfileColumn, String> {
    let name = spec.column();
    let (label, format) = match spec {
        ProfileColumnSpec::Name(_) => (None, None),
        ProfileColumnSpec::Described(d) => (d.label.clone(), d.format.clone()),
    };
    let (dimension, data_type, shown_as) = if let Ok(f) = model.schema.field_with_name(name) {
        (
            false,
            f.data_type().clone(),
            catalog.dimension_of_column(&model.name, name),
        )
    } else if let Some(d) = model
        .dimensions
        .get(name)
        .and_then(|_| catalog.dimensions.get(name))
    {
        (true, d.data_type.clone(), Some(d))
    } else {
        return Err(format!(
            "'{name}' is neither a column nor a dimension of model '{}'",
            model.name
        ));
    };
    if show == SectionShow::Chart && !data_type.is_numeric() {
        return Err(format!(
            "'{name}' is not a number: a chart plots numbers over time"
        ));
    }
    Ok(ProfileColumn {
        name: name.to_string(),
        dimension,
        label: label
            .or(shown_as.map(|d| d.label.clone()))
            .unwrap_or_default(),
        format,
        mask: model.personal.get(name).copied(),
        value_labels: shown_as.map(|d| d.value_labels.clone()).unwrap_or_default(),
    })
}
