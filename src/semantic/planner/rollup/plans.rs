//! Every plan a rollup's rows and checks come from, by form (what a stored copy is matched on),
//! and the plan refreshes trace back to the tables.

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::ident;

use super::churn::{churn_pair_plan, snapshot_dates};
use super::common::df_error;
use super::entities::{cohort_plan, entity_dimension_check, funnel_first_steps, funnel_plan};
use super::measures::{distinct_checks, plan};
use crate::catalog::{Catalog, DefinitionForm, RollupDefinition};
use crate::semantic::QueryError;
use crate::semantic::calendar::CalendarConfig;

/// The rollup's model reduced to its time column (column 0), for a measure or churn rollup:
/// what a refresh traces back to the tables, to tell which of their rows land on which dates.
pub fn time_plan(
    catalog: &Catalog,
    def: &RollupDefinition,
) -> Result<Option<LogicalPlan>, QueryError> {
    if !matches!(
        def.form,
        DefinitionForm::Measures | DefinitionForm::Churn { .. }
    ) {
        return Ok(None);
    }
    let base = &catalog.models[&def.spec.model];
    let Some(t) = &base.time else {
        return Ok(None);
    };
    let df = catalog
        .scan(base)
        .and_then(|s| s.select(vec![ident(&t.column)]))
        .map_err(df_error)?;
    Ok(Some(df.into_unoptimized_plan()))
}

/// Every plan a rollup's rows and checks come from: a stored copy is reused only while these,
/// with the SQL models they read inlined, are what they were (so an edit elsewhere in the
/// definitions keeps it).
pub async fn definition_plans(
    catalog: &Catalog,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
) -> Result<Vec<LogicalPlan>, QueryError> {
    let mut plans = Vec::new();
    match &def.form {
        DefinitionForm::Measures => {
            plans.push(plan(catalog, def, calendar, None).await?);
            plans.extend(
                distinct_checks(catalog, def, None, calendar)?
                    .into_iter()
                    .map(|(_, p)| p),
            );
        }
        DefinitionForm::Churn { .. } => {
            plans.push(snapshot_dates(catalog, def, None, calendar)?);
            plans.push(churn_pair_plan(catalog, def, Default::default()).await?);
        }
        DefinitionForm::Funnel { .. } => {
            plans.push(entity_dimension_check(catalog, def).await?);
            plans.push(funnel_first_steps(catalog, def).await?);
            plans.push(funnel_plan(catalog, def).await?);
        }
        DefinitionForm::Cohort { .. } => {
            plans.push(entity_dimension_check(catalog, def).await?);
            plans.push(cohort_plan(catalog, def, calendar).await?);
        }
    }
    Ok(plans)
}
