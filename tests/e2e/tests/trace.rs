//! One trace from the REST request to the Kubernetes API calls: the control
//! plane's request span stores its `traceparent` on the workitem; the gateway
//! continues it (`workitem.process`); the planner and the executor join over
//! gRPC metadata; the executor adds one span per step and per API call.
//! The deploy's operation history record names that trace and its steps.
//!
//! Its own test binary: it installs the process-wide OTLP pipeline to the
//! test cluster's Jaeger, which every in-process component then uses.

use std::time::Duration;

use k8sworker_e2e::{CLUSTER, Stack, sample_deploy};
use k8sworker_testsupport::{TestCluster, eventually, jaeger, with_temp_ns};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

async fn export_to_jaeger() -> SdkTracerProvider {
    let provider = jaeger::exporting_provider("k8sworker-e2e").await;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("k8sworker-e2e"))
        .with_filter(EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init()
        .expect("the only subscriber of this test binary");
    provider
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh) and its Jaeger"]
async fn one_trace_spans_control_plane_gateway_planner_and_executor() {
    let provider = export_to_jaeger().await;
    let flusher = provider.clone();
    with_temp_ns("e2e-trace", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let gateway = stack.gateway();
        let vantiq = &stack.admin;
        let item = vantiq
            .command(CLUSTER, "deploy", sample_deploy("traced", &ns, 1, "hi"))
            .await;
        let traceparent = item["traceparent"]
            .as_str()
            .expect("the workitem names its trace");
        let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();
        vantiq
            .wait_status("traced", "RUNNING", Duration::from_secs(60))
            .await;
        gateway.stop().await;
        flusher.force_flush().expect("spans flushed");

        let query = TestCluster::get().await.jaeger_query_url();
        // Span names per the OpenTelemetry semantic conventions: an HTTP
        // server span is `{method} {route template}`, a gRPC one
        // `{service}/{method}`.
        let expected = [
            "POST /api/v1/resources/k8sclusters/{name}/command",
            "workitem.process",
            "k8sworker.v1.Planner/Execute",
            "execute",
            "k8sworker.v1.Executor/Observe",
            "k8sworker.v1.Executor/Apply",
            "apply",
            "POST /api/v1/resources/procedures/{name}",
        ];
        let spans = eventually("the whole trace in Jaeger", Duration::from_secs(30), || {
            let (query, trace_id) = (query.clone(), trace_id.clone());
            async move {
                let spans = jaeger::spans(&query, &trace_id).await;
                expected
                    .iter()
                    .all(|want| spans.iter().any(|span| span.name == *want))
                    .then_some(spans)
            }
        })
        .await;
        let names: Vec<String> = spans.iter().map(|span| span.name.clone()).collect();
        let tags = |name: &str, key: &str, value: &str| {
            spans.iter().any(|span| {
                span.name == name && span.tags.get(key).map(String::as_str) == Some(value)
            })
        };
        let command = "POST /api/v1/resources/k8sclusters/{name}/command";
        for (key, value) in [
            ("http.request.method", "POST"),
            ("http.route", "/api/v1/resources/k8sclusters/{name}/command"),
            ("url.path", "/api/v1/resources/k8sclusters/c1/command"),
            ("http.response.status_code", "200"),
            ("span.kind", "server"),
        ] {
            assert!(
                tags(command, key, value),
                "{command}: {key}={value}: {spans:#?}"
            );
        }
        assert!(
            tags(
                "POST /api/v1/resources/procedures/{name}",
                "url.path",
                "/api/v1/resources/procedures/K8sManager.completeWorkitem"
            ),
            "{spans:#?}"
        );
        // Each gRPC call is a client span (the gateway's, the planner's)
        // and its server span, both with the rpc.* attributes. The status
        // is on both spans of a call that ends with one; Apply's client
        // stops reading at the Ack and hangs up, so the stream may end
        // before its trailers are written and neither side records one.
        for (name, service, method, ends_with_status) in [
            (
                "k8sworker.v1.Planner/Execute",
                "k8sworker.v1.Planner",
                "Execute",
                true,
            ),
            (
                "k8sworker.v1.Executor/Apply",
                "k8sworker.v1.Executor",
                "Apply",
                false,
            ),
        ] {
            for kind in ["client", "server"] {
                let status = ends_with_status.then_some("0");
                let found = spans.iter().any(|span| {
                    let tag = |key: &str| span.tags.get(key).map(String::as_str);
                    span.name == name
                        && tag("span.kind") == Some(kind)
                        && tag("rpc.system") == Some("grpc")
                        && tag("rpc.service") == Some(service)
                        && tag("rpc.method") == Some(method)
                        && status.is_none_or(|status| tag("rpc.grpc.status_code") == Some(status))
                });
                assert!(found, "{name} ({kind}): {spans:#?}");
            }
        }
        // No span is named for a raw path (unbounded cardinality).
        assert!(
            !names.iter().any(|n| n.contains("/k8sclusters/c1/")),
            "{names:?}"
        );
        eprintln!("trace {trace_id}: {} spans", names.len());
        // One span per step of the plan and per Kubernetes API call.
        let steps: Vec<&String> = names.iter().filter(|n| n.starts_with("CREATE ")).collect();
        assert!(
            steps
                .iter()
                .any(|n| n.contains(&format!("StatefulSet {ns}/traced"))),
            "{names:?}"
        );
        assert!(steps.len() >= 5, "one span per created object: {steps:?}");
        assert!(
            names.iter().any(|n| n == "patch statefulsets"),
            "Kubernetes API calls are spans: {names:?}"
        );

        // The operation history keeps the deploy after its workitem is
        // gone: the plan's steps the gateway reported, and the trace id
        // Jaeger has the whole trace under.
        let request_id = item["requestId"].as_str().unwrap();
        let (status, record) = vantiq
            .get(&format!("/api/v1/resources/k8soperations/{request_id}"))
            .await;
        assert_eq!(status, 200, "{record}");
        assert_eq!(record["outcome"], "SUCCEEDED", "{record}");
        assert_eq!(record["op"], "deploy");
        assert_eq!(record["namespace"], ns.as_str());
        assert_eq!(record["traceId"], trace_id.as_str(), "{record}");
        let steps = record["steps"].as_array().expect("steps");
        assert!(
            steps.iter().any(|step| step["action"] == "create"
                && step["kind"] == "StatefulSet"
                && step["name"] == "traced"),
            "{record}"
        );
        assert!(
            steps
                .iter()
                .all(|step| step["reason"].as_str().is_some_and(|r| !r.is_empty())),
            "every step says why: {record}"
        );
        for step in steps {
            let span = format!(
                "{} {} {ns}/{}",
                step["action"].as_str().unwrap().to_uppercase(),
                step["kind"].as_str().unwrap(),
                step["name"].as_str().unwrap()
            );
            assert!(
                names.contains(&span),
                "the recorded step {span} is a span of the trace: {names:?}"
            );
        }
    })
    .await;
    provider.shutdown().ok();
}
