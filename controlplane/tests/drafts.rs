//! A deploy checked (`k8sinstallations/validate`) or previewed
//! (`k8sinstallations/preview`) before it is submitted, over HTTP against
//! the real server: located errors, the deploy's own rules, masked
//! Secrets, the profiles allowed, and nothing written either way.

mod common;

use common::{Client, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VALIDATE: &str = "/api/v1/resources/k8sinstallations/validate";
const PREVIEW: &str = "/api/v1/resources/k8sinstallations/preview";
const ENV_SECRET: &str = "drafts-env-secret-Lp09Qa";
const FILE_SECRET: &str = "drafts-file-secret-Tz44Wu";

/// Every row of the tables a deploy writes, to compare before and after.
fn written(t: &TestServer) -> Vec<i64> {
    [
        "k8sworkitems",
        "k8sinstallations",
        "k8soperations",
        "quota_charges",
    ]
    .iter()
    .map(|table| t.rows(table))
    .collect::<Vec<_>>()
    .into_iter()
    .chain([t
        .database()
        .query_row(
            "SELECT coalesce(sum(json_extract(doc, '$.lifecycleOperationCount')), 0) FROM k8sclusters",
            [],
            |row| row.get(0),
        )
        .unwrap()])
    .collect()
}

async fn validate(caller: &Client, body: Value) -> Value {
    let (status, answer) = caller.post(VALIDATE, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn fields(answer: &Value) -> Vec<&str> {
    answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn validation_locates_every_error_and_writes_nothing() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("c1").await;
    let before = written(&t);

    let good = json!({
        "name": "jdbc",
        "k8sNamespace": "default",
        "config": [
            {"type": "image", "name": "vantiq/jdbc:1.0"},
            {"type": "hostAlias", "name": "dbnode", "hostIP": "10.0.0.7"},
            {"type": "environmentVariable", "name": "PASSWORD", "value": ENV_SECRET, "asSecret": true},
        ]
    });
    let answer = validate(a, good.clone()).await;
    assert_eq!(answer, json!({"valid": true, "errors": []}));
    let mut on_cluster = good.clone();
    on_cluster["clusterName"] = json!("c1");
    assert_eq!(
        validate(a, on_cluster).await,
        json!({"valid": true, "errors": []})
    );

    let bad = json!({
        "name": "Bad_Name",
        "k8sNamespace": "default",
        "config": [
            {"type": "image", "name": "vantiq/jdbc:1.0"},
            {"type": "hostAlias", "name": "dbnode", "hostIP": "not-an-ip"},
            {"type": "hardAffinity", "key": "zone", "values": ["a", "not valid!"]},
            {"type": "inboundPort", "port": "eighty", "protocol": "TCP"},
            {"type": "environmentVariable", "name": "PLAIN", "value": "<redacted>"},
        ]
    });
    let answer = validate(a, bad.clone()).await;
    assert_eq!(answer["valid"], false);
    let found = fields(&answer);
    for expected in [
        "name",
        "config[1].hostIP",
        "config[2].values[1]",
        "config[3].port",
        "config[4].value",
    ] {
        assert!(found.contains(&expected), "{expected} not in {answer}");
    }
    // The messages are the deploy's own (which refuses a misplaced marker
    // before anything else).
    let mut without_marker = bad.clone();
    without_marker["config"].as_array_mut().unwrap().pop();
    let (status, refused) = a.command("c1", "deploy", without_marker).await;
    assert_error(
        status,
        &refused,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );
    let deploy_messages: Vec<&str> = refused[0]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let hostip = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "config[1].hostIP")
        .unwrap();
    assert!(
        deploy_messages.contains(&hostip["message"].as_str().unwrap()),
        "{deploy_messages:?} vs {hostip}"
    );

    // Beyond the core's rules: references, the cluster, the self rules.
    let missing_secret = json!({"name": "app", "k8sNamespace": "default", "config": [
        {"type": "image", "name": "nginx:1.27"},
        {"type": "environmentVariable", "name": "DB", "value": "@secrets(nope)"},
    ]});
    let answer = validate(a, missing_secret.clone()).await;
    assert_eq!(fields(&answer), ["config[1].value"], "{answer}");
    let mut elsewhere = missing_secret.clone();
    elsewhere["clusterName"] = json!("c1");
    assert_eq!(fields(&validate(a, elsewhere).await), ["config[1].value"]);
    let mut no_cluster = good.clone();
    no_cluster["clusterName"] = json!("nowhere");
    assert_eq!(fields(&validate(a, no_cluster).await), ["clusterName"]);
    let (status, _) = a
        .post("/api/v1/resources/k8sclusters", json!({"name": "self"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut on_self = good.clone();
    on_self["clusterName"] = json!("self");
    assert_eq!(fields(&validate(a, on_self).await), ["k8sNamespace"]);
    let answer = validate(
        a,
        json!({"name": "x", "k8sNamespace": "d", "configRef": "nope"}),
    )
    .await;
    assert_eq!(fields(&answer), ["configRef"], "{answer}");

    // A user may check a request; a worker may not.
    let user = t.user().await;
    assert_eq!(validate(&user, good.clone()).await["valid"], true);
    let worker = t.worker().await;
    let (status, body) = worker.post(VALIDATE, good.clone()).await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    // Not an object: 400.
    let (status, body) = a.post(VALIDATE, json!(["x"])).await;
    assert_eq!(status.as_u16(), 400, "{body}");

    assert_eq!(written(&t), before, "validation wrote something");

    // An installation named like the route: read through a select.
    a.deploy("c1", "validate").await;
    let claimed = worker.claim("c1", 0.0).await;
    let (status, body) = worker.complete(&claimed, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = a.get(VALIDATE).await;
    assert_eq!(status.as_u16(), 405);
    let (status, _, found) = a
        .send(
            a.request(reqwest::Method::GET, "/api/v1/resources/k8sinstallations")
                .query(&[("where", r#"{"name": "validate"}"#)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found[0]["name"], "validate", "{found}");
    t.stop().await;
}

#[tokio::test]
async fn a_preview_renders_the_objects_with_secrets_masked_and_writes_nothing() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    let before = written(&t);
    let request = json!({
        "name": "jdbc",
        "k8sNamespace": "default",
        "clusterName": "minikube",
        "config": [
            {"type": "image", "name": "vantiq/jdbc:1.0"},
            {"type": "hostAlias", "name": "dbnode", "hostIP": "10.0.0.7"},
            {"type": "environmentVariable", "name": "PASSWORD", "value": ENV_SECRET, "asSecret": true},
            {"type": "file", "path": "/conf", "filename": "key.pem", "content": FILE_SECRET, "dataSource": "secret"},
            {"type": "inboundPort", "port": 8080, "protocol": "TCP"},
        ]
    });
    let (status, body) = a.post(PREVIEW, request.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let objects = body["objects"].as_array().unwrap();
    let names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "StatefulSet/jdbc",
        "Secret/vantiq-jdbc-secret-0",
        "Secret/vantiq-jdbc-secret-1",
        "Ingress/vantiq-jdbc-ingress-0",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    for object in objects {
        assert_eq!(object["manifest"]["kind"], object["kind"]);
        assert_eq!(object["manifest"]["metadata"]["name"], object["name"]);
        assert_eq!(object["manifest"]["metadata"]["namespace"], "default");
    }
    let statefulset = objects.iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    assert_eq!(
        statefulset["manifest"]["spec"]["template"]["spec"]["hostAliases"][0]["ip"],
        "10.0.0.7"
    );
    let ingress = objects.iter().find(|o| o["kind"] == "Ingress").unwrap();
    assert_eq!(
        ingress["manifest"]["spec"]["rules"][0]["host"],
        "vantiq-minikube-node"
    );
    let text = body.to_string();
    for secret in [ENV_SECRET, FILE_SECRET] {
        assert!(!text.contains(secret), "the preview shows {secret}");
        let encoded = base64_of(secret);
        assert!(
            !text.contains(&encoded[..encoded.len() - 4]),
            "the preview shows {secret} in base64"
        );
    }

    // Invalid: the deploy's 400, with every violation.
    let mut bad = request.clone();
    bad["name"] = json!("Bad_Name");
    bad["config"][1]["hostIP"] = json!("nope");
    let (status, body) = a.post(PREVIEW, bad).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.request.invalid",
    );
    assert_eq!(body[0]["params"].as_array().unwrap().len(), 2, "{body}");
    // The cluster is required, and must exist.
    let mut no_cluster = request.clone();
    no_cluster.as_object_mut().unwrap().remove("clusterName");
    let (status, body) = a.post(PREVIEW, no_cluster).await;
    assert_error(status, &body, 400, "io.vantiq.argument.invalid");
    let mut unknown = request.clone();
    unknown["clusterName"] = json!("nowhere");
    let (status, body) = a.post(PREVIEW, unknown).await;
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    // The deploy's tenant rules: users do not deploy, so do not preview.
    let user = t.user().await;
    let (status, body) = user.post(PREVIEW, request.clone()).await;
    assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    // The self cluster's rules hold for a preview too.
    a.create_cluster("self").await;
    let mut on_self = request.clone();
    on_self["clusterName"] = json!("self");
    let (status, body) = a.post(PREVIEW, on_self).await;
    assert_error(
        status,
        &body,
        400,
        "io.vantiq.resources.k8s.self.cluster.wrong.namespace",
    );

    assert_eq!(written(&t)[..4], before[..4], "the preview wrote something");
    assert_eq!(
        written(&t)[4],
        before[4],
        "the preview counted an operation"
    );
    t.stop().await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A preview is no function of the secret values but their sizes: two
/// requests whose secret values differ (same lengths) preview the same
/// objects, byte for byte. A hash of the values anywhere in them (the pod
/// template's config hash, an object's spec hash) would let a caller test
/// a guess of a stored value (sent back as the redaction marker) by
/// previewing the guess. Nothing is written.
#[tokio::test]
async fn a_preview_shows_nothing_that_depends_on_a_secret_value() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    let before = written(&t);
    let request = |env: &str, file: &str| {
        json!({
            "name": "jdbc",
            "k8sNamespace": "default",
            "clusterName": "minikube",
            "config": [
                {"type": "image", "name": "vantiq/jdbc:1.0"},
                {"type": "environmentVariable", "name": "PASSWORD", "value": env, "asSecret": true},
                {"type": "file", "path": "/conf", "filename": "key.pem", "content": file, "dataSource": "secret"},
            ]
        })
    };
    let (status, first) = a.post(PREVIEW, request(ENV_SECRET, FILE_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let guess = |secret: &str| secret.chars().rev().collect::<String>();
    let (status, second) = a
        .post(PREVIEW, request(&guess(ENV_SECRET), &guess(FILE_SECRET)))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(
        first, second,
        "the preview depends on the secret values, not only on their sizes"
    );
    // Only the env secret differs: still the same.
    let (status, third) = a
        .post(PREVIEW, request(&guess(ENV_SECRET), FILE_SECRET))
        .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(first, third);
    assert_eq!(written(&t), before, "the preview wrote something");
    t.stop().await;
}

/// A redaction marker stands for the value stored for its entry; with no
/// installation recorded there is none, and the deploy refuses it. The
/// validation says so too, with or without `clusterName`, at the entry the
/// deploy names; nothing is written.
#[tokio::test]
async fn a_marker_with_no_stored_value_is_invalid_as_the_deploy_finds_it() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    let before = written(&t);
    let data = json!({
        "name": "fresh",
        "k8sNamespace": "default",
        "config": [
            {"type": "image", "name": "vantiq/jdbc:1.0"},
            {"type": "environmentVariable", "name": "PASSWORD", "value": "<redacted>", "asSecret": true},
        ]
    });
    let (status, refused) = a.command("minikube", "deploy", data.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let mut on_cluster = data.clone();
    on_cluster["clusterName"] = json!("minikube");
    for (body, with) in [(data, "without"), (on_cluster, "with")] {
        let answer = validate(a, body).await;
        assert_eq!(answer["valid"], false, "{with} clusterName: {answer}");
        assert_eq!(
            fields(&answer),
            ["config[1]"],
            "{with} clusterName: {answer}"
        );
    }
    assert_eq!(written(&t), before, "a refusal wrote something");
    t.stop().await;
}
