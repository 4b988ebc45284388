//! The network rules of `deploy/` against the real test cluster, without
//! traffic (the cluster has no network plugin, its pod addresses are
//! fiction): the Services and NetworkPolicies of the rendered manifests are
//! applied in temporary namespaces beside pods labelled like ours and pods
//! labelled like an attacker's installation; the EndpointSlices the control
//! plane computes, and the NetworkPolicies as the API server returns them
//! (evaluated with `k8sworker_testsupport::network`), must pick only our pods
//! and only the intended peers. Run with
//! `cargo test -p k8sworker-testsupport -- --ignored`.

use std::{collections::BTreeSet, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod, Service},
        discovery::v1::EndpointSlice,
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use k8sworker_testsupport::{
    eventually, identity,
    network::{admits, selected, selects},
    with_temp_ns,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

/// The system's objects as `deploy/check.sh` keeps them rendered.
const SYSTEM: &str = include_str!("../../../deploy/plainText/k8sworker.yaml");
/// One namespace's executor as rendered.
const EXECUTOR: &str = include_str!("../../../deploy/plainText/executor.yaml");
/// The namespace `deploy/` installs the planner and the gateway in.
const SYSTEM_NAMESPACE: &str = "k8sworker";

fn objects(yaml: &str, kind: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("deploy/ parses")
        .into_iter()
        .filter(|object| object["kind"] == kind)
        .map(|mut object| {
            // Applied into a test namespace instead of the manifest's.
            object["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("namespace");
            object
        })
        .collect()
}

/// A pod like the ones a Deployment of `deploy/` creates: its template's
/// labels, and each container's name, image and ports.
fn pod_of(deployment: &Value) -> Value {
    let template = &deployment["spec"]["template"];
    let containers: Vec<Value> = template["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| json!({"name": c["name"], "image": c["image"], "ports": c["ports"].as_array().cloned().unwrap_or_default()}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": deployment["metadata"]["name"], "labels": template["metadata"]["labels"]},
        "spec": {"automountServiceAccountToken": false, "containers": containers}
    })
}

/// A pod that is not ours, with `labels` and one port `grpc` = `port`.
fn impostor(name: &str, labels: Value, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "registry.example.com/evil:1",
                            "ports": [{"name": "grpc", "containerPort": port}]}]
        }
    })
}

/// Creates `pod` in `namespace` (retrying while the namespace's default
/// ServiceAccount does not exist yet).
async fn create_pod(admin: &Client, namespace: &str, pod: Value) {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    eventually(
        &format!("creating pod {namespace}/{}", pod.name_any()),
        Duration::from_secs(30),
        || {
            let (pods, pod) = (pods.clone(), pod.clone());
            async move { pods.create(&PostParams::default(), &pod).await.ok() }
        },
    )
    .await;
}

