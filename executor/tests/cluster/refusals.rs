//! Plans the executor refuses before writing anything, and the API server
//! refusing what the executor's token must not do.

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Secret, Service},
};
use k8sworker_core::labels;
use k8sworker_core::{
    diff::{PlanError, diff},
    plan::Operation,
    render::{Ancillaries, ClusterContext, render},
};
use k8sworker_proto::v1::{
    Action, ComponentRef, ErrorCode, ExpectedVersion, MustNotExist, ObserveRequest, Precondition,
    Step, precondition,
};
use k8sworker_testsupport::{
    RunningExecutor, identity,
    namespace::{create_namespace, delete_namespace},
    plans, with_temp_ns,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::support::{Calls, Fixture, error_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_stale_plan_is_refused_with_nothing_written() {
    with_temp_ns("exec-stale", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        f.run(&request, Operation::Deploy).await;

        // The planner saw version N; someone changes the ConfigMap before Apply.
        let changed = plans::deploy_request("app", &ns, 1, &[json!({"type": "file", "path": "/app/conf", "filename": "other.properties", "content": "x=1\n"})]);
        let plan = f.plan(&changed, Operation::Deploy).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(f.admin.clone(), &ns);
        config_maps
            .patch(
                "vantiq-app-configmap-0",
                &PatchParams::apply("someone-else"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vantiq-app-configmap-0", "annotations": {"edited": "by hand"}}})),
            )
            .await
            .unwrap();
        let before_objects = f.owned("app").await;
        let sts_version = f.statefulset("app").await.unwrap().resource_version();
        let before = f.calls();
        let status = f.apply(&plan, true).await.expect_err("stale plan");
        let calls = Calls::between(&before, &f.calls());
        calls.report("stale plan refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        let error = error_of(&status);
        assert_eq!(error.code, ErrorCode::StalePlan as i32);
        assert!(error.components.iter().any(|c| c.name == "vantiq-app-configmap-0"), "{error:?}");
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(f.owned("app").await, before_objects);
        assert_eq!(f.statefulset("app").await.unwrap().resource_version(), sts_version);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn an_object_that_appeared_after_observe_makes_the_plan_stale() {
    with_temp_ns("exec-appeared", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let plan = f.plan(&request, Operation::Deploy).await;
        // Another writer creates the headless Service, with our labels, in between.
        let service: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "app", "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"}},
            "spec": {"clusterIP": "None", "selector": {"app": "other"}, "ports": [{"port": 1}]}
        }))
        .unwrap();
        identity::apply(&f.admin, &ns, &service).await;
        let before = f.calls();
        let status = f.apply(&plan, true).await.expect_err("stale");
        assert_eq!(error_of(&status).code, ErrorCode::StalePlan as i32, "{status:?}");
        assert_eq!(Calls::between(&before, &f.calls()).writes(), 0);
        assert_eq!(f.owned("app").await.len(), 1, "only the Service someone else made");
        assert!(f.statefulset("app").await.is_none());
    })
    .await;
}

