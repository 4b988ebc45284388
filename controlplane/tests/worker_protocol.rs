//! The worker protocol against the real server: claims, leases, long-poll,
//! completion and failure, ancillaries, trace context, verify and delayed
//! flagging, and 8 claimers racing over 1,000 workitems.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, assert_error, deploy_data};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn claim_complete_and_the_installation_record() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.put(
        "/api/v1/resources/k8sclusters/c1",
        json!({"ingressDefaultNode": "node.example"}),
    )
    .await;
    let item = a.deploy("c1", "web").await;

    let (status, body) = worker
        .procedure(
            "claimWorkitem",
            json!({"clusterName": "c1", "workerId": "gw-1", "leaseSeconds": 30}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requestId"], item["requestId"]);
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["leaseOwner"], "gw-1");
    assert_eq!(body["leaseSeconds"], 30);
    assert_eq!(body["attempts"], 1);
    assert_eq!(body["installation"], Value::Null);
    assert_eq!(
        body["cluster"],
        json!({"name": "c1", "ingressDefaultNode": "node.example"})
    );
    assert_eq!(body["ancillaries"], json!({"secrets": {}, "documents": {}}));
    assert!(body["leaseId"].is_string());
    let (_, listed) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            item["requestId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed["status"], "PENDING");

    // Nothing else to claim; a wrong lease cannot complete.
    assert_eq!(worker.claim("c1", 0.0).await, Value::Null);
    let wrong = json!({"requestId": body["requestId"], "leaseId": "not-the-lease"});
    let (status, err) = worker.complete(&wrong, json!({})).await;
    assert_error(
        status,
        &err,
        409,
        "io.vantiq.resources.k8s.workitem.lease.lost",
    );
    let (status, err) = worker.complete(&body, json!({"name": "hijack"})).await;
    assert_error(status, &err, 400, "io.vantiq.argument.invalid");
    let (status, err) = worker
        .complete(&body, json!({"installationStatus": "GREAT"}))
        .await;
    assert_error(status, &err, 400, "io.vantiq.argument.invalid");

    let (status, done) = worker
        .complete(&body, json!({"replicaCount": 1, "k8sState": "Ready 1/1", "k8sInstallationIdentifier": "uid-1"}))
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["installation"]["installationStatus"], "RUNNING");
    assert_eq!(done["installation"]["k8sInstallationIdentifier"], "uid-1");
    // Success removes the workitem; completing twice is a lost lease... of a gone item.
    assert_eq!(a.get("/api/v1/resources/k8sworkitems").await.1, json!([]));
    let (status, err) = worker.complete(&body, json!({})).await;
    assert_error(status, &err, 404, "io.vantiq.resource.not.found");

    // shutdown → STOPPED, restart → RUNNING; the claim carries the installation.
    a.command("c1", "shutdown", json!({"name": "web"})).await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["operation"], "shutdown");
    assert_eq!(
        claimed["installation"]["configSpec"],
        deploy_data("web")["config"]
    );
    let (_, done) = worker.complete(&claimed, json!({"replicaCount": 0})).await;
    assert_eq!(done["installation"]["installationStatus"], "STOPPED");
    a.command("c1", "restart", json!({"name": "web"})).await;
    let claimed = worker.claim("c1", 0.0).await;
    let (_, done) = worker.complete(&claimed, json!({})).await;
    assert_eq!(done["installation"]["installationStatus"], "RUNNING");
    t.stop().await;
}

