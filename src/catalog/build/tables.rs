//! File-sourced tables and SQL models, registered through the engine in dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use datafusion::common::TableReference;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};

use super::Builder;
use crate::catalog::{CatalogErrors, FileFormat, TableSource, is_identifier};
use crate::spec::Source;

/// A file source's path: inside the data folder, never an arbitrary file the server can read
/// (`csv: /etc/shells`, `../../secrets`, or a symbolic link out of the folder).
fn inside_data_dir(data_dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let escapes = Path::new(rel)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(format!(
            "'{rel}' is not a path inside the data folder: give it relative to the data folder, without '..'"
        ));
    }
    let path = data_dir.join(rel);
    if let (Ok(root), Ok(real)) = (data_dir.canonicalize(), path.canonicalize())
        && !real.starts_with(&root)
    {
        return Err(format!(
            "'{rel}' leads outside the data folder (through a symbolic link)"
        ));
    }
    Ok(path)
}

/// Whether two sources can read the same rows: the same path, or one inside the other (a folder
/// and a file in it), compared up to their first glob component.
fn same_data(a: &Path, b: &Path) -> bool {
    let root = |p: &Path| -> PathBuf {
        p.components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect()
    };
    let (a, b) = (root(a), root(b));
    a.starts_with(&b) || b.starts_with(&a)
}

impl Builder<'_> {
    /// Registers every Parquet/CSV model as a table named after the model.
    pub(super) async fn register_file_sources(
        &mut self,
    ) -> Result<BTreeMap<String, TableSource>, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let mut tables = BTreeMap::new();
        // Each file model's data, and what its YAML declares personal.
        let mut read: Vec<(String, PathBuf, &crate::catalog::personal::PersonalColumns)> =
            Vec::new();
        for (name, d) in &self.models {
            let key = format!("models.{name}.source");
            let (format, rel) = match d.spec.source.source() {
                Ok(Source::Parquet(p)) => (FileFormat::Parquet, p),
                Ok(Source::Csv(p)) => (FileFormat::Csv, p),
                Ok(Source::Xlsx(p)) => (FileFormat::Xlsx, p),
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
            let path = match inside_data_dir(&self.data_dir, rel) {
                Ok(path) => path,
                Err(why) => {
                    errors.push(d.file, &key, why);
                    continue;
                }
            };
            let source = match TableSource::new(name, format, path.clone()) {
                Ok(s) => s.with_read(d.spec.source.read.clone()),
                Err(e) => {
                    errors.push(d.file, &key, format!("cannot read {}: {e}", path.display()));
                    continue;
                }
            };
            match self.registry.register_file(&source).await {
                Ok(schema) => {
                    // Its columns are checked with the model's (`build_models`).
                    read.push((name.to_string(), path.clone(), &d.spec.personal_data));
                    self.schemas.insert(name.to_string(), schema);
                }
                // The typed reader's messages name the file, line and column themselves.
                Err(e) if source.read_in_memory() => {
                    errors.push(d.file, &key, e);
                    continue;
                }
                Err(e) => {
                    errors.push(d.file, &key, format!("cannot open {}: {e}", path.display()));
                    continue;
                }
            }
            tables.insert(name.to_string(), source);
        }
        errors.check()?;
        // Personal data belongs to the data, not to the model that first named it: a model over
        // the same files (or a folder holding them) has every column declared over them.
        for (name, path, declared_here) in &read {
            // Its own declarations stay whole (an unknown column is reported with the model's).
            let own = |column: &str| declared_here.contains_key(column);
            let mut personal = crate::catalog::personal::PersonalColumns::new();
            for (_, _, declared) in read.iter().filter(|(_, p, _)| same_data(path, p)) {
                let schema = &self.schemas[name.as_str()];
                for (column, mask) in declared.iter() {
                    if schema.field_with_name(column).is_err() && !own(column) {
                        continue; // another file of the folder: not this model's column
                    }
                    personal
                        .entry(column.clone())
                        .and_modify(|m| {
                            if m != mask {
                                *m = crate::spec::Mask::All; // declared two ways: the whole
                            }
                        })
                        .or_insert(*mask);
                }
            }
            self.personal.insert(name.clone(), personal);
        }
        Ok(tables)
    }

    /// Registers `sql/*.sql` as views in dependency order. Returns, per view, the physical tables
    /// it reads. A SQL model may reference file-sourced models and other SQL models, not itself.
    pub(super) async fn register_sql_models(
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
                    Ok((schema, plan)) => {
                        let personal =
                            crate::catalog::personal::view_columns(&plan, &self.personal);
                        self.personal.insert(name.to_string(), personal);
                        self.schemas.insert(name.to_string(), schema);
                    }
                    Err(e) => {
                        // What it could have read: each table's columns, for the analyst.
                        let columns: Vec<String> = deps
                            .iter()
                            .filter_map(|d| {
                                let schema = self.schemas.get(d)?;
                                let names: Vec<&str> =
                                    schema.fields().iter().map(|f| f.name().as_str()).collect();
                                Some(format!("{d}: {}", names.join(", ")))
                            })
                            .collect();
                        errors.push(
                            file,
                            "",
                            format!(
                                "SQL does not plan: {e} (columns of the tables it reads: {})",
                                columns.join("; ")
                            ),
                        )
                    }
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
}
