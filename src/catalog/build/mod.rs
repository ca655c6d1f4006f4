//! Building a catalog: the project's sections merged (names unique across files), then each kind
//! of definition validated in order, each phase assuming the ones before it passed: tables and
//! SQL models (registered through the engine), models, dimensions, hierarchies, measures,
//! metrics, tests, rollups, dashboards, alert rules.

mod measures;
mod metrics;
mod models;
mod tables;

pub(super) use metrics::parse_duration_micros;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;

use super::{Catalog, CatalogErrors, PlanContext, ProjectSources, TableRegistry, is_identifier};
use super::{alerts, dashboards, profile, rollups};
use crate::spec::{DefinitionFile, MeasureSpec, MetricSpec, ModelSpec, RollupSpec, TestSpec};

/// Where a definition was declared, for error messages and duplicate detection.
pub(in crate::catalog) struct Declared<'a, T> {
    pub(in crate::catalog) file: &'a str,
    pub(in crate::catalog) spec: &'a T,
}

pub(super) struct Builder<'a> {
    data_dir: PathBuf,
    registry: &'a dyn TableRegistry,
    plans: PlanContext,
    /// Columns of every registered table and view, as the engine reported them.
    schemas: BTreeMap<String, Arc<Schema>>,
    /// The personal columns of every registered table (declared) and view (traced).
    personal: BTreeMap<String, super::PersonalColumns>,
    models: BTreeMap<&'a str, Declared<'a, ModelSpec>>,
    measures: BTreeMap<&'a str, Declared<'a, MeasureSpec>>,
    metrics: BTreeMap<&'a str, Declared<'a, MetricSpec>>,
    hierarchies: BTreeMap<&'a str, Declared<'a, Vec<String>>>,
    tests: BTreeMap<&'a str, Declared<'a, TestSpec>>,
    rollups: BTreeMap<&'a str, Declared<'a, RollupSpec>>,
    alerts: BTreeMap<&'a str, Declared<'a, crate::spec::alert::AlertSpec>>,
    profile: Option<Declared<'a, crate::spec::profile::ProfileSpec>>,
    sql_models: &'a BTreeMap<String, (String, String)>,
    errors: CatalogErrors,
}

impl<'a> Builder<'a> {
    pub(super) fn new(
        sources: &'a ProjectSources,
        data_dir: &Path,
        registry: &'a dyn TableRegistry,
    ) -> Self {
        let mut b = Builder {
            data_dir: data_dir.to_path_buf(),
            registry,
            plans: PlanContext::default(),
            schemas: BTreeMap::new(),
            personal: BTreeMap::new(),
            models: BTreeMap::new(),
            measures: BTreeMap::new(),
            metrics: BTreeMap::new(),
            hierarchies: BTreeMap::new(),
            tests: BTreeMap::new(),
            rollups: BTreeMap::new(),
            alerts: BTreeMap::new(),
            profile: None,
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
        if let Some(spec) = &def.profile {
            match &self.profile {
                Some(prev) => self.errors.push(
                    file,
                    "profile",
                    format!("declared twice: already in {}", prev.file),
                ),
                None => self.profile = Some(Declared { file, spec }),
            }
        }
    }

    pub(super) async fn run(
        mut self,
        sources: Arc<ProjectSources>,
    ) -> Result<Catalog, CatalogErrors> {
        std::mem::take(&mut self.errors).check()?;
        let tables = self.register_file_sources().await?;
        let view_reads = self.register_sql_models(&tables).await?;
        let mut models = self.build_models(&view_reads).await?;
        let dimensions = self.resolve_dimensions(&mut models)?;
        let hierarchies = self.validate_hierarchies(&dimensions)?;
        let measures = self.build_measures(&models)?;
        let (metrics, churn_bases) =
            self.build_metrics(&measures, &models, &dimensions, &hierarchies)?;
        let tests = self.validate_tests()?;
        let rollups = rollups::validate(&self.rollups, &models, &measures, &metrics)?;
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
            materialized: Vec::new(),
            alerts: BTreeMap::new(),
            profile: None,
        };
        catalog.dashboards = dashboards::validate_dashboards(&catalog, &sources.dashboards)?;
        catalog.alerts = alerts::validate(&catalog, &self.alerts)?;
        catalog.profile = profile::validate(&catalog, self.profile.as_ref())?;
        catalog.rollup_definitions = rollups;
        Ok(catalog)
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
