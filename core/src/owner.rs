//! Tenant ownership: who an object belongs to, in a record that names the
//! object itself, so that copying it onto another object makes nothing ours.
//!
//! A *tenant* is one Vantiq namespace in one Kubernetes cluster (the pair a
//! gateway serves). Every object render writes carries the annotation
//! [`crate::labels::OWNER`] whose value is an [`OwnerRecord`]:
//! `<vantiq-namespace>/<cluster>/<installation>/<Kind>/<name>`, e.g.
//! `acme/prod-east/web/StatefulSet/web`.
//!
//! [`ownership`] decides, for one observed object, whether an operation of
//! a tenant on an installation may touch it:
//!
//! - [`Ownership::Ours`]: the record names this tenant, this installation,
//!   and this very object (its kind and name);
//! - [`Ownership::Legacy`]: no record, but the two labels of the releases
//!   before owner records (`app.kubernetes.io/managed-by: k8sworker`,
//!   `k8sworker.io/installation: <installation>`). Only a deploy adopts such
//!   an object, and only at a name the installation generates; the update
//!   writes the record;
//! - [`Ownership::Copied`]: the record names another object: it was copied,
//!   the object is not ours and no operation touches it;
//! - [`Ownership::Other`]: another tenant's or installation's (by its
//!   record, or by its labels when it has none), or not k8sworker's at all.
//!   Never adopted, changed or deleted.
//!
//! The rule follows Argo CD's answer to label tracking that pruned objects
//! it never created: an annotation that names the object it is on
//! (Argo CD documentation, "Resource Tracking", `annotation` method).

use std::fmt;

use crate::component::{ComponentId, Kind};
use crate::observed::Observed;

/// Longest tenant part (Vantiq namespace or cluster name), in bytes.
pub const MAX_TENANT_PART: usize = 253;

/// One Vantiq namespace in one Kubernetes cluster: whom an executor lets
/// deploy into its namespace, and whom every object we create belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant {
    /// The Vantiq namespace the gateway serves.
    pub vantiq_namespace: String,
    /// The control plane's K8sCluster name.
    pub cluster: String,
}

/// Why a tenant or owner record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// A tenant part is empty, too long, or holds `/`, whitespace or a
    /// control character.
    #[error(
        "{what} `{value}` must be 1 to {MAX_TENANT_PART} characters without `/`, whitespace or control characters"
    )]
    BadPart {
        /// `Vantiq namespace` or `cluster`.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A tenant part given on a command line is still the install files'
    /// placeholder ([`crate::names::is_placeholder`]).
    #[error(
        "{what} is still the placeholder `{value}` of the install files: fill it (deploy/executor, or deploy/plainText/executor.yaml) and apply them again"
    )]
    Placeholder {
        /// `Vantiq namespace` or `cluster`.
        what: &'static str,
        /// The placeholder.
        value: String,
    },
    /// A tenant is not `<vantiq-namespace>/<cluster>`.
    #[error("tenant `{0}` is not <vantiq-namespace>/<cluster>")]
    BadTenant(String),
    /// An owner record is not `<ns>/<cluster>/<installation>/<Kind>/<name>`.
    #[error("owner record `{0}` is not <vantiq-namespace>/<cluster>/<installation>/<Kind>/<name>")]
    BadRecord(String),
}

