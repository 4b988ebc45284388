//! Every entry type reads, and every bad input is refused with an error that
//! names the entry and the field — all errors at once.

use k8sworker_core::model::{ConfigEntry, InstallationRequest};
use k8sworker_core::validate::{ValidationErrors, parse_and_validate};
use serde_json::{Value, json};

fn request(config: Value) -> Value {
    json!({"name": "app", "k8sNamespace": "team-a", "config": config})
}

fn with_image(mut entries: Vec<Value>) -> Value {
    entries.insert(0, json!({"type": "image", "name": "nginx:1.27"}));
    request(Value::Array(entries))
}

fn errors(data: Value) -> Vec<String> {
    match parse_and_validate(&data) {
        Ok(_) => Vec::new(),
        Err(ValidationErrors { errors }) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn assert_refused(data: Value, expected: &str) {
    let errors = errors(data);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errors:#?}"
    );
}

#[test]
fn every_entry_type_reads() {
    let data = with_image(vec![
        json!({"type": "file", "path": "/app/conf", "filename": "a.conf", "content": "x=1"}),
        json!({"type": "file", "path": "/app/ext", "filename": "b.conf", "name": "existing", "key": "b.conf"}),
        json!({"type": "file", "path": "/app/docs", "resourceType": "documents", "resourceName": "cfg/c.json", "treatAsText": true}),
        json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http", "host": "app.example.com"}),
        json!({"type": "environmentVariable", "name": "A", "value": "1"}),
        json!({"type": "environmentVariables", "name": "B", "secretName": "s", "key": "k"}),
        json!({"type": "persistentVolumeRef", "name": "data", "path": "/data"}),
        json!({"type": "annotation", "name": "example.com/a", "value": "v", "targetResource": "pod"}),
        json!({"type": "label", "name": "tier", "value": "backend", "controlsRouting": "true"}),
        json!({"type": "hostAlias", "name": "db.local", "hostIP": "192.0.2.1"}),
        json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": 8080}),
        json!({"type": "resourceRequest", "cpu": "100m", "memory": "64Mi", "nvidia.com/gpu": "1"}),
        json!({"type": "resourceLimit", "cpu": "1", "memory": "128Mi", "nvidia.com/gpu": "1", "amd.com/gpu": "2"}),
        json!({"type": "hardAffinity", "key": "topology.kubernetes.io/zone", "values": ["a", "b"]}),
    ]);
    let request: InstallationRequest = parse_and_validate(&data).expect("valid");
    let types: Vec<&str> = request.config.iter().map(ConfigEntry::type_name).collect();
    assert_eq!(
        types,
        [
            "image",
            "file",
            "file",
            "file",
            "inboundPort",
            "environmentVariable",
            "environmentVariable",
            "persistentVolumeRef",
            "annotation",
            "label",
            "hostAlias",
            "probe",
            "resourceRequest",
            "resourceLimit",
            "hardAffinity"
        ]
    );
    let ConfigEntry::Label(label) = &request.config[9] else {
        panic!()
    };
    assert_eq!(label.controls_routing, Some(true));
    let ConfigEntry::File(document) = &request.config[3] else {
        panic!()
    };
    assert_eq!(document.effective_filename(), Some("c.json"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let data = json!({
        "name": "Bad_Name",
        "k8sNamespace": "Team A",
        "config": [
            {"type": "inboundPort", "port": 70000, "protocol": "SCTP"},
            {"type": "environmentVariable", "name": "1X"},
            {"type": "nonsense"},
        ]
    });
    let errors = errors(data);
    for expected in [
        "name: `Bad_Name` is not a valid Kubernetes name",
        "k8sNamespace: `Team A`",
        "config[0] (inboundPort).port: must be between 1 and 65535",
        "config[1] (environmentVariable).value: is required",
        "config[2].type: `nonsense` is not an entry type",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected}: {errors:#?}"
        );
    }
    // Sorted: the request's own fields first, then by entry.
    assert!(
        errors[0].starts_with("name") || errors[0].starts_with("k8sNamespace"),
        "{errors:#?}"
    );
    assert!(
        errors.last().unwrap().starts_with("config[2]"),
        "{errors:#?}"
    );
    // The reading errors come first; a request that reads is checked in full.
    let errors = self::errors(json!({
        "name": "Bad_Name", "k8sNamespace": "Team A",
        "config": [
            {"type": "inboundPort", "port": 70000, "protocol": "SCTP"},
            {"type": "environmentVariable", "name": "1X"},
        ]
    }));
    for expected in [
        "name: `Bad_Name`",
        "k8sNamespace: `Team A`",
        "config: needs exactly one `image` entry, found none",
        "config[0] (inboundPort).port: must be between 1 and 65535, got 70000",
        "config[0] (inboundPort).protocol: must be TCP or UDP, got `SCTP`",
        "config[1] (environmentVariable).name: `1X` is not a valid environment variable name",
        "config[1] (environmentVariable).value: is required",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{expected}: {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 7, "{errors:#?}");
}

#[test]
fn request_shape() {
    assert_refused(json!([]), "data: must be a JSON object");
    assert_refused(
        json!({"k8sNamespace": "a", "config": []}),
        "name: is required",
    );
    assert_refused(
        json!({"name": 5, "k8sNamespace": "a", "config": []}),
        "name: must be a string, got a number",
    );
    assert_refused(
        json!({"name": "a", "k8sNamespace": "a"}),
        "config: is required",
    );
    assert_refused(
        json!({"name": "a", "k8sNamespace": "a", "config": {}}),
        "config: must be a list",
    );
    assert_refused(
        json!({"name": "a", "k8sNamespace": "a", "config": [], "replicas": 3}),
        "replicas: is not a field of a deploy request",
    );
    assert_refused(
        request(json!([1])),
        "config[0]: must be an object with a `type`",
    );
    assert_refused(
        request(json!([{"name": "x"}])),
        "config[0].type: is required",
    );
}

#[test]
fn names_and_namespaces() {
    let long = "a".repeat(53);
    assert_refused(
        json!({"name": long, "k8sNamespace": "ns", "config": [{"type": "image", "name": "x"}]}),
        "at most 52 fit",
    );
    assert_refused(
        json!({"name": "SourceDeployment", "k8sNamespace": "ns", "config": [{"type": "image", "name": "x"}]}),
        "(e.g. `sourcedeployment`)",
    );
    assert_refused(
        json!({"name": "1app", "k8sNamespace": "ns", "config": [{"type": "image", "name": "x"}]}),
        "name: `1app`",
    );
    assert_refused(
        json!({"name": "app", "k8sNamespace": "-ns", "config": [{"type": "image", "name": "x"}]}),
        "k8sNamespace: `-ns`",
    );
    // The longest generated Service name must fit 63 characters too.
    let name = "a".repeat(50);
    assert_refused(
        json!({"name": name, "k8sNamespace": "ns", "config": [{"type": "image", "name": "x"}, {"type": "inboundPort", "port": 80, "protocol": "TCP"}]}),
        "would exceed 63 characters",
    );
}

#[test]
fn image_entries() {
    assert_refused(
        request(json!([{"type": "image", "name": "x"}, {"type": "image", "name": "y"}])),
        "found 2 (entries 0, 1)",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "Repo/Image"}])),
        "config[0] (image).name: `Repo/Image` is not an image reference",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "quay.io/x:${TAG}"}])),
        "is not an image reference",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "replicaCount": -1}])),
        "replicaCount: must be between 0 and 1000",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "replicaCount": "2"}])),
        "invalid type: string \"2\", expected i64",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "pullPolicy": "Sometimes"}])),
        "pullPolicy: must be Always, IfNotPresent or Never",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "imagePullSecret": "Quay"}])),
        "imagePullSecret: `Quay`",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "serviceAccount": "a b"}])),
        "serviceAccount: `a b`",
    );
    assert_refused(
        request(json!([{"type": "image", "name": "x", "replicas": 2}])),
        "config[0] (image): unknown field `replicas`, expected one of",
    );
    assert_refused(
        request(json!([{"type": "image"}])),
        "config[0] (image): missing field `name`",
    );
}

