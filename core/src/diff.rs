//! Diff: desired components + what an executor observed → a [`Plan`].
//!
//! Rules:
//! - deploy: creates and updates in dependency order (ConfigMaps/Secrets,
//!   headless Service, StatefulSet, port Services, Ingresses), then deletes of
//!   our objects that are no longer desired, in reverse order; an object whose
//!   spec hash is unchanged is a `noop` (a stopped StatefulSet gets a `scale`);
//! - undeploy: deletes every object whose owner record is this tenant's and
//!   installation's ([`crate::owner`]);
//! - shutdown/restart: a single `scale` step of the StatefulSet;
//! - an object in the way that is not ours ([`crate::owner::ownership`]) is
//!   never adopted, updated or deleted: the plan fails, naming it and its
//!   owner. A deploy adopts an object from before owner records (today's two
//!   labels of this installation, no record) only at a name the installation
//!   generates, with an update that writes the record; an object whose
//!   record names another object (copied) is never touched;
//! - an update that would change an immutable field of the observed object
//!   ([`crate::immutable`]: a StatefulSet's selector, serviceName, …) fails
//!   the plan before any write, naming the object and field, and saying to
//!   undeploy, then deploy;
//! - a plan that deletes everything is refused unless the operation is undeploy.

use std::collections::BTreeMap;
use std::fmt;

use crate::component::{Component, ComponentId, Kind};
use crate::immutable::{self, Change};
use crate::owner::{Ownership, Tenant, ownership};
use crate::plan::{Action, Operation, Plan, Precondition, Step};

pub use crate::observed::Observed;

/// The precondition that binds a step to `observed` as it was seen.
fn expected(observed: &Observed) -> Precondition {
    Precondition::Expected {
        uid: observed.uid.clone(),
        resource_version: observed.resource_version.clone(),
    }
}

/// An object in the way that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unowned {
    /// The object in the way.
    pub id: ComponentId,
    /// Whose it is, for a person: ``owned by tenant `a/c1`, installation
    /// `web` ``, `not created by k8sworker`, …
    pub owner: String,
}

impl Unowned {
    fn new(id: &ComponentId, ownership: Ownership) -> Unowned {
        let owner = match ownership {
            Ownership::Ours => "owned by this installation".to_owned(),
            Ownership::Legacy => "this installation's labels from before owner records; only a deploy adopts them, at a name it generates: deploy once to record the owner".to_owned(),
            Ownership::Copied(of) => format!("its owner record names {of}: copied, not ours"),
            Ownership::Other(owner) => owner,
        };
        Unowned {
            id: id.clone(),
            owner,
        }
    }
}

impl fmt::Display for Unowned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.owner)
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Objects at the installation's names, or carrying its labels, that are
    /// not this tenant's and installation's ([`crate::owner`]); each named
    /// with its owner.
    #[error("{} in the way and not managed by this installation of this tenant; k8sworker never adopts, changes or deletes them: rename the installation or remove them: {}", if .0.len() == 1 { "an object is" } else { "objects are" }, .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotOwned(Vec<Unowned>),
    /// Updates would change fields the API server never lets an update
    /// change ([`crate::immutable`]); each named with the object and field.
    #[error("the plan would change immutable fields: {}; {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), immutable::ADVICE)]
    Immutable(Vec<Change>),
    /// Every step would delete (the installation's name); only undeploy may.
    #[error("the plan would delete every component of `{0}`; only undeploy may do that")]
    DeleteAllRefused(String),
    /// Shutdown or restart found no StatefulSet to scale.
    #[error(
        "installation `{installation}` has no StatefulSet in namespace `{namespace}`; deploy it first"
    )]
    NotFound {
        /// The installation's name.
        installation: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The operation applies no plan (fetchLogs).
    #[error("{0} is not an operation that applies a plan")]
    NoPlan(Operation),
}

