//! `xtask layers`: the architecture, checked.
//!
//! 1. **The core does no I/O.** `cargo tree -p k8sworker-core -e normal`
//!    lists none of [`FORBIDDEN_IN_CORE`].
//! 2. **No module cycles.** In every crate folder of [`CRATES`], for each
//!    crate root under `src/` (`lib.rs`, `main.rs`, `bin/*`), no module
//!    imports a module that imports it back, directly or through others, and
//!    neither does any top-level module (`api`, `store`, …, with every
//!    submodule folded into its top-level one). An import is a path one
//!    module's code names into another: `crate::…`, `super::…`, `self::…` or
//!    a child module's name, in a `use` tree or inline, and a name
//!    re-exported by `pub use` counts for the module it comes from; comments
//!    and string literals are not code, inline modules such as
//!    `mod tests { .. }` (test code included) are part of their file's
//!    module ([`modules`] has the details). Every `.rs` file under `src/`
//!    must be reached by a `mod` declaration from a root, so no file goes
//!    unchecked.
//!
//! It prints, per crate root, how many modules and imports each graph has
//! and whether it has a cycle; it fails naming every problem. CI runs it;
//! run it yourself with `cargo run -p xtask -- layers`.

mod modules;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use self::modules::Graph;

/// Crates that do I/O, or exist for it, and so may never be a normal
/// dependency of `k8sworker-core`, directly or indirectly.
pub const FORBIDDEN_IN_CORE: &[&str] = &[
    "tokio", "tonic", "prost", "kube", "hyper", "reqwest", "axum", "rusqlite",
];

/// Crate folders whose modules are checked for cycles; folders that do not
/// exist are skipped.
const CRATES: &[&str] = &[
    "core",
    "proto",
    "telemetry",
    "planner",
    "executor",
    "gateway",
    "controlplane",
    "client",
    "cli",
    "tests/support",
    "tests/e2e",
    "xtask",
];