#[test]
fn file_entries() {
    let file = |extra: Value| {
        let mut entry = json!({"type": "file", "path": "/app/conf", "filename": "a.conf"});
        entry
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with_image(vec![entry])
    };
    assert_refused(file(json!({})), "config[1] (file).content: needs a source");
    assert_refused(
        file(json!({"content": "x", "name": "cm", "key": "k"})),
        "mutually exclusive",
    );
    assert_refused(
        file(json!({"content": "x", "resourceType": "documents", "resourceName": "d"})),
        "mutually exclusive",
    );
    assert_refused(file(json!({"name": "cm"})), "key: is required with `name`");
    assert_refused(file(json!({"key": "k"})), "name: is required with `key`");
    assert_refused(
        file(json!({"resourceType": "images", "resourceName": "d"})),
        "resourceType: must be `documents`, got `images`",
    );
    assert_refused(
        file(json!({"resourceType": "documents"})),
        "resourceName: is required",
    );
    assert_refused(
        file(json!({"content": "x", "treatAsText": true})),
        "treatAsText: only applies to documents",
    );
    assert_refused(
        file(json!({"content": "x", "dataSource": "vault"})),
        "dataSource: must be `configMap` or `secret`",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "app/conf", "filename": "a", "content": "x"}),
        ]),
        "path: `app/conf` must be an absolute path",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/app/../etc", "filename": "a", "content": "x"}),
        ]),
        "without `.` or `..`",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/app", "filename": "a/b", "content": "x"}),
        ]),
        "filename: `a/b` is not a valid file name",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/app", "content": "x"}),
        ]),
        "filename: is required",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/app", "filename": "a", "content": "x"}),
            json!({"type": "file", "path": "/app/", "filename": "a", "content": "y"}),
        ]),
        "config[2] (file).filename: `/app/a` is mounted by an earlier entry",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/app", "filename": "a", "content": "x"}),
            json!({"type": "file", "path": "/app", "filename": "b", "content": "y", "dataSource": "secret"}),
        ]),
        "must all use the same dataSource",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "file", "path": "/data", "filename": "a", "content": "x"}),
            json!({"type": "persistentVolumeRef", "name": "pvc", "path": "/data"}),
        ]),
        "config[2] (persistentVolumeRef).path: `/data` is already a mount point",
    );
    let big = "x".repeat(1024 * 1024);
    assert_refused(
        file(json!({"content": big})),
        "hold 1048582 bytes; a ConfigMap or Secret holds at most 1048576",
    );
}

