//! A stuck rollout needs no kubectl: a deploy replaces the pods of a
//! previous revision that fail to start, which the StatefulSet controller
//! never does (kubernetes/kubernetes#67250), and nothing else.
//!
//! The test cluster's kwok makes `*-pullfail` images ImagePullBackOff and
//! `*-crashloop` images CrashLoopBackOff (tests/cluster/README.md).

use std::collections::BTreeMap;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Event, rbac::v1::Role};
use k8sworker_core::plan::Operation;
use k8sworker_executor::calls::ApiCall;
use k8sworker_proto::v1::{ErrorCode, Health, HealthState, PodReplacement};
use k8sworker_testsupport::{
    cluster::{CRASH_LOOP, PULL_FAIL, require_failing_images},
    plans, with_temp_ns,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::support::{Calls, Fixture, health_state};

const IMAGE: &str = "registry.example.com/k8sworker/orders";

/// `orders` with `replicas` and the image tag `tag`.
fn orders(namespace: &str, replicas: i64, tag: &str) -> Value {
    let mut request = plans::deploy_request("orders", namespace, replicas, &[]);
    request["config"][0]["name"] = json!(format!("{IMAGE}:{tag}"));
    request
}

fn pod_deletes(calls: &Calls) -> u64 {
    calls
        .0
        .get(&ApiCall {
            verb: "delete",
            resource: "pods".into(),
        })
        .copied()
        .unwrap_or(0)
}

/// The installation's pods: name → (uid, revision, ready).
async fn pods(f: &Fixture) -> BTreeMap<String, (String, String, bool)> {
    f.pods("orders")
        .await
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| {
            let ready = pod
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let revision = pod
                .labels()
                .get("controller-revision-hash")
                .cloned()
                .unwrap_or_default();
            (
                pod.name_any(),
                (pod.uid().unwrap_or_default(), revision, ready),
            )
        })
        .collect()
}

/// The pods the Ack says were replaced: (pod, reason, uid).
fn replaced(health: &Health) -> Vec<(&str, &str, &str)> {
    health
        .replaced
        .iter()
        .map(|r| (r.pod.as_str(), r.reason.as_str(), r.uid.as_str()))
        .collect()
}

async fn update_revision(f: &Fixture) -> String {
    f.statefulset("orders")
        .await
        .and_then(|sts| sts.status)
        .and_then(|status| status.update_revision)
        .expect("an update revision")
}

/// Deploys `request` and expects the health wait to fail on `pod` with
/// `reason`; returns the Ack's health and the API calls.
async fn deploy_failing(
    f: &mut Fixture,
    request: &Value,
    operation: Operation,
    pod: &str,
    reason: &str,
) -> (Health, Calls) {
    let before = f.calls();
    let (_, applied) = f.plan_and_apply(request, operation, true).await;
    let applied = applied.expect("applied");
    let calls = Calls::between(&before, &f.calls());
    let error = applied.ack.error.clone().expect("unhealthy");
    assert_eq!(error.code, ErrorCode::Unhealthy as i32, "{error:?}");
    assert!(
        error.message.contains(&format!("pod {pod}: {reason}")),
        "{}",
        error.message
    );
    assert_eq!(health_state(&applied), HealthState::Degraded);
    (applied.ack.health.clone().expect("health"), calls)
}

/// Deploys `orders` with `replicas` and a good image, then an image that
/// cannot be pulled: the highest ordinal is rolled to it and the wait fails
/// on that pod. Returns the bad request.
async fn stuck_rollout(f: &mut Fixture, namespace: &str, replicas: i64) -> Value {
    f.run(&orders(namespace, replicas, "1"), Operation::Deploy)
        .await;
    let bad = orders(namespace, replicas, &format!("2{PULL_FAIL}"));
    let last = format!("orders-{}", replicas - 1);
    deploy_failing(f, &bad, Operation::Deploy, &last, "ImagePullBackOff").await;
    bad
}

