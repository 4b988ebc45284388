//! Which pods a deploy must replace because the StatefulSet controller never
//! will.
//!
//! A StatefulSet with `OrderedReady` pod management (the default, and what
//! render leaves) rolls a new template out one pod at a time, and only while
//! every pod is Running and Ready. A pod of an earlier revision that never
//! starts (its image cannot be pulled, it crash-loops, …) therefore blocks
//! the rollout of the very template that would fix it: the controller waits
//! for that pod forever and never replaces it (kubernetes/kubernetes#67250;
//! the Kubernetes documentation, "StatefulSets", "Forced rollback", says to
//! delete such pods by hand, which a Vantiq user cannot do).
//!
//! [`stuck`] names exactly the pods whose deletion lets the rollout go on,
//! and nothing else. A pod is stuck when all of these hold:
//!
//! - the StatefulSet controller has observed the StatefulSet's latest
//!   generation, so its `updateRevision` is the template just written;
//! - the pod's controller is this StatefulSet (an ownerReference with
//!   `controller: true` and the StatefulSet's uid), its name is one the
//!   controller gives (`<statefulset>-<ordinal>` within the replicas), and
//!   it is not being deleted;
//! - its revision (label `controller-revision-hash`) is not the
//!   `updateRevision`: a failing pod of the update revision has nothing to
//!   roll forward to;
//! - it is not Ready, and [`start_failures`] finds a reason it will not
//!   start that waiting does not fix ([`FAILING_REASONS`], or unschedulable);
//! - the controller re-creates it at the update revision: the update
//!   strategy is `OnDelete`, or `RollingUpdate` with the pod's ordinal at or
//!   above the partition (below it, the controller would re-create the same
//!   failing revision).
//!
//! A healthy pod of an earlier revision is the controller's to roll; a pod
//! that is merely slow (ContainerCreating, Pending before scheduling) is
//! left alone.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};

/// Container waiting reasons that waiting will not resolve: the kubelet
/// keeps retrying them with a growing back-off (the kubelet's
/// `ErrImagePull`/`ImagePullBackOff`/`InvalidImageName` image errors,
/// `CrashLoopBackOff`, and `CreateContainerConfigError`/
/// `CreateContainerError` for a container that cannot be created).
pub const FAILING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The label on each pod naming the StatefulSet revision (a
/// ControllerRevision) it was created from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The label on each pod with its ordinal (Kubernetes 1.28 and later).
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Why a pod does not start, when waiting will not fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    /// The Kubernetes reason: one of [`FAILING_REASONS`] or `Unschedulable`.
    pub reason: String,
    /// Kubernetes' message for it, prefixed with the container's name
    /// (`container app: Back-off pulling image "…"`) for a container.
    pub message: String,
}

/// Why `pod` will not become ready, if waiting will not fix it: its
/// unschedulable condition and every (init) container waiting for one of
/// [`FAILING_REASONS`], in that order.
pub fn start_failures(pod: &Pod) -> Vec<StartFailure> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            failures.push(StartFailure {
                reason: "Unschedulable".into(),
                message: condition.message.clone().unwrap_or_default(),
            });
        }
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for container in containers {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        match waiting.reason.as_deref() {
            Some(reason) if FAILING_REASONS.contains(&reason) => failures.push(StartFailure {
                reason: reason.to_owned(),
                message: format!(
                    "container {}: {}",
                    container.name,
                    waiting.message.clone().unwrap_or_default()
                ),
            }),
            _ => {}
        }
    }
    failures
}

/// A pod of a previous revision that fails to start and blocks its
/// StatefulSet's rollout: delete it (bound to `uid` and
/// `resource_version`) and the controller re-creates it from the update
/// revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Pod name.
    pub pod: String,
    /// The pod's uid, for the delete's precondition.
    pub uid: String,
    /// The pod's resourceVersion as judged, for the delete's precondition:
    /// a pod that changed since is judged again.
    pub resource_version: String,
    /// The revision the pod runs.
    pub revision: String,
    /// The StatefulSet's update revision, which replaces it.
    pub update_revision: String,
    /// The first reason it does not start.
    pub failure: StartFailure,
}

