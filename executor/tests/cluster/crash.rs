//! Killing the executor in the middle of an Apply loses nothing and
//! duplicates nothing: a restarted executor refuses the old plan as stale,
//! and the re-planned one converges.

use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{ApplyEvent, ApplyRequest, ErrorCode, HealthState, apply_event};
use k8sworker_testsupport::{plans, with_temp_ns};

use crate::support::{Fixture, error_of, health_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_killed_apply_converges_after_restart_without_duplicates() {
    with_temp_ns("exec-crash", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        // A slow client-side rate limit (4 calls/s, no burst) makes sure the
        // kill lands between two writes.
        let mut slow = k8sworker_executor::ExecutorConfig::new(ns.clone());
        slow.rate_limits = k8sworker_executor::client::RateLimits { qps: 4.0, burst: 1 };
        slow.allowed_tenants = [plans::tenant()].into();
        f.restart_executor_with(slow).await;
        let request = plans::deploy_request(
            "app",
            &ns,
            2,
            &[serde_json::json!({"type": "environmentVariable", "name": "TOKEN", "value": "t", "asSecret": true})],
        );
        let plan = f.plan(&request, Operation::Deploy).await;
        let desired = plan.steps.len();

        // Kill the executor as soon as the first step is reported.
        let mut stream = f
            .grpc
            .apply(ApplyRequest {
                plan: Some(plan.clone()),
                wait_for_health: true,
                health_timeout_seconds: 60,
            })
            .await
            .expect("accepted")
            .into_inner();
        let first = stream.message().await.expect("first event");
        assert!(matches!(first, Some(ApplyEvent { event: Some(apply_event::Event::Step(_)) })), "{first:?}");
        f.executor.kill();
        let rest = async {
            loop {
                match stream.message().await {
                    Ok(Some(ApplyEvent { event: Some(apply_event::Event::Ack(ack)) })) => break Some(ack),
                    Ok(Some(_)) => continue,
                    _ => break None,
                }
            }
        };
        assert!(rest.await.is_none(), "the killed executor sent no Ack");
        let partial = f.owned("app").await;
        assert!(!partial.is_empty() && partial.len() < desired, "killed mid-plan: {partial:?}");

        // Restarted: the old plan is stale now (its first create happened).
        f.restart_executor().await;
        let status = f.apply(&plan, true).await.expect_err("stale after the crash");
        assert_eq!(error_of(&status).code, ErrorCode::StalePlan as i32, "{status:?}");

        // The planner re-observes and re-plans: it converges.
        let (applied, calls) = f.run(&request, Operation::Deploy).await;
        calls.report("re-planned deploy after a crash");
        assert!(calls.writes() > 0, "the re-planned deploy finished the work: {calls:?}");
        assert_eq!(health_state(&applied), HealthState::Ready);
        let owned = f.owned("app").await;
        assert_eq!(owned.len(), desired, "exactly the desired objects, no duplicates: {owned:?}");
        for (object, uid) in &partial {
            assert_eq!(owned.get(object), Some(uid), "{object:?} kept, not recreated");
        }
        assert_eq!(f.pods("app").await.len(), 2);
    })
    .await;
}
