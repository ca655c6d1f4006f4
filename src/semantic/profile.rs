//! The 360° customer view's plans: for each section of the catalog's `profile`, the customer's
//! rows in the section's model, narrowed to the viewer's scope, personal data masked for roles
//! without `personal_data`. The service runs them and assembles the page.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{ident, lit};
use serde::Serialize;
use serde_json::Value;

use super::error::{ErrorKind, QueryError};
use super::listing::masked;
use super::planner::{df_err, filtered_rows};
use super::validate::{scope_filters, type_name};
use crate::catalog::{Catalog, Profile, ProfileSection};
use crate::security::Principal;
use crate::spec::profile::SectionShow;
use crate::spec::{FormatSpec, Label};
use crate::text::clip;

/// `GET /api/v1/customers/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerProfile {
    /// The customer's id, as the key column holds it.
    pub customer: Value,
    pub key: String,
    pub label: Label,
    pub sections: Vec<SectionRows>,
    /// The rows of every `timeline` section, newest first.
    pub timeline: Vec<TimelineEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SectionRows {
    pub id: String,
    pub label: Label,
    pub show: SectionShow,
    pub model: String,
    /// The model's time column first (charts, timelines, tables over a model with one).
    pub columns: Vec<ProfileColumnView>,
    /// Charts oldest first; tables and timelines newest first.
    pub rows: Vec<Vec<Value>>,
    /// More rows than the section's `limit` matched: the oldest were left out.
    pub truncated: bool,
    /// `latest` tables: the time the rows are at (none: the customer has no rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileColumnView {
    pub name: String,
    pub label: Label,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSpec>,
    /// Shown masked to this viewer.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
    /// How coded values are shown (码值), where the column is a labelled dimension.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub value_labels: std::collections::BTreeMap<String, Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub at: Value,
    /// The section the event comes from (`tickets`).
    pub section: String,
    /// The section's columns after its time column.
    pub values: Vec<Value>,
}

/// The same answer for a customer that does not exist and one outside the viewer's scope, so
/// that the answer tells nothing of customers one may not see.
pub fn no_such_customer(id: &str) -> QueryError {
    QueryError::new(
        ErrorKind::NotFound,
        "unknown_customer",
        format!("no customer '{}'", clip(id)),
    )
    .at("id")
}

pub fn no_profile() -> QueryError {
    QueryError::new(
        ErrorKind::NotFound,
        "no_profile",
        "the project declares no customer view (profile: in metrics/*.yaml)",
    )
}

/// The id in the request path as the key column's value.
pub fn key_value(profile: &Profile, id: &str) -> Result<ScalarValue, QueryError> {
    ScalarValue::try_from_string(id.to_string(), &profile.key_type)
        .ok()
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            QueryError::invalid(format!(
                "'{}' is not a customer id: '{}' holds {} values",
                clip(id),
                profile.key,
                type_name(&profile.key_type)
            ))
            .at("id")
        })
}

/// The customer's rows of a section's model within the viewer's scope, with the columns shown
/// (the time column as `__time`).
async fn customer_rows(
    catalog: &Catalog,
    profile: &Profile,
    section: &ProfileSection,
    key: &ScalarValue,
    principal: &Principal,
) -> Result<DataFrame, QueryError> {
    let model = &catalog.models[&section.model];
    let scope = scope_filters(
        catalog,
        &principal.scope,
        &BTreeSet::from([model.name.clone()]),
        &[],
    )?;
    let dims: Vec<String> = section
        .columns
        .iter()
        .filter(|c| c.dimension)
        .map(|c| c.name.clone())
        .collect();
    let (df, exprs) = filtered_rows(catalog, model, &dims, &scope).await?;
    let mut select: Vec<Expr> = section
        .time
        .iter()
        .map(|t| ident(t).alias("__time"))
        .collect();
    for c in &section.columns {
        let value = if c.dimension {
            cast(
                exprs[&c.name].clone(),
                catalog.dimensions[&c.name].data_type.clone(),
            )
        } else {
            masked(ident(&c.name), c.mask.filter(|_| !principal.personal_data))
        };
        select.push(value.alias(&c.name));
    }
    df.filter(ident(&profile.key).eq(lit(key.clone())))
        .and_then(|d| d.select(select))
        .map_err(df_err)
}

/// The plan of a section's rows: newest first where the model has a time (`limit` + 1 rows, to
/// tell whether there were more); for a `latest` table only those at the latest time the
/// customer has rows at.
pub async fn section_plan(
    catalog: &Catalog,
    profile: &Profile,
    section: &ProfileSection,
    key: &ScalarValue,
    principal: &Principal,
) -> Result<DataFrame, QueryError> {
    let mut df = customer_rows(catalog, profile, section, key, principal).await?;
    if section.latest {
        let latest = df
            .clone()
            .aggregate(vec![], vec![max(ident("__time")).alias("__latest")])
            .map_err(df_err)?;
        let names: Vec<Expr> = output_names(section).iter().map(ident).collect();
        df = df
            .join_on(
                latest,
                datafusion::logical_expr::JoinType::Inner,
                vec![ident("__time").eq(ident("__latest"))],
            )
            .and_then(|d| d.select(names))
            .map_err(df_err)?;
    }
    let order = match (&section.time, section.columns.first()) {
        (Some(_), _) => vec![ident("__time").sort(false, false)],
        (None, Some(first)) => vec![ident(&first.name).sort(true, false)],
        (None, None) => vec![],
    };
    // Then by the unmasked columns, so equal times list in one order every time.
    let tie_break = section
        .columns
        .iter()
        .filter(|c| c.mask.is_none())
        .map(|c| ident(&c.name).sort(true, false));
    df.sort(order.into_iter().chain(tie_break).collect())
        .and_then(|d| d.limit(0, Some(section.limit + 1)))
        .map_err(df_err)
}

/// The columns a section's rows come back with, for the response.
pub fn column_views(
    section: &ProfileSection,
    principal: &Principal,
    schema: &datafusion::common::DFSchema,
) -> Vec<ProfileColumnView> {
    let time = section.time.as_ref().map(|t| ProfileColumnView {
        name: t.clone(),
        label: section.time_label.clone(),
        data_type: schema
            .field_with_unqualified_name("__time")
            .map(|f| type_name(f.data_type()))
            .unwrap_or("string"),
        format: None,
        masked: false,
        value_labels: Default::default(),
    });
    time.into_iter()
        .chain(section.columns.iter().map(|c| {
            ProfileColumnView {
                name: c.name.clone(),
                label: c.label.clone(),
                data_type: match c.mask.filter(|_| !principal.personal_data) {
                    Some(_) => "string",
                    None => schema
                        .field_with_unqualified_name(&c.name)
                        .map(|f| type_name(f.data_type()))
                        .unwrap_or("string"),
                },
                format: c.format.clone(),
                masked: c.mask.is_some() && !principal.personal_data,
                value_labels: c.value_labels.clone(),
            }
        }))
        .collect()
}

/// The output column names of a section's plan, in order.
pub fn output_names(section: &ProfileSection) -> Vec<String> {
    section
        .time
        .iter()
        .map(|_| "__time".to_string())
        .chain(section.columns.iter().map(|c| c.name.clone()))
        .collect()
}
