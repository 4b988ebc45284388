//! A Vantiq REST client as a user or admin uses it: bearer token, JSON in
//! and out, `(status, body)` answers so tests can assert on errors.

use std::time::Duration;

use k8sworker_gateway::AccessToken;
use serde_json::{Value, json};

/// A caller of the control plane with one token.
#[derive(Clone)]
pub struct Vantiq {
    http: reqwest::Client,
    pub base: String,
    token: String,
}

impl std::fmt::Debug for Vantiq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vantiq")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

const R: &str = "/api/v1/resources";

impl Vantiq {
    /// Logs in with `GET /authenticate` (Basic).
    pub async fn login(base: &str, username: &str, password: &str) -> Vantiq {
        let http = reqwest::Client::new();
        let answer: Value = http
            .get(format!("{base}/authenticate"))
            .basic_auth(username, Some(password))
            .send()
            .await
            .expect("control plane answers")
            .error_for_status()
            .unwrap_or_else(|e| panic!("login of {username} failed: {e}"))
            .json()
            .await
            .expect("authenticate answers JSON");
        Vantiq {
            http,
            base: base.to_owned(),
            token: answer["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("control plane answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(self.http.delete(format!("{}{path}", self.base)))
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
        let (status, body) = self.get(&format!("{R}/documents")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// A document's content.
    pub async fn download(&self, name: &str) -> String {
        let response = self
            .http
            .get(format!("{}/docs/{name}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("control plane answers");
        assert_eq!(response.status(), 200, "downloading {name}");
        response.text().await.expect("document text")
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
