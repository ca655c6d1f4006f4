//! Load, validate, freeze. The YAML specs and SQL models of a project become an immutable
//! [`Catalog`]: every name resolved, every column checked against the real table schema, every
//! expression parsed and typed. Errors name file, key and reason; nothing fails mid-request.

mod alerts;
mod dashboards;
mod error;
mod plan_context;
mod rollups;
mod sources;
mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};

pub use alerts::{AlertCheck, AlertRule, Condition};
pub use dashboards::{Dashboard, MAX_PERIODS, Panel};
pub use error::{CatalogError, CatalogErrors};
pub use plan_context::{PlanContext, TableRegistry};
pub use rollups::{Rollup, RollupDefinition, reaggregation};
pub use sources::{ProjectSources, parse_definition_file};
pub use tables::{FileFormat, TableSource, data_version};

use crate::spec::{
    Aggregation, ChurnValue, DefinitionFile, Direction, DrillColumnSpec, EmptyPeriod, FormatSpec,
    FormatStyle, Grain, Label, MeasureSpec, MetricKind, MetricSpec, ModelSpec, RollupSpec,
    SnapshotPick, Source, TestSpec, Thresholds,
};
use crate::text::first_line;

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
}

pub struct Model {
    pub name: String,
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
}

pub struct Measure {
    pub name: String,
    pub model: String,
    pub agg: Aggregation,
    /// The value aggregated, over the model's columns (`lit(1)` for a row count).
    pub input: Expr,
    pub filter: Option<Expr>,
    pub snapshot: Option<SnapshotPick>,
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

pub struct ChurnBase {
    pub model: String,
    pub entity: String,
    /// Over the model's columns: the entity is active in this snapshot row.
    pub active: Expr,
    pub active_sql: String,
}

pub struct FunnelDefinition {
    pub model: String,
    pub entity: String,
    pub step: String,
    pub steps: Vec<String>,
    /// The window after the first step, in microseconds.
    pub window_micros: i64,
    pub window: String,
}

pub struct CohortDefinition {
    pub model: String,
    pub entity: String,
    pub active: Expr,
    pub grain: Grain,
    /// A date dimension that places an entity in its cohort; else its first active snapshot.
    pub cohort_by: Option<String>,
}

pub enum MetricDefinition {
    Simple {
        measure: String,
    },
    Ratio {
        numerator: String,
        denominator: String,
    },
    Derived {
        expr: Expr,
        sql: String,
        depends_on: Vec<String>,
    },
    Churn {
        base: usize,
        value: ChurnValue,
    },
    Funnel(FunnelDefinition),
    Cohort(CohortDefinition),
}

impl MetricDefinition {
    pub fn kind(&self) -> MetricKind {
        match self {
            MetricDefinition::Simple { .. } => MetricKind::Simple,
            MetricDefinition::Ratio { .. } => MetricKind::Ratio,
            MetricDefinition::Derived { .. } => MetricKind::Derived,
            MetricDefinition::Churn { .. } => MetricKind::Churn,
            MetricDefinition::Funnel(_) => MetricKind::Funnel,
            MetricDefinition::Cohort(_) => MetricKind::Cohort,
        }
    }

    /// Funnels and cohorts have their own result shape (a row per step, a triangle), so they
    /// are queried one at a time.
    pub fn is_shaped(&self) -> bool {
        matches!(
            self,
            MetricDefinition::Funnel(_) | MetricDefinition::Cohort(_)
        )
    }
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
        let mut push = |name: &String| {
            if !out.contains(name) {
                out.push(name.clone());
            }
        };
        match &m.definition {
            MetricDefinition::Simple { measure } => push(measure),
            MetricDefinition::Ratio {
                numerator,
                denominator,
            } => {
                push(numerator);
                push(denominator);
            }
            MetricDefinition::Derived { depends_on, .. } => {
                for dep in depends_on {
                    self.collect_measures(dep, out);
                }
            }
            MetricDefinition::Churn { .. }
            | MetricDefinition::Funnel(_)
            | MetricDefinition::Cohort(_) => {}
        }
    }

