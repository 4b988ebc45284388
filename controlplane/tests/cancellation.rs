//! Cancelling a leased workitem: it stays `CANCELLED` under its lease, the
//! worker learns it at its next renewal (410), a release drops it, a report
//! is recorded against it, and the `self` quota stays consistent each way.

mod common;

use std::time::Duration;

use common::{Client, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A server with a `self` cluster and a quota for it, and a worker.
async fn self_cluster() -> (TestServer, Client) {
    let t = TestServer::start_with(|c| c.self_k8s_namespace = "vantiq-self".into()).await;
    t.admin.create_cluster("self").await;
    let (status, body) = t
        .admin
        .put(
            "/api/v1/resources/namespaces/k8sworker",
            json!({"limits": {"k8sResources": {"vCPU": "2", "memory": "2Gi"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let worker = t.worker().await;
    (t, worker)
}

async fn deploy_self(a: &Client, name: &str, image: &str) -> Value {
    let (status, body) = a
        .command(
            "self",
            "deploy",
            json!({"name": name, "k8sNamespace": "vantiq-self", "config": [
                {"type": "image", "name": image},
                {"type": "resourceRequest", "cpu": "1", "memory": "1Gi"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn lease(claimed: &Value) -> Value {
    json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"]})
}

async fn cancel(a: &Client, claimed: &Value) {
    let id = claimed["requestId"].as_str().unwrap();
    let (status, body) = a
        .delete(&format!("/api/v1/resources/k8sworkitems/{id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn workitem(a: &Client, claimed: &Value) -> Option<Value> {
    let id = claimed["requestId"].as_str().unwrap();
    match a.get(&format!("/api/v1/resources/k8sworkitems/{id}")).await {
        (StatusCode::OK, body) => Some(body),
        (StatusCode::NOT_FOUND, _) => None,
        (status, body) => panic!("{status} {body}"),
    }
}

#[tokio::test]
async fn a_cancelled_item_not_started_is_dropped_and_its_charge_released() {
    let (t, worker) = self_cluster().await;
    let a = &t.admin;
    deploy_self(a, "conn", "conn:1").await;
    let claimed = worker.claim("self", 0.0).await;
    cancel(a, &claimed).await;
    let item = workitem(a, &claimed).await.unwrap();
    assert_eq!(item["status"], "CANCELLED");
    assert_eq!(item["leaseOwner"], claimed["leaseOwner"]);
    // The charge holds while the worker may still be applying.
    assert_eq!(t.rows("quota_charges"), 1);
    // A second cancel changes nothing.
    cancel(a, &claimed).await;
    assert_eq!(workitem(a, &claimed).await.unwrap()["status"], "CANCELLED");

    // The renewal says so (410) and still extends the lease.
    let before = item["leaseExpiresAt"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = worker
        .procedure("renewWorkitemLease", lease(&claimed))
        .await;
    assert_error(
        status,
        &body,
        410,
        "io.vantiq.resources.k8s.workitem.cancelled",
    );
    assert_eq!(body[0]["params"], json!([claimed["requestId"]]));
    let after = workitem(a, &claimed).await.unwrap()["leaseExpiresAt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(after > before, "{before} → {after}");

    // The worker did not start: its release drops the item and the charge.
    let (status, body) = worker.procedure("releaseWorkitem", lease(&claimed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert_eq!(workitem(a, &claimed).await, None);
    assert_eq!(t.rows("quota_charges"), 0);
    assert_eq!(t.rows("k8sinstallations"), 0);
    assert_eq!(worker.claim("self", 0.0).await, Value::Null);
}

#[tokio::test]
async fn an_apply_that_ran_anyway_is_recorded_against_the_cancelled_item() {
    let (t, worker) = self_cluster().await;
    let a = &t.admin;
    deploy_self(a, "conn", "conn:1").await;
    let claimed = worker.claim("self", 0.0).await;
    cancel(a, &claimed).await;
    // A next operation on the installation waits for the one in flight.
    deploy_self(a, "conn", "conn:2").await;
    assert_eq!(worker.claim("self", 0.0).await, Value::Null);

    let (status, done) = worker
        .complete(&claimed, json!({"k8sInstallationIdentifier": "uid-1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["installation"]["installationStatus"], "RUNNING");
    assert_eq!(done["installation"]["quotaConsumed"]["vCPU"], "1");
    assert_eq!(workitem(a, &claimed).await, None);
    let (_, record) = a.get("/api/v1/resources/k8sinstallations/conn").await;
    assert_eq!(record["k8sInstallationIdentifier"], "uid-1");
    assert_eq!(t.rows("quota_charges"), 1);
    // Now the queued redeploy runs.
    let next = worker.claim("self", 0.0).await;
    assert_eq!(next["request"]["config"][0]["name"], "conn:2");
}

#[tokio::test]
async fn a_cancelled_item_whose_worker_failed_or_vanished_keeps_the_quota_consistent() {
    let (t, worker) = self_cluster().await;
    let a = &t.admin;
    // Failed while cancelled: the outcome is recorded (FAILED), as for a
    // PENDING item; the failed first deploy's record keeps its charge.
    deploy_self(a, "one", "conn:1").await;
    let claimed = worker.claim("self", 0.0).await;
    cancel(a, &claimed).await;
    let mut params = lease(&claimed);
    params["message"] = json!("ImagePullBackOff");
    let (status, body) = worker.procedure("failWorkitem", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "FAILED");
    let (_, record) = a.get("/api/v1/resources/k8sinstallations/one").await;
    assert_eq!(record["installationStatus"], "FAILED");
    assert_eq!(t.rows("quota_charges"), 1);

    // Vanished: the lease runs out and the cancellation completes.
    deploy_self(a, "two", "conn:1").await;
    let (status, body) = worker
        .procedure(
            "claimWorkitem",
            json!({"clusterName": "self", "leaseSeconds": 0.3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["installationName"], "two");
    cancel(a, &body).await;
    assert_eq!(t.rows("quota_charges"), 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(workitem(a, &body).await, None);
    assert_eq!(t.rows("quota_charges"), 1);
    let (status, _) = worker.procedure("renewWorkitemLease", lease(&body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
