//! Is the installation's StatefulSet where the plan wanted it?
//!
//! [`assess`] is pure: from one StatefulSet and its pods it says settled
//! (ready, stopped, absent), failed (a pod in ImagePullBackOff, ErrImagePull,
//! CrashLoopBackOff, CreateContainerConfigError, or unschedulable — named
//! with its reason), or still waiting. [`wait`] feeds it from two watches
//! (the StatefulSet by name, its pods by the StatefulSet's selector) until it
//! settles, fails, or the deadline passes: no polling, and a failing pod ends
//! the wait at once instead of at the timeout.

use std::{collections::BTreeMap, time::Duration};

use futures::{StreamExt as _, stream::BoxStream};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use k8sworker_core::labels;
use k8sworker_proto::v1::{Health, HealthState, PodProblem};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{WatchStreamExt as _, watcher},
};

/// Container waiting reasons that will not resolve by waiting.
pub const FAILING_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What the wait is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub installation: String,
    pub statefulset: String,
    pub desired_replicas: i32,
    /// The plan deletes the StatefulSet: wait for it to be gone.
    pub expect_absent: bool,
}

/// The state of the StatefulSet at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum Assessment {
    /// Where the plan wanted it: ready, stopped, or absent.
    Settled(Health),
    /// Pods fail in a way waiting will not fix.
    Failed(Health, String),
    /// Not there yet; the text says how far.
    Waiting(Health, String),
}

impl Assessment {
    pub fn health(&self) -> &Health {
        match self {
            Assessment::Settled(health)
            | Assessment::Failed(health, _)
            | Assessment::Waiting(health, _) => health,
        }
    }
}

fn mk_health(state: HealthState, target: &Target, ready: i32, problems: Vec<PodProblem>) -> Health {
    Health {
        state: state as i32,
        desired_replicas: target.desired_replicas,
        ready_replicas: ready,
        problems,
    }
}

