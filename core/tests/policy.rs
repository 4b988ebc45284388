//! The policy an executor holds every object of a plan to: one violating
//! object per control, each refused naming its field; the compliant forms
//! of the same fields allowed; and render never breaking it.

use std::path::Path;

use k8sworker_core::component::{Kind, Object};
use k8sworker_core::labels;
use k8sworker_core::owner::{OwnerRecord, Tenant};
use k8sworker_core::policy::{Control, Policy, Violation, decode};
use k8sworker_core::render::{Ancillaries, ClusterContext, render};
use k8sworker_core::validate::parse_and_validate;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

/// A StatefulSet render could have produced: it passes the policy.
fn mk_statefulset() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "app",
            "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"},
            "annotations": {labels::SPEC_HASH: "0"},
        },
        "spec": {
            "serviceName": "app",
            "selector": {"matchLabels": {labels::INSTALLATION: "app"}},
            "template": {
                "metadata": {
                    "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"},
                    "annotations": {labels::CONFIG_HASH: "0"},
                },
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "nginx"}],
                },
            },
        },
    })
}

fn mk_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "app", "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"}},
        "spec": {"clusterIP": "None", "selector": {labels::INSTALLATION: "app"}, "ports": [{"port": 80}]},
    })
}

fn mk_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "vantiq-app-ingress-0", "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"}},
        "spec": {"rules": [{"host": "node", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "vantiq-app-service-0", "port": {"number": 80}}}}]}}]},
    })
}

/// `value` with `pointer` (a JSON pointer) set to `new`, creating objects
/// on the way.
fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    let mut at = &mut value;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match at {
            Value::Array(items) => &mut items[token.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap()
                .entry(token.clone())
                .or_insert_with(|| json!({})),
        };
    }
    *at = new;
    value
}

fn without(mut value: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    value
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    value
}

fn object(json: &Value) -> Object {
    let kind = Kind::parse(json["kind"].as_str().unwrap()).unwrap();
    decode(kind, json).unwrap_or_else(|violation| panic!("decodes: {violation}"))
}

fn violations(policy: &Policy, json: &Value) -> Vec<Violation> {
    policy.check(&object(json))
}

/// The one violation of `json`, which must be `control` at `field`.
#[track_caller]
fn assert_refused(json: Value, field: &str, control: Control) -> Violation {
    let found = violations(&Policy::default(), &json);
    assert_eq!(
        found
            .iter()
            .map(|v| (v.field.as_str(), v.control))
            .collect::<Vec<_>>(),
        [(field, control)],
        "{found:#?}"
    );
    found.into_iter().next().unwrap()
}

#[track_caller]
fn assert_allowed(json: Value) {
    let found = violations(&Policy::default(), &json);
    assert!(found.is_empty(), "{found:#?}");
}

const POD: &str = "/spec/template/spec";

#[test]
fn the_compliant_objects_pass() {
    assert_allowed(mk_statefulset());
    assert_allowed(mk_service());
    assert_allowed(mk_ingress());
}

#[test]
fn host_namespaces() {
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        let violation = assert_refused(
            with(mk_statefulset(), &format!("{POD}/{field}"), json!(true)),
            &format!("spec.template.spec.{field}"),
            Control::HostNamespaces,
        );
        assert_eq!(violation.object.to_string(), "StatefulSet/app");
        assert_allowed(with(
            mk_statefulset(),
            &format!("{POD}/{field}"),
            json!(false),
        ));
    }
}

#[test]
fn host_process() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/securityContext/windowsOptions/hostProcess"),
            json!(true),
        ),
        "spec.template.spec.securityContext.windowsOptions.hostProcess",
        Control::HostProcess,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/windowsOptions/hostProcess"),
            json!(true),
        ),
        "spec.template.spec.containers[0].securityContext.windowsOptions.hostProcess",
        Control::HostProcess,
    );
}

