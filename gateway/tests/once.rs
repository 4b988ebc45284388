//! The CronJob form's command, `k8sworker-gateway --once`, as a process
//! against a real control plane: its first lines say its version, the
//! server and the cluster, and the server's version; its last says there
//! was no workitem or how many it processed; it exits 0. Against a
//! `--vantiq-strict` server it speaks the REST protocol by itself.

use std::process::Output;

use k8sworker_client::Client;
use k8sworker_controlplane::{Config, Server};
use serde_json::{Value, json};

struct ControlPlane {
    server: Server,
    admin: Client,
    url: String,
    _dir: tempfile::TempDir,
}

async fn control_plane(strict: bool) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().join("controlplane.db"));
    config.vantiq_strict = strict;
    let (username, password) = (config.admin_username.clone(), config.admin_password.clone());
    let server = Server::start(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let admin = Client::builder(&url)
        .build()
        .unwrap()
        .login(&username, password.as_deref().unwrap())
        .await
        .unwrap();
    let created = admin
        .post("/api/v1/resources/k8sclusters", &json!({"name": "c1"}))
        .await
        .unwrap();
    assert!(created.is_success(), "{created:?}");
    ControlPlane {
        server,
        admin,
        url,
        _dir: dir,
    }
}

async fn worker_token(admin: &Client) -> String {
    let answer = admin
        .post(
            "/api/v1/resources/tokens",
            &json!({"name": "gw", "profiles": ["k8sWorker__system"]}),
        )
        .await
        .unwrap();
    answer.body["accessToken"].as_str().unwrap().to_owned()
}

/// The admin's command `body` on `cluster`; panics unless it is accepted.
async fn command(cp: &ControlPlane, cluster: &str, body: &Value) -> k8sworker_client::Answer {
    let answer = cp
        .admin
        .post(
            &format!("/api/v1/resources/k8sclusters/{cluster}/command"),
            body,
        )
        .await
        .unwrap();
    assert!(answer.is_success(), "{answer:?}");
    answer
}

/// The workitem `id` as the admin reads it.
async fn workitem(cp: &ControlPlane, id: &str) -> Value {
    cp.admin
        .get_json(&format!("/api/v1/resources/k8sworkitems/{id}"))
        .await
        .unwrap()
}

/// Text without ANSI escape sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut parts = text.split('\u{1b}');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        out.push_str(part.split_once('m').map_or(part, |(_, rest)| rest));
    }
    out
}

/// `k8sworker-gateway --once` with the CronJob's environment; the planner
/// is not needed for what these runs do. The exit status and the log.
async fn once(url: &str, token: &str) -> (Output, String) {
    once_with(url, token, &[]).await
}

/// [`once`] with more arguments.
async fn once_with(url: &str, token: &str, more: &[&str]) -> (Output, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_k8sworker-gateway"))
        .args([
            "--once",
            "--insecure-plaintext",
            "--planner-url",
            "http://127.0.0.1:9",
        ])
        .args(more)
        .env_clear()
        .env("CLUSTER_NAME", "c1")
        .env("VANTIQ_NAMESPACE", "k8sworker")
        .env("VANTIQ_URL", url)
        .env("VANTIQ_ACCESS_TOKEN", token)
        .output()
        .await
        .unwrap();
    let log = plain(&String::from_utf8_lossy(&output.stderr))
        + &plain(&String::from_utf8_lossy(&output.stdout));
    (output, log)
}

