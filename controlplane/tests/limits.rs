//! The limits no caller may exceed, each answered with a clear Vantiq
//! error and nothing written: login rate and concurrency, `where` size,
//! depth and `$regex` count, documents per namespace, `inboundPort`
//! entries, the worker token's cluster, documents mounted by deploys,
//! cancellation of a leased workitem and the `self` quota's dimensions.

mod common;

use common::{Client, TestServer, assert_error, http};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn login(
    t: &TestServer,
    user: &str,
    password: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = http()
        .get(format!("{}/authenticate", t.base))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn logins_beyond_the_rate_are_refused_without_verifying_or_issuing() {
    let t = TestServer::start_with(|config| config.auth_attempts_per_minute = 3).await;
    // The admin session of TestServer::start took one attempt.
    let sessions = t.rows("tokens");
    let (status, _, _) = login(&t, "admin", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = login(&t, "nobody", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The fourth attempt within the minute: refused even with the right password.
    let (status, headers, body) = login(&t, "admin", common::ADMIN_PASSWORD).await;
    assert_error(status, &body, 429, "io.vantiq.authentication.rate.limited");
    assert_eq!(body[0]["params"][0], 3);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(body[0]["params"][1], retry);
    assert_eq!(t.rows("tokens"), sessions, "no session was issued");
    // Bearer tokens are not logins: the admin's session still works.
    let (status, _) = t.admin.get("/api/v1/resources/k8sclusters").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn logins_beyond_the_concurrency_are_refused_at_once() {
    // One verification at a time, each slow enough to overlap the others.
    let t = TestServer::start_with(|config| {
        config.auth_concurrency = 1;
        config.password_hash_iterations = 100_000;
    })
    .await;
    let sessions = t.rows("tokens");
    let attempts = (0..4).map(|_| {
        let base = t.base.clone();
        tokio::spawn(async move {
            let response = http()
                .get(format!("{base}/authenticate"))
                .basic_auth("nobody", Some("wrong-password"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(StatusCode, Value)> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, body)| body)
        .collect();
    assert!(!busy.is_empty(), "{answers:?}");
    for body in busy {
        assert_error(
            StatusCode::TOO_MANY_REQUESTS,
            body,
            429,
            "io.vantiq.authentication.busy",
        );
        assert_eq!(body[0]["params"], json!([1]));
    }
    assert!(
        answers
            .iter()
            .any(|(status, _)| *status == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
    assert_eq!(t.rows("tokens"), sessions);
    // Once the slot is free, logins work again.
    let _ = Client::login(&t.base, "admin", common::ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn where_clauses_beyond_their_limits_are_refused_naming_the_limit() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let regexes: Vec<Value> = (0..9)
        .map(|n| json!({"name": {"$regex": format!("^c{n}")}}))
        .collect();
    let clause = json!({"$or": regexes});
    let path = "/api/v1/resources/k8sclusters";
    let text = clause.to_string();
    let (status, _, body) = a
        .send(a.request(Method::GET, path).query(&[("where", &text)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(body[0]["params"], json!(["$regex terms", 8, 9]));
    // The same through POST …/select and DELETE …?where=: nothing deleted.
    let (status, body) = a
        .post("/api/v1/resources/k8sclusters/select", clause.clone())
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    let (status, _, body) = a
        .send(a.request(Method::DELETE, path).query(&[("where", &text)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(t.rows("k8sclusters"), 1);
    let mut deep = json!({"name": "c1"});
    for _ in 0..20 {
        deep = json!({"$and": [deep]});
    }
    let (status, body) = a.post("/api/v1/resources/k8sclusters/select", deep).await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(body[0]["params"][0], "levels of nesting");
    // Within the limits, selects answer as before.
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sclusters/select",
            json!({"$or": regexes[..8].to_vec()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 1);
}

/// Eight `$regex` terms, each compiling to a program just under its size
/// limit (`\w{20}` is Unicode-wide; `\w{21}` is over it): the clause is
/// parsed off the async threads and answered like any other.
#[tokio::test]
async fn where_clauses_with_large_patterns_are_answered() {
    let t = TestServer::start().await;
    let a = &t.admin;
    for name in ["c1", "c2", "other"] {
        a.create_cluster(name).await;
    }
    let clause = |size: usize| {
        let regexes: Vec<Value> = (1..=8)
            .map(|n| json!({"name": {"$regex": format!("^c{n}$|\\w{{{size}}}x")}}))
            .collect();
        json!({"$or": regexes})
    };
    let path = "/api/v1/resources/k8sclusters";
    let names = |body: &Value| -> Vec<String> {
        let mut names: Vec<String> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|cluster| cluster["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let text = clause(20).to_string();
    let (status, _, body) = a
        .send(a.request(Method::GET, path).query(&[("where", &text)]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["c1", "c2"]);
    let (status, body) = a.post(&format!("{path}/select"), clause(20)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["c1", "c2"]);
    // One size over: refused as before, through every route, nothing deleted.
    let over = clause(21).to_string();
    let (status, _, body) = a
        .send(a.request(Method::GET, path).query(&[("where", &over)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    let (status, body) = a.post(&format!("{path}/select"), clause(21)).await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    let (status, _, body) = a
        .send(a.request(Method::DELETE, path).query(&[("where", &over)]))
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");
    assert_eq!(t.rows("k8sclusters"), 3);
    let (status, _, body) = a
        .send(a.request(Method::DELETE, path).query(&[("where", &text)]))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(t.rows("k8sclusters"), 1);
}

async fn upload(client: &Client, name: &str, content: &[u8]) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(content.to_vec())
            .file_name(name.to_owned())
            .mime_str("text/plain")
            .unwrap(),
    );
    let (status, _, body) = client
        .send(
            client
                .request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    (status, body)
}

/// The content of a stored document, straight from the database.
fn stored_content(t: &TestServer, name: &str) -> Option<Vec<u8>> {
    t.database()
        .query_row(
            "SELECT content FROM documents WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .ok()
}

#[tokio::test]
async fn documents_beyond_the_namespace_quota_are_refused() {
    let t = TestServer::start_with(|config| {
        config.max_documents = 2;
        config.max_document_bytes = 10;
    })
    .await;
    let a = &t.admin;
    assert_eq!(upload(a, "a.txt", b"12345").await.0, StatusCode::OK);
    assert_eq!(upload(a, "b.txt", b"123").await.0, StatusCode::OK);
    // A third document: over the count.
    let (status, body) = upload(a, "c.txt", b"1").await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.documents.quota.exceeded",
    );
    assert_eq!(body[0]["params"], json!(["documents", 1, 2, 2]));
    // Replacing one counts its new size instead of the old: 5 + 6 > 10.
    let (status, body) = upload(a, "b.txt", b"123456").await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.documents.quota.exceeded",
    );
    assert_eq!(body[0]["params"], json!(["bytes", 6, 5, 10]));
    assert_eq!(t.rows("documents"), 2);
    assert_eq!(stored_content(&t, "b.txt").unwrap(), b"123");
    assert_eq!(stored_content(&t, "c.txt"), None);
    // Within the quota a replacement works; a worker's upload counts alike.
    assert_eq!(upload(a, "b.txt", b"12345").await.0, StatusCode::OK);
    let worker = t.worker().await;
    let (status, body) = upload(&worker, "logs/x.txt", b"1").await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.documents.quota.exceeded",
    );
}

#[tokio::test]
async fn documents_a_deploy_mounts_are_changed_only_by_admins() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    assert_eq!(
        upload(a, "conf/app.properties", b"mode=safe").await.0,
        StatusCode::OK
    );
    let mut data = common::deploy_data("web");
    data["config"].as_array_mut().unwrap().push(json!({
        "type": "file", "path": "/etc/app", "resourceType": "documents",
        "resourceName": "conf/app.properties"
    }));
    let (status, body) = a.command("c1", "deploy", data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = t.user().await;
    let worker = t.worker().await;
    // While the deploy is queued, and after it completed, alike.
    for round in 0..2 {
        for client in [&user, &worker] {
            let (status, body) = upload(client, "conf/app.properties", b"mode=evil").await;
            assert_error(
                status,
                &body,
                403,
                "io.vantiq.resources.documents.mounted.admin.only",
            );
            assert_eq!(body[0]["params"], json!(["conf/app.properties", "web"]));
            let (status, body) = client
                .delete("/api/v1/resources/documents/conf/app.properties")
                .await;
            assert_error(
                status,
                &body,
                403,
                "io.vantiq.resources.documents.mounted.admin.only",
            );
        }
        assert_eq!(
            stored_content(&t, "conf/app.properties").unwrap(),
            b"mode=safe"
        );
        if round == 0 {
            let claimed = worker.claim("c1", 0.0).await;
            assert_eq!(worker.complete(&claimed, json!({})).await.0, StatusCode::OK);
        }
    }
    // Other documents stay writable by users; admins may change mounted ones.
    assert_eq!(upload(&user, "notes.txt", b"hi").await.0, StatusCode::OK);
    assert_eq!(
        upload(a, "conf/app.properties", b"mode=new").await.0,
        StatusCode::OK
    );
    assert_eq!(
        stored_content(&t, "conf/app.properties").unwrap(),
        b"mode=new"
    );
}

#[tokio::test]
async fn a_self_deploy_must_state_cpu_and_memory() {
    let t = TestServer::start_with(|c| c.self_k8s_namespace = "vantiq-self".into()).await;
    let a = &t.admin;
    a.create_cluster("self").await;
    let (status, body) = a
        .put(
            "/api/v1/resources/namespaces/k8sworker",
            json!({"limits": {"k8sResources": {"vCPU": "4", "memory": "4Gi"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = |resources: Value| {
        json!({"name": "a", "k8sNamespace": "vantiq-self", "config": [
            {"type": "image", "name": "conn:1"}, resources
        ]})
    };
    for (resources, missing) in [
        (json!({"type": "resourceLimit", "cpu": "1"}), "memory"),
        (json!({"type": "resourceRequest", "memory": "1Gi"}), "cpu"),
    ] {
        let (status, body) = a.command("self", "deploy", data(resources)).await;
        assert_error(
            status,
            &body,
            400,
            "io.vantiq.resources.k8s.self.cluster.resources.required",
        );
        assert_eq!(body[0]["params"], json!([missing]));
    }
    assert_eq!(t.rows("k8sworkitems"), 0);
    assert_eq!(t.rows("quota_charges"), 0);
    let (status, body) = a
        .command(
            "self",
            "deploy",
            data(json!({"type": "resourceRequest", "cpu": "1", "memory": "1Gi"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn more_inbound_ports_than_an_installation_may_take_are_refused() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let mut data = common::deploy_data("web");
    for n in 0..17 {
        data["config"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "inboundPort", "port": 8000 + n, "protocol": "TCP"}));
    }
    let (status, body) = a.command("c1", "deploy", data).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );
    assert!(
        body[0]["params"][0]
            .as_str()
            .is_some_and(|p| p.contains("17 inboundPort entries") && p.contains("at most 16")),
        "{body}"
    );
    assert_eq!(t.rows("k8sworkitems"), 0);
    let (_, cluster) = a.get("/api/v1/resources/k8sclusters/c1").await;
    assert_eq!(cluster["lifecycleOperationCount"], 0);
}

/// Renew, complete, fail and release of `lease` by `worker` are each
/// refused 403 `io.vantiq.resources.k8s.worker.cluster.denied` with
/// `params` (the token's cluster, the workitem's).
async fn assert_lease_calls_denied(worker: &Client, lease: &Value, params: Value) {
    for (procedure, extra) in [
        ("renewWorkitemLease", json!({})),
        ("completeWorkitem", json!({})),
        ("failWorkitem", json!({"message": "no"})),
        ("releaseWorkitem", json!({})),
    ] {
        let mut call = lease.clone();
        call.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, body) = worker.procedure(procedure, call).await;
        assert_error(
            status,
            &body,
            403,
            "io.vantiq.resources.k8s.worker.cluster.denied",
        );
        assert_eq!(body[0]["params"], params, "{procedure}");
    }
}

/// The `k8sClusterName` that `GET /tokens` shows for the token `name`.
async fn token_cluster(admin: &Client, name: &str) -> Value {
    let (_, tokens) = admin.get("/api/v1/resources/tokens").await;
    tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["name"] == name)
        .map(|token| token["k8sClusterName"].clone())
        .unwrap_or_else(|| panic!("no token {name} in {tokens}"))
}

#[tokio::test]
async fn a_worker_token_that_never_claimed_is_bound_by_the_first_workitem_it_acts_on() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    a.create_cluster("c2").await;
    a.deploy("c1", "web").await;
    a.deploy("c2", "api").await;
    let web = t.worker().await.claim("c1", 0.0).await;
    let api = t.worker().await.claim("c2", 0.0).await;
    let lease = |item: &Value| json!({"requestId": item["requestId"], "leaseId": item["leaseId"]});

    // A token that has not claimed anything yet.
    let fresh = t.token(a, "fresh", &["k8sWorker__system"]).await;
    assert_eq!(token_cluster(a, "fresh").await, Value::Null);

    // A call that fails binds nothing.
    let (status, body) = fresh
        .procedure(
            "renewWorkitemLease",
            json!({"requestId": api["requestId"], "leaseId": "not-the-lease"}),
        )
        .await;
    assert_error(
        status,
        &body,
        409,
        "io.vantiq.resources.k8s.workitem.lease.lost",
    );
    assert_eq!(token_cluster(a, "fresh").await, Value::Null);

    // Renewing c2's workitem binds it to c2 ...
    let (status, body) = fresh.procedure("renewWorkitemLease", lease(&api)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(token_cluster(a, "fresh").await, "c2");

    // ... so c1's workitem is refused to it, and left as it was.
    let (_, before) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            web["requestId"].as_str().unwrap()
        ))
        .await;
    assert_lease_calls_denied(&fresh, &lease(&web), json!(["c2", "c1"])).await;
    let (_, after) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            web["requestId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(after, before);
    assert_eq!(after["status"], "PENDING");
    assert_eq!(t.rows("k8sinstallations"), 0);
}

#[tokio::test]
async fn a_worker_token_serves_only_its_cluster() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    a.create_cluster("c2").await;
    let mut data = common::deploy_data("api");
    data["config"].as_array_mut().unwrap().push(json!({
        "type": "environmentVariable", "name": "DB_PASSWORD", "value": "@secrets(db)"
    }));
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db", "secret": "s3cret"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = a.command("c2", "deploy", data).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.deploy("c1", "web").await;

    // A token named for c1 at creation.
    let (status, body) = a
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "gw-c1", "profiles": ["k8sWorker__system"], "k8sClusterName": "c1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["k8sClusterName"], "c1");
    let bound = Client::new(&t.base, body["accessToken"].as_str().unwrap());
    let (status, body) = bound
        .procedure("claimWorkitem", json!({"clusterName": "c2"}))
        .await;
    assert_error(
        status,
        &body,
        403,
        "io.vantiq.resources.k8s.worker.cluster.denied",
    );
    assert_eq!(body[0]["params"], json!(["c1", "c2"]));
    assert!(!body.to_string().contains("s3cret"));

    // An unnamed one is bound by its first claim.
    let worker = t.worker().await;
    let web = worker.claim("c1", 0.0).await;
    assert_eq!(web["installationName"], "web");
    let (status, body) = worker
        .procedure("claimWorkitem", json!({"clusterName": "c2"}))
        .await;
    assert_error(
        status,
        &body,
        403,
        "io.vantiq.resources.k8s.worker.cluster.denied",
    );
    let (_, tokens) = a.get("/api/v1/resources/tokens").await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|token| token["k8sClusterName"] == "c1"),
        "{tokens}"
    );

    // c2's item is untouched: still REQUESTED, never leased.
    let (_, items) = a
        .get(r#"/api/v1/resources/k8sworkitems?where={"clusterName":"c2"}"#)
        .await;
    assert_eq!(items[0]["status"], "REQUESTED", "{items}");
    assert_eq!(items[0]["attempts"], 0, "{items}");

    // A c2 worker claims it; c1's token cannot renew, complete, fail or
    // release it even knowing its lease.
    let c2_worker = t.worker().await;
    let api = c2_worker.claim("c2", 0.0).await;
    let lease = json!({"requestId": api["requestId"], "leaseId": api["leaseId"]});
    assert_lease_calls_denied(&bound, &lease, json!(["c1", "c2"])).await;
    let (_, item) = a
        .get(&format!(
            "/api/v1/resources/k8sworkitems/{}",
            api["requestId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(item["status"], "PENDING");
    assert_eq!(item["leaseOwner"], api["leaseOwner"]);
    assert_eq!(t.rows("k8sinstallations"), 0);
    assert_eq!(c2_worker.complete(&api, json!({})).await.0, StatusCode::OK);

    // Binding needs the worker profile and an existing cluster.
    for (profiles, cluster) in [
        (json!(["user"]), "c1"),
        (json!(["k8sWorker__system"]), "c9"),
    ] {
        let (status, body) = a
            .post(
                "/api/v1/resources/tokens",
                json!({"name": "x", "profiles": profiles, "k8sClusterName": cluster}),
            )
            .await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"], json!(["k8sClusterName"]));
    }
}