#[test]
fn privileged_containers_of_every_sort() {
    let violation = assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/privileged"),
            json!(true),
        ),
        "spec.template.spec.containers[0].securityContext.privileged",
        Control::Privileged,
    );
    assert!(
        violation.to_string().starts_with(
            "StatefulSet/app: spec.template.spec.containers[0].securityContext.privileged: "
        ),
        "{violation}"
    );
    assert!(
        violation
            .to_string()
            .ends_with("(Pod Security Standards, baseline: Privileged Containers)"),
        "{violation}"
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/initContainers"),
            json!([{"name": "init", "image": "busybox", "securityContext": {"privileged": true}}]),
        ),
        "spec.template.spec.initContainers[0].securityContext.privileged",
        Control::Privileged,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/ephemeralContainers"),
            json!([{"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}]),
        ),
        "spec.template.spec.ephemeralContainers[0].securityContext.privileged",
        Control::Privileged,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/containers/0/securityContext/privileged"),
        json!(false),
    ));
}

#[test]
fn capabilities_beyond_the_baseline_set() {
    let violation = assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/capabilities"),
            json!({"add": ["NET_BIND_SERVICE", "SYS_ADMIN"], "drop": ["ALL"]}),
        ),
        "spec.template.spec.containers[0].securityContext.capabilities.add[1]",
        Control::Capabilities,
    );
    assert!(violation.message.contains("SYS_ADMIN"), "{violation}");
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/initContainers"),
            json!([{"name": "init", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}]),
        ),
        "spec.template.spec.initContainers[0].securityContext.capabilities.add[0]",
        Control::Capabilities,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/containers/0/securityContext/capabilities/add"),
        json!(["CHOWN", "NET_BIND_SERVICE", "SYS_CHROOT"]),
    ));
}

#[test]
fn host_path_volumes() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/volumes"),
            json!([{"name": "conf", "configMap": {"name": "c"}}, {"name": "root", "hostPath": {"path": "/"}}]),
        ),
        "spec.template.spec.volumes[1].hostPath",
        Control::HostPath,
    );
}

#[test]
fn host_ports() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/ports"),
            json!([{"containerPort": 8080}, {"containerPort": 80, "hostPort": 80}]),
        ),
        "spec.template.spec.containers[0].ports[1].hostPort",
        Control::HostPorts,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/containers/0/ports"),
        json!([{"containerPort": 80, "hostPort": 0}]),
    ));
}

#[test]
fn hosts_in_probes_and_lifecycle_hooks() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/livenessProbe"),
            json!({"httpGet": {"host": "10.0.0.1", "port": 80, "path": "/"}}),
        ),
        "spec.template.spec.containers[0].livenessProbe.httpGet.host",
        Control::HostProbes,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/readinessProbe"),
            json!({"tcpSocket": {"host": "metadata.internal", "port": 80}}),
        ),
        "spec.template.spec.containers[0].readinessProbe.tcpSocket.host",
        Control::HostProbes,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/lifecycle/preStop"),
            json!({"httpGet": {"host": "k8sworker-executor", "port": 50052}}),
        ),
        "spec.template.spec.containers[0].lifecycle.preStop.httpGet.host",
        Control::HostProbes,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/containers/0/startupProbe"),
        json!({"httpGet": {"host": "", "port": 80, "path": "/"}}),
    ));
}

#[test]
fn apparmor() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/securityContext/appArmorProfile"),
            json!({"type": "Unconfined"}),
        ),
        "spec.template.spec.securityContext.appArmorProfile.type",
        Control::AppArmor,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/appArmorProfile"),
            json!({"type": "Unconfined"}),
        ),
        "spec.template.spec.containers[0].securityContext.appArmorProfile.type",
        Control::AppArmor,
    );
    assert_refused(
        with(
            mk_statefulset(),
            "/spec/template/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
            json!("unconfined"),
        ),
        "spec.template.metadata.annotations[\"container.apparmor.security.beta.kubernetes.io/app\"]",
        Control::AppArmor,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/securityContext/appArmorProfile"),
        json!({"type": "Localhost", "localhostProfile": "k8s-app"}),
    ));
    assert_allowed(with(
        mk_statefulset(),
        "/spec/template/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1app",
        json!("runtime/default"),
    ));
}

