//! The module reader: which module of a crate names a path into which.
//!
//! ```text
//! src/lib.rs ─┐                     `mod` declarations, followed
//! src/main.rs ├─▶ module tree ───▶ one Module per file: code without comments
//! src/bin/*.rs┘   per root          and literals, its `mod name;` children
//!                      │
//!                      ▼
//!                 graph: module ─▶ the modules its paths reach
//!                      │
//!                      ▼
//!                 fold_to_top_level, cycles
//! ```
//!
//! Each crate root (`lib.rs`, `main.rs`, `bin/<name>.rs`,
//! `bin/<name>/main.rs`) is its own tree, whose root module is `crate`. Every
//! file a `mod name;` reaches from a root is a module (`store/mod.rs` is
//! `store`, `store/workitems.rs` is `store::workitems`); an inline module
//! (`mod tests { .. }`) is part of the file's module. A module depends on
//! another when its code names a path into it: `crate::…`, `super::…`,
//! `self::…`, or a child module's name, in a `use` tree or inline
//! (`crate::auth::random_id(..)`). Comments and string and character literals
//! are not code. A path counts for the longest module it reaches
//! (`crate::store::workitems::insert` is `store::workitems`), and for the
//! module an item comes from when it names a `pub use` there (`crate::Error`,
//! with `pub use error::Error;` in `lib.rs`, is `error`): the importer uses
//! that module's code, not the re-exporter's. A parent's `mod` declarations
//! are no edges; any path from a parent into its child is, a `pub use` too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Module → the other modules its code names a path into; module names are
/// `crate` for the root and `a::b` below it.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// One crate root and the modules its `mod` declarations reach.
#[derive(Debug)]
pub struct Tree {
    /// The root file, relative to `src/` (`lib.rs`, `bin/load.rs`).
    pub root: PathBuf,
    /// Module name → its code.
    pub modules: BTreeMap<String, Module>,
    /// Every file of the tree, as read.
    pub files: BTreeSet<PathBuf>,
}

/// One module's code (comments and literals removed), its child modules and
/// what it re-exports.
#[derive(Debug)]
pub struct Module {
    code: String,
    children: BTreeSet<String>,
    /// Name under which a `pub use` makes an item visible here → the path
    /// it names (`pub use error::Error;` is `Error` → `error::Error`).
    reexports: BTreeMap<String, Vec<String>>,
}

impl Module {
    /// Reads one file's source.
    pub fn new(source: &str) -> Module {
        let code = strip(source);
        let children = declared_modules(&code);
        let reexports = reexports(&code);
        Module {
            code,
            children,
            reexports,
        }
    }
}

/// The module trees of the crate whose sources are in `src`: one per root
/// that exists, `lib.rs` first, then `main.rs`, then `bin/` in name order.
///
/// # Errors
/// A file that cannot be read, or a `mod name;` with neither `name.rs` nor
/// `name/mod.rs` beside it.
pub fn trees(src: &Path) -> anyhow::Result<Vec<Tree>> {
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(PathBuf::from)
        .filter(|root| src.join(root).is_file())
        .collect();
    let bin = src.join("bin");
    if bin.is_dir() {
        let mut binaries = Vec::new();
        for entry in fs::read_dir(&bin).with_context(|| format!("reading {}", bin.display()))? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default();
            if path.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
                binaries.push(Path::new("bin").join(name));
            } else if path.join("main.rs").is_file() {
                binaries.push(Path::new("bin").join(name).join("main.rs"));
            }
        }
        binaries.sort();
        roots.extend(binaries);
    }
    roots.into_iter().map(|root| tree(src, root)).collect()
}