/// Runs both checks from the workspace root `root`; prints what it checked.
///
/// # Errors
/// A forbidden dependency of the core, a module cycle (each named), a source
/// file no `mod` declaration reaches, or a failure to run `cargo tree` or
/// read the sources.
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
        if src.is_dir() {
            problems.extend(check_modules(krate, &src)?);
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

/// Reads the crate whose sources are in `src` (called `krate` in messages),
/// prints one line per crate root, and returns its problems: every cycle of
/// either graph, and every `.rs` file no root reaches.
///
/// # Errors
/// A file that cannot be read, or a `mod` declaration without its file.
fn check_modules(krate: &str, src: &Path) -> anyhow::Result<Vec<String>> {
    let trees = modules::trees(src)?;
    let mut problems = Vec::new();
    for tree in &trees {
        let label = format!("{krate}/src/{}", tree.root.display());
        let graph = modules::graph(&tree.modules);
        let top = modules::fold_to_top_level(&graph);
        let (cycles, top_cycles) = (modules::cycles(&graph), modules::cycles(&top));
        println!(
            "{label}: {}; top level: {}",
            summary(&graph, &cycles),
            summary(&top, &top_cycles)
        );
        for cycle in cycles {
            problems.push(format!(
                "{label}: modules import each other: {}",
                cycle.join(" ↔ ")
            ));
        }
        for cycle in top_cycles {
            problems.push(format!(
                "{label}: top-level modules import each other: {}",
                cycle.join(" ↔ ")
            ));
        }
    }
    for file in modules::unreached(src, &trees)? {
        let file = file.strip_prefix(src).unwrap_or(&file).display();
        println!("{krate}/src/{file}: reached by no `mod` declaration");
        problems.push(format!(
            "{krate}/src/{file}: reached by no `mod` declaration, so not checked"
        ));
    }
    Ok(problems)
}

/// `12 modules, 30 imports, no cycle`, or `… 2 cycle(s)`.
fn summary(graph: &Graph, cycles: &[Vec<String>]) -> String {
    let imports: usize = graph.values().map(BTreeSet::len).sum();
    let cycles = if cycles.is_empty() {
        "no cycle".to_owned()
    } else {
        format!("{} cycle(s)", cycles.len())
    };
    format!("{} modules, {imports} imports, {cycles}", graph.len())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    /// The workspace root this test runs in.
    fn workspace() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
    }

    /// The per-module graph of one root of one crate folder of this workspace.
    fn real_graph(krate: &str, root: &str) -> Graph {
        let trees = modules::trees(&workspace().join(krate).join("src")).unwrap();
        let tree = trees
            .iter()
            .find(|tree| tree.root == Path::new(root))
            .unwrap_or_else(|| panic!("{krate} has no root {root}"));
        modules::graph(&tree.modules)
    }

    fn assert_edges(graph: &Graph, edges: &[(&str, &str)]) {
        for (from, to) in edges {
            assert!(
                graph
                    .get(*from)
                    .is_some_and(|targets| targets.contains(*to)),
                "expected the edge {from} -> {to}; the reader missed it"
            );
        }
    }

    /// A crate folder under the system's temporary directory, removed on drop.
    struct Planted(PathBuf);

    impl Planted {
        fn new(name: &str, files: &[(&str, &str)]) -> Planted {
            let dir =
                std::env::temp_dir().join(format!("xtask-layers-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            for (path, code) in files {
                let path = dir.join("src").join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, code).unwrap();
            }
            Planted(dir)
        }

        fn src(&self) -> PathBuf {
            self.0.join("src")
        }
    }

    impl Drop for Planted {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_reader_sees_the_control_planes_layering() {
        // The reader must see the layering, or the check proves nothing.
        let graph = real_graph("controlplane", "lib.rs");
        assert_edges(
            &graph,
            &[
                ("api::resource", "store"),
                ("api::resource", "api::error"),
                ("maintenance", "state"),
                ("server", "state"),
                ("store::workitems", "lifecycle"),
            ],
        );
        assert_edges(
            &modules::fold_to_top_level(&graph),
            &[
                ("api", "store"),
                ("server", "state"),
                ("store", "lifecycle"),
            ],
        );
    }

    #[test]
    fn the_reader_sees_a_binarys_own_modules() {
        // `main.rs` is a root like `lib.rs`: xtask's binary reaches `layers`
        // through a child path, `layers` its `modules` the same way.
        let graph = real_graph("xtask", "main.rs");
        assert_edges(
            &graph,
            &[("crate", "layers"), ("layers", "layers::modules")],
        );
    }

    #[test]
    fn every_crate_folder_of_the_workspace_is_read() {
        let mut read = Vec::new();
        for krate in CRATES {
            let src = workspace().join(krate).join("src");
            if !src.is_dir() {
                continue;
            }
            let trees = modules::trees(&src).unwrap();
            assert!(!trees.is_empty(), "{krate}: no crate root under src/");
            assert!(
                modules::unreached(&src, &trees).unwrap().is_empty(),
                "{krate}: files no root reaches"
            );
            read.push(*krate);
        }
        for krate in ["core", "controlplane", "executor", "xtask"] {
            assert!(read.contains(&krate), "{krate} was not read");
        }
    }

    #[test]
    fn a_planted_cycle_fails_the_check_with_its_modules_named() {
        let planted = Planted::new(
            "cycle",
            &[
                ("lib.rs", "pub mod api;\npub mod store;\npub mod state;\n"),
                ("api/mod.rs", "pub mod resource;\npub mod error;\n"),
                (
                    "api/resource.rs",
                    "use crate::store::Store;\nuse super::error::Error;\n",
                ),
                ("api/error.rs", "// crate::store in a comment\n"),
                (
                    "store/mod.rs",
                    "pub mod workitems;\npub use workitems::Store;\n",
                ),
                (
                    "store/workitems.rs",
                    "fn f() { crate::api::resource::handle(); }\n",
                ),
                ("state.rs", "const S: &str = \"crate::api\";\n"),
                ("main.rs", "mod wiring;\nfn main() { wiring::run(); }\n"),
                ("wiring.rs", "pub fn run() { crate::main(); }\n"),
                ("orphan.rs", ""),
            ],
        );
        let problems = check_modules("planted", &planted.src()).unwrap();
        assert_eq!(
            problems,
            [
                "planted/src/lib.rs: modules import each other: api::resource ↔ store::workitems",
                "planted/src/lib.rs: top-level modules import each other: api ↔ store",
                "planted/src/main.rs: modules import each other: crate ↔ wiring",
                "planted/src/main.rs: top-level modules import each other: crate ↔ wiring",
                "planted/src/orphan.rs: reached by no `mod` declaration, so not checked",
            ]
        );
    }

    #[test]
    fn a_layered_crate_passes() {
        let planted = Planted::new(
            "layered",
            &[
                ("lib.rs", "pub mod api;\npub mod store;\n"),
                ("api.rs", "use crate::store::{self, Store};\n"),
                ("store.rs", "pub struct Store;\n"),
                (
                    "bin/load/main.rs",
                    "mod args;\nfn main() { args::parse(); }\n",
                ),
                ("bin/load/args.rs", "pub fn parse() {}\n"),
                ("bin/once.rs", "fn main() {}\n"),
            ],
        );
        assert!(check_modules("planted", &planted.src()).unwrap().is_empty());
        let trees = modules::trees(&planted.src()).unwrap();
        let roots: Vec<_> = trees.iter().map(|tree| tree.root.clone()).collect();
        assert_eq!(
            roots,
            ["lib.rs", "bin/load/main.rs", "bin/once.rs"].map(PathBuf::from)
        );
        assert_eq!(
            modules::graph(&trees[1].modules)["crate"],
            BTreeSet::from(["args".to_owned()])
        );
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