#[test]
fn selinux() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/securityContext/seLinuxOptions"),
            json!({"type": "spc_t"}),
        ),
        "spec.template.spec.securityContext.seLinuxOptions.type",
        Control::SeLinux,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/seLinuxOptions"),
            json!({"type": "container_t", "user": "system_u"}),
        ),
        "spec.template.spec.containers[0].securityContext.seLinuxOptions.user",
        Control::SeLinux,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/securityContext/seLinuxOptions"),
        json!({"type": "container_t", "level": "s0:c123,c456"}),
    ));
}

#[test]
fn proc_mount() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/procMount"),
            json!("Unmasked"),
        ),
        "spec.template.spec.containers[0].securityContext.procMount",
        Control::ProcMount,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/containers/0/securityContext/procMount"),
        json!("Default"),
    ));
}

#[test]
fn seccomp_unconfined() {
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/securityContext/seccompProfile"),
            json!({"type": "Unconfined"}),
        ),
        "spec.template.spec.securityContext.seccompProfile.type",
        Control::Seccomp,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/containers/0/securityContext/seccompProfile"),
            json!({"type": "Unconfined"}),
        ),
        "spec.template.spec.containers[0].securityContext.seccompProfile.type",
        Control::Seccomp,
    );
    assert_allowed(with(
        mk_statefulset(),
        &format!("{POD}/securityContext/seccompProfile"),
        json!({"type": "RuntimeDefault"}),
    ));
}

#[test]
fn unsafe_sysctls() {
    let violation = assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/securityContext/sysctls"),
            json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}, {"name": "kernel.msgmax", "value": "65536"}]),
        ),
        "spec.template.spec.securityContext.sysctls[1].name",
        Control::Sysctls,
    );
    assert!(violation.message.contains("kernel.msgmax"), "{violation}");
}

#[test]
fn system_service_accounts_and_the_operators_deny_list() {
    let executor = assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/serviceAccountName"),
            json!("k8sworker-executor"),
        ),
        "spec.template.spec.serviceAccountName",
        Control::ServiceAccount,
    );
    assert!(
        executor.message.contains("k8sworker's own service account"),
        "{executor}"
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/serviceAccount"),
            json!("k8sworker-planner"),
        ),
        "spec.template.spec.serviceAccount",
        Control::ServiceAccount,
    );

    let admin = with(
        mk_statefulset(),
        &format!("{POD}/serviceAccountName"),
        json!("cluster-admin-sa"),
    );
    assert_allowed(admin.clone());
    let policy = Policy::default().deny_service_accounts(["cluster-admin-sa"]);
    let found = violations(&policy, &admin);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, "spec.template.spec.serviceAccountName");
    assert!(
        found[0]
            .message
            .contains("denied by this executor's operator"),
        "{}",
        found[0]
    );
    assert!(policy.denies_service_account("k8sworker-gateway"));
    assert_eq!(
        policy.denied_service_accounts().collect::<Vec<_>>(),
        ["cluster-admin-sa"]
    );
}

#[test]
fn no_api_token_unless_the_installation_names_its_account() {
    assert_refused(
        without(
            mk_statefulset(),
            &format!("{POD}/automountServiceAccountToken"),
        ),
        "spec.template.spec.automountServiceAccountToken",
        Control::ServiceAccountToken,
    );
    assert_refused(
        with(
            mk_statefulset(),
            &format!("{POD}/automountServiceAccountToken"),
            json!(true),
        ),
        "spec.template.spec.automountServiceAccountToken",
        Control::ServiceAccountToken,
    );
    let own_account = with(
        without(
            mk_statefulset(),
            &format!("{POD}/automountServiceAccountToken"),
        ),
        &format!("{POD}/serviceAccountName"),
        json!("runner"),
    );
    assert_allowed(own_account);
}

