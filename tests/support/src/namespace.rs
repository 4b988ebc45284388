//! One temporary namespace per test.
//!
//! [`with_temp_ns`] creates a uniquely named namespace, runs the test in its
//! own task, prints the namespace's state (StatefulSets, Pods with their
//! conditions and container states, other objects, Events) when the test
//! panics, and deletes the namespace either way (`K8SWORKER_TEST_KEEP_NS=1`
//! keeps it for a look).

use std::future::Future;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service},
    networking::v1::Ingress,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

use crate::TestCluster;

/// Label on every namespace a test creates.
pub const TEST_LABEL: &str = "k8sworker.io/test";

/// Runs `test(admin, namespace)` in a fresh namespace.
pub async fn with_temp_ns<F, Fut>(hint: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    crate::wait::init_logging();
    let admin = TestCluster::get().await.admin();
    let namespace = create_namespace(&admin, hint).await;
    let outcome = tokio::spawn(test(admin.clone(), namespace.clone())).await;
    if outcome.is_err() {
        dump(&admin, &namespace).await;
    }
    if std::env::var("K8SWORKER_TEST_KEEP_NS").is_ok_and(|v| v == "1") {
        eprintln!("keeping namespace {namespace}");
    } else {
        delete_namespace(&admin, &namespace).await;
    }
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test task in {namespace} did not finish: {error}"),
        }
    }
}

/// Creates `k8sw-<hint>-<random>`, a valid namespace name.
pub async fn create_namespace(admin: &Client, hint: &str) -> String {
    let hint: String = hint
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let name = format!("k8sw-{}-{suffix}", hint.trim_matches('-'));
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(TEST_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Deletes a namespace without waiting for its contents to go.
pub async fn delete_namespace(admin: &Client, namespace: &str) {
    if let Err(error) = Api::<Namespace>::all(admin.clone())
        .delete(namespace, &DeleteParams::background())
        .await
    {
        eprintln!("could not delete namespace {namespace}: {error}");
    }
}

/// Prints what is in `namespace`, for a failed test.
pub async fn dump(admin: &Client, namespace: &str) {
    let mut out = format!("\n===== state of namespace {namespace} =====\n");
    let params = ListParams::default();
    if let Ok(list) = Api::<StatefulSet>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await
    {
        for sts in list {
            let status = sts.status.clone().unwrap_or_default();
            out += &format!(
                "StatefulSet {} gen {:?}/{:?} spec.replicas {:?} replicas {} ready {:?} updated {:?} revisions {:?}->{:?} labels {:?}\n",
                sts.name_any(),
                sts.metadata.generation,
                status.observed_generation,
                sts.spec.as_ref().and_then(|s| s.replicas),
                status.replicas,
                status.ready_replicas,
                status.updated_replicas,
                status.current_revision,
                status.update_revision,
                sts.labels(),
            );
        }
    }
    if let Ok(list) = Api::<Pod>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await
    {
        for pod in list {
            let status = pod.status.clone().unwrap_or_default();
            let conditions: Vec<String> = status
                .conditions
                .iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={}{}",
                        c.type_,
                        c.status,
                        c.reason
                            .as_ref()
                            .map(|r| format!("({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let containers: Vec<String> = status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| format!("{} ready={} state={:?}", c.name, c.ready, c.state))
                .collect();
            out += &format!(
                "Pod {} phase {:?} node {:?} deleting {} conditions {conditions:?} containers {containers:?}\n",
                pod.name_any(),
                status.phase,
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                pod.metadata.deletion_timestamp.is_some(),
            );
        }
    }
    macro_rules! names {
        ($kind:ty, $label:expr) => {
            if let Ok(list) = Api::<$kind>::namespaced(admin.clone(), namespace)
                .list_metadata(&params)
                .await
            {
                for item in list {
                    out += &format!(
                        "{} {} rv {:?} labels {:?}\n",
                        $label,
                        item.name_any(),
                        item.metadata.resource_version,
                        item.labels()
                    );
                }
            }
        };
    }
    names!(ConfigMap, "ConfigMap");
    names!(Secret, "Secret");
    names!(Service, "Service");
    names!(Ingress, "Ingress");
    if let Ok(list) = Api::<Event>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await
    {
        for event in list {
            out += &format!(
                "Event {:?} {:?} on {:?}/{:?}: {:?}\n",
                event.type_,
                event.reason,
                event.involved_object.kind,
                event.involved_object.name,
                event.message,
            );
        }
    }
    out += "===== end of state =====\n";
    eprintln!("{out}");
}