#[tokio::test]
async fn failures_mark_workitem_and_installation() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;

    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let params = |status: &str| json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"], "status": status, "message": "ImagePullBackOff on pod web-0"});
    let (status, body) = worker.procedure("failWorkitem", params("DONE")).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = worker
        .procedure(
            "failWorkitem",
            json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"]}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = worker.procedure("failWorkitem", params("FAILED")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["message"], "ImagePullBackOff on pod web-0");
    let (_, inst) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(inst["installationStatus"], "FAILED");
    assert_eq!(inst["configSpec"], deploy_data("web")["config"]);
    // A FAILED workitem stays, is not claimable, and does not block deletion forever.
    assert_eq!(worker.claim("c1", 0.0).await, Value::Null);
    let (_, items) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(items[0]["status"], "FAILED");

    // INVALID for a bad first deploy creates no installation.
    a.deploy("c1", "other").await;
    let claimed = worker.claim("c1", 0.0).await;
    let (_, body) = worker
        .procedure("failWorkitem", json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"], "status": "INVALID", "message": "bad"}))
        .await;
    assert_eq!(body["status"], "INVALID");
    let (status, _) = a.get("/api/v1/resources/k8sinstallations/other").await;
    assert_eq!(status, 404);
    t.stop().await;
}

/// `renewWorkitemLeases`: every lease a worker holds in one call, each
/// answered with its fate as `renewWorkitemLease` would say it alone.
#[tokio::test]
async fn every_held_lease_is_renewed_in_one_call_each_with_its_fate() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    for name in ["held", "cancelled", "released", "done"] {
        a.deploy("c1", name).await;
    }
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let (_, item) = worker
            .procedure(
                "claimWorkitem",
                json!({"clusterName": "c1", "leaseSeconds": 5}),
            )
            .await;
        claimed.push(item);
    }
    let lease = |item: &Value| json!({"requestId": item["requestId"], "leaseId": item["leaseId"]});
    let id = |item: &Value| item["requestId"].as_str().unwrap().to_owned();
    // A cancel of a leased item keeps it CANCELLED under its lease.
    let (status, body) = a
        .delete(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            id(&claimed[1])
        ))
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = worker
        .procedure("releaseWorkitem", lease(&claimed[2]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(worker.complete(&claimed[3], json!({})).await.0, 200);

    let leases: Vec<Value> = claimed.iter().map(lease).collect();
    let (status, body) = worker
        .procedure(
            "renewWorkitemLeases",
            json!({"leases": leases, "leaseSeconds": 30}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fates: Vec<(String, &str)> = body["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["requestId"].as_str().unwrap().to_owned(),
                entry["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fates,
        vec![
            (id(&claimed[0]), "renewed"),
            (id(&claimed[1]), "cancelled"),
            (id(&claimed[2]), "lost"),
            (id(&claimed[3]), "gone"),
        ]
    );
    // Extended to 30 s: the renewed and the cancelled lease outlast their 5 s.
    let (_, held) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            id(&claimed[0])
        ))
        .await;
    assert_eq!(held["leaseExpiresAt"], body["leases"][0]["leaseExpiresAt"]);
    assert!(body["leases"][1]["leaseExpiresAt"].is_string());
    assert!(body["leases"][2].get("leaseExpiresAt").is_none());

    // Refused as a whole, naming the parameter; nothing renewed.
    for (params, field) in [
        (json!({"leases": []}), "leases"),
        (json!({"leases": "x"}), "leases"),
        (json!({"leases": [{"requestId": "r"}]}), "leases[0].leaseId"),
        (json!({"leases": [lease(&claimed[0]), 7]}), "leases[1]"),
    ] {
        let (status, body) = worker.procedure("renewWorkitemLeases", params).await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"][0], field, "{body}");
    }
    let (_, after) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            id(&claimed[0])
        ))
        .await;
    assert_eq!(after["leaseExpiresAt"], held["leaseExpiresAt"]);
    t.stop().await;
}