#[test]
fn inbound_ports() {
    let port = |entry: Value| with_image(vec![entry]);
    assert_refused(
        port(json!({"type": "inboundPort", "port": 0, "protocol": "TCP"})),
        "port: must be between 1 and 65535, got 0",
    );
    assert_refused(
        port(json!({"type": "inboundPort", "port": 80})),
        "missing field `protocol`",
    );
    assert_refused(
        port(json!({"type": "inboundPort", "port": 80, "protocol": "HTTP"})),
        "protocol: must be TCP or UDP, got `HTTP`",
    );
    assert_refused(
        port(
            json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "portName": "HTTP_PORT"}),
        ),
        "portName: `HTTP_PORT` is not a valid port name",
    );
    assert_refused(
        port(
            json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "serviceType": "External"}),
        ),
        "serviceType: must be NodePort, ClusterIP or LoadBalancer",
    );
    assert_refused(
        port(json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "serviceName": "app"})),
        "is the installation's headless Service",
    );
    assert_refused(
        port(
            json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "clusterIP": "10.0.0.300"}),
        ),
        "clusterIP: `10.0.0.300` is not an IP address",
    );
    assert_refused(
        port(json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "clusterIP": "None"})),
        "`None` (headless) needs serviceType ClusterIP",
    );
    assert_refused(
        port(json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "host": "App.Example"})),
        "host: `App.Example` is not a valid host name",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "portName": "web"}),
            json!({"type": "inboundPort", "port": 80, "protocol": "tcp", "portName": "web"}),
        ]),
        "config[2] (inboundPort).port: 80/tcp is exposed by an earlier entry",
    );
    assert!(
        errors(with_image(vec![
            json!({"type": "inboundPort", "port": 53, "protocol": "TCP"}),
            json!({"type": "inboundPort", "port": 53, "protocol": "UDP"}),
            json!({"type": "inboundPort", "port": 443, "protocol": "TCP", "host": "*.example.com"}),
        ]))
        .is_empty()
    );
}

