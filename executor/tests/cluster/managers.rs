//! Issue 12, case 1: edits of other field managers. Fields k8sworker does
//! not set (`kubectl rollout restart`'s annotation, `kubectl label`) are not
//! drift: an unchanged redeploy writes nothing and verify is clean. Another
//! value in a field it sets is drift, named with the field and the manager,
//! and a deploy repairs it.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::Action;
use k8sworker_testsupport::{eventually, plans, with_temp_ns};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::support::{Fixture, actions};

/// Patches `name` as field manager `manager` (an update, as kubectl does;
/// a strategic merge patch merges lists of containers by name).
async fn patch_as<K>(api: &Api<K>, name: &str, manager: &str, patch: Patch<Value>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(manager.to_owned()),
            ..Default::default()
        },
        &patch,
    )
    .await
    .unwrap_or_else(|e| panic!("{manager} patch of {name}: {e}"));
}

/// Waits until the StatefulSet controller is done with `name`'s rollout
/// (its status writes would make a plan stale): the current generation
/// observed, every replica updated, ready and available.
async fn settled(api: &Api<StatefulSet>, name: &str, replicas: i32) {
    eventually("the rollout to settle", Duration::from_secs(60), || async {
        let sts = api.get(name).await.ok()?;
        let status = sts.status?;
        (status.observed_generation == sts.metadata.generation
            && status.update_revision.is_some()
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(replicas)
            && status.ready_replicas == Some(replicas)
            && status.available_replicas == Some(replicas))
        .then_some(())
    })
    .await;
}

/// Verify's drift messages for `request`, as the planner computes them.
async fn drift(f: &mut Fixture, request: &Value) -> Vec<String> {
    let work = plans::work(request, Operation::Verify);
    let observed = plans::observation(&mut f.planner_side, &work).await;
    work.verify(&observed.components, Vec::new())
        .drift
        .into_iter()
        .map(|d| d.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn another_managers_harmless_edit_is_not_drift_and_a_changed_field_of_ours_is() {
    with_temp_ns("exec-managers", |admin, ns| async move {
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 2, &[]);
        f.run(&request, Operation::Deploy).await;

        let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
        patch_as(
            &statefulsets,
            "app",
            "kubectl-rollout",
            Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-12-01T00:00:00Z"}}}}})),
        )
        .await;
        patch_as(
            &statefulsets,
            "app",
            "kubectl-label",
            Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await;
        patch_as(
            &config_maps,
            "vantiq-app-configmap-0",
            "kubectl-label",
            Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await;

        // The restart rolls the pods; once it is done (the controller stops
        // writing status, which would make plans stale), an unchanged
        // redeploy: every step a NOOP, nothing written, verify clean.
        settled(&statefulsets, "app", 2).await;
        let again = f.plan(&request, Operation::Deploy).await;
        assert!(
            actions(&again).iter().all(|(a, _)| *a == Action::Noop),
            "{:?}",
            actions(&again)
        );
        let (_, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("unchanged redeploy after kubectl rollout restart and kubectl label");
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(drift(&mut f, &request).await, Vec::<String>::new());
        let sts = f.statefulset("app").await.unwrap();
        assert_eq!(
            sts.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()["kubectl.kubernetes.io/restartedAt"],
            "2026-12-01T00:00:00Z",
            "another manager's field is left alone"
        );

        // Another manager changes a field we set: drift naming it; a deploy
        // repairs it, and the next deploy writes nothing.
        let container = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "registry.example.com/k8sworker/app:evil"}]}}}});
        patch_as(
            &statefulsets,
            "app",
            "kubectl-edit",
            Patch::Strategic(container),
        )
        .await;
        let expected =
            "field `spec.template.spec.containers[name=app].image` changed by kubectl-edit";
        assert_eq!(
            drift(&mut f, &request).await,
            [format!(
                "StatefulSet/app was altered outside k8sworker: {expected}"
            )]
        );
        let repair = f.plan(&request, Operation::Deploy).await;
        let step = repair
            .steps
            .iter()
            .find(|s| {
                s.component
                    .as_ref()
                    .is_some_and(|c| c.kind == "StatefulSet")
            })
            .unwrap();
        assert_eq!(step.action, Action::Update as i32);
        assert_eq!(step.reason, expected);
        f.run(&request, Operation::Deploy).await;
        let image = f
            .statefulset("app")
            .await
            .unwrap()
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .image
            .clone();
        assert_eq!(
            image.as_deref(),
            Some("registry.example.com/k8sworker/app:1.0")
        );
        let (_, calls) = f.run(&request, Operation::Deploy).await;
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(drift(&mut f, &request).await, Vec::<String>::new());
    })
    .await;
}

/// Issue 12, case 2: another manager patches the liveness probe's
/// `timeoutSeconds`; a deploy without the probe removes it whole (the
/// executor takes the patched field over first, then applies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_probe_another_manager_patched_can_be_removed() {
    with_temp_ns("exec-coowned", |admin, ns| async move {
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let gateway = |probe: bool| {
            let mut config = vec![
                json!({"type": "image", "name": "registry.example.com/k8sworker/gateway:1.0", "replicaCount": 1}),
                json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http"}),
            ];
            if probe {
                config.push(json!({"type": "probe", "probeType": "liveness", "requestType": "http", "port": "http", "path": "/health"}));
            }
            json!({"name": "gateway", "k8sNamespace": ns, "config": config})
        };
        f.run(&gateway(true), Operation::Deploy).await;

        let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
        patch_as(
            &statefulsets,
            "gateway",
            "kubectl-patch",
            Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "gateway", "livenessProbe": {"timeoutSeconds": 7}}]}}}})),
        )
        .await;
        settled(&statefulsets, "gateway", 1).await;
        let probe = |sts: StatefulSet| {
            sts.spec.unwrap().template.spec.unwrap().containers[0]
                .liveness_probe
                .clone()
        };
        let patched = probe(f.statefulset("gateway").await.unwrap()).unwrap();
        assert_eq!(patched.timeout_seconds, Some(7));

        let (applied, calls) = f.run(&gateway(false), Operation::Deploy).await;
        calls.report("deploy removing a probe another manager patched");
        assert_eq!(
            calls.writes(),
            3,
            "the StatefulSet's two writes (hand-over, apply) and the Event: {calls:?}"
        );
        let sts_step = applied
            .steps
            .iter()
            .find(|s| s.component.as_ref().is_some_and(|c| c.kind == "StatefulSet"))
            .unwrap();
        assert_eq!(
            sts_step.message,
            "updated; took over `spec.template.spec.containers[name=gateway].livenessProbe.timeoutSeconds` from kubectl-patch to remove it"
        );
        assert_eq!(probe(f.statefulset("gateway").await.unwrap()), None);
        let (_, calls) = f.run(&gateway(false), Operation::Deploy).await;
        assert_eq!(calls.writes(), 0, "converged: {calls:?}");
    })
    .await;
}
