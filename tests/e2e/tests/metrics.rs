//! The `/metrics` endpoints while real work runs: a deploy and an unchanged
//! redeploy through control plane → gateway → planner → executor against
//! the test cluster move each component's counters by exactly what was
//! done; the text is OpenMetrics. The executor's gRPC reflection lists its
//! services.
//!
//! Its own test binary: the metrics registry is process-wide (as in each
//! component's binary), so no other test may move the counters meanwhile.
//! The control plane serves its metrics on its API port; the gateway, the
//! planner and the executor on the plain-HTTP listener their
//! `--metrics-addr` starts, which is started here the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8sworker_e2e::{CLUSTER, Stack, sample_deploy};
use k8sworker_testsupport::{eventually, jaeger, with_temp_ns};
use k8sworker_tls::Identity;
use kube::Api;
use kube::api::ListParams;

const WAIT: Duration = Duration::from_secs(60);

/// GETs `url`'s `/metrics`; checks the answer is OpenMetrics text.
async fn scrape(url: &str) -> Metrics {
    let (status, body) = jaeger::get(&format!("{url}/metrics"))
        .await
        .expect("metrics answer");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("UTF-8");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics ends in # EOF: {text}"
    );
    Metrics::parse(&text)
}

/// Samples by series (`name{labels}`), as exposed.
#[derive(Debug)]
struct Metrics {
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Every sample line is `series value`; every family has its `# TYPE`
    /// and `# HELP` before its samples.
    fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        let mut families: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                families.push((name.to_owned(), kind.to_owned()));
            } else if line.starts_with("# HELP ") {
                assert!(!line.ends_with(".."), "one full stop: {line}");
            } else if line == "# EOF" {
            } else if let Some(rest) = line.strip_prefix("# UNIT ") {
                assert!(rest.ends_with(" seconds"), "base units only: {line}");
            } else {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let name = series.split('{').next().unwrap();
                assert!(name.starts_with("k8sworker_"), "prefixed: {line}");
                assert!(
                    families
                        .iter()
                        .any(|(family, _)| name.starts_with(family.as_str())),
                    "{line} follows its # TYPE"
                );
                let value: f64 = value.parse().expect("a number");
                samples.insert(series.to_owned(), value);
            }
        }
        for (family, kind) in &families {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has help"
            );
            if kind == "counter" {
                assert!(
                    samples
                        .keys()
                        .all(|series| !series.starts_with(family.as_str())
                            || series.starts_with(&format!("{family}_total"))
                            || series.starts_with(&format!("{family}_created"))),
                    "counter {family} is exposed as _total"
                );
            }
        }
        Metrics { samples }
    }

    /// The value of `series` (`name{labels}` exactly as exposed), 0 when absent.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or_default()
    }

    /// The sum over every series of `name` whose labels contain all of
    /// `labels` (`key="value"` each).
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (family, rest) = series.split_once('{').unwrap_or((series, "}"));
                family == name && labels.iter().all(|label| rest.contains(label))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// What moved between two scrapes, per series.