/// Assesses the StatefulSet (when it exists) and its pods.
pub fn assess(target: &Target, statefulset: Option<&StatefulSet>, pods: &[Pod]) -> Assessment {
    let Some(statefulset) = statefulset else {
        let health = mk_health(HealthState::Absent, target, 0, Vec::new());
        return if target.expect_absent {
            Assessment::Settled(health)
        } else {
            Assessment::Waiting(
                health,
                format!("StatefulSet {} does not exist", target.statefulset),
            )
        };
    };
    let status = statefulset.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    if target.expect_absent {
        return Assessment::Waiting(
            mk_health(HealthState::Progressing, target, ready, Vec::new()),
            format!(
                "StatefulSet {} is being deleted, {} pods left",
                target.statefulset,
                pods.len()
            ),
        );
    }

    let update_revision = status.update_revision.as_deref();
    let problems: Vec<PodProblem> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .flat_map(|pod| pod_problems(pod, update_revision))
        .collect();
    if !problems.is_empty() {
        let summary = problems
            .iter()
            .map(|p| format!("pod {}: {} ({})", p.pod, p.reason, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        return Assessment::Failed(
            mk_health(HealthState::Degraded, target, ready, problems),
            summary,
        );
    }

    let desired = target.desired_replicas;
    let current =
        status.observed_generation.unwrap_or(0) >= statefulset.metadata.generation.unwrap_or(0);
    let spec_replicas = statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let replicas = status.replicas;
    let updated = status.updated_replicas.unwrap_or(0);
    let settled = current
        && spec_replicas == desired
        && replicas == desired
        && if desired == 0 {
            pods.is_empty()
        } else {
            ready == desired && updated == desired
        };
    let state = if desired == 0 {
        HealthState::Stopped
    } else {
        HealthState::Ready
    };
    if settled {
        Assessment::Settled(mk_health(state, target, ready, Vec::new()))
    } else {
        Assessment::Waiting(
            mk_health(HealthState::Progressing, target, ready, Vec::new()),
            format!(
                "StatefulSet {}: {ready}/{desired} ready, {updated}/{desired} updated, \
                 {replicas} replicas, {} pods{}{}",
                target.statefulset,
                pods.len(),
                if spec_replicas == desired {
                    String::new()
                } else {
                    format!(", spec.replicas is {spec_replicas}")
                },
                if current {
                    ""
                } else {
                    ", controller has not seen the latest generation"
                }
            ),
        )
    }
}

/// Why one pod will not become ready, if waiting will not fix it.
fn pod_problems(pod: &Pod, update_revision: Option<&str>) -> Vec<PodProblem> {
    let name = pod.name_any();
    let old_revision = match (
        update_revision,
        pod.labels().get("controller-revision-hash"),
    ) {
        (Some(update), Some(revision)) => update != revision,
        _ => false,
    };
    let advice = if old_revision {
        "; the pod runs the previous revision and the StatefulSet will not replace a failing pod: \
         delete it to let the rollout continue"
    } else {
        ""
    };
    let mut problems = Vec::new();
    let status = pod.status.clone().unwrap_or_default();
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            problems.push(PodProblem {
                pod: name.clone(),
                reason: "Unschedulable".into(),
                message: format!("{}{advice}", condition.message.clone().unwrap_or_default()),
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
        let Some(reason) = waiting.reason.as_deref() else {
            continue;
        };
        if FAILING_REASONS.contains(&reason) {
            problems.push(PodProblem {
                pod: name.clone(),
                reason: reason.to_string(),
                message: format!(
                    "container {}: {}{advice}",
                    container.name,
                    waiting.message.clone().unwrap_or_default()
                ),
            });
        }
    }
    problems
}

/// The objects one watch has seen, replaced atomically on each re-list.
#[derive(Debug)]
struct Mirror<K> {
    objects: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
    ready: bool,
}

impl<K: kube::Resource> Mirror<K> {
    fn new() -> Self {
        Mirror {
            objects: BTreeMap::new(),
            relisting: None,
            ready: false,
        }
    }

    fn apply(&mut self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Init => self.relisting = Some(BTreeMap::new()),
            watcher::Event::InitApply(object) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(object.name_any(), object);
            }
            watcher::Event::InitDone => {
                self.objects = self.relisting.take().unwrap_or_default();
                self.ready = true;
            }
            watcher::Event::Apply(object) => {
                self.objects.insert(object.name_any(), object);
            }
            watcher::Event::Delete(object) => {
                self.objects.remove(&object.name_any());
            }
        }
    }
}

/// The label selector of the StatefulSet's pods.
fn pod_selector(statefulset: &StatefulSet, installation: &str) -> String {
    let match_labels = statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.clone())
        .unwrap_or_default();
    if match_labels.is_empty() {
        format!("{}={installation}", labels::INSTALLATION)
    } else {
        match_labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Watches until the StatefulSet settles or fails, or `timeout` passes; then
/// the last assessment is returned as it was (`Waiting` means timed out).
pub async fn wait(
    client: Client,
    namespace: &str,
    target: &Target,
    timeout: Duration,
) -> Assessment {
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let by_name =
        watcher::Config::default().fields(&format!("metadata.name={}", target.statefulset));
    let mut statefulset_events = watcher(statefulsets, by_name).default_backoff().boxed();
    let mut pod_events: Option<BoxStream<'_, watcher::Result<watcher::Event<Pod>>>> = None;
    let mut statefulset_mirror = Mirror::new();
    let mut pod_mirror = Mirror::<Pod>::new();
    let mut selector: Option<String> = None;
    let mut last = Assessment::Waiting(
        mk_health(HealthState::Progressing, target, 0, Vec::new()),
        "no state seen yet".to_string(),
    );
    let mut watch_error: Option<String> = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);

    loop {
        tokio::select! {
            () = &mut deadline => break,
            Some(event) = statefulset_events.next() => match event {
                Ok(event) => statefulset_mirror.apply(event),
                Err(error) => {
                    tracing::warn!(%error, "StatefulSet watch failed, retrying");
                    watch_error = Some(error.to_string());
                }
            },
            Some(event) = async { pod_events.as_mut()?.next().await }, if pod_events.is_some() => match event {
                Ok(event) => pod_mirror.apply(event),
                Err(error) => {
                    tracing::warn!(%error, "pod watch failed, retrying");
                    watch_error = Some(error.to_string());
                }
            },
        }
        if !statefulset_mirror.ready {
            continue;
        }
        let statefulset = statefulset_mirror.objects.get(&target.statefulset);
        if let Some(statefulset) = statefulset {
            let wanted = pod_selector(statefulset, &target.installation);
            if selector.as_ref() != Some(&wanted) {
                let pods = pods.clone();
                let config = watcher::Config::default().labels(&wanted);
                pod_events = Some(watcher(pods, config).default_backoff().boxed());
                pod_mirror = Mirror::new();
                selector = Some(wanted);
            }
            if !pod_mirror.ready {
                continue;
            }
        }
        let pods: Vec<Pod> = if statefulset.is_some() {
            pod_mirror.objects.values().cloned().collect()
        } else {
            Vec::new()
        };
        last = assess(target, statefulset, &pods);
        if !matches!(last, Assessment::Waiting(..)) {
            return last;
        }
    }
    if let (Assessment::Waiting(_, detail), Some(error)) = (&mut last, watch_error) {
        detail.push_str(&format!("; last watch error: {error}"));
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::{
            apps::v1::{StatefulSetSpec, StatefulSetStatus},
            core::v1::{
                ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
            },
        },
        apimachinery::pkg::apis::meta::v1::{LabelSelector, Time},
    };
    use kube::api::ObjectMeta;

    fn mk_target(desired: i32) -> Target {
        Target {
            installation: "inst".into(),
            statefulset: "inst".into(),
            desired_replicas: desired,
            expect_absent: false,
        }
    }

    fn mk_sts(spec_replicas: i32, status: StatefulSetStatus) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("inst".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(spec_replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "inst".to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn mk_status(replicas: i32, ready: i32, updated: i32) -> StatefulSetStatus {
        StatefulSetStatus {
            observed_generation: Some(2),
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            update_revision: Some("rev-2".into()),
            ..Default::default()
        }
    }

    fn mk_pod(name: &str, revision: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    [("controller-revision-hash".to_string(), revision.to_string())].into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn mk_waiting_pod(name: &str, revision: &str, reason: &str) -> Pod {
        let mut pod = mk_pod(name, revision);
        pod.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.into()),
                        message: Some("Back-off pulling image \"nope:1\"".into()),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    }

    fn state(assessment: &Assessment) -> HealthState {
        HealthState::try_from(assessment.health().state).unwrap()
    }

    #[test]
    fn ready_when_every_replica_is_ready_and_updated() {
        let sts = mk_sts(2, mk_status(2, 2, 2));
        let pods = [mk_pod("inst-0", "rev-2"), mk_pod("inst-1", "rev-2")];
        let assessment = assess(&mk_target(2), Some(&sts), &pods);
        assert!(
            matches!(assessment, Assessment::Settled(_)),
            "{assessment:?}"
        );
        assert_eq!(state(&assessment), HealthState::Ready);
        assert_eq!(assessment.health().ready_replicas, 2);
    }

    #[test]
    fn waiting_while_rolling_or_before_the_controller_caught_up() {
        let rolling = mk_sts(2, mk_status(2, 2, 1));
        assert!(matches!(
            assess(&mk_target(2), Some(&rolling), &[]),
            Assessment::Waiting(..)
        ));

        let mut behind = mk_sts(2, mk_status(2, 2, 2));
        behind.metadata.generation = Some(3);
        let Assessment::Waiting(_, detail) = assess(&mk_target(2), Some(&behind), &[]) else {
            panic!("a StatefulSet the controller has not seen is not ready");
        };
        assert!(detail.contains("latest generation"), "{detail}");
    }

    #[test]
    fn stopped_only_when_the_last_pod_is_gone() {
        let sts = mk_sts(0, mk_status(0, 0, 0));
        let mut terminating = mk_pod("inst-0", "rev-2");
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(matches!(
            assess(&mk_target(0), Some(&sts), &[terminating]),
            Assessment::Waiting(..)
        ));
        let stopped = assess(&mk_target(0), Some(&sts), &[]);
        assert_eq!(state(&stopped), HealthState::Stopped);
        assert!(matches!(stopped, Assessment::Settled(_)));
    }

    #[test]
    fn image_pull_backoff_fails_fast_naming_the_pod() {
        let sts = mk_sts(2, mk_status(2, 1, 2));
        let pods = [
            mk_pod("inst-0", "rev-2"),
            mk_waiting_pod("inst-1", "rev-2", "ImagePullBackOff"),
        ];
        let Assessment::Failed(health, summary) = assess(&mk_target(2), Some(&sts), &pods) else {
            panic!("ImagePullBackOff must fail the wait");
        };
        assert_eq!(health.problems.len(), 1);
        assert_eq!(health.problems[0].pod, "inst-1");
        assert_eq!(health.problems[0].reason, "ImagePullBackOff");
        assert!(
            summary.contains("pod inst-1: ImagePullBackOff"),
            "{summary}"
        );
        assert!(!summary.contains("previous revision"), "{summary}");
    }

    #[test]
    fn every_failing_reason_fails_and_transient_ones_do_not() {
        let sts = mk_sts(1, mk_status(1, 0, 1));
        for reason in FAILING_REASONS {
            let pods = [mk_waiting_pod("inst-0", "rev-2", reason)];
            assert!(
                matches!(
                    assess(&mk_target(1), Some(&sts), &pods),
                    Assessment::Failed(..)
                ),
                "{reason}"
            );
        }
        let pods = [mk_waiting_pod("inst-0", "rev-2", "ContainerCreating")];
        assert!(matches!(
            assess(&mk_target(1), Some(&sts), &pods),
            Assessment::Waiting(..)
        ));
    }

    #[test]
    fn a_failing_pod_of_the_previous_revision_comes_with_advice() {
        let sts = mk_sts(1, mk_status(1, 0, 0));
        let pods = [mk_waiting_pod("inst-0", "rev-1", "CrashLoopBackOff")];
        let Assessment::Failed(_, summary) = assess(&mk_target(1), Some(&sts), &pods) else {
            panic!("must fail");
        };
        assert!(
            summary.contains("previous revision") && summary.contains("delete it"),
            "{summary}"
        );
    }

    #[test]
    fn unschedulable_fails_fast() {
        let sts = mk_sts(1, mk_status(1, 0, 1));
        let mut pod = mk_pod("inst-0", "rev-2");
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/1 nodes are available: 1 Insufficient memory.".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let Assessment::Failed(health, _) = assess(&mk_target(1), Some(&sts), &[pod]) else {
            panic!("must fail");
        };
        assert_eq!(health.problems[0].reason, "Unschedulable");
        assert!(health.problems[0].message.contains("Insufficient memory"));
    }

    #[test]
    fn absence_settles_only_a_delete() {
        let mut target = mk_target(0);
        assert!(matches!(
            assess(&target, None, &[]),
            Assessment::Waiting(..)
        ));
        target.expect_absent = true;
        let gone = assess(&target, None, &[]);
        assert_eq!(state(&gone), HealthState::Absent);
        assert!(matches!(gone, Assessment::Settled(_)));
        let sts = mk_sts(0, mk_status(1, 1, 1));
        assert!(matches!(
            assess(&target, Some(&sts), &[]),
            Assessment::Waiting(..)
        ));
    }

    #[test]
    fn mirror_replaces_its_contents_on_relist() {
        let mut mirror = Mirror::<Pod>::new();
        mirror.apply(watcher::Event::Init);
        mirror.apply(watcher::Event::InitApply(mk_pod("a", "r")));
        assert!(!mirror.ready);
        mirror.apply(watcher::Event::InitDone);
        assert!(mirror.ready);
        mirror.apply(watcher::Event::Apply(mk_pod("b", "r")));
        mirror.apply(watcher::Event::Delete(mk_pod("a", "r")));
        assert_eq!(mirror.objects.keys().collect::<Vec<_>>(), ["b"]);
        mirror.apply(watcher::Event::Init);
        mirror.apply(watcher::Event::InitApply(mk_pod("c", "r")));
        assert_eq!(
            mirror.objects.len(),
            1,
            "old contents stay until the relist is done"
        );
        mirror.apply(watcher::Event::InitDone);
        assert_eq!(mirror.objects.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn pods_are_selected_by_the_statefulset_selector() {
        let sts = mk_sts(1, mk_status(1, 1, 1));
        assert_eq!(pod_selector(&sts, "inst"), "app=inst");
        let mut bare = sts.clone();
        bare.spec.as_mut().unwrap().selector = LabelSelector::default();
        assert_eq!(
            pod_selector(&bare, "inst"),
            "k8sworker.io/installation=inst"
        );
    }
}