/// Computes the plan for `operation`.
///
/// `desired` is the output of [`crate::render::render`] (ignored by undeploy,
/// shutdown and restart); `replicas` is the installation's `replicaCount`;
/// `tenant` is whom the operation is for: only its objects are ours.
///
/// # Errors
/// [`PlanError::NotOwned`] when objects in the way are not ours,
/// [`PlanError::Immutable`] when an update would change an immutable field,
/// [`PlanError::DeleteAllRefused`] when every step would delete outside
/// undeploy, [`PlanError::NotFound`] when shutdown or restart finds no
/// StatefulSet, and [`PlanError::NoPlan`] for fetchLogs.
pub fn diff(
    operation: Operation,
    tenant: &Tenant,
    installation: &str,
    namespace: &str,
    desired: &[Component],
    observed: &[Observed],
    replicas: i32,
) -> Result<Plan, PlanError> {
    let steps = match operation {
        Operation::Deploy | Operation::Verify => {
            deploy_steps(tenant, installation, desired, observed)?
        }
        Operation::Undeploy => undeploy_steps(tenant, installation, observed)?,
        Operation::Shutdown => scale_steps(tenant, installation, namespace, observed, 0)?,
        Operation::Restart => scale_steps(tenant, installation, namespace, observed, replicas)?,
        Operation::FetchLogs => return Err(PlanError::NoPlan(operation)),
    };
    if operation != Operation::Undeploy
        && !steps.is_empty()
        && steps.iter().all(|step| step.action == Action::Delete)
    {
        return Err(PlanError::DeleteAllRefused(installation.to_owned()));
    }
    let desired_replicas = match operation {
        Operation::Undeploy | Operation::Shutdown => 0,
        _ => replicas,
    };
    Ok(Plan::new(
        Some(tenant.clone()),
        installation,
        namespace,
        operation,
        steps,
        desired_replicas,
    ))
}

fn deploy_steps(
    tenant: &Tenant,
    installation: &str,
    desired: &[Component],
    observed: &[Observed],
) -> Result<Vec<Step>, PlanError> {
    let by_id: BTreeMap<&ComponentId, &Observed> = observed.iter().map(|o| (&o.id, o)).collect();
    let mut steps = Vec::with_capacity(desired.len());
    let mut unowned = Vec::new();
    let mut fixed = Vec::new();
    for component in desired {
        let id = component.id();
        let step = |action, precondition, reason: String| Step {
            action,
            component: id.clone(),
            precondition,
            object: matches!(action, Action::Create | Action::Update)
                .then(|| component.object.clone()),
            spec_hash: matches!(action, Action::Create | Action::Update)
                .then(|| component.spec_hash.clone()),
            replicas: None,
            reason,
        };
        let current = by_id.get(&id).copied();
        let next = match current {
            None => step(
                Action::Create,
                Precondition::MustNotExist,
                "does not exist".into(),
            ),
            Some(current) => match ownership(current, tenant, installation) {
                Ownership::Ours => ours_step(component, current, step),
                Ownership::Legacy => step(
                    Action::Update,
                    expected(current),
                    "adopted: created before owner records; records its owner".into(),
                ),
                other => {
                    unowned.push(Unowned::new(&id, other));
                    continue;
                }
            },
        };
        if let (Action::Update, Some(current)) = (next.action, current) {
            fixed.extend(immutable::changes(
                &id,
                &component.object,
                &current.immutable,
            ));
        }
        steps.push(next);
    }
    if !unowned.is_empty() {
        return Err(PlanError::NotOwned(unowned));
    }
    if !fixed.is_empty() {
        return Err(PlanError::Immutable(fixed));
    }
    let wanted: std::collections::BTreeSet<ComponentId> =
        desired.iter().map(Component::id).collect();
    let mut leftovers: Vec<&Observed> = observed
        .iter()
        .filter(|o| match ownership(o, tenant, installation) {
            Ownership::Ours => true,
            Ownership::Legacy => is_former_name(&o.id, installation),
            _ => false,
        })
        .filter(|o| !wanted.contains(&o.id))
        .collect();
    leftovers.sort_by_key(|o| (o.id.kind.delete_rank(), o.id.name.clone()));
    steps.extend(
        leftovers
            .into_iter()
            .map(|o| delete_step(o, "no longer in the installation")),
    );
    Ok(steps)
}

/// Whether `id` is a name an earlier release generated for `installation`
/// and no current rule does: the Secret `vantiq-<name>-envsecret`, now a
/// `vantiq-<name>-secret-<n>`. A deploy deletes such an object with this
/// installation's labels even from before owner records (it cannot adopt
/// it), so that it is not left behind and the installation can be undeployed.
fn is_former_name(id: &ComponentId, installation: &str) -> bool {
    id.kind == Kind::Secret && id.name == format!("vantiq-{installation}-envsecret")
}

