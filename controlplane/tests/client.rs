//! The worker protocol through `k8sworker-client`, the client every worker
//! and tool uses, against the real server: every procedure's typed answer,
//! the errors a worker acts on, and documents up and down. The server writes
//! the shared types and the client reads them, so a name or type that
//! drifted on either side fails here.

mod common;

use std::time::Duration;

use common::{ADMIN_PASSWORD, TestServer, deploy_data};
use k8sworker_client::protocol::{
    ClaimWorkitem, CompleteWorkitem, FailStatus, FailWorkitem, InstallationReport,
    InstallationStatus, Procedure, ReleaseWorkitem, RenewWorkitemLease, WORKER_PROTOCOL_VERSION,
    WorkitemStatus,
};
use k8sworker_client::{AccessToken, Client, Error, vantiq};
use serde::Serialize;
use serde_json::{Value, json};

/// The admin and a worker of the bootstrap namespace, on the typed client.
async fn clients(t: &TestServer) -> (Client, Client) {
    let anonymous = Client::builder(&t.base).build().unwrap();
    let admin = anonymous.login("admin", ADMIN_PASSWORD).await.unwrap();
    let token: Value = admin
        .post_json(
            "/api/v1/resources/tokens",
            &json!({"name": "typed-worker", "profiles": ["k8sWorker__system"]}),
        )
        .await
        .unwrap();
    let worker = anonymous
        .with_token(&AccessToken::new(token["accessToken"].as_str().unwrap()))
        .unwrap();
    (admin, worker)
}

fn claim(cluster: &str) -> ClaimWorkitem {
    ClaimWorkitem {
        cluster_name: cluster.into(),
        worker_id: Some("gw-typed".into()),
        lease_seconds: Some(30.0),
        wait_seconds: Some(0.0),
    }
}

