//! The preview of a deploy: the Kubernetes objects a valid request renders
//! to, before anything is submitted, with no secret in them. Shared by the
//! command line's `deploy --dry-run` and the control plane's preview
//! endpoint, so both show the same objects.
//!
//! ```text
//!   InstallationRequest ─▶ placeholders (stand-ins for what only the
//!                          control plane holds) ─▶ render ─▶ Object::to_preview_json
//!                          (every Secret's data masked: its size, never its value)
//! ```

use crate::component::Object;
use crate::model::{ConfigEntry, EnvValue, InstallationRequest};
use crate::render::{Ancillaries, ClusterContext, RenderError, render};

/// The objects `request` renders to on `cluster`, whose Ingress default
/// host is `ingress_default_node` (empty: no host rule for entries without
/// `host`), in apply order. No owner record (a preview has no tenant).
///
/// # Errors
/// The render's refusal ([`RenderError`]): the request breaks a rule of
/// [`crate::validate`], or the Ingress default host is not a host name.
pub fn preview(
    request: &InstallationRequest,
    cluster: &str,
    ingress_default_node: &str,
) -> Result<Vec<Object>, RenderError> {
    let context = ClusterContext {
        cluster_name: cluster.to_owned(),
        ingress_default_node: ingress_default_node.to_owned(),
        tenant: None,
    };
    Ok(render(request, &context, &placeholders(request))?
        .into_iter()
        .map(|component| component.object)
        .collect())
}

/// Stand-ins for what only the control plane holds: each `@secrets(NAME)`
/// value is `<@secrets(NAME)>`, each mounted document's content
/// `<document NAME>`. A preview never sees a secret; a Secret made from
/// them is planned from the stand-in.
pub fn placeholders(request: &InstallationRequest) -> Ancillaries {
    let mut ancillaries = Ancillaries::default();
    for entry in &request.config {
        match entry {
            ConfigEntry::EnvironmentVariable(var) => {
                if let Some(EnvValue::SecretRef(name)) = var.parsed_value() {
                    ancillaries
                        .secrets
                        .insert(name.to_owned(), format!("<@secrets({name})>"));
                }
            }
            ConfigEntry::File(file) => {
                if let Some(document) = &file.resource_name {
                    ancillaries.documents.insert(
                        document.clone(),
                        format!("<document {document}>").into_bytes(),
                    );
                }
            }
            _ => {}
        }
    }
    ancillaries
}

/// Vantiq's default Ingress host of a cluster: `vantiq-<name>-node`,
/// lower-cased (`vantiq-api.md` §1.1).
pub fn default_ingress_node(cluster: &str) -> String {
    format!("vantiq-{cluster}-node").to_lowercase()
}
