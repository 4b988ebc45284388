//! The executor's identity and permissions, from the one manifest that
//! deploys them (`deploy/rbac/executor-role.yaml`).
//!
//! The Role is the executor's whole reach: namespace-scoped, and exactly the
//! verbs the code uses. [`REQUIRED`] lists those verbs beside the code that
//! needs them; a unit test holds the manifest and this list equal, and the
//! integration tests run the executor with a token of this ServiceAccount.

use k8s_openapi::api::{
    core::v1::ServiceAccount,
    rbac::v1::{Role, RoleBinding},
};

/// Why the manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is not YAML.
    #[error("the executor manifest is not valid YAML")]
    Yaml(#[from] serde_saphyr::Error),
    /// A document is not the Kubernetes object its `kind` says.
    #[error("an object of the executor manifest does not match its kind")]
    Object(#[from] serde_json::Error),
    /// One of the three objects is absent.
    #[error("{0} missing in the manifest")]
    Missing(&'static str),
}

/// The manifest's YAML documents, as JSON values.
fn documents() -> Result<Vec<serde_json::Value>, ManifestError> {
    Ok(serde_saphyr::from_multiple(MANIFEST)?)
}

/// The manifest, as deployed.
pub const MANIFEST: &str = include_str!("../../deploy/rbac/executor-role.yaml");

/// Every (API group, resource, verbs) the executor needs.
pub const REQUIRED: &[(&str, &str, &[&str])] = &[
    ("apps", "statefulsets", &WRITE),
    ("apps", "statefulsets/scale", &["get", "patch", "update"]),
    ("", "services", &WRITE),
    ("", "configmaps", &WRITE),
    ("", "secrets", &WRITE),
    ("networking.k8s.io", "ingresses", &WRITE),
    // list and watch: the cache knows whether a referenced claim exists.
    ("", "persistentvolumeclaims", &["get", "list", "watch"]),
    // delete: a deploy replaces its StatefulSet's pods that fail to start
    // at a previous revision (`rollout`).
    ("", "pods", &["get", "list", "watch", "delete"]),
    ("", "pods/log", &["get"]),
    ("", "events", &["list", "watch", "create"]),
    // list and watch: the cache holds them for the quota check.
    ("", "resourcequotas", &["list", "watch"]),
];

const WRITE: [&str; 7] = [
    "get", "list", "watch", "create", "patch", "update", "delete",
];

/// The ServiceAccount, Role and RoleBinding of an executor.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The executor's ServiceAccount.
    pub service_account: ServiceAccount,
    /// What it may do in its namespace.
    pub role: Role,
    /// Binds the Role to the ServiceAccount, in the same namespace.
    pub role_binding: RoleBinding,
}

/// The manifest's objects, moved into `namespace` (the binding's subject too).
pub fn identity(namespace: &str) -> Result<Identity, ManifestError> {
    let mut service_account = None;
    let mut role = None;
    let mut role_binding = None;
    for value in documents()? {
        match value.get("kind").and_then(serde_json::Value::as_str) {
            Some("ServiceAccount") => service_account = Some(serde_json::from_value(value)?),
            Some("Role") => role = Some(serde_json::from_value(value)?),
            Some("RoleBinding") => role_binding = Some(serde_json::from_value(value)?),
            _ => {}
        }
    }
    let missing = |kind: &'static str| ManifestError::Missing(kind);
    let mut identity = Identity {
        service_account: service_account.ok_or_else(|| missing("ServiceAccount"))?,
        role: role.ok_or_else(|| missing("Role"))?,
        role_binding: role_binding.ok_or_else(|| missing("RoleBinding"))?,
    };
    identity.service_account.metadata.namespace = Some(namespace.to_string());
    identity.role.metadata.namespace = Some(namespace.to_string());
    identity.role_binding.metadata.namespace = Some(namespace.to_string());
    for subject in identity.role_binding.subjects.iter_mut().flatten() {
        subject.namespace = Some(namespace.to_string());
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn granted(role: &Role) -> BTreeSet<(String, String, String)> {
        let mut granted = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        granted
    }

    #[test]
    fn the_role_grants_exactly_what_the_executor_needs() {
        let identity = identity("ns-a").unwrap();
        let required: BTreeSet<_> = REQUIRED
            .iter()
            .flat_map(|(group, resource, verbs)| {
                verbs
                    .iter()
                    .map(|verb| (group.to_string(), resource.to_string(), verb.to_string()))
            })
            .collect();
        assert_eq!(granted(&identity.role), required);
    }

    #[test]
    fn nothing_is_cluster_scoped_or_wildcarded() {
        let kinds: Vec<_> = documents()
            .unwrap()
            .iter()
            .map(|value| value["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
        for rule in identity("ns-a").unwrap().role.rules.iter().flatten() {
            let all = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            assert!(all.clone().all(|item| item != "*"), "{rule:?}");
            assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        }
    }

    #[test]
    fn the_identity_moves_into_the_namespace() {
        let identity = identity("team-a").unwrap();
        assert_eq!(identity.role.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            identity.role_binding.metadata.namespace.as_deref(),
            Some("team-a")
        );
        let subject = &identity.role_binding.subjects.as_ref().unwrap()[0];
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(
            subject.name,
            identity.service_account.metadata.name.clone().unwrap()
        );
        assert_eq!(subject.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            identity.role_binding.role_ref.name,
            identity.role.metadata.name.clone().unwrap()
        );
    }
}
