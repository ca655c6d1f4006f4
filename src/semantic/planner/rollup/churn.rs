//! Churn rollups: a churn base's counts for pairs of snapshot dates, built a pair at a time.

use chrono::NaiveDate;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{ident, lit};
use std::collections::BTreeSet;

use super::super::churn;
use super::common::{df_error, rollup_of};
use super::window::DateWindow;
use crate::catalog::{Catalog, DefinitionForm, Rollup, RollupDefinition, RollupForm};
use crate::semantic::QueryError;
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::validate::days_since_epoch;

/// The plan listing a model's distinct snapshot dates (a churn rollup's periods come from them).
pub fn snapshot_dates(
    catalog: &Catalog,
    def: &RollupDefinition,
    window: Option<&DateWindow>,
    calendar: &CalendarConfig,
) -> Result<LogicalPlan, QueryError> {
    let base = &catalog.models[&def.spec.model];
    let t = base
        .time
        .as_ref()
        .expect("validated: churn models have time");
    let within = match window {
        Some(w) => w.filter(ident(&t.column), &t.data_type, calendar),
        None => lit(true),
    };
    let df = super::super::rows::distinct_dates(catalog, base, within, "__snapshot")
        .map_err(df_error)?;
    Ok(df.into_unoptimized_plan())
}

/// The snapshot pairs a churn rollup holds: consecutive period ends at each of its grains.
/// Weeks start on Monday here; a query with another week start finds its pairs or reads the
/// model, never a wrong pair.
pub fn churn_pairs(def: &RollupDefinition, snapshots: &[NaiveDate]) -> Vec<(NaiveDate, NaiveDate)> {
    let DefinitionForm::Churn { grains, .. } = &def.form else {
        return Vec::new();
    };
    let pairs: BTreeSet<(NaiveDate, NaiveDate)> = grains
        .iter()
        .flat_map(|g| churn::needed_pairs(snapshots, None, None, Some(*g), chrono::Weekday::Mon))
        .collect();
    pairs.into_iter().collect()
}

/// The plan computing a churn rollup's rows for one pair of snapshots: built a pair at a time so
/// that only two snapshots are in memory at once.
pub async fn churn_pair_plan(
    catalog: &Catalog,
    def: &RollupDefinition,
    (start, end): (NaiveDate, NaiveDate),
) -> Result<LogicalPlan, QueryError> {
    let DefinitionForm::Churn { base, .. } = def.form else {
        return Err(QueryError::internal("not a churn rollup"));
    };
    let date = |d: NaiveDate| ScalarValue::Date32(Some(days_since_epoch(d)));
    let df = churn::pair_frame(catalog, base, &def.spec.dimensions, date(start), date(end)).await?;
    Ok(df.into_unoptimized_plan())
}

pub fn materialised_churn(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    snapshots: Vec<NaiveDate>,
    pairs: Vec<(NaiveDate, NaiveDate)>,
) -> Rollup {
    let DefinitionForm::Churn { base, .. } = def.form else {
        unreachable!("a churn rollup")
    };
    let form = RollupForm::Churn {
        base,
        snapshots,
        pairs: pairs.into_iter().collect(),
    };
    rollup_of(catalog, def, schema, None, form)
}

pub use super::super::churn::{PAIR_END, PAIR_START};