    /// The models a metric reads, through derived metrics.
    pub fn models_of(&self, metric: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .measures_of(metric)
            .iter()
            .map(|m| self.measures[m].model.clone())
            .collect();
        for name in self.metrics_under(metric) {
            match &self.metrics[&name].definition {
                MetricDefinition::Churn { base, .. } => {
                    out.insert(self.churn_bases[*base].model.clone());
                }
                MetricDefinition::Funnel(f) => {
                    out.insert(f.model.clone());
                }
                MetricDefinition::Cohort(c) => {
                    out.insert(c.model.clone());
                }
                _ => {}
            }
        }
        out
    }

    /// The metric and every metric it depends on through derived expressions.
    pub fn metrics_under(&self, metric: &str) -> Vec<String> {
        let mut out = vec![metric.to_string()];
        let mut i = 0;
        while i < out.len() {
            if let Some(MetricDefinition::Derived { depends_on, .. }) =
                self.metrics.get(&out[i]).map(|m| &m.definition)
            {
                for d in depends_on {
                    if !out.contains(d) {
                        out.push(d.clone());
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

/// Where a definition was declared, for error messages and duplicate detection.
struct Declared<'a, T> {
    file: &'a str,
    spec: &'a T,
}

struct Builder<'a> {
    data_dir: PathBuf,
    registry: &'a dyn TableRegistry,
    plans: PlanContext,
    /// Columns of every registered table and view, as the engine reported them.
    schemas: BTreeMap<String, Arc<Schema>>,
    models: BTreeMap<&'a str, Declared<'a, ModelSpec>>,
    measures: BTreeMap<&'a str, Declared<'a, MeasureSpec>>,
    metrics: BTreeMap<&'a str, Declared<'a, MetricSpec>>,
    hierarchies: BTreeMap<&'a str, Declared<'a, Vec<String>>>,
    tests: BTreeMap<&'a str, Declared<'a, TestSpec>>,
    rollups: BTreeMap<&'a str, Declared<'a, RollupSpec>>,
    alerts: BTreeMap<&'a str, Declared<'a, crate::spec::alert::AlertSpec>>,
    sql_models: &'a BTreeMap<String, (String, String)>,
    errors: CatalogErrors,
}

impl<'a> Builder<'a> {
    fn new(sources: &'a ProjectSources, data_dir: &Path, registry: &'a dyn TableRegistry) -> Self {
        let mut b = Builder {
            data_dir: data_dir.to_path_buf(),
            registry,
            plans: PlanContext::default(),
            schemas: BTreeMap::new(),
            models: BTreeMap::new(),
            measures: BTreeMap::new(),
            metrics: BTreeMap::new(),
            hierarchies: BTreeMap::new(),
            tests: BTreeMap::new(),
            rollups: BTreeMap::new(),
            alerts: BTreeMap::new(),
            sql_models: &sources.sql_models,
            errors: CatalogErrors::default(),
        };
        for (file, def) in &sources.definitions {
            b.collect(file, def);
        }
        b
    }

    /// Merges one file's sections, reporting names declared twice (in any files).
    fn collect(&mut self, file: &'a str, def: &'a DefinitionFile) {
        fn merge<'a, T>(
            section: &str,
            file: &'a str,
            items: &'a BTreeMap<String, T>,
            into: &mut BTreeMap<&'a str, Declared<'a, T>>,
            errors: &mut CatalogErrors,
        ) {
            for (name, spec) in items {
                let key = format!("{section}.{name}");
                if !is_identifier(name) {
                    errors.push(
                        file,
                        &key,
                        "names must be lowercase snake_case ([a-z][a-z0-9_]*)",
                    );
                }
                if let Some(prev) = into.get(name.as_str()) {
                    errors.push(
                        file,
                        &key,
                        format!("duplicate name: already declared in {}", prev.file),
                    );
                } else {
                    into.insert(name, Declared { file, spec });
                }
            }
        }
        merge(
            "models",
            file,
            &def.models,
            &mut self.models,
            &mut self.errors,
        );
        merge(
            "measures",
            file,
            &def.measures,
            &mut self.measures,
            &mut self.errors,
        );
        merge(
            "metrics",
            file,
            &def.metrics,
            &mut self.metrics,
            &mut self.errors,
        );
        merge(
            "hierarchies",
            file,
            &def.hierarchies,
            &mut self.hierarchies,
            &mut self.errors,
        );
        merge("tests", file, &def.tests, &mut self.tests, &mut self.errors);
        merge(
            "rollups",
            file,
            &def.rollups,
            &mut self.rollups,
            &mut self.errors,
        );
        merge(
            "alerts",
            file,
            &def.alerts,
            &mut self.alerts,
            &mut self.errors,
        );
    }

    async fn run(mut self, sources: Arc<ProjectSources>) -> Result<Catalog, CatalogErrors> {
        std::mem::take(&mut self.errors).check()?;
        let tables = self.register_file_sources().await?;
        let view_reads = self.register_sql_models(&tables).await?;
        let mut models = self.build_models(&view_reads).await?;
        let dimensions = self.resolve_dimensions(&mut models)?;
        let hierarchies = self.validate_hierarchies(&dimensions)?;
        let measures = self.build_measures(&models)?;
        let (metrics, churn_bases) = self.build_metrics(&measures, &models, &dimensions)?;
        let tests = self.validate_tests()?;
        let rollups = rollups::validate(&self.rollups, &models, &measures)?;
        let mut catalog = Catalog {
            version: sources.version.clone(),
            models,
            measures,
            metrics,
            dimensions,
            hierarchies,
            churn_bases,
            tests,
            tables,
            data_dir: self.data_dir.clone(),
            plans: self.plans.clone(),
            sources: sources.clone(),
            dashboards: Vec::new(),
            rollup_definitions: Vec::new(),
            rollups: BTreeMap::new(),
            rollups_not_built: Vec::new(),
            alerts: BTreeMap::new(),
        };
        catalog.dashboards = dashboards::validate_dashboards(&catalog, &sources.dashboards)?;
        catalog.alerts = alerts::validate(&catalog, &self.alerts)?;
        catalog.rollup_definitions = rollups;
        Ok(catalog)
    }

    /// Registers every Parquet/CSV model as a table named after the model.
    async fn register_file_sources(
        &mut self,
    ) -> Result<BTreeMap<String, TableSource>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut tables = BTreeMap::new();
        for (name, d) in &self.models {
            let key = format!("models.{name}.source");
            let (format, rel) = match d.spec.source.source() {
                Ok(Source::Parquet(p)) => (FileFormat::Parquet, p),
                Ok(Source::Csv(p)) => (FileFormat::Csv, p),
                Ok(Source::Sql(_)) => continue,
                Err(reason) => {
                    errors.push(d.file, &key, reason);
                    continue;
                }
            };
            if self.sql_models.contains_key(*name) {
                errors.push(
                    d.file,
                    &key,
                    format!("name clashes with the SQL model sql/{name}.sql"),
                );
                continue;
            }
            let path = self.data_dir.join(rel);
            let source = match TableSource::new(name, format, path.clone()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(d.file, &key, format!("cannot read {}: {e}", path.display()));
                    continue;
                }
            };
            match self.registry.register_file(&source).await {
                Ok(schema) => {
                    self.schemas.insert(name.to_string(), schema);
                }
                Err(e) => {
                    errors.push(d.file, &key, format!("cannot open {}: {e}", path.display()));
                    continue;
                }
            }
            tables.insert(name.to_string(), source);
        }
        errors.check()?;
        Ok(tables)
    }

    /// Registers `sql/*.sql` as views in dependency order. Returns, per view, the physical tables
    /// it reads. A SQL model may reference file-sourced models and other SQL models, not itself.
    async fn register_sql_models(
        &mut self,
        tables: &BTreeMap<String, TableSource>,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut refs: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let state = self.plans.state();
        for (name, (file, text)) in self.sql_models {
            if !is_identifier(name) {
                errors.push(
                    file,
                    "",
                    "SQL model file names must be lowercase snake_case",
                );
                continue;
            }
            let statements = match DFParser::parse_sql(text) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(file, "", format!("SQL does not parse: {e}"));
                    continue;
                }
            };
            let mut statements = Vec::from(statements);
            if statements.len() != 1 {
                errors.push(
                    file,
                    "",
                    format!(
                        "a SQL model holds exactly one SELECT, found {} statements",
                        statements.len()
                    ),
                );
                continue;
            }
            let statement = statements.pop().expect("one statement");
            let is_query = matches!(&statement, DFStatement::Statement(s) if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)));
            if !is_query {
                errors.push(file, "", "a SQL model must be a single SELECT query");
                continue;
            }
            match state.resolve_table_references(&statement) {
                Ok(r) => {
                    refs.insert(
                        name,
                        r.iter()
                            .map(|t: &TableReference| t.table().to_string())
                            .collect(),
                    );
                }
                Err(e) => errors.push(file, "", format!("cannot resolve table references: {e}")),
            }
        }
        errors.check()?;

        // Topological order; whatever cannot be ordered is part of (or behind) a cycle.
        let mut reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut pending: BTreeMap<&str, BTreeSet<String>> = refs;
        loop {
            let ready: Vec<&str> = pending
                .iter()
                .filter(|(_, deps)| deps.iter().all(|d| !pending.contains_key(d.as_str())))
                .map(|(n, _)| *n)
                .collect();
            if ready.is_empty() {
                break;
            }
            for name in ready {
                let deps = pending.remove(name).unwrap_or_default();
                let (file, text) = &self.sql_models[name];
                let mut read = BTreeSet::new();
                for dep in &deps {
                    if let Some(r) = reads.get(dep) {
                        read.extend(r.iter().cloned());
                    } else if tables.contains_key(dep) {
                        read.insert(dep.clone());
                    } else {
                        errors.push(file, "", format!("references '{dep}', which is neither a file-sourced model nor a SQL model"));
                    }
                }
                match self.registry.register_view(name, text).await {
                    Ok(schema) => {
                        self.schemas.insert(name.to_string(), schema);
                    }
                    Err(e) => errors.push(file, "", format!("SQL does not plan: {e}")),
                }
                reads.insert(name.to_string(), read);
            }
        }
        for (name, deps) in &pending {
            let (file, _) = &self.sql_models[*name];
            let cycle: Vec<&String> = deps
                .iter()
                .filter(|d| pending.contains_key(d.as_str()))
                .collect();
            errors.push(
                file,
                "",
                format!("SQL models reference each other in a cycle through {cycle:?}"),
            );
        }
        errors.check()?;
        Ok(reads)
    }

    async fn build_models(
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
            for (i, col) in spec.drill_through.iter().enumerate() {
                let col = col.column();
                if column_type(col).is_none() {
                    errors.push(
                        d.file,
                        format!("models.{name}.drill_through[{i}]"),
                        unknown(col),
                    );
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
                    file: d.file.to_string(),
                    table,
                    schema,
                    time,
                    primary_key: spec.primary_key.clone(),
                    joins,
                    dimensions,
                    reads,
                    drill_through: spec.drill_through.clone(),
                },
            );
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
    fn resolve_dimensions(
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

    fn validate_hierarchies(
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

    fn build_measures(
        &mut self,
        models: &BTreeMap<String, Model>,
    ) -> Result<BTreeMap<String, Measure>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut out = BTreeMap::new();
        for (name, d) in &self.measures {
            let spec = d.spec;
            let key = format!("measures.{name}");
            let Some(model) = models.get(&spec.model) else {
                errors.push(
                    d.file,
                    format!("{key}.model"),
                    format!("unknown model '{}'", spec.model),
                );
                continue;
            };
            let df_schema = match DFSchema::try_from(model.schema.as_ref().clone()) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(d.file, &key, e.to_string());
                    continue;
                }
            };
            let parse =
                |sql: &str, field: &str, errors: &mut CatalogErrors| -> Option<(Expr, DataType)> {
                    let parsed = self
                        .plans
                        .parse_expr(sql, &df_schema)
                        .and_then(|e| e.get_type(&df_schema).map(|t| (e, t)));
                    match parsed {
                        Ok(x) => Some(x),
                        Err(e) => {
                            errors.push(
                                d.file,
                                format!("{key}.{field}"),
                                format!("invalid expression '{sql}': {}", first_line(&e)),
                            );
                            None
                        }
                    }
                };
            let input = match (&spec.expr, spec.agg) {
                (None, Aggregation::Count) => Some(datafusion::prelude::lit(1i64)),
                (None, agg) => {
                    errors.push(
                        d.file,
                        format!("{key}.expr"),
                        format!("required for agg '{}'", agg_name(agg)),
                    );
                    None
                }
                (Some(sql), agg) => parse(sql, "expr", &mut errors).and_then(|(e, t)| {
                    let needs_number = matches!(agg, Aggregation::Sum | Aggregation::Avg);
                    if needs_number && !t.is_numeric() {
                        errors.push(
                            d.file,
                            format!("{key}.expr"),
                            format!("'{sql}' is {t}; agg '{}' needs a number", agg_name(agg)),
                        );
                        None
                    } else {
                        Some(e)
                    }
                }),
            };
            let filter = spec.filter.as_deref().and_then(|sql| {
                parse(sql, "where", &mut errors).and_then(|(e, t)| {
                    if t == DataType::Boolean {
                        Some(e)
                    } else {
                        errors.push(
                            d.file,
                            format!("{key}.where"),
                            format!("'{sql}' is {t}, not a boolean predicate"),
                        );
                        None
                    }
                })
            });
            let snapshot = spec.semi_additive.as_ref().map(|s| s.pick);
            if snapshot.is_some() && model.time.is_none() {
                errors.push(
                    d.file,
                    format!("{key}.semi_additive"),
                    format!(
                        "model '{}' has no time column to take snapshots over",
                        model.name
                    ),
                );
            }
            if let Some(input) = input {
                out.insert(
                    name.to_string(),
                    Measure {
                        name: name.to_string(),
                        model: model.name.clone(),
                        agg: spec.agg,
                        input,
                        filter,
                        snapshot,
                    },
                );
            }
        }
        errors.check()?;
        Ok(out)
    }

    fn build_metrics(
        &mut self,
        measures: &BTreeMap<String, Measure>,
        models: &BTreeMap<String, Model>,
        dimensions: &BTreeMap<String, Dimension>,
    ) -> Result<(BTreeMap<String, Metric>, Vec<ChurnBase>), CatalogErrors> {
        let mut errors = CatalogErrors::default();
        // Derived expressions are parsed against a schema whose columns are the metric names.
        let metric_schema = DFSchema::try_from(Schema::new(
            self.metrics
                .keys()
                .map(|n| Field::new(*n, DataType::Float64, true))
                .collect::<Vec<_>>(),
        ))
        .expect("metric names are unique");
        let mut out = BTreeMap::new();
        let mut churn_bases: Vec<ChurnBase> = Vec::new();
        for (name, d) in &self.metrics {
            let spec = d.spec;
            let key = format!("metrics.{name}");
            let kind = kind_name(spec.kind);
            let allowed: &[&str] = match spec.kind {
                MetricKind::Simple => &["measure"],
                MetricKind::Ratio => &["numerator", "denominator"],
                MetricKind::Derived => &["expr"],
                MetricKind::Churn => &["model", "entity", "active_when", "value"],
                MetricKind::Funnel => &["model", "entity", "step", "steps", "window"],
                MetricKind::Cohort => &["model", "entity", "active_when", "period", "cohort_by"],
            };
            for (field, present) in [
                ("measure", spec.measure.is_some()),
                ("numerator", spec.numerator.is_some()),
                ("denominator", spec.denominator.is_some()),
                ("expr", spec.expr.is_some()),
                ("model", spec.model.is_some()),
                ("entity", spec.entity.is_some()),
                ("active_when", spec.active_when.is_some()),
                ("value", spec.value.is_some()),
                ("step", spec.step.is_some()),
                ("steps", !spec.steps.is_empty()),
                ("window", spec.window.is_some()),
                ("period", spec.period.is_some()),
                ("cohort_by", spec.cohort_by.is_some()),
            ] {
                if present && !allowed.contains(&field) {
                    errors.push(
                        d.file,
                        format!("{key}.{field}"),
                        format!("not a field of type '{kind}'"),
                    );
                }
            }
            let required = |field: &str, errors: &mut CatalogErrors| {
                errors.push(
                    d.file,
                    format!("{key}.{field}"),
                    format!("required for type '{kind}'"),
                )
            };
            // A required reference to a measure: present and known.
            let measure_ref = |field: &str,
                               value: &Option<String>,
                               errors: &mut CatalogErrors|
             -> Option<String> {
                match value {
                    None => required(field, errors),
                    Some(m) if !measures.contains_key(m) => errors.push(
                        d.file,
                        format!("{key}.{field}"),
                        format!("unknown measure '{m}'"),
                    ),
                    Some(_) => {}
                }
                value.clone()
            };
            // The model of a churn/funnel/cohort metric, its entity column, and a parser for
            // predicates over its columns.
            let entity_model = |errors: &mut CatalogErrors| -> Option<(&Model, String)> {
                let Some(model_name) = &spec.model else {
                    required("model", errors);
                    return None;
                };
                let Some(model) = models.get(model_name) else {
                    errors.push(
                        d.file,
                        format!("{key}.model"),
                        format!("unknown model '{model_name}'"),
                    );
                    return None;
                };
                if model.time.is_none() {
                    errors.push(
                        d.file,
                        format!("{key}.model"),
                        format!("model '{model_name}' has no time column"),
                    );
                    return None;
                }
                let Some(entity) = &spec.entity else {
                    required("entity", errors);
                    return None;
                };
                if model.schema.field_with_name(entity).is_err() {
                    errors.push(
                        d.file,
                        format!("{key}.entity"),
                        format!("model '{model_name}' has no column '{entity}'"),
                    );
                    return None;
                }
                Some((model, entity.clone()))
            };
            let predicate = |model: &Model, errors: &mut CatalogErrors| -> Option<(Expr, String)> {
                let Some(sql) = &spec.active_when else {
                    required("active_when", errors);
                    return None;
                };
                let schema = DFSchema::try_from(model.schema.as_ref().clone()).ok()?;
                match self
                    .plans
                    .parse_expr(sql, &schema)
                    .and_then(|e| e.get_type(&schema).map(|t| (e, t)))
                {
                    Ok((e, DataType::Boolean)) => Some((e, sql.clone())),
                    Ok((_, t)) => {
                        errors.push(
                            d.file,
                            format!("{key}.active_when"),
                            format!("'{sql}' is {t}, not a boolean predicate"),
                        );
                        None
                    }
                    Err(e) => {
                        errors.push(
                            d.file,
                            format!("{key}.active_when"),
                            format!("invalid expression '{sql}': {}", first_line(&e)),
                        );
                        None
                    }
                }
            };
            let definition = match spec.kind {
                MetricKind::Simple => measure_ref("measure", &spec.measure, &mut errors)
                    .map(|measure| MetricDefinition::Simple { measure }),
                MetricKind::Ratio => {
                    let n = measure_ref("numerator", &spec.numerator, &mut errors);
                    let den = measure_ref("denominator", &spec.denominator, &mut errors);
                    n.zip(den)
                        .map(|(numerator, denominator)| MetricDefinition::Ratio {
                            numerator,
                            denominator,
                        })
                }
                MetricKind::Derived => match &spec.expr {
                    None => {
                        required("expr", &mut errors);
                        None
                    }
                    Some(sql) => match self.plans.parse_expr(sql, &metric_schema) {
                        Ok(expr) => {
                            let depends_on: Vec<String> = expr
                                .column_refs()
                                .iter()
                                .map(|c| c.name.clone())
                                .collect::<BTreeSet<_>>()
                                .into_iter()
                                .collect();
                            for dep in &depends_on {
                                if self.metrics.get(dep.as_str()).is_some_and(|m| {
                                    matches!(m.spec.kind, MetricKind::Funnel | MetricKind::Cohort)
                                }) {
                                    errors.push(
                                        d.file,
                                        format!("{key}.expr"),
                                        format!("'{dep}' is a {} metric; derived metrics combine per-period values, which funnels and cohorts do not have", kind_name(self.metrics[dep.as_str()].spec.kind)),
                                    );
                                }
                            }
                            Some(MetricDefinition::Derived {
                                expr,
                                sql: sql.clone(),
                                depends_on,
                            })
                        }
                        Err(e) => {
                            errors.push(
                                d.file,
                                format!("{key}.expr"),
                                format!("invalid expression '{sql}': {}", first_line(&e)),
                            );
                            None
                        }
                    },
                },
                MetricKind::Churn => entity_model(&mut errors).and_then(|(model, entity)| {
                    let (active, active_sql) = predicate(model, &mut errors)?;
                    let base = churn_bases
                        .iter()
                        .position(|b| {
                            b.model == model.name
                                && b.entity == entity
                                && b.active_sql == active_sql
                        })
                        .unwrap_or_else(|| {
                            churn_bases.push(ChurnBase {
                                model: model.name.clone(),
                                entity,
                                active,
                                active_sql,
                            });
                            churn_bases.len() - 1
                        });
                    Some(MetricDefinition::Churn {
                        base,
                        value: spec.value.unwrap_or(ChurnValue::Rate),
                    })
                }),
                MetricKind::Funnel => entity_model(&mut errors).and_then(|(model, entity)| {
                    let step = match &spec.step {
                        None => {
                            required("step", &mut errors);
                            return None;
                        }
                        Some(s) if model.schema.field_with_name(s).is_err() => {
                            errors.push(
                                d.file,
                                format!("{key}.step"),
                                format!("model '{}' has no column '{s}'", model.name),
                            );
                            return None;
                        }
                        Some(s) => s.clone(),
                    };
                    if spec.steps.len() < 2 {
                        errors.push(
                            d.file,
                            format!("{key}.steps"),
                            "a funnel needs at least two steps",
                        );
                        return None;
                    }
                    for (i, st) in spec.steps.iter().enumerate() {
                        if spec.steps[..i].contains(st) {
                            errors.push(
                                d.file,
                                format!("{key}.steps[{i}]"),
                                format!("step '{st}' appears twice"),
                            );
                        }
                    }
                    let Some(window) = &spec.window else {
                        required("window", &mut errors);
                        return None;
                    };
                    let Some(window_micros) = parse_duration_micros(window) else {
                        errors.push(
                            d.file,
                            format!("{key}.window"),
                            format!("'{window}' is not a duration like 90d, 36h or 2w"),
                        );
                        return None;
                    };
                    Some(MetricDefinition::Funnel(FunnelDefinition {
                        model: model.name.clone(),
                        entity,
                        step,
                        steps: spec.steps.clone(),
                        window_micros,
                        window: window.clone(),
                    }))
                }),
                MetricKind::Cohort => entity_model(&mut errors).and_then(|(model, entity)| {
                    let (active, _) = predicate(model, &mut errors)?;
                    let grain = spec.period.unwrap_or(Grain::Month);
                    if !matches!(grain, Grain::Month | Grain::Quarter | Grain::Year) {
                        errors.push(
                            d.file,
                            format!("{key}.period"),
                            "cohorts are monthly, quarterly or yearly",
                        );
                        return None;
                    }
                    if let Some(dim) = &spec.cohort_by {
                        let problem = match dimensions.get(dim) {
                            None => Some(format!("unknown dimension '{dim}'")),
                            Some(x) if !x.models.contains(&model.name) => Some(format!(
                                "model '{}' does not declare dimension '{dim}'",
                                model.name
                            )),
                            Some(x) if !is_temporal(&x.data_type) => {
                                Some(format!("dimension '{dim}' is not a date"))
                            }
                            Some(_) => None,
                        };
                        if let Some(p) = problem {
                            errors.push(d.file, format!("{key}.cohort_by"), p);
                            return None;
                        }
                    }
                    Some(MetricDefinition::Cohort(CohortDefinition {
                        model: model.name.clone(),
                        entity,
                        active,
                        grain,
                        cohort_by: spec.cohort_by.clone(),
                    }))
                }),
            };
            let Some(definition) = definition else {
                continue;
            };
            let default_style = match &definition {
                MetricDefinition::Ratio { .. }
                | MetricDefinition::Cohort(_)
                | MetricDefinition::Churn {
                    value: ChurnValue::Rate,
                    ..
                } => FormatStyle::Percent,
                MetricDefinition::Churn { .. } | MetricDefinition::Funnel(_) => {
                    FormatStyle::Integer
                }
                _ => FormatStyle::Number,
            };
            let empty = match (&definition, spec.empty) {
                (MetricDefinition::Ratio { .. }, Some(EmptyPeriod::Zero)) => {
                    errors.push(
                        d.file,
                        format!("{key}.empty"),
                        "a ratio of empty parts is null, not zero",
                    );
                    EmptyPeriod::Null
                }
                (_, Some(e)) => e,
                (MetricDefinition::Simple { measure }, None) => {
                    let m = &measures[measure];
                    match (m.snapshot, m.agg) {
                        (Some(_), _) => EmptyPeriod::Carry,
                        (
                            None,
                            Aggregation::Sum | Aggregation::Count | Aggregation::CountDistinct,
                        ) => EmptyPeriod::Zero,
                        _ => EmptyPeriod::Null,
                    }
                }
                _ => EmptyPeriod::Null,
            };
            out.insert(
                name.to_string(),
                Metric {
                    name: name.to_string(),
                    file: d.file.to_string(),
                    definition,
                    label: spec.label.clone().unwrap_or_else(|| Label {
                        zh: None,
                        en: Some(name.replace('_', " ")),
                    }),
                    description: spec.description.clone(),
                    format: spec.format.clone().unwrap_or(FormatSpec {
                        style: default_style,
                        decimals: None,
                        currency: None,
                    }),
                    direction: spec.direction.unwrap_or_default(),
                    thresholds: spec.thresholds.clone(),
                    empty,
                },
            );
        }
        errors.check()?;
        // Derived metrics form a DAG.
        for name in out.keys() {
            if let Err(cycle) = derived_cycle(&out, name, &mut Vec::new()) {
                let m = &out[name];
                errors.push(
                    &m.file,
                    format!("metrics.{name}.expr"),
                    format!("derived metrics form a cycle: {}", cycle.join(" -> ")),
                );
            }
        }
        errors.check()?;
        Ok((out, churn_bases))
    }

    /// Tests are run by `kpilens test`; at load only their query must be a valid request.
    fn validate_tests(&mut self) -> Result<BTreeMap<String, (String, TestSpec)>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut out = BTreeMap::new();
        for (name, d) in &self.tests {
            if let Err(e) = serde_path_to_error::deserialize::<_, crate::protocol::QueryRequest>(
                d.spec.query.clone(),
            ) {
                errors.push(
                    d.file,
                    format!("tests.{name}.query.{}", e.path()),
                    e.inner().to_string(),
                );
            }
            out.insert(name.to_string(), (d.file.to_string(), d.spec.clone()));
        }
        errors.check()?;
        Ok(out)
    }
}

