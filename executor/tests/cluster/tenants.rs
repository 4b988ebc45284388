//! Tenant ownership against the real cluster: one tenant never changes or
//! deletes another's objects, a copied label or owner record makes nothing
//! ours, and an executor refuses a tenant its operator did not allow.

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::ConfigMap};
use k8sworker_core::{
    diff::PlanError,
    labels,
    owner::{OwnerRecord, Tenant},
    plan::Operation,
};
use k8sworker_planner::execute::ExecuteError;
use k8sworker_proto::{convert, v1::ErrorCode};
use k8sworker_testsupport::{RunningExecutor, plans, with_temp_ns};
use kube::{
    Api, ResourceExt as _,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::{Calls, Fixture, error_of};

fn tenant_b() -> Tenant {
    Tenant::new("tenant-b", "c1").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_tenant_never_changes_or_deletes_another_tenants_installation() {
    with_temp_ns("exec-tenants", |admin, ns| async move {
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        // The operator allows both tenants in this namespace.
        f.executor = RunningExecutor::allowing(&f.identity, &[plans::tenant(), tenant_b()]).await;
        f.grpc = f.executor.client().await;
        f.planner_side = f.executor.executor().await;

        // Tenant B deploys `beta`.
        let request_b = plans::deploy_request("beta", &ns, 1, &[]);
        let mut executor = f.planner_side.clone().wait_for_health(false);
        plans::execute_as(&tenant_b(), &mut executor, &request_b, Operation::Deploy)
            .await
            .unwrap_or_else(|e| panic!("B's deploy: {e}"));
        let owned_before = f.owned("beta").await;
        assert_eq!(owned_before.len(), 3, "{owned_before:?}");
        let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
        let before = statefulsets.get("beta").await.unwrap();
        assert_eq!(
            before.annotations()[labels::OWNER],
            "tenant-b/c1/beta/StatefulSet/beta"
        );

        // Tenant A (the tests' tenant) deploys and undeploys the same name,
        // with another image: both refused by the plan, naming B.
        let request_a = plans::deploy_request(
            "beta",
            &ns,
            2,
            &[json!({"type": "label", "name": "tier", "value": "a"})],
        );
        let calls = f.calls();
        for operation in [
            Operation::Deploy,
            Operation::Undeploy,
            Operation::Shutdown,
            Operation::Restart,
        ] {
            let error = plans::execute(&mut executor, &request_a, operation)
                .await
                .expect_err("not A's");
            let ExecuteError::Plan(PlanError::NotOwned(unowned)) = &error else {
                panic!("{operation}: {error}");
            };
            assert!(!unowned.is_empty());
            assert!(
                error.to_string().contains(
                    "StatefulSet/beta (owned by tenant `tenant-b/c1`, installation `beta`)"
                ),
                "{operation}: {error}"
            );
        }
        assert_eq!(Calls::between(&calls, &f.calls()).writes(), 0);

        // A forged plan of A (a compromised planner) writing B's objects:
        // the executor refuses it too, writing nothing.
        let a_work = plans::work_of(&plans::tenant(), &request_a, Operation::Deploy);
        let desired = a_work.desired.clone();
        let observed = f.owned("beta").await;
        let steps = desired
            .iter()
            .map(|component| {
                let id = component.id();
                let uid = observed
                    .get(&(id.kind.as_str().to_string(), id.name.clone()))
                    .cloned();
                let resource_version = "0".to_string();
                k8sworker_proto::v1::Step {
                    action: k8sworker_proto::v1::Action::Update as i32,
                    component: Some(convert::component_ref(&id, &ns)),
                    precondition: Some(k8sworker_proto::v1::Precondition {
                        kind: Some(k8sworker_proto::v1::precondition::Kind::Expected(
                            k8sworker_proto::v1::ExpectedVersion {
                                uid: uid.unwrap_or_else(|| "none".into()),
                                resource_version,
                            },
                        )),
                    }),
                    object_json: component.object.to_json_bytes(),
                    replicas: None,
                    reason: "forged".into(),
                }
            })
            .collect();
        let forged = k8sworker_proto::v1::Plan {
            id: "forged-takeover".into(),
            digest: "forged".into(),
            installation: "beta".into(),
            namespace: ns.clone(),
            operation: k8sworker_proto::v1::Operation::Deploy as i32,
            steps,
            desired_replicas: 2,
            tenant: Some(convert::tenant_to_pb(&plans::tenant())),
        };
        let calls = f.calls();
        let status = f.apply(&forged, false).await.expect_err("not owned");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        let error = error_of(&status);
        assert_eq!(error.code, ErrorCode::NotOwned as i32, "{error:?}");
        assert!(
            error.message.contains("tenant-b/c1/beta/StatefulSet/beta"),
            "{}",
            error.message
        );
        assert_eq!(Calls::between(&calls, &f.calls()).writes(), 0);

        // B's objects are exactly as B left them.
        assert_eq!(f.owned("beta").await, owned_before, "same uids");
        let after = statefulsets.get("beta").await.unwrap();
        // (Its status may move on: the StatefulSet controller writes it.)
        assert_eq!(after.uid(), before.uid());
        assert_eq!(after.metadata.generation, before.metadata.generation);
        assert_eq!(after.labels(), before.labels());
        assert_eq!(after.annotations(), before.annotations());
        assert_eq!(after.spec, before.spec);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_referenced_configmap_with_copied_labels_and_record_survives() {
    with_temp_ns("exec-copied", |admin, ns| async move {
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
        config_maps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "web-shared"},
                    "data": {"shared.properties": "x=1\n"},
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let shared_file = json!({"type": "file", "path": "/shared", "filename": "shared.properties", "name": "web-shared", "key": "shared.properties"});
        let request = plans::deploy_request("web", &ns, 1, std::slice::from_ref(&shared_file));
        f.run(&request, Operation::Deploy).await;

        // Someone copies a generated ConfigMap's labels and owner record onto it.
        let generated = config_maps.get("vantiq-web-configmap-0").await.unwrap();
        let record = generated.annotations()[labels::OWNER].clone();
        assert_eq!(
            OwnerRecord::parse(&record).unwrap().object.name,
            "vantiq-web-configmap-0"
        );
        let copied = json!({"metadata": {
            "labels": generated.labels(),
            "annotations": {labels::OWNER: record},
        }});
        config_maps
            .patch("web-shared", &PatchParams::default(), &Patch::Merge(&copied))
            .await
            .unwrap();
        let shared = config_maps.get("web-shared").await.unwrap();

        // A deploy that changes the generated content: web-shared is not in the plan.
        let changed = plans::deploy_request(
            "web",
            &ns,
            1,
            &[
                shared_file,
                json!({"type": "file", "path": "/more", "filename": "more.properties", "content": "y=2\n"}),
            ],
        );
        let plan = f.plan(&changed, Operation::Deploy).await;
        assert!(
            plan.steps
                .iter()
                .all(|s| s.component.as_ref().unwrap().name != "web-shared"),
            "{plan:?}"
        );
        f.run(&changed, Operation::Deploy).await;
        // Undeploy deletes what is the installation's, not the copy.
        f.run(&changed, Operation::Undeploy).await;
        let after = config_maps.get("web-shared").await.expect("survives");
        assert_eq!(after.uid(), shared.uid());
        assert_eq!(after.resource_version(), shared.resource_version());
        assert!(config_maps.get_opt("vantiq-web-configmap-0").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_tenant_the_operator_did_not_allow_is_refused_before_any_api_call() {
    with_temp_ns("exec-intruder", |admin, ns| async move {
        let mut f = Fixture::new(admin.clone(), ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let allowed = f.plan(&request, Operation::Deploy).await;
        let intruder = Tenant::new("intruder", "c1").unwrap();
        let mut intruders = allowed.clone();
        intruders.id = "plan-intruder".into();
        intruders.tenant = Some(convert::tenant_to_pb(&intruder));
        let mut tenantless = allowed.clone();
        tenantless.id = "plan-tenantless".into();
        tenantless.tenant = None;
        for (plan, named) in [
            (&intruders, "tenant \"intruder/c1\""),
            (&tenantless, "no tenant"),
        ] {
            let calls = f.calls();
            let status = f.apply(plan, false).await.expect_err("not allowed");
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
            let error = error_of(&status);
            assert_eq!(error.code, ErrorCode::TenantNotAllowed as i32, "{error:?}");
            assert!(error.message.contains(named), "{}", error.message);
            assert_eq!(Calls::between(&calls, &f.calls()).total(), 0, "no API call");
        }
        // An executor with no allowed tenant refuses even the tests' tenant.
        f.restart_executor_with(k8sworker_executor::ExecutorConfig::new(ns.clone()))
            .await;
        let calls = f.calls();
        let status = f.apply(&allowed, false).await.expect_err("none allowed");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("allows no tenant"), "{status:?}");
        assert_eq!(Calls::between(&calls, &f.calls()).total(), 0, "no API call");
        assert!(f.statefulset("app").await.is_none(), "nothing written");
    })
    .await;
}
