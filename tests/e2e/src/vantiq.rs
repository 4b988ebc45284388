//! A Vantiq REST client as a user or admin uses it: `k8sworker-client`
//! with a session or worker token, and `(status, body)` answers so tests can
//! assert on errors.

use std::time::Duration;

use k8sworker_client::Client;
use k8sworker_gateway::AccessToken;
use serde_json::{Value, json};

/// A caller of the control plane with one token.
#[derive(Debug, Clone)]
pub struct Vantiq {
    client: Client,
    /// The server's base URL.
    pub base: String,
}

const R: &str = "/api/v1/resources";

impl Vantiq {
    /// Logs in with `GET /authenticate` (Basic).
    pub async fn login(base: &str, username: &str, password: &str) -> Vantiq {
        let client = Client::builder(base)
            .build()
            .expect("a client of the control plane")
            .login(username, password)
            .await
            .unwrap_or_else(|e| panic!("login of {username} failed: {e}"));
        Vantiq {
            client,
            base: base.to_owned(),
        }
    }

    /// The typed client with this caller's token.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn call(
        &self,
        method: k8sworker_client::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let answer = self
            .client
            .request(method, path, body)
            .await
            .expect("control plane answers");
        (answer.status, answer.body)
    }

    /// `GET path`: the status and the JSON body (`null` if none).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(k8sworker_client::Method::GET, path, None).await
    }

    /// `POST path` with `body`: the status and the JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(k8sworker_client::Method::POST, path, Some(&body))
            .await
    }

    /// `DELETE path`: the status and the JSON body.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(k8sworker_client::Method::DELETE, path, None)
            .await
    }

    /// Creates a K8sCluster.
    pub async fn create_cluster(&self, name: &str) -> Value {
        let (status, body) = self
            .post(&format!("{R}/k8sclusters"), json!({"name": name}))
            .await;
        assert_eq!(status, 200, "creating cluster {name}: {body}");
        body
    }

    /// A long-lived token with the `k8sWorker__system` profile.
    pub async fn worker_token(&self, name: &str) -> AccessToken {
        let (status, body) = self
            .post(
                &format!("{R}/tokens"),
                json!({"name": name, "profiles": ["k8sWorker__system"]}),
            )
            .await;
        assert_eq!(status, 200, "creating worker token {name}: {body}");
        AccessToken::new(body["accessToken"].as_str().expect("accessToken"))
    }

    /// Creates a Vantiq namespace with an admin (system admins only) and
    /// logs that admin in.
    pub async fn create_namespace(&self, name: &str, admin: &str, password: &str) -> Vantiq {
        let (status, body) = self
            .post(
                &format!("{R}/namespaces"),
                json!({"name": name, "adminUsername": admin, "adminPassword": password}),
            )
            .await;
        assert_eq!(status, 200, "creating namespace {name}: {body}");
        Vantiq::login(&self.base, admin, password).await
    }

    /// `POST k8sclusters/<cluster>/command`; the answer as is.
    pub async fn try_command(&self, cluster: &str, op: &str, data: Value) -> (u16, Value) {
        self.post(
            &format!("{R}/k8sclusters/{cluster}/command"),
            json!({"op": op, "data": data}),
        )
        .await
    }

    /// `POST k8sclusters/<cluster>/command`; the workitem.
    pub async fn command(&self, cluster: &str, op: &str, data: Value) -> Value {
        let (status, body) = self.try_command(cluster, op, data).await;
        assert_eq!(status, 200, "{op} on {cluster}: {body}");
        assert_eq!(body["status"], "REQUESTED", "{body}");
        body
    }

    /// `POST k8sinstallations/<name>/command`; the workitem.
    pub async fn installation_command(&self, name: &str, op: &str, data: Value) -> Value {
        let (status, body) = self
            .post(
                &format!("{R}/k8sinstallations/{name}/command"),
                json!({"op": op, "data": data}),
            )
            .await;
        assert_eq!(status, 200, "{op} on installation {name}: {body}");
        body
    }

    /// The installation record, `None` when there is none.
    pub async fn installation(&self, name: &str) -> Option<Value> {
        match self.get(&format!("{R}/k8sinstallations/{name}")).await {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("reading installation {name}: {status} {body}"),
        }
    }

    /// Every installation the token's namespace sees.
    pub async fn installations(&self) -> Vec<Value> {
        let (status, body) = self.get(&format!("{R}/k8sinstallations")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Every workitem the token's namespace sees.
    pub async fn workitems(&self) -> Vec<Value> {
        let (status, body) = self.get(&format!("{R}/k8sworkitems")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// One workitem, `None` once it is gone (completed).
    pub async fn workitem(&self, request_id: &str) -> Option<Value> {
        match self.get(&format!("{R}/k8sworkitems/{request_id}")).await {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("reading workitem {request_id}: {status} {body}"),
        }
    }

    /// Every document's name.
    pub async fn document_names(&self) -> Vec<String> {
        self.client
            .documents()
            .await
            .expect("listing documents")
            .into_iter()
            .map(|document| document.name)
            .collect()
    }

    /// A document's content, as text.
    pub async fn download(&self, name: &str) -> String {
        let content = self
            .client
            .download_document(name)
            .await
            .unwrap_or_else(|e| panic!("downloading {name}: {e}"));
        String::from_utf8(content).expect("document text")
    }

    /// Waits until the installation satisfies `check` (or is gone, for
    /// `None`), panicking after `timeout` with the last record seen.
    pub async fn wait_installation(
        &self,
        name: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.installation(name).await;
            if check(record.as_ref()) {
                return record;
            }
            if tokio::time::Instant::now() > deadline {
                let workitems = self.workitems().await;
                panic!(
                    "installation {name} did not reach the expected state within {timeout:?}\nrecord: {}\nworkitems: {}",
                    serde_json::to_string_pretty(&record).unwrap_or_default(),
                    serde_json::to_string_pretty(&workitems).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the installation's `installationStatus` is `status`.
    pub async fn wait_status(&self, name: &str, status: &str, timeout: Duration) -> Value {
        self.wait_installation(name, timeout, |record| {
            record.is_some_and(|r| r["installationStatus"] == status)
        })
        .await
        .expect("installation present")
    }

    /// Waits until the workitem is gone (completed) or `check` holds.
    pub async fn wait_workitem(
        &self,
        request_id: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let item = self.workitem(request_id).await;
            if check(item.as_ref()) {
                return item;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "workitem {request_id} did not reach the expected state within {timeout:?}: {item:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
