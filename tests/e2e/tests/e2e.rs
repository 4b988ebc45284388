//! End to end: a request over REST ends as objects in the real test cluster
//! and an installation record, through control plane → gateway → planner →
//! executor (with its namespace-scoped ServiceAccount token).
//!
//! Run with `cargo test -p k8sworker-e2e -- --ignored` once
//! `tests/cluster/up.sh` has run (or let the first test start the cluster).

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8sworker_controlplane::config::Synchronous;
use k8sworker_controlplane::store::Store;
use k8sworker_controlplane::store::workitems::{self, NewWorkitem};
use k8sworker_core::owner::Tenant;
use k8sworker_e2e::stack::gateway_config;
use k8sworker_e2e::{CLUSTER, RunningGateway, RunningPlanner, Stack, Vantiq, sample_deploy};
use k8sworker_gateway::{ClaimMode, Protocol};
use k8sworker_testsupport::namespace::{create_namespace, delete_namespace};
use k8sworker_testsupport::{ExecutorIdentity, RunningExecutor, eventually, with_temp_ns};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Names of the installation's objects in the namespace, by kind.
async fn objects(admin: &Client, ns: &str, installation: &str) -> Vec<String> {
    let params = ListParams::default().labels(&k8sworker_core::labels::selector(installation));
    let mut out = Vec::new();
    macro_rules! list {
        ($kind:ty, $label:expr) => {
            for object in Api::<$kind>::namespaced(admin.clone(), ns)
                .list_metadata(&params)
                .await
                .expect("list")
            {
                out.push(format!("{}/{}", $label, object.name_any()));
            }
        };
    }
    list!(StatefulSet, "StatefulSet");
    list!(Service, "Service");
    list!(ConfigMap, "ConfigMap");
    list!(Secret, "Secret");
    list!(Ingress, "Ingress");
    out.sort();
    out
}

async fn statefulset(admin: &Client, ns: &str, name: &str) -> Option<StatefulSet> {
    Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .get_opt(name)
        .await
        .expect("get statefulset")
}