/// Issue 12, case 4: an IP literal (v4, with leading zeros as the API server
/// reads it, or v6) or an over-long wildcard is not an Ingress host. The
/// API server refuses such an Ingress; validation refuses it first, naming
/// the entry and `host`.
#[test]
fn an_ingress_host_is_a_dns_name_never_an_ip() {
    let port = |host: &str| {
        with_image(vec![
            json!({"type": "environmentVariable", "name": "A", "value": "1"}),
            json!({"type": "inboundPort", "port": 80, "protocol": "TCP", "host": host}),
        ])
    };
    for ip in ["192.0.2.10", "010.000.002.010", "::1", "2001:db8::1"] {
        let errors = errors(port(ip));
        assert_eq!(errors.len(), 1, "{ip}: {errors:#?}");
        assert!(
            errors[0].starts_with(&format!(
                "config[2] (inboundPort).host: `{ip}` is an IP address"
            )),
            "{ip}: {errors:#?}"
        );
    }
    let long = format!(
        "*.{}",
        vec!["a".repeat(63); 4].join(".").get(..252).unwrap()
    );
    assert_refused(port(&long), "config[2] (inboundPort).host: ");
    for good in ["node-1.example", "*.example.com", "1.2.3", "*.0.2.10"] {
        assert_eq!(errors(port(good)), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn environment_variables() {
    let env = |entry: Value| with_image(vec![entry]);
    assert_refused(
        env(json!({"type": "environmentVariable", "name": "A=B", "value": "1"})),
        "`A=B` is not a valid environment variable name",
    );
    assert_refused(
        env(
            json!({"type": "environmentVariable", "name": "A", "value": "1", "secretName": "s", "key": "k"}),
        ),
        "`value` and `secretName` are mutually exclusive",
    );
    assert_refused(
        env(json!({"type": "environmentVariable", "name": "A", "secretName": "s"})),
        "key: is required with `secretName`",
    );
    assert_refused(
        env(json!({"type": "environmentVariable", "name": "A", "value": "1", "key": "k"})),
        "key: is only used with `secretName`",
    );
    assert_refused(
        env(json!({"type": "environmentVariable", "name": "A", "value": "@secrets()"})),
        "does not name a secret",
    );
    assert_refused(
        env(json!({"type": "environmentVariable", "name": "A", "value": "1", "asSecret": "yes"})),
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "environmentVariable", "name": "A", "value": "1"}),
            json!({"type": "environmentVariable", "name": "A", "value": "2"}),
        ]),
        "config[2] (environmentVariable).name: `A` is set by an earlier entry",
    );
    assert!(
        errors(env(
            json!({"type": "environmentVariable", "name": "A", "value": "\\@secrets(x)"})
        ))
        .is_empty()
    );
}

