//! The operation history (`k8soperations`) over HTTP against the real
//! server: one record per workitem, kept after the workitem is gone, with
//! each outcome (SUCCEEDED, FAILED, INVALID, CANCELLED), the request with
//! its secret values redacted, the steps and trace id a worker reports,
//! admins only, and pruned after `--history-retention`.

mod common;

use std::time::Duration;

use common::{Client, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OPERATIONS: &str = "/api/v1/resources/k8soperations";
const ENV_SECRET: &str = "history-env-secret-Qe81Lz";
const FILE_SECRET: &str = "history-file-secret-Wm27Kd";
const VAULT_SECRET: &str = "history-vault-secret-Bv55Xo";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn secret_deploy(name: &str) -> Value {
    json!({
        "name": name,
        "k8sNamespace": "apps",
        "config": [
            {"type": "image", "name": "nginx:1.27"},
            {"type": "environmentVariable", "name": "API_KEY", "value": ENV_SECRET, "asSecret": true},
            {"type": "environmentVariable", "name": "DB_PASSWORD", "value": "@secrets(db)"},
            {"type": "file", "path": "/etc/app", "filename": "key.pem", "content": FILE_SECRET, "dataSource": "secret"},
        ]
    })
}

fn steps() -> Value {
    json!([
        {"action": "create", "kind": "Secret", "name": "vantiq-web-secret-0", "reason": "missing"},
        {"action": "create", "kind": "StatefulSet", "name": "web", "reason": "missing"},
    ])
}

fn lease(claimed: &Value) -> Value {
    json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"]})
}

/// Deploys a minimal `name` on `cluster`; its workitem's `requestId`.
async fn deploy_id(a: &Client, cluster: &str, name: &str) -> String {
    a.deploy(cluster, name).await["requestId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn record(a: &Client, id: &str) -> Value {
    let (status, body) = a.get(&format!("{OPERATIONS}/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn workitem_gone(a: &Client, id: &str) -> bool {
    let (status, _) = a.get(&format!("/api/v1/resources/k8sworkitems/{id}")).await;
    status == StatusCode::NOT_FOUND
}

/// Asserts the fields every record has, and that the times are ordered.
#[track_caller]
fn assert_shape(record: &Value, op: &str, outcome: Option<&str>) {
    for key in [
        "id",
        "clusterName",
        "installationName",
        "namespace",
        "op",
        "workitemId",
        "requestedBy",
        "requestedAt",
        "startedAt",
        "finishedAt",
        "outcome",
        "error",
        "request",
        "steps",
        "traceId",
    ] {
        assert!(record.get(key).is_some(), "{key} missing: {record}");
    }
    assert_eq!(record["op"], op, "{record}");
    assert_eq!(record["id"], record["workitemId"]);
    assert_eq!(record["outcome"].as_str(), outcome, "{record}");
    let requested = record["requestedAt"].as_str().unwrap();
    assert!(
        requested.ends_with('Z') && requested.len() == 24,
        "{record}"
    );
    if let (Some(started), Some(finished)) =
        (record["startedAt"].as_str(), record["finishedAt"].as_str())
    {
        assert!(requested <= started && started <= finished, "{record}");
    }
    assert_eq!(
        record["traceId"].as_str().map(str::len),
        Some(32),
        "every workitem names a trace: {record}"
    );
}

#[tokio::test]
async fn a_completed_deploy_keeps_its_record_with_steps_trace_and_the_request_redacted() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db", "secret": VAULT_SECRET}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, queued) = a.command("c1", "deploy", secret_deploy("web")).await;
    assert_eq!(status, StatusCode::OK, "{queued}");
    let id = queued["requestId"].as_str().unwrap().to_owned();

    // Outstanding: requested, not started, no outcome yet.
    let waiting = record(a, &id).await;
    assert_shape(&waiting, "deploy", None);
    assert_eq!(waiting["startedAt"], Value::Null);
    assert_eq!(waiting["requestedBy"], "admin");
    let traceparent = queued["traceparent"].as_str().unwrap();
    assert_eq!(waiting["traceId"], traceparent.split('-').nth(1).unwrap());

    let worker = t.worker().await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["request"]["config"][1]["value"], ENV_SECRET);
    let started = record(a, &id).await;
    assert!(started["startedAt"].is_string(), "{started}");
    assert_eq!(started["outcome"], Value::Null);

    let mut params = lease(&claimed);
    params["installation"] = json!({"installationStatus": "RUNNING", "replicaCount": 1});
    params["steps"] = steps();
    params["traceId"] = json!(TRACE_ID);
    let (status, body) = worker.procedure("completeWorkitem", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(workitem_gone(a, &id).await, "success deletes the workitem");

    let done = record(a, &id).await;
    assert_shape(&done, "deploy", Some("SUCCEEDED"));
    assert_eq!(done["clusterName"], "c1");
    assert_eq!(done["installationName"], "web");
    assert_eq!(done["namespace"], "apps");
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["steps"], steps());
    assert_eq!(done["traceId"], TRACE_ID);
    let config = &done["request"]["config"];
    assert_eq!(config[1]["value"], "<redacted>");
    assert_eq!(config[2]["value"], "@secrets(db)", "references stay");
    assert_eq!(config[3]["content"], "<redacted>");

    // No read of the history shows a secret value.
    let reads = [
        a.get(OPERATIONS).await,
        a.get(&format!("{OPERATIONS}/{id}")).await,
        select(a, &[("where", json!({"op": "deploy"}))]).await,
    ];
    for (status, body) in reads {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.as_array().is_some_and(Vec::is_empty), "{body}");
        let text = body.to_string();
        for secret in [ENV_SECRET, FILE_SECRET, VAULT_SECRET] {
            assert!(!text.contains(secret), "a read shows {secret}");
        }
    }
    // Nor does the table: secret values never reach it, sealed or not.
    let stored: String = t
        .database()
        .query_row(
            "SELECT group_concat(request) FROM k8soperations",
            [],
            |row| row.get(0),
        )
        .unwrap();
    for secret in [ENV_SECRET, FILE_SECRET] {
        assert!(!stored.contains(secret));
    }
    assert!(!stored.contains("k8sw-sealed"), "{stored}");
    t.stop().await;
}

#[tokio::test]
async fn failed_invalid_and_cancelled_operations_are_recorded_with_their_errors() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let worker = t.worker().await;

    // FAILED, reported with the plan's steps.
    let failed_id = deploy_id(a, "c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let mut params = lease(&claimed);
    params["message"] = json!("pod web-0: ImagePullBackOff");
    params["steps"] = steps();
    let (status, body) = worker.procedure("failWorkitem", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failed = record(a, &failed_id).await;
    assert_shape(&failed, "deploy", Some("FAILED"));
    assert_eq!(failed["error"], "pod web-0: ImagePullBackOff");
    assert_eq!(failed["steps"], steps());
    // An admin clearing the failed workitem leaves the record as it was.
    let (status, _) = a
        .delete(&format!("/api/v1/resources/k8sworkitems/{failed_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(record(a, &failed_id).await, failed);

    // INVALID, from the worker (an old one: no steps, no trace id).
    let invalid_id = deploy_id(a, "c1", "api").await;
    let claimed = worker.claim("c1", 0.0).await;
    let mut params = lease(&claimed);
    params["status"] = json!("INVALID");
    params["message"] = json!("image name is not valid");
    let (status, body) = worker.procedure("failWorkitem", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let invalid = record(a, &invalid_id).await;
    assert_shape(&invalid, "deploy", Some("INVALID"));
    assert_eq!(invalid["error"], "image name is not valid");
    assert_eq!(invalid["steps"], json!([]));
    assert_eq!(
        invalid["traceId"],
        claimed["traceparent"]
            .as_str()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap(),
        "without a reported trace id, the workitem's"
    );

    // INVALID at claim time: the secret it needs is gone.
    let (status, _) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db", "secret": VAULT_SECRET}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, queued) = a.command("c1", "deploy", secret_deploy("db-app")).await;
    assert_eq!(status, StatusCode::OK, "{queued}");
    let refused_id = queued["requestId"].as_str().unwrap().to_owned();
    let (status, _) = a.delete("/api/v1/resources/secrets/db").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, nothing) = worker
        .procedure("claimWorkitem", json!({"clusterName": "c1"}))
        .await;
    assert_eq!((status, nothing), (StatusCode::OK, Value::Null));
    let refused = record(a, &refused_id).await;
    assert_shape(&refused, "deploy", Some("INVALID"));
    assert!(
        refused["error"].as_str().unwrap().contains("db"),
        "{refused}"
    );
    assert_eq!(refused["startedAt"], Value::Null, "never started");

    // CANCELLED before a worker took it: the workitem is gone, the record stays.
    let cancelled_id = deploy_id(a, "c1", "cron").await;
    let (status, _) = a
        .delete(&format!("/api/v1/resources/k8sworkitems/{cancelled_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(workitem_gone(a, &cancelled_id).await);
    let cancelled = record(a, &cancelled_id).await;
    assert_shape(&cancelled, "deploy", Some("CANCELLED"));
    assert!(cancelled["error"].is_string());
    assert!(cancelled["finishedAt"].is_string());

    // CANCELLED while leased, then given back by its worker unstarted.
    let leased_id = deploy_id(a, "c1", "batch").await;
    let claimed = worker.claim("c1", 0.0).await;
    let (status, _) = a
        .delete(&format!("/api/v1/resources/k8sworkitems/{leased_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(record(a, &leased_id).await["outcome"], Value::Null);
    let (status, body) = worker.procedure("releaseWorkitem", lease(&claimed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_shape(&record(a, &leased_id).await, "deploy", Some("CANCELLED"));

    // The select conventions of every resource.
    let (status, body) = select(
        a,
        &[
            (
                "where",
                json!({"outcome": {"$in": ["INVALID", "CANCELLED"]}}),
            ),
            ("props", json!(["id", "outcome"])),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        invalid_id.as_str(),
        refused_id.as_str(),
        cancelled_id.as_str(),
        leased_id.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(
        body[0].get("op").is_none(),
        "props keeps only id and outcome"
    );
    let (status, body) = select(
        a,
        &[("sort", json!({"requestedAt": 1})), ("limit", json!(2))],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["id"], failed_id.as_str());
    assert_eq!(body.as_array().unwrap().len(), 2);
    // The list's own order: the most recent first.
    let (_, all) = a.get(OPERATIONS).await;
    assert_eq!(all[0]["id"], leased_id.as_str());
    assert_eq!(all.as_array().unwrap().len(), 5);
    let (status, body) = a.get(&format!("{OPERATIONS}/no-such-id")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    t.stop().await;
}

#[tokio::test]
async fn only_admins_read_the_history() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let id = deploy_id(a, "c1", "web").await;
    let user = t.user().await;
    let worker = t.worker().await;
    for caller in [&user, &worker] {
        for path in [OPERATIONS.to_owned(), format!("{OPERATIONS}/{id}")] {
            let (status, body) = caller.get(&path).await;
            assert_error(status, &body, 403, "io.vantiq.authorization.denied");
            assert!(!body.to_string().contains(&id), "{body}");
        }
        let (status, body) = caller
            .post(&format!("{OPERATIONS}/select"), json!({}))
            .await;
        assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    }
    // Read-only for everyone.
    let (status, body) = a.delete(&format!("{OPERATIONS}/{id}")).await;
    assert_eq!(status.as_u16(), 405, "{body}");
    assert_eq!(t.rows("k8soperations"), 1, "nothing was deleted");
    t.stop().await;
}

#[tokio::test]
async fn finished_records_are_pruned_after_the_retention_and_outstanding_ones_stay() {
    let t = TestServer::start_with(|c| c.history_retention = Duration::from_millis(300)).await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let worker = t.worker().await;
    let done_id = deploy_id(a, "c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let (status, body) = worker.complete(&claimed, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let waiting_id = deploy_id(a, "c1", "api").await;
    assert_eq!(record(a, &done_id).await["outcome"], "SUCCEEDED");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = a.get(&format!("{OPERATIONS}/{done_id}")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finished record was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outstanding one is older than the retention too, and stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(record(a, &waiting_id).await["outcome"], Value::Null);
    assert_eq!(t.rows("k8soperations"), 1);
    t.stop().await;
}

#[tokio::test]
async fn a_worker_on_the_documented_rest_surface_leaves_a_record_without_steps() {
    let t = TestServer::start_with(|c| c.vantiq_strict = true).await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let worker = t.worker().await;
    let id = deploy_id(a, "c1", "web").await;
    let path = format!("/api/v1/resources/k8sworkitems/{id}");
    let (status, body) = worker.put(&path, json!({"status": "PENDING"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(record(a, &id).await["startedAt"].is_string());
    let (status, body) = worker.delete(&path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let done = record(a, &id).await;
    assert_shape(&done, "deploy", Some("SUCCEEDED"));
    assert_eq!(done["steps"], json!([]));

    let failed_id = deploy_id(a, "c1", "api").await;
    let path = format!("/api/v1/resources/k8sworkitems/{failed_id}");
    let (status, _) = worker.put(&path, json!({"status": "PENDING"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = worker
        .put(&path, json!({"status": "FAILED", "message": "no pods"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failed = record(a, &failed_id).await;
    assert_shape(&failed, "deploy", Some("FAILED"));
    assert_eq!(failed["error"], "no pods");
    t.stop().await;
}

#[tokio::test]
async fn every_operation_is_recorded() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let worker = t.worker().await;
    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let (status, _) = worker.complete(&claimed, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // A verify a user asks for is recorded with who asked.
    let user = t.user().await;
    let (status, verify) = user
        .post(
            "/api/v1/resources/k8sinstallations/web/command",
            json!({"op": "verify"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{verify}");
    let claimed = worker.claim("c1", 0.0).await;
    let (status, _) = worker
        .complete(&claimed, json!({"installationStatus": "RUNNING"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    for op in ["shutdown", "restart", "fetchLogs", "undeploy"] {
        let (status, body) = a.command("c1", op, json!({"name": "web"})).await;
        assert_eq!(status, StatusCode::OK, "{op}: {body}");
        let claimed = worker.claim("c1", 0.0).await;
        let (status, body) = worker.complete(&claimed, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{op}: {body}");
    }
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/web/command",
            json!({"op": "verify"}),
        )
        .await;
    // The installation was undeployed: a verify of it is refused, and
    // refusals at request time make no workitem and no record.
    assert_eq!(status.as_u16(), 404, "{body}");
    let (_, all) = a.get(OPERATIONS).await;
    let all = all.as_array().unwrap();
    let ops: Vec<&str> = all
        .iter()
        .rev()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "deploy",
            "verify",
            "shutdown",
            "restart",
            "fetchLogs",
            "undeploy"
        ]
    );
    for record in all {
        assert_shape(record, record["op"].as_str().unwrap(), Some("SUCCEEDED"));
    }
    let verified = record(a, verify["requestId"].as_str().unwrap()).await;
    assert_eq!(verified["requestedBy"], verify["requestedBy"]);
    assert_ne!(verified["requestedBy"], "admin");
    t.stop().await;
}

/// `GET OPERATIONS` with these query parameters.
async fn select(a: &Client, query: &[(&str, Value)]) -> (StatusCode, Value) {
    let query: Vec<(&str, String)> = query
        .iter()
        .map(|(name, value)| {
            (
                *name,
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            )
        })
        .collect();
    let (status, _, body) = a
        .send(a.request(reqwest::Method::GET, OPERATIONS).query(&query))
        .await;
    (status, body)
}

/// A record whose workitem is still in the queue (`FAILED`, waiting for an
/// admin to clear it) is not pruned, however long ago it finished: once the
/// record was gone, clearing the workitem wrote a new one saying it was
/// cancelled before its worker carried it out, not that it failed. Pruned
/// after the retention once the workitem is cleared.
#[tokio::test]
async fn a_record_whose_workitem_is_still_queued_is_kept_past_the_retention() {
    let t = TestServer::start_with(|c| c.history_retention = Duration::from_millis(300)).await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let worker = t.worker().await;
    let failed_id = deploy_id(a, "c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let mut params = lease(&claimed);
    params["message"] = json!("pod web-0: ImagePullBackOff");
    let (status, body) = worker.procedure("failWorkitem", params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failed = record(a, &failed_id).await;
    assert_eq!(failed["outcome"], "FAILED");
    // Several sweeps past the retention: the record stays as it was.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(record(a, &failed_id).await, failed);
    // Clearing the workitem leaves it as it was, then the sweep prunes it.
    let (status, _) = a
        .delete(&format!("/api/v1/resources/k8sworkitems/{failed_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = a.get(&format!("{OPERATIONS}/{failed_id}")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(body, failed, "the record was rewritten");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record of the cleared workitem was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(t.rows("k8soperations"), 0);
    t.stop().await;
}
