//! Making one rollup current over a data state: load its stored copy when nothing it reads has
//! changed, recompute only the dates changed files cover when every changed table is tied to the
//! model's dates (see [`super::lineage`]), build it whole otherwise; then register its rows and
//! store them.
//!
//! An update is exact because a measure rollup's rows are grouped by the model's time (a local
//! day for events), and a churn rollup's by a pair of snapshot dates: the rows on the changed
//! dates are dropped and computed again from the model's rows on those dates, the rest kept.
//! Funnels and cohorts follow each entity over its whole history, so they are built again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::LogicalPlan;
use sha2::{Digest, Sha256};

use super::error::StateError;
use super::lineage::{self, Lineage};
use super::store::{self, Manifest, RollupStore, StoredTable};
use crate::catalog::{
    Catalog, CatalogError, DefinitionForm, DimensionBinding, Rollup, RollupDefinition,
    RollupRefresh, distinct_refusal,
};
use crate::engine::EngineTables;
use crate::semantic::calendar::CalendarConfig;
use crate::semantic::rollup::{self, DateWindow};
use crate::text::hex_prefix;

/// A rollup's rows and what their build found, before they are registered.
struct Rows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Distinct counts refused: measure -> (key, reason).
    refused: BTreeMap<String, (String, String)>,
    /// A churn rollup's snapshot dates.
    snapshots: Vec<NaiveDate>,
}

enum Plan {
    /// The last build over the same data and definitions failed, for this reason.
    Failed(String),
    Load(Manifest),
    Update(Manifest, DateWindow),
    Build(String),
}