/// The tree of one root: the root file is `crate`; `mod name;` in a module
/// whose children live in `dir` is `dir/name.rs` or `dir/name/mod.rs`, and
/// its own children live in `dir/name/`.
fn tree(src: &Path, root: PathBuf) -> anyhow::Result<Tree> {
    let root_file = src.join(&root);
    let root_dir = root_file.parent().unwrap_or(src).to_owned();
    let mut modules = BTreeMap::new();
    let mut files = BTreeSet::new();
    let mut pending = vec![("crate".to_owned(), root_file, root_dir)];
    while let Some((name, file, dir)) = pending.pop() {
        let source =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let module = Module::new(&source);
        for child in &module.children {
            let candidates = [
                dir.join(format!("{child}.rs")),
                dir.join(child).join("mod.rs"),
            ];
            let Some(child_file) = candidates.into_iter().find(|path| path.is_file()) else {
                bail!(
                    "{} declares `mod {child};` but neither {child}.rs nor {child}/mod.rs is in {}",
                    file.display(),
                    dir.display()
                );
            };
            let child_name = if name == "crate" {
                child.clone()
            } else {
                format!("{name}::{child}")
            };
            pending.push((child_name, child_file, dir.join(child)));
        }
        files.insert(file);
        modules.insert(name, module);
    }
    Ok(Tree {
        root,
        modules,
        files,
    })
}