async fn ready_pods(admin: &Client, ns: &str, installation: &str) -> usize {
    let params = ListParams::default().labels(&format!("k8sworker.io/installation={installation}"));
    Api::<Pod>::namespaced(admin.clone(), ns)
        .list(&params)
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn deploy_update_shutdown_restart_fetch_logs_undeploy() {
    lifecycle(Protocol::Claim).await;
}

/// The same scenario with the gateway on `--protocol auto` against a
/// control plane that serves only Vantiq's documented surface: the gateway
/// finds no version endpoint, speaks the REST protocol, and any request
/// outside what the strict worker profile allows would be refused (and
/// fail the scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn rest_mode_against_a_strict_control_plane_deploy_update_shutdown_restart_fetch_logs_undeploy()
 {
    lifecycle(Protocol::Rest).await;
}

/// A deploy the REST protocol can carry: the sample without its `asSecret`
/// value (secret values need the claim protocol).
fn deploy_for(protocol: Protocol, name: &str, ns: &str, replicas: i64, greeting: &str) -> Value {
    let mut deploy = sample_deploy(name, ns, replicas, greeting);
    if protocol == Protocol::Rest {
        let config = deploy["config"].as_array_mut().unwrap();
        config.retain(|entry| entry["asSecret"] != json!(true));
    }
    deploy
}

/// Asks for a deploy of [`deploy_for`]; the workitem.
async fn request_deploy(
    vantiq: &Vantiq,
    protocol: Protocol,
    name: &str,
    ns: &str,
    replicas: i64,
    greeting: &str,
) -> Value {
    let deploy = deploy_for(protocol, name, ns, replicas, greeting);
    vantiq.command(CLUSTER, "deploy", deploy).await
}

/// A stack for `protocol`: strict control plane and REST gateway, or the
/// default control plane and the claim protocol.
async fn stack_for(protocol: Protocol, admin: &Client, ns: &str) -> Stack {
    Stack::start(admin, ns, |config| {
        config.vantiq_strict = protocol == Protocol::Rest;
    })
    .await
}

async fn lifecycle(protocol: Protocol) {
    let rest = protocol == Protocol::Rest;
    with_temp_ns("e2e-lifecycle", |admin, ns| async move {
        let stack = stack_for(protocol, &admin, &ns).await;
        if rest {
            // The strict server has no version endpoint and no claim procedures.
            let (status, _) = stack.admin.get("/api/v1/version").await;
            assert_eq!(status, 404);
            let (status, body) = stack
                .admin
                .post(
                    "/api/v1/resources/procedures/K8sManager.claimWorkitem",
                    json!({"clusterName": CLUSTER}),
                )
                .await;
            assert_eq!(status, 404, "{body}");
        }
        // `auto`: the server decides.
        let gateway = stack.gateway();
        let vantiq = &stack.admin;

        // deploy → RUNNING, with every generated object listed.
        request_deploy(vantiq, protocol, "web", &ns, 2, "hello").await;
        let record = vantiq.wait_status("web", "RUNNING", WAIT).await;
        assert_eq!(record["replicaCount"], 2);
        assert_eq!(record["k8sNamespace"], ns.as_str());
        assert_eq!(record["k8sInstallationType"], "STATEFUL_SET");
        assert!(record["installationDate"].is_string(), "{record}");
        assert_eq!(
            record["installedBy"],
            stack.control_plane.config.admin_username.as_str()
        );
        // Every read shows the `asSecret` value redacted; only the claim opens it.
        let mut config = deploy_for(protocol, "web", &ns, 2, "hello")["config"].clone();
        if !rest {
            config[3]["value"] = json!("<redacted>");
        }
        assert_eq!(record["configSpec"], config);
        assert_eq!(
            names(&record["k8sAssociatedServices"]),
            ["vantiq-web-service-0", "web"]
        );
        assert_eq!(
            names(&record["k8sAssociatedIngresses"]),
            ["vantiq-web-ingress-0"]
        );
        assert_eq!(
            names(&record["k8sAssociatedConfigMaps"]),
            ["vantiq-web-configmap-0"]
        );
        let secrets: &[&str] = if rest { &[] } else { &["vantiq-web-secret-0"] };
        assert_eq!(names(&record["k8sAssociatedSecrets"]), secrets);
        let mut expected = vec![
            "ConfigMap/vantiq-web-configmap-0",
            "Ingress/vantiq-web-ingress-0",
            "Secret/vantiq-web-secret-0",
            "Service/vantiq-web-service-0",
            "Service/web",
            "StatefulSet/web",
        ];
        if rest {
            expected.retain(|object| !object.starts_with("Secret/"));
        }
        assert_eq!(objects(&admin, &ns, "web").await, expected);
        let sts = statefulset(&admin, &ns, "web")
            .await
            .expect("StatefulSet web");
        assert_eq!(
            record["k8sInstallationIdentifier"],
            sts.uid().unwrap().as_str()
        );
        assert_eq!(ready_pods(&admin, &ns, "web").await, 2);

        // update: new content and three replicas.
        request_deploy(vantiq, protocol, "web", &ns, 3, "bonjour").await;
        let record = vantiq
            .wait_installation("web", WAIT, |r| {
                r.is_some_and(|r| r["installationStatus"] == "RUNNING" && r["replicaCount"] == 3)
            })
            .await
            .unwrap();
        assert_eq!(record["k8sState"], "Running: 3/3 replicas ready");
        let content = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .get("vantiq-web-configmap-0")
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(content["app.properties"], "greeting=bonjour\n");
        assert_eq!(
            statefulset(&admin, &ns, "web").await.unwrap().uid(),
            sts.uid(),
            "an update changes the StatefulSet in place"
        );

        // shutdown → STOPPED, scaled to zero, nothing created or deleted.
        let before = objects(&admin, &ns, "web").await;
        let item = vantiq
            .installation_command("web", "shutdown", json!({}))
            .await;
        assert_eq!(
            vantiq.installation("web").await.unwrap()["installationStatus"],
            "STOPPING",
            "the request itself marks the installation"
        );
        vantiq.wait_status("web", "STOPPED", WAIT).await;
        assert!(
            vantiq
                .workitem(item["requestId"].as_str().unwrap())
                .await
                .is_none()
        );
        let sts = statefulset(&admin, &ns, "web").await.unwrap();
        assert_eq!(sts.spec.unwrap().replicas, Some(0));
        assert_eq!(objects(&admin, &ns, "web").await, before);

        // restart → RUNNING with the configured replicas.
        vantiq
            .installation_command("web", "restart", json!({}))
            .await;
        let record = vantiq.wait_status("web", "RUNNING", WAIT).await;
        assert_eq!(record["replicaCount"], 3);
        eventually("3 ready pods", WAIT, || {
            let admin = admin.clone();
            let ns = ns.clone();
            async move { (ready_pods(&admin, &ns, "web").await == 3).then_some(()) }
        })
        .await;

        // fetchLogs → one document per pod, named <cluster>/<installation>/<pod>-<time>.txt.
        let item = vantiq
            .installation_command("web", "fetchLogs", json!({"podName": "web-1"}))
            .await;
        vantiq
            .wait_workitem(item["requestId"].as_str().unwrap(), WAIT, |item| {
                item.is_none()
            })
            .await;
        let documents = vantiq.document_names().await;
        let logs: Vec<&String> = documents
            .iter()
            .filter(|name| name.starts_with("c1/web/web-1-") && name.ends_with(".txt"))
            .collect();
        assert_eq!(logs.len(), 1, "{documents:?}");
        vantiq.download(logs[0]).await;
        let item = vantiq
            .installation_command(
                "web",
                "fetchLogs",
                json!({"documentGroup": "support/case-1"}),
            )
            .await;
        vantiq
            .wait_workitem(item["requestId"].as_str().unwrap(), WAIT, |item| {
                item.is_none()
            })
            .await;
        let grouped = vantiq
            .document_names()
            .await
            .into_iter()
            .filter(|name| name.starts_with("support/case-1/web-"))
            .count();
        assert_eq!(grouped, 3, "one document per pod");

        // undeploy → the record and every object are gone.
        vantiq
            .installation_command("web", "undeploy", json!({}))
            .await;
        vantiq
            .wait_installation("web", WAIT, |record| record.is_none())
            .await;
        assert_eq!(objects(&admin, &ns, "web").await, Vec::<String>::new());
        assert!(vantiq.workitems().await.is_empty());

        let summary = gateway.stop().await;
        assert_eq!(summary.completed, 7, "{summary:?}");
        assert_eq!(summary.failed + summary.released + summary.abandoned, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_bad_request_is_invalid_naming_the_field_and_the_cluster_is_untouched() {
    with_temp_ns("e2e-invalid", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let mut config = stack.gateway_config();
        config.claim_mode = ClaimMode::Poll;
        let gateway = RunningGateway::start(config);
        let vantiq = &stack.admin;
        let mut bad = sample_deploy("bad", &ns, 1, "x");
        bad["config"][4]["port"] = json!(70000);

        // The control plane refuses it at once, naming the field.
        let (status, body) = vantiq.try_command(CLUSTER, "deploy", bad.clone()).await;
        assert_eq!(status, 400, "{body}");
        let message = body[0]["message"].as_str().unwrap();
        assert!(
            message.contains("config[4] (inboundPort).port"),
            "{message}"
        );
        assert!(vantiq.workitems().await.is_empty());

        // A server that does not validate (as Vantiq might not) hands the
        // worker the bad request: the gateway marks it INVALID, naming the field.
        let store = Store::open(&stack.control_plane.database(), Synchronous::Normal).unwrap();
        let ns_vantiq = stack.control_plane.config.bootstrap_namespace.clone();
        let request = bad.clone();
        let row = store
            .transaction(move |tx| {
                workitems::insert(
                    tx,
                    &NewWorkitem {
                        namespace: ns_vantiq,
                        cluster: CLUSTER.into(),
                        installation: "bad".into(),
                        operation: "deploy".into(),
                        request,
                        requested_by: "admin".into(),
                        traceparent: None,
                    },
                )
            })
            .await
            .unwrap();
        let item = vantiq
            .wait_workitem(&row.request_id, WAIT, |item| {
                item.is_some_and(|i| i["status"] == "INVALID")
            })
            .await
            .unwrap();
        let message = item["message"].as_str().unwrap();
        assert!(
            message.contains("config[4] (inboundPort).port"),
            "{message}"
        );
        assert!(message.contains("70000"), "{message}");
        assert!(
            vantiq.installation("bad").await.is_none(),
            "an INVALID request creates no installation"
        );
        assert!(
            stack.planner.log.calls().is_empty(),
            "the planner was never asked"
        );
        assert_eq!(objects(&admin, &ns, "bad").await, Vec::<String>::new());
        assert_eq!(stack.executor.calls().writes(), 0, "nothing was written");
        let summary = gateway.stop().await;
        assert_eq!(summary.failed, 1);
    })
    .await;
}

/// A deploy that would run as the executor's service account, or put its
/// pods behind k8sworker's own Services with a reserved label, is refused
/// by the control plane and, handed over anyway, marked INVALID by the
/// worker before the planner is asked; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn system_identities_and_reserved_labels_are_invalid() {
    with_temp_ns("e2e-identity", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let mut config = stack.gateway_config();
        config.claim_mode = ClaimMode::Poll;
        let gateway = RunningGateway::start(config);
        let vantiq = &stack.admin;

        let mut executor_account = sample_deploy("borrow", &ns, 1, "x");
        executor_account["config"][0]["serviceAccount"] = json!("k8sworker-executor");
        let mut reserved_label = sample_deploy("intercept", &ns, 1, "x");
        reserved_label["config"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "label", "name": "k8sworker.io/component", "value": "executor", "controlsRouting": true}));
        let cases = [
            (
                "borrow",
                executor_account,
                "config[0] (image).serviceAccount: `k8sworker-executor` is k8sworker's own service account",
            ),
            (
                "intercept",
                reserved_label,
                "config[5] (label).name: `k8sworker.io/component` is reserved",
            ),
        ];
        let store = Store::open(&stack.control_plane.database(), Synchronous::Normal).unwrap();
        for (installation, request, field) in cases {
            let before = vantiq.workitems().await.len();
            let (status, body) = vantiq.try_command(CLUSTER, "deploy", request.clone()).await;
            assert_eq!(status, 400, "{body}");
            let message = body[0]["message"].as_str().unwrap();
            assert!(message.contains(field), "{message}");
            assert_eq!(vantiq.workitems().await.len(), before, "no workitem");

            // As handed over by a server that does not validate.
            let ns_vantiq = stack.control_plane.config.bootstrap_namespace.clone();
            let row = store
                .transaction(move |tx| {
                    workitems::insert(
                        tx,
                        &NewWorkitem {
                            namespace: ns_vantiq,
                            cluster: CLUSTER.into(),
                            installation: installation.into(),
                            operation: "deploy".into(),
                            request,
                            requested_by: "admin".into(),
                            traceparent: None,
                        },
                    )
                })
                .await
                .unwrap();
            let item = vantiq
                .wait_workitem(&row.request_id, WAIT, |item| {
                    item.is_some_and(|i| i["status"] == "INVALID")
                })
                .await
                .unwrap();
            let message = item["message"].as_str().unwrap();
            assert!(message.contains(field), "{message}");
            assert!(vantiq.installation(installation).await.is_none());
            assert_eq!(
                objects(&admin, &ns, installation).await,
                Vec::<String>::new()
            );
        }
        assert!(
            stack.planner.log.calls().is_empty(),
            "the planner was never asked"
        );
        assert_eq!(stack.executor.calls().writes(), 0, "nothing was written");
        let summary = gateway.stop().await;
        assert_eq!(summary.failed, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn verify_after_an_out_of_band_configmap_deletion_marks_the_installation_damaged() {
    with_temp_ns("e2e-verify", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |config| {
            config.verify_interval = Duration::from_secs(2);
        })
        .await;
        let _gateway = stack.gateway();
        let vantiq = &stack.admin;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "hello"))
            .await;
        vantiq.wait_status("web", "RUNNING", WAIT).await;
        // Periodic verifies of the intact installation keep it RUNNING.
        let record = vantiq
            .wait_installation("web", WAIT, |r| {
                r.is_some_and(|r| r["lastVerifiedAt"].is_string())
            })
            .await
            .unwrap();
        assert_eq!(record["installationStatus"], "RUNNING", "{record}");

        Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .delete("vantiq-web-configmap-0", &DeleteParams::default())
            .await
            .unwrap();
        let record = vantiq.wait_status("web", "DAMAGED", WAIT).await;
        let state = record["k8sState"].as_str().unwrap();
        assert!(state.contains("vantiq-web-configmap-0"), "{state}");
        assert!(state.contains("missing"), "{state}");
        assert!(
            Api::<ConfigMap>::namespaced(admin.clone(), &ns)
                .get_opt("vantiq-web-configmap-0")
                .await
                .unwrap()
                .is_none(),
            "verify reports, it does not repair"
        );

        // A deploy repairs it.
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "hello"))
            .await;
        vantiq.wait_status("web", "RUNNING", WAIT).await;
        assert!(
            Api::<ConfigMap>::namespaced(admin.clone(), &ns)
                .get_opt("vantiq-web-configmap-0")
                .await
                .unwrap()
                .is_some()
        );
    })
    .await;
}