/// The case: 3 replicas, then an image that cannot be pulled
/// (`orders-2` goes to ImagePullBackOff and the rollout stops), then a good
/// tag. The good deploy replaces `orders-2` (and only it) and reaches 3
/// ready replicas of the new revision; before that, neither the failing
/// deploy nor its repetition deletes a pod: the failing pod is of the update
/// revision (nothing to roll forward to), the other two are healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_deploy_replaces_the_failing_pod_of_a_previous_revision() {
    with_temp_ns("exec-rollout", |admin, ns| async move {
        require_failing_images(&admin).await;
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        f.run(&orders(&ns, 3, "1"), Operation::Deploy).await;
        let first = pods(&f).await;
        assert_eq!(first.len(), 3);

        let bad = orders(&ns, 3, &format!("2{PULL_FAIL}"));
        let (health, calls) = deploy_failing(
            &mut f,
            &bad,
            Operation::Deploy,
            "orders-2",
            "ImagePullBackOff",
        )
        .await;
        assert_eq!(pod_deletes(&calls), 0, "{calls:?}");
        assert!(health.replaced.is_empty(), "{health:?}");
        let stuck = pods(&f).await;
        let r2 = update_revision(&f).await;
        assert_eq!(
            stuck["orders-2"].1, r2,
            "orders-2 was rolled to the bad revision"
        );
        for healthy in ["orders-0", "orders-1"] {
            assert_eq!(stuck[healthy], first[healthy], "{healthy} is untouched");
        }

        // The same bad request again: its pod fails at the update revision,
        // which a replacement would only repeat.
        let (health, calls) = deploy_failing(
            &mut f,
            &bad,
            Operation::Deploy,
            "orders-2",
            "ImagePullBackOff",
        )
        .await;
        assert_eq!(pod_deletes(&calls), 0, "{calls:?}");
        assert!(health.replaced.is_empty(), "{health:?}");
        assert_eq!(pods(&f).await, stuck, "no pod was replaced");

        // The fix.
        let (applied, calls) = f.run(&orders(&ns, 3, "3"), Operation::Deploy).await;
        calls.report("the deploy of the fix");
        assert_eq!(health_state(&applied), HealthState::Ready);
        let health = applied.ack.health.clone().unwrap();
        assert_eq!(health.ready_replicas, 3);
        let r3 = update_revision(&f).await;
        assert_ne!(r3, r2);
        assert_eq!(
            health.replaced,
            [PodReplacement {
                pod: "orders-2".into(),
                uid: stuck["orders-2"].0.clone(),
                revision: r2.clone(),
                update_revision: r3.clone(),
                reason: "ImagePullBackOff".into(),
                message: format!(
                    "container orders: Back-off pulling image \"{IMAGE}:2{PULL_FAIL}\""
                ),
            }]
        );
        assert_eq!(
            pod_deletes(&calls),
            1,
            "only orders-2 was deleted: {calls:?}"
        );
        let fixed = pods(&f).await;
        assert_eq!(fixed.len(), 3);
        for (name, (uid, revision, ready)) in &fixed {
            assert_eq!(revision, &r3, "{name} runs the fix");
            assert!(ready, "{name} is ready");
            assert_ne!(uid, &stuck[name].0, "{name} was re-created");
        }
        let sts: StatefulSet = f.statefulset("orders").await.unwrap();
        let status = sts.status.unwrap();
        assert_eq!(
            (status.ready_replicas, status.updated_replicas),
            (Some(3), Some(3))
        );

        // The StatefulSet's Event says what was replaced and why.
        let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
        let messages: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("PlanApplied"))
            .filter_map(|e| e.message)
            .collect();
        let expected = format!(
            "replaced pod orders-2 (ImagePullBackOff at revision {r2} while rolling out {r3})"
        );
        assert!(
            messages.iter().any(|m| m.contains(&expected)),
            "{messages:#?}"
        );

        // Settled: the same request again writes and deletes nothing.
        let (applied, calls) = f.run(&orders(&ns, 3, "3"), Operation::Deploy).await;
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert!(applied.ack.health.unwrap().replaced.is_empty());
    })
    .await;
}

/// A crash-looping pod (the test cluster's `*-crashloop` stage) fails the
/// wait naming the pod and CrashLoopBackOff; the fixed image replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_crash_looping_pod_fails_the_wait_and_the_fix_replaces_it() {
    with_temp_ns("exec-crashloop", |admin, ns| async move {
        require_failing_images(&admin).await;
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let bad = orders(&ns, 1, &format!("1{CRASH_LOOP}"));
        let (health, calls) = deploy_failing(
            &mut f,
            &bad,
            Operation::Deploy,
            "orders-0",
            "CrashLoopBackOff",
        )
        .await;
        assert_eq!(pod_deletes(&calls), 0);
        assert!(health.replaced.is_empty());
        assert_eq!(health.problems[0].reason, "CrashLoopBackOff");
        assert!(
            health.problems[0]
                .message
                .contains("back-off 10s restarting failed container=orders pod=orders-0"),
            "{}",
            health.problems[0].message
        );
        let crashing = pods(&f).await;
        let pod = &crashing["orders-0"];
        assert!(!pod.2, "not ready");

        let (applied, calls) = f.run(&orders(&ns, 1, "2"), Operation::Deploy).await;
        let health = applied.ack.health.unwrap();
        assert_eq!(
            replaced(&health),
            [("orders-0", "CrashLoopBackOff", pod.0.as_str())]
        );
        assert_eq!(pod_deletes(&calls), 1);
        assert_eq!(health.ready_replicas, 1);
    })
    .await;
}