/// Makes the rollup current (see the module doc). Besides it, the parts of it the build refused.
/// With `load_only`, only a current stored copy is loaded: `Ok(None)` when it would have to be
/// computed (left for a build in the background).
pub(super) async fn refresh_rollup(
    catalog: &Catalog,
    tables: &dyn EngineTables,
    def: &RollupDefinition,
    calendar: &CalendarConfig,
    store: &RollupStore,
    load_only: bool,
) -> Result<Option<(Rollup, Vec<CatalogError>)>, StateError> {
    let started = Instant::now();
    let context = Context {
        catalog,
        tables,
        def,
        calendar,
        out_of_memory: Default::default(),
    };
    let (fingerprint, reads) = context.fingerprint().await?;
    let mut lineage = match rollup::time_plan(catalog, def)? {
        Some(plan) => lineage::trace(&context.resolved(plan)?, 0),
        None => Lineage::default(),
    };
    // A dimension read through a join (a customer's RM) can move any date's rows.
    let base = &catalog.models[&def.spec.model];
    for d in &def.spec.dimensions {
        if let Some(DimensionBinding::Via { join, .. }) = base.dimensions.get(d) {
            for t in &catalog.models[&base.joins[join].model].reads {
                lineage.aligned.remove(t);
                lineage.unaligned.insert(t.clone());
            }
        }
    }
    let stored = store.manifest(&def.name);
    let had_copy = stored.is_some();
    let matching = stored.filter(|m| m.fingerprint == fingerprint);
    let now: BTreeMap<String, StoredTable> = reads
        .iter()
        .map(|t| {
            let aligned = lineage.aligned.get(t).map(String::as_str);
            let before = matching.as_ref().and_then(|m| m.tables.get(t));
            let source = &catalog.tables[t];
            (
                t.clone(),
                store::stored_table(source, aligned, before, calendar.time_zone),
            )
        })
        .collect();
    let plan = match matching {
        None if !had_copy => Plan::Build("no stored copy".into()),
        None => {
            Plan::Build("its definition, or a definition or SQL model it reads, changed".into())
        }
        // More data needs more memory: a build refused for memory waits for another pool,
        // definition or start; one refused by a check is tried again over new data.
        Some(m) if m.failed.is_some() => match store.same_failure(&m) {
            Some((reason, true)) => Plan::Failed(format!(
                "{reason} (at its last build, with this memory pool; tried again at the next \
                 start, or when its definition or --memory-mb changes)"
            )),
            Some((reason, false)) if m.tables == now => Plan::Failed(format!(
                "{reason} (at its last build, over the same data and definitions; tried again \
                 when one of them changes)"
            )),
            _ if store.defers(&m) => Plan::Failed(format!(
                "{} (in an earlier run, with this memory pool; tried again in the background once \
                 the server is listening)",
                m.failed.as_ref().map_or("", |f| f.reason.as_str())
            )),
            _ => Plan::Build("its last build failed; the data or the memory pool changed".into()),
        },
        Some(m) => context.plan(m, &now),
    };
    if load_only && !matches!(plan, Plan::Load(_) | Plan::Failed(_)) {
        return Ok(None);
    }
    let manifest = |refused, snapshots| Manifest {
        format: 0,
        fingerprint: fingerprint.clone(),
        tables: now.clone(),
        rows_file: String::new(),
        rows: 0,
        refused,
        snapshots,
        failed: None,
    };
    let mut refresh = RollupRefresh::default();
    let rows = match plan {
        Plan::Failed(reason) => return Err(StateError::refused(reason)),
        Plan::Load(manifest) => match store.rows(&def.name, &manifest) {
            Ok((schema, batches)) => {
                refresh.how = "loaded";
                Some(Rows {
                    schema,
                    batches,
                    refused: manifest.refused,
                    snapshots: manifest.snapshots,
                })
            }
            Err(e) => {
                refresh.reason = Some(format!("the stored copy is unreadable: {e}"));
                None
            }
        },
        Plan::Update(manifest, window) => match context.update(store, &manifest, &window).await {
            Ok(Updated::Rows(rows)) => {
                refresh.how = "updated";
                refresh.dates = window.0.clone();
                refresh.reason = Some(changed_tables(&manifest, &now));
                Some(rows)
            }
            Ok(Updated::BuildWhole(why)) => {
                refresh.reason = Some(why);
                None
            }
            Err(e) => {
                refresh.reason = Some(e.to_string());
                None
            }
        },
        Plan::Build(reason) => {
            refresh.reason = Some(reason);
            None
        }
    };
    let rows = match rows {
        Some(rows) => rows,
        None => {
            refresh.how = "built";
            match context.build().await {
                Ok(rows) => rows,
                Err(reason) => {
                    let failed = manifest(BTreeMap::new(), Vec::new());
                    let memory = context
                        .out_of_memory
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if let Err(e) =
                        store.save_failure(&def.name, failed, &reason.to_string(), memory)
                    {
                        tracing::warn!(rollup = %def.name, error = %e, "rollup failure not stored");
                    }
                    return Err(reason);
                }
            }
        }
    };
    if refresh.how != "loaded" {
        let manifest = manifest(rows.refused.clone(), rows.snapshots.clone());
        if let Err(e) = store.save(&def.name, manifest, &rows.schema, &rows.batches) {
            tracing::warn!(rollup = %def.name, error = %e, "rollup not stored; it is built again at the next start");
            refresh.store_error = Some(e.to_string());
        }
    }
    let refusals = rows
        .refused
        .values()
        .map(|(key, reason)| CatalogError::new(&def.file, key, reason))
        .collect();
    let row_count = rows.batches.iter().map(|b| b.num_rows()).sum();
    let mut built = context.register(rows)?;
    built.rows = row_count;
    built.build_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    tracing::info!(rollup = %def.name, model = %def.spec.model, rows = row_count, how = refresh.how, reason = refresh.reason.as_deref().unwrap_or(""), ms = built.build_ms, "rollup current");
    built.refresh = refresh;
    Ok(Some((built, refusals)))
}

/// The tables whose files changed, for the report.
fn changed_tables(before: &Manifest, now: &BTreeMap<String, StoredTable>) -> String {
    let changed: Vec<&str> = now
        .iter()
        .filter(|(t, s)| before.tables.get(*t) != Some(*s))
        .map(|(t, _)| t.as_str())
        .collect();
    format!("files of {} changed", changed.join(", "))
}