fn line<'a>(log: &'a str, text: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line with `{text}` in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_against_a_strict_server_speaks_rest_and_says_what_it_did() {
    let cp = control_plane(true).await;
    let token = worker_token(&cp.admin).await;
    assert!(!token.is_empty());

    let (output, log) = once(&cp.url, &token).await;
    assert!(output.status.success(), "{log}");
    let started = line(&log, "k8sworker-gateway started");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(started.contains(&version), "{started}");
    assert!(started.contains(&format!("server={}", cp.url)), "{started}");
    assert!(started.contains("cluster=c1"), "{started}");
    line(&log, "server_version=\"unknown (no /api/v1/version)\"");
    line(&log, "protocol=Rest");
    line(&log, "no workitem available; exiting");
    assert!(!log.contains(&token), "the token is never logged");

    // A queued deploy the REST protocol cannot carry: INVALID, counted.
    let secret = cp
        .admin
        .post(
            "/api/v1/resources/secrets",
            &json!({"name": "db", "secret": "s3cr3t"}),
        )
        .await
        .unwrap();
    assert!(secret.is_success(), "{secret:?}");
    let deploy = json!({"op": "deploy", "data": {"name": "web", "k8sNamespace": "apps", "config": [
        {"type": "image", "name": "app:1"},
        {"type": "environmentVariable", "name": "P", "value": "@secrets(db)"},
    ]}});
    let item = command(&cp, "c1", &deploy).await;
    let (output, log) = once(&cp.url, &token).await;
    assert!(output.status.success(), "{log}");
    line(&log, "1 workitem processed; exiting");
    assert!(!log.contains("s3cr3t"), "{log}");
    let left = workitem(&cp, item.body["requestId"].as_str().unwrap()).await;
    assert_eq!(left["status"], "INVALID", "{left}");
    assert_eq!(
        cp.admin
            .get("/api/v1/resources/k8sinstallations/web")
            .await
            .unwrap()
            .status,
        404,
        "nothing recorded"
    );
    cp.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_against_the_claim_protocol_logs_the_servers_version() {
    let cp = control_plane(false).await;
    let token = worker_token(&cp.admin).await;
    let (output, log) = once(&cp.url, &token).await;
    assert!(output.status.success(), "{log}");
    line(&log, "server_version=\"k8sworker-controlplane ");
    line(&log, "protocol=Claim");
    line(&log, "no workitem available; exiting");
    cp.server.shutdown().await.unwrap();
}

/// REST mode against a server that takes none of its writes (a claim
/// server, as `--protocol rest` or a misled `auto` would meet it), or with
/// a token that may not make them: the run fails saying so, instead of
/// skipping every workitem and logging an empty queue; nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_run_the_server_refuses_fails_instead_of_reporting_an_empty_queue() {
    let claim = control_plane(false).await;
    let strict = control_plane(true).await;
    let deploy = json!({"op": "deploy", "data": {"name": "web", "k8sNamespace": "apps", "config": [
        {"type": "image", "name": "app:1"},
    ]}});
    // A worker token bound to another cluster (by its first write there).
    let made = strict
        .admin
        .post("/api/v1/resources/k8sclusters", &json!({"name": "c2"}))
        .await
        .unwrap();
    assert!(made.is_success(), "{made:?}");
    let elsewhere = command(
        &strict,
        "c2",
        &json!({"op": "deploy", "data": {"name": "api", "k8sNamespace": "apps",
            "config": [{"type": "image", "name": "app:1"}]}}),
    )
    .await;
    let bound_token = worker_token(&strict.admin).await;
    let bound = Client::builder(&strict.url)
        .token(k8sworker_client::AccessToken::new(bound_token.clone()))
        .build()
        .unwrap();
    bound
        .update(
            "k8sworkitems",
            elsewhere.body["requestId"].as_str().unwrap(),
            &json!({"status": "PENDING"}),
        )
        .await
        .unwrap();
    for (cp, token, why) in [
        (&claim, worker_token(&claim.admin).await, "HTTP 405"),
        (&strict, bound_token, "HTTP 403"),
    ] {
        let item = command(cp, "c1", &deploy).await;
        let (output, log) = once_with(&cp.url, &token, &["--protocol", "rest"]).await;
        assert!(!output.status.success(), "{log}");
        let refused = line(&log, "does not let this token mark workitems PENDING");
        assert!(refused.contains(why), "{refused}");
        assert!(!log.contains("no workitem available"), "{log}");
        assert!(!log.contains(&token), "the token is never logged");
        let left = workitem(cp, item.body["requestId"].as_str().unwrap()).await;
        assert_eq!(left["status"], "REQUESTED", "{left}");
    }
    claim.server.shutdown().await.unwrap();
    strict.server.shutdown().await.unwrap();
}