/// Only a deploy replaces pods: a restart (the guide's "scale back to
/// replicaCount", no template written) leaves a stuck pod of a previous
/// revision alone and says a deploy replaces it; the next deploy does, also
/// when another manager wrote the new template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_restart_replaces_nothing_and_the_next_deploy_does() {
    with_temp_ns("exec-rollout-restart", |admin, ns| async move {
        require_failing_images(&admin).await;
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let bad = stuck_rollout(&mut f, &ns, 2).await;
        let r2 = update_revision(&f).await;

        // Someone writes the fix past k8sworker: a new update revision, and
        // orders-1 is now a stuck pod of a previous revision.
        let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
        statefulsets
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "orders", "image": format!("{IMAGE}:3")}
                ]}}}})),
            )
            .await
            .expect("patched");
        let stuck = pods(&f).await;
        assert_eq!(stuck["orders-1"].1, r2);

        let (health, calls) = deploy_failing(
            &mut f,
            &bad,
            Operation::Restart,
            "orders-1",
            "ImagePullBackOff",
        )
        .await;
        assert_eq!(
            pod_deletes(&calls),
            0,
            "a restart deletes no pod: {calls:?}"
        );
        assert!(health.replaced.is_empty());
        assert!(
            health.problems[0].message.contains("a deploy replaces it"),
            "{}",
            health.problems[0].message
        );
        assert_eq!(pods(&f).await["orders-1"], stuck["orders-1"]);

        let (applied, calls) = f.run(&orders(&ns, 2, "3"), Operation::Deploy).await;
        let health = applied.ack.health.unwrap();
        assert_eq!(
            replaced(&health),
            [("orders-1", "ImagePullBackOff", stuck["orders-1"].0.as_str())]
        );
        assert_eq!(pod_deletes(&calls), 1);
        assert_eq!(health.ready_replicas, 2);
    })
    .await;
}

/// An executor whose Role lacks `delete` on pods (an older Role left in
/// place) is refused the replacement: it tries once, and the deploy fails
/// naming the stuck pod, as before this release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn without_delete_on_pods_the_stuck_pod_is_reported_once_tried() {
    with_temp_ns("exec-rollout-norbac", |admin, ns| async move {
        require_failing_images(&admin).await;
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let roles: Api<Role> = Api::namespaced(admin.clone(), &ns);
        let mut role = roles.get("k8sworker-executor").await.expect("the Role");
        for rule in role.rules.iter_mut().flatten() {
            if rule.resources.iter().flatten().any(|r| r == "pods") {
                rule.verbs.retain(|verb| verb != "delete");
            }
        }
        roles
            .replace("k8sworker-executor", &PostParams::default(), &role)
            .await
            .expect("narrowed");

        stuck_rollout(&mut f, &ns, 1).await;
        let stuck = pods(&f).await;
        let (health, calls) = deploy_failing(
            &mut f,
            &orders(&ns, 1, "3"),
            Operation::Deploy,
            "orders-0",
            "ImagePullBackOff",
        )
        .await;
        assert_eq!(pod_deletes(&calls), 1, "tried once: {calls:?}");
        assert!(health.replaced.is_empty());
        assert!(
            health.problems[0].message.contains("a deploy replaces it"),
            "{}",
            health.problems[0].message
        );
        assert_eq!(pods(&f).await, stuck, "nothing was deleted");
    })
    .await;
}

/// Bounded: a "fix" that fails too replaces the stuck pod once, and the
/// wait then fails on the new pod, which fails at the update revision and
/// is not replaced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_failing_fix_replaces_the_stuck_pod_once_and_fails() {
    with_temp_ns("exec-rollout-twice", |admin, ns| async move {
        require_failing_images(&admin).await;
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        stuck_rollout(&mut f, &ns, 1).await;
        let stuck = pods(&f).await;
        let worse = orders(&ns, 1, &format!("3{CRASH_LOOP}"));
        let (health, calls) = deploy_failing(
            &mut f,
            &worse,
            Operation::Deploy,
            "orders-0",
            "CrashLoopBackOff",
        )
        .await;
        assert_eq!(
            replaced(&health),
            [("orders-0", "ImagePullBackOff", stuck["orders-0"].0.as_str())]
        );
        assert_eq!(pod_deletes(&calls), 1, "{calls:?}");
        let now = pods(&f).await;
        assert_eq!(now["orders-0"].1, update_revision(&f).await);
        assert_ne!(now["orders-0"].0, stuck["orders-0"].0);
    })
    .await;
}
