//! The ownership contract every component shares: the labels and annotations
//! that mark an object as created by k8sworker for one installation.
//!
//! An object is ours only when it carries both [`MANAGED_BY`] =
//! [`MANAGER`] and [`INSTALLATION`] = the installation name. Nothing else is
//! ever updated or deleted.

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

/// The label selector matching every object of `installation`.
pub fn selector(installation: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTALLATION}={installation}")
}
