//! Embeds the worker's deployment templates (`deploy/`) in the binary for
//! the template download (`src/templates.rs`): writes `$OUT_DIR/templates.rs`,
//! one `(zip entry name, include_bytes!(file))` per file, sorted by entry
//! name. `include_bytes!` makes cargo rebuild when a file changes, and the
//! `rerun-if-changed` of each folder when one is added or removed.

use std::path::{Path, PathBuf};

/// The folders of `deploy/` in the zip: `(folder, the zip's prefix)`. Not
/// `check.sh` nor `Containerfile`, which build and check, not deploy.
const FOLDERS: &[(&str, &str)] = &[
    ("base", "kustomize/base"),
    ("overlays", "kustomize/overlays"),
    ("executor", "kustomize/executor"),
    ("rbac", "kustomize/rbac"),
    ("prerequisites", "kustomize/prerequisites"),
    ("cert-manager", "kustomize/cert-manager"),
    ("plainText", "plainText"),
];

fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("file names in deploy/ are UTF-8")
            .to_owned();
        let entry = format!("{prefix}/{name}");
        if path.is_dir() {
            files(&path, &entry, out);
        } else {
            out.push((entry, path));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let deploy = manifest
        .join("..")
        .join("deploy")
        .canonicalize()
        .expect("deploy/ beside the crate");
    let mut all = Vec::new();
    for (folder, prefix) in FOLDERS {
        let dir = deploy.join(folder);
        println!("cargo:rerun-if-changed={}", dir.display());
        files(&dir, prefix, &mut all);
    }
    all.sort();
    let mut code = String::from(
        "/// The embedded files: `(zip entry name, content)`, sorted by name.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (entry, path) in all {
        code.push_str(&format!(
            "    ({entry:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("templates.rs"), code).expect("writing templates.rs");
}
