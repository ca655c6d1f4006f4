//! Row listings next to the metric queries: the members of a hierarchy level (for filter pickers
//! and drill menus) and drill-through to a model's underlying rows, paged. Both take their
//! filters through the same typed validation as queries.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, cast, when};
use datafusion::prelude::{ident, lit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ErrorKind, QueryError};
use super::planner::{df_err, filtered_rows, range_expr};
use super::validate::{
    QueryLimits, check_dimension, member_filter, scope_filters, type_name, typed_filters,
};
use crate::catalog::{Catalog, DimensionBinding, Model};
use crate::protocol::{DrillRequest, FilterRequest, OrderRequest, TimeRequest};
use crate::security::{Principal, Scope};
use crate::semantic::calendar::CalendarConfig;
use crate::spec::Mask;
use crate::text::clip;

/// Most members one listing returns.
pub const MAX_MEMBERS: usize = 10_000;
pub const MAX_PAGE_SIZE: usize = 1_000;
/// The furthest a drill-through page may start: past any table a bank has, and far from overflow
/// in the engine's offset arithmetic.
pub const MAX_OFFSET: usize = 1_000_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct Members {
    pub hierarchy: String,
    pub level: String,
    pub members: Vec<Value>,
    pub truncated: bool,
}

/// The plan listing the members of `level` under the given ancestors (`path`: level -> member),
/// in a column `member`.
pub async fn members(
    catalog: &Catalog,
    hierarchy: &str,
    level: &str,
    path: &BTreeMap<String, Value>,
    scope: &Scope,
) -> Result<DataFrame, QueryError> {
    let levels = hierarchy_levels(catalog, hierarchy, "hierarchy")?;
    let depth = levels.iter().position(|l| l == level).ok_or_else(|| {
        QueryError::invalid(format!(
            "'{}' is not a level of hierarchy '{hierarchy}' ({})",
            clip(level),
            levels.join(" > ")
        ))
        .at("level")
    })?;
    let mut filters = Vec::new();
    for (key, value) in path {
        if !levels[..depth].contains(key) {
            return Err(QueryError::invalid(format!(
                "'{}' is not a level above '{level}' in '{hierarchy}'",
                clip(key)
            ))
            .at(clip(key)));
        }
        filters.push(member_filter(catalog, key, value, key)?);
    }
    let needed: Vec<String> = [level.to_string()]
        .into_iter()
        .chain(path.keys().cloned())
        .collect();
    distinct_members(catalog, level, &needed, &filters, None, scope).await
}

/// The distinct values of a dimension in the rows of some models (for a filter picker: the
/// models its panels read; `product` of loans is not `product` of deposits), in a column `member`.
pub async fn dimension_members(
    catalog: &Catalog,
    dimension: &str,
    models: &BTreeSet<String>,
    scope: &Scope,
) -> Result<DataFrame, QueryError> {
    distinct_members(
        catalog,
        dimension,
        &[dimension.to_string()],
        &[],
        Some(models),
        scope,
    )
    .await
}

async fn distinct_members(
    catalog: &Catalog,
    level: &str,
    needed: &[String],
    filters: &[super::validate::Filter],
    among: Option<&BTreeSet<String>>,
    scope: &Scope,
) -> Result<DataFrame, QueryError> {
    // Only members inside the principal's scope: the model must reach the scope's levels too.
    let needed: Vec<String> = needed.iter().chain(scope.0.keys()).cloned().collect();
    // The model that holds the level as a column (its home), else any that reaches all levels.
    let model = catalog
        .models
        .values()
        .filter(|m| among.is_none_or(|a| a.contains(&m.name)))
        .filter(|m| needed.iter().all(|d| m.dimensions.contains_key(d)))
        .min_by_key(|m| !matches!(m.dimensions[level], DimensionBinding::Column(_)))
        .ok_or_else(|| {
            QueryError::invalid(format!(
                "no model provides '{level}' together with {:?}",
                &needed[1..]
            ))
        })?;
    let mut filters = filters.to_vec();
    filters.extend(scope_filters(
        catalog,
        scope,
        &BTreeSet::from([model.name.clone()]),
        &[],
    )?);
    // A measure rollup of that model holds one group per combination of its dimensions present
    // in the model's rows: the same members, without the model's scan and joins.
    let read: BTreeSet<&String> = needed
        .iter()
        .chain(filters.iter().map(|f| &f.dimension))
        .collect();
    let model = catalog
        .rollups
        .values()
        .filter(|r| {
            r.base == model.name
                && matches!(r.form, crate::catalog::RollupForm::Measures { .. })
                && read.iter().all(|d| r.dimensions.contains(*d))
        })
        .min_by_key(|r| r.rows)
        .map_or(model, |r| &r.model);
    let (df, exprs) = filtered_rows(catalog, model, &[level.to_string()], &filters).await?;
    let data_type = catalog.dimensions[level].data_type.clone();
    let df = df
        .select(vec![cast(exprs[level].clone(), data_type).alias("member")])
        .and_then(|d| d.distinct())
        .and_then(|d| d.sort(vec![ident("member").sort(true, false)]))
        .and_then(|d| d.limit(0, Some(MAX_MEMBERS + 1)))
        .map_err(df_err)?;
    Ok(df)
}

