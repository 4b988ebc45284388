//! The kinds of object an executor may touch, and nothing else.
//!
//! [`Kind`] is the core's one list of kinds (five an installation is made of,
//! plus claims, which are only ever read); this module adds what kube needs
//! to reach each: its [`ApiResource`], taken from k8s-openapi's type-level
//! metadata. Any other kind is refused before a request is sent, so this
//! list and the Role in `deploy/rbac/executor-role.yaml` describe the same
//! surface.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
pub use k8sworker_core::kind::Kind;
use kube::discovery::ApiResource;

/// The dynamic API resource of `kind`, for kube's `Api<DynamicObject>`.
pub fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
        Kind::Secret => ApiResource::erase::<Secret>(&()),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        Kind::Ingress => ApiResource::erase::<Ingress>(&()),
        Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_resource_splits_group_and_version() {
        let ingress = api_resource(Kind::Ingress);
        assert_eq!(ingress.group, "networking.k8s.io");
        assert_eq!(ingress.version, "v1");
        assert_eq!(ingress.plural, "ingresses");
        let config_map = api_resource(Kind::ConfigMap);
        assert_eq!(config_map.group, "");
        assert_eq!(config_map.api_version, "v1");
    }

    #[test]
    fn api_resources_agree_with_the_core() {
        for kind in Kind::ALL {
            let resource = api_resource(kind);
            assert_eq!(resource.api_version, kind.api_version());
            assert_eq!(resource.kind, kind.as_str());
            assert_eq!(resource.plural, kind.plural());
        }
    }
}