#[test]
fn metadata_entries() {
    assert_refused(
        with_image(vec![
            json!({"type": "label", "name": "bad key!", "value": "v"}),
        ]),
        "(label).name: `bad key!` is not a valid key",
    );
    assert_refused(
        with_image(vec![json!({"type": "label", "name": "k", "value": "-v"})]),
        "(label).value: `-v` is not a valid label value",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "label", "name": "k8sworker.io/installation", "value": "x"}),
        ]),
        "is reserved",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "annotation", "name": "app.kubernetes.io/managed-by", "value": "x"}),
        ]),
        "is reserved",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "annotation", "name": "container.apparmor.security.beta.kubernetes.io/app", "value": "unconfined", "targetResource": "pod"}),
        ]),
        "config[1] (annotation).value: `unconfined` is not an allowed AppArmor profile",
    );
}

/// A request that would put a pod behind k8sworker's own Services, give it
/// k8sworker's own identity, or route an Ingress to k8sworker itself is
/// INVALID before anything is planned, naming the entry and the field.
#[test]
fn system_identities_are_refused() {
    assert_refused(
        request(
            json!([{"type": "image", "name": "nginx", "serviceAccount": "k8sworker-executor"}]),
        ),
        "config[0] (image).serviceAccount: `k8sworker-executor` is k8sworker's own service account",
    );
    for account in ["k8sworker-planner", "k8sworker-gateway"] {
        assert_refused(
            request(json!([{"type": "image", "name": "nginx", "serviceAccount": account}])),
            "(image).serviceAccount",
        );
    }
    for (key, target) in [
        ("k8sworker.io/component", "pod"),
        ("k8sworker.io/installation", "service"),
        ("tenant.k8sworker.io/owner", "statefulset"),
    ] {
        assert_refused(
            with_image(vec![
                json!({"type": "label", "name": key, "value": "executor", "controlsRouting": target == "pod", "targetResource": target}),
            ]),
            &format!("config[1] (label).name: `{key}` is reserved"),
        );
        assert_refused(
            with_image(vec![
                json!({"type": "annotation", "name": key, "value": "x", "targetResource": target}),
            ]),
            &format!("config[1] (annotation).name: `{key}` is reserved"),
        );
    }
    assert_refused(
        with_image(vec![
            json!({"type": "inboundPort", "port": 50052, "protocol": "TCP", "serviceName": "k8sworker-executor"}),
        ]),
        "config[1] (inboundPort).serviceName: `k8sworker-executor` is a Service of k8sworker itself",
    );
    // Every other label is the user's, app.kubernetes.io/* ones included.
    assert_eq!(
        errors(with_image(vec![
            json!({"type": "label", "name": "app.kubernetes.io/name", "value": "k8sworker-executor", "controlsRouting": true}),
            json!({"type": "label", "name": "app.kubernetes.io/part-of", "value": "k8sworker"}),
            json!({"type": "annotation", "name": "container.apparmor.security.beta.kubernetes.io/nginx", "value": "localhost/custom"}),
        ])),
        Vec::<String>::new()
    );
    assert_refused(
        with_image(vec![
            json!({"type": "annotation", "name": "a", "value": "v", "targetResource": "deployment"}),
        ]),
        "targetResource: must be one of configmap",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "label", "name": "a", "value": "v", "controlsRouting": true, "targetResource": "service"}),
        ]),
        "must be `pod` or unset",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "label", "name": "a", "value": "v", "controlsRouting": "maybe"}),
        ]),
        "expected true or false, got `maybe`",
    );
}

#[test]
fn host_aliases_and_affinity() {
    assert_refused(
        with_image(vec![
            json!({"type": "hostAlias", "name": "db", "hostIP": "999.1.1.1"}),
        ]),
        "hostIP: `999.1.1.1` is not an IP address",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "hostAlias", "name": "DB_HOST", "hostIP": "192.0.2.1"}),
        ]),
        "name: `DB_HOST` is not a valid host name",
    );
    assert!(
        errors(with_image(vec![
            json!({"type": "hostAlias", "name": "db", "hostIP": "2001:db8::1"})
        ]))
        .is_empty()
    );
    assert_refused(
        with_image(vec![
            json!({"type": "hardAffinity", "key": "zone", "values": []}),
        ]),
        "values: needs at least one value",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "hardAffinity", "key": "bad key", "values": ["a"]}),
        ]),
        "key: `bad key` is not a valid node label key",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "hardAffinity", "key": "zone", "values": ["a b"]}),
        ]),
        "values: `a b` is not a valid label value",
    );
}