/// `POST /api/v1/drill_through`: a model's own rows behind a number, paged.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DrillThroughRequest {
    /// A model that declares `drill_through` columns.
    pub model: String,
    /// Ancestors in a hierarchy, down to the leaf if wanted: `{region: 西北, ..., customer: 42}`.
    #[serde(default)]
    pub drill: Option<DrillRequest>,
    #[serde(default)]
    pub filters: Vec<FilterRequest>,
    /// `from`/`to` on the model's time column.
    #[serde(default)]
    pub time: Option<TimeRequest>,
    /// 1-based.
    #[serde(default = "first_page")]
    pub page: usize,
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// By drill-through columns; default: the first column.
    #[serde(default)]
    pub order: Vec<OrderRequest>,
}

fn first_page() -> usize {
    1
}

fn default_page_size() -> usize {
    50
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillThroughColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    /// How coded values are shown (码值), where the column is a labelled dimension's.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub value_labels: std::collections::BTreeMap<String, crate::spec::Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillThroughPage {
    pub model: String,
    /// The model's label: what the rows are (客户明细, loans...).
    pub label: crate::spec::Label,
    pub columns: Vec<DrillThroughColumn>,
    pub rows: Vec<Vec<Value>>,
    /// Rows matching, over all pages.
    pub total: u64,
    pub page: usize,
    pub page_size: usize,
}

