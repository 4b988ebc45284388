//! The worker's deployment templates as a zip (the download of a cluster's
//! `workerTemplates`): the files of `deploy/` embedded at build time
//! (`build.rs`), `kustomize/…` (the kustomization tree: base, overlays,
//! executor, rbac, prerequisites, cert-manager) and `plainText/…`, with the
//! values the control plane knows filled into their placeholders.
//!
//! ```text
//!   FILES (deploy/, embedded) ─▶ fill(<CLUSTER_NAME>, <VANTIQ_NAMESPACE>,
//!                                     <VANTIQ_URL> when given) ─▶ zip
//! ```
//!
//! A placeholder is filled by plain text replacement, every occurrence, so
//! each entry is byte for byte the file in `deploy/` with the same
//! replacement made; nothing else changes. A value is filled only when
//! YAML reads it back as the same plain string, so the filled files stay
//! valid and mean what they say.

use std::io::Write as _;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// The embedded files: `(zip entry name, content)`, sorted by name
/// (`kustomize/base/gateway.yaml`, …, `plainText/k8sworker.yaml`).
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    embedded::FILES
}

/// The placeholder of the K8sCluster's name.
pub const CLUSTER_NAME: &str = "<CLUSTER_NAME>";
/// The placeholder of the Vantiq namespace of the worker's token.
pub const VANTIQ_NAMESPACE: &str = "<VANTIQ_NAMESPACE>";
/// The placeholder of the control plane's URL.
pub const VANTIQ_URL: &str = "<VANTIQ_URL>";

/// Why the templates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    /// A value to fill would not read back from YAML as the same plain
    /// string (a number, `true`, a URL with spaces or quotes, …).
    #[error("{field} `{value}` cannot be filled into the YAML templates: {reason}")]
    Unfillable {
        /// The query parameter or property it came from (`url`, `name`).
        field: &'static str,
        /// The value.
        value: String,
        /// Why, for a person.
        reason: &'static str,
    },
    /// Writing the zip failed (in memory: a bug, or out of memory).
    #[error("writing the zip")]
    Zip(#[from] zip::result::ZipError),
    /// Writing an entry's content failed.
    #[error("writing a zip entry")]
    Io(#[from] std::io::Error),
}

/// The values to fill, each a placeholder and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fills {
    pairs: Vec<(&'static str, String)>,
}

impl Fills {
    /// The fills of cluster `cluster` of Vantiq namespace `namespace`, and
    /// the control plane's `url` when given (an absolute `http`/`https`
    /// URL).
    ///
    /// # Errors
    /// [`TemplatesError::Unfillable`] when a value would not stay a plain
    /// YAML string (for the URL also: not an absolute http(s) URL).
    pub fn new(cluster: &str, namespace: &str, url: Option<&str>) -> Result<Fills, TemplatesError> {
        let mut pairs = vec![
            (CLUSTER_NAME, plain("name", cluster)?),
            (VANTIQ_NAMESPACE, plain("namespace", namespace)?),
        ];
        if let Some(url) = url {
            pairs.push((VANTIQ_URL, control_plane_url(url)?));
        }
        Ok(Fills { pairs })
    }

    /// `content` with every placeholder replaced by its value.
    pub fn fill(&self, content: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(content) else {
            return content.to_vec();
        };
        let mut text = text.to_owned();
        for (placeholder, value) in &self.pairs {
            text = text.replace(placeholder, value);
        }
        text.into_bytes()
    }
}

/// `value` when YAML reads it, unquoted, as the same string: not empty, no
/// character YAML gives a meaning, and not a word, number or date YAML reads
/// as another type (`true`, `no`, `null`, `1.5`, `0x1f`, …). The readers
/// of the templates (kubectl, kustomize) resolve YAML 1.1's types too,
/// where `_` may separate digits (`1_0e3`), `0b101` is binary and
/// `2001-12-14` a timestamp: a value of digits, `_`, `.` and `-` only is
/// refused whatever it means.
fn plain(field: &'static str, value: &str) -> Result<String, TemplatesError> {
    let unfillable = |reason| TemplatesError::Unfillable {
        field,
        value: value.chars().take(200).collect(),
        reason,
    };
    let ordinary = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if value.is_empty() || !value.chars().all(ordinary) || value.starts_with(['-', '.']) {
        return Err(unfillable(
            "only letters, digits, '-', '_', '.' and '/' fill a YAML value unquoted",
        ));
    }
    let lower = value.to_ascii_lowercase();
    let keyword = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf",
    ]
    .contains(&lower.trim_start_matches('.'));
    let digits = lower.replace('_', "");
    let number = digits.parse::<f64>().is_ok()
        || ["0x", "0o", "0b"]
            .iter()
            .any(|prefix| digits.starts_with(prefix))
        || value
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if keyword || number {
        return Err(unfillable(
            "YAML reads it as a boolean, null, number or date, not a string",
        ));
    }
    Ok(value.to_owned())
}