#[tokio::test]
async fn expired_leases_return_to_requested_and_renewal_keeps_them() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let w1 = t.worker().await;
    let w2 = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;

    let (_, first) = w1
        .procedure(
            "claimWorkitem",
            json!({"clusterName": "c1", "leaseSeconds": 0.3}),
        )
        .await;
    assert_eq!(first["status"], "PENDING");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The sweep returned it; another worker gets it.
    let (_, listed) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(listed[0]["status"], "REQUESTED");
    let second = w2.claim("c1", 0.0).await;
    assert_eq!(second["requestId"], first["requestId"]);
    assert_eq!(second["attempts"], 2);
    let (status, body) = w1.complete(&first, json!({})).await;
    assert_error(
        status,
        &body,
        409,
        "io.vantiq.resources.k8s.workitem.lease.lost",
    );

    // Renewal keeps the lease past its first expiry.
    let (status, renewed) = w2
        .procedure("renewWorkitemLease", json!({"requestId": second["requestId"], "leaseId": second["leaseId"], "leaseSeconds": 30}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["leaseSeconds"], 30);
    let (status, body) = w1
        .procedure(
            "renewWorkitemLease",
            json!({"requestId": first["requestId"], "leaseId": first["leaseId"]}),
        )
        .await;
    assert_error(
        status,
        &body,
        409,
        "io.vantiq.resources.k8s.workitem.lease.lost",
    );
    let (status, body) = w1
        .procedure(
            "claimWorkitem",
            json!({"clusterName": "c1", "leaseSeconds": 99999}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    // Release gives it back at once.
    let (status, released) = w2
        .procedure(
            "releaseWorkitem",
            json!({"requestId": second["requestId"], "leaseId": second["leaseId"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(released["status"], "REQUESTED");
    let third = w1.claim("c1", 0.0).await;
    assert_eq!(third["requestId"], first["requestId"]);
    assert_eq!(w1.complete(&third, json!({})).await.0, 200);
    t.stop().await;
}

/// Issue 12, case 10: a workitem that never reaches an outcome (its lease
/// expires or it is released, again and again) is failed for good after
/// `--max-workitem-attempts` claims, with how its last attempt ended; its
/// installation is marked FAILED, the workitem queued behind it runs, and
/// nothing else changes.
#[tokio::test]
async fn a_workitem_without_an_outcome_fails_after_the_attempt_bound() {
    let t = TestServer::start_with(|config| config.max_workitem_attempts = 3).await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    for name in ["web", "api"] {
        a.deploy("c1", name).await;
        let claimed = worker.claim("c1", 0.0).await;
        assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    }
    let (_, api_before) = a.get("/api/v1/resources/k8sinstallations/api").await;
    let poison = a.deploy("c1", "web").await;
    let (status, undeploy) = a.command("c1", "undeploy", json!({"name": "web"})).await;
    assert_eq!(status, 200, "{undeploy}");
    let claim = |lease: f64| {
        worker.procedure(
            "claimWorkitem",
            json!({"clusterName": "c1", "workerId": "gw-1", "leaseSeconds": lease}),
        )
    };

    for attempt in 1..=3 {
        let (status, claimed) = claim(0.3).await;
        assert_eq!(status, 200, "{claimed}");
        assert_eq!(
            claimed["requestId"], poison["requestId"],
            "attempt {attempt}"
        );
        assert_eq!(claimed["attempts"], attempt);
        if attempt == 2 {
            let (status, _) = worker
                .procedure(
                    "releaseWorkitem",
                    json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"]}),
                )
                .await;
            assert_eq!(status, 200);
        } else {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let (_, listed) = a
            .get(&format!(
                "/api/v1/resources/k8sworkitems/{}",
                poison["requestId"].as_str().unwrap()
            ))
            .await;
        assert_eq!(listed["status"], "REQUESTED", "attempt {attempt}: {listed}");
        let (_, web) = a.get("/api/v1/resources/k8sinstallations/web").await;
        assert_eq!(web["installationStatus"], "RUNNING", "not yet given up");
    }

    // The next claim gives up on it and hands out the undeploy behind it.
    let (status, next) = claim(30.0).await;
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["requestId"], undeploy["requestId"]);
    assert_eq!(next["operation"], "undeploy");
    let (_, failed) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            poison["requestId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["attempts"], 3);
    let message = failed["message"].as_str().unwrap();
    assert_eq!(
        message,
        "gave up after 3 attempts (the limit is 3), none of which reported an outcome; \
         the last: attempt 3: the lease of gw-1 expired before an outcome was reported"
    );
    let (_, web) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(web["installationStatus"], "FAILED");
    assert_eq!(web["k8sState"], message);
    // Nothing else changed: the other installation, and no other workitem.
    let (_, api_after) = a.get("/api/v1/resources/k8sinstallations/api").await;
    assert_eq!(api_after, api_before);
    let (_, items) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(items.as_array().unwrap().len(), 2, "{items}");

    // The undeploy runs to its end; the failed item is never claimed again.
    assert_eq!(worker.complete(&next, json!({})).await.0, 200);
    let (status, _) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(status, 404);
    assert_eq!(worker.claim("c1", 0.0).await, Value::Null);
    t.stop().await;
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_saying_so() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    let params = |message: String| json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"], "message": message});
    let (status, body) = worker
        .procedure("failWorkitem", params("x".repeat(1025)))
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    assert!(
        body.to_string()
            .contains("must be at most 1024 bytes, got 1025 bytes"),
        "{body}"
    );
    let (status, body) = worker
        .procedure("failWorkitem", params(String::new()))
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    assert!(body.to_string().contains("non-empty"), "{body}");
    let (_, listed) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(listed[0]["status"], "PENDING", "nothing written");
    let (status, body) = worker
        .procedure("failWorkitem", params("x".repeat(1024)))
        .await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
}

#[tokio::test]
async fn operations_on_one_installation_run_one_at_a_time_in_order() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let w1 = t.worker().await;
    let w2 = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    a.deploy("c1", "web").await; // an update queued behind the first
    a.deploy("c1", "api").await;
    let first = w1.claim("c1", 0.0).await;
    assert_eq!(first["request"]["name"], "web");
    // The second web deploy waits; the api deploy is free.
    let other = w2.claim("c1", 0.0).await;
    assert_eq!(other["request"]["name"], "api");
    assert_eq!(w2.claim("c1", 0.0).await, Value::Null);
    w1.complete(&first, json!({})).await;
    let next = w2.claim("c1", 0.0).await;
    assert_eq!(next["request"]["name"], "web");
    t.stop().await;
}

#[tokio::test]
async fn claims_resolve_secrets_and_documents_into_ancillaries() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.post(
        "/api/v1/resources/secrets",
        json!({"name": "db-pass", "secret": "hunter2"}),
    )
    .await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"key=value\n".to_vec()).file_name("conf/app.properties"),
    );
    a.send(
        a.request(Method::POST, "/api/v1/resources/documents")
            .multipart(form),
    )
    .await;
    let data = |name: &str, secret: &str| {
        json!({"name": name, "k8sNamespace": "apps", "config": [
            {"type": "image", "name": "app:1"},
            {"type": "environmentVariable", "name": "DB_PASS", "value": format!("@secrets({secret})")},
            {"type": "environmentVariable", "name": "LITERAL", "value": "\\@secrets(db-pass)"},
            {"type": "file", "path": "/etc/app", "resourceType": "documents", "resourceName": "conf/app.properties"}
        ]})
    };
    let (status, body) = a.command("c1", "deploy", data("web", "missing")).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.reference.missing",
    );
    let (status, item) = a.command("c1", "deploy", data("web", "db-pass")).await;
    assert_eq!(status, 200, "{item}");
    assert!(
        !item.to_string().contains("hunter2"),
        "a command answer never holds secret values"
    );

    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(
        claimed["ancillaries"]["secrets"],
        json!({"db-pass": "hunter2"})
    );
    assert_eq!(
        claimed["ancillaries"]["documents"]["conf/app.properties"],
        "a2V5PXZhbHVlCg=="
    );
    let (_, listed) = a.get("/api/v1/resources/k8sworkitems").await;
    assert!(
        !listed.to_string().contains("hunter2"),
        "admins never see ancillaries"
    );
    worker.complete(&claimed, json!({})).await;

    // A secret deleted after the request: the claim marks the item INVALID and moves on.
    a.command("c1", "restart", json!({"name": "web"})).await;
    a.delete("/api/v1/resources/secrets/db-pass").await;
    assert_eq!(worker.claim("c1", 0.0).await, Value::Null);
    let (_, listed) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(listed[0]["status"], "INVALID");
    assert!(listed[0]["message"].as_str().unwrap().contains("db-pass"));
    t.stop().await;
}

#[tokio::test]
async fn the_request_traceparent_reaches_the_claimer() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, _, item) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/k8sclusters/c1/command")
                .header("traceparent", traceparent)
                .json(&json!({"op": "deploy", "data": deploy_data("web")})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(item["traceparent"], traceparent);
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["traceparent"], traceparent);
    worker.complete(&claimed, json!({})).await;

    // Without (or with a garbage) header, the server starts a trace of its own.
    let (_, _, item) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/k8sclusters/c1/command")
                .header("traceparent", "garbage")
                .json(&json!({"op": "restart", "data": {"name": "web"}})),
        )
        .await;
    let own = item["traceparent"].as_str().unwrap();
    assert!(
        own.starts_with("00-") && own.len() == 55 && own != traceparent,
        "{own}"
    );
    assert_eq!(worker.claim("c1", 0.0).await["traceparent"], own);
    t.stop().await;
}

