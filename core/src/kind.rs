//! The kinds of Kubernetes object k8sworker knows, and nothing else.
//!
//! An installation is made of five kinds ([`Kind::MANAGED`]); a sixth,
//! [`Kind::PersistentVolumeClaim`], is only ever read, to check that a
//! referenced claim exists. Each kind's `apiVersion`, `kind` and resource
//! (plural) name come from k8s-openapi's [`Resource`] constants, the same
//! the API server serves, so the planner, the executor's allowlist and its
//! Role (`deploy/rbac/executor-role.yaml`) describe one surface.

use std::fmt;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;

/// A kind of Kubernetes object k8sworker creates, changes, deletes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` ConfigMap: generated file content, or a referenced one.
    ConfigMap,
    /// `v1` Secret: generated secret environment variables, or a referenced one.
    Secret,
    /// `v1` Service: the headless Service and the NodePort Services.
    Service,
    /// `apps/v1` StatefulSet: the installation's workload.
    StatefulSet,
    /// `networking.k8s.io/v1` Ingress, one per inbound port.
    Ingress,
    /// `v1` PersistentVolumeClaim: read only; a referenced claim's existence
    /// is observed, never written.
    PersistentVolumeClaim,
}

/// The type-level facts of one kind, from k8s-openapi.
struct Facts {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
}

const fn facts<K: Resource>() -> Facts {
    Facts {
        api_version: K::API_VERSION,
        kind: K::KIND,
        plural: K::URL_PATH_SEGMENT,
    }
}

impl Kind {
    /// The kinds an installation's components can have, in dependency order:
    /// what a pod mounts or a Service selects is created first. `Observe`
    /// lists objects in this order too.
    pub const MANAGED: [Kind; 5] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::StatefulSet,
        Kind::Ingress,
    ];

    /// Every kind, the read-only one last.
    pub const ALL: [Kind; 6] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::StatefulSet,
        Kind::Ingress,
        Kind::PersistentVolumeClaim,
    ];

    const fn facts(self) -> Facts {
        match self {
            Kind::ConfigMap => facts::<ConfigMap>(),
            Kind::Secret => facts::<Secret>(),
            Kind::Service => facts::<Service>(),
            Kind::StatefulSet => facts::<StatefulSet>(),
            Kind::Ingress => facts::<Ingress>(),
            Kind::PersistentVolumeClaim => facts::<PersistentVolumeClaim>(),
        }
    }

    /// The Kubernetes `kind`, e.g. `StatefulSet`.
    pub const fn as_str(self) -> &'static str {
        self.facts().kind
    }

    /// The Kubernetes `apiVersion`, e.g. `apps/v1`.
    pub const fn api_version(self) -> &'static str {
        self.facts().api_version
    }

    /// The resource (plural) name, as RBAC rules and URL paths spell it,
    /// e.g. `statefulsets`.
    pub const fn plural(self) -> &'static str {
        self.facts().plural
    }

    /// Reads a managed Kubernetes `kind` (one of [`Kind::MANAGED`]); `None`
    /// for anything else.
    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::MANAGED.into_iter().find(|k| k.as_str() == kind)
    }

    /// Looks any known kind up by `apiVersion` and `kind` as a plan spells
    /// them; a known kind under another `apiVersion` is `None`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.as_str() == kind)
    }

    /// Whether a plan may create, update or delete objects of this kind.
    pub const fn is_managed(self) -> bool {
        !matches!(self, Kind::PersistentVolumeClaim)
    }

    /// Position in the order deletes happen in: users of an object go first.
    pub const fn delete_rank(self) -> u8 {
        match self {
            Kind::Ingress => 0,
            Kind::Service => 1,
            Kind::StatefulSet => 2,
            Kind::Secret => 3,
            Kind::ConfigMap => 4,
            Kind::PersistentVolumeClaim => 5,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_type() {
        for kind in Kind::ALL {
            assert_eq!(
                Kind::from_type(kind.api_version(), kind.as_str()),
                Some(kind)
            );
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
        assert_eq!(Kind::parse("PersistentVolumeClaim"), None);
    }

    #[test]
    fn facts_are_the_api_servers() {
        assert_eq!(Kind::Ingress.api_version(), "networking.k8s.io/v1");
        assert_eq!(Kind::Ingress.plural(), "ingresses");
        assert_eq!(Kind::StatefulSet.api_version(), "apps/v1");
        assert_eq!(Kind::ConfigMap.api_version(), "v1");
        assert_eq!(
            Kind::PersistentVolumeClaim.plural(),
            "persistentvolumeclaims"
        );
    }

    #[test]
    fn claims_are_read_only() {
        assert!(!Kind::PersistentVolumeClaim.is_managed());
        assert!(Kind::MANAGED.iter().all(|kind| kind.is_managed()));
    }
}
