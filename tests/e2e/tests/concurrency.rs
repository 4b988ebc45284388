//! The concurrent gateway against the real test cluster: several workitems
//! in flight, never more than `--concurrency`, one installation at a time
//! and in queue order; a graceful stop with several in flight; and retries
//! that outlast a planner restart while a real failure still fails.
//!
//! Run with `cargo test -p k8sworker-e2e --test concurrency -- --ignored`
//! once `tests/cluster/up.sh` has run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8sworker_e2e::{CLUSTER, RunningGateway, Stack, Vantiq, sample_deploy};
use k8sworker_gateway::{Event, Protocol, Report};
use k8sworker_testsupport::with_temp_ns;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// [`sample_deploy`] as `protocol` can carry it (REST mode takes no secret
/// values).
fn deploy(protocol: Protocol, name: &str, ns: &str, greeting: &str) -> Value {
    let mut deploy = sample_deploy(name, ns, 1, greeting);
    if protocol == Protocol::Rest {
        let config = deploy["config"].as_array_mut().unwrap();
        config.retain(|entry| entry["asSecret"] != json!(true));
    }
    deploy
}

/// Asks for `deploy`; the workitem's request id.
async fn queue(vantiq: &Vantiq, deploy: Value) -> String {
    let item = vantiq.command(CLUSTER, "deploy", deploy).await;
    item["requestId"].as_str().unwrap().to_owned()
}

/// Waits until no workitem is left in the queue (every one completed).
async fn drained(vantiq: &Vantiq) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = vantiq.workitems().await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workitems left after {WAIT:?}: {}",
            serde_json::to_string_pretty(&left).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times the gateway claimed each workitem.
