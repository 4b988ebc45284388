//! Issue 12, case 3: a change of a field the API server never lets an update
//! change is refused before any write, by the planner and, for a plan that
//! slipped past it, by the executor.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8sworker_core::diff::PlanError;
use k8sworker_core::plan::Operation;
use k8sworker_planner::execute::ExecuteError;
use k8sworker_proto::convert;
use k8sworker_proto::v1::ErrorCode;
use k8sworker_testsupport::{plans, with_temp_ns};
use kube::{Api, ResourceExt as _};
use serde_json::{Value, json};

use crate::support::{Calls, Fixture, error_of};

/// The issue's redis: 3 replicas, a file, an inbound port; `extra` entries
/// after them.
fn redis(namespace: &str, extra: &[Value]) -> Value {
    let mut config = vec![
        json!({"type": "image", "name": "registry.example.com/k8sworker/redis:7", "replicaCount": 3}),
        json!({"type": "file", "path": "/etc/redis", "filename": "redis.conf", "content": "maxmemory 64mb\n"}),
        json!({"type": "inboundPort", "port": 6379, "protocol": "TCP"}),
    ];
    config.extend(extra.iter().cloned());
    json!({"name": "redis", "k8sNamespace": namespace, "config": config})
}

fn routing_label() -> Value {
    json!({"type": "label", "name": "app", "value": "redis", "controlsRouting": true})
}

/// Every Service's selector, and how many of the installation's pods each
/// selects.
async fn selections(f: &Fixture) -> BTreeMap<String, (BTreeMap<String, String>, usize)> {
    let pods = f.pods("redis").await;
    let services = Api::<Service>::namespaced(f.admin.clone(), &f.namespace)
        .list(&Default::default())
        .await
        .unwrap();
    services
        .items
        .iter()
        .map(|service| {
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let selected = pods
                .iter()
                .filter(|pod| {
                    let labels = pod.labels();
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .count();
            (service.name_any(), (selector, selected))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_new_routing_label_is_refused_before_any_write_naming_the_field() {
    with_temp_ns("exec-immutable", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        f.run(&redis(&ns, &[]), Operation::Deploy).await;
        let running = selections(&f).await;
        assert_eq!(running.len(), 2, "{running:?}");
        assert!(running.values().all(|(_, n)| *n == 3), "{running:?}");
        let sts_version = f.statefulset("redis").await.unwrap().resource_version();

        // The planner refuses: nothing is written, the Services still select
        // the running pods.
        let relabelled = redis(&ns, &[routing_label()]);
        let before = f.calls();
        let refused = plans::execute(&mut f.planner_side, &relabelled, Operation::Deploy).await;
        let calls = Calls::between(&before, &f.calls());
        calls.report("deploy changing an immutable field (refused by the planner)");
        let Err(ExecuteError::Plan(error @ PlanError::Immutable(_))) = refused else {
            panic!("not refused as immutable: {refused:?}")
        };
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "the plan would change immutable fields: StatefulSet/redis field `spec.selector` would change from {} to {}; {}",
                r#"{"matchExpressions":[],"matchLabels":{"k8sworker.io/installation":"redis"}}"#,
                r#"{"matchExpressions":[],"matchLabels":{"app":"redis"}}"#,
                k8sworker_core::immutable::ADVICE
            )
        );
        assert!(error.to_string().contains("undeploy the installation, then deploy it again"));
        assert_eq!(selections(&f).await, running);
        assert_eq!(
            f.statefulset("redis").await.unwrap().resource_version(),
            sts_version
        );

        // A plan made without the observed immutable fields (an older
        // planner) is refused by the executor, before any write.
        let work = plans::work(&relabelled, Operation::Deploy);
        let mut observed = plans::observation(&mut f.planner_side, &work).await;
        for component in &mut observed.components {
            component.immutable.clear();
        }
        let plan = work.plan(&observed.components).expect("planned blind");
        let before = f.calls();
        let status = f
            .apply(&convert::plan_to_pb(&plan), true)
            .await
            .expect_err("refused by the executor");
        let calls = Calls::between(&before, &f.calls());
        calls.report("plan changing an immutable field (refused by the executor)");
        assert_eq!(calls.writes(), 0, "{calls:?}");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        let error = error_of(&status);
        assert_eq!(error.code, ErrorCode::ImmutableField as i32, "{error:?}");
        assert!(
            error.message.contains("StatefulSet") && error.message.contains("spec.selector"),
            "{}",
            error.message
        );
        assert!(error.message.contains("undeploy"), "{}", error.message);
        assert_eq!(
            error
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["redis"]
        );
        assert_eq!(selections(&f).await, running);

        // Undeploy, then deploy, as the message says: the new selector runs.
        f.run(&redis(&ns, &[]), Operation::Undeploy).await;
        f.run(&relabelled, Operation::Deploy).await;
        let relabelled_running = selections(&f).await;
        assert!(
            relabelled_running.values().all(|(s, n)| *n == 3 && s.get("app").map(String::as_str) == Some("redis")),
            "{relabelled_running:?}"
        );
    })
    .await;
}
