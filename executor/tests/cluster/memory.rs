//! The executor binary's resident memory, idle and holding N installations'
//! objects in its namespace (6 each: the reference workload's shape), and
//! how long a restart takes to be ready with them.
//!
//! The objects are written directly by the admin client, as k8sworker's
//! field manager would (server-side apply, the rendered objects), not
//! through plans, so the figure is the cache's and not the apply path's;
//! the StatefulSets run 0 replicas (no pods to create on a shared cluster)
//! and the port Services are headless (no ClusterIP to allocate).
//! N is `K8SWORKER_RSS_INSTALLATIONS` (default 100; issue 13's figure is
//! for 1,000), the binary `K8SWORKER_EXECUTOR_BIN` (default the debug
//! build; the figures worth reporting are a release build's).

use std::{process::Stdio, time::Duration};

use futures::StreamExt as _;
use k8sworker_core::labels;
use k8sworker_core::render::{self, Ancillaries, ClusterContext};
use k8sworker_proto::v1::{ObserveRequest, executor_client::ExecutorClient};
use k8sworker_testsupport::{ExecutorIdentity, eventually, pki, plans, with_temp_ns};
use k8sworker_tls::Identity;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
};
use tonic::transport::Channel;

use crate::process::rss_kib;

/// The executor binary serving `ns` on `port`.
fn spawn(identity: &ExecutorIdentity, ns: &str, port: u16) -> tokio::process::Child {
    let binary = std::env::var("K8SWORKER_EXECUTOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_k8sworker-executor").to_owned());
    tokio::process::Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--namespace", ns, "--health-listen", "127.0.0.1:0"])
        .arg("--tls-dir")
        .arg(pki::dir(&Identity::executor(ns.to_owned())))
        .env(
            "K8SWORKER_EXECUTOR_ALLOWED_TENANTS",
            plans::tenant().to_string(),
        )
        .env("KUBECONFIG", &identity.kubeconfig)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("K8SWORKER_EXECUTOR_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("executor binary starts")
}

/// Waits until the executor answers an Observe of `installation` with
/// `components` objects (its cache synced and holding them).
async fn observed(
    endpoint: &str,
    ns: &str,
    installation: &str,
    components: usize,
    within: Duration,
) -> ExecutorClient<Channel> {
    eventually("the executor's cache", within, || {
        let mut grpc = pki::executor_client(endpoint, ns, Some(&Identity::Planner));
        let (ns, installation) = (ns.to_owned(), installation.to_owned());
        async move {
            let found = grpc
                .observe(ObserveRequest {
                    namespace: ns,
                    installation,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (found.components.len() == components).then_some(grpc)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_executor_holds_installations_in_bounded_memory() {
    let count: usize = std::env::var("K8SWORKER_RSS_INSTALLATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    with_temp_ns("exec-memory", |admin, ns| async move {
        let identity = ExecutorIdentity::create(&admin, &ns).await;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let endpoint = format!("https://127.0.0.1:{port}");
        let mut child = spawn(&identity, &ns, port);
        observed(&endpoint, &ns, "nothing", 0, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_kib(child.id().unwrap());

        // N installations of 6 objects, as k8sworker renders them.
        let written = std::time::Instant::now();
        let cluster = ClusterContext {
            tenant: Some(plans::tenant()),
            ..ClusterContext::default()
        };
        let objects: Vec<serde_json::Value> = (0..count)
            .flat_map(|i| {
                let request = plans::deploy_request(
                    &format!("app-{i}"),
                    &ns,
                    0,
                    &[
                        serde_json::json!({"type": "environmentVariable", "name": "TOKEN", "value": "t0ken", "asSecret": true}),
                        serde_json::json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http", "host": "app.example.com"}),
                    ],
                );
                render::render(&plans::installation(&request), &cluster, &Ancillaries::default())
                    .expect("rendered")
                    .into_iter()
                    .map(|component| {
                        let mut object = component.object.to_json();
                        // The test cluster's service range holds a few
                        // hundred ClusterIPs: every Service is headless here.
                        if object["kind"] == "Service" {
                            object["spec"]["clusterIP"] = "None".into();
                            object["spec"]["type"] = "ClusterIP".into();
                            if let Some(ports) = object["spec"]["ports"].as_array_mut() {
                                ports.iter_mut().for_each(|port| drop(port.as_object_mut().map(|p| p.remove("nodePort"))));
                            }
                        }
                        object
                    })
            })
            .collect();
        assert_eq!(objects.len(), count * 6);
        let applied: Vec<()> = futures::stream::iter(objects)
            .map(|object| {
                let admin = admin.clone();
                let ns = ns.clone();
                async move {
                    let object: DynamicObject = serde_json::from_value(object).unwrap();
                    let types = object.types.clone().unwrap();
                    let kind = k8sworker_executor::kinds::Kind::from_type(&types.api_version, &types.kind)
                        .expect("a managed kind");
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        admin,
                        &ns,
                        &k8sworker_executor::kinds::api_resource(kind),
                    );
                    let name = object.metadata.name.clone().unwrap();
                    api.patch(&name, &PatchParams::apply(labels::MANAGER).force(), &Patch::Apply(&object))
                        .await
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert_eq!(applied.len(), count * 6);
        let last = format!("app-{}", count - 1);
        observed(&endpoint, &ns, &last, 6, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let holding = rss_kib(child.id().unwrap());
        let took = written.elapsed();

        // A restart: ready (its cache listed everything) in how long?
        child.kill().await.unwrap();
        let restarted = std::time::Instant::now();
        let child = spawn(&identity, &ns, port);
        observed(&endpoint, &ns, &last, 6, Duration::from_secs(60)).await;
        let ready = restarted.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after_restart = rss_kib(child.id().unwrap());
        eprintln!(
            "executor RSS: idle {idle} KiB; holding {count} installations ({} objects, written in {took:?}) \
             {holding} KiB; restarted and ready in {ready:?}, then {after_restart} KiB",
            count * 6
        );
        assert!(holding < 200 * 1024, "{holding} KiB");
    })
    .await;
}
