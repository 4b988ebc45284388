//! The kinds of object an executor may touch, and nothing else.
//!
//! A plan names its objects by `apiVersion` + `kind`; this module maps the five
//! kinds an installation is made of (plus claims, which are only ever read) to
//! the API resources the executor's Role grants. Any other kind is refused
//! before a request is sent, so the allowlist here and the Role in
//! `deploy/rbac/executor-role.yaml` describe the same surface.

use kube::discovery::ApiResource;

/// A kind the executor knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
    Service,
    StatefulSet,
    Ingress,
    /// Read only: a referenced claim's existence is observed, never written.
    PersistentVolumeClaim,
}

impl Kind {
    /// The kinds an installation's components can have, in the order objects
    /// are listed by `Observe`.
    pub const MANAGED: [Kind; 5] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::StatefulSet,
        Kind::Ingress,
    ];

    /// Looks a kind up by `apiVersion` and `kind` as a plan spells them.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let found = match (api_version, kind) {
            ("v1", "ConfigMap") => Kind::ConfigMap,
            ("v1", "Secret") => Kind::Secret,
            ("v1", "Service") => Kind::Service,
            ("apps/v1", "StatefulSet") => Kind::StatefulSet,
            ("networking.k8s.io/v1", "Ingress") => Kind::Ingress,
            ("v1", "PersistentVolumeClaim") => Kind::PersistentVolumeClaim,
            _ => return None,
        };
        Some(found)
    }

    /// Whether a plan may create, update or delete objects of this kind.
    pub fn is_managed(self) -> bool {
        self != Kind::PersistentVolumeClaim
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::StatefulSet => "apps/v1",
            Kind::Ingress => "networking.k8s.io/v1",
            _ => "v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::StatefulSet => "StatefulSet",
            Kind::Ingress => "Ingress",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }

    /// The resource (plural) name, as RBAC and the URL path use it.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
            Kind::Service => "services",
            Kind::StatefulSet => "statefulsets",
            Kind::Ingress => "ingresses",
            Kind::PersistentVolumeClaim => "persistentvolumeclaims",
        }
    }

    /// The dynamic API resource for kube's `Api<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        let (group, version) = match self.api_version().split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version()),
        };
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: self.api_version().to_string(),
            kind: self.name().to_string(),
            plural: self.plural().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_type() {
        for kind in Kind::MANAGED
            .into_iter()
            .chain([Kind::PersistentVolumeClaim])
        {
            assert_eq!(Kind::from_type(kind.api_version(), kind.name()), Some(kind));
        }
    }

    #[test]
    fn unknown_or_misversioned_kinds_are_refused() {
        assert_eq!(Kind::from_type("v1", "Pod"), None);
        assert_eq!(Kind::from_type("apps/v1", "Deployment"), None);
        assert_eq!(Kind::from_type("v1", "StatefulSet"), None);
        assert_eq!(
            Kind::from_type("rbac.authorization.k8s.io/v1", "Role"),
            None
        );
    }

    #[test]
    fn api_resource_splits_group_and_version() {
        let ingress = Kind::Ingress.api_resource();
        assert_eq!(ingress.group, "networking.k8s.io");
        assert_eq!(ingress.version, "v1");
        assert_eq!(ingress.plural, "ingresses");
        let config_map = Kind::ConfigMap.api_resource();
        assert_eq!(config_map.group, "");
        assert_eq!(config_map.api_version, "v1");
    }

    #[test]
    fn claims_are_read_only() {
        assert!(!Kind::PersistentVolumeClaim.is_managed());
        assert!(Kind::MANAGED.iter().all(|kind| kind.is_managed()));
    }
}