#[test]
fn reserved_keys_only_as_render_writes_them() {
    assert_refused(
        with(
            mk_statefulset(),
            "/spec/template/metadata/labels/k8sworker.io~1component",
            json!("executor"),
        ),
        "spec.template.metadata.labels[\"k8sworker.io/component\"]",
        Control::ReservedKey,
    );
    assert_refused(
        with(
            mk_service(),
            "/metadata/annotations/tenant.k8sworker.io~1owner",
            json!("someone"),
        ),
        "metadata.annotations[\"tenant.k8sworker.io/owner\"]",
        Control::ReservedKey,
    );
    // Joining, or selecting, another installation's pods.
    assert_refused(
        with(
            mk_statefulset(),
            "/spec/template/metadata/labels/k8sworker.io~1installation",
            json!("victim"),
        ),
        "spec.template.metadata.labels[\"k8sworker.io/installation\"]",
        Control::ReservedKey,
    );
    assert_refused(
        with(
            mk_service(),
            "/spec/selector/k8sworker.io~1installation",
            json!("victim"),
        ),
        "spec.selector[\"k8sworker.io/installation\"]",
        Control::ReservedKey,
    );
    assert_refused(
        with(
            mk_service(),
            "/spec/selector",
            json!({labels::COMPONENT: "executor"}),
        ),
        "spec.selector[\"k8sworker.io/component\"]",
        Control::ReservedKey,
    );
    assert_refused(
        with(
            mk_statefulset(),
            "/spec/selector/matchExpressions",
            json!([{"key": labels::INSTALLATION, "operator": "Exists"}]),
        ),
        "spec.selector.matchExpressions[0].operator",
        Control::ReservedKey,
    );
    // The user's own keys, app.kubernetes.io/* included, are theirs.
    assert_allowed(with(
        with(
            mk_statefulset(),
            "/spec/template/metadata/labels/app.kubernetes.io~1name",
            json!("k8sworker-executor"),
        ),
        "/metadata/annotations/example.com~1team",
        json!("a"),
    ));
}

#[test]
fn service_external_ips() {
    let violation = assert_refused(
        with(mk_service(), "/spec/externalIPs", json!(["203.0.113.7"])),
        "spec.externalIPs",
        Control::ExternalIps,
    );
    assert_eq!(violation.object.to_string(), "Service/app");
    assert!(violation.message.contains("203.0.113.7"), "{violation}");
    assert_allowed(with(mk_service(), "/spec/externalIPs", json!([])));
}

#[test]
fn opaque_secrets_only() {
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vantiq-app-secret-0", "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "app"}},
        "type": "Opaque",
        "data": {"TOKEN": "eA=="},
    });
    assert_allowed(secret.clone());
    assert_allowed(without(secret.clone(), "/type"));
    let borrowed = with(
        with(
            secret,
            "/type",
            json!("kubernetes.io/service-account-token"),
        ),
        "/metadata/annotations/kubernetes.io~1service-account.name",
        json!("k8sworker-executor"),
    );
    let violation = assert_refused(borrowed, "type", Control::SecretType);
    assert_eq!(violation.object.to_string(), "Secret/vantiq-app-secret-0");
    assert!(!violation.message.contains("eA=="), "{violation}");
}

#[test]
fn ingresses_to_system_services() {
    assert_refused(
        with(
            mk_ingress(),
            "/spec/rules/0/http/paths/0/backend/service/name",
            json!("k8sworker-executor"),
        ),
        "spec.rules[0].http.paths[0].backend.service.name",
        Control::SystemService,
    );
    assert_refused(
        with(
            mk_ingress(),
            "/spec/defaultBackend",
            json!({"service": {"name": "k8sworker-planner", "port": {"number": 50051}}}),
        ),
        "spec.defaultBackend.service.name",
        Control::SystemService,
    );
}