fn check_part(what: &'static str, value: &str) -> Result<(), OwnerError> {
    let bad = value.is_empty()
        || value.len() > MAX_TENANT_PART
        || value
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(OwnerError::BadPart {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl Tenant {
    /// A tenant from its two parts.
    ///
    /// # Errors
    /// [`OwnerError::BadPart`] when a part is empty, longer than
    /// [`MAX_TENANT_PART`], or holds `/`, whitespace or a control character.
    pub fn new(
        vantiq_namespace: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Result<Tenant, OwnerError> {
        let tenant = Tenant {
            vantiq_namespace: vantiq_namespace.into(),
            cluster: cluster.into(),
        };
        check_part("Vantiq namespace", &tenant.vantiq_namespace)?;
        check_part("cluster", &tenant.cluster)?;
        Ok(tenant)
    }

    /// Reads `<vantiq-namespace>/<cluster>` (the form of `--allowed-tenant`).
    ///
    /// # Errors
    /// [`OwnerError::BadTenant`] without exactly one `/`,
    /// [`OwnerError::Placeholder`] for a part left as the install files'
    /// `<PLACEHOLDER>`, else as [`Tenant::new`].
    pub fn parse(text: &str) -> Result<Tenant, OwnerError> {
        let (namespace, cluster) = text
            .split_once('/')
            .ok_or_else(|| OwnerError::BadTenant(text.to_owned()))?;
        for (what, value) in [("Vantiq namespace", namespace), ("cluster", cluster)] {
            if crate::names::is_placeholder(value) {
                return Err(OwnerError::Placeholder {
                    what,
                    value: value.to_owned(),
                });
            }
        }
        Tenant::new(namespace, cluster)
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vantiq_namespace, self.cluster)
    }
}

/// The value of the owner annotation: tenant, installation, and the object
/// the record is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRecord {
    /// Whose object it is.
    pub tenant: Tenant,
    /// The installation that created it.
    pub installation: String,
    /// The object the record was written on.
    pub object: ComponentId,
}

impl OwnerRecord {
    /// The record of `object` created by `tenant` for `installation`.
    pub fn new(tenant: &Tenant, installation: &str, object: ComponentId) -> OwnerRecord {
        OwnerRecord {
            tenant: tenant.clone(),
            installation: installation.to_owned(),
            object,
        }
    }

    /// Reads an annotation value.
    ///
    /// # Errors
    /// [`OwnerError::BadRecord`] unless it is
    /// `<vantiq-namespace>/<cluster>/<installation>/<Kind>/<name>` with a
    /// valid tenant, a known kind and non-empty names.
    pub fn parse(text: &str) -> Result<OwnerRecord, OwnerError> {
        let bad = || OwnerError::BadRecord(text.to_owned());
        let parts: Vec<&str> = text.split('/').collect();
        let [namespace, cluster, installation, kind, name] = parts[..] else {
            return Err(bad());
        };
        let tenant = Tenant::new(namespace, cluster).map_err(|_| bad())?;
        let kind = Kind::parse(kind).ok_or_else(bad)?;
        if installation.is_empty() || name.is_empty() {
            return Err(bad());
        }
        Ok(OwnerRecord {
            tenant,
            installation: installation.to_owned(),
            object: ComponentId::new(kind, name),
        })
    }
}

impl fmt::Display for OwnerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.tenant, self.installation, self.object.kind, self.object.name
        )
    }
}

/// Whether an observed object belongs to an installation of a tenant; see
/// the [module](self) for the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Its record names this tenant, installation and object.
    Ours,
    /// No record; the two labels of this installation from before owner
    /// records. A deploy adopts it at a generated name only.
    Legacy,
    /// Its record names another object: copied, not ours.
    Copied(ComponentId),
    /// Someone else's: the owner, for a person (e.g. ``owned by tenant
    /// `b/c1`, installation `web` ``, or `not created by k8sworker`).
    Other(String),
}