async fn deploy(admin: &Client, cluster: &str, name: &str) -> Value {
    admin
        .post_json(
            &format!("/api/v1/resources/k8sclusters/{cluster}/command"),
            &json!({"op": "deploy", "data": deploy_data(name)}),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn every_procedure_answers_its_protocol_type() {
    let t = TestServer::start().await;
    let (admin, worker) = clients(&t).await;
    let version = worker.version().await.unwrap();
    assert_eq!(version.name.as_deref(), Some("k8sworker-controlplane"));
    assert_eq!(version.worker_protocol, Some(WORKER_PROTOCOL_VERSION));
    assert_eq!(version.long_poll, Some(true));
    assert!(matches!(
        worker.cluster("c1").await,
        Err(Error::NotFound { .. })
    ));
    admin
        .post_json::<Value>("/api/v1/resources/k8sclusters", &json!({"name": "c1"}))
        .await
        .unwrap();
    assert_eq!(worker.cluster("c1").await.unwrap()["name"], "c1");
    assert_eq!(worker.call(&claim("c1")).await.unwrap(), None);

    let item = deploy(&admin, "c1", "web").await;
    let claimed = worker
        .call(&claim("c1"))
        .await
        .unwrap()
        .expect("a workitem");
    assert_eq!(claimed.workitem.request_id, item["requestId"]);
    assert_eq!(claimed.workitem.status, Some(WorkitemStatus::Pending));
    assert_eq!(claimed.workitem.lease_owner.as_deref(), Some("gw-typed"));
    assert_eq!(claimed.workitem.attempts, Some(1));
    assert_eq!(claimed.workitem.installation_name.as_deref(), Some("web"));
    assert!(claimed.workitem.traceparent.is_some());
    assert!(
        claimed.workitem.other.is_empty(),
        "{:?}",
        claimed.workitem.other
    );
    assert_eq!(claimed.lease(), Some(Duration::from_secs(30)));
    assert_eq!(claimed.cluster.name, "c1");
    assert_eq!(claimed.installation, None);
    assert_eq!(claimed.workitem.request, deploy_data("web"));
    let (request_id, lease_id) = (
        claimed.workitem.request_id.clone(),
        claimed.lease_id.clone(),
    );

    let renewed = worker
        .call(&RenewWorkitemLease {
            request_id: request_id.clone(),
            lease_id: lease_id.clone(),
            lease_seconds: Some(45.0),
        })
        .await
        .unwrap();
    assert_eq!(renewed.lease_seconds, Some(45.0));
    assert_eq!(renewed.lease_id, lease_id);

    // Another lease cannot complete it; an unknown property is refused by name.
    let stolen = CompleteWorkitem {
        request_id: request_id.clone(),
        lease_id: "not-the-lease".into(),
        installation: InstallationReport::default(),
        steps: None,
        trace_id: None,
    };
    match worker.call(&stolen).await.unwrap_err() {
        Error::LeaseLost { request_id: id, .. } => assert_eq!(id, request_id),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RawComplete {
        request_id: String,
        lease_id: String,
        installation: Value,
    }
    impl Procedure for RawComplete {
        const NAME: &'static str = k8sworker_client::protocol::COMPLETE_WORKITEM;
        type Answer = Value;
    }
    let hijack = RawComplete {
        request_id: request_id.clone(),
        lease_id: lease_id.clone(),
        installation: json!({"name": "hijack"}),
    };
    match worker.call(&hijack).await.unwrap_err() {
        Error::Rejected { status, code, .. } => {
            assert_eq!(
                (status, code.as_deref()),
                (400, Some(vantiq::ARGUMENT_INVALID))
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    let complete = CompleteWorkitem {
        request_id: request_id.clone(),
        lease_id: lease_id.clone(),
        installation: InstallationReport {
            installation_status: Some(InstallationStatus::Running),
            k8s_state: Some("Running: 1/1 replicas ready".into()),
            replica_count: Some(1),
            k8s_associated_services: Some(vec!["web".into()]),
            ..InstallationReport::default()
        },
        steps: None,
        trace_id: None,
    };
    let done = worker.call(&complete).await.unwrap();
    assert_eq!(
        (done.request_id.as_str(), done.operation.as_str()),
        (request_id.as_str(), "deploy")
    );
    let record = done.installation.expect("the installation record");
    assert_eq!(record["installationStatus"], "RUNNING");
    assert_eq!(record["k8sAssociatedServices"], json!(["web"]));
    // Completed means deleted: the next call about it finds nothing.
    assert!(matches!(
        worker.call(&complete).await.unwrap_err(),
        Error::NotFound { .. }
    ));

    // Release gives it back, fail keeps it with the message.
    admin
        .post_json::<Value>(
            "/api/v1/resources/k8sinstallations/web/command",
            &json!({"op": "restart"}),
        )
        .await
        .unwrap();
    let claimed = worker
        .call(&claim("c1"))
        .await
        .unwrap()
        .expect("the restart");
    assert_eq!(claimed.workitem.operation, "restart");
    assert_eq!(
        claimed.installation.as_ref().unwrap()["configSpec"],
        deploy_data("web")["config"]
    );
    let released = worker
        .call(&ReleaseWorkitem {
            request_id: claimed.workitem.request_id.clone(),
            lease_id: claimed.lease_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(released.status, Some(WorkitemStatus::Requested));
    assert_eq!(released.lease_owner, None);
    let again = worker.call(&claim("c1")).await.unwrap().expect("released");
    assert_eq!(again.workitem.attempts, Some(2));
    let failed = worker
        .call(&FailWorkitem {
            request_id: again.workitem.request_id.clone(),
            lease_id: again.lease_id.clone(),
            status: FailStatus::Failed,
            message: "CrashLoopBackOff on pod web-0".into(),
            steps: None,
            trace_id: None,
        })
        .await
        .unwrap();
    assert_eq!(failed.status, Some(WorkitemStatus::Failed));
    assert_eq!(
        failed.message.as_deref(),
        Some("CrashLoopBackOff on pod web-0")
    );
    t.stop().await;
}

#[tokio::test]
async fn refusals_are_the_errors_a_worker_acts_on() {
    let t = TestServer::start().await;
    let (admin, worker) = clients(&t).await;
    admin
        .post_json::<Value>("/api/v1/resources/k8sclusters", &json!({"name": "c1"}))
        .await
        .unwrap();
    let too_long = ClaimWorkitem {
        wait_seconds: Some(3600.0),
        ..claim("c1")
    };
    match worker.call(&too_long).await.unwrap_err() {
        Error::Rejected { status, code, .. } => {
            assert_eq!(
                (status, code.as_deref()),
                (400, Some(vantiq::ARGUMENT_INVALID))
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // Only worker tokens may call the procedures.
    assert!(matches!(
        admin.call(&claim("c1")).await.unwrap_err(),
        Error::Unauthorized { status: 403, .. }
    ));
    let stranger = worker.with_token(&AccessToken::new("not-a-token")).unwrap();
    assert!(matches!(
        stranger.call(&claim("c1")).await.unwrap_err(),
        Error::Unauthorized { status: 401, .. }
    ));
    assert!(matches!(
        Client::builder(&t.base)
            .build()
            .unwrap()
            .login("admin", "wrong")
            .await
            .unwrap_err(),
        Error::Unauthorized { status: 401, .. }
    ));
    #[derive(Serialize)]
    struct Missing {}
    impl Procedure for Missing {
        const NAME: &'static str = "K8sManager.noSuchProcedure";
        type Answer = Value;
    }
    assert!(matches!(
        worker.call(&Missing {}).await.unwrap_err(),
        Error::NotImplemented { .. }
    ));
    t.stop().await;
}

#[tokio::test]
async fn documents_go_up_and_come_back_and_reach_a_claim() {
    let t = TestServer::start().await;
    let (admin, worker) = clients(&t).await;
    let name = "c1/web/web-0-2021-07-14T12-13-14.000Z.txt";
    let uploaded = worker
        .upload_document(name, b"line 1\nline 2\n".to_vec(), "text/plain")
        .await
        .unwrap();
    assert_eq!(uploaded.name, name);
    assert_eq!(uploaded.file_type.as_deref(), Some("text/plain"));
    assert_eq!(uploaded.content_size, Some(14));
    assert_eq!(
        uploaded.content.as_deref(),
        Some(format!("/docs/{name}").as_str())
    );
    assert_eq!(admin.document(name).await.unwrap(), uploaded);
    assert_eq!(admin.documents().await.unwrap(), vec![uploaded]);
    assert_eq!(
        admin.download_document(name).await.unwrap(),
        b"line 1\nline 2\n"
    );
    assert!(matches!(
        admin.download_document("c1/none.txt").await.unwrap_err(),
        Error::NotFound { .. }
    ));

    // A document a deploy refers to reaches the worker as bytes.
    admin
        .upload_document("conf/app.properties", b"key=value\n".to_vec(), "text/plain")
        .await
        .unwrap();
    admin
        .post_json::<Value>("/api/v1/resources/k8sclusters", &json!({"name": "c1"}))
        .await
        .unwrap();
    admin
        .post_json::<Value>(
            "/api/v1/resources/k8sclusters/c1/command",
            &json!({"op": "deploy", "data": {"name": "web", "k8sNamespace": "apps", "config": [
                {"type": "image", "name": "app:1"},
                {"type": "file", "path": "/etc/app", "resourceType": "documents", "resourceName": "conf/app.properties"},
            ]}}),
        )
        .await
        .unwrap();
    let claimed = worker
        .call(&claim("c1"))
        .await
        .unwrap()
        .expect("the deploy");
    assert_eq!(
        claimed.ancillaries.decode_documents().unwrap()["conf/app.properties"],
        b"key=value\n"
    );
    t.stop().await;
}
