//! `GET /api/v1/customers/{id}`: the 360° customer view. The first section (the customer's own
//! row, in the viewer's scope) decides whether there is a customer to show; the others then run
//! together over the same data state.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use futures::future::try_join_all;
use serde_json::Value;

use super::{KpiService, RequestContext};
use crate::catalog::ProfileSection;
use crate::security::Principal;
use crate::semantic::profile::{
    self, CustomerProfile, SectionRows, TimelineEvent, column_views, output_names,
};
use crate::semantic::{ColumnRole, OutputColumn, QueryError, json_value, rows_of};
use crate::spec::profile::SectionShow;
use crate::state::DataState;

impl KpiService {
    pub async fn customer_profile(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<CustomerProfile, QueryError> {
        let current = self.state();
        let spec = current
            .catalog()
            .profile
            .as_ref()
            .ok_or_else(profile::no_profile)?;
        let key = profile::key_value(spec, id)?;
        let models: BTreeSet<String> = spec.sections.iter().map(|s| s.model.clone()).collect();
        let catalog = self.catalog_for(&models).await?;
        let spec = catalog
            .catalog()
            .profile
            .as_ref()
            .ok_or_else(profile::no_profile)?;
        let request = RequestContext::for_principal(principal);
        let (first, rest) = spec.sections.split_first().expect("validated: sections");
        let card = self
            .section(&catalog, first, &key, principal, &request)
            .await?;
        if card.rows.is_empty() {
            return Err(profile::no_such_customer(id));
        }
        let mut sections = vec![card];
        sections.extend(
            try_join_all(
                rest.iter()
                    .map(|s| self.section(&catalog, s, &key, principal, &request)),
            )
            .await?,
        );
        let timeline = timeline(&sections);
        tracing::info!(customer = %id, sections = sections.len(), "customer_profile");
        Ok(CustomerProfile {
            customer: key_json(&key)?,
            key: spec.key.clone(),
            label: spec.label.clone(),
            sections,
            timeline,
        })
    }

    async fn section(
        &self,
        catalog: &DataState,
        section: &ProfileSection,
        key: &ScalarValue,
        principal: &Principal,
        request: &RequestContext,
    ) -> Result<SectionRows, QueryError> {
        let spec = catalog
            .catalog()
            .profile
            .as_ref()
            .expect("checked by the caller");
        let plan = profile::section_plan(catalog.catalog(), spec, section, key, principal).await?;
        let columns = column_views(section, principal, plan.schema());
        let batches = self.run_listing(catalog, plan, request).await?;
        let names: Vec<OutputColumn> = output_names(section)
            .into_iter()
            .map(|n| OutputColumn::new(n, ColumnRole::Dimension))
            .collect();
        let mut rows = rows_of(&batches, &names);
        let truncated = rows.len() > section.limit;
        rows.truncate(section.limit);
        if section.show == SectionShow::Chart {
            rows.reverse();
        }
        Ok(SectionRows {
            id: section.id.clone(),
            label: section.label.clone(),
            show: section.show,
            model: section.model.clone(),
            columns,
            at: section
                .latest
                .then(|| rows.first().map_or(Value::Null, |r| r[0].clone())),
            rows,
            truncated,
        })
    }
}

/// The rows of the timeline sections as one list, newest first (ISO dates and times sort as
/// text); an event's time is its row's first value.
fn timeline(sections: &[SectionRows]) -> Vec<TimelineEvent> {
    let mut events: Vec<TimelineEvent> = sections
        .iter()
        .filter(|s| s.show == SectionShow::Timeline)
        .flat_map(|s| {
            s.rows.iter().map(|r| TimelineEvent {
                at: r[0].clone(),
                section: s.id.clone(),
                values: r[1..].to_vec(),
            })
        })
        .collect();
    events.sort_by(|a, b| {
        let text = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        text(&b.at).cmp(&text(&a.at))
    });
    events
}

fn key_json(key: &ScalarValue) -> Result<Value, QueryError> {
    let array = key
        .to_array()
        .map_err(|e| QueryError::internal(e.to_string()))?;
    Ok(json_value(array.as_ref(), 0))
}
