//! What each operation needs and decides, apart from any I/O.
//!
//! An operation on an installation flows through these functions in order:
//!
//! ```text
//! Work::new(operation, request, cluster, ancillaries)   validate + render (deploy, verify)
//!        │                                              or check the identity (the rest)
//!        ├── names / references                          what to observe
//!        ├── missing_references(observed refs)           deploy refuses, verify reports
//!        ├── plan(observed)                              diff → Plan   (deploy … restart)
//!        └── verify(observed, missing)                   drift         (verify)
//! ```
//!
//! The planner's `execute` drives an executor through these steps; tests and
//! the CLI call them directly.

use crate::component::{Component, ComponentId, Kind};
use crate::diff::{self, Drift, Observed, PlanError};
use crate::model::{ConfigEntry, DataSource, InstallationRequest};
use crate::owner::Tenant;
use crate::plan::{Operation, Plan};
use crate::render::{self, Ancillaries, ClusterContext, RenderError};
use crate::validate::validate_identity;

/// The existing objects a request refers to and does not own: ConfigMaps and
/// Secrets named by `file` entries (`name` + `key`) and Secrets named by
/// `environmentVariable` entries (`secretName`), sorted, each once.
pub fn references(request: &InstallationRequest) -> Vec<ComponentId> {
    let mut refs = Vec::new();
    for entry in &request.config {
        match entry {
            ConfigEntry::File(file) => {
                if let (Some(name), Some(_)) = (&file.name, &file.key) {
                    let kind = match file.data_source() {
                        Some(DataSource::Secret) => Kind::Secret,
                        _ => Kind::ConfigMap,
                    };
                    refs.push(ComponentId::new(kind, name.clone()));
                }
            }
            ConfigEntry::EnvironmentVariable(env) => {
                if let Some(secret) = &env.secret_name {
                    refs.push(ComponentId::new(Kind::Secret, secret.clone()));
                }
            }
            _ => {}
        }
    }
    refs.sort();
    refs.dedup();
    refs
}

/// The references in `wanted` that are not among `existing`, in `wanted`'s order.
pub fn missing_references(wanted: &[ComponentId], existing: &[ComponentId]) -> Vec<ComponentId> {
    wanted
        .iter()
        .filter(|id| !existing.contains(id))
        .cloned()
        .collect()
}

/// One operation on one installation, validated, with what it needs to
/// observe and the objects it wants.
#[derive(Debug, Clone)]
pub struct Work {
    /// The operation.
    pub operation: Operation,
    /// Whom the operation is for; only this tenant's objects are touched.
    pub tenant: Tenant,
    /// The installation request (for operations other than deploy and verify
    /// only its name, namespace and `replicaCount` matter).
    pub request: InstallationRequest,
    /// The desired components: rendered for deploy and verify, empty otherwise.
    pub desired: Vec<Component>,
    /// The existing objects the request refers to: for deploy and verify,
    /// empty otherwise.
    pub references: Vec<ComponentId>,
}

impl Work {
    /// Validates the request for `operation` before anything is observed or
    /// written: deploy and verify validate and render the whole request
    /// (so a bad request changes nothing anywhere); the other operations
    /// need only a valid identity (the one name rule of
    /// [`crate::validate`], 52-character limit included).
    ///
    /// Every operation needs the tenant (`cluster.tenant`) it is for.
    ///
    /// # Errors
    /// [`RenderError::NoTenant`] without a tenant, [`RenderError::Invalid`]
    /// with every violation, or a render error naming an unresolved secret
    /// or document.
    pub fn new(
        operation: Operation,
        request: InstallationRequest,
        cluster: &ClusterContext,
        ancillaries: &Ancillaries,
    ) -> Result<Work, RenderError> {
        let tenant = cluster.tenant.clone().ok_or(RenderError::NoTenant)?;
        let (desired, references) = match operation {
            Operation::Deploy | Operation::Verify => (
                render::render(&request, cluster, ancillaries)?,
                references(&request),
            ),
            _ => {
                validate_identity(&request).map_err(RenderError::Invalid)?;
                (Vec::new(), Vec::new())
            }
        };
        Ok(Work {
            operation,
            tenant,
            request,
            desired,
            references,
        })
    }

    /// The installation's name.
    pub fn name(&self) -> &str {
        &self.request.name
    }

    /// The installation's Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.request.k8s_namespace
    }

    /// The names of the desired components, to observe by name (objects the
    /// installation owns are observed by label as well).
    pub fn names(&self) -> Vec<ComponentId> {
        self.desired.iter().map(Component::id).collect()
    }

    /// A deploy refuses to start while a referenced object is missing.
    ///
    /// # Errors
    /// [`MissingReferences`] naming them, for a deploy only.
    pub fn check_references(&self, missing: &[ComponentId]) -> Result<(), MissingReferences> {
        if self.operation == Operation::Deploy && !missing.is_empty() {
            return Err(MissingReferences {
                namespace: self.namespace().to_owned(),
                missing: missing.to_vec(),
            });
        }
        Ok(())
    }

    /// The plan that takes `observed` to what the operation wants.
    ///
    /// # Errors
    /// [`PlanError`]: objects in the way that are not ours, a plan that would
    /// delete everything outside undeploy, no StatefulSet to scale, or an
    /// operation that applies no plan (fetchLogs).
    pub fn plan(&self, observed: &[Observed]) -> Result<Plan, PlanError> {
        diff::diff(
            self.operation,
            &self.tenant,
            self.name(),
            self.namespace(),
            &self.desired,
            observed,
            self.request.replica_count(),
        )
    }

    /// The verify verdict: how `observed` departs from the desired
    /// components (an installation shut down to 0 replicas is not "scaled"),
    /// and which referenced objects are missing.
    pub fn verify(&self, observed: &[Observed], missing: Vec<ComponentId>) -> Verdict {
        let stopped = observed.iter().any(|o| {
            o.id.kind == Kind::StatefulSet && o.id.name == self.name() && o.replicas == Some(0)
        });
        Verdict {
            drift: diff::verify(&self.tenant, self.name(), &self.desired, observed, stopped),
            missing_references: missing,
        }
    }
}

/// What verify found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Components missing, altered, not ours, scaled, or extra.
    pub drift: Vec<Drift>,
    /// Referenced objects that do not exist.
    pub missing_references: Vec<ComponentId>,
}

/// A deploy refers to objects that do not exist in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the installation refers to objects that do not exist in namespace `{namespace}`: {}; create them first",
    .missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
)]
pub struct MissingReferences {
    /// The namespace looked in.
    pub namespace: String,
    /// The missing objects.
    pub missing: Vec<ComponentId>,
}
