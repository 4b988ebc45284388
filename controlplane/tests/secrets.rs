//! Secrets stay secret: encrypted at rest, redacted in every read but the
//! worker's claim, kept when a client sends the redaction marker back, never
//! in the logs; private database and key files; downloads that are not
//! sniffed; backup, restore and key rotation.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use k8sworker_controlplane::secret_config::REDACTED;
use k8sworker_controlplane::{Server, offline};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ENV_SECRET: &str = "env-secret-Zq8v1Lk";
const FILE_SECRET: &str = "file-secret-Pk3w9Rt";
const VAULT_SECRET: &str = "vault-secret-Hy7c2Mn";
const SECRETS: [&str; 3] = [ENV_SECRET, FILE_SECRET, VAULT_SECRET];

/// A deploy with a secret environment value, a `@secrets(db)` reference, a
/// plain value and secret file content.
fn secret_deploy(name: &str) -> Value {
    json!({
        "name": name,
        "k8sNamespace": "apps",
        "config": [
            {"type": "image", "name": "nginx:1.27"},
            {"type": "environmentVariable", "name": "API_KEY", "value": ENV_SECRET, "asSecret": true},
            {"type": "environmentVariable", "name": "DB_PASSWORD", "value": "@secrets(db)"},
            {"type": "environmentVariable", "name": "MODE", "value": "visible"},
            {"type": "file", "path": "/etc/app", "filename": "key.pem", "content": FILE_SECRET, "dataSource": "secret"},
        ]
    })
}

/// The same config as every read shows it.
fn redacted_config() -> Value {
    let mut config = secret_deploy("x")["config"].clone();
    config[1]["value"] = json!(REDACTED);
    config[4]["content"] = json!(REDACTED);
    config
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The bytes of the database file and its WAL and shared-memory files.
fn database_bytes(database: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(content) = std::fs::read(format!("{}{suffix}", database.display())) {
            bytes.extend(content);
        }
    }
    bytes
}

#[track_caller]
fn assert_no_secret(what: &str, bytes: &[u8]) {
    for secret in SECRETS {
        assert!(!contains(bytes, secret), "{what} holds the secret {secret}");
    }
}