/// What refreshing a stored copy gave: its rows with the changed dates computed again, or why
/// it is built whole instead.
enum Updated {
    Rows(Rows),
    BuildWhole(String),
}

struct Context<'a> {
    catalog: &'a Catalog,
    tables: &'a dyn EngineTables,
    def: &'a RollupDefinition,
    calendar: &'a CalendarConfig,
    /// Set when a plan ran out of the memory pool.
    out_of_memory: std::sync::atomic::AtomicBool,
}

impl Context<'_> {
    fn resolved(&self, plan: LogicalPlan) -> Result<LogicalPlan, StateError> {
        self.tables.resolved(plan).map_err(StateError::Resolve)
    }

    async fn run(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>, StateError> {
        self.tables.execute(plan).await.map_err(|e| {
            let e = StateError::Build(e);
            if e.out_of_memory() {
                self.out_of_memory
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            e
        })
    }

    /// A hash of every plan the rollup comes from, SQL models inlined, and the tables they read.
    async fn fingerprint(&self) -> Result<(String, BTreeSet<String>), StateError> {
        let mut hasher = Sha256::new();
        // What the rows depend on: the grains and how dates fall into periods (not, say, the
        // years a request may name).
        hasher.update(format!(
            "{:?}|{}|{:?}",
            self.def.spec.grains,
            self.calendar.time_zone.name(),
            self.calendar.week_start
        ));
        let mut reads = BTreeSet::new();
        for plan in rollup::definition_plans(self.catalog, self.def, self.calendar).await? {
            let resolved = self.resolved(plan)?;
            hasher.update(resolved.display_indent_schema().to_string());
            reads.extend(lineage::tables_read(&resolved));
        }
        reads.retain(|t| self.catalog.tables.contains_key(t));
        Ok((hex_prefix(&hasher.finalize(), 16), reads))
    }

    /// What to do with a stored copy whose definitions match.
    fn plan(&self, manifest: Manifest, now: &BTreeMap<String, StoredTable>) -> Plan {
        if manifest.tables.keys().ne(now.keys()) {
            return Plan::Build("it reads other tables than its stored copy".into());
        }
        let mut window = DateWindow::default();
        let mut changed = false;
        for (table, stored) in now {
            let before = &manifest.tables[table];
            if before == stored {
                continue;
            }
            changed = true;
            if !matches!(
                self.def.form,
                DefinitionForm::Measures | DefinitionForm::Churn { .. }
            ) {
                return Plan::Build(format!(
                    "table '{table}' changed (a funnel or cohort follows entities over their whole history)"
                ));
            }
            if stored.aligned.is_none() {
                return Plan::Build(format!(
                    "table '{table}' changed, and its rows are not tied to the model's dates"
                ));
            }
            match store::changed_dates(before, stored) {
                Ok(spans) => spans.into_iter().for_each(|(f, t)| window.add(f, t)),
                Err(file) => {
                    return Plan::Build(format!(
                        "table '{table}' changed, and the dates of {file} are unknown (not \
                         Parquet, no statistics, or rows without a time)"
                    ));
                }
            }
        }
        match changed {
            false => Plan::Load(manifest),
            true => Plan::Update(manifest, window),
        }
    }

    /// The whole rollup from the model.
    async fn build(&self) -> Result<Rows, StateError> {
        match &self.def.form {
            DefinitionForm::Measures => self.measure_rows(None, &[]).await,
            DefinitionForm::Churn { .. } => {
                let plan = rollup::snapshot_dates(self.catalog, self.def, None, self.calendar)?;
                let snapshots = dates(&self.run(plan).await?)?;
                self.churn_rows(snapshots, Vec::new(), &BTreeSet::new())
                    .await
            }
            DefinitionForm::Funnel { .. } | DefinitionForm::Cohort { .. } => {
                self.entity_rows().await
            }
        }
    }

    /// The stored rows with the window's dates computed again; `Ok(Err(why))` when the update
    /// cannot be exact and the rollup is built whole instead.
    async fn update(
        &self,
        store: &RollupStore,
        manifest: &Manifest,
        window: &DateWindow,
    ) -> Result<Updated, StateError> {
        let (schema, stored) = store.rows(&self.def.name, manifest)?;
        let tz = self.calendar.time_zone;
        match &self.def.form {
            DefinitionForm::Measures => {
                if !manifest.refused.is_empty() {
                    return Ok(Updated::BuildWhole(
                        "it refused a distinct count; checked again over all dates".into(),
                    ));
                }
                let outside = keep_rows(&stored, |b| {
                    let key = b.column_by_name(rollup::ROLLUP_TIME)?;
                    Some(
                        (0..b.num_rows())
                            .map(|i| {
                                store::local_date(key, i, tz).is_none_or(|d| !window.contains(d))
                            })
                            .collect(),
                    )
                })?;
                let mut rows = self.measure_rows(Some(window), &outside).await?;
                if !rows.refused.is_empty() {
                    return Ok(Updated::BuildWhole("a distinct count no longer holds on the changed dates; checked again over all dates".into()));
                }
                let mut all = outside;
                all.append(&mut rows.batches);
                let (schema, batches) = store::unify(&schema, all)?;
                rows.schema = schema;
                rows.batches = batches;
                Ok(Updated::Rows(rows))
            }
            DefinitionForm::Churn { .. } => {
                let plan =
                    rollup::snapshot_dates(self.catalog, self.def, Some(window), self.calendar)?;
                let mut snapshots: Vec<NaiveDate> = manifest
                    .snapshots
                    .iter()
                    .copied()
                    .filter(|d| !window.contains(*d))
                    .collect();
                snapshots.extend(dates(&self.run(plan).await?)?);
                snapshots.sort();
                snapshots.dedup();
                let before: BTreeSet<_> = rollup::churn_pairs(self.def, &manifest.snapshots)
                    .into_iter()
                    .collect();
                let keep: BTreeSet<(NaiveDate, NaiveDate)> =
                    rollup::churn_pairs(self.def, &snapshots)
                        .into_iter()
                        .filter(|(s, e)| {
                            before.contains(&(*s, *e))
                                && !window.contains(*s)
                                && !window.contains(*e)
                        })
                        .collect();
                let kept = keep_rows(&stored, |b| {
                    let (s, e) = (
                        b.column_by_name(rollup::PAIR_START)?,
                        b.column_by_name(rollup::PAIR_END)?,
                    );
                    Some(
                        (0..b.num_rows())
                            .map(|i| {
                                match (store::local_date(s, i, tz), store::local_date(e, i, tz)) {
                                    (Some(s), Some(e)) => keep.contains(&(s, e)),
                                    _ => false,
                                }
                            })
                            .collect(),
                    )
                })?;
                let mut rows = self.churn_rows(snapshots, kept, &keep).await?;
                let (schema, batches) = store::unify(&schema, std::mem::take(&mut rows.batches))?;
                rows.schema = schema;
                rows.batches = batches;
                Ok(Updated::Rows(rows))
            }
            _ => Ok(Updated::BuildWhole(
                "funnels and cohorts are built whole".into(),
            )),
        }
    }

    /// A measure rollup's rows over the window's dates (all without one), each distinct count
    /// checked: per snapshot date over the window, or over the whole history counting the rows
    /// `outside` the window too.
    async fn measure_rows(
        &self,
        window: Option<&DateWindow>,
        outside: &[RecordBatch],
    ) -> Result<Rows, StateError> {
        let (catalog, def, calendar) = (self.catalog, self.def, self.calendar);
        let tables = self.tables;
        let register = |name: &str, schema: SchemaRef, batches: Vec<RecordBatch>| {
            tables
                .register_batches(name, schema, batches)
                .map_err(StateError::Register)
        };
        let plan = rollup::plan(catalog, def, calendar, window).await?;
        let mut schema = Arc::new(plan.schema().as_arrow().clone());
        let mut batches = self.run(plan).await?;
        let mut refused = BTreeMap::new();
        for (measure, check) in rollup::distinct_checks(catalog, def, window, calendar)? {
            let distinct = single_i64(&self.run(check).await?, "__distinct")?;
            let column = rollup::partial_column(&measure);
            let snapshot = catalog.measures[&measure].snapshot.is_some();
            let beside = match snapshot {
                true => 0,
                false => column_sum(outside, &column)?,
            };
            let mut summed = column_sum(&batches, &column)? + beside;
            if summed != distinct {
                // Values repeat within groups (a customer on one row per product): count
                // each group's distinct values instead, and check again.
                let part = self
                    .run(rollup::distinct_part(catalog, def, &measure, calendar, window).await?)
                    .await?;
                summed = column_sum(&part, &column)? + beside;
                if summed == distinct {
                    let table = rollup::table_name(def);
                    let part_table = format!("{table}__{measure}");
                    let part_schema = part.first().map(|b| b.schema()).ok_or_else(|| {
                        StateError::refused("the distinct counts came back empty")
                    })?;
                    register(&table, schema.clone(), std::mem::take(&mut batches))?;
                    register(&part_table, part_schema.clone(), part)?;
                    let merged = rollup::with_distinct_part(
                        catalog,
                        def,
                        schema.clone(),
                        &measure,
                        (&part_table, part_schema.clone()),
                    )?;
                    // Same columns, in order; only nullability may differ.
                    schema = Arc::new(merged.schema().as_arrow().clone());
                    batches = self.run(merged).await?;
                    // The part is merged in: free it.
                    register(&part_table, part_schema, Vec::new())?;
                }
            }
            if summed != distinct {
                let i = def.spec.measures.iter().position(|m| *m == measure);
                let key = format!("rollups.{}.measures[{}]", def.name, i.unwrap_or(0));
                let reason = distinct_refusal(&measure, distinct, summed, snapshot);
                refused.insert(measure, (key, reason));
            }
        }
        Ok(Rows {
            schema,
            batches,
            refused,
            snapshots: Vec::new(),
        })
    }

    /// A churn rollup's rows for every pair of `snapshots` not in `kept_pairs` (whose rows are
    /// `kept`), a pair at a time.
    async fn churn_rows(
        &self,
        snapshots: Vec<NaiveDate>,
        kept: Vec<RecordBatch>,
        kept_pairs: &BTreeSet<(NaiveDate, NaiveDate)>,
    ) -> Result<Rows, StateError> {
        let pairs = rollup::churn_pairs(self.def, &snapshots);
        // The schema does not depend on the pair; plan one even when there is none to run.
        let any = pairs.first().copied().unwrap_or_default();
        let schema = Arc::new(
            rollup::churn_pair_plan(self.catalog, self.def, any)
                .await?
                .schema()
                .as_arrow()
                .clone(),
        );
        let mut batches = kept;
        for pair in pairs.iter().filter(|p| !kept_pairs.contains(p)) {
            let plan = rollup::churn_pair_plan(self.catalog, self.def, *pair).await?;
            batches.extend(self.run(plan).await?);
        }
        Ok(Rows {
            schema,
            batches,
            refused: BTreeMap::new(),
            snapshots,
        })
    }

    /// A funnel or cohort rollup's rows, once its entities are checked to keep their dimensions
    /// (and, for a funnel, to have one first step).
    async fn entity_rows(&self) -> Result<Rows, StateError> {
        let (catalog, def) = (self.catalog, self.def);
        let metric = match &def.form {
            DefinitionForm::Funnel { metric } | DefinitionForm::Cohort { metric } => metric,
            _ => unreachable!("an entity rollup"),
        };
        let check = self
            .run(rollup::entity_dimension_check(catalog, def).await?)
            .await?;
        let entities = single_i64(&check, "__entities")?;
        let entity_dims = single_i64(&check, "__entity_dims")?;
        if entity_dims != entities {
            return Err(StateError::refused(format!(
                "the dimensions change between an entity's rows ({entity_dims} distinct \
                 entity and dimension values for {entities} entities): a filter would drop \
                 part of an entity's rows, so '{metric}' is computed from the model; keep \
                 only dimensions that are attributes of the entity"
            )));
        }
        let plan = match &def.form {
            DefinitionForm::Funnel { .. } => {
                let check = self
                    .run(rollup::funnel_first_steps(catalog, def).await?)
                    .await?;
                let first_steps = single_i64(&check, "__first_steps")?;
                let first_entities = single_i64(&check, "__first_step_entities")?;
                if first_steps != first_entities {
                    return Err(StateError::refused(format!(
                        "some entities have more than one first-step event ({first_steps} \
                         events for {first_entities} entities): which one starts the funnel \
                         depends on the query's range, so '{metric}' is computed from the \
                         model"
                    )));
                }
                rollup::funnel_plan(catalog, def).await?
            }
            _ => rollup::cohort_plan(catalog, def, self.calendar).await?,
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let batches = self.run(plan).await?;
        Ok(Rows {
            schema,
            batches,
            refused: BTreeMap::new(),
            snapshots: Vec::new(),
        })
    }

    /// Registers the rows beside the tables they came from and returns the rollup the planner
    /// reads.
    fn register(&self, rows: Rows) -> Result<Rollup, StateError> {
        let (catalog, def, calendar) = (self.catalog, self.def, self.calendar);
        self.tables
            .register_batches(&rollup::table_name(def), rows.schema.clone(), rows.batches)
            .map_err(StateError::Register)?;
        Ok(match &def.form {
            DefinitionForm::Measures => {
                let refused = rows.refused.keys().cloned().collect();
                rollup::materialised(catalog, def, rows.schema, &refused, calendar)
            }
            DefinitionForm::Churn { .. } => {
                let pairs = rollup::churn_pairs(def, &rows.snapshots);
                rollup::materialised_churn(catalog, def, rows.schema, rows.snapshots, pairs)
            }
            DefinitionForm::Funnel { .. } => rollup::materialised_funnel(catalog, def, rows.schema),
            DefinitionForm::Cohort { .. } => {
                rollup::materialised_cohort(catalog, def, rows.schema, calendar)
            }
        })
    }
}

/// The rows of `batches` that `keep` marks (`None`: a batch without the key columns).
fn keep_rows(
    batches: &[RecordBatch],
    keep: impl Fn(&RecordBatch) -> Option<Vec<bool>>,
) -> Result<Vec<RecordBatch>, StateError> {
    batches
        .iter()
        .map(|b| {
            let mask = keep(b)
                .ok_or_else(|| StateError::refused("the stored rollup lacks its key columns"))?;
            filter_record_batch(b, &BooleanArray::from(mask)).map_err(|source| StateError::Rows {
                context: "the stored rows could not be kept",
                source,
            })
        })
        .collect()
}

/// The sum of an Int64 column over batches (a rollup's partial counts).
fn column_sum(batches: &[RecordBatch], column: &str) -> Result<i64, StateError> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let mut total = 0i64;
    for b in batches {
        let c = b
            .column_by_name(column)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| {
                StateError::refused(format!("the rollup has no count column '{column}'"))
            })?;
        total += c.iter().flatten().sum::<i64>();
    }
    Ok(total)
}

/// The one value of an Int64 column in a one-row result.
pub(super) fn single_i64(batches: &[RecordBatch], column: &str) -> Result<i64, StateError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column_by_name(column))
        .map(|c| {
            let values = c.as_primitive::<Int64Type>();
            if values.is_null(0) {
                0
            } else {
                values.value(0)
            }
        })
        .ok_or_else(|| StateError::refused(format!("the rollup's check returned no '{column}'")))
}

/// The dates of a one-column Date32 result, ascending.
fn dates(batches: &[RecordBatch]) -> Result<Vec<NaiveDate>, StateError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Date32Type;
    let mut out = Vec::new();
    for b in batches {
        let column = b
            .column(0)
            .as_primitive_opt::<Date32Type>()
            .ok_or_else(|| StateError::refused("snapshot dates are not dates"))?;
        for i in 0..column.len() {
            if let Some(d) = column.value_as_date(i).filter(|_| column.is_valid(i)) {
                out.push(d);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
