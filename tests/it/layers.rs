//! The layers of `src/` depend one way: a module may use modules of lower layers (and its own),
//! never one above. Read from the source's `crate::` paths, so an upward import fails here with
//! the file and the line, before it becomes a cycle someone has to untangle.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. Modules in one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    // Progress on the terminal (the generator and the rollup builds report to it).
    &["progress"],
    // Depend on nothing in the crate: the request protocol, settings, text and network helpers,
    // the demo bank's generator.
    &["protocol", "config", "text", "net", "datagen", "telemetry"],
    &["spec"],                                        // YAML types
    &["security"], // who asks, what they may see: principals, scopes, tokens, audit, limits
    &["catalog"],  // validated definitions
    &["semantic"], // validation of queries, the planner, composing sub-queries
    &["engine"],   // where plans run: sessions, table registration
    &["state"],    // a catalog with its tables and rollups over one snapshot of the data
    &["cache"],    // results keyed by data version
    &["service"],  // the one query path, catalog lifecycle
    &["dashboard", "alerts", "metric_tests", "demo"], // applications of the service
    &["export"],   // files for Excel of queries, lists and dashboards
    &["api"],      // HTTP
    &["server"],   // wiring: the server and its background tasks
    &["cli"],      // the command line (the binary's own modules)
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::<module>` a line names (`use crate::{a::X, b}` names a and b).
fn crate_modules(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: the first identifier after `{` and after each comma
            // at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[j..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphanumeric() || c == '_') => {
                        let ident: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        out.push(ident);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(ident);
        }
    }
    out
}

/// `use` statements may span lines: each statement is joined into one line first.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if let Some((start, mut acc)) = open.take() {
            acc.push(' ');
            acc.push_str(line);
            if line.contains(';') {
                out.push((start, acc));
            } else {
                open = Some((start, acc));
            }
        } else if line.starts_with("use crate::") || line.starts_with("pub use crate::") {
            if line.contains(';') {
                out.push((n + 1, line.to_string()));
            } else {
                open = Some((n + 1, line.to_string()));
            }
        } else if line.contains("crate::") {
            out.push((n + 1, line.to_string()));
        }
    }
    out
}

fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    for file in files {
        let rel = file
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel == "main.rs" || rel == "lib.rs" {
            continue;
        }
        let module = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = layer_of(&module) else {
            found.push(format!(
                "src/{rel}: module '{module}' is in no layer (tests/it/layers.rs)"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, statement) in statements(&text) {
            for used in crate_modules(&statement) {
                if used == module || used == "self" {
                    continue;
                }
                match layer_of(&used) {
                    Some(l) if l < own => {}
                    Some(_) => found.push(format!(
                        "src/{rel}:{line}: '{module}' uses '{used}', which is not below it: {statement}"
                    )),
                    None => found.push(format!(
                        "src/{rel}:{line}: '{used}' is in no layer (tests/it/layers.rs)"
                    )),
                }
            }
        }
    }
    found
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let found = violations(&super::repo_dir().join("src"));
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_every_kind_of_import() {
    assert_eq!(crate_modules("use crate::catalog::Catalog;"), ["catalog"]);
    assert_eq!(
        crate_modules("use crate::{catalog::{A, B}, semantic, spec::x::Y};"),
        ["catalog", "semantic", "spec"]
    );
    assert_eq!(
        crate_modules("let x = crate::text::clip(crate::semantic::f());"),
        ["text", "semantic"]
    );
    let text = "use crate::{\n    api,\n    // service\n    cache::Key,\n};\nfn f() {}\n";
    assert_eq!(statements(text).len(), 1);
    assert_eq!(crate_modules(&statements(text)[0].1), ["api", "cache"]);
    // Every module of src/ is in a layer.
    let mut seen = BTreeMap::new();
    for entry in std::fs::read_dir(super::repo_dir().join("src")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        let module = name.trim_end_matches(".rs").to_string();
        if module != "main" && module != "lib" && !name.ends_with(".json") {
            seen.insert(module.clone(), layer_of(&module));
        }
    }
    let missing: Vec<_> = seen.iter().filter(|(_, l)| l.is_none()).collect();
    assert!(missing.is_empty(), "modules in no layer: {missing:?}");
}
