//! The health wait fails fast, naming the pod and the reason.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{Action, ErrorCode, HealthState};
use k8sworker_testsupport::{plans, with_temp_ns};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::support::{Fixture, actions, health_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn image_pull_backoff_fails_the_wait_at_once() {
    with_temp_ns("exec-backoff", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 1, &[]);
        f.run(&request, Operation::Deploy).await;

        // The kubelet would report this; the test cluster's fake one does
        // not pull images, so the admin writes the pod status itself.
        let pods: Api<Pod> = Api::namespaced(f.admin.clone(), &ns);
        pods.patch_status(
            "app-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                "containerStatuses": [{
                    "name": "app", "image": "registry.example.com/k8sworker/app:1.0", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"registry.example.com/k8sworker/app:1.0\""}}
                }]
            }})),
        )
        .await
        .expect("pod status patched");

        let started = Instant::now();
        let (plan, applied) = f.plan_and_apply(&request, Operation::Deploy, true).await;
        assert!(actions(&plan).iter().all(|(a, _)| *a == Action::Noop));
        let applied = applied.expect("applied");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "failed fast, not at the 60 s timeout: {took:?}");
        let error = applied.ack.error.clone().expect("unhealthy");
        assert_eq!(error.code, ErrorCode::Unhealthy as i32, "{error:?}");
        assert!(error.message.contains("pod app-0: ImagePullBackOff"), "{}", error.message);
        assert_eq!(health_state(&applied), HealthState::Degraded);
        let problem = &applied.ack.health.as_ref().unwrap().problems[0];
        assert_eq!((problem.pod.as_str(), problem.reason.as_str()), ("app-0", "ImagePullBackOff"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn an_unschedulable_pod_fails_the_wait_at_once() {
    with_temp_ns("exec-unschedulable", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request(
            "app",
            &ns,
            1,
            &[json!({"type": "resourceRequest", "cpu": "5000", "memory": "16Mi"})],
        );
        let plan = f.plan(&request, Operation::Deploy).await;
        let started = Instant::now();
        let applied = f.apply(&plan, true).await.expect("applied");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        let error = applied.ack.error.clone().expect("unhealthy");
        assert_eq!(error.code, ErrorCode::Unhealthy as i32, "{error:?}");
        let problem = &applied.ack.health.as_ref().unwrap().problems[0];
        assert_eq!(
            (problem.pod.as_str(), problem.reason.as_str()),
            ("app-0", "Unschedulable")
        );
        assert!(
            problem.message.contains("Insufficient cpu"),
            "{}",
            problem.message
        );
    })
    .await;
}