#[test]
fn every_violation_of_an_object_is_named() {
    let json = with(
        with(
            with(mk_statefulset(), &format!("{POD}/hostPID"), json!(true)),
            &format!("{POD}/serviceAccountName"),
            json!("k8sworker-executor"),
        ),
        &format!("{POD}/containers/0/securityContext/privileged"),
        json!(true),
    );
    let fields: Vec<String> = violations(&Policy::default(), &json)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.template.spec.hostPID",
            "spec.template.spec.containers[0].securityContext.privileged",
            "spec.template.spec.serviceAccountName",
        ]
    );
    let all = Policy::default()
        .check_all([&object(&json), &object(&mk_service())])
        .unwrap_err();
    assert_eq!(all.0.len(), 3);
    assert!(
        all.to_string().starts_with("3 refused by policy: "),
        "{all}"
    );
}

#[test]
fn decode_refuses_fields_the_policy_cannot_see() {
    let unknown = with(
        mk_statefulset(),
        &format!("{POD}/containers/0/securityContext/futurePrivilege"),
        json!(true),
    );
    let violation = decode(Kind::StatefulSet, &unknown).unwrap_err();
    assert_eq!(
        (violation.field.as_str(), violation.control),
        (
            "spec.template.spec.containers.0.securityContext.futurePrivilege"
                .replace(".0.", "[0].")
                .as_str(),
            Control::UnknownField
        )
    );
    assert_eq!(violation.object.to_string(), "StatefulSet/app");

    let misspelt = with(mk_statefulset(), &format!("{POD}/HostNetwork"), json!(true));
    assert_eq!(
        decode(Kind::StatefulSet, &misspelt).unwrap_err().field,
        "spec.template.spec.HostNetwork"
    );

    let wrong_type = with(
        mk_statefulset(),
        &format!("{POD}/hostNetwork"),
        json!("yes"),
    );
    assert_eq!(
        decode(Kind::StatefulSet, &wrong_type).unwrap_err().control,
        Control::UnknownField
    );

    // null is absent, as the API server reads it.
    let null = with(mk_statefulset(), &format!("{POD}/hostNetwork"), Value::Null);
    assert!(decode(Kind::StatefulSet, &null).is_ok());
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn render_never_breaks_the_policy() {
    let cluster = ClusterContext {
        cluster_name: "prod".into(),
        ingress_default_node: "vantiq-prod-node".into(),
        // Every object carries its owner record, which the policy allows.
        tenant: Some(Tenant::new("acme", "prod").unwrap()),
    };
    let mut ancillaries = Ancillaries::default();
    ancillaries
        .documents
        .insert("cfg/c.json".into(), b"{}".to_vec());
    let every_entry = json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx:1.27", "serviceAccount": "runner"},
        {"type": "file", "path": "/app/conf", "filename": "a.conf", "content": "x=1"},
        {"type": "file", "path": "/app/ext", "filename": "b.conf", "name": "existing", "key": "b.conf"},
        {"type": "file", "path": "/app/docs", "resourceType": "documents", "resourceName": "cfg/c.json", "treatAsText": true},
        {"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http", "host": "app.example.com"},
        {"type": "inboundPort", "port": 9000, "protocol": "UDP", "serviceName": "udp"},
        {"type": "environmentVariable", "name": "A", "value": "1", "asSecret": true},
        {"type": "persistentVolumeRef", "name": "data", "path": "/data"},
        {"type": "annotation", "name": "container.apparmor.security.beta.kubernetes.io/app", "value": "runtime/default", "targetResource": "pod"},
        {"type": "label", "name": "app.kubernetes.io/name", "value": "web", "controlsRouting": "true"},
        {"type": "hostAlias", "name": "db.local", "hostIP": "192.0.2.1"},
        {"type": "probe", "probeType": "liveness", "requestType": "http", "port": "http", "path": "/health"},
        {"type": "probe", "probeType": "readiness", "requestType": "tcp", "port": 8080},
        {"type": "hardAffinity", "key": "topology.kubernetes.io/zone", "values": ["a"]},
    ]});
    for data in [fixture("camel"), fixture("jdbc"), every_entry] {
        let request = parse_and_validate(&data).expect("valid");
        let components = render(&request, &cluster, &ancillaries).expect("renders");
        let objects: Vec<Object> = components.into_iter().map(|c| c.object).collect();
        Policy::default()
            .check_all(&objects)
            .unwrap_or_else(|violations| panic!("{}: {violations}", request.name));
        for object in &objects {
            let record = object
                .metadata()
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::OWNER))
                .expect("an owner record");
            let record = OwnerRecord::parse(record).unwrap();
            assert_eq!(record.object, object.id());
            assert_eq!(record.installation, request.name);
            assert_eq!(record.tenant, cluster.tenant.clone().unwrap());
            // What the planner sends decodes losslessly on the executor's side.
            assert_eq!(&decode(object.kind(), &object.to_json()).unwrap(), object);
        }
    }
}