#[test]
fn probes() {
    let probe = |entry: Value| {
        with_image(vec![
            json!({"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http"}),
            entry,
        ])
    };
    assert_refused(
        probe(json!({"type": "probe", "probeType": "sometimes", "requestType": "tcp", "port": 1})),
        "probeType: must be startup, readiness or liveness",
    );
    assert_refused(
        probe(json!({"type": "probe", "probeType": "liveness", "requestType": "grpc", "port": 1})),
        "requestType: must be command, tcp or http",
    );
    assert_refused(
        probe(json!({"type": "probe", "probeType": "liveness", "requestType": "command"})),
        "commands: needs at least one element",
    );
    assert_refused(
        probe(json!({"type": "probe", "probeType": "liveness", "requestType": "tcp"})),
        "port: is required for a `tcp` probe",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": "admin"}),
        ),
        "`admin` is neither a port number nor the portName",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "liveness", "requestType": "http", "port": "http"}),
        ),
        "path: is required for an `http` probe",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "liveness", "requestType": "http", "port": 8080, "path": "health"}),
        ),
        "`health` must start with '/'",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": 1, "periodSeconds": 0}),
        ),
        "periodSeconds: must be at least 1, got 0",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": 1, "successThreshold": 2}),
        ),
        "must be 1 for a liveness probe",
    );
    assert_refused(
        probe(
            json!({"type": "probe", "probeType": "readiness", "requestType": "http", "port": 8080, "path": "/", "headers": {"bad header": "x"}}),
        ),
        "`bad header` is not a valid HTTP header name",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": 1}),
            json!({"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": 2}),
        ]),
        "config[2] (probe).probeType: a `liveness` probe is defined by an earlier entry",
    );
}

#[test]
fn resources() {
    assert_refused(
        with_image(vec![json!({"type": "resourceRequest", "cpu": "lots"})]),
        "cpu: `lots` is not a Kubernetes quantity",
    );
    assert_refused(
        with_image(vec![json!({"type": "resourceRequest"})]),
        "needs at least one of cpu",
    );
    assert_refused(
        with_image(vec![json!({"type": "resourceLimit", "memory": "-1Gi"})]),
        "must not be negative",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "resourceLimit", "nvidia.com/gpu": "0.5"}),
        ]),
        "must be a whole number of GPUs",
    );
    assert_refused(
        with_image(vec![json!({"type": "resourceRequest", "amd.com/gpu": "1"})]),
        "GPUs cannot be overcommitted",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "resourceRequest", "cpu": "2"}),
            json!({"type": "resourceLimit", "cpu": "1500m"}),
        ]),
        "config[1] (resourceRequest).cpu: request `2` exceeds limit `1500m`",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "resourceRequest", "cpu": "1"}),
            json!({"type": "resourceRequest", "memory": "1Gi"}),
        ]),
        "only one `resourceRequest` entry is allowed",
    );
    assert_refused(
        with_image(vec![json!({"type": "resourceLimit", "gpu": "1"})]),
        "unknown field `gpu`",
    );
}

#[test]
fn persistent_volume_refs() {
    assert_refused(
        with_image(vec![
            json!({"type": "persistentVolumeRef", "name": "Data", "path": "/data"}),
        ]),
        "`Data` is not a valid PersistentVolumeClaim name",
    );
    assert_refused(
        with_image(vec![
            json!({"type": "persistentVolumeRef", "name": "data", "path": "data"}),
        ]),
        "`data` must be an absolute path",
    );
    assert_refused(
        with_image(vec![json!({"type": "persistentVolumeRef", "name": "data"})]),
        "missing field `path`",
    );
}

