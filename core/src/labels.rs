//! The ownership contract every component shares: the labels and annotations
//! that mark an object as created by k8sworker for one installation.
//!
//! Every object render writes carries [`MANAGED_BY`] = [`MANAGER`],
//! [`INSTALLATION`] = the installation name, and the owner record
//! [`OWNER`]. Only the record decides ownership ([`crate::owner`]): labels
//! can be copied onto any object and select objects for listing only.
//!
//! Every key in the `k8sworker.io` domain ([`is_reserved`]) is k8sworker's
//! own: a request can set none ([`crate::validate`]), and an object may carry
//! only the ones render writes ([`RENDERED_LABELS`], [`RENDERED_ANNOTATIONS`];
//! [`crate::policy`] holds an executor to that). So a user's pod can never
//! carry [`COMPONENT`], the label k8sworker's own Services and
//! NetworkPolicies select on, and never join them.

/// `app.kubernetes.io/managed-by` label key.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on our objects; also the server-side-apply field manager.
pub const MANAGER: &str = "k8sworker";
/// Label key whose value is the installation name.
pub const INSTALLATION: &str = "k8sworker.io/installation";
/// Annotation with the SHA-256 of the rendered object (without this annotation).
pub const SPEC_HASH: &str = "k8sworker.io/spec-hash";
/// Pod-template annotation with the hash of generated ConfigMap and Secret
/// content, so that a content change rolls the pods.
pub const CONFIG_HASH: &str = "k8sworker.io/config-hash";

/// Annotation whose value is the object's [`crate::owner::OwnerRecord`]:
/// tenant, installation, and the object's own kind and name.
pub const OWNER: &str = "k8sworker.io/owner";

/// The domain of k8sworker's own label and annotation keys.
pub const RESERVED_DOMAIN: &str = "k8sworker.io";

/// Label key of k8sworker's own pods (`executor`, `planner`, `gateway`):
/// the Services and NetworkPolicies in `deploy/` select on it, never on a
/// label a request may set.
pub const COMPONENT: &str = "k8sworker.io/component";

/// The reserved label keys render writes on an installation's objects and
/// pod template; no other reserved label may appear on them.
pub const RENDERED_LABELS: [&str; 1] = [INSTALLATION];

/// The reserved annotation keys render writes on an installation's objects
/// and pod template; no other reserved annotation may appear on them.
pub const RENDERED_ANNOTATIONS: [&str; 3] = [SPEC_HASH, CONFIG_HASH, OWNER];

/// Whether a label or annotation `key` is in k8sworker's domain: its prefix
/// (before `/`) is `k8sworker.io` or a subdomain of it, in any case.
pub fn is_reserved(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    let prefix = prefix.to_ascii_lowercase();
    prefix == RESERVED_DOMAIN
        || prefix
            .strip_suffix(RESERVED_DOMAIN)
            .is_some_and(|sub| sub.ends_with('.'))
}

/// The label selector matching every object of `installation`.
pub fn selector(installation: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTALLATION}={installation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_domain_is_reserved() {
        for key in [
            INSTALLATION,
            SPEC_HASH,
            COMPONENT,
            "k8sworker.io/anything",
            "K8sWorker.IO/x",
            "tenant.k8sworker.io/owner",
        ] {
            assert!(is_reserved(key), "{key}");
        }
        for key in [
            MANAGED_BY,
            "app.kubernetes.io/name",
            "k8sworker.io",
            "notk8sworker.io/x",
            "k8sworker.io.example.com/x",
            "tier",
        ] {
            assert!(!is_reserved(key), "{key}");
        }
    }
}