/// Issue 14: with the periodic verify off, an admin asks for a verify of one
/// installation; it runs through the gateway, planner and executor like the
/// periodic one and its result lands on the record — with the claim protocol,
/// and in REST mode against a strict control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn verify_on_demand_reports_an_out_of_band_deletion() {
    verify_on_demand(Protocol::Claim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn rest_mode_verify_on_demand_reports_an_out_of_band_deletion() {
    verify_on_demand(Protocol::Rest).await;
}

async fn verify_on_demand(protocol: Protocol) {
    with_temp_ns("e2e-verify-now", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |config| {
            config.verify_interval = Duration::ZERO;
            config.vantiq_strict = protocol == Protocol::Rest;
        })
        .await;
        let _gateway = stack.gateway();
        let vantiq = &stack.admin;
        vantiq
            .command(
                CLUSTER,
                "deploy",
                deploy_for(protocol, "web", &ns, 1, "hello"),
            )
            .await;
        let record = vantiq.wait_status("web", "RUNNING", WAIT).await;
        assert!(record.get("lastVerifiedAt").is_none(), "{record}");

        Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .delete("vantiq-web-configmap-0", &DeleteParams::default())
            .await
            .unwrap();
        let item = vantiq
            .installation_command("web", "verify", json!({}))
            .await;
        assert_eq!(item["operation"], "verify", "{item}");
        assert_ne!(item["requestedBy"], "system", "{item}");
        let record = vantiq.wait_status("web", "DAMAGED", WAIT).await;
        let state = record["k8sState"].as_str().unwrap();
        assert!(state.contains("vantiq-web-configmap-0"), "{state}");
        assert!(record["lastVerifiedAt"].is_string(), "{record}");
        let request_id = item["requestId"].as_str().unwrap();
        assert_eq!(vantiq.workitem(request_id).await, None, "done and deleted");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn two_gateways_on_one_cluster_process_every_workitem_exactly_once() {
    with_temp_ns("e2e-two-gateways", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let first = stack.gateway();
        let second = stack.gateway();
        let vantiq = &stack.admin;
        let mut requested = Vec::new();
        for i in 0..8 {
            let item = vantiq
                .command(
                    CLUSTER,
                    "deploy",
                    sample_deploy(&format!("app{i}"), &ns, 1, "x"),
                )
                .await;
            requested.push(item["requestId"].as_str().unwrap().to_owned());
        }
        for i in 0..8 {
            vantiq
                .wait_status(&format!("app{i}"), "RUNNING", WAIT)
                .await;
        }
        // A gateway records a completion after the control plane answered it,
        // a moment after the installation shows RUNNING.
        let deadline = std::time::Instant::now() + WAIT;
        while first.completed().len() + second.completed().len() < requested.len()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (a, b) = (first.completed(), second.completed());
        let mut all: Vec<String> = a.iter().chain(&b).cloned().collect();
        all.sort();
        requested.sort();
        assert_eq!(
            all, requested,
            "every workitem completed once, by one gateway"
        );
        assert!(a.iter().all(|id| !b.contains(id)));
        for (id, count) in stack.planner.log.counts() {
            assert_eq!(count, 1, "workitem {id} executed {count} times");
        }
        assert!(vantiq.workitems().await.is_empty());
        eprintln!("first gateway: {} workitems, second: {}", a.len(), b.len());
        let (a, b) = (first.stop().await, second.stop().await);
        assert_eq!(a.abandoned + b.abandoned + a.released + b.released, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_gateway_killed_mid_operation_loses_its_lease_and_another_completes() {
    with_temp_ns("e2e-kill", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;
        let mut doomed = stack.gateway();
        // The first Execute takes 3 s before it starts: the gateway is killed inside it.
        stack.planner.log.hold_next(Duration::from_secs(3));
        let item = vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 2, "hello"))
            .await;
        let id = item["requestId"].as_str().unwrap().to_owned();
        let claimed = vantiq
            .wait_workitem(&id, WAIT, |item| {
                item.is_some_and(|i| i["status"] == "PENDING")
            })
            .await
            .unwrap();
        assert_eq!(claimed["leaseOwner"], doomed.worker_id.as_str());
        eventually("the planner to be executing", WAIT, || {
            let calls = stack.planner.log.calls();
            async move { (!calls.is_empty()).then_some(()) }
        })
        .await;
        doomed.kill();

        // The lease (5 s) expires; a second gateway claims and completes it.
        let rescuer = stack.gateway();
        let record = vantiq.wait_status("web", "RUNNING", WAIT).await;
        assert_eq!(rescuer.completed(), std::slice::from_ref(&id));
        assert!(doomed.completed().is_empty());
        assert_eq!(
            stack.planner.log.counts()[&id],
            2,
            "executed by both, applied idempotently"
        );
        // Nothing duplicated: one StatefulSet, written once, the pods it asks for.
        let sts = statefulset(&admin, &ns, "web").await.unwrap();
        assert_eq!(
            record["k8sInstallationIdentifier"],
            sts.uid().unwrap().as_str()
        );
        assert_eq!(
            sts.metadata.generation,
            Some(1),
            "the StatefulSet was written once"
        );
        eventually("2 ready pods", WAIT, || {
            let admin = admin.clone();
            let ns = ns.clone();
            async move { (ready_pods(&admin, &ns, "web").await == 2).then_some(()) }
        })
        .await;
        assert!(vantiq.workitems().await.is_empty());
        let summary = rescuer.stop().await;
        assert_eq!(summary.completed, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_control_plane_restarted_mid_flight_loses_nothing() {
    with_temp_ns("e2e-cp-restart", |admin, ns| async move {
        let mut stack = Stack::start(&admin, &ns, |config| {
            config.default_lease = Duration::from_secs(30);
        })
        .await;
        let mut config = stack.gateway_config();
        config.lease = Duration::from_secs(30);
        let gateway = RunningGateway::start(config);
        let vantiq = stack.admin.clone();
        // One operation in flight (held 3 s in the planner), two queued.
        stack.planner.log.hold_next(Duration::from_secs(3));
        let mut ids = Vec::new();
        for name in ["one", "two", "three"] {
            let item = vantiq
                .command(CLUSTER, "deploy", sample_deploy(name, &ns, 1, "x"))
                .await;
            ids.push(item["requestId"].as_str().unwrap().to_owned());
        }
        eventually("the first deploy in flight", WAIT, || {
            let calls = stack.planner.log.calls();
            async move { (!calls.is_empty()).then_some(()) }
        })
        .await;

        stack.control_plane.stop().await;
        // Down for longer than the in-flight operation: its report must wait.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stack.control_plane.restart().await;

        for name in ["one", "two", "three"] {
            vantiq.wait_status(name, "RUNNING", WAIT).await;
        }
        assert!(vantiq.workitems().await.is_empty());
        let mut completed = gateway.completed();
        completed.sort();
        ids.sort();
        assert_eq!(completed, ids, "each completed exactly once");
        for (id, count) in stack.planner.log.counts() {
            assert_eq!(count, 1, "workitem {id} executed {count} times");
        }
        let summary = gateway.stop().await;
        assert_eq!(summary.completed, 3, "{summary:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn sigterm_finishes_the_current_workitem_or_releases_it_after_the_grace_period() {
    with_temp_ns("e2e-sigterm", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;

        // Within the grace period: finished and reported.
        let gateway = stack.gateway();
        stack.planner.log.hold_next(Duration::from_secs(2));
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("finished", &ns, 1, "x"))
            .await;
        eventually("the deploy in flight", WAIT, || {
            let calls = stack.planner.log.calls();
            async move { (calls.len() == 1).then_some(()) }
        })
        .await;
        let summary = gateway.stop().await;
        assert_eq!(summary.completed, 1, "{summary:?}");
        assert_eq!(
            vantiq.installation("finished").await.unwrap()["installationStatus"],
            "RUNNING"
        );

        // Beyond the grace period: released at once, and done by the next gateway.
        let mut config = stack.gateway_config();
        config.shutdown_grace = Duration::from_millis(500);
        let gateway = RunningGateway::start(config);
        stack.planner.log.hold_next(Duration::from_secs(20));
        let item = vantiq
            .command(CLUSTER, "deploy", sample_deploy("released", &ns, 1, "x"))
            .await;
        let id = item["requestId"].as_str().unwrap().to_owned();
        eventually("the deploy in flight", WAIT, || {
            let calls = stack.planner.log.calls();
            async move { (calls.len() == 2).then_some(()) }
        })
        .await;
        let summary = gateway.stop().await;
        assert_eq!(summary.released, 1, "{summary:?}");
        let item = vantiq.workitem(&id).await.unwrap();
        assert_eq!(
            item["status"], "REQUESTED",
            "released, not left to expire: {item}"
        );

        // --once drains the queue and exits.
        let mut config = stack.gateway_config();
        config.once = true;
        let summary = RunningGateway::start(config).finished().await.unwrap();
        assert_eq!(summary.completed, 1, "{summary:?}");
        vantiq.wait_status("released", "RUNNING", WAIT).await;
        assert!(vantiq.workitems().await.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn two_vantiq_namespaces_share_one_kubernetes_cluster() {
    with_temp_ns("e2e-tenant-a", |admin, ns_a| async move {
        let ns_b = create_namespace(&admin, "e2e-tenant-b").await;
        let identity_a = ExecutorIdentity::create(&admin, &ns_a).await;
        let identity_b = ExecutorIdentity::create(&admin, &ns_b).await;
        // Each executor allows its team's tenant only.
        let tenant_a = Tenant::new("team-a", "shared").unwrap();
        let tenant_b = Tenant::new("team-b", "shared").unwrap();
        let executor_a = RunningExecutor::allowing(&identity_a, &[tenant_a]).await;
        let executor_b = RunningExecutor::allowing(&identity_b, &[tenant_b]).await;
        let control_plane = k8sworker_e2e::ControlPlane::start(|_| {}).await;
        let planner = RunningPlanner::start(&[
            (ns_a.as_str(), executor_a.endpoint()),
            (ns_b.as_str(), executor_b.endpoint()),
        ])
        .await;
        let system = control_plane.admin().await;
        let team_a: Vantiq = system
            .create_namespace("team-a", "alice", "alice-password")
            .await;
        let team_b: Vantiq = system
            .create_namespace("team-b", "bob", "bob-password-1")
            .await;
        // The same cluster name in both namespaces: one K8sCluster object each.
        team_a.create_cluster("shared").await;
        team_b.create_cluster("shared").await;
        let token_a = team_a.worker_token("gateway").await;
        let token_b = team_b.worker_token("gateway").await;
        let gateway = |vantiq_namespace: &str, token| {
            let mut config = gateway_config("shared", &control_plane.url(), token, &planner.url());
            config.vantiq_namespace = vantiq_namespace.into();
            RunningGateway::start(config)
        };
        let gateway_a = gateway("team-a", &token_a);
        let gateway_b = gateway("team-b", &token_b);

        team_a
            .command("shared", "deploy", sample_deploy("alpha", &ns_a, 1, "a"))
            .await;
        team_b
            .command("shared", "deploy", sample_deploy("beta", &ns_b, 1, "b"))
            .await;
        team_a.wait_status("alpha", "RUNNING", WAIT).await;
        team_b.wait_status("beta", "RUNNING", WAIT).await;

        let seen = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(seen(team_a.installations().await), ["alpha"]);
        assert_eq!(seen(team_b.installations().await), ["beta"]);
        assert!(team_a.installation("beta").await.is_none());
        assert_eq!(gateway_a.completed().len(), 1);
        assert_eq!(gateway_b.completed().len(), 1);
        assert!(statefulset(&admin, &ns_a, "alpha").await.is_some());
        assert!(statefulset(&admin, &ns_b, "beta").await.is_some());
        assert!(statefulset(&admin, &ns_a, "beta").await.is_none());

        // A's token cannot see or complete B's work.
        let (status, _) = team_a.get("/api/v1/resources/k8sinstallations/beta").await;
        assert_eq!(status, 404);

        let (a, b) = (gateway_a.stop().await, gateway_b.stop().await);
        assert_eq!((a.completed, b.completed), (1, 1));
        drop((executor_a, executor_b));
        delete_namespace(&admin, &ns_b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn an_operation_the_executor_cannot_do_fails_with_its_message() {
    with_temp_ns("e2e-failure", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let _gateway = stack.gateway();
        let vantiq = &stack.admin;
        // An object with a generated name that k8sworker does not own.
        let foreign: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "vantiq-web-configmap-0"},
            "data": {"owner": "someone else"}
        }))
        .unwrap();
        k8sworker_testsupport::identity::apply(&admin, &ns, &foreign).await;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "x"))
            .await;
        let record = vantiq.wait_status("web", "FAILED", WAIT).await;
        let state = record["k8sState"].as_str().unwrap();
        assert!(state.contains("vantiq-web-configmap-0"), "{state}");
        let items = vantiq.workitems().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["status"], "FAILED");
        assert!(statefulset(&admin, &ns, "web").await.is_none());

        // A namespace without an executor: FAILED, naming what to install.
        vantiq
            .command(
                CLUSTER,
                "deploy",
                sample_deploy("elsewhere", "no-executor-here", 1, "x"),
            )
            .await;
        let record = vantiq.wait_status("elsewhere", "FAILED", WAIT).await;
        assert!(
            record["k8sState"]
                .as_str()
                .unwrap()
                .contains("no executor is installed for namespace `no-executor-here`"),
            "{record}"
        );
    })
    .await;
}

/// Issue 12, case 10: a deploy is refused (a routing label changes a
/// StatefulSet's selector, which is immutable: the planner refuses the plan
/// before any write, issue 12 case 3). The refusal's message reaches the
/// workitem's failure record and the installation's, on the first attempt:
/// no endless re-claiming, and the undeploy queued behind it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_refused_write_reaches_the_failure_record_with_its_message() {
    with_temp_ns("e2e-refused", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let gateway = stack.gateway();
        let vantiq = &stack.admin;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "x"))
            .await;
        vantiq.wait_status("web", "RUNNING", WAIT).await;

        let versions = || async {
            let params = ListParams::default().labels(&k8sworker_core::labels::selector("web"));
            let mut versions = Vec::new();
            for service in Api::<Service>::namespaced(admin.clone(), &ns)
                .list_metadata(&params)
                .await
                .unwrap()
            {
                versions.push((service.name_any(), service.resource_version()));
            }
            for sts in Api::<StatefulSet>::namespaced(admin.clone(), &ns)
                .list_metadata(&params)
                .await
                .unwrap()
            {
                versions.push((sts.name_any(), sts.resource_version()));
            }
            versions
        };
        let before = versions().await;
        let mut relabelled = sample_deploy("web", &ns, 1, "x");
        relabelled["config"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "label", "name": "app", "value": "web", "controlsRouting": true}));
        let item = vantiq.command(CLUSTER, "deploy", relabelled).await;
        let request_id = item["requestId"].as_str().unwrap();
        let failed = vantiq
            .wait_workitem(request_id, WAIT, |item| {
                item.is_some_and(|i| i["status"] == "FAILED")
            })
            .await
            .expect("kept as FAILED");
        let message = failed["message"].as_str().unwrap();
        eprintln!("failure message ({} bytes): {message}", message.len());
        assert!(
            message.contains("StatefulSet/web field `spec.selector` would change"),
            "names the object and field: {message}"
        );
        assert!(
            message.contains("undeploy the installation, then deploy it again"),
            "says what to do: {message}"
        );
        assert!(
            message.len() <= k8sworker_client::protocol::MAX_PARAM_BYTES,
            "{}",
            message.len()
        );
        assert_eq!(failed["attempts"], 1, "reported on the first attempt");
        assert_eq!(versions().await, before, "refused before any write");
        let record = vantiq.installation("web").await.unwrap();
        assert_eq!(record["installationStatus"], "FAILED");
        assert_eq!(record["k8sState"], message);

        // The installation is not stuck: an undeploy behind it runs.
        vantiq
            .installation_command("web", "undeploy", json!({}))
            .await;
        vantiq
            .wait_installation("web", WAIT, |record| record.is_none())
            .await;
        assert_eq!(objects(&admin, &ns, "web").await, Vec::<String>::new());
        let summary = gateway.stop().await;
        assert_eq!(summary.failed, 1, "{summary:?}");
        assert_eq!(summary.released + summary.abandoned, 0, "{summary:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_pending_workitem_cancelled_before_execute_is_never_applied() {
    with_temp_ns("e2e-cancel", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;
        // A planner that says NOT_SERVING (starting, draining): the gateway
        // claims, then waits before Execute, renewing its lease.
        stack.planner.set_serving(false).await;
        let gateway = stack.gateway();
        let item = vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "hello"))
            .await;
        let id = item["requestId"].as_str().unwrap().to_owned();
        vantiq
            .wait_workitem(&id, WAIT, |item| {
                item.is_some_and(|i| i["status"] == "PENDING")
            })
            .await
            .unwrap();
        let (status, body) = vantiq
            .delete(&format!("/api/v1/resources/k8sworkitems/{id}"))
            .await;
        assert_eq!(status, 204, "{body}");

        // The gateway learns it at its next renewal (every ≤ 2 s) and stops.
        let cancelled_at = std::time::Instant::now();
        eventually("the gateway to report the cancellation", WAIT, || {
            let events = gateway.events();
            let id = id.clone();
            async move {
                events
                    .iter()
                    .any(|event| {
                        matches!(event, k8sworker_gateway::Event::Reported {
                            request_id,
                            report: k8sworker_gateway::Report::Cancelled { .. },
                            ..
                        } if *request_id == id)
                    })
                    .then_some(())
            }
        })
        .await;
        let learned = cancelled_at.elapsed();
        assert!(
            learned < Duration::from_secs(5),
            "learned after {learned:?}"
        );
        // Never executed, nothing in the cluster, no record, no workitem.
        assert!(stack.planner.log.calls().is_empty());
        assert_eq!(objects(&admin, &ns, "web").await, Vec::<String>::new());
        assert_eq!(vantiq.installation("web").await, None);
        assert_eq!(vantiq.workitem(&id).await, None);

        // The gateway goes on with the next workitem once the planner serves.
        stack.planner.set_serving(true).await;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "hello"))
            .await;
        vantiq.wait_status("web", "RUNNING", WAIT).await;
        let summary = gateway.stop().await;
        assert_eq!((summary.cancelled, summary.completed), (1, 1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_workitem_cancelled_while_it_executes_finishes_and_records_its_outcome() {
    with_temp_ns("e2e-cancel-late", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;
        let gateway = stack.gateway();
        // The Execute takes 3 s before it starts: the cancellation arrives
        // while the planner holds it, after the gateway's last word.
        stack.planner.log.hold_next(Duration::from_secs(3));
        let item = vantiq
            .command(CLUSTER, "deploy", sample_deploy("web", &ns, 1, "hello"))
            .await;
        let id = item["requestId"].as_str().unwrap().to_owned();
        eventually("the planner to be executing", WAIT, || {
            let calls = stack.planner.log.calls();
            async move { (!calls.is_empty()).then_some(()) }
        })
        .await;
        let (status, body) = vantiq
            .delete(&format!("/api/v1/resources/k8sworkitems/{id}"))
            .await;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            vantiq
                .workitem(&id)
                .await
                .map(|item| item["status"].clone()),
            Some(json!("CANCELLED"))
        );
        // The operation finished; its outcome is recorded against the
        // cancelled workitem: the record says what the cluster has.
        let record = vantiq.wait_status("web", "RUNNING", WAIT).await;
        let sts = statefulset(&admin, &ns, "web").await.unwrap();
        assert_eq!(
            record["k8sInstallationIdentifier"],
            sts.uid().unwrap().as_str()
        );
        vantiq.wait_workitem(&id, WAIT, |item| item.is_none()).await;
        assert_eq!(gateway.completed(), vec![id]);
        gateway.stop().await;
    })
    .await;
}

/// REST mode cannot read secret values: a deploy with `@secrets(...)`
/// fails as `INVALID`, saying the claim protocol is needed, and nothing
/// reaches the cluster or the installation records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn rest_mode_refuses_a_deploy_with_secrets_as_invalid_and_writes_nothing() {
    with_temp_ns("e2e-rest-secrets", |admin, ns| async move {
        let stack = stack_for(Protocol::Rest, &admin, &ns).await;
        let vantiq = &stack.admin;
        let (status, body) = vantiq
            .post(
                "/api/v1/resources/secrets",
                json!({"name": "db-pass", "secret": "hunter2"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let mut config = stack.gateway_config();
        config.protocol = Protocol::Rest;
        let gateway = RunningGateway::start(config);
        let mut deploy = deploy_for(Protocol::Rest, "vault", &ns, 1, "hi");
        deploy["config"].as_array_mut().unwrap().push(
            json!({"type": "environmentVariable", "name": "DB_PASS", "value": "@secrets(db-pass)"}),
        );
        let item = vantiq.command(CLUSTER, "deploy", deploy).await;
        let id = item["requestId"].as_str().unwrap().to_owned();
        let failed = vantiq
            .wait_workitem(&id, WAIT, |item| {
                item.is_some_and(|item| item["status"] == "INVALID")
            })
            .await
            .unwrap();
        let message = failed["message"].as_str().unwrap_or_default();
        assert!(message.contains("@secrets(db-pass)"), "{failed}");
        assert!(message.contains("--protocol claim"), "{failed}");
        assert!(!message.contains("hunter2"), "{failed}");
        assert_eq!(vantiq.installation("vault").await, None);
        assert_eq!(objects(&admin, &ns, "vault").await, Vec::<String>::new());
        let summary = gateway.stop().await;
        assert_eq!(summary.failed, 1, "{summary:?}");
        assert_eq!(summary.completed, 0, "{summary:?}");
    })
    .await;
}

/// The CronJob form: a gateway with `--once` takes the queued workitem,
/// completes it and exits, in REST mode against a strict control plane and
/// in claim mode; a second run finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_cronjob_form_processes_the_queued_workitem_and_exits() {
    for protocol in [Protocol::Rest, Protocol::Claim] {
        with_temp_ns("e2e-once", |admin, ns| async move {
            let stack = stack_for(protocol, &admin, &ns).await;
            let vantiq = &stack.admin;
            request_deploy(vantiq, protocol, "cron", &ns, 1, "tick").await;
            let mut config = stack.gateway_config();
            config.once = true;
            config.protocol = protocol;
            let summary = RunningGateway::start(config.clone())
                .finished()
                .await
                .unwrap();
            assert_eq!(summary.completed, 1, "{protocol:?}: {summary:?}");
            assert_eq!(summary.processed(), 1, "{protocol:?}: {summary:?}");
            let record = vantiq.installation("cron").await.unwrap();
            assert_eq!(record["installationStatus"], "RUNNING", "{record}");
            assert!(vantiq.workitems().await.is_empty());
            assert!(statefulset(&admin, &ns, "cron").await.is_some());
            let again = RunningGateway::start(config).finished().await.unwrap();
            assert_eq!(again.processed(), 0, "{protocol:?}: {again:?}");
        })
        .await;
    }
}

/// REST mode keeps an installation's operations in the order they were
/// asked for (two deploys queued before the gateway runs: the later one
/// wins), and leaves alone a workitem another worker has marked `PENDING`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn rest_mode_keeps_an_installations_order_and_leaves_a_taken_workitem_alone() {
    with_temp_ns("e2e-rest-order", |admin, ns| async move {
        let stack = stack_for(Protocol::Rest, &admin, &ns).await;
        let vantiq = &stack.admin;
        request_deploy(vantiq, Protocol::Rest, "ordered", &ns, 1, "first").await;
        request_deploy(vantiq, Protocol::Rest, "ordered", &ns, 2, "second").await;
        let taken = request_deploy(vantiq, Protocol::Rest, "taken", &ns, 1, "x").await;
        let taken = taken["requestId"].as_str().unwrap();
        // Another worker took it.
        let other = k8sworker_client::Client::builder(&stack.control_plane.url())
            .token(stack.worker_token.clone())
            .build()
            .unwrap();
        other
            .update("k8sworkitems", taken, &json!({"status": "PENDING"}))
            .await
            .unwrap();

        let mut config = stack.gateway_config();
        config.once = true;
        config.protocol = Protocol::Rest;
        let summary = RunningGateway::start(config).finished().await.unwrap();
        assert_eq!(summary.completed, 2, "{summary:?}");
        assert_eq!(summary.processed(), 2, "{summary:?}");
        let record = vantiq.installation("ordered").await.unwrap();
        assert_eq!(record["replicaCount"], 2, "the later deploy last: {record}");
        assert_eq!(record["configSpec"][1]["content"], "greeting=second\n");
        let content = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
            .get("vantiq-ordered-configmap-0")
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(content["app.properties"], "greeting=second\n");
        let left = vantiq.workitem(taken).await.unwrap();
        assert_eq!(left["status"], "PENDING", "{left}");
        assert_eq!(vantiq.installation("taken").await, None);
        assert_eq!(objects(&admin, &ns, "taken").await, Vec::<String>::new());
    })
    .await;
}