/// The manifests in `deploy/` as applied (the renderings `deploy/check.sh`
/// keeps equal to the kustomizations).
fn deployed_objects() -> Vec<Value> {
    [
        include_str!("../../deploy/plainText/k8sworker.yaml"),
        include_str!("../../deploy/plainText/executor.yaml"),
    ]
    .into_iter()
    .flat_map(|yaml| serde_saphyr::from_multiple::<Value>(yaml).expect("deploy/ parses"))
    .filter(|object| !object.is_null())
    .collect()
}

fn keys(map: &Value) -> Vec<&str> {
    map.as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// One definition: the system's identities in `deploy/` are the ones the
/// policy protects, the executor is told to deny them, and the system's own
/// pods, Services and NetworkPolicies use only labels no installation may
/// set or select on.
#[test]
fn deploy_uses_the_identities_and_labels_the_policy_protects() {
    let objects = deployed_objects();
    let of_kind =
        |kind: &str| -> Vec<&Value> { objects.iter().filter(|o| o["kind"] == kind).collect() };
    let mut accounts: Vec<&str> = of_kind("ServiceAccount")
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    accounts.sort();
    let mut expected = k8sworker_core::policy::SYSTEM_ACCOUNTS.to_vec();
    expected.sort();
    assert_eq!(accounts, expected);

    for service in of_kind("Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        assert!(
            k8sworker_core::policy::SYSTEM_ACCOUNTS.contains(&name),
            "{name}"
        );
        let selector = keys(&service["spec"]["selector"]);
        assert!(!selector.is_empty(), "{name} selects pods");
        assert!(
            selector.iter().all(|key| labels::is_reserved(key)),
            "Service {name} selects on {selector:?}"
        );
    }
    let deployments = of_kind("Deployment");
    assert_eq!(deployments.len(), 3);
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        for (what, map) in [
            ("selector", &deployment["spec"]["selector"]["matchLabels"]),
            (
                "pod labels",
                &deployment["spec"]["template"]["metadata"]["labels"],
            ),
        ] {
            let keys = keys(map);
            assert_eq!(keys, [labels::COMPONENT], "{name} {what}");
        }
    }
    let policies = of_kind("NetworkPolicy");
    assert!(!policies.is_empty());
    for policy in policies {
        let mut selectors = vec![&policy["spec"]["podSelector"]["matchLabels"]];
        for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
            for from in rule["from"].as_array().into_iter().flatten() {
                if !from["podSelector"].is_null() {
                    selectors.push(&from["podSelector"]["matchLabels"]);
                }
            }
        }
        for selector in selectors {
            let keys = keys(selector);
            assert_eq!(keys, [labels::COMPONENT], "{policy}");
        }
    }

    let executor = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "k8sworker-executor")
        .unwrap();
    let command: Vec<&str> = executor["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap())
        .collect();
    for account in k8sworker_core::policy::SYSTEM_ACCOUNTS {
        assert!(
            command.contains(&format!("--deny-service-account={account}").as_str()),
            "{command:?}"
        );
    }
    let namespaces: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    assert!(
        !objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "k8sworker-executor")
            .any(|o| o["metadata"]["namespace"] == "k8sworker"),
        "no executor in k8sworker's own namespace by default: {namespaces:?}"
    );
}