/// The `.rs` files under `src` that no tree reached (not compiled, or
/// reached in a way this reader does not follow, such as `#[path]`).
///
/// # Errors
/// A directory that cannot be read.
pub fn unreached(src: &Path, trees: &[Tree]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    files.retain(|file| !trees.iter().any(|tree| tree.files.contains(file)));
    files.sort();
    Ok(files)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The code without comments, string and character literals (each literal
/// becomes `""`).
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && matches!(next, Some('#' | '"')) && !ident_char(prev(&chars, i)) {
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), else a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev(chars: &[char], i: usize) -> char {
    if i == 0 { ' ' } else { chars[i - 1] }
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `mod name;` declarations (file modules; inline `mod tests { .. }` is part
/// of its parent).
fn declared_modules(code: &str) -> BTreeSet<String> {
    let tokens = tokens(code);
    let mut out = BTreeSet::new();
    for window in tokens.windows(3) {
        if window[0] == "mod" && window[2] == ";" {
            out.insert(window[1].clone());
        }
    }
    out
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if ident_char(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Every path the module's code names, with how many inline modules
/// (`mod tests { .. }`) it stands in: `use` trees expanded, and inline paths
/// of two or more segments.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let tokens = tokens(code);
    let mut out = Vec::new();
    // The brace depth at which each enclosing inline module opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "{" {
            if i >= 2 && tokens[i - 2] == "mod" {
                inline.push(depth);
            }
            depth += 1;
            i += 1;
        } else if tokens[i] == "}" {
            depth -= 1;
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            i += 1;
        } else if tokens[i] == "use" && (i == 0 || tokens[i - 1] != "::") {
            let end = tokens[i..]
                .iter()
                .position(|token| token == ";")
                .map_or(tokens.len(), |offset| i + offset);
            let mut position = i + 1;
            let mut trees = Vec::new();
            expand_use(&tokens[..end], &mut position, Vec::new(), &mut trees);
            out.extend(trees.into_iter().map(|(path, _)| (inline.len(), path)));
            i = end;
        } else if is_ident(&tokens[i]) && tokens.get(i + 1).is_some_and(|t| t == "::") {
            let preceded_by_path = i > 0 && tokens[i - 1] == "::";
            let mut path = vec![tokens[i].clone()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|t| t == "::")
                && tokens.get(j + 1).is_some_and(|t| is_ident(t))
            {
                path.push(tokens[j + 1].clone());
                j += 2;
            }
            if !preceded_by_path {
                out.push((inline.len(), path));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The `pub use` (also `pub(crate)`, `pub(super)`) items of a module's own
/// code, outside inline modules, by the name they are visible under; glob
/// imports name no item and are left out.
fn reexports(code: &str) -> BTreeMap<String, Vec<String>> {
    let tokens = tokens(code);
    let mut out = BTreeMap::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "use" if depth == 0 && is_public(&tokens[..i]) => {
                let end = tokens[i..]
                    .iter()
                    .position(|token| token == ";")
                    .map_or(tokens.len(), |offset| i + offset);
                let mut position = i + 1;
                let mut trees = Vec::new();
                expand_use(&tokens[..end], &mut position, Vec::new(), &mut trees);
                for (path, alias) in trees {
                    let name = alias.or_else(|| path.last().cloned());
                    if let Some(name) = name.filter(|name| is_ident(name) && name != "self") {
                        out.insert(name, path);
                    }
                }
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether the tokens before a `use` end in a visibility: `pub`, or
/// `pub(…)`.
fn is_public(before: &[String]) -> bool {
    match before {
        [.., last] if last == "pub" => true,
        [.., last] if last == ")" => before
            .iter()
            .rposition(|token| token == "(")
            .is_some_and(|open| open > 0 && before[open - 1] == "pub"),
        _ => false,
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Expands one use tree starting at `tokens[*position]` under `prefix`:
/// each path with its `as` name, if any.
fn expand_use(
    tokens: &[String],
    position: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix;
    let mut alias = None;
    while *position < tokens.len() {
        let token = &tokens[*position];
        if token == "{" {
            *position += 1;
            loop {
                expand_use(tokens, position, path.clone(), out);
                match tokens.get(*position).map(String::as_str) {
                    Some(",") => *position += 1,
                    Some("}") => {
                        *position += 1;
                        return;
                    }
                    _ => return,
                }
                if tokens.get(*position).is_some_and(|t| t == "}") {
                    *position += 1;
                    return;
                }
            }
        } else if token == "::" {
            *position += 1;
        } else if token == "as" {
            alias = tokens.get(*position + 1).cloned();
            *position += 2;
        } else if token == "," || token == "}" {
            break;
        } else {
            if token != "self" || path.is_empty() {
                path.push(token.clone());
            }
            *position += 1;
        }
    }
    if !path.is_empty() {
        out.push((path, alias));
    }
}

/// How many `pub use` re-exports [`resolve`] follows in a row.
const REEXPORT_HOPS: usize = 8;

/// The module a path from `module` reaches, if it is one of ours; `inline`
/// is how many inline modules of `module` the path stands in (their
/// `super` stays in the file). Through a re-export it reaches the module the
/// item comes from; `hops` is how many more re-exports it may follow.
fn resolve(
    module: &str,
    inline: usize,
    path: &[String],
    modules: &BTreeMap<String, Module>,
    hops: usize,
) -> Option<String> {
    let mut base: Vec<String> = if module == "crate" {
        Vec::new()
    } else {
        module.split("::").map(str::to_owned).collect()
    };
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &rest[1..];
        }
        "super" | "self" => {
            let mut inline = inline;
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" if inline > 0 => inline -= 1,
                    "super" => {
                        base.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        first if modules[module].children.contains(first) => {}
        _ => return None,
    }
    let mut reached = if base.is_empty() {
        "crate".to_owned()
    } else {
        base.join("::")
    };
    let mut current = base;
    let mut item = None;
    for segment in rest {
        current.push(segment.clone());
        let name = current.join("::");
        if modules.contains_key(&name) {
            reached = name;
        } else {
            item = Some(segment);
            break;
        }
    }
    let reexport = item.and_then(|item| modules.get(&reached)?.reexports.get(item));
    match reexport {
        Some(source) if hops > 0 => {
            resolve(&reached, 0, source, modules, hops - 1).or(Some(reached))
        }
        _ => Some(reached),
    }
}

/// Every module of `modules` → the other modules its paths reach.
pub fn graph(modules: &BTreeMap<String, Module>) -> Graph {
    let mut graph = Graph::new();
    for (name, module) in modules {
        let targets = graph.entry(name.clone()).or_default();
        for (inline, path) in paths(&module.code) {
            if let Some(target) = resolve(name, inline, &path, modules, REEXPORT_HOPS)
                && target != *name
            {
                targets.insert(target);
            }
        }
    }
    graph
}

/// The graph of top-level modules (`api`, `store`, `crate`): every
/// submodule folded into its top-level one, edges inside one dropped.
pub fn fold_to_top_level(graph: &Graph) -> Graph {
    let top = |name: &str| name.split("::").next().unwrap_or(name).to_owned();
    let mut out = Graph::new();
    for (from, targets) in graph {
        let entry = out.entry(top(from)).or_default();
        for to in targets {
            if top(to) != top(from) {
                entry.insert(top(to));
            }
        }
    }
    out
}

/// Every strongly connected component of more than one module, each sorted,
/// in order (Tarjan's algorithm).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for target in self.graph.get(node).into_iter().flatten() {
                let target = target.as_str();
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[node].min(self.low[target]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[node].min(self.index[target]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
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
        out: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node.as_str()) {
            tarjan.visit(node);
        }
    }
    tarjan.out.sort();
    tarjan.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_modules(files: &[(&str, &str)]) -> BTreeMap<String, Module> {
        files
            .iter()
            .map(|(name, source)| ((*name).to_owned(), Module::new(source)))
            .collect()
    }

    fn mk_graph(edges: &[(&str, &str)]) -> Graph {
        let mut graph = Graph::new();
        for (from, to) in edges {
            graph
                .entry((*from).to_owned())
                .or_default()
                .insert((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn imports_are_read_from_use_trees_and_inline_paths_but_not_comments_or_literals() {
        let modules = mk_modules(&[
            (
                "crate",
                "mod model;\nmod names;\nmod validate;\nmod render;\nmod diff;\nmod plan;\nmod quantity;\nmod kind;\nmod labels;\n",
            ),
            (
                "plan",
                "use crate::model::{A, B};\nuse crate::{names, validate::{x, y}};\n\
                 /// See [`crate::render`].\n/* crate::kind */\n\
                 fn f() { crate::diff::diff(); my_crate::labels::x(); }\n\
                 const S: &str = \"crate::quantity\";\nconst R: &str = r#\"crate::kind\"#;\n\
                 fn g<'a>(c: char) -> bool { c == '\"' || c == '{' }\n",
            ),
            ("model", ""),
            ("names", ""),
            ("validate", ""),
            ("render", ""),
            ("diff", ""),
            ("quantity", ""),
            ("kind", ""),
            ("labels", ""),
        ]);
        assert_eq!(
            graph(&modules)["plan"],
            set(&["diff", "model", "names", "validate"])
        );
    }

    #[test]
    fn paths_resolve_to_the_longest_module_they_reach() {
        let modules = mk_modules(&[
            (
                "crate",
                "pub mod api;\npub mod store;\npub use store::Store;\n",
            ),
            ("api", "pub mod resource;\npub mod error;\n"),
            (
                "api::resource",
                "use super::error::Error;\nuse self::super::super::store::workitems::insert;\n",
            ),
            ("api::error", "fn f() -> crate::Store { todo!() }\n"),
            (
                "store",
                "pub mod workitems;\nfn f() { workitems::insert(); }\n",
            ),
            ("store::workitems", "pub fn insert() {}\n"),
        ]);
        let graph = graph(&modules);
        assert_eq!(graph["crate"], set(&["store"]));
        assert_eq!(graph["api"], set(&[]), "`mod` declarations are no edges");
        assert_eq!(
            graph["api::resource"],
            set(&["api::error", "store::workitems"])
        );
        assert_eq!(
            graph["api::error"],
            set(&["store"]),
            "`crate::Store` is `store::Store`"
        );
        assert_eq!(graph["store"], set(&["store::workitems"]));
        assert_eq!(
            fold_to_top_level(&graph),
            mk_graph(&[("crate", "store"), ("api", "store")])
        );
    }

    #[test]
    fn the_reader_finds_cycles() {
        let modules = mk_modules(&[
            ("a", "use crate::b::{self, thing};\nfn f() { super::x(); }"),
            (
                "b",
                "// crate::a::nothing in a comment\nconst S: &str = \"crate::a\";\nfn g() { crate::c::h(); }\n#[cfg(test)]\nmod tests { use super::*; fn t() { super::g(); } }",
            ),
            ("c", "fn h() { let _ = crate::a::f; }"),
        ]);
        let graph = graph(&modules);
        assert_eq!(graph["b"], set(&["c"]));
        assert_eq!(graph["a"], set(&["b", "crate"]));
        assert_eq!(cycles(&graph), [vec!["a", "b", "c"]]);
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
    fn a_cycle_inside_one_top_level_module_folds_away() {
        let graph = mk_graph(&[
            ("api::resource", "api::error"),
            ("api::error", "api::resource"),
            ("api::resource", "store"),
        ]);
        assert_eq!(cycles(&graph), [vec!["api::error", "api::resource"]]);
        let top = fold_to_top_level(&graph);
        assert_eq!(top, mk_graph(&[("api", "store")]));
        assert!(cycles(&top).is_empty());
    }
}
