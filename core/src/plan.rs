//! Plans: the values the planner computes and an executor applies.
//!
//! A [`Plan`] is an ordered list of [`Step`]s for one installation in one
//! namespace. Each step is bound to the state it was computed from (its
//! [`Precondition`]), so an executor can refuse the whole plan when anything
//! moved since it was observed. The plan's id is derived from its content:
//! the same plan computed twice has the same id, which is what lets an
//! executor apply a plan at most once.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::component::{ComponentId, Object};
use crate::owner::Tenant;

/// What to do with an installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Bring the installation's objects to the request: create, update and
    /// scale them, and delete those no longer rendered.
    Deploy,
    /// Delete every object of the installation.
    Undeploy,
    /// Scale the StatefulSet to 0 replicas.
    Shutdown,
    /// Scale the StatefulSet to the request's `replicaCount`.
    Restart,
    /// Report how the cluster departs from the request; writes nothing.
    Verify,
    /// Read the pods' logs; applies no plan.
    FetchLogs,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 6] = [
        Operation::Deploy,
        Operation::Undeploy,
        Operation::Shutdown,
        Operation::Restart,
        Operation::Verify,
        Operation::FetchLogs,
    ];

    /// Vantiq's name of the operation.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Deploy => "deploy",
            Operation::Undeploy => "undeploy",
            Operation::Shutdown => "shutdown",
            Operation::Restart => "restart",
            Operation::Verify => "verify",
            Operation::FetchLogs => "fetchLogs",
        }
    }

    /// Reads Vantiq's name of an operation.
    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create the object, which must not exist.
    Create,
    /// Replace the object with the desired one.
    Update,
    /// Delete the object.
    Delete,
    /// Set the StatefulSet's `spec.replicas`.
    Scale,
    /// The object is as desired; costs no write.
    Noop,
}

impl Action {
    /// The action's name: `create`, `update`, `delete`, `scale` or `noop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Scale => "scale",
            Action::Noop => "noop",
        }
    }

    /// Whether the step writes to the API server.
    pub fn writes(self) -> bool {
        self != Action::Noop
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state a step was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// The object must not exist.
    MustNotExist,
    /// The object must still be exactly this version.
    Expected {
        /// `metadata.uid` as observed.
        uid: String,
        /// `metadata.resourceVersion` as observed.
        resource_version: String,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What the step does.
    pub action: Action,
    /// The object the step acts on.
    pub component: ComponentId,
    /// What must still hold when the step is applied.
    pub precondition: Precondition,
    /// Create and update: the full desired object.
    pub object: Option<Object>,
    /// Create and update: the object's spec hash.
    pub spec_hash: Option<String>,
    /// Scale: the replica count to set.
    pub replicas: Option<i32>,
    /// Why, for a person reading the plan.
    pub reason: String,
}

/// An ordered list of steps for one installation in one namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Derived from the digest: equal plans have equal ids.
    pub id: String,
    /// SHA-256 (hex) of the plan's content.
    pub digest: String,
    /// Whom the plan is for: every object it writes records this tenant as
    /// its owner, and an executor applies it only for a tenant it allows.
    /// `None` only in plans of older planners, which executors refuse.
    pub tenant: Option<Tenant>,
    /// The installation's name.
    pub installation: String,
    /// The installation's Kubernetes namespace.
    pub namespace: String,
    /// The operation the plan carries out.
    pub operation: Operation,
    /// The steps, in the order to apply them.
    pub steps: Vec<Step>,
    /// Replicas the StatefulSet must reach for the plan to be healthy.
    pub desired_replicas: i32,
}

impl Plan {
    /// Builds a plan and computes its digest and id.
    pub fn new(
        tenant: Option<Tenant>,
        installation: &str,
        namespace: &str,
        operation: Operation,
        steps: Vec<Step>,
        desired_replicas: i32,
    ) -> Plan {
        let digest = digest(
            tenant.as_ref(),
            installation,
            namespace,
            operation,
            &steps,
            desired_replicas,
        );
        Plan {
            id: format!("plan-{}", &digest[..20]),
            digest,
            tenant,
            installation: installation.to_owned(),
            namespace: namespace.to_owned(),
            operation,
            steps,
            desired_replicas,
        }
    }

    /// The steps that write.
    pub fn writes(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|step| step.action.writes())
    }

    /// Whether applying the plan changes nothing.
    pub fn is_noop(&self) -> bool {
        self.writes().next().is_none()
    }
}

/// The digest covers everything an executor acts on: identity (the tenant,
/// when there is one), order, preconditions, the desired objects (through
/// their spec hashes) and replicas.
fn digest(
    tenant: Option<&Tenant>,
    installation: &str,
    namespace: &str,
    operation: Operation,
    steps: &[Step],
    desired_replicas: i32,
) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update(value.len().to_le_bytes());
        hasher.update(value.as_bytes());
    };
    field("k8sworker.v1/plan");
    if let Some(tenant) = tenant {
        field("tenant");
        field(&tenant.vantiq_namespace);
        field(&tenant.cluster);
    }
    field(installation);
    field(namespace);
    field(operation.as_str());
    field(&desired_replicas.to_string());
    for step in steps {
        field(step.action.as_str());
        field(step.component.kind.as_str());
        field(&step.component.name);
        match &step.precondition {
            Precondition::MustNotExist => field("must-not-exist"),
            Precondition::Expected {
                uid,
                resource_version,
            } => {
                field("expected");
                field(uid);
                field(resource_version);
            }
        }
        field(step.spec_hash.as_deref().unwrap_or(""));
        field(&step.replicas.map(|r| r.to_string()).unwrap_or_default());
    }
    hex::encode(hasher.finalize())
}
