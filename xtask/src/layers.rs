//! `xtask layers`: the architecture, checked.
//!
//! 1. **The core does no I/O.** `cargo tree -p k8sworker-core -e normal`
//!    lists none of [`FORBIDDEN_IN_CORE`].
//! 2. **No module cycles.** In every crate of the workspace, no top-level
//!    module imports another that imports it back, directly or through
//!    others. An import is a `crate::<module>` path in a module's code (its
//!    files under `src/<module>.rs` or `src/<module>/`), outside comments and
//!    outside its trailing `#[cfg(test)]` module.
//!
//! CI runs it; run it yourself with `cargo run -p xtask -- layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Crates that do I/O, or exist for it, and so may never be a normal
/// dependency of `k8sworker-core`, directly or indirectly.
pub const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio", "tonic", "prost", "kube", "hyper", "reqwest", "axum", "rusqlite",
];

/// Crate folders whose modules are checked for cycles.
const CRATES: &[&str] = &[
    "core",
    "proto",
    "telemetry",
    "planner",
    "executor",
    "gateway",
    "controlplane",
    "client",
    "tests/support",
    "tests/e2e",
    "xtask",
];

/// Runs both checks from the workspace root `root`; prints what it checked.
///
/// # Errors
/// A forbidden dependency of the core, a module cycle (each named), or a
/// failure to run `cargo tree` or read the sources.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();

    let tree = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(root)
        .args([
            "tree",
            "-p",
            "k8sworker-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .context("running cargo tree")?;
    if !tree.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&tree.stderr)
        );
    }
    let tree = String::from_utf8(tree.stdout).context("cargo tree output")?;
    let found = forbidden_dependencies(&tree);
    println!(
        "k8sworker-core: {} normal dependencies, none of {}: {}",
        tree.lines().collect::<BTreeSet<_>>().len(),
        FORBIDDEN_IN_CORE.join(", "),
        if found.is_empty() { "ok" } else { "FAILED" }
    );
    problems.extend(
        found
            .into_iter()
            .map(|name| format!("k8sworker-core depends on `{name}`")),
    );

    for krate in CRATES {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = module_graph(&src)?;
        let cycles = cycles(&graph);
        let edges: usize = graph.values().map(BTreeSet::len).sum();
        println!(
            "{krate}: {} modules, {edges} imports between them, {}",
            graph.len(),
            if cycles.is_empty() {
                "no cycle".to_owned()
            } else {
                format!("{} cycle(s)", cycles.len())
            }
        );
        for cycle in cycles {
            problems.push(format!(
                "{krate}: modules import each other: {}",
                cycle.join(" ↔ ")
            ));
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        bail!("the layering is broken:\n  - {}", problems.join("\n  - "))
    }
}

/// The forbidden crates named in `cargo tree --format {p}` output.
fn forbidden_dependencies(tree: &str) -> BTreeSet<String> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN_IN_CORE.contains(name))
        .map(str::to_owned)
        .collect()
}

/// Top-level module → the top-level modules its code imports.
fn module_graph(src: &Path) -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some(name) if path.is_dir() || path.extension().is_some_and(|e| e == "rs") => name,
            _ => continue,
        };
        if matches!(name, "lib" | "main" | "bin") {
            continue;
        }
        let imports = graph.entry(name.to_owned()).or_default();
        for file in rust_files(&path)? {
            let code =
                fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            imports.extend(crate_imports(&code).into_iter().filter(|m| m != name));
        }
    }
    // Imports of things that are not modules (re-exports at the crate root) are no edges.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for imports in graph.values_mut() {
        imports.retain(|m| modules.contains(m));
    }
    Ok(graph)
}

fn rust_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        files.extend(rust_files(&entry?.path())?);
    }
    Ok(files)
}

/// The top-level modules named by `crate::<module>` in `code`, outside
/// comments and the trailing `#[cfg(test)]` module; `use crate::{a, b::c}`
/// names both.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let code = match code.find("#[cfg(test)]\nmod tests") {
        Some(at) => &code[..at],
        None => code,
    };
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::`, not `crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                found.extend(first_segment(item.trim()));
            }
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// Every strongly connected component of more than one module, each sorted
/// (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, node: &'g str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            graph
                .entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    }

    #[test]
    fn imports_are_read_from_use_lines_and_paths_but_not_comments_or_tests() {
        let code = "use crate::model::{A, B};\nuse crate::{names, validate::{x, y}};\n\
                    /// See [`crate::render`].\nfn f() { crate::diff::diff(); my_crate::plan::x(); }\n\
                    #[cfg(test)]\nmod tests { use crate::quantity; }\n";
        let found: Vec<_> = crate_imports(code).into_iter().collect();
        assert_eq!(found, ["diff", "model", "names", "validate"]);
    }

    #[test]
    fn a_two_module_cycle_and_a_longer_one_are_found() {
        let graph = mk_graph(&[
            ("api", "server"),
            ("server", "api"),
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
        ]);
        assert_eq!(cycles(&graph), [vec!["a", "b", "c"], vec!["api", "server"]]);
    }

    #[test]
    fn a_layered_graph_has_no_cycle() {
        let graph = mk_graph(&[
            ("api", "store"),
            ("api", "state"),
            ("server", "api"),
            ("server", "state"),
        ]);
        assert!(cycles(&graph).is_empty());
    }

    #[test]
    fn forbidden_crates_are_found_by_name_only() {
        let tree = "k8sworker-core v0.1.0\nserde v1.0.0\ntokio-util v0.7.0\ntonic v0.14.0\n";
        assert_eq!(
            forbidden_dependencies(tree),
            BTreeSet::from(["tonic".to_owned()])
        );
    }
}
