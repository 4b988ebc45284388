//! The library's layering, checked from its source: no module imports a
//! module that imports it back, directly or through others.
//!
//! Every `.rs` file under `src/` is a module (`src/store/mod.rs` is
//! `store`, `src/store/workitems.rs` is `store::workitems`; `main.rs` is the
//! binary and left out). A module depends on another when its code names a
//! path into it: `crate::…`, `super::…`, `self::…`, or a child module's
//! name, in a `use` tree or inline (`crate::auth::random_id(..)`). Comments
//! and string literals are not code. A path counts for the longest module it
//! reaches (`crate::store::workitems::insert` is `store::workitems`).
//!
//! Two graphs are checked for cycles: the modules themselves, and the
//! top-level modules (`api`, `store`, …) with every submodule folded into its
//! top-level one. Run with `--nocapture` to print both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let modules = modules();
    let graph = graph(&modules);
    print_graph("modules", &graph);
    let cycles = cycles(&graph);
    assert!(cycles.is_empty(), "module cycles: {cycles:?}");

    let top = fold_to_top_level(&graph);
    print_graph("top-level modules", &top);
    let cycles = cycles_of(&top);
    assert!(cycles.is_empty(), "top-level module cycles: {cycles:?}");

    // The reader must see the layering, or the check proves nothing.
    for (from, to) in [
        ("api::resource", "store"),
        ("api::resource", "api::error"),
        ("maintenance", "state"),
        ("server", "state"),
        ("store::workitems", "lifecycle"),
    ] {
        assert!(
            graph.get(from).is_some_and(|targets| targets.contains(to)),
            "expected the edge {from} -> {to}; the reader missed it"
        );
    }
}

#[test]
fn the_reader_finds_cycles() {
    let mut modules = BTreeMap::new();
    modules.insert(
        "a".to_owned(),
        Module::new("use crate::b::{self, thing};\nfn f() { super::x(); }"),
    );
    modules.insert(
        "b".to_owned(),
        Module::new(
            "// crate::a::nothing in a comment\nconst S: &str = \"crate::a\";\nfn g() { crate::c::h(); }\n#[cfg(test)]\nmod tests { use super::*; fn t() { super::g(); } }",
        ),
    );
    modules.insert(
        "c".to_owned(),
        Module::new("fn h() { let _ = crate::a::f; }"),
    );
    let graph = graph(&modules);
    assert_eq!(graph["b"], BTreeSet::from(["c".to_owned()]));
    assert_eq!(
        graph["a"],
        BTreeSet::from(["b".to_owned(), "crate".to_owned()])
    );
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
}

/// One module's code (comments and literals removed) and its child modules.
struct Module {
    code: String,
    children: BTreeSet<String>,
}

impl Module {
    fn new(source: &str) -> Module {
        let code = strip(source);
        let children = declared_modules(&code);
        Module { code, children }
    }
}

fn modules() -> BTreeMap<String, Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let mut segments: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let last = segments.pop().unwrap();
        match last.as_str() {
            "main.rs" if segments.is_empty() => continue,
            "lib.rs" if segments.is_empty() => {}
            "mod.rs" => {}
            other => segments.push(other.trim_end_matches(".rs").to_owned()),
        }
        let name = if segments.is_empty() {
            "crate".to_owned()
        } else {
            segments.join("::")
        };
        out.insert(name, Module::new(&std::fs::read_to_string(&file).unwrap()));
    }
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The code without comments, string and character literals.
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
        } else if c == 'r' && matches!(next, Some('#') | Some('"')) && !ident_char(prev(&chars, i))
        {
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
            loop {
                if j >= chars.len() {
                    break;
                }
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
            out.extend(trees.into_iter().map(|path| (inline.len(), path)));
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

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Expands one use tree starting at `tokens[*position]` under `prefix`.
fn expand_use(
    tokens: &[String],
    position: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    let mut path = prefix;
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
        out.push(path);
    }
}

/// The module a path from `module` reaches, if it is one of ours; `inline`
/// is how many inline modules of `module` the path stands in (their
/// `super` stays in the file).
fn resolve(
    module: &str,
    inline: usize,
    path: &[String],
    modules: &BTreeMap<String, Module>,
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
    for segment in rest {
        current.push(segment.clone());
        let name = current.join("::");
        if modules.contains_key(&name) {
            reached = name;
        } else {
            break;
        }
    }
    Some(reached)
}

fn graph(modules: &BTreeMap<String, Module>) -> Graph {
    let mut graph = Graph::new();
    for (name, module) in modules {
        let targets = graph.entry(name.clone()).or_default();
        for (inline, path) in paths(&module.code) {
            if let Some(target) = resolve(name, inline, &path, modules)
                && target != *name
            {
                targets.insert(target);
            }
        }
    }
    graph
}

fn fold_to_top_level(graph: &Graph) -> Graph {
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

/// The cycles of the module graph, where a parent's `mod` declarations are
/// not edges but any path from a parent into its child is.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    cycles_of(graph)
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles_of(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            self.index.insert(node, self.next);
            self.low.insert(node, self.next);
            self.next += 1;
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
        next: 0,
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

fn print_graph(title: &str, graph: &Graph) {
    println!("{title}:");
    for (from, targets) in graph {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("  {from} -> {}", targets.join(", "));
    }
}
