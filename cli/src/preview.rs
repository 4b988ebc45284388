//! `deploy --dry-run`: the Kubernetes objects a deploy request renders to,
//! by the planner's own validation and render (`k8sworker-core`), on this
//! machine, without the control plane. Secret values are never shown: the
//! data of every generated Secret is masked (its size shown), `@secrets(NAME)` values are
//! rendered from a placeholder, and a document's content is a placeholder
//! too (the worker reads the real one when it deploys).

use k8sworker_core::validate::parse_and_validate;
use serde_json::Value;

pub use k8sworker_core::preview::{default_ingress_node, placeholders};

/// The objects `data` (a deploy's `data`: `name`, `k8sNamespace`, `config`)
/// renders to on `cluster`, whose Ingress default host is
/// `ingress_default_node`, Secret data masked
/// ([`k8sworker_core::preview`]).
///
/// # Errors
/// Every validation error of the request, or the render's refusal, as the
/// control plane would answer them.
pub fn preview(
    data: &Value,
    cluster: &str,
    ingress_default_node: &str,
) -> anyhow::Result<Vec<Value>> {
    let request = parse_and_validate(data).map_err(|errors| {
        let errors: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the deploy request is not valid: {}", errors.join("; "))
    })?;
    Ok(
        k8sworker_core::preview::preview(&request, cluster, ingress_default_node)?
            .iter()
            .map(|object| object.to_preview_json())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_and_the_request_validated() {
        let data = json!({"name": "web", "k8sNamespace": "apps", "config": [
            {"type": "image", "name": "nginx:1.27"},
            {"type": "environmentVariable", "name": "TOKEN", "value": "hunter2", "asSecret": true},
            {"type": "environmentVariable", "name": "DB", "value": "@secrets(db)"},
            {"type": "file", "path": "/conf", "filename": "key.pem", "content": "PRIVATE", "dataSource": "secret"},
            {"type": "inboundPort", "port": 80, "protocol": "TCP"},
        ]});
        let objects = preview(&data, "Prod", &default_ingress_node("Prod")).unwrap();
        let text = serde_json::to_string(&objects).unwrap();
        for secret in ["hunter2", "PRIVATE", "aHVudGVyMg", "UFJJVkFURQ"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let names: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert!(
            names.contains(&"Secret/vantiq-web-secret-0".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"Secret/vantiq-web-secret-1".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"StatefulSet/web".to_owned()), "{names:?}");
        let ingress = objects.iter().find(|o| o["kind"] == "Ingress").unwrap();
        assert_eq!(ingress["spec"]["rules"][0]["host"], "vantiq-prod-node");

        let error = preview(
            &json!({"name": "Web", "k8sNamespace": "apps", "config": []}),
            "c",
            "n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not valid"), "{error}");
    }
}
