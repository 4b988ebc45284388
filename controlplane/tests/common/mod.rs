//! A control plane started in-process on 127.0.0.1:0 with a fresh database,
//! and a small JSON client for it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8sworker_controlplane::config::Synchronous;
use k8sworker_controlplane::{Config, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "admin-password";

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "k8sworker-controlplane-test-{}",
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Test defaults: fast sweeps, a small body limit, no periodic verify.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::for_tests(dir.0.join("controlplane.db"));
    config.sqlite_synchronous = Synchronous::Normal;
    config.sweep_interval = Duration::from_millis(100);
    config.max_body_bytes = 256 * 1024;
    config.verify_interval = Duration::ZERO;
    config
}

/// A running server and an admin session on it.
pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub admin: Client,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = TempDir::new();
        let mut config = test_config(&dir);
        adjust(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let base = format!("http://{}", server.local_addr());
        let admin = Client::login(&base, "admin", ADMIN_PASSWORD).await;
        TestServer {
            server: Some(server),
            base,
            admin,
            dir,
        }
    }

    /// A client with a long-lived token of `profiles` made by `issuer`.
    pub async fn token(&self, issuer: &Client, name: &str, profiles: &[&str]) -> Client {
        let (status, body) = issuer
            .post(
                "/api/v1/resources/tokens",
                json!({"name": name, "profiles": profiles}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Client::new(&self.base, body["accessToken"].as_str().unwrap())
    }

    /// A worker client of the admin's namespace.
    pub async fn worker(&self) -> Client {
        self.token(
            &self.admin,
            &format!("worker-{}", uuid::Uuid::new_v4()),
            &["k8sWorker__system"],
        )
        .await
    }

    /// A user-profile client of the admin's namespace.
    pub async fn user(&self) -> Client {
        let name = format!("user{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let (status, body) = self
            .admin
            .post(
                "/api/v1/resources/users",
                json!({"username": name, "password": "user-password", "profiles": ["user"]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Client::login(&self.base, &name, "user-password").await
    }

    /// A read-only connection to the server's database file, to check
    /// what a request wrote (or did not).
    pub fn database(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.dir.0.join("controlplane.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// `SELECT count(*) FROM <table>` on the server's database.
    pub fn rows(&self, table: &str) -> i64 {
        self.database()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

/// A plain reqwest client. reqwest is built without a crypto provider of
/// its own (k8sworker-client brings ring), so one is installed first.
pub fn http() -> reqwest::Client {
    k8sworker_client::tls::install_default_provider();
    reqwest::Client::new()
}

/// A JSON client bound to one token.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            base: base.to_owned(),
            token: token.to_owned(),
            http: http(),
        }
    }

    pub async fn login(base: &str, user: &str, password: &str) -> Client {
        let response = http()
            .get(format!("{base}/authenticate"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        Client::new(base, body["accessToken"].as_str().unwrap())
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn send(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = builder.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(self.request(Method::GET, path)).await;
        (status, body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(self.request(Method::POST, path).json(&body))
            .await;
        (status, body)
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.send(self.request(Method::PUT, path).json(&body)).await;
        (status, body)
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.send(self.request(Method::DELETE, path)).await;
        (status, body)
    }

    pub async fn procedure(&self, name: &str, params: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/resources/procedures/K8sManager.{name}"),
            params,
        )
        .await
    }

    pub async fn create_cluster(&self, name: &str) {
        let (status, body) = self
            .post("/api/v1/resources/k8sclusters", json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    pub async fn command(&self, cluster: &str, op: &str, data: Value) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/resources/k8sclusters/{cluster}/command"),
            json!({"op": op, "data": data}),
        )
        .await
    }

    /// A minimal valid deploy; panics unless it is accepted.
    pub async fn deploy(&self, cluster: &str, name: &str) -> Value {
        let (status, body) = self.command(cluster, "deploy", deploy_data(name)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Uploads a document (multipart part `file`, its file name the
    /// document's name) with content type `mime`.
    pub async fn upload(&self, name: &str, mime: &str, content: &[u8]) -> (StatusCode, Value) {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(content.to_vec())
                .file_name(name.to_owned())
                .mime_str(mime)
                .unwrap(),
        );
        let (status, _, body) = self
            .send(
                self.request(Method::POST, "/api/v1/resources/documents")
                    .multipart(form),
            )
            .await;
        (status, body)
    }

    pub async fn claim(&self, cluster: &str, wait: f64) -> Value {
        let (status, body) = self
            .procedure(
                "claimWorkitem",
                json!({"clusterName": cluster, "waitSeconds": wait}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn complete(&self, claimed: &Value, installation: Value) -> (StatusCode, Value) {
        self.procedure(
            "completeWorkitem",
            json!({
                "requestId": claimed["requestId"],
                "leaseId": claimed["leaseId"],
                "installation": installation,
            }),
        )
        .await
    }
}

pub fn deploy_data(name: &str) -> Value {
    json!({
        "name": name,
        "k8sNamespace": "apps",
        "config": [{"type": "image", "name": "nginx:1.27"}]
    })
}

/// Asserts a Vantiq error body: an array whose first element has `code`.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status.as_u16(), expected_status, "{body}");
    let first = &body
        .as_array()
        .unwrap_or_else(|| panic!("error body is not an array: {body}"))[0];
    assert_eq!(first["code"], code, "{body}");
    assert!(
        first["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(first["params"].is_array(), "{body}");
}