/// The pods of `statefulset` among `pods` that fail to start at a previous
/// revision and that the controller re-creates at the update revision once
/// deleted (see the [module](self) for every condition), in `pods`' order.
pub fn stuck(statefulset: &StatefulSet, pods: &[Pod]) -> Vec<Stuck> {
    let Some(status) = &statefulset.status else {
        return Vec::new();
    };
    let observed =
        status.observed_generation.unwrap_or(0) >= statefulset.metadata.generation.unwrap_or(0);
    let (Some(update_revision), Some(uid)) = (
        status.update_revision.as_deref().filter(|r| !r.is_empty()),
        statefulset
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty()),
    ) else {
        return Vec::new();
    };
    if !observed {
        return Vec::new();
    }
    let partition = partition(statefulset);
    pods.iter()
        .filter_map(|pod| {
            let meta = &pod.metadata;
            let owned = meta.owner_references.iter().flatten().any(|owner| {
                owner.controller == Some(true) && owner.kind == "StatefulSet" && owner.uid == uid
            });
            let revision = meta.labels.as_ref()?.get(REVISION_LABEL)?;
            let recreated_at_update =
                partition.is_none_or(|p| ordinal(pod).is_some_and(|o| o >= p));
            if !owned
                || !is_member(statefulset, pod)
                || meta.deletion_timestamp.is_some()
                || revision == update_revision
                || is_ready(pod)
                || !recreated_at_update
            {
                return None;
            }
            let failure = start_failures(pod).into_iter().next()?;
            Some(Stuck {
                pod: meta.name.clone()?,
                uid: meta.uid.clone()?,
                resource_version: meta.resource_version.clone()?,
                revision: revision.clone(),
                update_revision: update_revision.to_owned(),
                failure,
            })
        })
        .collect()
}

/// Whether `pod` has a name the StatefulSet controller gives its pods:
/// `<statefulset>-<ordinal>`, the ordinal within `spec.ordinals.start` and
/// `spec.replicas` more (when the spec says). An ownerReference is only
/// metadata that whoever may create pods in the namespace can write; a pod
/// with another name is not one the controller made, and deleting it lets
/// no rollout go on.
fn is_member(statefulset: &StatefulSet, pod: &Pod) -> bool {
    let (Some(set), Some(name)) = (
        statefulset.metadata.name.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return false;
    };
    let Some(number) = name
        .strip_prefix(set)
        .and_then(|rest| rest.strip_prefix('-'))
    else {
        return false;
    };
    // The controller writes the ordinal in decimal, without sign or zeros.
    let Ok(ordinal) = number.parse::<i32>() else {
        return false;
    };
    if ordinal.to_string() != number {
        return false;
    }
    let spec = statefulset.spec.as_ref();
    let start = spec
        .and_then(|spec| spec.ordinals.as_ref())
        .and_then(|ordinals| ordinals.start)
        .unwrap_or(0);
    let replicas = spec.and_then(|spec| spec.replicas);
    ordinal >= start && replicas.is_none_or(|replicas| ordinal < start + replicas)
}

/// The lowest ordinal the controller re-creates at the update revision:
/// `None` for `OnDelete` (every pod), the partition for `RollingUpdate`
/// (the API server defaults it to 0).
fn partition(statefulset: &StatefulSet) -> Option<i32> {
    let strategy = statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.update_strategy.as_ref());
    match strategy {
        Some(strategy) if strategy.type_.as_deref() == Some("OnDelete") => None,
        strategy => Some(
            strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
        ),
    }
}

/// The pod's ordinal: its `apps.kubernetes.io/pod-index` label, else the
/// number after the last `-` of its name.
fn ordinal(pod: &Pod) -> Option<i32> {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(POD_INDEX_LABEL));
    let text = match labelled {
        Some(index) => index.as_str(),
        None => pod.metadata.name.as_deref()?.rsplit_once('-')?.1,
    };
    text.parse().ok()
}

