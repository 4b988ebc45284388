//! `--vantiq-strict`: only Vantiq's documented surface, and a worker token
//! allowed what `vantiq-api.md` §6.2 infers a Vantiq worker needs (its
//! cluster's workitems' status, their delete when done, its cluster's
//! installation records) and nothing more. Every refusal leaves the
//! database as it was.

mod common;

use common::{TestServer, assert_error};
use serde_json::{Value, json};

const ITEMS: &str = "/api/v1/resources/k8sworkitems";
const RECORDS: &str = "/api/v1/resources/k8sinstallations";

async fn strict() -> TestServer {
    TestServer::start_with(|config| config.vantiq_strict = true).await
}

/// A worker's `PUT k8sworkitems/<id>` with `body`.
async fn put_item(worker: &common::Client, id: &str, body: Value) -> (reqwest::StatusCode, Value) {
    worker.put(&format!("{ITEMS}/{id}"), body).await
}

fn status_of(t: &TestServer, id: &str) -> String {
    t.database()
        .query_row(
            "SELECT status FROM k8sworkitems WHERE request_id = ?1",
            [id],
            |row| row.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn no_version_endpoint_and_no_worker_procedures() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    t.admin.deploy("c1", "web").await;
    let (status, _) = worker.get("/api/v1/version").await;
    assert_eq!(status, 404);
    for procedure in [
        "claimWorkitem",
        "renewWorkitemLease",
        "renewWorkitemLeases",
        "completeWorkitem",
        "failWorkitem",
        "releaseWorkitem",
    ] {
        let (status, body) = worker
            .procedure(
                procedure,
                json!({"clusterName": "c1", "requestId": "x", "leaseId": "y"}),
            )
            .await;
        assert_error(status, &body, 404, "io.vantiq.procedure.unknown");
    }
    let (_, items) = t.admin.get(ITEMS).await;
    assert_eq!(items[0]["status"], "REQUESTED", "nothing claimed: {items}");
    // The documented procedure stays.
    let (status, body) = t.admin.procedure("addK8sWorkerProfile", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_worker_marks_pending_once_fails_with_a_message_and_deletes_when_done() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let first = t.admin.deploy("c1", "web").await;
    let second = t.admin.deploy("c1", "api").await;
    let (first, second) = (
        first["requestId"].as_str().unwrap().to_owned(),
        second["requestId"].as_str().unwrap().to_owned(),
    );

    let (status, body) = put_item(&worker, &first, json!({"status": "PENDING"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "PENDING");
    // Taken already: a second mark is a conflict, so two workers never both work on it.
    let (status, body) = put_item(&worker, &first, json!({"status": "PENDING"})).await;
    assert_error(
        status,
        &body,
        409,
        "io.vantiq.resources.k8s.workitem.status.conflict",
    );
    // Only status and message change.
    let (status, body) = put_item(
        &worker,
        &first,
        json!({"status": "FAILED", "requestedBy": "mallory"}),
    )
    .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    assert_eq!(status_of(&t, &first), "PENDING");

    let (status, body) = put_item(
        &worker,
        &first,
        json!({"status": "FAILED", "message": "pod web-0: ImagePullBackOff"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["message"], "pod web-0: ImagePullBackOff");

    // Done: the worker's delete removes it at once.
    put_item(&worker, &second, json!({"status": "PENDING"})).await;
    let (status, body) = worker.delete(&format!("{ITEMS}/{second}")).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(t.rows("k8sworkitems"), 1);
}

#[tokio::test]
async fn a_worker_writes_its_clusters_records_and_nothing_else() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    t.admin.create_cluster("c2").await;
    let item = t.admin.deploy("c1", "web").await;
    let id = item["requestId"].as_str().unwrap();
    // Binds the token to c1.
    put_item(&worker, id, json!({"status": "PENDING"})).await;

    let record = json!({
        "name": "web", "clusterName": "c1", "k8sNamespace": "apps",
        "configSpec": [{"type": "image", "name": "app"}], "installedBy": "admin",
        "installationStatus": "RUNNING", "replicaCount": 1, "k8sInstallationType": "STATEFUL_SET",
    });
    let (status, body) = worker
        .post(&format!("{RECORDS}?upsert=true"), record.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installationStatus"], "RUNNING");
    assert_eq!(body["ars_createdBy"], body["ars_modifiedBy"]);
    let (status, body) = worker
        .post(
            &format!("{RECORDS}?upsert=true"),
            json!({"name": "web", "clusterName": "c1", "installationStatus": "STOPPED"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installationStatus"], "STOPPED");
    assert_eq!(body["replicaCount"], 1, "merged: {body}");

    // Refused, and nothing written: a property a worker does not set, a
    // status no worker reports, another cluster.
    let before: Value = t.admin.get(&format!("{RECORDS}/web")).await.1;
    for (body, expected, code) in [
        (
            json!({"name": "web", "clusterName": "c1", "quotaConsumed": {"vCPU": "0"}}),
            400,
            "io.vantiq.argument.invalid",
        ),
        (
            json!({"name": "web", "clusterName": "c1", "installationStatus": "STARTING"}),
            400,
            "io.vantiq.argument.invalid",
        ),
        (
            json!({"name": "web", "clusterName": "c2"}),
            403,
            "io.vantiq.resources.k8s.worker.cluster.denied",
        ),
        (
            json!({"name": "other", "clusterName": "c2"}),
            403,
            "io.vantiq.resources.k8s.worker.cluster.denied",
        ),
    ] {
        let (status, answer) = worker.post(&format!("{RECORDS}?upsert=true"), body).await;
        assert_error(status, &answer, expected, code);
    }
    assert_eq!(t.admin.get(&format!("{RECORDS}/web")).await.1, before);
    assert_eq!(t.rows("k8sinstallations"), 1);

    // Beyond the worker's surface: clusters, commands, another cluster's
    // workitems (tokens, secrets and the rest: tests/api.rs).
    let other = t.admin.deploy("c2", "api").await;
    let other = other["requestId"].as_str().unwrap();
    let refusals = [
        worker
            .post("/api/v1/resources/k8sclusters", json!({"name": "c3"}))
            .await,
        worker
            .put(
                "/api/v1/resources/k8sclusters/c1",
                json!({"ingressDefaultNode": "x"}),
            )
            .await,
        worker
            .command("c1", "undeploy", json!({"name": "web"}))
            .await,
        put_item(&worker, other, json!({"status": "PENDING"})).await,
        worker.delete(&format!("{ITEMS}/{other}")).await,
    ];
    for (status, body) in refusals {
        assert_eq!(status.as_u16(), 403, "{body}");
    }
    assert_eq!(status_of(&t, other), "REQUESTED");
    assert_eq!(t.rows("k8sclusters"), 2);

    // Undeploy: the worker removes its record.
    let (status, body) = worker.delete(&format!("{RECORDS}/web")).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(t.rows("k8sinstallations"), 0);
    // Users still cannot write records.
    let user = t.user().await;
    let (status, body) = user.post(&format!("{RECORDS}?upsert=true"), record).await;
    assert_eq!(status.as_u16(), 403, "{body}");
    assert_eq!(t.rows("k8sinstallations"), 0);
}

#[tokio::test]
async fn without_the_flag_the_resources_stay_read_only() {
    let t = TestServer::start().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let item = t.admin.deploy("c1", "web").await;
    let id = item["requestId"].as_str().unwrap();
    for (status, body) in [
        put_item(&worker, id, json!({"status": "PENDING"})).await,
        worker
            .post(
                &format!("{RECORDS}?upsert=true"),
                json!({"name": "web", "clusterName": "c1"}),
            )
            .await,
    ] {
        assert_error(
            status,
            &body,
            405,
            "io.vantiq.resource.operation.not.allowed",
        );
    }
    assert_eq!(status_of(&t, id), "REQUESTED");
    assert_eq!(t.rows("k8sinstallations"), 0);
}

/// Deploys of `names` to cluster c1, in order: their request ids.
async fn deploys<const N: usize>(t: &TestServer, names: [&str; N]) -> [String; N] {
    let mut ids = Vec::new();
    for name in names {
        let item = t.admin.deploy("c1", name).await;
        ids.push(item["requestId"].as_str().unwrap().to_owned());
    }
    ids.try_into().unwrap()
}

/// The raw stored `doc` of installation `name`.
fn stored_record(t: &TestServer, name: &str) -> Value {
    let doc: String = t
        .database()
        .query_row(
            "SELECT doc FROM k8sinstallations WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap();
    serde_json::from_str(&doc).unwrap()
}

#[tokio::test]
async fn a_worker_deletes_only_the_workitems_it_took() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let [waiting, failed] = deploys(&t, ["web", "api"]).await;
    put_item(&worker, &failed, json!({"status": "PENDING"})).await;
    let (status, body) = put_item(
        &worker,
        &failed,
        json!({"status": "FAILED", "message": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Never taken: deleting it would skip its work. Failed: the admin's record.
    for (id, from) in [(&waiting, "REQUESTED"), (&failed, "FAILED")] {
        let (status, body) = worker.delete(&format!("{ITEMS}/{id}")).await;
        assert_error(
            status,
            &body,
            409,
            "io.vantiq.resources.k8s.workitem.status.conflict",
        );
        assert_eq!(status_of(&t, id), from);
    }
    assert_eq!(t.rows("k8sworkitems"), 2);
    // The admin still deletes (cancels) either.
    let (status, body) = t.admin.delete(&format!("{ITEMS}/{failed}")).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(t.rows("k8sworkitems"), 1);
}

#[tokio::test]
async fn an_installations_workitems_are_taken_one_at_a_time_oldest_first() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let [first, second, other] = deploys(&t, ["web", "web", "api"]).await;
    let conflict = |(status, body): (reqwest::StatusCode, Value)| {
        assert_error(
            status,
            &body,
            409,
            "io.vantiq.resources.k8s.workitem.status.conflict",
        )
    };

    // The later one cannot overtake the older, queued or taken.
    conflict(put_item(&worker, &second, json!({"status": "PENDING"})).await);
    assert_eq!(status_of(&t, &second), "REQUESTED");
    let (status, body) = put_item(&worker, &first, json!({"status": "PENDING"})).await;
    assert_eq!(status, 200, "{body}");
    conflict(put_item(&worker, &second, json!({"status": "PENDING"})).await);
    assert_eq!(status_of(&t, &second), "REQUESTED");
    // Another installation is not held up.
    let (status, body) = put_item(&worker, &other, json!({"status": "PENDING"})).await;
    assert_eq!(status, 200, "{body}");

    // Once the first is done, the second is next.
    let (status, body) = worker.delete(&format!("{ITEMS}/{first}")).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = put_item(&worker, &second, json!({"status": "PENDING"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "PENDING");
}

#[tokio::test]
async fn a_workers_record_has_the_protocols_types() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let base = json!({"name": "web", "clusterName": "c1", "installationStatus": "RUNNING", "replicaCount": 1});
    let (status, body) = worker.post(&format!("{RECORDS}?upsert=true"), base).await;
    assert_eq!(status, 200, "{body}");
    let before = stored_record(&t, "web");
    for (key, value) in [
        ("replicaCount", json!("lots")),
        ("replicaCount", json!(1.5)),
        ("k8sAssociatedServices", json!(42)),
        ("k8sAssociatedSecrets", json!([{"name": "other-app"}])),
        ("k8sInstallationInfo", json!("text")),
        ("k8sState", json!({"a": 1})),
        ("k8sNamespace", json!(7)),
        ("installationDate", json!({})),
        ("installedBy", json!(["admin"])),
        ("configSpec", json!("image: nginx")),
        ("installationStatus", json!(true)),
    ] {
        let mut body = json!({"name": "web", "clusterName": "c1"});
        body[key] = value;
        let (status, answer) = worker.post(&format!("{RECORDS}?upsert=true"), body).await;
        assert_error(status, &answer, 400, "io.vantiq.argument.invalid");
        assert!(answer.to_string().contains(key), "{key}: {answer}");
        assert_eq!(stored_record(&t, "web"), before, "{key}: nothing written");
    }
    assert_eq!(t.rows("k8sinstallations"), 1);
    // What a request did not say may be written unset.
    let (status, body) = worker
        .post(
            &format!("{RECORDS}?upsert=true"),
            json!({"name": "web", "clusterName": "c1", "k8sNamespace": null, "installedBy": null}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replicaCount"], 1);
}

#[tokio::test]
async fn a_redacted_secret_a_worker_writes_back_keeps_the_stored_value() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let secret = |value: &str| {
        json!({"name": "web", "clusterName": "c1", "configSpec": [
            {"type": "image", "name": "app"},
            {"type": "environmentVariable", "name": "KEY", "value": value, "asSecret": true},
        ]})
    };
    let (status, body) = worker
        .post(&format!("{RECORDS}?upsert=true"), secret("s3cret"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["configSpec"][1]["value"], "<redacted>");
    let sealed = stored_record(&t, "web")["configSpec"][1]["value"].clone();
    assert!(!sealed.to_string().contains("s3cret"), "sealed at rest");

    // The record as read, written back: the stored value stays as it was
    // (sealing the marker would have replaced the secret with its text).
    let (_, read) = worker.get(&format!("{RECORDS}/web")).await;
    assert_eq!(read["configSpec"][1]["value"], "<redacted>");
    let (status, body) = worker
        .post(&format!("{RECORDS}?upsert=true"), secret("<redacted>"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_record(&t, "web")["configSpec"][1]["value"], sealed);

    // A marker with nothing stored to stand for, or outside a secret slot:
    // refused, nothing written.
    let before = stored_record(&t, "web");
    let mut other_entry = secret("<redacted>");
    other_entry["configSpec"][1]["name"] = json!("NEW");
    let mut not_secret = secret("<redacted>");
    not_secret["configSpec"][1]["asSecret"] = json!(false);
    let mut first = secret("<redacted>");
    first["name"] = json!("api");
    for body in [other_entry, not_secret, first] {
        let (status, answer) = worker.post(&format!("{RECORDS}?upsert=true"), body).await;
        assert_error(status, &answer, 400, "io.vantiq.argument.invalid");
    }
    assert_eq!(stored_record(&t, "web"), before);
    assert_eq!(t.rows("k8sinstallations"), 1);
}

#[tokio::test]
async fn an_item_taken_and_given_back_too_often_fails_for_good() {
    let t = TestServer::start_with(|config| {
        config.vantiq_strict = true;
        config.max_workitem_attempts = 2;
    })
    .await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let item = t.admin.deploy("c1", "web").await;
    let id = item["requestId"].as_str().unwrap();
    for _ in 0..2 {
        let (status, body) = put_item(&worker, id, json!({"status": "PENDING"})).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = put_item(&worker, id, json!({"status": "REQUESTED"})).await;
        assert_eq!(status, 200, "{body}");
    }
    // A third take: the claim protocol's limit, so it fails instead.
    let (status, body) = put_item(&worker, id, json!({"status": "PENDING"})).await;
    assert_error(
        status,
        &body,
        409,
        "io.vantiq.resources.k8s.workitem.status.conflict",
    );
    assert_eq!(status_of(&t, id), "FAILED");
    let (_, item) = t.admin.get(&format!("{ITEMS}/{id}")).await;
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{item}"
    );
    let (_, record) = t.admin.get(&format!("{RECORDS}/web")).await;
    assert_eq!(record["installationStatus"], "FAILED", "{record}");
}

#[tokio::test]
async fn a_workers_record_has_a_valid_name_and_stays_in_its_namespace() {
    let t = strict().await;
    let worker = t.worker().await;
    t.admin.create_cluster("c1").await;
    let url = format!("{RECORDS}?upsert=true");
    let upsert = |body: Value| worker.post(&url, body);
    let (status, body) =
        upsert(json!({"name": "web", "clusterName": "c1", "k8sNamespace": "apps"})).await;
    assert_eq!(status, 200, "{body}");
    let before = stored_record(&t, "web");

    // No deploy could have made these, so no command could address them.
    for body in [
        json!({"name": "../web", "clusterName": "c1"}),
        json!({"name": "Web", "clusterName": "c1"}),
        json!({"name": "w".repeat(5000), "clusterName": "c1"}),
        json!({"name": "api", "clusterName": "c1", "k8sNamespace": "Apps/../x"}),
    ] {
        let (status, answer) = upsert(body.clone()).await;
        assert_error(
            status,
            &answer,
            400,
            "io.vantiq.resources.k8s.request.invalid",
        );
    }
    // An installation lives in one K8s namespace (as a redeploy is refused).
    let (status, answer) =
        upsert(json!({"name": "web", "clusterName": "c1", "k8sNamespace": "other"})).await;
    assert_error(
        status,
        &answer,
        400,
        "io.vantiq.resources.k8s.installation.other.namespace",
    );
    assert_eq!(stored_record(&t, "web"), before);
    assert_eq!(t.rows("k8sinstallations"), 1);
    // The same namespace again is a plain update.
    let (status, body) = upsert(
        json!({"name": "web", "clusterName": "c1", "k8sNamespace": "apps", "replicaCount": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replicaCount"], 2);
}
