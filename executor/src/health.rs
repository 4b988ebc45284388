//! Is the installation's StatefulSet where the plan wanted it?
//!
//! [`assess`] is pure: from one StatefulSet and its pods it says settled
//! (ready, stopped, absent), failed (a pod in ImagePullBackOff, ErrImagePull,
//! CrashLoopBackOff, CreateContainerConfigError, or unschedulable — named
//! with its reason), or still waiting. [`wait`] feeds it from two watches,
//! each mirrored by a kube reflector store (the StatefulSet by name, its pods
//! by the StatefulSet's selector), until it settles, fails, or the deadline
//! passes: no polling, and a failing pod ends the wait at once instead of at
//! the timeout. Pods are judged once the controller has observed the
//! StatefulSet's latest generation: before that they may be the previous
//! template's, which the plan just replaced.
//!
//! For a deploy ([`Target::roll_forward`]), before judging, the wait replaces
//! the pods of a previous revision that fail to start (`crate::rollout`):
//! the StatefulSet controller never does, and the rollout would stay stuck
//! behind them. Each replacement is in the returned health
//! (`Health.replaced`).

use std::{fmt, time::Duration};

use futures::{FutureExt as _, StreamExt as _, stream::BoxStream};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use k8sworker_core::{labels, rollout as stuck_pods};
use k8sworker_proto::v1::{Health, HealthState, PodProblem};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use crate::rollout::RollForward;

/// Container waiting reasons that will not resolve by waiting.
pub use k8sworker_core::rollout::FAILING_REASONS;

/// What the wait is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Installation name; selects the pods when the StatefulSet has no
    /// selector labels.
    pub installation: String,
    /// Name of the StatefulSet to watch.
    pub statefulset: String,
    /// Replicas the plan wants ready (0: stopped, no pods left).
    pub desired_replicas: i32,
    /// The plan deletes the StatefulSet: wait for it to be gone.
    pub expect_absent: bool,
    /// A deploy's StatefulSet uid: replace the pods of that StatefulSet
    /// that fail to start at a previous revision
    /// (`k8sworker_core::rollout::stuck`). `None`: replace nothing.
    pub roll_forward: Option<String>,
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
    /// The health in every case.
    pub fn health(&self) -> &Health {
        match self {
            Assessment::Settled(health)
            | Assessment::Failed(health, _)
            | Assessment::Waiting(health, _) => health,
        }
    }

    fn health_mut(&mut self) -> &mut Health {
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
        replaced: Vec::new(),
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

    let current =
        status.observed_generation.unwrap_or(0) >= statefulset.metadata.generation.unwrap_or(0);
    let update_revision = status.update_revision.as_deref();
    let problems: Vec<PodProblem> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .flat_map(|pod| pod_problems(pod, update_revision))
        .collect();
    if current && !problems.is_empty() {
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
        pod.labels().get(stuck_pods::REVISION_LABEL),
    ) {
        (Some(update), Some(revision)) => update != revision,
        _ => false,
    };
    let advice = if old_revision {
        "; the pod runs a previous revision and the StatefulSet will not replace a failing pod: \
         a deploy replaces it so that the rollout continues"
    } else {
        ""
    };
    stuck_pods::start_failures(pod)
        .into_iter()
        .map(|failure| PodProblem {
            pod: name.clone(),
            reason: failure.reason,
            message: format!("{}{advice}", failure.message),
        })
        .collect()
}

/// One watch feeding a kube reflector [`Store`]: the store holds the objects
/// the watch has seen, and swaps in a re-list's objects only once the re-list
/// is complete.
struct Reflected<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    events: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
}

impl<K> Reflected<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// Starts watching `api` with `config` (retrying with kube's default
    /// backoff) into a fresh store.
    fn watch(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let events = reflector(writer, watcher(api, config).default_backoff()).boxed();
        Reflected { store, events }
    }
}

/// Whether `store` has seen its watch's first complete list.
fn is_ready<K: kube::Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> bool {
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|ready| ready.is_ok())
}

/// The store's objects, in name order.
fn by_name<K: kube::Resource<DynamicType = ()> + Clone + 'static>(store: &Store<K>) -> Vec<K> {
    let mut objects: Vec<K> = store
        .state()
        .iter()
        .map(|object| K::clone(object))
        .collect();
    objects.sort_by_key(|object| object.name_any());
    objects
}

