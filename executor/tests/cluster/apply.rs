//! Deploy, re-deploy, update, shutdown/restart and undeploy through the
//! executor, with the API calls each takes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, ResourceQuota, Secret,
};
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{Action, HealthState, Outcome};
use k8sworker_testsupport::{eventually, identity, plans, with_temp_ns};
use kube::{Api, ResourceExt as _};
use serde_json::json;

use crate::support::{Calls, Fixture, actions, health_state, outcomes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn deploy_creates_a_ready_statefulset_and_a_redeploy_writes_nothing() {
    with_temp_ns("exec-deploy", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 2, &[]);

        let plan = f.plan(&request, Operation::Deploy).await;
        assert!(
            actions(&plan)
                .iter()
                .all(|(action, _)| *action == Action::Create),
            "{:?}",
            actions(&plan)
        );
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("fresh deploy (3 objects, 2 replicas)");
        assert_eq!(outcomes(&applied), [Outcome::Applied].into());
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(applied.ack.health.as_ref().unwrap().ready_replicas, 2);
        // Every object the plan created carries the ownership labels.
        let owned = f.owned("app").await;
        assert_eq!(owned.len(), plan.steps.len(), "{owned:?}");
        assert_eq!(f.pods("app").await.len(), 2);
        assert_eq!(
            calls.writes(),
            plan.steps.len() as u64 + 1,
            "one write per step plus the Event: {calls:?}"
        );

        // Unchanged: every step is a NOOP, and nothing is written.
        let again = f.plan(&request, Operation::Deploy).await;
        assert!(
            actions(&again)
                .iter()
                .all(|(action, _)| *action == Action::Noop),
            "{:?}",
            actions(&again)
        );
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("unchanged re-deploy");
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(outcomes(&applied), [Outcome::Unchanged].into());
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(f.owned("app").await, owned, "same objects, same uids");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_same_plan_id_returns_the_same_ack_without_api_calls() {
    with_temp_ns("exec-replay", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let plan = f.plan(&request, Operation::Deploy).await;
        let first = f.apply(&plan, true).await.expect("applied");
        assert_eq!(first.ack.error, None);

        let before = f.calls();
        let second = f.apply(&plan, true).await.expect("replayed");
        let calls = Calls::between(&before, &f.calls());
        assert_eq!(
            calls.total(),
            0,
            "a resent plan costs no API call: {calls:?}"
        );
        assert_eq!(second.ack, first.ack);
        assert_eq!(second.steps, first.steps);

        // The same id with other content is a caller bug, refused.
        let mut changed = plan.clone();
        changed.digest = "0".repeat(64);
        let status = f.apply(&changed, false).await.expect_err("reused id");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    })
    .await;
}

/// Issue 12, case 8: a failure is not remembered as if it were a success. A
/// plan refused by the API server (here a ResourceQuota, found by the
/// dry-run wave of case 4) writes nothing, so its retry carries the same
/// plan id; once the cause is gone the retry is applied for real, not
/// answered with the cached failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_failed_plan_is_applied_again_when_retried_with_the_same_id() {
    with_temp_ns("exec-retry", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let quotas: Api<ResourceQuota> = Api::namespaced(f.admin.clone(), &ns);
        let quota: ResourceQuota = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "no-room"},
            "spec": {"hard": {
                "configmaps": "0", "secrets": "0", "services": "0",
                "count/statefulsets.apps": "0"
            }}
        }))
        .unwrap();
        quotas
            .create(&kube::api::PostParams::default(), &quota)
            .await
            .unwrap();
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let plan = f.plan(&request, Operation::Deploy).await;

        let before = f.calls();
        let failed = f.apply(&plan, true).await.expect("an Ack");
        let calls = Calls::between(&before, &f.calls());
        let error = failed.ack.error.as_ref().expect("refused by the quota");
        assert!(error.message.contains("quota"), "{error:?}");
        assert_eq!(calls.writes(), 0, "refused by the dry run: {calls:?}");
        assert!(
            !outcomes(&failed).contains(&Outcome::Applied),
            "{:?}",
            failed.ack.steps
        );
        assert!(f.owned("app").await.is_empty(), "nothing written");

        // The same plan again while the quota stands: refused again, by the
        // API server (its writes were sent, as dry runs), not from memory.
        let before = f.calls();
        let again = f.apply(&plan, true).await.expect("an Ack");
        let calls = Calls::between(&before, &f.calls());
        calls.report("failed plan retried");
        assert!(again.ack.error.is_some(), "{:?}", again.ack);
        assert_eq!(
            calls.dry_runs(),
            plan.steps.len() as u64,
            "the retry reached the API server: {calls:?}"
        );
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert!(f.owned("app").await.is_empty(), "nothing written");

        // The cause removed, the same plan id is applied. The quota
        // admission may see the deleted quota for a moment (its lookup
        // cache), so the retry is repeated, each time reaching the API server.
        quotas.delete("no-room", &Default::default()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let applied = loop {
            let before = f.calls();
            let retried = f.apply(&plan, true).await.expect("an Ack");
            let calls = Calls::between(&before, &f.calls());
            assert_eq!(
                calls.dry_runs(),
                plan.steps.len() as u64,
                "a failed plan is not replayed: {calls:?}"
            );
            if retried.ack.error.is_none() {
                calls.report("failed plan retried after its cause was removed");
                break retried;
            }
            assert!(f.owned("app").await.is_empty(), "nothing written");
            assert!(
                tokio::time::Instant::now() < deadline,
                "still refused: {:?}",
                retried.ack.error
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(outcomes(&applied), [Outcome::Applied].into());
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(f.owned("app").await.len(), plan.steps.len());

        // Now it completed, and a resend is answered from memory.
        let before = f.calls();
        let replayed = f.apply(&plan, true).await.expect("replayed");
        let calls = Calls::between(&before, &f.calls());
        assert_eq!(calls.total(), 0, "{calls:?}");
        assert_eq!(replayed.ack, applied.ack);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn shutdown_scales_to_zero_and_restart_scales_back() {
    with_temp_ns("exec-scale", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 2, &[]);
        f.run(&request, Operation::Deploy).await;
        let objects = f.owned("app").await;

        let shutdown = f.plan(&request, Operation::Shutdown).await;
        assert_eq!(
            actions(&shutdown),
            [(Action::Scale, "StatefulSet app".to_string())]
        );
        let (applied, calls) = f.run(&request, Operation::Shutdown).await;
        calls.report("shutdown (scale to 0)");
        assert_eq!(health_state(&applied), HealthState::Stopped);
        assert!(f.pods("app").await.is_empty(), "no pods left");
        assert_eq!(
            f.statefulset("app").await.unwrap().spec.unwrap().replicas,
            Some(0)
        );
        assert_eq!(f.owned("app").await, objects, "nothing created or deleted");

        let (applied, calls) = f.run(&request, Operation::Restart).await;
        calls.report("restart (scale to 2)");
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(applied.ack.health.unwrap().ready_replicas, 2);
        assert_eq!(f.pods("app").await.len(), 2);
        assert_eq!(f.owned("app").await, objects, "nothing created or deleted");
    })
    .await;
}

/// A ConfigMap and a Secret that exist before the installation and that it
/// only refers to.
async fn create_references(f: &Fixture) {
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shared-config"},
        "data": {"shared.properties": "a=b\n"}
    }))
    .unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shared-secret"},
        "stringData": {"password": "not-for-logs", "tls.key": "key"}
    }))
    .unwrap();
    identity::apply(&f.admin, &f.namespace, &config_map).await;
    identity::apply(&f.admin, &f.namespace, &secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn undeploy_deletes_only_generated_objects_with_uid_preconditions() {
    with_temp_ns("exec-undeploy", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        create_references(&f).await;
        let references = [
            json!({"type": "file", "path": "/app/shared", "filename": "shared.properties", "name": "shared-config", "key": "shared.properties"}),
            json!({"type": "environmentVariable", "name": "PASSWORD", "secretName": "shared-secret", "key": "password"}),
            json!({"type": "environmentVariable", "name": "TOKEN", "value": "t0ken", "asSecret": true}),
        ];
        let request = plans::deploy_request("app", &ns, 1, &references);
        f.run(&request, Operation::Deploy).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(f.admin.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(f.admin.clone(), &ns);
        let shared_config = config_maps.get("shared-config").await.unwrap();
        let shared_secret = secrets.get("shared-secret").await.unwrap();

        // A generated object replaced (same name, same labels, new uid) after
        // the plan was made: the plan is refused, nothing is deleted.
        let undeploy = f.plan(&request, Operation::Undeploy).await;
        assert!(actions(&undeploy).iter().all(|(a, _)| *a == Action::Delete));
        let generated = "vantiq-app-configmap-0";
        let original = config_maps.get(generated).await.unwrap();
        config_maps.delete(generated, &Default::default()).await.unwrap();
        let mut replacement = original.clone();
        replacement.metadata = kube::api::ObjectMeta {
            name: original.metadata.name.clone(),
            labels: original.metadata.labels.clone(),
            annotations: original.metadata.annotations.clone(),
            ..Default::default()
        };
        identity::apply(&f.admin, &ns, &replacement).await;
        let before = f.owned("app").await;
        let status = f.apply(&undeploy, true).await.expect_err("stale uid");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("replaced"), "{}", status.message());
        assert_eq!(f.owned("app").await, before, "nothing deleted");

        // Re-planned: everything generated goes, pods included.
        let (applied, calls) = f.run(&request, Operation::Undeploy).await;
        calls.report("undeploy");
        let deletes = applied.ack.steps.len() as u64;
        assert_eq!(calls.dry_runs(), deletes, "each delete dry-run first: {calls:?}");
        assert_eq!(calls.writes(), deletes + 1, "each delete once, and the Event: {calls:?}");
        assert_eq!(health_state(&applied), HealthState::Absent);
        assert!(f.owned("app").await.is_empty(), "{:?}", f.owned("app").await);
        assert!(f.pods("app").await.is_empty());
        // Referenced objects are untouched.
        let after_config = config_maps.get("shared-config").await.unwrap();
        let after_secret = secrets.get("shared-secret").await.unwrap();
        assert_eq!(after_config.resource_version(), shared_config.resource_version());
        assert_eq!(after_secret.resource_version(), shared_secret.resource_version());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn every_entry_type_deploys_updates_roll_pods_and_removed_files_go() {
    with_temp_ns("exec-entries", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        create_references(&f).await;
        // A claim bound to a pre-created volume (the test cluster has no provisioner).
        let volume: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("{ns}-data")},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/k8sworker-test-volume"},
                "claimRef": {"namespace": ns, "name": "data"},
                "persistentVolumeReclaimPolicy": "Retain"
            }
        }))
        .unwrap();
        let volumes: Api<PersistentVolume> = Api::all(f.admin.clone());
        volumes
            .patch(&volume.name_any(), &kube::api::PatchParams::apply(identity::TEST_MANAGER), &kube::api::Patch::Apply(&volume))
            .await
            .unwrap();
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeName": format!("{ns}-data"), "storageClassName": ""}
        }))
        .unwrap();
        identity::apply(&f.admin, &ns, &claim).await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(f.admin.clone(), &ns);
        eventually("the claim to bind", Duration::from_secs(60), || {
            let claims = claims.clone();
            async move {
                let phase = claims.get("data").await.ok()?.status?.phase?;
                (phase == "Bound").then_some(())
            }
        })
        .await;
        let node = k8sworker_testsupport::TestCluster::get().await.node();

        let entries = |greeting: &str, extra_file: bool| {
            let mut entries = vec![
                json!({"type": "file", "path": "/app/conf", "filename": "more.properties", "content": format!("greeting={greeting}\n")}),
                json!({"type": "file", "path": "/app/shared", "filename": "shared.properties", "name": "shared-config", "key": "shared.properties"}),
                json!({"type": "file", "path": "/app/tls", "filename": "tls.key", "name": "shared-secret", "key": "tls.key", "dataSource": "secret"}),
                json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http", "host": "app.example.com"}),
                json!({"type": "environmentVariable", "name": "TOKEN", "value": "t0ken", "asSecret": true}),
                json!({"type": "environmentVariable", "name": "PASSWORD", "secretName": "shared-secret", "key": "password"}),
                json!({"type": "persistentVolumeRef", "name": "data", "path": "/data"}),
                json!({"type": "annotation", "name": "example.com/owner", "value": "platform", "targetResource": "statefulset"}),
                json!({"type": "label", "name": "team", "value": "integration"}),
                json!({"type": "hostAlias", "name": "db.example.com", "hostIP": "192.0.2.10"}),
                json!({"type": "probe", "probeType": "readiness", "requestType": "http", "port": "http", "path": "/health", "periodSeconds": 10}),
                json!({"type": "resourceRequest", "cpu": "10m", "memory": "16Mi"}),
                json!({"type": "resourceLimit", "cpu": "100m", "memory": "64Mi"}),
                json!({"type": "hardAffinity", "key": "kubernetes.io/hostname", "values": [node.clone()]}),
            ];
            if extra_file {
                entries.push(json!({"type": "file", "path": "/app/extra", "filename": "extra.txt", "content": "extra\n"}));
            }
            entries
        };

        let request = plans::deploy_request("app", &ns, 1, &entries("hello", true));
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("fresh deploy, every entry type");
        assert_eq!(health_state(&applied), HealthState::Ready);
        let owned = f.owned("app").await;
        for kind in ["ConfigMap", "Secret", "Service", "StatefulSet", "Ingress"] {
            assert!(owned.keys().any(|(k, _)| k == kind), "no {kind} among {owned:?}");
        }
        assert_eq!(owned.len(), applied.ack.steps.len(), "every generated object is labelled: {owned:?}");
        let revision_before = f.statefulset("app").await.unwrap().status.unwrap().update_revision;

        // Changed content updates the ConfigMap and rolls the pods; the
        // removed file's ConfigMap is deleted.
        let changed = plans::deploy_request("app", &ns, 1, &entries("bonjour", false));
        let plan = f.plan(&changed, Operation::Deploy).await;
        let steps = actions(&plan);
        assert!(steps.contains(&(Action::Update, "StatefulSet app".into())), "{steps:?}");
        assert!(steps.iter().any(|(a, c)| *a == Action::Update && c.starts_with("ConfigMap")), "{steps:?}");
        assert!(steps.iter().any(|(a, c)| *a == Action::Delete && c.starts_with("ConfigMap")), "{steps:?}");
        let (applied, calls) = f.run(&changed, Operation::Deploy).await;
        calls.report("update (content changed, one file removed)");
        assert_eq!(health_state(&applied), HealthState::Ready);
        let status = f.statefulset("app").await.unwrap().status.unwrap();
        assert_ne!(status.update_revision, revision_before, "the pod template changed");
        let pods = f.pods("app").await;
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].labels().get("controller-revision-hash"),
            status.update_revision.as_ref(),
            "the pod was rolled"
        );
        assert_eq!(f.owned("app").await.len(), owned.len() - 1);

        let (_, calls) = f.run(&changed, Operation::Deploy).await;
        assert_eq!(calls.writes(), 0, "an unchanged re-deploy writes nothing: {calls:?}");
        let (_, calls) = f.run(&changed, Operation::Undeploy).await;
        calls.report("undeploy, every entry type");
        assert!(f.owned("app").await.is_empty());
        assert!(Api::<PersistentVolumeClaim>::namespaced(f.admin.clone(), &ns).get_opt("data").await.unwrap().is_some());
        assert!(Api::<ConfigMap>::namespaced(f.admin.clone(), &ns).get_opt("shared-config").await.unwrap().is_some());
        assert!(volumes.get_opt(&volume.name_any()).await.unwrap().is_some(), "the volume stays");
        let _ = volumes.delete(&volume.name_any(), &Default::default()).await;
    })
    .await;
}