#[tokio::test]
async fn long_poll_picks_up_new_work_at_once() {
    let t = TestServer::start().await;
    let a = t.admin.clone();
    let worker = t.worker().await;
    a.create_cluster("c1").await;

    // Nothing comes: the wait ends at waitSeconds with null.
    let started = Instant::now();
    assert_eq!(worker.claim("c1", 0.5).await, Value::Null);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Work arriving during the wait is handed over immediately.
    let poll = tokio::spawn({
        let worker = worker.clone();
        async move {
            let claimed = worker.claim("c1", 20.0).await;
            (claimed, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let item = a.deploy("c1", "web").await;
    let enqueued = Instant::now();
    let (claimed, picked) = poll.await.unwrap();
    assert_eq!(claimed["requestId"], item["requestId"]);
    let latency = picked.saturating_duration_since(enqueued);
    assert!(latency < Duration::from_secs(1), "pickup took {latency:?}");

    // Work on another cluster does not wake this one's claimers with a wrong item.
    a.create_cluster("c2").await;
    let poll = tokio::spawn({
        let worker = worker.clone();
        async move { worker.claim("c1", 0.6).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.deploy("c2", "api").await;
    assert_eq!(poll.await.unwrap(), Value::Null);
    let (status, body) = worker
        .procedure("claimWorkitem", json!({"clusterName": "nope"}))
        .await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = worker
        .procedure(
            "claimWorkitem",
            json!({"clusterName": "c1", "waitSeconds": 3600}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    // Shutdown releases a waiting claimer at once.
    let poll = tokio::spawn({
        let worker = worker.clone();
        async move { worker.claim("c1", 20.0).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    t.stop().await;
    assert_eq!(poll.await.unwrap(), Value::Null);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn verify_is_scheduled_and_delayed_work_is_flagged() {
    let t = TestServer::start_with(|c| {
        c.verify_interval = Duration::from_millis(400);
        c.delayed_after = Duration::from_millis(300);
    })
    .await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    worker.complete(&claimed, json!({})).await;

    let verify = worker.claim("c1", 3.0).await;
    assert_eq!(verify["operation"], "verify");
    assert_eq!(verify["requestedBy"], "system");
    assert_eq!(
        verify["request"],
        json!({"name": "web", "k8sNamespace": "apps"})
    );
    assert_eq!(
        verify["installation"]["configSpec"],
        deploy_data("web")["config"]
    );
    let (_, done) = worker
        .complete(&verify, json!({"installationStatus": "DAMAGED", "k8sState": "missing Service vantiq-web-service"}))
        .await;
    assert_eq!(done["installation"]["installationStatus"], "DAMAGED");
    assert!(done["installation"]["lastVerifiedAt"].is_string());

    // Nobody claims the next verify: it is flagged as delayed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, items) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(
        items.as_array().unwrap().len(),
        1,
        "one outstanding verify at a time: {items}"
    );
    assert_eq!(items[0]["operation"], "verify");
    assert_eq!(items[0]["delayed"], true);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_claimers_process_a_thousand_workitems_exactly_once() {
    let t = TestServer::start().await;
    let a = t.admin.clone();
    a.create_cluster("c1").await;
    // Enqueue through the API, 4 requests at a time.
    let mut enqueued = Vec::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(4) {
        let requests = chunk.iter().map(|i| {
            let a = a.clone();
            async move { a.deploy("c1", &format!("app-{i}")).await }
        });
        for item in futures::future::join_all(requests).await {
            enqueued.push(item["requestId"].as_str().unwrap().to_owned());
        }
    }
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut claimers = Vec::new();
    for n in 0..8 {
        let worker = t
            .token(&t.admin, &format!("racer-{n}"), &["k8sWorker__system"])
            .await;
        let seen = Arc::clone(&seen);
        claimers.push(tokio::spawn(async move {
            let mut mine = 0;
            loop {
                let (status, claimed) = worker
                    .procedure(
                        "claimWorkitem",
                        json!({"clusterName": "c1", "workerId": format!("racer-{n}")}),
                    )
                    .await;
                assert_eq!(status, 200, "{claimed}");
                if claimed.is_null() {
                    return mine;
                }
                *seen
                    .lock()
                    .unwrap()
                    .entry(claimed["requestId"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                let (status, body) = worker.complete(&claimed, json!({"replicaCount": 1})).await;
                assert_eq!(status, 200, "{body}");
                mine += 1;
            }
        }));
    }
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        per_claimer.push(claimer.await.unwrap());
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(per_claimer.iter().sum::<usize>(), 1000, "{per_claimer:?}");
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.values().all(|count| *count == 1),
        "an item was claimed twice"
    );
    assert!(enqueued.iter().all(|id| seen.contains_key(id)));
    assert!(
        per_claimer.iter().filter(|n| **n > 0).count() > 1,
        "the race had more than one winner: {per_claimer:?}"
    );
    let (_, headers, _) = a
        .send(
            a.request(Method::GET, "/api/v1/resources/k8sworkitems")
                .query(&[("count", "true"), ("limit", "1")]),
        )
        .await;
    assert_eq!(headers["x-total-count"], "0");
    let (_, headers, _) = a
        .send(
            a.request(Method::GET, "/api/v1/resources/k8sinstallations")
                .query(&[("count", "true"), ("limit", "1")]),
        )
        .await;
    assert_eq!(headers["x-total-count"], "1000");
    t.stop().await;
}
