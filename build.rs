//! Embeds the cockpit (web/index.html, web/app/* and the vendored ECharts, web/vendor/) into the
//! binary, so `kpilens serve` needs no repository beside it and no npm step before the build.

use std::fmt::Write;
use std::path::Path;

fn main() {
    // Read when the script runs, not when it was compiled: one compiled build script serves
    // every checkout that shares the target dir (CI's clones, a second worktree), and `env!`
    // would embed the files of whichever checkout compiled it first.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir);
    let web = root.join("web");
    let echarts = web.join("vendor/echarts.min.js");
    // Part of the repository: without it the cockpit would draw no chart, so no binary is built.
    assert!(
        echarts.is_file(),
        "{} is missing: it is part of the repository (see web/vendor/README.md)",
        echarts.display()
    );
    let mut files = vec![
        ("index.html".to_string(), web.join("index.html")),
        ("vendor/echarts.min.js".to_string(), echarts),
    ];
    let mut app: Vec<_> = std::fs::read_dir(web.join("app"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    app.sort();
    for path in app {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        files.push((format!("app/{name}"), path));
    }
    println!("cargo:rerun-if-changed=web/index.html");
    println!("cargo:rerun-if-changed=web/app");
    println!("cargo:rerun-if-changed=web/vendor/echarts.min.js");
    // The files' contents hashed into the generated source: incremental compilation does not
    // always notice a changed `include_bytes!` file, but it does notice this file changing.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (url, path) in &files {
        std::hash::Hash::hash(url, &mut hasher);
        std::hash::Hash::hash(&std::fs::read(path).unwrap_or_default(), &mut hasher);
    }
    let mut out = format!(
        "pub const CONTENT_HASH: u64 = {};\npub static EMBEDDED: &[(&str, &[u8])] = &[\n",
        std::hash::Hasher::finish(&hasher)
    );
    for (url, path) in files {
        if path.exists() {
            writeln!(
                out,
                "    ({url:?}, include_bytes!({:?})),",
                path.display().to_string()
            )
            .expect("write");
        }
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("web_assets.rs");
    std::fs::write(dest, out).expect("write web_assets.rs");
}