fn mk_ref(kind: &str, name: &str, namespace: &str) -> ComponentRef {
    ComponentRef {
        api_version: "v1".into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn an_unowned_object_is_neither_adopted_nor_changed() {
    with_temp_ns("exec-unowned", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let foreign: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vantiq-app-configmap-0", "labels": {"team": "someone-else"}},
            "data": {"theirs": "yes"}
        }))
        .unwrap();
        identity::apply(&f.admin, &ns, &foreign).await;
        let config_maps: Api<ConfigMap> = Api::namespaced(f.admin.clone(), &ns);
        let original = config_maps.get("vantiq-app-configmap-0").await.unwrap();

        // The planner, fed by Observe, refuses to plan around it and names it.
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let installation = plans::installation(&request);
        let desired = render(
            &installation,
            &ClusterContext {
                tenant: Some(plans::tenant()),
                ..ClusterContext::default()
            },
            &Ancillaries::default(),
        )
        .unwrap();
        let observed = plans::observe(
            &mut f.grpc,
            &installation,
            desired
                .iter()
                .map(|c| k8sworker_proto::convert::component_ref(&c.id(), &ns))
                .collect(),
        )
        .await;
        let foreign_seen = observed
            .components
            .iter()
            .find(|c| c.r#ref.as_ref().unwrap().name == "vantiq-app-configmap-0")
            .expect("observed by name");
        assert_eq!(foreign_seen.owner, "", "not ours");
        let observed: Vec<_> = observed
            .components
            .into_iter()
            .map(|c| k8sworker_proto::convert::observed_from_pb(c).unwrap())
            .collect();
        let refused = diff(
            Operation::Deploy,
            &plans::tenant(),
            "app",
            &ns,
            &desired,
            &observed,
            1,
        )
        .expect_err("not owned");
        assert!(matches!(&refused, PlanError::NotOwned(_)), "{refused}");
        assert!(
            refused.to_string().contains("vantiq-app-configmap-0"),
            "{refused}"
        );

        // A plan that would write it anyway (a planner bug, or a forged plan)
        // is refused by the executor: as a create, and as an update.
        let object = desired
            .iter()
            .find(|c| c.id().name == "vantiq-app-configmap-0")
            .unwrap()
            .object
            .to_json();
        let write = |action: Action, precondition: precondition::Kind| Step {
            action: action as i32,
            component: Some(mk_ref("ConfigMap", "vantiq-app-configmap-0", &ns)),
            precondition: Some(Precondition {
                kind: Some(precondition),
            }),
            object_json: serde_json::to_vec(&object).unwrap(),
            replicas: None,
            reason: "forged".into(),
        };
        for step in [
            write(
                Action::Create,
                precondition::Kind::MustNotExist(MustNotExist {}),
            ),
            write(
                Action::Update,
                precondition::Kind::Expected(ExpectedVersion {
                    uid: original.uid().unwrap(),
                    resource_version: original.resource_version().unwrap(),
                }),
            ),
        ] {
            let plan = k8sworker_proto::v1::Plan {
                id: format!("forged-{}", step.action),
                digest: "forged".into(),
                installation: "app".into(),
                namespace: ns.clone(),
                operation: 1,
                steps: vec![step],
                desired_replicas: 1,
                tenant: Some(k8sworker_proto::convert::tenant_to_pb(&plans::tenant())),
            };
            let before = f.calls();
            let status = f.apply(&plan, false).await.expect_err("not owned");
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            let error = error_of(&status);
            assert_eq!(error.code, ErrorCode::NotOwned as i32, "{error:?}");
            assert!(
                error.message.contains("vantiq-app-configmap-0"),
                "{}",
                error.message
            );
            assert_eq!(Calls::between(&before, &f.calls()).writes(), 0);
        }
        let after = config_maps.get("vantiq-app-configmap-0").await.unwrap();
        assert_eq!(
            after.resource_version(),
            original.resource_version(),
            "untouched"
        );
        assert_eq!(after.labels(), original.labels(), "not adopted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn another_namespace_is_refused_by_the_executor_and_by_the_api_server() {
    with_temp_ns("exec-ns-a", |admin, a| async move {
        let mut f = Fixture::new(admin.clone(), a.clone()).await;
        let b = create_namespace(&admin, "exec-ns-b").await;

        // The executor refuses a plan for B before any API call.
        let request = plans::deploy_request("app", &b, 1, &[]);
        let mut plan = f
            .plan(&plans::deploy_request("app", &a, 1, &[]), Operation::Deploy)
            .await;
        plan.namespace = b.clone();
        for step in &mut plan.steps {
            step.component.as_mut().unwrap().namespace = b.clone();
        }
        let before = f.calls();
        let status = f.apply(&plan, true).await.expect_err("foreign namespace");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert_eq!(error_of(&status).code, ErrorCode::WrongNamespace as i32);
        let observe = f
            .grpc
            .observe(ObserveRequest {
                namespace: b.clone(),
                installation: "app".into(),
                ..Default::default()
            })
            .await
            .expect_err("foreign namespace");
        assert_eq!(observe.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            Calls::between(&before, &f.calls()).total(),
            0,
            "refused without an API call"
        );

        // Forced: the executor's own token, used directly against B, is
        // refused by the API server (real RBAC, not impersonation).
        let token_client = f.identity.client().await;
        let forbidden = |result: Result<_, kube::Error>| match result {
            Err(kube::Error::Api(status)) if status.code == 403 => status.message,
            other => panic!("expected 403 Forbidden, got {:?}", other.map(|_| ())),
        };
        let object = plan
            .steps
            .iter()
            .find(|s| s.component.as_ref().unwrap().kind == "StatefulSet")
            .unwrap();
        let mut statefulset: serde_json::Value =
            serde_json::from_slice(&object.object_json).unwrap();
        statefulset["metadata"]["namespace"] = json!(b);
        let message = forbidden(
            Api::<StatefulSet>::namespaced(token_client.clone(), &b)
                .patch(
                    "app",
                    &PatchParams::apply(labels::MANAGER).force(),
                    &Patch::Apply(&statefulset),
                )
                .await
                .map(|_| ()),
        );
        assert!(
            message.contains(&format!("system:serviceaccount:{a}:k8sworker-executor")),
            "{message}"
        );
        forbidden(
            Api::<ConfigMap>::namespaced(token_client.clone(), &b)
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
                )
                .await
                .map(|_| ()),
        );
        forbidden(
            Api::<Secret>::namespaced(token_client.clone(), &b)
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        );
        forbidden(
            Api::<StatefulSet>::all(token_client.clone())
                .list(&ListParams::default())
                .await
                .map(|_| ()),
        );
        assert!(
            Api::<StatefulSet>::namespaced(admin.clone(), &b)
                .get_opt("app")
                .await
                .unwrap()
                .is_none()
        );

        // An executor misconfigured to serve B with A's token gets nowhere either.
        let mut config = k8sworker_executor::ExecutorConfig::new(b.clone());
        config.default_health_timeout = std::time::Duration::from_secs(5);
        config.allowed_tenants = [plans::tenant()].into();
        let misconfigured = RunningExecutor::start(f.identity.config().await, config).await;
        let mut grpc = misconfigured.client().await;
        let plan_b = plans::installation(&request);
        let status = grpc
            .observe(ObserveRequest {
                namespace: b.clone(),
                installation: plan_b.name.clone(),
                ..Default::default()
            })
            .await
            .expect_err("the API server refuses the token in B");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("forbidden"),
            "{}",
            status.message()
        );
        drop(misconfigured);
        delete_namespace(&admin, &b).await;
    })
    .await;
}
