//! Smoke tests of the test cluster itself: the parts every other cluster
//! test relies on. Run with `cargo test -p k8sworker-testsupport -- --ignored`.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Pod, ServiceAccount},
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8sworker_testsupport::{
    ExecutorIdentity, TestCluster, eventually, identity, jaeger, namespace::create_namespace,
    namespace::delete_namespace, with_temp_ns,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn apiserver_reports_the_built_version() {
    let cluster = TestCluster::get().await;
    let version = cluster.admin().apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );
    assert!(
        version.git_version.starts_with("v1.34."),
        "{}",
        version.git_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn statefulset_becomes_ready_and_scales_to_zero() {
    with_temp_ns("smoke-sts", |admin, ns| async move {
        let statefulset: StatefulSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "main", "image": "registry.example.com/web:1"}]}
                }
            }
        }))
        .unwrap();
        let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
        identity::apply(&admin, &ns, &statefulset).await;
        let ready = |want: i32| {
            let statefulsets = statefulsets.clone();
            move || {
                let statefulsets = statefulsets.clone();
                async move {
                    let sts = statefulsets.get("web").await.ok()?;
                    let status = sts.status?;
                    (status.ready_replicas.unwrap_or(0) == want && status.replicas == want)
                        .then_some(())
                }
            }
        };
        eventually("web 2/2 ready", Duration::from_secs(60), ready(2)).await;

        statefulsets
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}})),
            )
            .await
            .expect("scale to 0");
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
        eventually("web's pods gone", Duration::from_secs(60), || {
            let pods = pods.clone();
            async move {
                let left = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
                left.items.is_empty().then_some(())
            }
        })
        .await;
        eventually("web 0/0", Duration::from_secs(30), ready(0)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_namespace_scoped_token_is_forbidden_elsewhere() {
    with_temp_ns("smoke-rbac-a", |admin, a| async move {
        let b = create_namespace(&admin, "smoke-rbac-b").await;
        let service_account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("writer".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let role = Role {
            metadata: ObjectMeta {
                name: Some("configmaps".into()),
                ..ObjectMeta::default()
            },
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".into()]),
                verbs: vec!["get".into(), "list".into(), "create".into()],
                ..PolicyRule::default()
            }]),
        };
        let binding = RoleBinding {
            metadata: ObjectMeta {
                name: Some("writer".into()),
                ..ObjectMeta::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "configmaps".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: "writer".into(),
                namespace: Some(a.clone()),
                ..Subject::default()
            }]),
        };
        identity::apply(&admin, &a, &service_account).await;
        identity::apply(&admin, &a, &role).await;
        identity::apply(&admin, &a, &binding).await;
        let token = identity::token(&admin, &a, "writer").await;
        let writer = ExecutorIdentity::from_token(&a, "writer", &token)
            .await
            .client()
            .await;

        let config_map = |name: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let in_a: Api<ConfigMap> = Api::namespaced(writer.clone(), &a);
        eventually(
            "the RoleBinding to take effect",
            Duration::from_secs(20),
            || {
                let in_a = in_a.clone();
                let cm = config_map("allowed");
                async move { in_a.create(&PostParams::default(), &cm).await.ok() }
            },
        )
        .await;
        let in_b: Api<ConfigMap> = Api::namespaced(writer, &b);
        let refused = in_b
            .create(&PostParams::default(), &config_map("refused"))
            .await
            .expect_err("a token bound in A must not write to B");
        let kube::Error::Api(status) = &refused else {
            panic!("expected an API error, got {refused}");
        };
        assert_eq!(status.code, 403, "{status:?}");
        assert!(
            status
                .message
                .contains(&format!("system:serviceaccount:{a}:writer")),
            "{}",
            status.message
        );
        let admin_view: Api<ConfigMap> = Api::namespaced(admin.clone(), &b);
        assert!(admin_view.get_opt("refused").await.unwrap().is_none());
        assert_eq!(
            Api::<ConfigMap>::namespaced(admin.clone(), &a)
                .get("allowed")
                .await
                .unwrap()
                .name_any(),
            "allowed"
        );
        delete_namespace(&admin, &b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_span_sent_over_otlp_is_returned_by_jaeger() {
    use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
    let cluster = TestCluster::get().await;
    let provider = k8sworker_testsupport::jaeger::exporting_provider("k8sworker-smoke").await;
    let tracer = provider.tracer("smoke");
    let trace_id = tracer.in_span("smoke-span", |context| {
        context
            .span()
            .set_attribute(opentelemetry::KeyValue::new("smoke", true));
        context.span().span_context().trace_id().to_string()
    });
    provider.force_flush().expect("spans flushed");

    let query = cluster.jaeger_query_url();
    let names = eventually("the span in Jaeger", Duration::from_secs(30), || {
        let query = query.clone();
        let trace_id = trace_id.clone();
        async move {
            let names = jaeger::span_names(&query, &trace_id).await;
            (!names.is_empty()).then_some(names)
        }
    })
    .await;
    assert_eq!(names, ["smoke-span"]);
    provider.shutdown().ok();
}