fn delta(before: &Metrics, after: &Metrics, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

/// The installation's objects in the namespace.
async fn objects(admin: &kube::Client, ns: &str, installation: &str) -> usize {
    let params = ListParams::default().labels(&k8sworker_core::labels::selector(installation));
    Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .list_metadata(&params)
        .await
        .unwrap()
        .items
        .len()
        + Api::<Service>::namespaced(admin.clone(), ns)
            .list_metadata(&params)
            .await
            .unwrap()
            .items
            .len()
        + Api::<ConfigMap>::namespaced(admin.clone(), ns)
            .list_metadata(&params)
            .await
            .unwrap()
            .items
            .len()
        + Api::<Secret>::namespaced(admin.clone(), ns)
            .list_metadata(&params)
            .await
            .unwrap()
            .items
            .len()
        + Api::<Ingress>::namespaced(admin.clone(), ns)
            .list_metadata(&params)
            .await
            .unwrap()
            .items
            .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn metrics_count_a_deploy_and_an_unchanged_redeploy() {
    with_temp_ns("e2e-metrics", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        k8sworker_gateway::metrics::register();
        k8sworker_planner::metrics::register();
        k8sworker_executor::metrics::register();
        let listener = k8sworker_telemetry::metrics::spawn(
            Some("127.0.0.1:0".parse().unwrap()),
            std::future::pending(),
        )
        .await
        .unwrap()
        .expect("a metrics listener");
        let components = format!("http://{listener}");
        let control_plane = stack.control_plane.url();

        let before = scrape(&components).await;
        let cp_before = scrape(&control_plane).await;
        let calls_before = stack.executor.calls().snapshot();

        let gateway = stack.gateway();
        let vantiq = &stack.admin;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("counted", &ns, 1, "hi"))
            .await;
        vantiq.wait_status("counted", "RUNNING", WAIT).await;
        let created = objects(&admin, &ns, "counted").await;
        assert!(created >= 5, "{created} objects");
        let deployed = scrape(&components).await;
        vantiq
            .command(CLUSTER, "deploy", sample_deploy("counted", &ns, 1, "hi"))
            .await;
        let completed = r#"k8sworker_gateway_workitems_completed_total{operation="deploy"}"#;
        let redeployed = eventually("both deploys reported", WAIT, || {
            let (url, done) = (components.clone(), before.get(completed) + 2.0);
            async move {
                let now = scrape(&url).await;
                (now.get(completed) == done).then_some(now)
            }
        })
        .await;
        gateway.stop().await;
        let after = scrape(&components).await;
        let cp_after = scrape(&control_plane).await;

        // Gateway: two deploys claimed and completed, each timed once.
        let deploy = r#"{operation="deploy"}"#;
        for (series, moved) in [
            (
                format!("k8sworker_gateway_workitems_claimed_total{deploy}"),
                2.0,
            ),
            (
                format!("k8sworker_gateway_workitems_completed_total{deploy}"),
                2.0,
            ),
            (
                format!("k8sworker_gateway_workitem_pickup_seconds_count{deploy}"),
                2.0,
            ),
            (
                format!("k8sworker_gateway_workitem_end_to_end_seconds_count{deploy}"),
                2.0,
            ),
        ] {
            assert_eq!(delta(&before, &after, &series), moved, "{series}");
        }
        assert_eq!(after.get("k8sworker_gateway_workitems_in_flight"), 0.0);
        assert_eq!(
            after.sum("k8sworker_gateway_workitems_failed_total", &[]),
            0.0
        );

        // Control plane: the same two, seen from its side.
        for series in [
            format!("k8sworker_controlplane_workitems_claimed_total{deploy}"),
            format!("k8sworker_controlplane_workitems_completed_total{deploy}"),
        ] {
            assert_eq!(delta(&cp_before, &cp_after, &series), 2.0, "{series}");
        }

        // Planner: the first plan creates every object, the second changes
        // nothing.
        let steps = |m: &Metrics, action: &str| {
            m.get(&format!(
                r#"k8sworker_planner_plan_steps_total{{action="{action}"}}"#
            ))
        };
        assert_eq!(
            steps(&deployed, "create") - steps(&before, "create"),
            created as f64
        );
        assert_eq!(steps(&redeployed, "create"), steps(&deployed, "create"));
        assert_eq!(
            steps(&redeployed, "noop") - steps(&deployed, "noop"),
            created as f64
        );
        assert_eq!(
            delta(
                &before,
                &after,
                r#"k8sworker_planner_execute_duration_seconds_count{operation="deploy"}"#
            ),
            2.0
        );
        assert_eq!(after.get("k8sworker_planner_executions_in_flight"), 0.0);

        // Executor: every API request its own tally saw, by verb and
        // resource, whatever the status code; one timed apply per plan with
        // a write.
        // A request is counted in the metrics when its answer arrives, in
        // the tally when it is sent: they agree once nothing is in flight.
        let requests = "k8sworker_executor_api_requests_total";
        let disagreement = |now: &Metrics| {
            let calls = stack.executor.calls().snapshot();
            let mut seen = 0;
            let mut differ = Vec::new();
            for (call, n) in &calls {
                let moved = n - calls_before.get(call).copied().unwrap_or_default();
                let labels = [
                    format!(r#"verb="{}""#, call.verb),
                    format!(r#"resource="{}""#, call.resource),
                    format!(r#"dry_run="{}""#, call.dry_run),
                ];
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                let metric = now.sum(requests, &labels) - before.sum(requests, &labels);
                if metric != moved as f64 {
                    differ.push(format!("{call}: metric {metric}, tally {moved}"));
                }
                seen += moved;
            }
            let total = now.sum(requests, &[]) - before.sum(requests, &[]);
            if total != seen as f64 {
                differ.push(format!("all: metric {total}, tally {seen}"));
            }
            (seen, differ)
        };
        let (compared, _) = eventually(
            "API requests counted as the tally counts them",
            WAIT,
            || {
                let url = components.clone();
                let disagreement = &disagreement;
                async move {
                    let now = scrape(&url).await;
                    let (seen, differ) = disagreement(&now);
                    if !differ.is_empty() {
                        eprintln!("not yet: {differ:?}");
                    }
                    differ.is_empty().then_some((seen, now))
                }
            },
        )
        .await;
        assert!(compared > 0);
        assert!(
            after.sum(
                "k8sworker_executor_api_requests_total",
                &[r#"verb="patch""#, r#"code="200""#]
            ) + after.sum(
                "k8sworker_executor_api_requests_total",
                &[r#"verb="patch""#, r#"code="201""#]
            ) >= created as f64,
            "each created object's write answered 200/201"
        );
        assert!(
            delta(
                &before,
                &deployed,
                r#"k8sworker_executor_apply_duration_seconds_count{outcome="ok"}"#
            ) >= 1.0
        );
        assert_eq!(after.get("k8sworker_executor_applies_in_flight"), 0.0);
        assert!(
            after
                .samples
                .contains_key("k8sworker_executor_cache_objects")
        );

        // The executor's reflection answers its one caller, the planner, as
        // grpcurl asks: the services it serves.
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let channel = k8sworker_testsupport::pki::channel(
            &stack.executor.endpoint(),
            Some(&Identity::Planner),
            Identity::executor(ns.clone()),
        );
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([
                tonic_reflection::pb::v1::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                },
            ]))
            .await
            .expect("reflection answers the planner")
            .into_inner();
        let answer = answers.message().await.unwrap().expect("one answer");
        let Some(MessageResponse::ListServicesResponse(listed)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let mut names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
                "k8sworker.v1.Executor",
            ]
        );
    })
    .await;
}
