//! Issue 12, case 6, end to end: a stuck rollout is fixed through Vantiq
//! alone. Deploy `orders` with 3 replicas, then an image that cannot be
//! pulled (`orders-2` goes to ImagePullBackOff, the installation FAILED),
//! then a good tag: the executor replaces `orders-2`, which the StatefulSet
//! controller never would, and the installation is RUNNING with 3 ready
//! replicas of the new revision.
//!
//! The fix's trace holds the replacement: a span `replace pod` naming the
//! pod, and its `delete pods` API call. Its own test binary: it installs the
//! process-wide OTLP pipeline to the test cluster's Jaeger.
//!
//! Run with `cargo test -p k8sworker-e2e --test rollout -- --ignored` on a
//! test cluster started by the current `tests/cluster/up.sh` (its kwok makes
//! `*-pullfail` images fail to pull).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use k8sworker_e2e::{CLUSTER, Stack, sample_deploy};
use k8sworker_testsupport::{
    TestCluster,
    cluster::{PULL_FAIL, require_failing_images},
    eventually, jaeger, with_temp_ns,
};
use kube::{Api, ResourceExt as _, api::ListParams};
use opentelemetry::trace::TracerProvider as _;
use serde_json::{Value, json};
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

const WAIT: Duration = Duration::from_secs(90);
const IMAGE: &str = "registry.example.com/k8sworker/orders";

fn orders(namespace: &str, tag: &str) -> Value {
    let mut request = sample_deploy("orders", namespace, 3, "hello");
    request["config"][0]["name"] = json!(format!("{IMAGE}:{tag}"));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_stuck_rollout_reaches_running_through_vantiq_alone() {
    let provider = jaeger::exporting_provider("k8sworker-e2e").await;
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("k8sworker-e2e"))
                .with_filter(EnvFilter::new("info")),
        )
        .try_init()
        .expect("the only subscriber of this test binary");
    let flusher = provider.clone();
    with_temp_ns("e2e-rollout", |admin, ns| async move {
        require_failing_images(&admin).await;
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let _gateway = stack.gateway();
        let vantiq = &stack.admin;

        vantiq.command(CLUSTER, "deploy", orders(&ns, "1")).await;
        vantiq.wait_status("orders", "RUNNING", WAIT).await;

        vantiq
            .command(CLUSTER, "deploy", orders(&ns, &format!("2{PULL_FAIL}")))
            .await;
        let record = vantiq.wait_status("orders", "FAILED", WAIT).await;
        let state = record["k8sState"].as_str().unwrap();
        assert!(state.contains("pod orders-2: ImagePullBackOff"), "{state}");
        let failing = Api::<Pod>::namespaced(admin.clone(), &ns)
            .get("orders-2")
            .await
            .expect("orders-2");

        let item = vantiq.command(CLUSTER, "deploy", orders(&ns, "3")).await;
        let trace_id = item["traceparent"]
            .as_str()
            .and_then(|traceparent| traceparent.split('-').nth(1))
            .expect("the workitem names its trace")
            .to_owned();
        let record = vantiq.wait_status("orders", "RUNNING", WAIT).await;
        assert_eq!(record["k8sState"], "Running: 3/3 replicas ready");
        assert_eq!(record["replicaCount"], 3);
        let replaced = &record["k8sInstallationInfo"]["replacedPods"];
        assert_eq!(replaced.as_array().map(Vec::len), Some(1), "{replaced}");
        assert_eq!(replaced[0]["pod"], "orders-2");
        assert_eq!(replaced[0]["reason"], "ImagePullBackOff");
        assert_eq!(
            replaced[0]["revision"].as_str(),
            failing
                .labels()
                .get("controller-revision-hash")
                .map(String::as_str)
        );

        let sts = Api::<StatefulSet>::namespaced(admin.clone(), &ns)
            .get("orders")
            .await
            .unwrap();
        let status = sts.status.unwrap();
        let update_revision = status.update_revision.unwrap();
        assert_eq!(replaced[0]["updateRevision"], update_revision.as_str());
        assert_eq!(
            (status.ready_replicas, status.updated_replicas),
            (Some(3), Some(3))
        );
        let pods = Api::<Pod>::namespaced(admin.clone(), &ns)
            .list(&ListParams::default().labels("k8sworker.io/installation=orders"))
            .await
            .unwrap()
            .items;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(live.len(), 3);
        for pod in live {
            assert_eq!(
                pod.labels().get("controller-revision-hash"),
                Some(&update_revision),
                "{} runs the fix",
                pod.name_any()
            );
            assert_eq!(
                pod.spec.as_ref().unwrap().containers[0].image.as_deref(),
                Some(format!("{IMAGE}:3").as_str())
            );
            assert_ne!(pod.uid(), failing.uid());
        }

        flusher.force_flush().expect("spans flushed");
        let query = TestCluster::get().await.jaeger_query_url();
        eventually("the replacement in the fix's trace", WAIT, || {
            let (query, trace_id) = (query.clone(), trace_id.clone());
            async move {
                let names = jaeger::span_names(&query, &trace_id).await;
                (names.iter().any(|n| n == "replace pod")
                    && names.iter().any(|n| n == "delete pods"))
                .then_some(())
            }
        })
        .await;
    })
    .await;
    provider.shutdown().ok();
}
