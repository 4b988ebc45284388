//! The executor's real identity in a test namespace: the ServiceAccount,
//! Role and RoleBinding of `deploy/rbac/executor-role.yaml`, and a token for
//! that ServiceAccount from the TokenRequest API.
//!
//! The token is the only credential of the resulting client and kubeconfig
//! (no client certificate), so every request is authorized by RBAC exactly
//! as for an executor in a pod.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{ConfigMap, ServiceAccount},
};
use kube::{
    Api, Client, Resource,
    api::{ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::TestCluster;

/// Field manager of objects the tests create as admin.
pub const TEST_MANAGER: &str = "k8sworker-tests";

/// A ServiceAccount token, and how to use it.
pub struct ExecutorIdentity {
    /// The namespace the Role and RoleBinding are limited to.
    pub namespace: String,
    /// The executor's ServiceAccount in it.
    pub service_account: String,
    /// A kubeconfig with the token as its only credential.
    pub kubeconfig: PathBuf,
    kubeconfig_yaml: String,
}

impl std::fmt::Debug for ExecutorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output.
        f.debug_struct("ExecutorIdentity")
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ExecutorIdentity {
    /// Creates the executor's ServiceAccount, Role and RoleBinding from
    /// `deploy/rbac` in `namespace` and mints a token for it.
    pub async fn create(admin: &Client, namespace: &str) -> Self {
        let identity = k8sworker_executor::rbac::identity(namespace).expect("deploy/rbac parses");
        apply(admin, namespace, &identity.service_account).await;
        apply(admin, namespace, &identity.role).await;
        apply(admin, namespace, &identity.role_binding).await;
        let service_account = identity
            .service_account
            .metadata
            .name
            .clone()
            .expect("named");
        let token = token(admin, namespace, &service_account).await;
        let this = Self::from_token(namespace, &service_account, &token).await;
        // RBAC is enforced from the authorizer's cache: wait until it knows the binding.
        let client = this.client().await;
        crate::wait::eventually(
            "the executor's RoleBinding to take effect",
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move {
                    Api::<ConfigMap>::namespaced(client, namespace)
                        .list(&ListParams::default().limit(1))
                        .await
                        .ok()
                }
            },
        )
        .await;
        this
    }

    /// An identity for any token, as a kubeconfig for the test cluster.
    pub async fn from_token(namespace: &str, service_account: &str, token: &str) -> Self {
        let cluster = TestCluster::get().await;
        let yaml = token_kubeconfig(cluster, namespace, token);
        let dir =
            std::env::temp_dir().join(format!("k8sworker-test-{namespace}-{service_account}"));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, &yaml).expect("kubeconfig written");
        ExecutorIdentity {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            kubeconfig,
            kubeconfig_yaml: yaml,
        }
    }

    /// Client configuration authenticating with the token only; its default
    /// namespace is the identity's.
    pub async fn config(&self) -> kube::Config {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml).expect("kubeconfig parses");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("token kubeconfig")
    }

    /// A client on the current runtime.
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).expect("token client")
    }
}

impl Drop for ExecutorIdentity {
    fn drop(&mut self) {
        if let Some(dir) = self.kubeconfig.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Server-side applies `object` as the tests' admin.
pub async fn apply<K>(admin: &Client, namespace: &str, object: &K)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().expect("named object");
    Api::<K>::namespaced(admin.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "applying {} {name}: {e}",
                K::kind(&K::DynamicType::default())
            )
        });
}

/// A one-hour token for `service_account` from the TokenRequest API.
pub async fn token(admin: &Client, namespace: &str, service_account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{service_account}: {e}"));
    answer.status.expect("TokenRequest status").token
}

/// A kubeconfig with the admin kubeconfig's cluster (server, CA) and the
/// token as the only user credential.
fn token_kubeconfig(cluster: &TestCluster, namespace: &str, token: &str) -> String {
    let admin = Kubeconfig::read_from(&cluster.kubeconfig).expect("admin kubeconfig");
    let context = admin
        .current_context
        .as_ref()
        .and_then(|name| admin.contexts.iter().find(|c| &c.name == name))
        .and_then(|c| c.context.as_ref())
        .expect("admin kubeconfig has a current context");
    let named_cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .expect("admin kubeconfig names its cluster");
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [serde_json::to_value(named_cluster).expect("cluster serializes")],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [{"name": "token", "context": {"cluster": named_cluster.name, "user": "token", "namespace": namespace}}],
        "current-context": "token",
    });
    serde_saphyr::to_string(&document).expect("kubeconfig serializes")
}