/// The step for a desired component whose current object is ours.
fn ours_step(
    component: &Component,
    current: &Observed,
    step: impl Fn(Action, Precondition, String) -> Step,
) -> Step {
    let id = component.id();
    let edits = edits(component, current);
    if current.spec_hash.as_deref() == Some(component.spec_hash.as_str()) && edits.is_empty() {
        let want = desired_replicas(component);
        if id.kind == Kind::StatefulSet && want.is_some() && current.replicas != want {
            let mut scale = step(
                Action::Scale,
                expected(current),
                format!(
                    "unchanged, but scaled to {} instead of {}",
                    current.replicas.unwrap_or_default(),
                    want.unwrap_or_default()
                ),
            );
            scale.replicas = want;
            scale
        } else {
            step(Action::Noop, expected(current), "unchanged".into())
        }
    } else {
        step(
            Action::Update,
            expected(current),
            if !edits.is_empty() {
                edits.join("; ")
            } else if current.spec_hash.is_some() {
                "changed".into()
            } else {
                "has no spec hash".into()
            },
        )
    }
}

/// Edits of another field manager a deploy would undo, for a person: each
/// field k8sworker renders that another manager holds with another value
/// (``field `spec.template.spec.containers[name=web].image` changed by
/// kubectl-edit``). Fields k8sworker does not set are not its to judge. A
/// manager reported without its fields (an older executor) is judged whole
/// (`edited by kubectl-edit`).
fn edits(component: &Component, current: &Observed) -> Vec<String> {
    let mut found: Vec<String> = if current.foreign_fields.is_empty() {
        Vec::new()
    } else {
        crate::managed::edits(&component.object.to_json(), &current.foreign_fields)
            .into_iter()
            .map(|(field, manager)| format!("field `{field}` changed by {manager}"))
            .collect()
    };
    let judged: std::collections::BTreeSet<&str> = current
        .foreign_fields
        .iter()
        .map(|field| field.manager.as_str())
        .collect();
    let whole: Vec<&str> = current
        .foreign_managers
        .iter()
        .map(String::as_str)
        .filter(|manager| !judged.contains(manager))
        .collect();
    if !whole.is_empty() {
        found.push(format!("edited by {}", whole.join(", ")));
    }
    found
}

fn desired_replicas(component: &Component) -> Option<i32> {
    match &component.object {
        crate::component::Object::StatefulSet(sts) => sts.spec.as_ref().and_then(|s| s.replicas),
        _ => None,
    }
}

fn delete_step(observed: &Observed, reason: &str) -> Step {
    Step {
        action: Action::Delete,
        component: observed.id.clone(),
        precondition: expected(observed),
        object: None,
        spec_hash: None,
        replicas: None,
        reason: reason.to_owned(),
    }
}

/// Deletes the objects whose record is ours. One owned by another tenant or
/// installation, or from before owner records, fails the plan (nothing is
/// deleted); a copy (its record names another object) is left alone.
fn undeploy_steps(
    tenant: &Tenant,
    installation: &str,
    observed: &[Observed],
) -> Result<Vec<Step>, PlanError> {
    let mut ours = Vec::new();
    let mut unowned = Vec::new();
    for o in observed {
        match ownership(o, tenant, installation) {
            Ownership::Ours => ours.push(o),
            Ownership::Copied(_) => {}
            Ownership::Other(_) if o.owner.as_deref() != Some(installation) => {}
            other => unowned.push(Unowned::new(&o.id, other)),
        }
    }
    if !unowned.is_empty() {
        return Err(PlanError::NotOwned(unowned));
    }
    ours.sort_by_key(|o| (o.id.kind.delete_rank(), o.id.name.clone()));
    Ok(ours
        .into_iter()
        .map(|o| delete_step(o, "undeploy"))
        .collect())
}