/// Whether the pod's `Ready` condition is `True`.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{
            apps::v1::{
                RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetStatus,
                StatefulSetUpdateStrategy,
            },
            core::v1::{
                ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
                PodCondition, PodStatus,
            },
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    };

    fn mk_sts(generation: i64, observed: i64, update_revision: &str) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("orders".into()),
                uid: Some("sts-uid".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition: Some(0),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                update_revision: Some(update_revision.into()),
                current_revision: Some("orders-r1".into()),
                ..Default::default()
            }),
        }
    }

    fn mk_pod(name: &str, revision: &str, owner_uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("{name}-uid")),
                resource_version: Some("7".into()),
                labels: Some([(REVISION_LABEL.to_string(), revision.to_string())].into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "StatefulSet".into(),
                    name: "orders".into(),
                    uid: owner_uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "orders".into(),
                    ready: true,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn failing(mut pod: Pod, reason: &str) -> Pod {
        let status = pod.status.as_mut().unwrap();
        status.conditions.as_mut().unwrap()[0].status = "False".into();
        status.container_statuses.as_mut().unwrap()[0] = ContainerStatus {
            name: "orders".into(),
            ready: false,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("Back-off pulling image \"orders:2-pullfail\"".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        pod
    }

    fn names(stuck: &[Stuck]) -> Vec<&str> {
        stuck.iter().map(|s| s.pod.as_str()).collect()
    }

    /// The issue's case: orders-2 was rolled to the unpullable revision r2,
    /// then r3 was written; only orders-2 is stuck, the healthy r1 pods are
    /// the controller's to roll.
    #[test]
    fn a_failing_pod_of_a_previous_revision_is_stuck() {
        let sts = mk_sts(3, 3, "orders-r3");
        let pods = [
            mk_pod("orders-0", "orders-r1", "sts-uid"),
            mk_pod("orders-1", "orders-r1", "sts-uid"),
            failing(
                mk_pod("orders-2", "orders-r2", "sts-uid"),
                "ImagePullBackOff",
            ),
        ];
        let stuck = stuck(&sts, &pods);
        assert_eq!(
            stuck,
            [Stuck {
                pod: "orders-2".into(),
                uid: "orders-2-uid".into(),
                resource_version: "7".into(),
                revision: "orders-r2".into(),
                update_revision: "orders-r3".into(),
                failure: StartFailure {
                    reason: "ImagePullBackOff".into(),
                    message: "container orders: Back-off pulling image \"orders:2-pullfail\""
                        .into(),
                },
            }]
        );
    }

    #[test]
    fn every_failing_reason_counts_and_a_slow_start_does_not() {
        let sts = mk_sts(3, 3, "orders-r3");
        for reason in FAILING_REASONS {
            let pods = [failing(mk_pod("orders-0", "orders-r2", "sts-uid"), reason)];
            assert_eq!(names(&stuck(&sts, &pods)), ["orders-0"], "{reason}");
        }
        for reason in ["ContainerCreating", "PodInitializing"] {
            let pods = [failing(mk_pod("orders-0", "orders-r2", "sts-uid"), reason)];
            assert!(stuck(&sts, &pods).is_empty(), "{reason}");
        }
        let mut unschedulable = failing(mk_pod("orders-0", "orders-r2", "sts-uid"), "x");
        let status = unschedulable.status.as_mut().unwrap();
        status.container_statuses = None;
        status.conditions.as_mut().unwrap().push(PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/1 nodes are available".into()),
            ..Default::default()
        });
        let stuck = stuck(&sts, &[unschedulable]);
        assert_eq!(stuck[0].failure.reason, "Unschedulable");
    }

    /// Nothing to roll forward to: the pod fails at the update revision.
    #[test]
    fn a_failing_pod_of_the_update_revision_is_not_stuck() {
        let sts = mk_sts(2, 2, "orders-r2");
        let pods = [failing(
            mk_pod("orders-2", "orders-r2", "sts-uid"),
            "ImagePullBackOff",
        )];
        assert!(stuck(&sts, &pods).is_empty());
    }

    /// Until the controller has seen the template just written, its update
    /// revision is the previous one: nothing is judged.
    #[test]
    fn nothing_is_stuck_before_the_controller_saw_the_generation() {
        let pods = [failing(
            mk_pod("orders-2", "orders-r1", "sts-uid"),
            "ImagePullBackOff",
        )];
        assert!(stuck(&mk_sts(3, 2, "orders-r2"), &pods).is_empty());
        assert_eq!(
            names(&stuck(&mk_sts(3, 3, "orders-r2"), &pods)),
            ["orders-2"]
        );
        let mut no_status = mk_sts(3, 3, "orders-r2");
        no_status.status = None;
        assert!(stuck(&no_status, &pods).is_empty());
        let mut no_revision = mk_sts(3, 3, "");
        assert!(stuck(&no_revision, &pods).is_empty());
        no_revision.metadata.uid = None;
        assert!(stuck(&no_revision, &pods).is_empty());
    }

    #[test]
    fn only_pods_this_statefulset_controls_not_deleted_not_ready() {
        let sts = mk_sts(3, 3, "orders-r3");
        let other = failing(
            mk_pod("orders-0", "orders-r2", "other-uid"),
            "CrashLoopBackOff",
        );
        let mut not_controller = failing(
            mk_pod("orders-1", "orders-r2", "sts-uid"),
            "CrashLoopBackOff",
        );
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let mut deleting = failing(
            mk_pod("orders-2", "orders-r2", "sts-uid"),
            "CrashLoopBackOff",
        );
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut ready = failing(
            mk_pod("orders-3", "orders-r2", "sts-uid"),
            "CrashLoopBackOff",
        );
        ready.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let mut unlabelled = failing(
            mk_pod("orders-4", "orders-r2", "sts-uid"),
            "CrashLoopBackOff",
        );
        unlabelled.metadata.labels = None;
        let healthy_old = mk_pod("orders-5", "orders-r1", "sts-uid");
        let pods = [
            other,
            not_controller,
            deleting,
            ready,
            unlabelled,
            healthy_old,
        ];
        assert!(stuck(&sts, &pods).is_empty());
    }

    /// A pod anyone may create in the namespace, with an ownerReference to
    /// the StatefulSet's uid and its labels, is stuck only under a name the
    /// controller gives: `orders-<ordinal>` within the replicas.
    #[test]
    fn a_pod_named_as_no_statefulset_pod_is_not_stuck() {
        let mut sts = mk_sts(3, 3, "orders-r3");
        sts.spec.as_mut().unwrap().replicas = Some(3);
        let forged = |name: &str| failing(mk_pod(name, "orders-r2", "sts-uid"), "ErrImagePull");
        let pods = [
            "evil",
            "evil-1",
            "orders",
            "orders-",
            "orders-x",
            "orders-01",
            "orders-+1",
            "orders--1",
            "orders-3",
            "orders-2-1",
            "ordersx-1",
            "orders-2",
        ]
        .map(forged);
        assert_eq!(names(&stuck(&sts, &pods)), ["orders-2"]);

        // With a start ordinal the names shift with it.
        sts.spec.as_mut().unwrap().ordinals =
            Some(k8s_openapi::api::apps::v1::StatefulSetOrdinals { start: Some(5) });
        let pods = ["orders-2", "orders-5", "orders-7", "orders-8"].map(forged);
        assert_eq!(names(&stuck(&sts, &pods)), ["orders-5", "orders-7"]);
    }

    /// Below the partition the controller re-creates the current revision:
    /// deleting would only restart the same failure.
    #[test]
    fn the_partition_and_on_delete_decide_what_comes_back() {
        let pods = [
            failing(mk_pod("orders-0", "orders-r1", "sts-uid"), "ErrImagePull"),
            failing(mk_pod("orders-2", "orders-r1", "sts-uid"), "ErrImagePull"),
        ];
        let mut partitioned = mk_sts(3, 3, "orders-r2");
        let strategy = partitioned.spec.as_mut().unwrap().update_strategy.as_mut();
        strategy.unwrap().rolling_update.as_mut().unwrap().partition = Some(2);
        assert_eq!(names(&stuck(&partitioned, &pods)), ["orders-2"]);

        let mut indexed = pods[0].clone();
        indexed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_INDEX_LABEL.into(), "2".into());
        assert_eq!(names(&stuck(&partitioned, &[indexed])), ["orders-0"]);

        let mut on_delete = mk_sts(3, 3, "orders-r2");
        on_delete.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("OnDelete".into()),
            rolling_update: None,
        });
        assert_eq!(names(&stuck(&on_delete, &pods)), ["orders-0", "orders-2"]);
    }

    #[test]
    fn start_failures_name_the_container_and_skip_the_rest() {
        let pod = failing(mk_pod("orders-0", "r", "u"), "CrashLoopBackOff");
        assert_eq!(
            start_failures(&pod),
            [StartFailure {
                reason: "CrashLoopBackOff".into(),
                message: "container orders: Back-off pulling image \"orders:2-pullfail\"".into(),
            }]
        );
        assert!(start_failures(&mk_pod("orders-0", "r", "u")).is_empty());
        assert!(start_failures(&Pod::default()).is_empty());
    }
}
