//! The house rules of the source tree (docs/architecture.md): no source file over 500 lines,
//! `main.rs` at most 300, and no import cycle between the top-level modules (so `gpu/` uses
//! nothing of `kernels/`, `net/` or `train/`, and `report/` nothing of `run/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    sources(&root, &mut files);
    files.sort();
    (root, files)
}

#[test]
fn no_source_file_is_longer_than_500_lines_and_main_at_most_300() {
    let (root, files) = src();
    let mut long = vec![];
    for f in &files {
        let lines = std::fs::read_to_string(f).unwrap().lines().count();
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        let limit = if rel == "main.rs" { 300 } else { 500 };
        if lines > limit {
            long.push(format!("src/{rel}: {lines} lines (at most {limit})"));
        }
    }
    assert!(long.is_empty(), "{long:#?}");
}

/// Top-level module -> the top-level modules it names as `crate::X` (outside comments).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let (root, files) = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if first == "main.rs" || first == "lib.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let uses = graph.entry(module.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn the_top_level_modules_import_each_other_without_cycles() {
    let graph = module_graph();
    for forbidden in ["kernels", "net", "train", "run", "bench"] {
        assert!(
            !graph["gpu"].contains(forbidden),
            "gpu/ uses crate::{forbidden}: the device must not know what runs on it"
        );
    }
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m);
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut vec![], &mut done);
    }
    // The check sees what it should: the trainer does use the kernels.
    assert!(graph["train"].contains("kernels"), "{graph:?}");
}