/// `url` when it is an absolute `http`/`https` URL YAML reads unquoted as
/// itself: URL characters only, no spaces, quotes or `#`, and no `:` at the
/// end (YAML 1.2 §7.3.3: a plain scalar ends at a `:` followed by a space or
/// the line's end; `VANTIQ_URL: https://host/path:` is not valid YAML).
fn control_plane_url(url: &str) -> Result<String, TemplatesError> {
    let unfillable = |reason| TemplatesError::Unfillable {
        field: "url",
        value: url.chars().take(200).collect(),
        reason,
    };
    let parsed: http::Uri = url.parse().map_err(|_| unfillable("not a URL"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(unfillable(
            "the control plane's URL is an absolute http or https URL",
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?[]@!$&()*+,;=%".contains(c);
    if !url.chars().all(allowed) {
        return Err(unfillable(
            "spaces, quotes, '#' and characters outside a URL's do not fill a YAML value",
        ));
    }
    if url.ends_with(':') {
        return Err(unfillable(
            "a ':' at the end makes YAML read a key, not a value",
        ));
    }
    Ok(url.to_owned())
}

/// The zip of every embedded file with `fills` filled, entries in
/// [`files`]' order, deflated, mode 0644, dated 1980-01-01 (the zip
/// format's first date), so the same fills give the same bytes.
///
/// # Errors
/// [`TemplatesError::Zip`] or [`TemplatesError::Io`] when writing fails.
pub fn zip(fills: &Fills) -> Result<Vec<u8>, TemplatesError> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    for (name, content) in files() {
        writer.start_file(*name, options)?;
        writer.write_all(&fills.fill(content))?;
    }
    Ok(writer.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_of_deploy_is_embedded_without_its_build_files() {
        let names: Vec<&str> = files().iter().map(|(name, _)| *name).collect();
        for expected in [
            "kustomize/base/kustomization.yaml",
            "kustomize/overlays/worker/provideClusterName.yaml",
            "kustomize/rbac/executor-role.yaml",
            "kustomize/cert-manager/ca/ca.yaml",
            "plainText/k8sworker.yaml",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        assert!(
            names
                .iter()
                .all(|name| !name.ends_with("check.sh") && !name.ends_with("Containerfile"))
        );
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn only_plain_strings_are_filled() {
        for good in ["minikube", "prod-eu.1", "k8s_a", "2024-prod", "e3"] {
            assert_eq!(plain("name", good).unwrap(), good);
        }
        for bad in [
            "", "true", "No", "1", "1.5", "1e3", "0x1f", "a b", "a:b", "#x", "-x", "~", "null",
            ".inf",
        ] {
            assert!(plain("name", bad).is_err(), "{bad}");
        }
        // YAML 1.1's numbers and dates, as kubectl and kustomize read them.
        for bad in ["0b101", "0B11", "1_0e3", "1_0", "2001-12-14", "0o1_7"] {
            assert!(plain("name", bad).is_err(), "{bad}");
        }
        assert!(control_plane_url("https://vantiq.example.com:8443/base").is_ok());
        for bad in [
            "ftp://x",
            "/relative",
            "https://a b",
            "https://x/#frag",
            "https://x/\"",
            "https://x/base:",
            "https://x/?q=a:",
            "vantiq",
        ] {
            assert!(control_plane_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_placeholder_is_filled_and_nothing_else_changes() {
        let fills = Fills::new("minikube", "k8sworker", Some("https://cp.example:8080")).unwrap();
        let filled = fills.fill(b"a: <CLUSTER_NAME>\nb: <VANTIQ_NAMESPACE>/<CLUSTER_NAME>\nc: <VANTIQ_URL>\nd: <REGISTRY>\n");
        assert_eq!(
            String::from_utf8(filled).unwrap(),
            "a: minikube\nb: k8sworker/minikube\nc: https://cp.example:8080\nd: <REGISTRY>\n"
        );
        let without_url = Fills::new("minikube", "k8sworker", None).unwrap();
        assert_eq!(without_url.fill(b"<VANTIQ_URL>"), b"<VANTIQ_URL>");
    }
}