/// The label selector of the StatefulSet's pods.
pub(crate) fn pod_selector(statefulset: &StatefulSet, installation: &str) -> String {
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
    let one_statefulset =
        watcher::Config::default().fields(&format!("metadata.name={}", target.statefulset));
    let mut statefulset_watch = Reflected::watch(statefulsets, one_statefulset);
    let statefulset_key = ObjectRef::<StatefulSet>::new(&target.statefulset).within(namespace);
    let mut pod_watch: Option<Reflected<Pod>> = None;
    let mut selector: Option<String> = None;
    let mut last = Assessment::Waiting(
        mk_health(HealthState::Progressing, target, 0, Vec::new()),
        "no state seen yet".to_string(),
    );
    let mut watch_error: Option<String> = None;
    let mut roll_forward = target.roll_forward.clone().map(RollForward::new);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);

    loop {
        tokio::select! {
            () = &mut deadline => break,
            Some(event) = statefulset_watch.events.next() => if let Err(error) = event {
                tracing::warn!(%error, "StatefulSet watch failed, retrying");
                watch_error = Some(error.to_string());
            },
            Some(event) = async { pod_watch.as_mut()?.events.next().await }, if pod_watch.is_some() => if let Err(error) = event {
                tracing::warn!(%error, "pod watch failed, retrying");
                watch_error = Some(error.to_string());
            },
        }
        if !is_ready(&statefulset_watch.store) {
            continue;
        }
        let statefulset = statefulset_watch.store.get(&statefulset_key);
        let mut current_pods = Vec::new();
        if let Some(statefulset) = &statefulset {
            let wanted = pod_selector(statefulset, &target.installation);
            if selector.as_ref() != Some(&wanted) {
                let config = watcher::Config::default().labels(&wanted);
                pod_watch = Some(Reflected::watch(pods.clone(), config));
                selector = Some(wanted);
            }
            match &pod_watch {
                Some(watch) if is_ready(&watch.store) => current_pods = by_name(&watch.store),
                _ => continue,
            }
        }
        if let (Some(roll_forward), Some(statefulset)) = (&mut roll_forward, &statefulset) {
            current_pods = roll_forward.step(&pods, statefulset, current_pods).await;
        }
        last = assess(target, statefulset.as_deref(), &current_pods);
        if !matches!(last, Assessment::Waiting(..)) {
            break;
        }
    }
    if let (Assessment::Waiting(_, detail), Some(error)) = (&mut last, watch_error) {
        detail.push_str(&format!("; last watch error: {error}"));
    }
    if let Some(roll_forward) = &roll_forward {
        last.health_mut().replaced = roll_forward.replaced().to_vec();
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
            roll_forward: None,
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
            summary.contains("previous revision") && summary.contains("a deploy replaces it"),
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

    #[tokio::test]
    async fn the_store_replaces_its_contents_on_relist() {
        let events = [
            watcher::Event::Init,
            watcher::Event::InitApply(mk_pod("a", "r")),
            watcher::Event::InitDone,
            watcher::Event::Apply(mk_pod("b", "r")),
            watcher::Event::Delete(mk_pod("a", "r")),
            watcher::Event::Init,
            watcher::Event::InitApply(mk_pod("c", "r")),
            watcher::Event::InitDone,
        ];
        let (store, writer) = reflector::store::<Pod>();
        let mut events = reflector(writer, futures::stream::iter(events.map(Ok))).boxed();
        let mut step = async || events.next().await.unwrap().unwrap();
        let names = |store: &Store<Pod>| {
            by_name(store)
                .iter()
                .map(|pod| pod.name_any())
                .collect::<Vec<_>>()
        };

        step().await;
        step().await;
        assert!(!is_ready(&store));
        step().await;
        assert!(is_ready(&store));
        step().await;
        step().await;
        assert_eq!(names(&store), ["b"]);
        step().await;
        step().await;
        assert_eq!(
            names(&store),
            ["b"],
            "old contents stay until the relist is done"
        );
        assert!(is_ready(&store), "a relist does not make the store unready");
        step().await;
        assert_eq!(names(&store), ["c"]);
    }

    #[tokio::test]
    async fn the_store_lists_pods_in_name_order() {
        let events = ["web-2", "web-0", "web-1"]
            .map(|name| Ok(watcher::Event::InitApply(mk_pod(name, "r"))));
        let (store, writer) = reflector::store::<Pod>();
        reflector(
            writer,
            futures::stream::iter(events)
                .chain(futures::stream::iter([Ok(watcher::Event::InitDone)])),
        )
        .for_each(|_| async {})
        .await;
        let names: Vec<String> = by_name(&store).iter().map(|pod| pod.name_any()).collect();
        assert_eq!(names, ["web-0", "web-1", "web-2"]);
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