/// The page plan, the total-count plan, and the column list.
pub async fn drill_through(
    catalog: &Catalog,
    req: &DrillThroughRequest,
    limits: &QueryLimits,
    calendar: &CalendarConfig,
    principal: &Principal,
) -> Result<(DataFrame, DataFrame, Vec<String>), QueryError> {
    let model: &Model = catalog.models.get(&req.model).ok_or_else(|| {
        QueryError::new(
            ErrorKind::NotFound,
            "unknown_model",
            format!("unknown model '{}'", clip(&req.model)),
        )
        .at("model")
    })?;
    if model.drill_through.is_empty() {
        return Err(QueryError::new(
            ErrorKind::Invalid,
            "not_drillable",
            format!(
                "model '{}' does not declare drill_through columns, so its rows are not listed",
                model.name
            ),
        )
        .at("model"));
    }
    if req.page == 0 {
        return Err(QueryError::invalid("page is 1-based").at("page"));
    }
    // Checked: the page and its size are the client's, and their product is the scan's offset.
    let offset = (req.page - 1)
        .checked_mul(req.page_size)
        .filter(|o| *o <= MAX_OFFSET)
        .ok_or_else(|| {
            QueryError::invalid(format!(
                "page is past any table: (page - 1) × page_size must be at most {MAX_OFFSET}"
            ))
            .at("page")
        })?;
    if req.page_size == 0 || req.page_size > MAX_PAGE_SIZE {
        return Err(QueryError::invalid(format!(
            "page_size must be between 1 and {MAX_PAGE_SIZE}"
        ))
        .at("page_size"));
    }
    if req.filters.len() > limits.max_filters {
        return Err(QueryError::invalid(format!(
            "at most {} filters per request",
            limits.max_filters
        ))
        .at("filters"));
    }
    let models = BTreeSet::from([model.name.clone()]);
    let mut filters = Vec::new();
    if let Some(d) = &req.drill {
        let levels = hierarchy_levels(catalog, &d.hierarchy, "drill.hierarchy")?;
        for (key, value) in &d.path {
            let field = format!("drill.path.{}", clip(key));
            if !levels.contains(key) {
                return Err(QueryError::invalid(format!(
                    "'{}' is not a level of hierarchy '{}'",
                    clip(key),
                    d.hierarchy
                ))
                .at(field));
            }
            check_dimension(catalog, key, &models, &[], &field)?;
            filters.push(member_filter(catalog, key, value, &field)?);
        }
    }
    filters.extend(typed_filters(catalog, &req.filters, &models, &[], limits)?);
    filters.extend(scope_filters(catalog, &principal.scope, &models, &[])?);
    // Personal data shows unmasked only to a role that may see it.
    let mask = |c: &crate::spec::DrillColumnSpec| c.mask().filter(|_| !principal.personal_data);
    let names: Vec<String> = model
        .drill_through
        .iter()
        .map(|c| c.column().to_string())
        .collect();
    for (i, o) in req.order.iter().enumerate() {
        // Not by a masked column: the order would tell what the mask hides.
        let orderable = model
            .drill_through
            .iter()
            .any(|c| c.column() == o.by && c.mask().is_none());
        if !orderable {
            return Err(QueryError::invalid(format!(
                "cannot order by '{}': order by an unmasked drill-through column ({})",
                clip(&o.by),
                model
                    .drill_through
                    .iter()
                    .filter(|c| c.mask().is_none())
                    .map(|c| c.column())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .at(format!("order[{i}].by")));
        }
    }

    let (mut df, _) = filtered_rows(catalog, model, &[], &filters).await?;
    if let (Some(t), Some(time)) = (&model.time, &req.time) {
        let until = time.to.and_then(|d| d.succ_opt());
        if let Some(r) = range_expr(ident(&t.column), &t.data_type, time.from, until, calendar)? {
            df = df.filter(r).map_err(df_err)?;
        }
    }
    let df = df
        .select(
            model
                .drill_through
                .iter()
                .map(|c| masked(ident(c.column()), mask(c)).alias(c.column()))
                .collect::<Vec<_>>(),
        )
        .map_err(df_err)?;
    let total = df
        .clone()
        .aggregate(vec![], vec![count(lit(1i64)).alias("total")])
        .map_err(df_err)?;
    let order: Vec<_> = if req.order.is_empty() {
        vec![ident(&names[0]).sort(true, false)]
    } else {
        req.order
            .iter()
            .map(|o| ident(&o.by).sort(!o.desc, false))
            .collect()
    };
    let page = df
        .sort(order)
        .and_then(|d| d.limit(offset, Some(req.page_size)))
        .map_err(df_err)?;
    Ok((page, total, names))
}

/// Personal data as a drill-through shows it, masked inside the plan (nulls stay null). A part
/// is shown only where the value is long enough that more stays hidden than is shown: a short
/// phone or ID number is all stars, a one-character name a star.
pub(super) fn masked(column: Expr, mask: Option<Mask>) -> Expr {
    use datafusion::functions::string::expr_fn::{concat, repeat};
    use datafusion::functions::unicode::expr_fn::{character_length, left, right};
    let length = || character_length(column.clone());
    // `shown` when the value has at least `min` characters, else `hidden`.
    let at_least = |min: i64, shown: Expr, hidden: Expr| {
        when(length().gt_eq(lit(min)), shown)
            .otherwise(hidden)
            .expect("a CASE with one branch")
    };
    let shown = match mask {
        None => return column,
        Some(Mask::Name) => at_least(
            2,
            concat(vec![
                left(column.clone(), lit(1i64)),
                repeat(lit("*"), length() - lit(1i64)),
            ]),
            lit("*"),
        ),
        // 138****5678: a mobile number has 11 digits.
        Some(Mask::Phone) => at_least(
            11,
            concat(vec![
                left(column.clone(), lit(3i64)),
                lit("****"),
                right(column.clone(), lit(4i64)),
            ]),
            lit("****"),
        ),
        // 110101********1234: a resident ID has 15 or 18 characters.
        Some(Mask::IdNumber) => at_least(
            15,
            concat(vec![
                left(column.clone(), lit(6i64)),
                lit("********"),
                right(column.clone(), lit(4i64)),
            ]),
            lit("********"),
        ),
        Some(Mask::All) => lit("***"),
    };
    when(column.is_null(), lit(ScalarValue::Utf8(None)))
        .otherwise(shown)
        .expect("a CASE with one branch")
}

/// A listing's columns of `model`: their types, and the value labels of the dimensions they are.
pub fn column_types(
    catalog: &Catalog,
    model: &str,
    df_schema: &datafusion::common::DFSchema,
    names: &[String],
) -> Vec<DrillThroughColumn> {
    names
        .iter()
        .map(|n| DrillThroughColumn {
            name: n.clone(),
            data_type: df_schema
                .field_with_unqualified_name(n)
                .map(|f| type_name(f.data_type()))
                .unwrap_or("string"),
            value_labels: catalog
                .dimension_of_column(model, n)
                .map(|d| d.value_labels.clone())
                .unwrap_or_default(),
        })
        .collect()
}

fn hierarchy_levels<'a>(
    catalog: &'a Catalog,
    name: &str,
    field: &str,
) -> Result<&'a Vec<String>, QueryError> {
    catalog.hierarchies.get(name).ok_or_else(|| {
        QueryError::new(
            ErrorKind::NotFound,
            "unknown_hierarchy",
            format!("unknown hierarchy '{}'", clip(name)),
        )
        .at(field)
    })
}

/// A query-string value as JSON: numbers and booleans as such, anything else as a string.
pub fn param_value(s: &str, t: &DataType) -> Value {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Value::String(s.to_string()),
        _ => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string())),
    }
}
