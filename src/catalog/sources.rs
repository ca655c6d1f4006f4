//! Reading the project folder: `metrics/*.yaml`, `sql/*.sql` and `dashboards/*.yaml`, parsed but
//! not yet validated.

use crate::text::hex_prefix;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{CatalogError, CatalogErrors};
use crate::spec::DefinitionFile;
use crate::spec::dashboard::DashboardSpec;

/// The raw definitions of a project, with the file each came from.
#[derive(Debug, Clone)]
pub struct ProjectSources {
    pub project_dir: PathBuf,
    /// (path relative to the project, parsed file)
    pub definitions: Vec<(String, DefinitionFile)>,
    /// SQL model name (file stem) -> (path relative to the project, SELECT text)
    pub sql_models: BTreeMap<String, (String, String)>,
    /// (path relative to the project, dashboard id = file stem, parsed file)
    pub dashboards: Vec<(String, String, DashboardSpec)>,
    /// Hash of every definition file's name and content: the catalog version.
    pub version: String,
}

/// The project's subfolders and the files each holds.
const FOLDERS: [(&str, &[&str]); 3] = [
    ("metrics", &["yaml", "yml"]),
    ("sql", &["sql"]),
    ("dashboards", &["yaml", "yml"]),
];

/// Every definition file's (folder, path relative to the project, text), and the hash of all
/// their names and contents: the catalog version.
fn read_files(
    project_dir: &Path,
    errors: &mut CatalogErrors,
) -> (Vec<(&'static str, String, String)>, String) {
    let mut hasher = Sha256::new();
    let mut files = Vec::new();
    let mut unread = CatalogErrors::default();
    for (sub, extensions) in FOLDERS {
        for (rel, text) in read_dir_files(project_dir, sub, extensions, &mut unread) {
            hasher.update(rel.as_bytes());
            hasher.update(text.as_bytes());
            files.push((sub, rel, text));
        }
    }
    // A file refused unread (too large, unreadable) changes the version too: the watcher then
    // reloads, and the refusal is reported, instead of the file being silently ignored.
    for e in &unread.0 {
        hasher.update(e.file.as_bytes());
        hasher.update(e.reason.as_bytes());
    }
    errors.0.extend(unread.0);
    (files, hex_prefix(&hasher.finalize(), 12))
}

impl ProjectSources {
    /// The catalog version of the files as they are now, read but not parsed: what the reload
    /// watcher compares on each tick, so that an unchanged file is never parsed twice.
    pub fn version_of(project_dir: &Path) -> String {
        read_files(project_dir, &mut CatalogErrors::default()).1
    }

    pub fn read(project_dir: &Path) -> Result<Self, CatalogErrors> {
        let mut errors = CatalogErrors::default();
        let (files, version) = read_files(project_dir, &mut errors);
        let mut definitions = Vec::new();
        let mut sql_models = BTreeMap::new();
        let mut dashboards = Vec::new();
        for (sub, rel, text) in files {
            match sub {
                "metrics" => match parse_definition_file(&rel, &text) {
                    Ok(parsed) => definitions.push((rel, parsed)),
                    Err(e) => errors.0.push(e),
                },
                "sql" => {
                    sql_models.insert(file_stem(&rel), (rel, text));
                }
                _ => {
                    let id = file_stem(&rel);
                    if text.trim().is_empty() {
                        errors.push(&rel, "", "empty dashboard file");
                        continue;
                    }
                    match parse_yaml::<DashboardSpec>(&rel, &text) {
                        Ok(parsed) => dashboards.push((rel, id, parsed)),
                        Err(e) => errors.0.push(e),
                    }
                }
            }
        }
        if definitions.is_empty() && errors.is_empty() {
            errors.push("metrics/", "", "no *.yaml definition files found");
        }
        errors.check()?;
        Ok(Self {
            project_dir: project_dir.to_path_buf(),
            definitions,
            sql_models,
            dashboards,
            version,
        })
    }
}

/// Parses one YAML file; errors carry the key path (`metrics.overdue_ratio.type`) and the
/// line/column of the offending node.
pub fn parse_definition_file(file: &str, text: &str) -> Result<DefinitionFile, CatalogError> {
    if text.trim().is_empty() {
        return Ok(DefinitionFile::default());
    }
    parse_yaml(file, text)
}

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, CatalogError> {
    use crate::spec::nesting::{MAX_FLOW_DEPTH, too_deep};
    if let Some(line) = too_deep(text, MAX_FLOW_DEPTH) {
        return Err(CatalogError::new(
            file,
            "",
            format!(
                "brackets nest more than {MAX_FLOW_DEPTH} levels deep at line {line}; not parsed"
            ),
        ));
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        // serde_yaml_ng already prefixes its message with the path; say it once.
        let message = e.inner().to_string();
        let reason = message
            .strip_prefix(&format!("{key}: "))
            .unwrap_or(&message)
            .to_string();
        CatalogError::new(file, key, reason)
    })
}

/// The largest definition file read (YAML, SQL): the biggest real one is a few KiB, and parsing
/// costs memory many times a file's size (27 MB took 763 MiB).
pub const MAX_DEFINITION_BYTES: u64 = 1024 * 1024;

/// Files of one project subfolder with the given extensions, sorted by name so that the
/// version hash and "first definition wins" rules are deterministic.
fn read_dir_files(
    project_dir: &Path,
    sub: &str,
    extensions: &[&str],
    errors: &mut CatalogErrors,
) -> Vec<(String, String)> {
    let dir = project_dir.join(sub);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let rel = format!(
            "{sub}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size > MAX_DEFINITION_BYTES {
            errors.push(
                rel,
                "",
                format!(
                    "the file is {size} bytes; a definition file may be {} KiB at most (split it)",
                    MAX_DEFINITION_BYTES / 1024
                ),
            );
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => out.push((rel, text)),
            Err(e) => errors.push(rel, "", format!("cannot read file: {e}")),
        }
    }
    out
}

fn file_stem(rel: &str) -> String {
    Path::new(rel)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}
