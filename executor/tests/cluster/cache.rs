//! Issue 13's goals for the watch-fed executor, counted: a fresh deploy
//! makes one write per component and one Event (its dry runs counted
//! apart), and reads nothing but its health watch; an unchanged redeploy
//! makes no API call at all; a restarted executor is ready after one list
//! per kind and then redeploys with no call; the cache is never older than
//! the executor's own writes.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{Action, HealthState, ObserveRequest, Outcome};
use k8sworker_testsupport::{identity, plans, with_temp_ns};
use kube::Api;
use serde_json::json;

use crate::support::{Calls, Fixture, actions, health_state, outcomes};

/// The reference workload's installation: a StatefulSet, a headless and a
/// port Service, an Ingress, a ConfigMap and a Secret.
fn six_objects(name: &str, ns: &str) -> serde_json::Value {
    plans::deploy_request(
        name,
        ns,
        1,
        &[
            json!({"type": "environmentVariable", "name": "TOKEN", "value": "t0ken", "asSecret": true}),
            json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http", "host": "app.example.com"}),
        ],
    )
}

/// The reads of `calls`: verb and resource → count.
fn reads(calls: &Calls) -> BTreeMap<String, u64> {
    calls
        .0
        .iter()
        .filter(|(call, _)| call.is_read())
        .map(|(call, n)| (call.to_string(), *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_fresh_deploy_writes_once_per_component_and_an_unchanged_one_calls_nothing() {
    with_temp_ns("exec-cache", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = six_objects("second", &ns);
        let plan = f.plan(&request, Operation::Deploy).await;
        assert_eq!(plan.steps.len(), 6, "{:?}", actions(&plan));

        // Counted from the observe on.
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("fresh deploy of 6 objects, from the cache");
        assert_eq!(outcomes(&applied), [Outcome::Applied].into());
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(
            calls.writes(),
            6 + 1,
            "one write per component and the Event: {calls:?}"
        );
        assert_eq!(
            calls.dry_runs(),
            6,
            "the all-or-nothing wave, counted apart: {calls:?}"
        );
        // The health wait lists the StatefulSet and its pods, then watches
        // each; a watch whose list already settled the wait is dropped
        // before its request goes out, so a watch is made once or not at all.
        let mut reads = reads(&calls);
        for watched in ["watch pods", "watch statefulsets"] {
            let made = reads.remove(watched).unwrap_or(0);
            assert!(made <= 1, "{watched} at most once: {calls:?}");
        }
        assert_eq!(
            reads,
            BTreeMap::from([
                ("list pods".to_owned(), 1),
                ("list statefulsets".to_owned(), 1),
            ]),
            "no read but the health wait's: {calls:?}"
        );

        // The cache holds what was written: every observed resourceVersion
        // is at least the one its write returned.
        let observed = f
            .grpc
            .observe(ObserveRequest {
                namespace: ns.clone(),
                installation: "second".into(),
                ..Default::default()
            })
            .await
            .expect("observe")
            .into_inner();
        let observed: BTreeMap<(String, String), u64> = observed
            .components
            .iter()
            .map(|c| {
                let r = c.r#ref.clone().unwrap();
                ((r.kind, r.name), c.resource_version.parse().unwrap())
            })
            .collect();
        for step in &applied.ack.steps {
            let component = step.component.clone().unwrap();
            let written: u64 = step.resource_version.parse().unwrap();
            let seen = observed[&(component.kind.clone(), component.name.clone())];
            assert!(
                seen >= written,
                "{} {}: observed {seen} < written {written}",
                component.kind,
                component.name
            );
        }

        // Unchanged: no API call at all, the health included.
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("unchanged redeploy, from the cache");
        assert_eq!(outcomes(&applied), [Outcome::Unchanged].into());
        assert_eq!(health_state(&applied), HealthState::Ready);
        assert_eq!(calls.total(), 0, "{calls:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_restarted_executor_lists_once_per_kind_and_redeploys_without_a_call() {
    with_temp_ns("exec-cache-restart", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        for name in ["one", "two", "three"] {
            f.run(&six_objects(name, &ns), Operation::Deploy).await;
        }
        f.restart_executor().await;
        let started = Calls(f.calls());
        started.report("executor start");
        assert_eq!(started.writes(), 0, "{started:?}");
        assert_eq!(
            reads(&started)
                .into_iter()
                .filter(|(call, _)| call.starts_with("list "))
                .collect::<BTreeMap<_, _>>(),
            [
                "configmaps",
                "ingresses",
                "persistentvolumeclaims",
                "pods",
                "resourcequotas",
                "secrets",
                "services",
                "statefulsets",
            ]
            .into_iter()
            .map(|kind| (format!("list {kind}"), 1))
            .collect(),
            "one list per kind: {started:?}"
        );
        assert_eq!(
            started.total(),
            8 * 2,
            "a list and a watch per kind: {started:?}"
        );

        for name in ["one", "two", "three"] {
            let (applied, calls) = f.run(&six_objects(name, &ns), Operation::Deploy).await;
            assert_eq!(outcomes(&applied), [Outcome::Unchanged].into());
            assert_eq!(calls.total(), 0, "{name} after the restart: {calls:?}");
        }
    })
    .await;
}

/// An object someone else changes is seen by the next plan (the watch
/// brings it), and the deploy repairs it with one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn another_writers_change_reaches_the_next_plan() {
    with_temp_ns("exec-cache-drift", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        f.run(&request, Operation::Deploy).await;
        let name = "vantiq-app-configmap-0";
        let config_maps: Api<ConfigMap> = Api::namespaced(f.admin.clone(), &ns);
        let changed: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"app.properties": "greeting=changed\n"}
        }))
        .unwrap();
        identity::apply(&f.admin, &ns, &changed).await;

        // The watch brings the change; the next plan repairs it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let plan = f.plan(&request, Operation::Deploy).await;
            if actions(&plan).contains(&(Action::Update, format!("ConfigMap {name}"))) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never planned: {:?}",
                actions(&plan)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("deploy repairing another writer's change");
        assert!(
            outcomes(&applied).contains(&Outcome::Applied),
            "{:?}",
            applied.ack.steps
        );
        assert_eq!(calls.writes(), 2, "the ConfigMap and the Event: {calls:?}");
        let repaired = config_maps.get(name).await.unwrap();
        assert_eq!(repaired.data.unwrap()["app.properties"], "greeting=hello\n");
    })
    .await;
}
