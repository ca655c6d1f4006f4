//! Listings through the service: dashboard filter options, a model's latest date, record rules'
//! rows, hierarchy members and drill-through pages. Planned in `semantic`, run here under the
//! query time budget, the small ones cached by data version like query results.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use serde_json::Value;

use super::{KpiService, RequestContext};
use crate::cache::CacheKey;
use crate::security::{Principal, Scope};
use crate::semantic::compose::member_values;
use crate::semantic::records::{self, RecordListing};
use crate::semantic::{self, ColumnRole, ErrorKind, QueryError, QueryResult};
use crate::state::DataState;

impl KpiService {
    /// A one-column listing (`member`) cached like a query result: keyed by catalog version,
    /// `name` and the data versions of `tables`, so it is recomputed only when they change. The
    /// plan is built only on a miss.
    pub(super) async fn cached_members(
        &self,
        catalog: &DataState,
        name: String,
        scope: &Scope,
        tables: &BTreeSet<String>,
        df: impl Future<Output = Result<DataFrame, QueryError>>,
        request: &RequestContext,
    ) -> Result<Vec<Value>, QueryError> {
        let key = CacheKey {
            catalog_version: catalog.catalog().version.clone(),
            query: name,
            data: self.data_versions(catalog, tables, request)?,
            scope: scope.key(),
        };
        let compute = async {
            let batches = self.run_listing(catalog, df.await?, request).await?;
            Ok(Arc::new(QueryResult {
                schema: Vec::new(),
                rows: member_values(&batches)
                    .into_iter()
                    .map(|v| vec![v])
                    .collect(),
                totals: None,
                truncated: false,
                drill: None,
                notes: Default::default(),
            }))
        };
        let (result, _) = self.cache.get_or_compute(key, compute).await?;
        Ok(result.rows.iter().map(|r| r[0].clone()).collect())
    }

    /// The members of a dimension a dashboard filter offers: those of the given models, within
    /// the scope, cached by data version.
    pub async fn dimension_options(
        &self,
        catalog: &DataState,
        dimension: &str,
        models: &BTreeSet<String>,
        scope: &Scope,
        request: &RequestContext,
    ) -> Result<Vec<Value>, QueryError> {
        let tables = catalog.catalog().tables_read_by(models.iter());
        let df = semantic::listing::dimension_members(catalog.catalog(), dimension, models, scope);
        self.cached_members(
            catalog,
            format!("members:{dimension}:{models:?}"),
            scope,
            &tables,
            df,
            request,
        )
        .await
    }

    /// The last date a model has rows for (its time column), or None for an empty model.
    pub async fn latest_date(
        &self,
        catalog: &DataState,
        model: &str,
        request: &RequestContext,
    ) -> Result<Option<NaiveDate>, QueryError> {
        let reads = catalog
            .catalog()
            .models
            .get(model)
            .map(|m| m.reads.clone())
            .unwrap_or_default();
        let values = self
            .cached_members(
                catalog,
                format!("latest_date:{model}"),
                &Scope::all(),
                &reads,
                async { records::latest_date(catalog.catalog(), model) },
                request,
            )
            .await?;
        Ok(values
            .first()
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok()))
    }

    /// The rows a record rule lists (the model's rows meeting its condition at the clock's time),
    /// over the data as it is now: at most `limit`, and whether that is all of them. Each row is
    /// key, owner, the path's levels, the shown columns.
    pub async fn records(
        &self,
        listing: &RecordListing<'_>,
        request: &RequestContext,
    ) -> Result<(Vec<Vec<Value>>, bool), QueryError> {
        let catalog = self
            .catalog_for(&BTreeSet::from([listing.model.to_string()]))
            .await?;
        let (df, columns) = records::record_rows(catalog.catalog(), listing).await?;
        let batches = self.run_listing(&catalog, df, request).await?;
        let mut rows = semantic::rows_of(&batches, &columns);
        let complete = rows.len() <= listing.limit;
        rows.truncate(listing.limit);
        Ok((rows, complete))
    }

    /// Members of a hierarchy level under the given ancestors, for filter pickers.
    pub async fn members(
        &self,
        principal: &Principal,
        hierarchy: &str,
        level: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<semantic::listing::Members, QueryError> {
        let catalog = self.state();
        let path: BTreeMap<String, Value> = params
            .iter()
            .map(|(k, v)| {
                let t = catalog
                    .catalog()
                    .dimensions
                    .get(k)
                    .map(|d| d.data_type.clone())
                    .unwrap_or(datafusion::arrow::datatypes::DataType::Utf8);
                (k.clone(), semantic::listing::param_value(v, &t))
            })
            .collect();
        let df = semantic::listing::members(
            catalog.catalog(),
            hierarchy,
            level,
            &path,
            &principal.scope,
        )
        .await?;
        let request = RequestContext::for_principal(principal);
        let mut members = member_values(&self.run_listing(&catalog, df, &request).await?);
        let truncated = members.len() > semantic::listing::MAX_MEMBERS;
        members.truncate(semantic::listing::MAX_MEMBERS);
        Ok(semantic::listing::Members {
            hierarchy: hierarchy.to_string(),
            level: level.to_string(),
            members,
            truncated,
        })
    }

    /// A page of a model's underlying rows (only its declared drill-through columns).
    pub async fn drill_through(
        &self,
        principal: &Principal,
        req: &semantic::listing::DrillThroughRequest,
    ) -> Result<semantic::listing::DrillThroughPage, QueryError> {
        let catalog = self.state();
        let (page, total, names) = semantic::listing::drill_through(
            catalog.catalog(),
            req,
            &self.limits,
            &self.calendar,
            principal,
        )
        .await?;
        let columns_meta =
            semantic::listing::column_types(catalog.catalog(), &req.model, page.schema(), &names);
        let request = RequestContext::for_principal(principal);
        let (rows, total) = tokio::try_join!(
            self.run_listing(&catalog, page, &request),
            self.run_listing(&catalog, total, &request)
        )?;
        let columns: Vec<semantic::OutputColumn> = names
            .iter()
            .map(|n| semantic::OutputColumn::new(n, ColumnRole::Dimension))
            .collect();
        let total = semantic::rows_of(
            &total,
            &[semantic::OutputColumn::new("total", ColumnRole::Metric)],
        )
        .first()
        .and_then(|r| r[0].as_u64())
        .unwrap_or(0);
        tracing::info!(model = %req.model, total, "drill_through");
        Ok(semantic::listing::DrillThroughPage {
            model: req.model.clone(),
            label: catalog
                .catalog()
                .models
                .get(&req.model)
                .map(|m| m.label.clone())
                .unwrap_or_default(),
            columns: columns_meta,
            rows: semantic::rows_of(&rows, &columns),
            total,
            page: req.page,
            page_size: req.page_size,
        })
    }

    /// Runs a listing plan under the query time budget, in the request's compute slot.
    pub(super) async fn run_listing(
        &self,
        catalog: &DataState,
        df: DataFrame,
        request: &RequestContext,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        self.hold_slot(request).await?;
        tokio::time::timeout(self.timeout, catalog.execute(df.into_unoptimized_plan()))
            .await
            .map_err(|_| {
                QueryError::new(
                    ErrorKind::Timeout,
                    "timeout",
                    "the listing ran past its time budget",
                )
            })?
            .map_err(QueryError::from)
    }
}