#[test]
fn inbound_ports_are_capped_per_installation() {
    use k8sworker_core::validate::MAX_INBOUND_PORTS;
    let ports = |count: usize| {
        with_image(
            (0..count)
                .map(|n| json!({"type": "inboundPort", "port": 8000 + n, "protocol": "TCP"}))
                .collect(),
        )
    };
    assert_eq!(errors(ports(MAX_INBOUND_PORTS)), Vec::<String>::new());
    let refused = errors(ports(MAX_INBOUND_PORTS + 1));
    assert_eq!(
        refused,
        [format!(
            "config: has {} inboundPort entries; an installation may have at most {MAX_INBOUND_PORTS}: each takes a NodePort from the range the whole cluster shares",
            MAX_INBOUND_PORTS + 1
        )]
    );
}

/// Issue 12, case 5: the disagreements the differential test
/// (`tests/support/tests/differential.rs`) found between this validation and
/// the API server, one regression each (docs/validation.md lists them). The
/// API server refused each of these requests' objects while we accepted the
/// request; now we refuse it, naming the entry and field.
#[test]
fn what_the_api_server_refused_is_refused_here() {
    let one = |entry: Value| errors(with_image(vec![entry]));
    // A ConfigMap or Secret key may not start with `..` (IsConfigMapKey).
    let refused = one(json!({"type": "file", "path": "/etc/x", "filename": "..a", "content": "x"}));
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(refused[0].starts_with("config[1] (file).filename: `..a` is not a valid file name"));
    // An environment variable is also the key of the generated Secret: at
    // most 253 characters, not starting with `..`.
    for name in ["A".repeat(254), "..A".to_owned()] {
        let refused = one(
            json!({"type": "environmentVariable", "name": name, "value": "x", "asSecret": true}),
        );
        assert_eq!(refused.len(), 1, "{refused:#?}");
        assert!(
            refused[0].starts_with("config[1] (environmentVariable).name: "),
            "{refused:#?}"
        );
    }
    assert_eq!(
        one(
            json!({"type": "environmentVariable", "name": "A".repeat(253), "value": "x", "asSecret": true})
        ),
        Vec::<String>::new()
    );
    // Probe header names: letters, digits and '-' only (IsHTTPHeaderName).
    for header in ["x_y", "a.b", "x~"] {
        assert_eq!(
            one(
                json!({"type": "probe", "probeType": "readiness", "requestType": "http", "port": 8080, "path": "/", "headers": {header: "v"}})
            ),
            [format!(
                "config[1] (probe).headers: `{header}` is not a valid HTTP header name: letters, digits and '-' (Kubernetes' rule for probe headers)"
            )]
        );
    }
    // Annotations: the API server's 256 KiB per object include k8sworker's own
    // annotations; the entry that crosses the limit is named.
    use k8sworker_core::validate::MAX_ANNOTATION_BYTES;
    let annotation = |name: &str, size: usize| json!({"type": "annotation", "name": name, "value": "v".repeat(size)});
    let key = "example.com/note";
    assert_eq!(
        errors(with_image(vec![annotation(
            key,
            MAX_ANNOTATION_BYTES - key.len()
        )])),
        Vec::<String>::new()
    );
    let refused = errors(with_image(vec![
        annotation("example.com/a", 10),
        annotation(key, 256 * 1024 - 30),
        annotation("example.com/b", 10),
    ]));
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].starts_with("config[2] (annotation).value: the annotations reach"),
        "{refused:#?}"
    );
}

