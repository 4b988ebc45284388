//! HTTP-level tests of every endpoint against the real server: Vantiq's
//! conventions (error shape, X-Total-Count, upsert answers), identity and
//! profiles, namespace isolation, quotas, documents and secrets.

mod common;

use common::{Client, TestServer, assert_error, deploy_data};
use reqwest::Method;
use serde_json::{Value, json};

const CLUSTERS: &str = "/api/v1/resources/k8sclusters";

#[tokio::test]
async fn authenticate_issues_tokens_and_refuses_bad_credentials() {
    let t = TestServer::start().await;
    let http = common::http();
    let response = http
        .get(format!("{}/authenticate", t.base))
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_error(status, &body, 401, "io.vantiq.authentication.failed");

    let response = http
        .get(format!("{}/authenticate", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // No token, a garbage token, a token in ?token=.
    let (status, body) = Client::new(&t.base, "garbage").get(CLUSTERS).await;
    assert_error(status, &body, 401, "io.vantiq.authentication.token.invalid");
    let response = http
        .get(format!("{}{CLUSTERS}", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .get(format!("{}{CLUSTERS}?token={}", t.base, t.admin.token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Refresh replaces the session token.
    let response = http
        .post(format!("{}/authenticate/refresh", t.base))
        .header("content-type", "text/plain")
        .body(t.admin.token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let fresh = Client::new(&t.base, body["accessToken"].as_str().unwrap());
    assert_eq!(fresh.get(CLUSTERS).await.0, 200);
    assert_eq!(t.admin.get(CLUSTERS).await.0, 401, "the old token is gone");
    t.stop().await;
}

#[tokio::test]
async fn tokens_are_created_listed_revoked_and_stored_hashed() {
    let t = TestServer::start().await;
    let worker = t.token(&t.admin, "gw", &["k8sWorker__system"]).await;
    let (status, body) = t.admin.get("/api/v1/resources/tokens").await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["name"], "gw");
    assert!(body[0].get("accessToken").is_none());
    // A duplicate name, an unknown profile, a missing profile list.
    let (status, body) = t
        .admin
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "gw", "profiles": ["k8sWorker__system"]}),
        )
        .await;
    assert_error(status, &body, 409, "io.vantiq.resource.duplicate");
    let (status, body) = t
        .admin
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "x", "profiles": ["root"]}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = t
        .admin
        .post("/api/v1/resources/tokens", json!({"name": "y"}))
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    // Only the hash is stored.
    let db = rusqlite::Connection::open(t.dir.0.join("controlplane.db")).unwrap();
    let hits: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM tokens WHERE token_hash = ?1 OR token_hash LIKE '%' || ?1 || '%'",
            [&worker.token],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(hits, 0);
    drop(db);

    assert_eq!(worker.get(CLUSTERS).await.0, 200);
    // A long-lived token, even one that expires, is not a session to refresh.
    let (status, expiring) = t
        .admin
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "soon", "profiles": ["k8sWorker__system"], "expiresAt": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{expiring}");
    let response = common::http()
        .post(format!("{}/authenticate/refresh", t.base))
        .body(expiring["accessToken"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(t.admin.delete("/api/v1/resources/tokens/gw").await.0, 204);
    assert_eq!(worker.get(CLUSTERS).await.0, 401);
    let (status, body) = t.admin.delete("/api/v1/resources/tokens/gw").await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    t.stop().await;
}

#[tokio::test]
async fn clusters_crud_follows_vantiq() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let (status, body) = a.post(CLUSTERS, json!({"name": "Edge-1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ingressDefaultNode"], "vantiq-edge-1-node");
    assert_eq!(body["lifecycleOperationCount"], 0);
    assert!(body["_id"].is_string());

    let (status, body) = a.post(CLUSTERS, json!({"name": "Edge-1"})).await;
    assert_error(status, &body, 409, "io.vantiq.resource.duplicate");

    // Upsert and update answer only the changed properties.
    let (status, body) = a
        .post(
            &format!("{CLUSTERS}?upsert=true"),
            json!({"name": "Edge-1", "ingressDefaultNode": "edge.example"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"ingressDefaultNode": "edge.example"}));
    let (status, body) = a
        .put(
            &format!("{CLUSTERS}/Edge-1"),
            json!({"ingressDefaultNode": "edge2.example"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.get("name").is_none() && body.get("_id").is_none());
    let (_, body) = a.get(&format!("{CLUSTERS}/Edge-1")).await;
    assert_eq!(body["ingressDefaultNode"], "edge2.example");
    assert_eq!(body["ars_version"], 3);

    // Upsert of a new one inserts it.
    let (status, body) = a
        .post(
            &format!("{CLUSTERS}?upsert=true"),
            json!({"name": "edge-2"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "edge-2");

    // Errors: the exact Vantiq not-found, wrong types, unknown properties.
    let (status, body) = a.get(&format!("{CLUSTERS}/foo")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!([{
            "code": "io.vantiq.resource.not.found",
            "message": "The requested instance ('{name=foo}') of the k8sclusters resource could not be found.",
            "params": ["k8sclusters", "{name=foo}"]
        }])
    );
    let (status, body) = a
        .put(
            &format!("{CLUSTERS}/foo"),
            json!({"ingressDefaultNode": "x"}),
        )
        .await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = a.post(CLUSTERS, json!({"name": 5})).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a.post(CLUSTERS, json!({"name": "c", "replicas": 3})).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a
        .post(CLUSTERS, json!({"name": "c", "ingressDefaultNode": 3}))
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a
        .put(&format!("{CLUSTERS}/edge-2"), json!({"name": "other"}))
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a.delete(&format!("{CLUSTERS}/foo")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");

    // A method the resource does not have is a 405 in Vantiq's shape.
    let (status, _, body) = a
        .send(a.request(Method::PATCH, &format!("{CLUSTERS}/edge-2")))
        .await;
    assert_error(status, &body, 405, "io.vantiq.http.method.not.allowed");

    // Delete one, delete by where.
    assert_eq!(a.delete(&format!("{CLUSTERS}/edge-2")).await.0, 204);
    let (status, _, _) = a
        .send(a.request(Method::DELETE, CLUSTERS).query(&[
            ("where", r#"{"name":{"$regex":"^Edge"}}"#),
            ("count", "true"),
        ]))
        .await;
    assert_eq!(status, 204);
    assert_eq!(a.get(CLUSTERS).await.1, json!([]));
    t.stop().await;
}

/// Issue 12, case 4: a cluster's `ingressDefaultNode` becomes the host of
/// its installations' Ingresses, which the API server refuses unless it is a
/// DNS name; an IP address (or anything else that is not an Ingress host) is
/// refused on insert, upsert and update, naming the field, and nothing is
/// stored.
#[tokio::test]
async fn a_cluster_ingress_default_node_must_be_a_dns_name() {
    let t = TestServer::start().await;
    let a = &t.admin;
    // Insert, upsert and update, before and after the cluster exists.
    let writes = |node: &str| {
        let body = json!({"name": "edge", "ingressDefaultNode": node});
        [
            (Method::POST, CLUSTERS.to_owned(), body.clone()),
            (Method::POST, format!("{CLUSTERS}?upsert=true"), body),
            (
                Method::PUT,
                format!("{CLUSTERS}/edge"),
                json!({"ingressDefaultNode": node}),
            ),
        ]
    };
    let mut before = None;
    for exists in [false, true] {
        if exists {
            let (status, body) = a
                .post(
                    CLUSTERS,
                    json!({"name": "edge", "ingressDefaultNode": "edge.example"}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            before = Some(a.get(&format!("{CLUSTERS}/edge")).await.1);
        }
        for (node, what) in [
            ("192.0.2.10", "is an IP address"),
            ("010.0.0.1", "is an IP address"),
            ("2001:db8::1", "is an IP address"),
            ("Not A Host", "is not a valid host name"),
        ] {
            for (method, path, body) in writes(node) {
                let (status, _, body) = a.send(a.request(method, &path).json(&body)).await;
                assert_error(status, &body, 400, "io.vantiq.argument.invalid");
                let message = body[0]["message"].as_str().unwrap_or_default();
                assert!(message.contains("ingressDefaultNode"), "{body}");
                assert!(message.contains(what), "{body}");
            }
            // Nothing stored, nothing changed.
            let (status, stored) = a.get(&format!("{CLUSTERS}/edge")).await;
            match &before {
                None => assert_eq!(status, 404, "{stored}"),
                Some(before) => assert_eq!(&stored, before),
            }
        }
    }
    t.stop().await;
}

/// A cluster name may hold `_` and a host may not: a cluster created without
/// `ingressDefaultNode` whose default (`vantiq-<name>-node`) is not a host is
/// refused naming the field, and nothing is stored; given a host it is
/// created.
#[tokio::test]
async fn a_cluster_whose_default_ingress_node_is_not_a_host_needs_one() {
    let t = TestServer::start().await;
    let a = &t.admin;
    for path in [CLUSTERS.to_owned(), format!("{CLUSTERS}?upsert=true")] {
        let (status, _, body) = a
            .send(
                a.request(Method::POST, &path)
                    .json(&json!({"name": "edge_1"})),
            )
            .await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        let message = body[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("ingressDefaultNode"), "{body}");
        assert!(message.contains("`vantiq-edge_1-node`"), "{body}");
        assert_eq!(a.get(&format!("{CLUSTERS}/edge_1")).await.0, 404);
    }
    let (status, body) = a
        .post(
            CLUSTERS,
            json!({"name": "edge_1", "ingressDefaultNode": "edge-1.example"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ingressDefaultNode"], "edge-1.example");
    t.stop().await;
}

/// Issue 12, case 4: a deploy whose inbound port's host is an IP address is
/// refused when it is requested, naming the entry and field, before any
/// workitem exists (the API server would refuse its Ingress at apply).
#[tokio::test]
async fn a_deploy_with_an_ip_as_ingress_host_is_refused_before_anything_is_stored() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "web", "k8sNamespace": "apps", "config": [
                {"type": "image", "name": "nginx:1.27"},
                {"type": "inboundPort", "port": 8080, "protocol": "TCP", "host": "192.0.2.10"}
            ]}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );
    let params = body[0]["params"].as_array().unwrap();
    assert_eq!(params.len(), 1, "{body}");
    assert!(
        params[0]
            .as_str()
            .unwrap()
            .starts_with("config[1] (inboundPort).host: `192.0.2.10` is an IP address"),
        "{body}"
    );
    assert_eq!(a.get("/api/v1/resources/k8sworkitems").await.1, json!([]));
    assert_eq!(
        a.get("/api/v1/resources/k8sinstallations").await.1,
        json!([])
    );
    let (_, cluster) = a.get(&format!("{CLUSTERS}/c1")).await;
    assert_eq!(cluster["lifecycleOperationCount"], 0);
    t.stop().await;
}

#[tokio::test]
async fn select_supports_where_props_sort_limit_page_and_count() {
    let t = TestServer::start().await;
    let a = &t.admin;
    for i in 0..12 {
        let name = format!("c{i:02}");
        a.create_cluster(&name).await;
        let node = if i % 2 == 0 {
            "even.example"
        } else {
            "odd.example"
        };
        a.put(
            &format!("{CLUSTERS}/{name}"),
            json!({"ingressDefaultNode": node}),
        )
        .await;
    }
    let select = |params: Vec<(&'static str, String)>| {
        let a = a.clone();
        async move {
            a.send(a.request(Method::GET, CLUSTERS).query(&params))
                .await
        }
    };
    let (status, headers, body) = select(vec![
        (
            "where",
            json!({"ingressDefaultNode": "even.example"}).to_string(),
        ),
        ("props", json!(["name"]).to_string()),
        ("sort", json!({"name": -1}).to_string()),
        ("limit", "2".into()),
        ("page", "2".into()),
        ("count", "true".into()),
    ])
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "6");
    assert_eq!(body, json!([{"name": "c06"}, {"name": "c04"}]));

    // No count → no header.
    let (_, headers, body) = select(vec![("limit", "3".into())]).await;
    assert!(headers.get("x-total-count").is_none());
    assert_eq!(body.as_array().unwrap().len(), 3);

    // Operators.
    let (_, _, body) = select(vec![(
        "where",
        json!({"$or": [{"name": {"$in": ["c01", "c02"]}}, {"name": {"$gte": "c11"}}]}).to_string(),
    )])
    .await;
    assert_eq!(body.as_array().unwrap().len(), 3);
    let (_, _, body) = select(vec![(
        "where",
        json!({"name": {"$nin": ["c00"], "$regex": "^c0"}, "lifecycleOperationCount": {"$lt": 1}})
            .to_string(),
    )])
    .await;
    assert_eq!(body.as_array().unwrap().len(), 9);

    // POST /select takes the where clause as the body.
    let (status, headers, body) = a
        .send(
            a.request(Method::POST, &format!("{CLUSTERS}/select"))
                .query(&[("count", "true")])
                .json(&json!({"name": {"$ne": "c00"}})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "11");
    assert_eq!(body.as_array().unwrap().len(), 11);

    // The SDK's count(): count=true&limit=1&props=["_id"].
    let (_, headers, body) = select(vec![
        ("count", "true".into()),
        ("limit", "1".into()),
        ("props", r#"["_id"]"#.into()),
    ])
    .await;
    assert_eq!(headers["x-total-count"], "12");
    assert!(body[0]["_id"].is_string());
    t.stop().await;
}

#[tokio::test]
async fn hostile_input_is_refused_cleanly() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;

    // Malformed JSON, an empty body, not UTF-8, JSON of the wrong kind.
    for body in [&b"{\"name\":"[..], b"", b"\xff\xfe{}", b"[1,2", b"nul"] {
        let (status, _, json) = a
            .send(
                a.request(Method::POST, CLUSTERS)
                    .header("content-type", "application/json")
                    .body(body.to_vec()),
            )
            .await;
        assert_error(status, &json, 400, "io.vantiq.json.invalid");
    }
    let (status, body) = a.post(CLUSTERS, json!([{"name": "x"}])).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    // Deep nesting hits serde's recursion limit, not the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, body) = a
        .send(
            a.request(Method::POST, CLUSTERS)
                .header("content-type", "application/json")
                .body(deep),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.json.invalid");
    let deep_where = format!("{}1{}", r#"{"$or":["#.repeat(200), "]}".repeat(200));
    let (status, _, body) = a
        .send(
            a.request(Method::GET, CLUSTERS)
                .query(&[("where", deep_where)]),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.query.invalid");

    // A body over the limit (256 KiB in tests) is a 413 in Vantiq's shape,
    // whether it is JSON, a procedure call or a document upload.
    let huge = json!({"name": "big", "ingressDefaultNode": "x".repeat(300 * 1024)});
    let (status, body) = a.post(CLUSTERS, huge.clone()).await;
    assert_error(status, &body, 413, "io.vantiq.request.too.large");
    let (status, body) = a
        .post(
            "/api/v1/resources/procedures/K8sManager.claimWorkitem",
            huge,
        )
        .await;
    assert_error(status, &body, 413, "io.vantiq.request.too.large");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![b'a'; 300 * 1024]).file_name("big.txt"),
    );
    let (status, _, body) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    assert_error(status, &body, 413, "io.vantiq.request.too.large");

    // Injection attempts in where are values to compare, never SQL.
    for attack in [
        json!({"name": "c1' OR '1'='1"}),
        json!({"name": "c1\"; DROP TABLE k8sclusters; --"}),
        json!({"name": {"$regex": "^x' OR 1=1 --"}}),
    ] {
        let (status, _, body) = a
            .send(
                a.request(Method::GET, CLUSTERS)
                    .query(&[("where", attack.to_string())]),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!([]));
    }
    assert_eq!(
        a.get(CLUSTERS).await.1.as_array().unwrap().len(),
        1,
        "table intact"
    );

    // Unknown operators, wrong operand types, bad parameters.
    for (param, value) in [
        ("where", r#"{"name":{"$where":"sleep(1)"}}"#),
        ("where", r#"{"$function":{}}"#),
        ("where", r#"{"name":{"$in":"c1"}}"#),
        ("where", r#"{"name":{"$regex":"("}}"#),
        ("where", r#"{"name":{"$size":"2"}}"#),
        ("where", r#"["name"]"#),
        ("where", "{not json"),
        ("sort", r#"{"name":2}"#),
        ("sort", r#"["name"]"#),
        ("props", r#"{"name":1}"#),
        ("limit", "abc"),
        ("limit", "-1"),
        ("page", "0"),
    ] {
        let (status, _, body) = a
            .send(a.request(Method::GET, CLUSTERS).query(&[(param, value)]))
            .await;
        assert_error(status, &body, 400, "io.vantiq.query.invalid");
    }

    // Commands with wrong shapes.
    for body in [
        json!({"data": {}}),
        json!({"op": 7}),
        json!({"op": "deploy", "data": "x"}),
        json!({"op": "deploy", "data": {}, "extra": 1}),
    ] {
        let (status, body) = a.post(&format!("{CLUSTERS}/c1/command"), body).await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    }
    let (status, body) = a.command("c1", "explode", json!({"name": "x"})).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.operation.unknown",
    );

    // Procedures: positional parameters, unknown names.
    let (status, body) = a
        .post(
            "/api/v1/resources/procedures/K8sManager.addK8sWorkerProfile",
            json!([1]),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a
        .post("/api/v1/resources/procedures/K8sManager.rm", json!({}))
        .await;
    assert_error(status, &body, 404, "io.vantiq.procedure.unknown");

    // Unknown resources and routes.
    let (status, body) = a.get("/api/v1/resources/junkola").await;
    assert_eq!(status, 404);
    assert_eq!(body[0]["code"], "io.vantiq.type.system.resource.unknown");
    assert_eq!(body[0]["params"], json!(["junkola"]));
    let (status, body) = a.get("/api/v1/resources/custom/Thing/1").await;
    assert_error(status, &body, 404, "io.vantiq.type.system.resource.unknown");
    let (status, body) = a.get("/nowhere").await;
    assert_error(status, &body, 404, "io.vantiq.http.route.unknown");

    // The server is still healthy.
    assert_eq!(a.get("/healthz").await.0, 200);

    // The version, for any valid token, and only for one.
    let worker = t.worker().await;
    let (status, body) = worker.get("/api/v1/version").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "k8sworker-controlplane");
    assert_eq!(body["workerProtocol"], 1);
    assert_eq!(body["longPoll"], true);
    assert!(body["maxClaimWaitSeconds"].as_u64().unwrap() > 0);
    let stranger = common::Client::new(&t.base, "not-a-token");
    assert_eq!(stranger.get("/api/v1/version").await.0, 401);
    t.stop().await;
}

#[tokio::test]
async fn deploy_is_validated_by_the_planner_and_enqueued() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;

    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "Bad_Name", "k8sNamespace": "apps", "config": [
                {"type": "image", "name": "nginx"},
                {"type": "inboundPort", "port": 70000, "protocol": "TCP"},
                {"type": "environmentVariable", "name": "1X", "value": "v"}
            ]}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );
    let params = body[0]["params"].as_array().unwrap();
    assert!(params.len() >= 3, "every violation is named: {body}");
    assert!(
        params
            .iter()
            .any(|p| p.as_str().unwrap().contains("config[1]")),
        "{body}"
    );

    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "web", "k8sNamespace": "apps", "config": []}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );

    // The documented response: the workitem, REQUESTED.
    let item = a.deploy("c1", "web").await;
    assert_eq!(item["status"], "REQUESTED");
    assert_eq!(item["operation"], "deploy");
    assert_eq!(item["clusterName"], "c1");
    assert_eq!(item["requestedBy"], "admin");
    assert_eq!(item["request"], deploy_data("web"));
    assert!(uuid::Uuid::parse_str(item["requestId"].as_str().unwrap()).is_ok());
    assert!(item["timestamp"].as_str().unwrap().ends_with('Z'));

    // Missing cluster; non-deploy ops on a missing installation.
    let (status, body) = a.command("nope", "deploy", deploy_data("web")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = a.command("c1", "restart", json!({"name": "ghost"})).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = a.command("c1", "restart", json!({})).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    // lifecycleOperationCount counts requests.
    let (_, cluster) = a.get(&format!("{CLUSTERS}/c1")).await;
    assert_eq!(cluster["lifecycleOperationCount"], 1);

    // configRef: the config lives in a document.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(
            json!([{"type": "image", "name": "redis:7"}])
                .to_string()
                .into_bytes(),
        )
        .file_name("configs/redis.json")
        .mime_str("application/json")
        .unwrap(),
    );
    let (status, _, body) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "cache", "k8sNamespace": "apps", "configRef": "configs/redis.json"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["config"][0]["name"], "redis:7");
    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "cache2", "k8sNamespace": "apps", "configRef": "nope.json"}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.reference.missing",
    );
    t.stop().await;
}

#[tokio::test]
async fn clusters_with_installations_or_work_cannot_be_deleted() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let (status, body) = a.delete(&format!("{CLUSTERS}/c1")).await;
    assert_error(status, &body, 400, "io.vantiq.resources.k8s.cluster.in.use");
    let worker = t.worker().await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    let (status, body) = a.delete(&format!("{CLUSTERS}/c1")).await;
    assert_error(status, &body, 400, "io.vantiq.resources.k8s.cluster.in.use");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("1 installation")
    );
    // Undeploy, complete: now it can go.
    a.command("c1", "undeploy", json!({"name": "web"})).await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["operation"], "undeploy");
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    assert_eq!(a.delete(&format!("{CLUSTERS}/c1")).await.0, 204);
    t.stop().await;
}

#[tokio::test]
async fn installations_are_read_only_and_commanded() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    worker
        .complete(
            &claimed,
            json!({"replicaCount": 1, "k8sAssociatedServices": ["web", "vantiq-web-service"]}),
        )
        .await;

    let (status, body) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(status, 200);
    assert_eq!(body["installationStatus"], "RUNNING");
    assert_eq!(body["clusterName"], "c1");
    assert_eq!(body["k8sNamespace"], "apps");
    assert_eq!(body["installedBy"], "admin");
    assert_eq!(body["k8sInstallationType"], "STATEFUL_SET");
    assert_eq!(body["configSpec"], deploy_data("web")["config"]);
    assert_eq!(body["k8sAssociatedServices"][1], "vantiq-web-service");

    let (status, headers, body) = a
        .send(
            a.request(Method::GET, "/api/v1/resources/k8sinstallations")
                .query(&[("count", "true"), ("where", r#"{"clusterName":"c1"}"#)]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "1");
    assert_eq!(body[0]["name"], "web");
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/select",
            json!({"installationStatus": "FAILED"}),
        )
        .await;
    assert_eq!((status.as_u16(), body), (200, json!([])));

    for (method, path) in [
        (Method::POST, "/api/v1/resources/k8sinstallations"),
        (Method::PUT, "/api/v1/resources/k8sinstallations/web"),
        (Method::DELETE, "/api/v1/resources/k8sinstallations/web"),
    ] {
        let (status, _, body) = a
            .send(a.request(method, path).json(&json!({"name": "web"})))
            .await;
        assert_error(
            status,
            &body,
            405,
            "io.vantiq.resource.operation.not.allowed",
        );
    }
    let (status, body) = a.get("/api/v1/resources/k8sinstallations/ghost").await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");

    // Installation commands: restart marks STARTING, shutdown STOPPING; deploy is not one of them.
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/web/command",
            json!({"op": "restart", "data": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operation"], "restart");
    assert_eq!(
        body["request"],
        json!({"name": "web", "k8sNamespace": "apps"})
    );
    let (_, inst) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(inst["installationStatus"], "STARTING");
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/web/command",
            json!({"op": "deploy", "data": {}}),
        )
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.operation.unknown",
    );
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/web/command",
            json!({"op": "fetchLogs", "data": {"podName": "web-0", "documentGroup": "logs"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["podName"], "web-0");
    let (status, body) = a
        .post(
            "/api/v1/resources/k8sinstallations/ghost/command",
            json!({"op": "restart"}),
        )
        .await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");

    // A deploy of the same installation name to another cluster is refused.
    a.create_cluster("c2").await;
    let (status, body) = a.command("c2", "deploy", deploy_data("web")).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.installation.other.cluster",
    );
    t.stop().await;
}

#[tokio::test]
async fn workitems_can_be_selected_and_cancelled() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let first = a.deploy("c1", "one").await;
    a.deploy("c1", "two").await;
    let (status, headers, body) = a
        .send(
            a.request(Method::GET, "/api/v1/resources/k8sworkitems")
                .query(&[
                    ("where", r#"{"clusterName":"c1","status":"REQUESTED"}"#),
                    ("sort", r#"{"timestamp":1}"#),
                    ("count", "true"),
                ]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "2");
    assert_eq!(body[0]["requestId"], first["requestId"]);
    assert!(
        body[0].get("ancillaries").is_none(),
        "ancillaries are for workers only"
    );

    let id = first["requestId"].as_str().unwrap();
    let (status, body) = a.get(&format!("/api/v1/resources/k8sworkitems/{id}")).await;
    assert_eq!(
        (status.as_u16(), &body["requestId"]),
        (200, &first["requestId"])
    );
    let (status, body) = a
        .put(
            &format!("/api/v1/resources/k8sworkitems/{id}"),
            json!({"status": "PENDING"}),
        )
        .await;
    assert_error(
        status,
        &body,
        405,
        "io.vantiq.resource.operation.not.allowed",
    );

    // Cancel one while a worker holds it: it stays CANCELLED until the
    // worker reports, and what the worker did is recorded against it.
    let worker = t.worker().await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["requestId"], first["requestId"]);
    assert_eq!(
        a.delete(&format!("/api/v1/resources/k8sworkitems/{id}"))
            .await
            .0,
        204
    );
    let (_, body) = a.get(&format!("/api/v1/resources/k8sworkitems/{id}")).await;
    assert_eq!(body["status"], "CANCELLED");
    let (status, body) = worker.complete(&claimed, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installation"]["name"], "one");
    let (status, body) = worker.complete(&claimed, json!({})).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = a.get(&format!("/api/v1/resources/k8sworkitems/{id}")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    assert_eq!(body[0]["params"][1], format!("{{requestId={id}}}"));

    let (status, _, _) = a
        .send(
            a.request(Method::DELETE, "/api/v1/resources/k8sworkitems")
                .query(&[("where", r#"{"clusterName":"c1"}"#)]),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(a.get("/api/v1/resources/k8sworkitems").await.1, json!([]));
    t.stop().await;
}

#[tokio::test]
async fn documents_upload_download_and_delete() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let (status, body) = a
        .upload(
            "cluster/inst/web-0-2026.txt",
            "text/plain",
            b"hello \x00 world",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "cluster/inst/web-0-2026.txt");
    assert_eq!(body["content"], "/docs/cluster/inst/web-0-2026.txt");
    assert_eq!(body["contentSize"], 13);
    assert_eq!(body["fileType"], "text/plain");

    let (status, body) = a
        .get("/api/v1/resources/documents/cluster/inst/web-0-2026.txt")
        .await;
    assert_eq!(status, 200);
    let response = a
        .request(Method::GET, body["content"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"hello \x00 world"
    );

    // documentPath overrides the file name; names with '..' are refused.
    let form = reqwest::multipart::Form::new()
        .text("documentPath", "other.txt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("ignored.txt"),
        );
    let (_, _, body) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    assert_eq!(body["name"], "other.txt");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("../etc/passwd"),
    );
    let (status, _, body) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, _, body) = a
        .send(
            a.request(Method::POST, "/api/v1/resources/documents")
                .json(&json!({"name": "x"})),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    let (_, headers, body) = a
        .send(
            a.request(Method::GET, "/api/v1/resources/documents")
                .query(&[("count", "true"), ("props", r#"["name"]"#)]),
        )
        .await;
    assert_eq!(headers["x-total-count"], "2");
    assert_eq!(body[0], json!({"name": "cluster/inst/web-0-2026.txt"}));

    assert_eq!(
        a.delete("/api/v1/resources/documents/other.txt").await.0,
        204
    );
    let (status, body) = a.get("/docs/other.txt").await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    t.stop().await;
}

#[tokio::test]
async fn secrets_are_write_only_for_admins() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db-pass", "secret": "hunter2", "description": "db"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("secret").is_none());
    assert!(!body.to_string().contains("hunter2"));
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db-pass", "secret": "x"}),
        )
        .await;
    assert_error(status, &body, 409, "io.vantiq.resource.duplicate");
    assert_eq!(
        a.post(
            "/api/v1/resources/secrets?upsert=true",
            json!({"name": "db-pass", "secret": "y"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        a.put("/api/v1/resources/secrets/db-pass", json!({"secret": "z"}))
            .await
            .0,
        200
    );
    let (status, body) = a
        .put("/api/v1/resources/secrets/nope", json!({"secret": "z"}))
        .await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "n", "secret": 5}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (_, list) = a.get("/api/v1/resources/secrets").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains('z') || !list.to_string().contains("\"secret\""));
    let (_, one) = a.get("/api/v1/resources/secrets/db-pass").await;
    assert!(one.get("secret").is_none());

    let worker = t.worker().await;
    let (status, body) = worker.get("/api/v1/resources/secrets").await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    let user = t.user().await;
    let (status, body) = user
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "a", "secret": "b"}),
        )
        .await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    assert_eq!(a.delete("/api/v1/resources/secrets/db-pass").await.0, 204);
    t.stop().await;
}

#[tokio::test]
async fn each_profile_has_its_limits() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let user = t.user().await;
    let worker = t.worker().await;

    // user: reads installations and documents; no clusters, no deploys.
    assert_eq!(user.get("/api/v1/resources/k8sinstallations").await.0, 200);
    assert_eq!(user.get("/api/v1/resources/documents").await.0, 200);
    for (status, body) in [
        user.get(CLUSTERS).await,
        user.post(CLUSTERS, json!({"name": "x"})).await,
        user.command("c1", "deploy", deploy_data("u")).await,
        user.get("/api/v1/resources/k8sworkitems").await,
        user.procedure("claimWorkitem", json!({"clusterName": "c1"}))
            .await,
        user.post(
            "/api/v1/resources/tokens",
            json!({"name": "t", "profiles": ["admin"]}),
        )
        .await,
    ] {
        assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    }

    // worker: reads clusters and workitems, runs the protocol; nothing else.
    assert_eq!(worker.get(CLUSTERS).await.0, 200);
    assert_eq!(worker.get("/api/v1/resources/k8sworkitems").await.0, 200);
    for (status, body) in [
        worker.post(CLUSTERS, json!({"name": "x"})).await,
        worker.delete(&format!("{CLUSTERS}/c1")).await,
        worker.command("c1", "deploy", deploy_data("w")).await,
        worker
            .post(
                "/api/v1/resources/tokens",
                json!({"name": "t", "profiles": ["admin"]}),
            )
            .await,
        worker
            .post(
                "/api/v1/resources/users",
                json!({"username": "u", "password": "12345678", "profiles": ["admin"]}),
            )
            .await,
        worker.procedure("addK8sWorkerProfile", json!({})).await,
        worker.delete("/api/v1/resources/k8sworkitems/x").await,
    ] {
        assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    }

    // admin: everything but the worker protocol (ancillaries hold secrets).
    let (status, body) = a
        .procedure("claimWorkitem", json!({"clusterName": "c1"}))
        .await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");

    // Users: admins create them; names are unique; weak passwords refused.
    let (status, body) = a
        .post(
            "/api/v1/resources/users",
            json!({"username": "bob", "password": "short", "profiles": ["user"]}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let (status, body) = a
        .post(
            "/api/v1/resources/users",
            json!({"username": "admin", "password": "long-enough", "profiles": ["user"]}),
        )
        .await;
    assert_error(status, &body, 409, "io.vantiq.resource.duplicate");
    let (status, body) = a.get("/api/v1/resources/users").await;
    assert_eq!(status, 200);
    assert!(!body.to_string().contains("pbkdf2"));
    t.stop().await;
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("shared-name").await;
    a.deploy("shared-name", "web").await;
    let (status, body) = a
        .post(
            "/api/v1/resources/namespaces",
            json!({"name": "team2", "adminUsername": "admin2", "adminPassword": "team2-password"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["profiles"]
            .as_array()
            .unwrap()
            .contains(&json!("k8sWorker__system"))
    );
    let (status, body) = a
        .post("/api/v1/resources/namespaces", json!({"name": "team2"}))
        .await;
    assert_error(status, &body, 409, "io.vantiq.resource.duplicate");

    let b = Client::login(&t.base, "admin2", "team2-password").await;
    // team2 sees nothing of the first namespace, even by name.
    assert_eq!(b.get(CLUSTERS).await.1, json!([]));
    let (status, body) = b.get(&format!("{CLUSTERS}/shared-name")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    assert_eq!(b.get("/api/v1/resources/k8sworkitems").await.1, json!([]));
    let (status, body) = b.command("shared-name", "deploy", deploy_data("web")).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    // The same names can exist in both.
    b.create_cluster("shared-name").await;
    b.deploy("shared-name", "web").await;
    // Asking for the other namespace is refused, by header or parameter.
    let (status, _, body) = b
        .send(
            b.request(Method::GET, CLUSTERS)
                .header("X-Target-Namespace", "k8sworker"),
        )
        .await;
    assert_error(
        status,
        &body,
        403,
        "io.vantiq.authorization.namespace.denied",
    );
    let (status, body) = b
        .get(&format!("{CLUSTERS}?targetNamespace=k8sworker"))
        .await;
    assert_error(
        status,
        &body,
        403,
        "io.vantiq.authorization.namespace.denied",
    );
    // ...but naming one's own namespace is fine.
    let (status, _, _) = b
        .send(
            b.request(Method::GET, CLUSTERS)
                .header("X-Target-Namespace", "team2"),
        )
        .await;
    assert_eq!(status, 200);

    // A worker of team2 claims only team2's work.
    let worker2 = t.token(&b, "gw2", &["k8sWorker__system"]).await;
    let claimed = worker2.claim("shared-name", 0.0).await;
    assert_eq!(claimed["ars_namespace"], "team2");
    assert_eq!(worker2.claim("shared-name", 0.0).await, Value::Null);
    let worker1 = t.worker().await;
    let claimed1 = worker1.claim("shared-name", 0.0).await;
    assert_eq!(claimed1["ars_namespace"], "k8sworker");
    // A lease of one namespace means nothing in the other.
    let (status, body) = worker1.complete(&claimed, json!({})).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");

    // Only the bootstrap namespace's admins manage namespaces.
    let (status, body) = b
        .post("/api/v1/resources/namespaces", json!({"name": "team3"}))
        .await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    assert_eq!(
        b.get("/api/v1/resources/namespaces")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        a.get("/api/v1/resources/namespaces")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, body) = b.get("/api/v1/resources/namespaces/k8sworker").await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    t.stop().await;
}

#[tokio::test]
async fn add_worker_profile_fixes_older_namespaces() {
    let t = TestServer::start().await;
    // A namespace from before the profile existed.
    {
        let db = rusqlite::Connection::open(t.dir.0.join("controlplane.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        db.execute("DELETE FROM profiles WHERE name = 'k8sWorker__system'", [])
            .unwrap();
    }
    let (status, body) = t
        .admin
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "gw", "profiles": ["k8sWorker__system"]}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    assert!(
        body[0]["message"]
            .as_str()
            .unwrap()
            .contains("addK8sWorkerProfile")
    );

    let (status, body) = t
        .admin
        .post(
            "/api/v1/resources/procedures/K8sManager.addK8sWorkerProfile",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"profile": "k8sworker.k8sWorker__system", "added": true})
    );
    let (_, body) = t.admin.procedure("addK8sWorkerProfile", json!({})).await;
    assert_eq!(body["added"], false, "idempotent");
    // Qualified profile names work too.
    t.token(&t.admin, "gw", &["k8sworker.k8sWorker__system"])
        .await;
    t.stop().await;
}

#[tokio::test]
async fn self_cluster_rules_and_quota() {
    let t = TestServer::start_with(|c| c.self_k8s_namespace = "vantiq-self".into()).await;
    let a = &t.admin;
    a.create_cluster("self").await;
    let worker = t.worker().await;
    let data = |name: &str, ns: &str, cpu: &str| {
        json!({"name": name, "k8sNamespace": ns, "config": [
            {"type": "image", "name": "conn:1", "replicaCount": 2},
            {"type": "resourceRequest", "cpu": cpu, "memory": "256Mi"},
            {"type": "resourceLimit", "cpu": cpu, "memory": "512Mi"}
        ]})
    };
    // No quota: no usage permitted.
    let (status, body) = a
        .command("self", "deploy", data("a", "vantiq-self", "500m"))
        .await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
    );

    let (status, body) = a
        .put(
            "/api/v1/resources/namespaces/k8sworker",
            json!({"limits": {"k8sResources": {"vCPU": "1500m", "memory": "4Gi"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .put(
            "/api/v1/resources/namespaces/k8sworker",
            json!({"limits": {"k8sResources": {"vCPU": "lots"}}}),
        )
        .await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");

    let (status, body) = a
        .command("self", "deploy", data("a", "default", "500m"))
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.self.cluster.wrong.namespace",
    );
    let (status, body) = a
        .command("self", "deploy", json!({"name": "a", "k8sNamespace": "vantiq-self", "config": [{"type": "image", "name": "x"}]}))
        .await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.self.cluster.resources.required",
    );

    // 500m x 2 replicas = 1 vCPU of 1.5.
    let (status, body) = a
        .command("self", "deploy", data("a", "vantiq-self", "500m"))
        .await;
    assert_eq!(status, 200, "{body}");
    let claimed = worker.claim("self", 0.0).await;
    let (_, done) = worker.complete(&claimed, json!({})).await;
    assert_eq!(done["installation"]["quotaConsumed"]["vCPU"], "1");
    assert_eq!(
        done["installation"]["quotaConsumed"]["memory"],
        (1u64 << 30).to_string()
    );

    // Another 1 vCPU does not fit; re-deploying "a" smaller replaces its charge.
    let (status, body) = a
        .command("self", "deploy", data("b", "vantiq-self", "500m"))
        .await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
    );
    assert_eq!(body[0]["params"][0], "vCPU");
    let (status, _) = a
        .command("self", "deploy", data("a", "vantiq-self", "250m"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = a
        .command("self", "deploy", data("b", "vantiq-self", "250m"))
        .await;
    assert_eq!(status, 200, "{body}");

    // Undeploy releases the charge.
    let (status, body) = a
        .command("self", "deploy", data("c", "vantiq-self", "500m"))
        .await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
    );
    for _ in 0..2 {
        let claimed = worker.claim("self", 0.0).await;
        assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    }
    a.command("self", "undeploy", json!({"name": "a"})).await;
    let claimed = worker.claim("self", 0.0).await;
    assert_eq!(claimed["operation"], "undeploy");
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    let (status, body) = a
        .command("self", "deploy", data("c", "vantiq-self", "500m"))
        .await;
    assert_eq!(status, 200, "{body}");

    // A first deploy that is cancelled, or found INVALID, gives its charge back.
    let (status, body) = a
        .command("self", "deploy", data("d", "vantiq-self", "500m"))
        .await;
    assert_error(
        status,
        &body,
        429,
        "io.vantiq.resources.k8s.self.cluster.quota.exceeded",
    );
    let id = body_id(&a.get("/api/v1/resources/k8sworkitems").await.1, "c");
    assert_eq!(
        a.delete(&format!("/api/v1/resources/k8sworkitems/{id}"))
            .await
            .0,
        204
    );
    let (status, body) = a
        .command("self", "deploy", data("d", "vantiq-self", "500m"))
        .await;
    assert_eq!(status, 200, "{body}");
    let claimed = worker.claim("self", 0.0).await;
    let (status, _) = worker
        .procedure(
            "failWorkitem",
            json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"], "status": "INVALID", "message": "bad image"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = a
        .command("self", "deploy", data("e", "vantiq-self", "500m"))
        .await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
}

/// The requestId of the outstanding workitem of an installation.
fn body_id(items: &Value, installation: &str) -> String {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["installationName"] == installation)
        .unwrap_or_else(|| panic!("no workitem for {installation}: {items}"))["requestId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Issue 12, case 9: an installation lives in one Kubernetes namespace of
/// one cluster. A redeploy elsewhere, or a second first deploy elsewhere
/// while the first is outstanding, is refused with nothing written; moving
/// takes an undeploy first.
#[tokio::test]
async fn an_installation_is_never_moved_or_duplicated_by_a_deploy() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    a.create_cluster("c2").await;
    let elsewhere = |name: &str| {
        let mut data = deploy_data(name);
        data["k8sNamespace"] = json!("other");
        data
    };
    let refused = |status, body: &Value, code: &str, t: &TestServer, workitems: i64| {
        assert_error(status, body, 400, code);
        assert_eq!(
            t.rows("k8sworkitems"),
            workitems,
            "nothing enqueued: {body}"
        );
    };

    // The first deploy is outstanding: there is no record yet.
    a.deploy("c1", "web").await;
    let (status, body) = a.command("c2", "deploy", deploy_data("web")).await;
    refused(
        status,
        &body,
        "io.vantiq.resources.k8s.installation.other.cluster",
        &t,
        1,
    );
    let (status, body) = a.command("c1", "deploy", elsewhere("web")).await;
    refused(
        status,
        &body,
        "io.vantiq.resources.k8s.installation.other.namespace",
        &t,
        1,
    );
    assert_eq!(body[0]["params"], json!(["web", "apps", "other"]), "{body}");

    // Completed: the record names the place, and a deploy elsewhere is
    // still refused, the record unchanged.
    let worker = t.worker().await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    let (status, body) = a.command("c1", "deploy", elsewhere("web")).await;
    refused(
        status,
        &body,
        "io.vantiq.resources.k8s.installation.other.namespace",
        &t,
        0,
    );
    let (_, record) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(record["k8sNamespace"], "apps", "{record}");
    assert_eq!(record["clusterName"], "c1", "{record}");

    // The same place redeploys; undeployed, it may go elsewhere.
    let (status, body) = a.command("c1", "deploy", deploy_data("web")).await;
    assert_eq!(status, 200, "{body}");
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    a.command("c1", "undeploy", json!({"name": "web"})).await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["operation"], "undeploy");
    assert_eq!(worker.complete(&claimed, json!({})).await.0, 200);
    let (status, body) = a.command("c1", "deploy", elsewhere("web")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request"]["k8sNamespace"], "other", "{body}");
    t.stop().await;
}

/// Issue 14: `POST k8sinstallations/<name>/command {"op": "verify"}` asks for
/// a verify of one installation now: the workitem the periodic verify
/// enqueues, asked for by the caller; the outstanding one when there is one.
/// Admins and users may ask (verify changes nothing in the cluster), a
/// worker may not, and a refusal writes nothing.
#[tokio::test]
async fn verify_of_one_installation_on_demand() {
    let t = TestServer::start().await;
    let a = &t.admin;
    let user = t.user().await;
    let worker = t.worker().await;
    a.create_cluster("c1").await;
    a.deploy("c1", "web").await;
    let claimed = worker.claim("c1", 0.0).await;
    worker.complete(&claimed, json!({"replicaCount": 1})).await;
    let verify = |client: &Client, name: &str| {
        let path = format!("/api/v1/resources/k8sinstallations/{name}/command");
        let client = client.clone();
        async move {
            client
                .post(&path, json!({"op": "verify", "data": {}}))
                .await
        }
    };
    let workitems = || t.rows("k8sworkitems");
    let installation = || async { a.get("/api/v1/resources/k8sinstallations/web").await.1 };
    let before = installation().await;
    assert_eq!(workitems(), 0);

    // The admin asks: a REQUESTED verify, as the periodic one is shaped.
    let (status, first) = verify(a, "web").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["operation"], "verify");
    assert_eq!(first["status"], "REQUESTED");
    assert_eq!(first["clusterName"], "c1");
    assert_eq!(first["requestedBy"], "admin");
    assert_eq!(
        first["request"],
        json!({"name": "web", "k8sNamespace": "apps"})
    );
    assert_eq!(workitems(), 1);
    // Asking again, as admin or user, answers the outstanding one.
    for client in [a, &user] {
        let (status, again) = verify(client, "web").await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["requestId"], first["requestId"]);
    }
    assert_eq!(workitems(), 1);
    // The record is not touched by the request (no transitional status).
    assert_eq!(installation().await, before);

    // Refused: the worker profile, a missing installation, the cluster
    // command, a body that is not an object. Nothing is written.
    let refusals = [
        (
            verify(&worker, "web").await,
            403,
            "io.vantiq.authorization.denied",
        ),
        (
            verify(a, "ghost").await,
            404,
            "io.vantiq.resource.not.found",
        ),
        (
            a.command("c1", "verify", json!({"name": "web"})).await,
            400,
            "io.vantiq.resources.k8s.operation.unknown",
        ),
        (
            a.post(
                "/api/v1/resources/k8sinstallations/web/command",
                json!({"op": "verify", "data": 7}),
            )
            .await,
            400,
            "io.vantiq.argument.invalid",
        ),
    ];
    for ((status, body), expected, code) in refusals {
        assert_error(status, &body, expected, code);
    }
    assert_eq!(workitems(), 1);
    assert_eq!(installation().await, before);

    // The worker carries it out; the result lands as a periodic verify's.
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["requestId"], first["requestId"]);
    assert_eq!(claimed["operation"], "verify");
    let (status, body) = worker
        .complete(
            &claimed,
            json!({"installationStatus": "DAMAGED", "k8sState": "Secret/vantiq-web-secret-0 is missing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let after = installation().await;
    assert_eq!(after["installationStatus"], "DAMAGED");
    assert_eq!(after["k8sState"], "Secret/vantiq-web-secret-0 is missing");
    assert!(after["lastVerifiedAt"].is_string(), "{after}");
    assert_eq!(workitems(), 0);

    // Done: the next ask is a new workitem, here the user's.
    let (status, second) = verify(&user, "web").await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["requestId"], first["requestId"]);
    assert!(
        second["requestedBy"].as_str().unwrap().starts_with("user"),
        "{second}"
    );
    assert_eq!(workitems(), 1);
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["requestId"], second["requestId"]);
    let (status, body) = worker
        .complete(&claimed, json!({"installationStatus": "RUNNING"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(installation().await["installationStatus"], "RUNNING");

    // An installation whose last deploy failed is not verified (deploy it).
    a.deploy("c1", "broken").await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["request"]["name"], "broken", "{claimed}");
    let (status, _) = worker
        .procedure(
            "failWorkitem",
            json!({"requestId": claimed["requestId"], "leaseId": claimed["leaseId"], "status": "FAILED", "message": "image pull failed"}),
        )
        .await;
    assert_eq!(status, 200);
    let failed_items = workitems();
    let (status, body) = verify(a, "broken").await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    assert!(body.to_string().contains("broken is FAILED"), "{body}");
    assert_eq!(workitems(), failed_items);
    t.stop().await;
}

#[tokio::test]
async fn metrics_are_served_without_a_token_unless_turned_off() {
    let t = TestServer::start().await;
    // No Authorization header at all.
    let response = t
        .admin
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    t.stop().await;

    let t = TestServer::start_with(|config| config.no_metrics = true).await;
    let (status, body) = t.admin.get("/metrics").await;
    assert_error(status, &body, 404, "io.vantiq.http.route.unknown");
    t.stop().await;
}
