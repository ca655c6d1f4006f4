//! Load, validate, freeze. The YAML specs and SQL models of a project become an immutable
//! [`Catalog`]: every name resolved, every column checked against the real table schema, every
//! expression parsed and typed. Errors name file, key and reason; nothing fails mid-request.

mod alerts;
mod build;
mod dashboards;
mod error;
mod kinds;
mod personal;
mod plan_context;
mod profile;
mod rollups;
mod sources;
mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::Expr;

use build::Builder;

pub use alerts::{AlertCheck, AlertRule, Condition};
pub use dashboards::{Dashboard, MAX_PERIODS, Panel};
pub use error::{CatalogError, CatalogErrors};
pub use kinds::{
    AttainmentMetric, ChurnBase, ChurnMetric, CohortMetric, CumulativeMetric, CumulativeSpan,
    DerivedMetric, FunnelMetric, Kind, MetricDefinition, RatioMetric, Shape, SimpleMetric,
    TargetMetric, TimeProgressMetric,
};
pub use personal::{PersonalColumns, tested_column};
pub use plan_context::{PlanContext, TableRegistry};
pub use profile::{MAX_SECTION_ROWS, Profile, ProfileColumn, ProfileSection};
pub use rollups::{
    DefinitionForm, Reaggregation, Rollup, RollupDefinition, RollupForm, RollupRefresh,
    distinct_refusal, reaggregation,
};
pub use sources::{ProjectSources, parse_definition_file};
pub use tables::{FileFormat, FileSignature, TableSource, data_version};

use crate::spec::{
    Aggregation, Direction, DrillColumnSpec, EmptyPeriod, FormatSpec, Label, SnapshotPick,
    TestSpec, Thresholds,
};

/// A validated, immutable view of a project's definitions over one snapshot of its data.
pub struct Catalog {
    /// Hash of the definition files (not the data): part of every cache key.
    pub version: String,
    pub models: BTreeMap<String, Model>,
    pub measures: BTreeMap<String, Measure>,
    pub metrics: BTreeMap<String, Metric>,
    pub dimensions: BTreeMap<String, Dimension>,
    pub hierarchies: BTreeMap<String, Vec<String>>,
    /// Distinct churn computations: churn metrics showing different numbers of the same
    /// (model, entity, activity rule) share one.
    pub churn_bases: Vec<ChurnBase>,
    /// Analysts' metric tests, by name, with the file they were declared in.
    pub tests: BTreeMap<String, (String, TestSpec)>,
    /// Physical tables by registered name, with the data version seen when the catalog was built.
    pub tables: BTreeMap<String, TableSource>,
    pub data_dir: PathBuf,
    /// Where expressions are parsed and plans built (no tables: scans are by reference).
    pub plans: PlanContext,
    /// Kept to rebuild the catalog over fresh data without re-reading (possibly edited) files.
    pub sources: Arc<ProjectSources>,
    /// Cockpit pages, in switcher order.
    pub dashboards: Vec<Dashboard>,
    /// Rollups that validated, to be built over the data (building one is a query: the layer
    /// above the planner does it and fills `rollups`).
    pub rollup_definitions: Vec<RollupDefinition>,
    /// Pre-aggregated tables, built over the same data snapshot as `tables`.
    pub rollups: BTreeMap<String, Rollup>,
    /// Rollups that validated but could not be built over this data, and why.
    pub rollups_not_built: Vec<CatalogError>,
    /// Alert rules, by name.
    pub alerts: BTreeMap<String, AlertRule>,
    /// How each materialized SQL model came to be read over this data (filled with the rollups).
    pub materialized: Vec<MaterializedModel>,
    /// The 360° customer view, where the project declares one.
    pub profile: Option<Profile>,
}

/// A materialized SQL model over one data state (`GET /api/v1/catalog/status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaterializedModel {
    /// The SQL model (`sql/<view>.sql`).
    pub view: String,
    /// `loaded` (stored over these files before), `built`, or `inline` (computed in every
    /// query, as if not declared: `reason` says why).
    pub how: &'static str,
    pub rows: usize,
    pub ms: f64,
    pub reason: Option<String>,
    /// The file its rows are read from (none: inline).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

pub struct Model {
    pub name: String,
    /// What the cockpit calls its rows (a drill-through list's title).
    pub label: Label,
    pub file: String,
    /// The DataFusion table or view holding the model's rows.
    pub table: String,
    pub schema: Arc<Schema>,
    pub time: Option<TimeColumn>,
    pub primary_key: Option<String>,
    pub joins: BTreeMap<String, Join>,
    pub dimensions: BTreeMap<String, DimensionBinding>,
    /// Physical tables this model reads, through SQL models and joins: its data dependencies.
    pub reads: BTreeSet<String>,
    /// Columns a drill-through may return (empty: not drillable), personal data masked.
    pub drill_through: Vec<DrillColumnSpec>,
    /// Its personal columns (declared on its file, or inherited through its SQL model).
    pub personal: PersonalColumns,
    /// A SQL model stored once per data version, sorted by these columns (see
    /// `state::materialize`); none: computed in every query that reads it.
    pub materialize: Option<Vec<String>>,
}

#[derive(Clone)]
pub struct TimeColumn {
    pub column: String,
    pub data_type: DataType,
}

pub struct Join {
    pub model: String,
    pub on: String,
}

#[derive(Clone, Debug)]
pub enum DimensionBinding {
    Column(String),
    Via { join: String, dimension: String },
}

