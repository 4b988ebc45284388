//! Observe and FetchLogs.

use k8s_openapi::api::core::v1::Pod;
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1::{ErrorCode, FetchLogsRequest};
use k8sworker_testsupport::{identity, plans, with_temp_ns};
use serde_json::json;

use crate::support::{Calls, Fixture, error_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn observe_reports_versions_hashes_owners_and_references() {
    with_temp_ns("exec-observe", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request(
            "app",
            &ns,
            1,
            &[
                json!({"type": "environmentVariable", "name": "TOKEN", "value": "s3cret", "asSecret": true}),
                json!({"type": "environmentVariable", "name": "MISSING", "secretName": "not-there", "key": "k"}),
            ],
        );
        let installation = plans::installation(&request);
        let before = f.calls();
        let empty = plans::observe(&mut f.grpc, &installation, Vec::new()).await;
        Calls::between(&before, &f.calls()).report("observe (nothing deployed)");
        assert!(empty.components.is_empty());
        assert!(empty.existing_references.is_empty(), "not-there does not exist");

        // Deploy without the missing reference, then observe.
        let deployable = plans::deploy_request("app", &ns, 1, &[json!({"type": "environmentVariable", "name": "TOKEN", "value": "s3cret", "asSecret": true})]);
        f.run(&deployable, Operation::Deploy).await;
        let before = f.calls();
        let observed = plans::observe(&mut f.grpc, &installation, Vec::new()).await;
        Calls::between(&before, &f.calls()).report("observe (deployed)");
        let owned = f.owned("app").await;
        assert_eq!(observed.components.len(), owned.len());
        for component in &observed.components {
            let r = component.r#ref.as_ref().unwrap();
            assert_eq!(component.owner, "app", "{r:?}");
            assert!(!component.spec_hash.is_empty(), "{r:?}");
            assert_eq!(owned.get(&(r.kind.clone(), r.name.clone())), Some(&component.uid));
            assert!(component.foreign_managers.is_empty(), "{component:?}");
            if r.kind == "StatefulSet" {
                assert_eq!((component.replicas, component.ready_replicas), (Some(1), Some(1)));
            }
        }
        // No value of the generated Secret travels in the answer.
        let encoded = format!("{observed:?}");
        assert!(!encoded.contains("s3cret"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn fetch_logs_covers_the_installation_pods_only_and_is_bounded() {
    with_temp_ns("exec-logs", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request("app", &ns, 2, &[]);
        f.run(&request, Operation::Deploy).await;
        let fetch = |limit_bytes: u64| {
            let mut grpc = f.grpc.clone();
            let ns = ns.clone();
            async move {
                grpc.fetch_logs(FetchLogsRequest {
                    namespace: ns,
                    installation: "app".into(),
                    pod_name: None,
                    limit_bytes,
                })
                .await
                .expect("logs")
                .into_inner()
                .logs
            }
        };
        // The test cluster's fake kubelet serves the same short log for
        // every container.
        let full = fetch(0).await;
        let pods: Vec<&str> = full.iter().map(|l| l.pod.as_str()).collect();
        assert_eq!(pods, ["app-0", "app-1"]);
        let text = String::from_utf8_lossy(&full[0].content).to_string();
        assert!(text.contains("fake container log"), "{text}");
        assert!(!full[0].truncated);

        // Capped: the end of the log is kept, and the cut is reported.
        let capped = fetch(32).await;
        assert_eq!(capped.len(), 2);
        for log in &capped {
            assert!(log.truncated, "{log:?}");
            assert_eq!(log.content.len(), 32);
            assert!(full[0].content.ends_with(&log.content), "{log:?}");
        }

        // A pod that is not the installation's is refused.
        let stranger: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "stranger"},
            "spec": {"containers": [{"name": "c", "image": "registry.example.com/x:1"}]}
        }))
        .unwrap();
        identity::apply(&f.admin, &ns, &stranger).await;
        let status = f
            .grpc
            .fetch_logs(FetchLogsRequest {
                namespace: ns.clone(),
                installation: "app".into(),
                pod_name: Some("stranger".into()),
                limit_bytes: 0,
            })
            .await
            .expect_err("not the installation's pod");
        assert_eq!(
            error_of(&status).code,
            ErrorCode::NotOwned as i32,
            "{status:?}"
        );
        let status = f
            .grpc
            .fetch_logs(FetchLogsRequest {
                namespace: "kube-system".into(),
                installation: "app".into(),
                pod_name: None,
                limit_bytes: 0,
            })
            .await
            .expect_err("another namespace");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    })
    .await;
}
