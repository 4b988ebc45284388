//! Who a component is: one SPIFFE-style URI in its certificate's subject
//! alternative names, in the trust domain `k8sworker`.
//!
//! | component | URI |
//! |---|---|
//! | gateway of a tenant | `spiffe://k8sworker/gateway/<vantiq-namespace>/<cluster>` |
//! | planner | `spiffe://k8sworker/planner` |
//! | executor of a Kubernetes namespace | `spiffe://k8sworker/executor/<k8s-namespace>` |
//! | preview client (CI pipelines asking for plans) | `spiffe://k8sworker/preview` |
//!
//! A gateway's URI names its tenant, the same pair (`VANTIQ_NAMESPACE`,
//! `CLUSTER_NAME`) its control-plane token is bound to; the planner takes the
//! tenant of every call from it.

use std::fmt;

use k8sworker_core::owner::Tenant;

/// The trust domain of every k8sworker identity.
pub const TRUST_DOMAIN: &str = "k8sworker";

/// The URI prefix of every k8sworker identity.
pub const PREFIX: &str = "spiffe://k8sworker/";

/// A component's identity, as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The gateway of one tenant (Vantiq namespace and cluster).
    Gateway(Tenant),
    /// The planner.
    Planner,
    /// The executor of one Kubernetes namespace.
    Executor {
        /// The namespace it serves.
        namespace: String,
    },
    /// A client that may ask for renders and plans, never execute one.
    Preview,
}

/// What kind of component an [`Identity`] is, without its parameters: what
/// a call's rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Any gateway.
    Gateway,
    /// The planner.
    Planner,
    /// Any executor.
    Executor,
    /// A preview client.
    Preview,
}

impl Role {
    /// The URI pattern of the role's identities, for messages.
    pub fn pattern(self) -> &'static str {
        match self {
            Role::Gateway => "spiffe://k8sworker/gateway/<vantiq-namespace>/<cluster>",
            Role::Planner => "spiffe://k8sworker/planner",
            Role::Executor => "spiffe://k8sworker/executor/<k8s-namespace>",
            Role::Preview => "spiffe://k8sworker/preview",
        }
    }
}

/// Why a URI is not a k8sworker identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{uri}` is not a k8sworker identity (spiffe://k8sworker/planner, /preview, /executor/<k8s-namespace> or /gateway/<vantiq-namespace>/<cluster>)"
)]
pub struct IdentityError {
    /// The URI given.
    pub uri: String,
}

impl Identity {
    /// The gateway of `tenant`.
    pub fn gateway(tenant: Tenant) -> Identity {
        Identity::Gateway(tenant)
    }

    /// The executor of `namespace`.
    pub fn executor(namespace: impl Into<String>) -> Identity {
        Identity::Executor {
            namespace: namespace.into(),
        }
    }

    /// The identity's role.
    pub fn role(&self) -> Role {
        match self {
            Identity::Gateway(_) => Role::Gateway,
            Identity::Planner => Role::Planner,
            Identity::Executor { .. } => Role::Executor,
            Identity::Preview => Role::Preview,
        }
    }

    /// The URI that names this identity in a certificate.
    pub fn uri(&self) -> String {
        match self {
            Identity::Gateway(tenant) => format!(
                "{PREFIX}gateway/{}/{}",
                tenant.vantiq_namespace, tenant.cluster
            ),
            Identity::Planner => format!("{PREFIX}planner"),
            Identity::Executor { namespace } => format!("{PREFIX}executor/{namespace}"),
            Identity::Preview => format!("{PREFIX}preview"),
        }
    }

    /// Reads an identity URI.
    ///
    /// # Errors
    /// [`IdentityError`] for anything but the four forms of the module's table;
    /// a tenant part follows [`Tenant::new`], a namespace is a DNS-1123 label.
    pub fn parse(uri: &str) -> Result<Identity, IdentityError> {
        let bad = || IdentityError {
            uri: uri.to_owned(),
        };
        let path = uri.strip_prefix(PREFIX).ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts[..] {
            ["planner"] => Ok(Identity::Planner),
            ["preview"] => Ok(Identity::Preview),
            ["executor", namespace] if k8sworker_core::names::is_dns1123_label(namespace) => {
                Ok(Identity::executor(namespace))
            }
            ["gateway", vantiq_namespace, cluster] => Tenant::new(vantiq_namespace, cluster)
                .map(Identity::Gateway)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_reads_back_from_its_uri() {
        for identity in [
            Identity::Planner,
            Identity::Preview,
            Identity::executor("team-a"),
            Identity::gateway(Tenant::new("acme", "prod").unwrap()),
        ] {
            assert_eq!(Identity::parse(&identity.uri()), Ok(identity));
        }
        assert_eq!(
            Identity::gateway(Tenant::new("acme", "prod").unwrap()).uri(),
            "spiffe://k8sworker/gateway/acme/prod"
        );
    }

    #[test]
    fn anything_else_is_no_identity() {
        for uri in [
            "spiffe://k8sworker/planner/x",
            "spiffe://other/planner",
            "https://k8sworker/planner",
            "spiffe://k8sworker/executor/Team_A",
            "spiffe://k8sworker/executor/",
            "spiffe://k8sworker/gateway/acme",
            "spiffe://k8sworker/gateway/acme//",
            "spiffe://k8sworker/gateway/a/b/c",
            "spiffe://k8sworker/",
        ] {
            assert!(Identity::parse(uri).is_err(), "{uri}");
        }
    }
}