/// Cluster `c1`, the secret `db`, and a deploy of `web` with secrets,
/// claimed and completed (so the installation record holds `configSpec`).
async fn deployed(t: &TestServer) -> Client {
    let a = &t.admin;
    a.create_cluster("c1").await;
    let (status, body) = a
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "db", "secret": VAULT_SECRET}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = a.command("c1", "deploy", secret_deploy("web")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["request"]["config"], redacted_config());
    let worker = t.worker().await;
    let claimed = worker.claim("c1", 0.0).await;
    assert_claim_opens_every_secret(&claimed);
    let (status, body) = worker
        .complete(&claimed, json!({"installationStatus": "RUNNING"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["installation"]["configSpec"], redacted_config());
    worker
}

#[track_caller]
fn assert_claim_opens_every_secret(claimed: &Value) {
    let config = &claimed["request"]["config"];
    assert_eq!(config[1]["value"], ENV_SECRET, "{claimed}");
    assert_eq!(config[2]["value"], "@secrets(db)");
    assert_eq!(config[3]["value"], "visible");
    assert_eq!(config[4]["content"], FILE_SECRET);
    assert_eq!(claimed["ancillaries"]["secrets"]["db"], VAULT_SECRET);
}

/// A server's files after [`deployed`] and a waiting deploy of `api`, the
/// server stopped.
async fn stopped_with_a_waiting_deploy() -> TestServer {
    let mut t = TestServer::start().await;
    deployed(&t).await;
    let (status, body) = t.admin.command("c1", "deploy", secret_deploy("api")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    t.server.take().unwrap().shutdown().await.unwrap();
    t
}

/// On `server` (whose database holds the waiting deploy of `api`), a new
/// worker claims it and every secret opens; then the server stops.
async fn claim_the_waiting_deploy(server: Server) {
    let base = format!("http://{}", server.local_addr());
    let admin = Client::login(&base, "admin", ADMIN_PASSWORD).await;
    let (status, body) = admin
        .post(
            "/api/v1/resources/tokens",
            json!({"name": "another-worker", "profiles": ["k8sWorker__system"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let worker = Client::new(&base, body["accessToken"].as_str().unwrap());
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["installationName"], "api");
    assert_claim_opens_every_secret(&claimed);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn secret_values_are_encrypted_at_rest() {
    let t = TestServer::start().await;
    let worker = deployed(&t).await;
    // A second deploy waits as a workitem whose request holds the secrets.
    let (status, body) = t.admin.command("c1", "deploy", secret_deploy("api")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let database = t.dir.0.join("controlplane.db");
    let bytes = database_bytes(&database);
    assert_no_secret("the database (serving)", &bytes);
    assert!(
        contains(&bytes, "k8sw-sealed:v1:"),
        "the secrets are stored, sealed"
    );
    // The stored values still open for the claim.
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["installationName"], "api");
    assert_claim_opens_every_secret(&claimed);

    t.stop().await;
    assert_no_secret("the database (stopped)", &database_bytes(&database));
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_and_key_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    // A database file left readable by others is narrowed too.
    let database = dir.0.join("controlplane.db");
    std::fs::write(&database, b"").unwrap();
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(test_config(&dir)).await.unwrap();
    let admin = Client::login(
        &format!("http://{}", server.local_addr()),
        "admin",
        ADMIN_PASSWORD,
    )
    .await;
    admin.create_cluster("c1").await;
    for file in [
        "controlplane.db",
        "controlplane.db-wal",
        "controlplane.db-shm",
        "controlplane.db.key",
    ] {
        let mode = std::fs::metadata(dir.0.join(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {:o}", mode & 0o777);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_read_redacts_secret_values() {
    let t = TestServer::start().await;
    deployed(&t).await;
    let (status, body) = t.admin.command("c1", "deploy", secret_deploy("api")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let request_id = body["requestId"].as_str().unwrap().to_owned();
    let user = t.user().await;
    let worker = t.worker().await;
    // Workitems are read by admins and workers, installations by users too.
    for (reader, reads_workitems) in [(&t.admin, true), (&worker, true), (&user, false)] {
        let (status, record) = reader.get("/api/v1/resources/k8sinstallations/web").await;
        assert_eq!(status, StatusCode::OK, "{record}");
        assert_eq!(record["configSpec"], redacted_config());
        let mut paths = vec!["/api/v1/resources/k8sinstallations"];
        if reads_workitems {
            let (status, item) = reader
                .get(&format!("/api/v1/resources/k8sworkitems/{request_id}"))
                .await;
            assert_eq!(status, StatusCode::OK, "{item}");
            assert_eq!(item["request"]["config"], redacted_config());
            paths.push("/api/v1/resources/k8sworkitems");
        }
        for path in paths {
            let (status, body) = reader.get(path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_no_secret(path, body.to_string().as_bytes());
            assert!(body.to_string().contains(REDACTED), "{body}");
        }
        // A select cannot probe a value: it sees the redacted records.
        let (status, body) = reader
            .post(
                "/api/v1/resources/k8sinstallations/select",
                json!({"configSpec": secret_deploy("web")["config"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!([]));
    }
    for path in ["/api/v1/resources/secrets", "/api/v1/resources/secrets/db"] {
        let (status, body) = t.admin.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_no_secret(path, body.to_string().as_bytes());
    }
    t.stop().await;
}

#[tokio::test]
async fn the_redaction_marker_keeps_the_stored_value() {
    let t = TestServer::start().await;
    let worker = deployed(&t).await;
    let a = &t.admin;

    // Read, edit one plain value, resubmit with the markers.
    let (_, record) = a.get("/api/v1/resources/k8sinstallations/web").await;
    let mut config = record["configSpec"].clone();
    config[3]["value"] = json!("edited");
    let (status, body) = a
        .command(
            "c1",
            "deploy",
            json!({"name": "web", "k8sNamespace": "apps", "config": config}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A secret marker on the secrets resource keeps its value too.
    let (status, body) = a
        .put(
            "/api/v1/resources/secrets/db",
            json!({"secret": REDACTED, "description": "edited"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "edited");
    let claimed = worker.claim("c1", 0.0).await;
    assert_eq!(claimed["request"]["config"][3]["value"], "edited");
    let mut expected = claimed.clone();
    expected["request"]["config"][3]["value"] = json!("visible");
    assert_claim_opens_every_secret(&expected);
    assert_no_secret(
        "the database",
        &database_bytes(&t.dir.0.join("controlplane.db")),
    );
    let (status, body) = worker
        .complete(&claimed, json!({"installationStatus": "RUNNING"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A marker with no stored value is refused, and nothing is written.
    let (_, before) = a.get("/api/v1/resources/k8sworkitems").await;
    let (_, record_before) = a.get("/api/v1/resources/k8sinstallations/web").await;
    let mut new_entry = secret_deploy("web");
    new_entry["config"][1]["name"] = json!("OTHER_KEY");
    new_entry["config"][1]["value"] = json!(REDACTED);
    let mut fresh = secret_deploy("fresh");
    fresh["config"][1]["value"] = json!(REDACTED);
    for data in [new_entry, fresh] {
        let (status, body) = a.command("c1", "deploy", data).await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert!(
            body[0]["message"].as_str().unwrap().contains("config[1]"),
            "{body}"
        );
    }
    let (_, after) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(after, before);
    let (_, record_after) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(record_after, record_before);
    let (status, _) = a.get("/api/v1/resources/k8sinstallations/fresh").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.stop().await;
}

#[tokio::test]
async fn the_marker_in_a_slot_that_is_no_longer_secret_is_refused() {
    let t = TestServer::start().await;
    deployed(&t).await;
    let a = &t.admin;
    let (_, before) = a.get("/api/v1/resources/k8sworkitems").await;
    let (_, record_before) = a.get("/api/v1/resources/k8sinstallations/web").await;
    let config = record_before["configSpec"].clone();
    let mut plain_env = config.clone();
    plain_env[1]["asSecret"] = json!(false);
    let mut config_map_file = config.clone();
    config_map_file[4]["dataSource"] = json!("configMap");
    for (config, entry) in [
        (plain_env, "config[1].value"),
        (config_map_file, "config[4].content"),
    ] {
        let data = json!({"name": "web", "k8sNamespace": "apps", "config": config});
        let (status, body) = a.command("c1", "deploy", data).await;
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert!(
            body[0]["message"].as_str().unwrap().contains(entry),
            "{body}"
        );
    }
    let (_, after) = a.get("/api/v1/resources/k8sworkitems").await;
    assert_eq!(after, before);
    let (_, record_after) = a.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(record_after, record_before);
    t.stop().await;
}

/// Everything this test binary logs, at debug level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_and_secrets_never_reach_the_logs() {
    let logs = captured_logs();
    let t = TestServer::start().await;
    deployed(&t).await;
    let token = t.admin.token.clone();
    let response = http()
        .get(format!(
            "{}/api/v1/resources/k8sclusters?token={token}",
            t.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "?token= stays accepted");
    t.stop().await;
    let logs = logs.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&logs);
    assert!(
        text.contains("/api/v1/resources/k8sclusters?token=<redacted>"),
        "the access log records the URI, redacted"
    );
    assert!(!contains(&logs, &token), "the token is in the logs");
    assert_no_secret("the logs", &logs);
}

#[tokio::test]
async fn downloads_are_never_sniffed_or_run() {
    let t = TestServer::start().await;
    let a = &t.admin;
    for (name, mime) in [("page.html", "text/html"), ("notes.txt", "text/plain")] {
        let (status, body) = a.upload(name, mime, b"<script>alert(1)</script>").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let page = a
        .request(Method::GET, "/docs/page.html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "application/octet-stream");
    assert_eq!(page.headers()["content-disposition"], "attachment");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let notes = a
        .request(Method::GET, "/docs/notes.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(notes.headers()["content-type"], "text/plain");
    assert_eq!(notes.headers()["x-content-type-options"], "nosniff");
    assert!(notes.headers().get("content-disposition").is_none());
    t.stop().await;
}

#[tokio::test]
async fn a_backup_restores_every_resource_with_its_key() {
    let t = TestServer::start().await;
    deployed(&t).await;
    let a = &t.admin;
    let (status, body) = a.command("c1", "deploy", secret_deploy("api")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = t.user().await;
    let (status, _) = user.get("/api/v1/resources/k8sinstallations").await;
    assert_eq!(status, StatusCode::OK);
    t.token(a, "ci", &["user"]).await;
    let (status, body) = a
        .upload("notes/readme.txt", "text/plain", b"document content")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let reads = [
        "/api/v1/resources/k8sclusters",
        "/api/v1/resources/k8sinstallations",
        "/api/v1/resources/k8sworkitems",
        "/api/v1/resources/documents",
        "/api/v1/resources/secrets",
        "/api/v1/resources/tokens",
        "/api/v1/resources/users",
        "/api/v1/resources/namespaces",
    ];
    let mut before = Vec::new();
    for path in reads {
        let (status, body) = a.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        before.push(body);
    }

    // The backup runs while the server keeps serving writes.
    let config = test_config(&t.dir);
    let backup = t.dir.0.join("backup.db");
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            for index in 0..20 {
                a.create_cluster(&format!("busy{index}")).await;
            }
        })
    };
    let report = tokio::task::spawn_blocking({
        let (config, backup) = (config.clone(), backup.clone());
        move || offline::backup(&config, &backup)
    })
    .await
    .unwrap()
    .unwrap();
    writer.await.unwrap();
    assert_eq!(report.key_ids.len(), 1);
    assert_no_secret("the backup", &std::fs::read(&backup).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A backup never overwrites a file.
    assert!(offline::backup(&config, &backup).is_err());

    // Restore: the backup as the database of a new server, with the key file.
    let restored = TempDir::new();
    std::fs::copy(&backup, restored.0.join("controlplane.db")).unwrap();
    std::fs::copy(config.key_file(), restored.0.join("controlplane.db.key")).unwrap();
    let server = Server::start(test_config(&restored)).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let admin = Client::login(&base, "admin", ADMIN_PASSWORD).await;
    for (path, expected) in reads.iter().zip(&before) {
        let (status, mut body) = admin.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if *path == "/api/v1/resources/k8sclusters" {
            // The backup is one consistent moment of the concurrent writes.
            body = json!(
                body.as_array()
                    .unwrap()
                    .iter()
                    .filter(|cluster| !cluster["name"].as_str().unwrap().starts_with("busy"))
                    .cloned()
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(&body, expected, "{path} after the restore");
    }
    let response = admin
        .request(Method::GET, "/docs/notes/readme.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        b"document content"
    );
    // Secrets included: the waiting deploy's claim opens every value.
    claim_the_waiting_deploy(server).await;

    // Without its key file the secrets are gone: the server refuses to start.
    let keyless = TempDir::new();
    std::fs::copy(&backup, keyless.0.join("controlplane.db")).unwrap();
    let error = Server::start(test_config(&keyless)).await.unwrap_err();
    let chain = format!("{:?}", anyhow_chain(&error));
    assert!(chain.contains("needs key"), "{chain}");
    assert!(
        !keyless.0.join("controlplane.db.key").exists(),
        "no new key file is left beside a database it cannot open"
    );
    t.stop().await;
}

fn anyhow_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    chain
}

#[tokio::test]
async fn rotating_the_key_reseals_every_secret() {
    let t = stopped_with_a_waiting_deploy().await;
    let config = test_config(&t.dir);
    let rotation = offline::rotate_key(&config).unwrap();
    // The secret, the record's configSpec and the waiting request.
    assert_eq!(rotation.resealed_rows, 3);
    assert_eq!(rotation.retired_key_ids.len(), 1);
    let bytes = std::fs::read(&config.database).unwrap();
    let old = format!("k8sw-sealed:v1:{}:", rotation.retired_key_ids[0]);
    let new = format!("k8sw-sealed:v1:{}:", rotation.new_key_id);
    assert!(contains(&bytes, &new));
    assert!(
        !contains(&bytes, &old),
        "no value is left under the old key"
    );
    assert_no_secret("the database", &bytes);
    let key_file = std::fs::read_to_string(config.key_file()).unwrap();
    assert!(key_file.contains(&rotation.new_key_id));
    assert!(key_file.contains(&rotation.retired_key_ids[0]));

    let server = Server::start(config).await.unwrap();
    claim_the_waiting_deploy(server).await;
}

/// Every stored sealed value: the secrets, the records' `configSpec`, the
/// workitems' requests.
fn sealed_rows(t: &TestServer) -> Vec<String> {
    let database = t.database();
    let mut rows = Vec::new();
    for query in [
        "SELECT value FROM secrets ORDER BY name",
        "SELECT doc FROM k8sinstallations ORDER BY name",
        "SELECT request FROM k8sworkitems ORDER BY request_id",
    ] {
        let mut statement = database.prepare(query).unwrap();
        let values = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap();
        rows.extend(values.map(Result::unwrap));
    }
    rows
}

#[tokio::test]
async fn rotating_the_key_is_refused_while_a_server_runs() {
    let mut t = TestServer::start().await;
    let worker = deployed(&t).await;
    let config = test_config(&t.dir);
    let key_file = std::fs::read(config.key_file()).unwrap();
    let rows = sealed_rows(&t);
    let error = offline::rotate_key(&config).unwrap_err();
    let message = anyhow_chain(&error).join(": ");
    assert!(
        message.contains("a server is running on the database")
            && message.contains("stop it before running rotate-key"),
        "{message}"
    );
    assert_eq!(std::fs::read(config.key_file()).unwrap(), key_file);
    assert_eq!(sealed_rows(&t), rows);
    // The running server still opens every secret.
    let (status, body) = t.admin.command("c1", "deploy", secret_deploy("api")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_claim_opens_every_secret(&worker.claim("c1", 0.0).await);

    t.server.take().unwrap().shutdown().await.unwrap();
    let rotation = offline::rotate_key(&config).unwrap();
    let rotated = std::fs::read(config.key_file()).unwrap();
    assert_ne!(rotated, key_file);
    assert!(contains(&rotated, &rotation.new_key_id));
    assert_ne!(sealed_rows(&t), rows);
}

#[tokio::test]
async fn a_server_does_not_start_while_rotate_key_runs() {
    let t = stopped_with_a_waiting_deploy().await;
    let config = test_config(&t.dir);
    let key_file = std::fs::read(config.key_file()).unwrap();
    let rows = sealed_rows(&t);
    let rotation = k8sworker_controlplane::store::lock::DatabaseLock::acquire(
        &config.database,
        k8sworker_controlplane::store::lock::Holder::RotateKey,
    )
    .unwrap();
    let error = Server::start(config.clone()).await.unwrap_err();
    let message = anyhow_chain(&error).join(": ");
    assert!(message.contains("rotate-key is running"), "{message}");
    assert_eq!(std::fs::read(config.key_file()).unwrap(), key_file);
    assert_eq!(sealed_rows(&t), rows);
    drop(rotation);
    let server = Server::start(config).await.unwrap();
    claim_the_waiting_deploy(server).await;
}

#[tokio::test]
async fn values_stored_in_plain_text_are_sealed_at_the_next_start() {
    let t = stopped_with_a_waiting_deploy().await;
    // What an older version stored: every value in plain text.
    let config = test_config(&t.dir);
    let store =
        k8sworker_controlplane::store::Store::open(&config.database, config.sqlite_synchronous)
            .unwrap();
    store
        .run_blocking(|connection| {
            connection.execute("UPDATE secrets SET value = ?1", [VAULT_SECRET])?;
            connection.execute(
                "UPDATE k8sworkitems SET request = ?1",
                [secret_deploy("api").to_string()],
            )?;
            connection.execute(
                "UPDATE k8sinstallations SET doc = json_set(doc, '$.configSpec', json(?1))",
                [secret_deploy("web")["config"].to_string()],
            )?;
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
    drop(store);
    assert!(contains(&database_bytes(&config.database), ENV_SECRET));

    let server = Server::start(config.clone()).await.unwrap();
    assert_no_secret(
        "the database after the start",
        &database_bytes(&config.database),
    );
    let base = format!("http://{}", server.local_addr());
    let admin = Client::login(&base, "admin", ADMIN_PASSWORD).await;
    let (_, record) = admin.get("/api/v1/resources/k8sinstallations/web").await;
    assert_eq!(record["configSpec"], redacted_config());
    claim_the_waiting_deploy(server).await;
}