/// Issue 12, case 5: what the API server accepts and this validation refused
/// for no reason of its own is now accepted — Kubernetes' rules, not a
/// guess at them.
#[test]
fn what_the_api_server_accepts_is_accepted_here() {
    // A DNS subdomain's parts may be longer than 63 (IsDNS1123Subdomain).
    let long_part = format!("{}.example", "a".repeat(64));
    let data = json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx:1.27", "serviceAccount": long_part, "imagePullSecret": long_part},
        {"type": "persistentVolumeRef", "name": long_part, "path": "/data"},
    ]});
    assert_eq!(errors(data), Vec::<String>::new());
    // Annotation keys are checked lower-cased (ValidateAnnotations), label
    // keys as written; a reserved prefix stays reserved in any case.
    assert_eq!(
        errors(with_image(vec![
            json!({"type": "annotation", "name": "Example.com/Note", "value": "x"})
        ])),
        Vec::<String>::new()
    );
    for (entry, expected) in [
        (
            json!({"type": "label", "name": "Example.com/a", "value": "x"}),
            "config[1] (label).name: `Example.com/a` is not a valid key",
        ),
        (
            json!({"type": "annotation", "name": "K8sworker.IO/owner", "value": "x"}),
            "config[1] (annotation).name: `K8sworker.IO/owner` is reserved",
        ),
        (
            json!({"type": "annotation", "name": "App.Kubernetes.io/Managed-By", "value": "x"}),
            "is reserved for k8sworker's ownership marks",
        ),
        // A quantity Kubernetes reads but we cannot compare says so.
        (
            json!({"type": "resourceRequest", "cpu": "1e400"}),
            "config[1] (resourceRequest).cpu: `1e400` is too large or too precise",
        ),
    ] {
        assert_refused(with_image(vec![entry]), expected);
    }
}

/// Every error names a stable path into the request, for a form to show it
/// next to its field; the messages stay as they are.
#[test]
fn every_error_has_a_path_into_the_request() {
    let data = json!({
        "name": "Bad_Name",
        "k8sNamespace": "team-a",
        "config": [
            {"type": "image", "name": "nginx:1.27", "replicas": 2},
            {"type": "hostAlias", "name": "db"},
            {"type": "hardAffinity", "key": "zone", "values": ["a", "not valid!"]},
            {"type": "inboundPort", "port": "eighty", "protocol": "TCP"},
            {"type": "inboundPort", "port": 80, "protocol": "HTTP", "host": "10.0.0.1"},
            {"type": "probe", "probeType": "readiness", "requestType": "http", "port": 80,
             "path": "/", "headers": {"Bad Header": "x"}},
            "not an entry",
        ]
    });
    let errors = match parse_and_validate(&data) {
        Ok(_) => panic!("refused"),
        Err(ValidationErrors { errors }) => errors,
    };
    let paths: Vec<(String, String)> = errors.iter().map(|e| (e.path(), e.to_string())).collect();
    let path_of = |needle: &str| -> String {
        paths
            .iter()
            .find(|(_, text)| text.contains(needle))
            .unwrap_or_else(|| panic!("no error containing {needle:?} in {paths:#?}"))
            .0
            .clone()
    };
    assert_eq!(path_of("`Bad_Name`"), "name");
    assert_eq!(path_of("unknown field `replicas`"), "config[0].replicas");
    assert_eq!(path_of("missing field `hostIP`"), "config[1].hostIP");
    assert_eq!(
        path_of("`not valid!` is not a valid label value"),
        "config[2].values[1]"
    );
    assert_eq!(path_of("invalid type: string \"eighty\""), "config[3].port");
    assert_eq!(path_of("must be TCP or UDP"), "config[4].protocol");
    assert_eq!(path_of("`10.0.0.1`"), "config[4].host");
    assert_eq!(path_of("`Bad Header`"), "config[5].headers.Bad Header");
    assert_eq!(path_of("must be an object with a `type`"), "config[6]");
    // The messages are the ones every other reader of the errors shows.
    assert!(
        paths.iter().any(|(_, text)| text
            == "config[2] (hardAffinity).values: `not valid!` is not a valid label value"),
        "{paths:#?}"
    );
    let missing = parse_and_validate(&json!({"k8sNamespace": "team-a", "config": []})).unwrap_err();
    let missing: Vec<String> = missing.errors.iter().map(|e| e.path()).collect();
    assert!(missing.contains(&"name".to_owned()), "{missing:?}");
    assert!(missing.contains(&"config".to_owned()), "{missing:?}");
}