/// Decides whether `observed` is `installation`'s object for `tenant`.
pub fn ownership(observed: &Observed, tenant: &Tenant, installation: &str) -> Ownership {
    match observed.owner_record.as_deref() {
        Some(text) => match OwnerRecord::parse(text) {
            Err(_) => Ownership::Other(format!("an owner record `{text}` k8sworker cannot read")),
            Ok(record) if record.object != observed.id => Ownership::Copied(record.object),
            Ok(record) if record.tenant == *tenant && record.installation == installation => {
                Ownership::Ours
            }
            Ok(record) => Ownership::Other(format!(
                "owned by tenant `{}`, installation `{}`",
                record.tenant, record.installation
            )),
        },
        None => match observed.owner.as_deref() {
            Some(owner) if owner == installation => Ownership::Legacy,
            Some(owner) => Ownership::Other(format!(
                "owned by installation `{owner}`, from before owner records"
            )),
            None => Ownership::Other("not created by k8sworker".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(ns: &str) -> Tenant {
        Tenant::new(ns, "c1").unwrap()
    }

    fn observed(
        kind: Kind,
        name: &str,
        labels_owner: Option<&str>,
        record: Option<String>,
    ) -> Observed {
        Observed {
            id: ComponentId::new(kind, name),
            uid: "u".into(),
            resource_version: "1".into(),
            spec_hash: None,
            owner: labels_owner.map(String::from),
            owner_record: record,
            replicas: None,
            ready_replicas: None,
            foreign_managers: Vec::new(),
            immutable: Default::default(),
            foreign_fields: Vec::new(),
        }
    }

    fn record(ns: &str, installation: &str, kind: Kind, name: &str) -> String {
        OwnerRecord::new(&tenant(ns), installation, ComponentId::new(kind, name)).to_string()
    }

    /// `--allowed-tenant=<VANTIQ_NAMESPACE>/<CLUSTER_NAME>` as the install
    /// files ship it: refused, naming the placeholder, not an allowed tenant
    /// no gateway can ever be.
    #[test]
    fn a_tenant_left_as_the_placeholder_is_refused() {
        let error = Tenant::parse("<VANTIQ_NAMESPACE>/<CLUSTER_NAME>").unwrap_err();
        assert_eq!(
            error,
            OwnerError::Placeholder {
                what: "Vantiq namespace",
                value: "<VANTIQ_NAMESPACE>".into()
            }
        );
        assert!(error.to_string().contains("deploy/plainText/executor.yaml"));
        let error = Tenant::parse("tenant-ns/<CLUSTER_NAME>").unwrap_err();
        assert_eq!(
            error,
            OwnerError::Placeholder {
                what: "cluster",
                value: "<CLUSTER_NAME>".into()
            }
        );
        assert_eq!(
            Tenant::parse("tenant-ns/c1").unwrap().to_string(),
            "tenant-ns/c1"
        );
    }

    #[test]
    fn records_and_tenants_round_trip() {
        let text = record("acme", "web", Kind::StatefulSet, "web");
        assert_eq!(text, "acme/c1/web/StatefulSet/web");
        let parsed = OwnerRecord::parse(&text).unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(Tenant::parse("acme/c1").unwrap(), tenant("acme"));
        for bad in ["", "acme", "acme/", "/c1", "a/b/c", "a b/c1", "a\n/c1"] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "",
            "acme/c1/web/StatefulSet",
            "acme/c1/web/Pod/web",
            "acme/c1//StatefulSet/web",
            "acme/c1/web/StatefulSet/",
            "acme/c1/web/StatefulSet/web/x",
        ] {
            assert!(OwnerRecord::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_a_record_naming_tenant_installation_and_the_object_is_ours() {
        let a = tenant("a");
        let ours = observed(
            Kind::ConfigMap,
            "cm",
            Some("web"),
            Some(record("a", "web", Kind::ConfigMap, "cm")),
        );
        assert_eq!(ownership(&ours, &a, "web"), Ownership::Ours);
        // The labels do not matter once there is a record.
        let unlabelled = observed(
            Kind::ConfigMap,
            "cm",
            None,
            Some(record("a", "web", Kind::ConfigMap, "cm")),
        );
        assert_eq!(ownership(&unlabelled, &a, "web"), Ownership::Ours);
    }

    #[test]
    fn another_tenant_or_installation_is_named() {
        let b_owned = observed(
            Kind::StatefulSet,
            "beta",
            Some("beta"),
            Some(record("b", "beta", Kind::StatefulSet, "beta")),
        );
        assert_eq!(
            ownership(&b_owned, &tenant("a"), "beta"),
            Ownership::Other("owned by tenant `b/c1`, installation `beta`".into())
        );
        let other_cluster = Tenant::new("b", "c2").unwrap();
        assert!(matches!(
            ownership(&b_owned, &other_cluster, "beta"),
            Ownership::Other(_)
        ));
        assert_eq!(
            ownership(&b_owned, &tenant("b"), "gamma"),
            Ownership::Other("owned by tenant `b/c1`, installation `beta`".into())
        );
    }

    #[test]
    fn a_record_copied_from_another_object_is_not_ours() {
        let copied = observed(
            Kind::ConfigMap,
            "web-shared",
            Some("web"),
            Some(record(
                "a",
                "web",
                Kind::ConfigMap,
                "vantiq-web-configmap-0",
            )),
        );
        assert_eq!(
            ownership(&copied, &tenant("a"), "web"),
            Ownership::Copied(ComponentId::new(Kind::ConfigMap, "vantiq-web-configmap-0"))
        );
        let other_kind = observed(
            Kind::Secret,
            "cm",
            Some("web"),
            Some(record("a", "web", Kind::ConfigMap, "cm")),
        );
        assert!(matches!(
            ownership(&other_kind, &tenant("a"), "web"),
            Ownership::Copied(_)
        ));
    }

    #[test]
    fn labels_alone_are_legacy_or_someone_elses() {
        let a = tenant("a");
        assert_eq!(
            ownership(&observed(Kind::Service, "s", Some("web"), None), &a, "web"),
            Ownership::Legacy
        );
        assert_eq!(
            ownership(
                &observed(Kind::Service, "s", Some("other"), None),
                &a,
                "web"
            ),
            Ownership::Other("owned by installation `other`, from before owner records".into())
        );
        assert_eq!(
            ownership(&observed(Kind::Service, "s", None, None), &a, "web"),
            Ownership::Other("not created by k8sworker".into())
        );
        let garbage = observed(Kind::Service, "s", Some("web"), Some("web".into()));
        assert!(matches!(
            ownership(&garbage, &a, "web"),
            Ownership::Other(_)
        ));
    }
}