/// Every pod of `namespaces`, once each is Ready with an address.
async fn ready_pods(admin: &Client, namespaces: &[&str], count: usize) -> Vec<Pod> {
    eventually(
        "every pod Ready with an IP",
        Duration::from_secs(60),
        || async move {
            let mut all = Vec::new();
            for namespace in namespaces {
                let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
                all.extend(pods.list(&ListParams::default()).await.ok()?.items);
            }
            let ready = all.iter().all(|pod| {
                let status = pod.status.as_ref();
                status.and_then(|s| s.pod_ip.as_ref()).is_some()
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            (all.len() == count && ready).then_some(all)
        },
    )
    .await
}

/// The pods (`namespace/name`) the EndpointSlices of Service `service` point at.
async fn endpoint_pods(admin: &Client, namespace: &str, service: &str) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(admin.clone(), namespace);
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let slices = slices.list(&params).await.expect("listing EndpointSlices");
    slices
        .items
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .map(|endpoint| {
            let target = endpoint.target_ref.as_ref().expect("an endpoint of a pod");
            assert_eq!(target.kind.as_deref(), Some("Pod"));
            format!(
                "{}/{}",
                target.namespace.as_deref().unwrap_or(namespace),
                target.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

fn id(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap(), pod.name_any())
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Everything about the rules in one test, because the namespaces and pods
/// take the longest: the system namespace (planner, gateway), a tenant
/// namespace (executor), another namespace, each with impostors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn only_our_pods_are_selected_and_only_the_intended_peers_admitted() {
    with_temp_ns("net-system", |_, system| async move {
        with_temp_ns("net-tenant", |_, tenant| async move {
            with_temp_ns("net-other", |admin, other| async move {
                check_rules(admin, system, tenant, other).await;
            })
            .await;
        })
        .await;
    })
    .await;
}

async fn check_rules(admin: Client, system: String, tenant: String, other: String) {
    // The Services and NetworkPolicies exactly as rendered, but for the
    // namespace: the executor's policy names k8sworker's namespace, which
    // here is `system`.
    for (yaml, namespace) in [(SYSTEM, &system), (EXECUTOR, &tenant)] {
        for service in objects(yaml, "Service") {
            let service: Service = serde_json::from_value(service).unwrap();
            identity::apply(&admin, namespace, &service).await;
        }
        for mut policy in objects(yaml, "NetworkPolicy") {
            for rule in policy["spec"]["ingress"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                for peer in rule["from"].as_array_mut().into_iter().flatten() {
                    let selector = &mut peer["namespaceSelector"];
                    // Every namespace (`{}`: the health ports), or only
                    // k8sworker's, which here is `system`.
                    if !selector.is_null() && selector != &json!({}) {
                        assert_eq!(
                            selector,
                            &json!({"matchLabels": {"kubernetes.io/metadata.name": SYSTEM_NAMESPACE}}),
                            "a namespaceSelector of deploy/ names only k8sworker's namespace, or every one"
                        );
                        selector["matchLabels"]["kubernetes.io/metadata.name"] = json!(system);
                    }
                }
            }
            let policy: NetworkPolicy = serde_json::from_value(policy).unwrap();
            identity::apply(&admin, namespace, &policy).await;
        }
    }
    // A Service on the label deploy/ selected on before k8sworker.io/component
    // (and an installation may still set): the impostors are visible to the
    // EndpointSlice controller, so their absence below is not vacuous.
    for (namespace, name) in [
        (&system, "k8sworker-planner"),
        (&tenant, "k8sworker-executor"),
    ] {
        let control: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "control"},
            "spec": {"selector": {"app.kubernetes.io/name": name},
                     "ports": [{"name": "grpc", "port": 5000, "targetPort": "grpc"}]}
        }))
        .unwrap();
        identity::apply(&admin, namespace, &control).await;
    }

    // Our pods, from the Deployments' templates.
    for (yaml, namespace) in [(SYSTEM, &system), (EXECUTOR, &tenant)] {
        for deployment in objects(yaml, "Deployment") {
            create_pod(&admin, namespace, pod_of(&deployment)).await;
        }
    }
    // An installation's pods copying our app labels, as the attack
    // did, in the tenant namespace and in the system namespace.
    let copied = |name: &str| {
        json!({
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": "k8sworker",
            "app.kubernetes.io/managed-by": "k8sworker",
            "k8sworker.io/installation": "evil",
        })
    };
    for namespace in [&system, &tenant] {
        create_pod(
            &admin,
            namespace,
            impostor("as-executor", copied("k8sworker-executor"), 50052),
        )
        .await;
        create_pod(
            &admin,
            namespace,
            impostor("as-planner", copied("k8sworker-planner"), 50051),
        )
        .await;
        create_pod(
            &admin,
            namespace,
            impostor("as-gateway", copied("k8sworker-gateway"), 50051),
        )
        .await;
    }
    // Pods carrying our component label in the wrong namespace (created by
    // someone with pod rights there; k8sworker refuses the label).
    for namespace in [&tenant, &other] {
        for component in ["planner", "gateway"] {
            create_pod(
                &admin,
                namespace,
                impostor(
                    &format!("component-{component}"),
                    json!({"k8sworker.io/component": component}),
                    50051,
                ),
            )
            .await;
        }
    }
    let pods = ready_pods(&admin, &[&system, &tenant, &other], 2 + 3 + 1 + 3 + 2 + 2).await;
    let pod = |namespace: &str, name: &str| {
        pods.iter()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name}"))
    };
    let planner = pod(&system, "k8sworker-planner");
    let gateway = pod(&system, "k8sworker-gateway");
    let executor = pod(&tenant, "k8sworker-executor");

    // Services: the selector as stored, evaluated over every pod of its
    // namespace, and the EndpointSlices the control plane computed.
    for (namespace, service, ours) in [
        (&system, "k8sworker-planner", planner),
        (&tenant, "k8sworker-executor", executor),
    ] {
        let stored = Api::<Service>::namespaced(admin.clone(), namespace)
            .get(service)
            .await
            .unwrap();
        let selector = LabelSelector {
            match_labels: stored.spec.unwrap().selector,
            ..LabelSelector::default()
        };
        assert!(selector.match_labels.is_some(), "{service} has a selector");
        let by_selector: Vec<String> = pods
            .iter()
            .filter(|p| p.namespace().as_ref() == Some(namespace) && selects(&selector, p.labels()))
            .map(id)
            .collect();
        assert_eq!(
            by_selector,
            [id(ours)],
            "Service {namespace}/{service} selects"
        );

        let impostor = format!(
            "{namespace}/as-{}",
            service.trim_start_matches("k8sworker-")
        );
        eventually(
            &format!("the control Service in {namespace} to reach {impostor}"),
            Duration::from_secs(30),
            || {
                let (admin, impostor) = (admin.clone(), impostor.clone());
                async move {
                    endpoint_pods(&admin, namespace, "control")
                        .await
                        .contains(&impostor)
                        .then_some(())
                }
            },
        )
        .await;
        eventually(
            &format!("EndpointSlices of {namespace}/{service}"),
            Duration::from_secs(30),
            || {
                let admin = admin.clone();
                async move {
                    (!endpoint_pods(&admin, namespace, service).await.is_empty()).then_some(())
                }
            },
        )
        .await;
        assert_eq!(
            endpoint_pods(&admin, namespace, service).await,
            set(&[id(ours)]),
            "the EndpointSlices of {namespace}/{service} point only at our pod"
        );
    }

    // NetworkPolicies as the API server returns them.
    let mut policies = Vec::new();
    for namespace in [&system, &tenant] {
        let stored = Api::<NetworkPolicy>::namespaced(admin.clone(), namespace)
            .list(&ListParams::default())
            .await
            .unwrap();
        policies.extend(stored.items);
    }
    let mut namespaces = Vec::new();
    for name in [&system, &tenant, &other] {
        let namespace = Api::<Namespace>::all(admin.clone())
            .get(name)
            .await
            .unwrap();
        // What the executor's namespaceSelector relies on: the API server
        // labels every namespace with its name.
        assert!(selects(
            &serde_json::from_value(json!({"matchLabels": {"kubernetes.io/metadata.name": name}}))
                .unwrap(),
            namespace.labels()
        ));
        namespaces.push(namespace);
    }
    let mut isolated: Vec<(String, Vec<String>)> = policies
        .iter()
        .map(|policy| {
            let pods = selected(policy, &pods).into_iter().map(id).collect();
            (
                format!("{}/{}", policy.namespace().unwrap(), policy.name_any()),
                pods,
            )
        })
        .collect();
    isolated.sort();
    let mut expected = vec![
        (format!("{system}/k8sworker-gateway"), vec![id(gateway)]),
        (format!("{system}/k8sworker-planner"), vec![id(planner)]),
        (format!("{tenant}/k8sworker-executor"), vec![id(executor)]),
    ];
    expected.sort();
    assert_eq!(
        isolated, expected,
        "each policy selects exactly its component's pod"
    );

    // Who may connect to what: every pod to every pod, on the gRPC ports,
    // the health ports and one other.
    for to in &pods {
        for port in [50051, 50052, 8080, 8081, 9090] {
            let admitted: BTreeSet<String> = pods
                .iter()
                .filter(|from| from != &to)
                .filter(|from| admits(&policies, &namespaces, from, to, port))
                .map(id)
                .collect();
            let everyone: BTreeSet<String> =
                pods.iter().filter(|from| from != &to).map(id).collect();
            let expected = match (id(to), port) {
                (to, 50051) if to == id(planner) => set(&[id(gateway)]),
                (to, 50052) if to == id(executor) => set(&[id(planner)]),
                // The plaintext health ports (grpc.health.v1 only): open to
                // every pod of the cluster.
                (to, 8080) if to == id(planner) => everyone.clone(),
                (to, 8081) if to == id(executor) => everyone.clone(),
                (to, _) if [id(planner), id(executor), id(gateway)].contains(&to) => {
                    BTreeSet::new()
                }
                // No policy of ours isolates anyone else's pod.
                _ => everyone,
            };
            assert_eq!(
                admitted,
                expected,
                "connections to {} on port {port}",
                id(to)
            );
        }
    }
}