/// `90d`, `36h`, `2w`, `30m` as microseconds.
fn parse_duration_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: i64 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "w" => 7 * 86_400,
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000)
}

fn derived_cycle(
    metrics: &BTreeMap<String, Metric>,
    name: &str,
    stack: &mut Vec<String>,
) -> Result<(), Vec<String>> {
    if stack.iter().any(|s| s == name) {
        let mut cycle = stack.clone();
        cycle.push(name.to_string());
        return Err(cycle);
    }
    if let Some(MetricDefinition::Derived { depends_on, .. }) =
        metrics.get(name).map(|m| &m.definition)
    {
        stack.push(name.to_string());
        for dep in depends_on {
            derived_cycle(metrics, dep, stack)?;
        }
        stack.pop();
    }
    Ok(())
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

/// Strings of any storage flavour are served as Utf8, dictionaries as their values.
pub fn canonical_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::Dictionary(_, v) => canonical_type(v),
        other => other.clone(),
    }
}

fn is_temporal(t: &DataType) -> bool {
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

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// DataFusion errors can span lines (with backtraces or context); the first line says it.
pub fn agg_name(a: Aggregation) -> &'static str {
    match a {
        Aggregation::Sum => "sum",
        Aggregation::Count => "count",
        Aggregation::CountDistinct => "count_distinct",
        Aggregation::Avg => "avg",
        Aggregation::Min => "min",
        Aggregation::Max => "max",
    }
}

pub fn kind_name(k: MetricKind) -> &'static str {
    match k {
        MetricKind::Simple => "simple",
        MetricKind::Ratio => "ratio",
        MetricKind::Derived => "derived",
        MetricKind::Churn => "churn",
        MetricKind::Funnel => "funnel",
        MetricKind::Cohort => "cohort",
    }
}