/// A dimension as clients see it: one name, one type, across every model that provides it.
pub struct Dimension {
    pub name: String,
    pub label: Label,
    pub description: Option<String>,
    /// The type values are returned and filter literals are typed in (strings are normalised to
    /// Utf8 whatever the file format stores).
    pub data_type: DataType,
    pub models: BTreeSet<String>,
    /// How coded values are shown, from every model declaring the dimension.
    pub value_labels: BTreeMap<String, crate::spec::Label>,
}

pub struct Measure {
    pub name: String,
    pub model: String,
    pub agg: Aggregation,
    /// The value aggregated, over the model's columns (`lit(1)` for a row count).
    pub input: Expr,
    pub filter: Option<Expr>,
    pub snapshot: Option<SnapshotPick>,
    /// Set on a measure read from a rollup where the partial results combine other than by
    /// `agg` alone.
    pub combine: Option<Combine>,
}

/// How a rollup's partial results of a measure combine, beyond re-aggregating them.
#[derive(Debug, Clone)]
pub enum Combine {
    /// A sum of partial counts (or distinct counts): 0 over no rows, as the count itself gives.
    CountOfParts,
    /// An average: the partial sums (`input`) over the partial counts here.
    SumOverCount(Expr),
}

pub struct Metric {
    pub name: String,
    pub file: String,
    pub definition: MetricDefinition,
    pub label: Label,
    pub description: Option<String>,
    pub format: FormatSpec,
    pub direction: Direction,
    pub thresholds: Option<Thresholds>,
    /// What a period without data shows when a time series is gap-filled.
    pub empty: EmptyPeriod,
}

impl Catalog {
    /// Validates already-read sources over the data as it is now.
    pub async fn build(
        sources: Arc<ProjectSources>,
        data_dir: &Path,
        registry: &dyn TableRegistry,
    ) -> Result<Catalog, CatalogErrors> {
        Builder::new(&sources, data_dir, registry)
            .run(sources.clone())
            .await
    }

    /// A model's rows as a DataFrame to plan on (a scan by reference; the engine runs it).
    pub fn scan(&self, model: &Model) -> datafusion::error::Result<DataFrame> {
        self.plans.scan(&model.table, model.schema.clone())
    }

    pub fn dashboard(&self, id: &str) -> Option<&Dashboard> {
        self.dashboards.iter().find(|d| d.id == id)
    }

    /// The measures a metric needs, in a stable order, through derived metrics.
    pub fn measures_of(&self, metric: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_measures(metric, &mut out);
        out
    }

    fn collect_measures(&self, metric: &str, out: &mut Vec<String>) {
        let Some(m) = self.metrics.get(metric) else {
            return;
        };
        for measure in m.definition.measures_read() {
            if !out.contains(&measure) {
                out.push(measure);
            }
        }
        for dep in m.definition.metrics_read() {
            self.collect_measures(&dep, out);
        }
    }

    /// A measure under `metric` that is not taken at a snapshot (a flow: summed over time), or
    /// the metric's own name for a churn, funnel or cohort: what makes it no balance.
    pub fn flow_measure_of(&self, metric: &str) -> Option<String> {
        let shaped = self
            .metrics_under(metric)
            .into_iter()
            .find(|m| self.metrics[m].definition.entity_model().is_some());
        shaped.or_else(|| {
            self.measures_of(metric)
                .into_iter()
                .find(|m| self.measures[m].snapshot.is_none())
        })
    }

    /// The dimension a model's column `column` stands for: the one the model binds to it, else
    /// the model's dimension of that name (a customer list's `segment` column, whose dimension
    /// the model reaches through its customer join). A listing's or a profile's column is shown
    /// with its label and value labels.
    pub fn dimension_of_column(&self, model: &str, column: &str) -> Option<&Dimension> {
        let dimensions = &self.models.get(model)?.dimensions;
        dimensions
            .iter()
            .find(|(_, b)| matches!(b, DimensionBinding::Column(c) if c == column))
            .map(|(d, _)| d.as_str())
            .or_else(|| dimensions.contains_key(column).then_some(column))
            .and_then(|d| self.dimensions.get(d))
    }

    /// The models a metric reads, through derived metrics.
    pub fn models_of(&self, metric: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .measures_of(metric)
            .iter()
            .map(|m| self.measures[m].model.clone())
            .collect();
        for name in self.metrics_under(metric) {
            if let Some(model) = self.metrics[&name].definition.entity_model() {
                out.insert(model.to_string());
            }
        }
        out
    }

    /// The models every dimension and filter of a query of `metric` must reach: those it reads
    /// but targets' (a target is null where its model lacks a dimension, never an error).
    pub fn models_constraining(&self, metric: &str) -> BTreeSet<String> {
        self.metrics_under(metric)
            .iter()
            .filter(|m| self.metrics[*m].definition.constrains_dimensions())
            .flat_map(|m| self.models_of(m))
            .collect()
    }

    /// The metric and every metric it depends on through derived expressions.
    pub fn metrics_under(&self, metric: &str) -> Vec<String> {
        let mut out = vec![metric.to_string()];
        let mut i = 0;
        while i < out.len() {
            if let Some(m) = self.metrics.get(&out[i]) {
                for d in m.definition.metrics_read() {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// Physical tables a set of models reads.
    pub fn tables_read_by<'a>(
        &self,
        models: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<String> {
        models
            .into_iter()
            .filter_map(|m| self.models.get(m))
            .flat_map(|m| m.reads.iter().cloned())
            .collect()
    }
}

/// Strings of any storage flavour are served as Utf8, dictionaries as their values.
pub fn canonical_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => canonical_type(v),
        other => other.clone(),
    }
}

pub(crate) fn is_temporal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
    )
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 64
}
