//! The crate's layers point only down. Each top-level module may use only
//! the modules listed before it here (the README's "Architecture" map);
//! a use of a later module, and so any import cycle, fails this test with
//! the file and line that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. Modules on one line are peers: neither may use the other.
const LAYERS: &[&[&str]] = &[
    &["util"],
    &["nix", "rootless"],
    &["oci"],
    &["image"],
    &["containerd", "registry", "packages"],
    &["sink"],
    &["source"],
    &["pipeline"],
    &["plan"],
    &["enclave"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::MODULE` a line of code (not a comment) names, with where.
fn uses(src: &Path) -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" || top == "cli" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    found.push((
                        top.clone(),
                        name,
                        format!("src/{}:{}", rel.display(), n + 1),
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                rank(m).is_some(),
                "src/lib.rs declares `{m}`, which has no layer in tests/architecture.rs"
            );
        }
    }
}

#[test]
fn layers_point_only_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to, at) in uses(&src) {
        graph.entry(from.clone()).or_default().insert(to.clone());
        match (rank(&from), rank(&to)) {
            (Some(a), Some(b)) if b < a => {}
            _ => wrong.push(format!("{at}: `{from}` uses `{to}`")),
        }
    }
    assert!(
        wrong.is_empty(),
        "uses against the layer order (lowest first: {LAYERS:?}):\n{}",
        wrong.join("\n")
    );
    // No cycle (implied by the order, checked on its own for a clear message).
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for n in graph.get(m).into_iter().flatten() {
            visit(n, graph, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_sees_uses() {
    // The scan must find real uses, or the order test proves nothing.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = uses(&src);
    assert!(found
        .iter()
        .any(|(f, t, _)| f == "pipeline" && t == "image"));
    assert!(found.iter().any(|(f, t, _)| f == "enclave" && t == "plan"));
}