fn scale_steps(
    tenant: &Tenant,
    installation: &str,
    namespace: &str,
    observed: &[Observed],
    replicas: i32,
) -> Result<Vec<Step>, PlanError> {
    let id = ComponentId::new(Kind::StatefulSet, installation);
    let current = observed.iter().find(|o| o.id == id);
    let Some(current) = current else {
        return Err(PlanError::NotFound {
            installation: installation.to_owned(),
            namespace: namespace.to_owned(),
        });
    };
    match ownership(current, tenant, installation) {
        Ownership::Ours => {}
        other => return Err(PlanError::NotOwned(vec![Unowned::new(&id, other)])),
    }
    let (action, reason) = if current.replicas == Some(replicas) {
        (Action::Noop, format!("already at {replicas} replicas"))
    } else {
        (
            Action::Scale,
            format!(
                "{} → {replicas} replicas",
                current.replicas.unwrap_or_default()
            ),
        )
    };
    Ok(vec![Step {
        action,
        component: id,
        precondition: expected(current),
        object: None,
        spec_hash: None,
        replicas: (action == Action::Scale).then_some(replicas),
        reason,
    }])
}

/// A difference between the installation and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The object that differs.
    pub component: ComponentId,
    /// How it differs.
    pub kind: DriftKind,
    /// The difference, for a person.
    pub message: String,
}

/// How an object departs from the installation: what a deploy would do
/// about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// Desired but absent: a deploy would create it.
    Missing,
    /// Changed outside k8sworker (another spec hash, or another field
    /// manager holding a field k8sworker sets with another value): a deploy
    /// would update it.
    Altered,
    /// At one of the installation's names but not ours: a deploy would fail.
    Unowned,
    /// The StatefulSet's replicas differ from `replicaCount`.
    Scaled,
    /// Ours but no longer rendered: a deploy would delete it.
    Extra,
}

impl DriftKind {
    /// The kind's name: `missing`, `altered`, `unowned`, `scaled` or `extra`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Altered => "altered",
            DriftKind::Unowned => "unowned",
            DriftKind::Scaled => "scaled",
            DriftKind::Extra => "extra",
        }
    }
}

/// Verify: what would a deploy change? Each difference is drift. `stopped`
/// says the installation was shut down on purpose, so zero replicas is not drift.
pub fn verify(
    tenant: &Tenant,
    installation: &str,
    desired: &[Component],
    observed: &[Observed],
    stopped: bool,
) -> Vec<Drift> {
    match deploy_steps(tenant, installation, desired, observed) {
        Err(PlanError::NotOwned(unowned)) => unowned
            .into_iter()
            .map(|u| Drift {
                message: format!("{u} is in the way"),
                component: u.id,
                kind: DriftKind::Unowned,
            })
            .collect(),
        Err(PlanError::Immutable(changes)) => changes
            .into_iter()
            .map(|change| Drift {
                message: format!(
                    "{change} (it was altered outside k8sworker, or the request changed it)"
                ),
                component: change.id,
                kind: DriftKind::Altered,
            })
            .collect(),
        Err(_) => Vec::new(),
        Ok(steps) => steps
            .into_iter()
            .filter_map(|step| {
                let (kind, message) = match step.action {
                    Action::Noop => return None,
                    Action::Scale if stopped && step.replicas.is_some() => {
                        let current = observed.iter().find(|o| o.id == step.component);
                        if current.and_then(|o| o.replicas) == Some(0) {
                            return None;
                        }
                        (
                            DriftKind::Scaled,
                            format!("{} was scaled outside k8sworker", step.component),
                        )
                    }
                    Action::Scale => (
                        DriftKind::Scaled,
                        format!("{} was scaled outside k8sworker", step.component),
                    ),
                    Action::Create => {
                        (DriftKind::Missing, format!("{} is missing", step.component))
                    }
                    Action::Update if step.reason.starts_with("field `") => (
                        DriftKind::Altered,
                        format!(
                            "{} was altered outside k8sworker: {}",
                            step.component, step.reason
                        ),
                    ),
                    Action::Update => (
                        DriftKind::Altered,
                        format!("{} was altered outside k8sworker", step.component),
                    ),
                    Action::Delete => (
                        DriftKind::Extra,
                        format!("{} is no longer part of the installation", step.component),
                    ),
                };
                Some(Drift {
                    component: step.component,
                    kind,
                    message,
                })
            })
            .collect(),
    }
}
