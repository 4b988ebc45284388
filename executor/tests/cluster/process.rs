//! The executor binary as it runs in a pod: its memory with 100
//! installations in its namespace, its traces in Jaeger, and a graceful stop.

use std::{process::Stdio, time::Duration};

use futures::StreamExt as _;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::ObserveRequest;
use k8sworker_testsupport::pki;
use k8sworker_testsupport::plans::GrpcExecutor;
use k8sworker_testsupport::{
    ExecutorIdentity, TestCluster, eventually, jaeger, plans, with_temp_ns,
};
use k8sworker_tls::Identity;

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_binary_serves_100_installations_traces_and_stops_gracefully() {
    with_temp_ns("exec-process", |admin, ns| async move {
        let cluster = TestCluster::get().await;
        let identity = ExecutorIdentity::create(&admin, &ns).await;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let service = format!("k8sworker-executor-{ns}");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_k8sworker-executor"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--namespace",
                &ns,
                "--health-listen",
                "127.0.0.1:0",
            ])
            // The executor's certificate from the tests' CA.
            .arg("--tls-dir")
            .arg(k8sworker_testsupport::pki::dir(&Identity::executor(
                ns.clone(),
            )))
            // The tests' tenant, through the variable (a list).
            .env(
                "K8SWORKER_EXECUTOR_ALLOWED_TENANTS",
                format!("other/c9,{}", k8sworker_testsupport::plans::tenant()),
            )
            .env("KUBECONFIG", &identity.kubeconfig)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", cluster.otlp_endpoint())
            .env("OTEL_SERVICE_NAME", &service)
            .env(
                "RUST_LOG",
                "warn,k8sworker_executor=info,k8sworker_telemetry=info",
            )
            .env_remove("K8SWORKER_EXECUTOR_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("executor binary starts");
        let pid = child.id().unwrap();
        let endpoint = format!("https://127.0.0.1:{port}");
        let grpc = eventually("the executor to listen", Duration::from_secs(20), || {
            let mut grpc = pki::executor_client(&endpoint, &ns, Some(&Identity::Planner));
            let ns = ns.clone();
            async move {
                grpc.observe(ObserveRequest {
                    namespace: ns,
                    installation: "nothing".into(),
                    ..Default::default()
                })
                .await
                .ok()
                .map(|_| grpc)
            }
        })
        .await;
        let executor = GrpcExecutor::new(pki::channel(
            &endpoint,
            Some(&Identity::Planner),
            Identity::executor(ns.clone()),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_kib(pid);

        // 100 installations, 8 at a time, each waiting for its StatefulSet.
        let started = std::time::Instant::now();
        let names: Vec<String> = (0..100).map(|i| format!("app-{i}")).collect();
        let deployed: Vec<_> = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let mut executor = executor.clone();
                let ns = ns.clone();
                async move {
                    let request = plans::deploy_request(&name, &ns, 1, &[]);
                    let plan = plans::plan(&mut executor, &request, Operation::Deploy).await;
                    let applied = plans::apply(&mut executor, &plan, true)
                        .await
                        .expect("applied");
                    assert_eq!(applied.ack.error, None, "{name}");
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        assert_eq!(deployed.len(), 100);
        eprintln!("100 deploys took {:?}", started.elapsed());
        // Steady state: every installation observed and re-deployed (no-op).
        for name in &names {
            let mut grpc = grpc.clone();
            grpc.observe(ObserveRequest {
                namespace: ns.clone(),
                installation: name.clone(),
                ..Default::default()
            })
            .await
            .expect("observe");
            let request = plans::deploy_request(name, &ns, 1, &[]);
            let mut executor = executor.clone();
            let plan = plans::plan(&mut executor, &request, Operation::Deploy).await;
            plans::apply(&mut executor, &plan, false)
                .await
                .expect("no-op");
        }
        let steady = rss_kib(pid);
        eprintln!("executor RSS: idle {idle} KiB, steady with 100 installations {steady} KiB");
        assert!(steady < 200 * 1024, "steady RSS {steady} KiB");

        // One trace per Apply: the request span, apply, a span per step and
        // per API call, the health wait.
        let mut traced = executor.clone();
        let request = plans::deploy_request("traced", &ns, 1, &[]);
        let plan = plans::plan(&mut traced, &request, Operation::Deploy).await;
        plans::apply(&mut traced, &plan, true)
            .await
            .expect("applied");
        let query = cluster.jaeger_query_url();
        let names = eventually(
            "the executor's traces in Jaeger",
            Duration::from_secs(30),
            || {
                let query = query.clone();
                let service = service.clone();
                async move {
                    jaeger::traces_of_service(&query, &service)
                        .await
                        .into_iter()
                        .find(|names| {
                            names.iter().any(|n| n == "apply")
                                && names.iter().any(|n| n == "health")
                        })
                }
            },
        )
        .await;
        for expected in [
            "k8sworker.v1.Executor/Apply",
            "apply",
            "health",
            "patch configmaps",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing in {names:?}"
            );
        }
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("CREATE ") || n.starts_with("NOOP ")),
            "{names:?}"
        );

        // SIGTERM: stops within the grace period, exit status 0.
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("stopped in time")
            .unwrap();
        assert!(status.success(), "{status:?}");
    })
    .await;
}