fn claims(events: &[Event]) -> BTreeMap<String, usize> {
    let mut claims = BTreeMap::new();
    for event in events {
        if let Event::Claimed { request_id, .. } = event {
            *claims.entry(request_id.clone()).or_default() += 1;
        }
    }
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn claim_mode_runs_workitems_concurrently_bounded_and_in_order_per_installation() {
    with_temp_ns("e2e-conc-claim", |admin, ns| async move {
        ordered_and_bounded(Protocol::Claim, &admin, &ns).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn rest_mode_runs_workitems_concurrently_bounded_and_in_order_per_installation() {
    with_temp_ns("e2e-conc-rest", |admin, ns| async move {
        ordered_and_bounded(Protocol::Rest, &admin, &ns).await;
    })
    .await;
}

/// 6 installations × 3 deploys each, queued at once and interleaved, with a
/// gateway of `--concurrency 4` and every Execute held 400 ms: the Executes
/// overlap but never more than 4 at once, each installation's run in the
/// order they were asked for, each once, and each installation ends with
/// its last request applied.
async fn ordered_and_bounded(protocol: Protocol, admin: &kube::Client, ns: &str) {
    const LIMIT: usize = 4;
    let stack = Stack::start(admin, ns, |config| {
        config.vantiq_strict = protocol == Protocol::Rest;
    })
    .await;
    stack.planner.log.hold_each(Duration::from_millis(400));
    let vantiq = &stack.admin;
    let installations: Vec<String> = (0..6).map(|i| format!("app{i}")).collect();
    let mut asked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..3 {
        for name in &installations {
            let id = queue(vantiq, deploy(protocol, name, ns, &format!("round{round}"))).await;
            asked.entry(name.clone()).or_default().push(id);
        }
    }
    let mut config = stack.gateway_config();
    config.protocol = protocol;
    config.concurrency = LIMIT;
    let gateway = RunningGateway::start(config);
    drained(vantiq).await;

    let calls = stack.planner.log.calls();
    for (name, ids) in &asked {
        let executed: Vec<&String> = calls.iter().filter(|id| ids.contains(id)).collect();
        assert_eq!(
            executed,
            ids.iter().collect::<Vec<_>>(),
            "{name}: executed in the order asked, each once"
        );
        let record = vantiq.wait_status(name, "RUNNING", WAIT).await;
        assert!(
            record["configSpec"].to_string().contains("greeting=round2"),
            "{name} ends with its last request: {record}"
        );
    }
    let most = stack.planner.log.most_at_once();
    assert!(
        most <= LIMIT,
        "{most} Executes at once, the limit is {LIMIT}"
    );
    assert!(most >= 2, "the Executes never overlapped ({most} at most)");
    let summary = gateway.stop().await;
    assert_eq!(summary.completed, 18, "{summary:?}");
    assert_eq!(summary.processed(), 18, "{summary:?}");
    eprintln!("{protocol:?}: at most {most} Executes at once (limit {LIMIT})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn sigterm_finishes_every_workitem_in_flight_or_releases_each() {
    with_temp_ns("e2e-conc-stop", |admin, ns| async move {
        let stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = &stack.admin;

        // Four in flight, each within the grace period: all finished.
        stack.planner.log.hold_each(Duration::from_secs(2));
        let gateway = stack.gateway();
        for i in 0..4 {
            queue(vantiq, sample_deploy(&format!("fin{i}"), &ns, 1, "x")).await;
        }
        stack.planner.log.wait_calls(4, WAIT).await;
        let summary = gateway.stop().await;
        assert_eq!(summary.completed, 4, "{summary:?}");
        assert_eq!(summary.processed(), 4, "{summary:?}");
        for i in 0..4 {
            let record = vantiq.installation(&format!("fin{i}")).await.unwrap();
            assert_eq!(record["installationStatus"], "RUNNING", "{record}");
        }
        assert!(vantiq.workitems().await.is_empty());

        // Three in flight beyond a short grace period: each released at once.
        stack.planner.log.hold_each(Duration::from_secs(20));
        let mut config = stack.gateway_config();
        config.shutdown_grace = Duration::from_millis(500);
        let gateway = RunningGateway::start(config);
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(queue(vantiq, sample_deploy(&format!("rel{i}"), &ns, 1, "x")).await);
        }
        stack.planner.log.wait_calls(7, WAIT).await;
        let stopped = Instant::now();
        let summary = gateway.stop().await;
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "stopped after {:?}: the grace is 500 ms",
            stopped.elapsed()
        );
        assert_eq!(summary.released, 3, "{summary:?}");
        for id in &ids {
            let item = vantiq.workitem(id).await.unwrap();
            assert_eq!(item["status"], "REQUESTED", "released: {item}");
        }
    })
    .await;
}

/// Issue 16's first finding: a planner restart of two seconds failed every
/// workitem queued behind it (each released and claimed again at once, ten
/// attempts in milliseconds). Now the planner is down for 4 s while seven
/// deploys are queued: the six for this namespace end RUNNING, each
/// claimed and executed successfully once, none `FAILED`; the seventh, for a
/// namespace without an executor, still ends `FAILED` with the planner's
/// message once the planner answers. A planner that stays away beyond the
/// retry budget fails the workitem, saying what kept failing and for how
/// long, after one claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn a_planner_restart_fails_nothing_and_a_real_failure_still_fails() {
    with_temp_ns("e2e-conc-outage", |admin, ns| async move {
        let mut stack = Stack::start(&admin, &ns, |_| {}).await;
        let vantiq = stack.admin.clone();
        let gateway = stack.gateway();
        // The gateway is up and waiting; then the planner goes away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.planner.stop().await;
        let mut ids = BTreeMap::new();
        for i in 0..6 {
            let name = format!("app{i}");
            let id = queue(&vantiq, sample_deploy(&name, &ns, 1, "x")).await;
            ids.insert(name, id);
        }
        let doomed = queue(
            &vantiq,
            sample_deploy("elsewhere", "no-executor-here", 1, "x"),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        // Meanwhile: every workitem held under its first claim, none failed.
        for item in vantiq.workitems().await {
            assert_eq!(item["status"], "PENDING", "{item}");
            assert_eq!(item["attempts"], 1, "claimed once: {item}");
        }
        stack.planner.restart().await;

        for name in ids.keys() {
            vantiq.wait_status(name, "RUNNING", WAIT).await;
        }
        let record = vantiq.wait_status("elsewhere", "FAILED", WAIT).await;
        assert!(
            record["k8sState"]
                .as_str()
                .unwrap()
                .contains("no executor is installed for namespace `no-executor-here`"),
            "{record}"
        );
        let left = vantiq.workitems().await;
        assert_eq!(left.len(), 1, "only the real failure stays: {left:?}");
        assert_eq!(left[0]["requestId"], doomed.as_str());
        assert_eq!(left[0]["status"], "FAILED");
        let claimed = claims(&gateway.events());
        for id in ids.values().chain([&doomed]) {
            assert_eq!(claimed.get(id), Some(&1), "{id} claimed once: {claimed:?}");
        }
        // Each executed after the restart exactly once (the calls while the
        // planner was down never reached it).
        for id in ids.values() {
            assert_eq!(stack.planner.log.counts().get(id), Some(&1), "{id}");
        }
        let summary = gateway.stop().await;
        assert_eq!((summary.completed, summary.failed), (6, 1), "{summary:?}");

        // A planner away beyond the budget: FAILED after one claim, saying
        // what kept failing and for how long.
        let mut config = stack.gateway_config();
        config.retry_for = Duration::from_secs(3);
        let gateway = RunningGateway::start(config);
        stack.planner.stop().await;
        let started = Instant::now();
        let id = queue(&vantiq, sample_deploy("app0", &ns, 1, "y")).await;
        let failed = vantiq
            .wait_workitem(&id, WAIT, |item| {
                item.is_some_and(|i| i["status"] == "FAILED")
            })
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(3));
        let message = failed["message"].as_str().unwrap();
        assert!(
            message.starts_with("the planner call kept failing for 3s")
                && message.contains("Unavailable"),
            "{message}"
        );
        assert_eq!(failed["attempts"], 1, "{failed}");
        assert_eq!(claims(&gateway.events()).get(&id), Some(&1));
        assert!(
            gateway
                .events()
                .iter()
                .any(|event| matches!(event, Event::Reported { request_id, report: Report::Failed { .. }, .. } if *request_id == id))
        );
        let record = vantiq.installation("app0").await.unwrap();
        assert_eq!(record["installationStatus"], "FAILED", "{record}");
        gateway.stop().await;
    })
    .await;
}
