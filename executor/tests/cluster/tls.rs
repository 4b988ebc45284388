//! Mutual TLS on the executor's gRPC port, attacked: a caller without a
//! certificate, and callers with the certificates of every other component,
//! calling Apply (a plan the planner would apply), Observe and FetchLogs.
//! Each is refused with a clear status before the executor makes a single
//! Kubernetes API call, and nothing appears in the namespace; the same plan
//! from the planner's certificate is then applied.

use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{ApplyRequest, FetchLogsRequest, ObserveRequest};
use k8sworker_testsupport::{plans, with_temp_ns};
use k8sworker_tls::Identity;
use tonic::Code;

use crate::support::{Calls, Fixture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn only_the_planner_may_call_the_executor() {
    with_temp_ns("exec-mtls", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        let plan = f.plan(&request, Operation::Deploy).await;
        let before = f.calls();
        let attackers = [
            (
                None,
                Code::Unauthenticated,
                "the caller presented none".to_owned(),
            ),
            (
                Some(Identity::gateway(plans::tenant())),
                Code::PermissionDenied,
                format!(
                    "the caller is spiffe://k8sworker/gateway/{}",
                    plans::tenant()
                ),
            ),
            (
                Some(Identity::Preview),
                Code::PermissionDenied,
                "the caller is spiffe://k8sworker/preview".to_owned(),
            ),
            (
                Some(Identity::executor(ns.clone())),
                Code::PermissionDenied,
                format!("the caller is spiffe://k8sworker/executor/{ns}"),
            ),
            (
                Some(Identity::gateway(Tenant::new("other", "c9").unwrap())),
                Code::PermissionDenied,
                "the caller is spiffe://k8sworker/gateway/other/c9".to_owned(),
            ),
        ];
        for (caller, code, message) in attackers {
            let who = caller
                .as_ref()
                .map_or("no certificate".to_owned(), ToString::to_string);
            let mut client = f.executor.client_as(caller.as_ref());
            let refusals = [
                (
                    "Executor.Apply",
                    client
                        .apply(ApplyRequest {
                            plan: Some(plan.clone()),
                            wait_for_health: false,
                            health_timeout_seconds: 0,
                        })
                        .await
                        .map(drop)
                        .expect_err("apply refused"),
                ),
                (
                    "Executor.Observe",
                    client
                        .observe(ObserveRequest {
                            namespace: ns.clone(),
                            installation: "app".into(),
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                        .expect_err("observe refused"),
                ),
                (
                    "Executor.FetchLogs",
                    client
                        .fetch_logs(FetchLogsRequest {
                            namespace: ns.clone(),
                            installation: "app".into(),
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                        .expect_err("fetch logs refused"),
                ),
            ];
            for (call, status) in refusals {
                eprintln!("{who} → {call}: {:?} {}", status.code(), status.message());
                assert_eq!(status.code(), code, "{who} {call}: {status:?}");
                assert!(status.message().starts_with(call), "{who}: {status:?}");
                assert!(status.message().contains(&message), "{who}: {status:?}");
                assert!(
                    status
                        .message()
                        .contains("only spiffe://k8sworker/planner may call it"),
                    "{who}: {status:?}"
                );
            }
        }
        let calls = Calls::between(&before, &f.calls());
        assert_eq!(
            calls.total(),
            0,
            "no API call at all for a refused caller: {calls:?}"
        );
        assert!(f.owned("app").await.is_empty(), "nothing was written");
        assert!(f.statefulset("app").await.is_none());

        // The same plan, from the planner: applied.
        let applied = f.apply(&plan, false).await.expect("the planner's apply");
        assert_eq!(applied.ack.error, None);
        assert!(f.statefulset("app").await.is_some());
    })
    .await;
}
