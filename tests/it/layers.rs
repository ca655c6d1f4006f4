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

/// Statements naming crate paths, with their first line: `use` statements (joined into one line
/// when they span lines) and other lines naming `crate::` or `super::` paths.
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
        } else if is_use(line) {
            if line.contains(';') {
                out.push((n + 1, line.to_string()));
            } else {
                open = Some((n + 1, line.to_string()));
            }
        } else if line.contains("crate::") || line.contains("super::") {
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

/// The file a `crate::`, `super::` or `self::` path inside `file` points at: the deepest module
/// file the path walks through (`super::rollup::DateWindow` from `planner/churn.rs` is
/// `planner/rollup.rs`; `super::df_err` is `planner/mod.rs`).
fn target_file(src: &Path, file: &Path, path: &[&str]) -> Option<std::path::PathBuf> {
    // The directory of the module `file` is (a mod.rs is its folder's module).
    let own_dir = |f: &Path| -> std::path::PathBuf {
        if f.file_name().is_some_and(|n| n == "mod.rs") {
            f.parent().unwrap().to_path_buf()
        } else {
            f.with_extension("")
        }
    };
    let module_file = |dir: &Path| -> Option<std::path::PathBuf> {
        let rs = dir.with_extension("rs");
        let m = dir.join("mod.rs");
        if rs.is_file() {
            Some(rs)
        } else if m.is_file() {
            Some(m)
        } else {
            None
        }
    };
    let (mut dir, rest) = match *path.first()? {
        "crate" => (src.to_path_buf(), &path[1..]),
        "self" => (own_dir(file), &path[1..]),
        "super" => {
            let mut dir = own_dir(file).parent()?.to_path_buf();
            let mut rest = &path[1..];
            while rest.first() == Some(&"super") {
                dir = dir.parent()?.to_path_buf();
                rest = &rest[1..];
            }
            (dir, rest)
        }
        _ => return None,
    };
    let mut found = module_file(&dir);
    for segment in rest {
        let next = dir.join(segment);
        match module_file(&next) {
            Some(f) => {
                found = Some(f);
                dir = next;
            }
            None => break,
        }
    }
    found
}

/// Every path a `use` statement names, split into segments (`use super::{a, b::{c, d}}` names
/// `super::a`, `super::b::c`, `super::b::d`); other lines give their `crate::`/`super::` paths.
fn named_paths(statement: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
        let text = text.trim().trim_end_matches(';').trim();
        if let Some(open) = text.find('{') {
            let close = text.rfind('}').unwrap_or(text.len());
            let mut base = prefix.to_vec();
            base.extend(
                text[..open]
                    .split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            let inner = &text[open + 1..close];
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&base, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&base, &inner[start..], out);
        } else if !text.is_empty() {
            let mut p = prefix.to_vec();
            p.extend(text.split(" as ").next().unwrap().split("::").map(|s| {
                s.trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            }));
            out.push(p);
        }
    }
    let mut out = Vec::new();
    let s = statement.trim();
    let body = is_use(s).then(|| &s[s.find("use ").unwrap() + 4..]);
    match body {
        Some(body) => expand(&[], body, &mut out),
        None => {
            // A path written inline: `crate::text::clip(...)`, `super::rollup::x(...)`.
            for start in ["crate::", "super::"] {
                let mut rest = s;
                while let Some(i) = rest.find(start) {
                    let path: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    out.push(path.split("::").map(String::from).collect());
                    rest = &rest[i + path.len().max(1)..];
                }
            }
        }
    }
    out
}

/// `use ...`, `pub use ...`, `pub(crate) use ...`, `pub(in crate::x) use ...`.
fn is_use(line: &str) -> bool {
    line.starts_with("use ") || (line.starts_with("pub") && line.contains(" use "))
}

/// Circles between the files under `dir`: each as the files in order, back to the first.
fn file_circles(src: &Path, dir: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let rel = |f: &Path| f.strip_prefix(src).unwrap().to_string_lossy().to_string();
    let mut edges: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let from = rel(file);
        // A module's own children, named without a prefix (`churn::frame(..)` in planner/mod.rs).
        let children: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let rest = l
                    .strip_prefix("pub mod ")
                    .or_else(|| l.strip_prefix("mod "))?;
                rest.strip_suffix(';').map(str::to_string)
            })
            .collect();
        // Code lines, re-exports left out (see below).
        let mut code: Vec<String> = Vec::new();
        let mut in_reexport = false;
        for raw in text.lines() {
            let line = raw.split("//").next().unwrap_or("").trim();
            if in_reexport || (line.starts_with("pub") && is_use(line)) {
                in_reexport = !line.contains(';');
                continue;
            }
            code.push(line.to_string());
        }
        for child in &children {
            let named = code.iter().any(|l| {
                l.match_indices(&format!("{child}::")).any(|(i, _)| {
                    !l[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                })
            });
            let Some(to) = target_file(src, file, &["self", child]) else {
                continue;
            };
            if named {
                edges.entry(from.clone()).or_default().insert(rel(&to));
            }
        }
        for (_, statement) in statements(&text) {
            // A re-export is the module's face for its callers, not something its code uses.
            if statement.starts_with("pub") && is_use(&statement) {
                continue;
            }
            for path in named_paths(&statement) {
                let segments: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some(to) = target_file(src, file, &segments)
                    && to.starts_with(dir)
                    && to != *file
                {
                    edges.entry(from.clone()).or_default().insert(rel(&to));
                }
            }
        }
    }
    // Depth-first search; a node on the stack reached again closes a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, std::collections::BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == node) {
            let mut circle = stack[i..].to_vec();
            circle.push(node.to_string());
            out.push(circle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, out);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut out = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    for file in &files {
        visit(&rel(file), &edges, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

#[test]
fn files_inside_the_query_layers_depend_one_way() {
    let src = super::repo_dir().join("src");
    let circles: Vec<String> = ["semantic", "service"]
        .iter()
        .flat_map(|m| file_circles(&src, &src.join(m)))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "files that import each other (through any path):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_file_graph_reads_every_kind_of_path() {
    assert_eq!(
        named_paths("use super::{a, b::{c, d as e}, f::G};"),
        [
            vec!["super", "a"],
            vec!["super", "b", "c"],
            vec!["super", "b", "d"],
            vec!["super", "f", "G"]
        ]
    );
    assert_eq!(
        named_paths("let x = super::rollup::pick(crate::text::clip(y));"),
        [
            vec!["crate", "text", "clip"],
            vec!["super", "rollup", "pick"]
        ]
    );
    assert_eq!(
        named_paths("pub(in crate::semantic) use self::x::{Y, Z};"),
        [vec!["self", "x", "Y"], vec!["self", "x", "Z"]]
    );
    let src = super::repo_dir().join("src");
    let churn = src.join("semantic/planner/churn.rs");
    assert_eq!(
        target_file(&src, &churn, &["super", "pick", "pick_churn"]),
        Some(src.join("semantic/planner/pick.rs"))
    );
    assert_eq!(
        target_file(&src, &churn, &["super", "rollup", "window", "DateWindow"]),
        Some(src.join("semantic/planner/rollup/window.rs"))
    );
    assert_eq!(
        target_file(&src, &churn, &["super", "rollup", "DateWindow"]),
        Some(src.join("semantic/planner/rollup/mod.rs"))
    );
    assert_eq!(
        target_file(&src, &churn, &["super", "df_err"]),
        Some(src.join("semantic/planner/mod.rs"))
    );
    assert_eq!(
        target_file(&src, &churn, &["super", "super", "calendar", "shift"]),
        Some(src.join("semantic/calendar.rs"))
    );
}
