//! Render rules, and golden files of realistic requests.
//!
//! The golden files under `golden/` are the exact objects a request renders
//! to; `UPDATE_GOLDEN=1 cargo test -p k8sworker-core --test render`
//! rewrites them after an intended change (review the diff).

use std::path::Path;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8sworker_core::component::{Component, Kind, Object};
use k8sworker_core::labels;
use k8sworker_core::render::{Ancillaries, ClusterContext, RenderError, render};
use k8sworker_core::validate::parse_and_validate;
use serde_json::{Value, json};

fn mk_cluster() -> ClusterContext {
    ClusterContext {
        cluster_name: "prod".into(),
        ingress_default_node: "vantiq-prod-node".into(),
        tenant: None,
    }
}

fn mk_render(data: Value) -> Vec<Component> {
    mk_render_with(data, &Ancillaries::default()).expect("renders")
}

fn mk_render_with(data: Value, ancillaries: &Ancillaries) -> Result<Vec<Component>, RenderError> {
    let request = parse_and_validate(&data).expect("valid request");
    render(&request, &mk_cluster(), ancillaries)
}

fn with_image(mut entries: Vec<Value>) -> Value {
    entries.insert(0, json!({"type": "image", "name": "nginx:1.27"}));
    json!({"name": "app", "k8sNamespace": "team-a", "config": entries})
}

fn names(components: &[Component]) -> Vec<String> {
    components.iter().map(|c| c.id().to_string()).collect()
}

fn statefulset(components: &[Component]) -> &StatefulSet {
    components
        .iter()
        .find_map(|c| match &c.object {
            Object::StatefulSet(sts) => Some(&**sts),
            _ => None,
        })
        .expect("a StatefulSet")
}

fn golden(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("fixtures/{name}.json"))).unwrap(),
    )
    .unwrap();
    let components = mk_render(data);
    let mut yaml = String::new();
    for component in &components {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(&component.object.to_json()).unwrap());
    }
    let path = dir.join(format!("golden/{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &yaml).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing; run with UPDATE_GOLDEN=1", path.display()));
    pretty_assertions::assert_eq!(
        expected,
        yaml,
        "{name} no longer renders as {}",
        path.display()
    );
}

#[test]
fn golden_jdbc_connector_with_host_aliases_and_a_file_from_an_existing_secret() {
    golden("jdbc");
}

#[test]
fn golden_connector_with_file_content_secret_env_and_resource_limits() {
    golden("camel");
}

#[test]
fn always_a_statefulset_and_its_headless_service() {
    let components = mk_render(with_image(vec![]));
    assert_eq!(names(&components), ["Service/app", "StatefulSet/app"]);
    let Object::Service(service) = &components[0].object else {
        panic!()
    };
    assert_eq!(
        service.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let sts = statefulset(&components);
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.service_name.as_deref(), Some("app"));
    assert_eq!(spec.replicas, Some(1));
}

#[test]
fn every_object_carries_ownership_labels_and_its_spec_hash() {
    let components = mk_render(with_image(vec![
        json!({"type": "file", "path": "/a", "filename": "x", "content": "1"}),
        json!({"type": "environmentVariable", "name": "T", "value": "v", "asSecret": true}),
        json!({"type": "inboundPort", "port": 80, "protocol": "TCP"}),
    ]));
    assert_eq!(components.len(), 6);
    for component in &components {
        let meta = component.object.metadata();
        let labels_of = meta.labels.as_ref().unwrap();
        assert_eq!(
            labels_of[labels::MANAGED_BY],
            labels::MANAGER,
            "{}",
            component.id()
        );
        assert_eq!(labels_of[labels::INSTALLATION], "app", "{}", component.id());
        assert_eq!(
            meta.annotations.as_ref().unwrap()[labels::SPEC_HASH],
            component.spec_hash
        );
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
    }
}

#[test]
fn configmaps_group_files_by_path_and_references_generate_nothing() {
    let components = mk_render(with_image(vec![
        json!({"type": "file", "path": "/conf", "filename": "a", "content": "1"}),
        json!({"type": "file", "path": "/other", "filename": "c", "content": "3"}),
        json!({"type": "file", "path": "/conf/", "filename": "b", "content": "2"}),
        json!({"type": "file", "path": "/conf", "filename": "d", "name": "existing", "key": "k"}),
        json!({"type": "file", "path": "/ext", "filename": "e", "name": "existing-secret", "key": "k", "dataSource": "secret"}),
    ]));
    assert_eq!(
        names(&components),
        [
            "ConfigMap/vantiq-app-configmap-0",
            "ConfigMap/vantiq-app-configmap-1",
            "Service/app",
            "StatefulSet/app"
        ]
    );
    let Object::ConfigMap(conf) = &components[0].object else {
        panic!()
    };
    assert_eq!(
        conf.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["a", "b"]
    );
    let pod = statefulset(&components)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    assert_eq!(volumes.len(), 3, "one volume per distinct path");
    let conf_sources = volumes[0]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    assert_eq!(
        conf_sources.len(),
        2,
        "generated ConfigMap + existing ConfigMap"
    );
    assert_eq!(
        conf_sources[1].config_map.as_ref().unwrap().name,
        "existing"
    );
    let ext = volumes[2]
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    assert_eq!(ext[0].secret.as_ref().unwrap().name, "existing-secret");
    let mounts: Vec<&str> = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/conf", "/other", "/ext"]);
}

#[test]
fn secret_values_never_appear_in_the_statefulset() {
    let ancillaries = Ancillaries {
        secrets: [("dbPassword".to_owned(), "hunter2-resolved".to_owned())].into(),
        documents: Default::default(),
    };
    let components = mk_render_with(
        with_image(vec![
            json!({"type": "environmentVariable", "name": "TOKEN", "value": "plain-secret", "asSecret": true}),
            json!({"type": "environmentVariable", "name": "DB_PASSWORD", "value": "@secrets(dbPassword)"}),
            json!({"type": "environmentVariable", "name": "LITERAL", "value": "\\@secrets(x)"}),
            json!({"type": "environmentVariable", "name": "REF", "secretName": "theirs", "key": "k"}),
        ]),
        &ancillaries,
    )
    .unwrap();
    let sts_json = serde_json::to_string(&statefulset(&components)).unwrap();
    assert!(
        !sts_json.contains("plain-secret") && !sts_json.contains("hunter2"),
        "{sts_json}"
    );
    let Object::Secret(secret) = &components[0].object else {
        panic!("{:?}", names(&components))
    };
    assert_eq!(secret.metadata.name.as_deref(), Some("vantiq-app-secret-0"));
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["TOKEN"].0, b"plain-secret");
    assert_eq!(data["DB_PASSWORD"].0, b"hunter2-resolved");
    assert!(!data.contains_key("LITERAL") && !data.contains_key("REF"));
    let env = statefulset(&components)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap();
    assert_eq!(env[2].value.as_deref(), Some("@secrets(x)"));
    assert_eq!(
        env[3]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "theirs"
    );
    // Debug output of the ancillaries shows names, never values.
    assert!(!format!("{ancillaries:?}").contains("hunter2"));
}

/// The StatefulSet's pod spec.
fn pod_spec(components: &[Component]) -> &k8s_openapi::api::core::v1::PodSpec {
    let spec = statefulset(components).spec.as_ref().expect("a spec");
    spec.template.spec.as_ref().expect("a pod spec")
}

/// The container's variable `name`: the Secret its value comes from.
fn env_secret_of(components: &[Component], name: &str) -> Option<String> {
    let pod = pod_spec(components);
    let env = pod.containers[0].env.as_ref()?;
    let var = env.iter().find(|var| var.name == name)?;
    Some(
        var.value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()?
            .name
            .clone(),
    )
}

/// The names of the generated Secrets and the keys each holds.
fn secret_keys(components: &[Component]) -> Vec<(String, Vec<String>)> {
    components
        .iter()
        .filter_map(|c| match &c.object {
            Object::Secret(secret) => Some((
                secret.metadata.name.clone().unwrap(),
                secret.data.as_ref().unwrap().keys().cloned().collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn generated_secrets_share_one_count_in_order_of_first_entry() {
    let file = |path: &str, filename: &str| json!({"type": "file", "path": path, "filename": filename, "content": "x", "dataSource": "secret"});
    let var = |name: &str| json!({"type": "environmentVariable", "name": name, "value": "v", "asSecret": true});
    // A secret file, then a variable, then a file at another secret path.
    let components = mk_render(with_image(vec![
        file("/a", "a.pem"),
        var("TOKEN"),
        json!({"type": "file", "path": "/c", "filename": "c.conf", "content": "x"}),
        file("/b", "b.pem"),
        var("OTHER"),
        file("/a", "a2.pem"),
    ]));
    assert_eq!(
        secret_keys(&components),
        [
            (
                "vantiq-app-secret-0".to_owned(),
                vec!["a.pem".to_owned(), "a2.pem".to_owned()]
            ),
            ("vantiq-app-secret-2".to_owned(), vec!["b.pem".to_owned()]),
            (
                "vantiq-app-secret-1".to_owned(),
                vec!["OTHER".to_owned(), "TOKEN".to_owned()]
            ),
        ]
    );
    // ConfigMaps keep their own count.
    assert!(names(&components).contains(&"ConfigMap/vantiq-app-configmap-0".to_owned()));
    assert_eq!(
        env_secret_of(&components, "TOKEN").as_deref(),
        Some("vantiq-app-secret-1")
    );
    assert_eq!(
        env_secret_of(&components, "OTHER").as_deref(),
        Some("vantiq-app-secret-1")
    );
    let volumes = pod_spec(&components).volumes.clone().unwrap();
    let projected: Vec<String> = volumes
        .iter()
        .flat_map(|v| v.projected.as_ref().unwrap().sources.clone().unwrap())
        .filter_map(|source| source.secret.map(|secret| secret.name))
        .collect();
    assert_eq!(projected, ["vantiq-app-secret-0", "vantiq-app-secret-2"]);

    // A variable first takes 0; one after every secret file takes the last number.
    let first = mk_render(with_image(vec![var("TOKEN"), file("/a", "a.pem")]));
    assert_eq!(
        secret_keys(&first),
        [
            ("vantiq-app-secret-1".to_owned(), vec!["a.pem".to_owned()]),
            ("vantiq-app-secret-0".to_owned(), vec!["TOKEN".to_owned()]),
        ]
    );
    let last = mk_render(with_image(vec![
        file("/a", "a.pem"),
        file("/b", "b.pem"),
        var("TOKEN"),
    ]));
    assert_eq!(
        env_secret_of(&last, "TOKEN").as_deref(),
        Some("vantiq-app-secret-2")
    );
    // Only variables: one Secret, number 0; a referenced Secret takes no number.
    let only = mk_render(with_image(vec![
        json!({"type": "environmentVariable", "name": "REF", "secretName": "theirs", "key": "k"}),
        json!({"type": "file", "path": "/e", "filename": "e", "name": "existing", "key": "k", "dataSource": "secret"}),
        var("TOKEN"),
    ]));
    assert_eq!(
        secret_keys(&only),
        [("vantiq-app-secret-0".to_owned(), vec!["TOKEN".to_owned()])]
    );
    // No variable in a Secret: no variable Secret, and no name reserved for one.
    let none = mk_render(with_image(vec![
        json!({"type": "environmentVariable", "name": "PLAIN", "value": "v"}),
        file("/a", "a.pem"),
    ]));
    assert_eq!(
        secret_keys(&none),
        [("vantiq-app-secret-0".to_owned(), vec!["a.pem".to_owned()])]
    );
}

#[test]
fn unresolved_secrets_and_documents_are_errors() {
    let missing = mk_render_with(
        with_image(vec![
            json!({"type": "environmentVariable", "name": "P", "value": "@secrets(nope)"}),
        ]),
        &Ancillaries::default(),
    );
    assert!(
        matches!(missing, Err(RenderError::MissingSecret { entry: 1, .. })),
        "{missing:?}"
    );
    let missing = mk_render_with(
        with_image(vec![
            json!({"type": "file", "path": "/d", "resourceType": "documents", "resourceName": "cfg/x.bin"}),
        ]),
        &Ancillaries::default(),
    );
    assert!(
        matches!(missing, Err(RenderError::MissingDocument { entry: 1, .. })),
        "{missing:?}"
    );
}

#[test]
fn documents_mount_as_text_or_binary() {
    let ancillaries = Ancillaries {
        secrets: Default::default(),
        documents: [
            ("cfg/x.json".to_owned(), b"{}".to_vec()),
            ("bin/blob".to_owned(), vec![0xff, 0x00, 0x10]),
        ]
        .into(),
    };
    let components = mk_render_with(
        with_image(vec![
            json!({"type": "file", "path": "/d", "resourceType": "documents", "resourceName": "cfg/x.json", "treatAsText": true}),
            json!({"type": "file", "path": "/d", "resourceType": "documents", "resourceName": "bin/blob"}),
        ]),
        &ancillaries,
    )
    .unwrap();
    let Object::ConfigMap(cm) = &components[0].object else {
        panic!()
    };
    assert_eq!(cm.data.as_ref().unwrap()["x.json"], "{}");
    assert_eq!(
        cm.binary_data.as_ref().unwrap()["blob"].0,
        vec![0xff, 0x00, 0x10]
    );
    let not_text = mk_render_with(
        with_image(vec![
            json!({"type": "file", "path": "/d", "resourceType": "documents", "resourceName": "bin/blob", "treatAsText": true}),
        ]),
        &ancillaries,
    );
    assert!(matches!(not_text, Err(RenderError::DocumentNotText { .. })));
}

#[test]
fn inbound_ports_make_a_service_and_an_ingress_with_the_default_host() {
    let components = mk_render(with_image(vec![
        json!({"type": "inboundPort", "port": 8080, "protocol": "TCP"}),
        json!({"type": "inboundPort", "port": 9000, "protocol": "TCP", "host": "api.example.com", "serviceName": "api", "serviceType": "ClusterIP"}),
        json!({"type": "inboundPort", "port": 5353, "protocol": "UDP"}),
    ]));
    assert_eq!(
        names(&components),
        [
            "Service/app",
            "StatefulSet/app",
            "Service/vantiq-app-service-0",
            "Service/api",
            "Service/vantiq-app-service-2",
            "Ingress/vantiq-app-ingress-0",
            "Ingress/vantiq-app-ingress-1",
        ],
        "UDP gets a Service but no Ingress"
    );
    let hosts: Vec<Option<String>> = components
        .iter()
        .filter_map(|c| match &c.object {
            Object::Ingress(ingress) => Some(
                ingress.spec.as_ref().unwrap().rules.as_ref().unwrap()[0]
                    .host
                    .clone(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        hosts,
        [
            Some("vantiq-prod-node".into()),
            Some("api.example.com".into())
        ]
    );
    let Object::Service(headless) = &components[0].object else {
        panic!()
    };
    let port_names: Vec<_> = headless
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.name.clone().unwrap())
        .collect();
    assert_eq!(
        port_names,
        ["tcp-8080", "tcp-9000", "udp-5353"],
        "several ports must all be named"
    );
    let Object::Service(first) = &components[2].object else {
        panic!()
    };
    assert_eq!(
        first.spec.as_ref().unwrap().type_.as_deref(),
        Some("NodePort")
    );
}

#[test]
fn routing_labels_select_the_pods() {
    let components = mk_render(with_image(vec![
        json!({"type": "label", "name": "route", "value": "blue", "controlsRouting": true}),
        json!({"type": "label", "name": "team", "value": "a", "targetResource": "service"}),
        json!({"type": "annotation", "name": "x/y", "value": "z", "targetResource": "pod"}),
    ]));
    let Object::Service(service) = &components[0].object else {
        panic!()
    };
    let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    assert_eq!(selector.len(), 1);
    assert_eq!(selector["route"], "blue");
    assert_eq!(service.metadata.labels.as_ref().unwrap()["team"], "a");
    let sts = statefulset(&components);
    assert!(!sts.metadata.labels.as_ref().unwrap().contains_key("team"));
    let template = sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(template.labels.as_ref().unwrap()["route"], "blue");
    assert_eq!(template.annotations.as_ref().unwrap()["x/y"], "z");
    assert_eq!(
        sts.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["route"],
        "blue"
    );
}

#[test]
fn pods_get_no_api_token_unless_the_installation_names_an_account() {
    let components = mk_render(with_image(vec![]));
    let pod = statefulset(&components)
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.service_account_name, None);
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[test]
fn pod_settings() {
    let components = mk_render(json!({"name": "app", "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx", "imagePullSecret": "pull", "serviceAccount": "runner", "replicaCount": 3},
        {"type": "inboundPort", "port": 80, "protocol": "TCP", "portName": "web"},
        {"type": "probe", "probeType": "liveness", "requestType": "tcp", "port": "web"},
        {"type": "probe", "probeType": "startup", "requestType": "command", "commands": ["true"]},
        {"type": "hardAffinity", "key": "zone", "values": ["a"]},
        {"type": "hardAffinity", "key": "disk", "values": ["ssd", "nvme"]},
        {"type": "persistentVolumeRef", "name": "data", "path": "/data"},
        {"type": "resourceRequest", "nvidia.com/gpu": "1", "cpu": "1"},
        {"type": "resourceLimit", "nvidia.com/gpu": "1"},
    ]}));
    let spec = statefulset(&components).spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "pull");
    assert_eq!(pod.service_account_name.as_deref(), Some("runner"));
    assert_eq!(
        pod.automount_service_account_token, None,
        "an account the installation names keeps its token"
    );
    let terms = &pod
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    assert_eq!(
        terms[0].match_expressions.as_ref().unwrap().len(),
        2,
        "hard affinities all apply"
    );
    let container = &pod.containers[0];
    assert!(
        container
            .liveness_probe
            .as_ref()
            .unwrap()
            .tcp_socket
            .is_some()
    );
    assert!(container.startup_probe.as_ref().unwrap().exec.is_some());
    assert!(container.readiness_probe.is_none());
    assert_eq!(
        pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "data"
    );
    let resources = container.resources.as_ref().unwrap();
    assert_eq!(resources.limits.as_ref().unwrap()["nvidia.com/gpu"].0, "1");
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "1");
}

#[test]
fn a_content_change_rolls_the_pods_and_rendering_is_deterministic() {
    let with = |content: &str| {
        mk_render(with_image(vec![
            json!({"type": "file", "path": "/a", "filename": "x", "content": content}),
        ]))
    };
    let hash = |components: &[Component]| {
        statefulset(components)
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[labels::CONFIG_HASH]
            .clone()
    };
    let (one, again, two) = (with("1"), with("1"), with("2"));
    assert_eq!(one, again);
    assert_ne!(hash(&one), hash(&two));
    let sts = |c: &[Component]| {
        c.iter()
            .find(|c| c.id().kind == Kind::StatefulSet)
            .unwrap()
            .spec_hash
            .clone()
    };
    assert_ne!(
        sts(&one),
        sts(&two),
        "the StatefulSet changes, so the pods roll"
    );
}

#[test]
fn the_ingress_default_node_is_checked() {
    let request = parse_and_validate(&with_image(vec![])).unwrap();
    let cluster = ClusterContext {
        cluster_name: "c".into(),
        ingress_default_node: "Not A Host".into(),
        tenant: None,
    };
    assert!(matches!(
        render(&request, &cluster, &Ancillaries::default()),
        Err(RenderError::IngressDefaultNode(_))
    ));
    // Issue 12, case 4: a record stored with an IP address (before the
    // control plane refused one) is refused at plan time, before any object
    // exists, naming the field.
    for ip in ["192.0.2.10", "2001:db8::1"] {
        let cluster = ClusterContext {
            ingress_default_node: ip.into(),
            ..cluster.clone()
        };
        let error = render(&request, &cluster, &Ancillaries::default()).unwrap_err();
        assert_eq!(error, RenderError::IngressDefaultNode(ip.into()));
        assert!(error.to_string().contains("ingressDefaultNode"), "{error}");
    }
}

/// Upgrading to owner records: every object renders its record, so every
/// spec hash changes, and with generated files the pod template's config
/// hash too (the pods roll once); without any, the pod template stays.
#[test]
fn the_owner_record_changes_every_spec_hash_and_the_config_hash_once() {
    let tenant = k8sworker_core::owner::Tenant::new("acme", "prod").unwrap();
    let with_tenant = ClusterContext {
        tenant: Some(tenant),
        ..mk_cluster()
    };
    let pod_template = |components: &[Component]| {
        components
            .iter()
            .find_map(|c| match &c.object {
                Object::StatefulSet(sts) => Some(sts.spec.as_ref().unwrap().template.clone()),
                _ => None,
            })
            .unwrap()
    };
    for (data, rolls) in [
        (
            with_image(vec![
                json!({"type": "file", "path": "/a", "filename": "x", "content": "1"}),
            ]),
            true,
        ),
        (with_image(vec![]), false),
    ] {
        let request = parse_and_validate(&data).unwrap();
        let before = render(&request, &mk_cluster(), &Ancillaries::default()).unwrap();
        let after = render(&request, &with_tenant, &Ancillaries::default()).unwrap();
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(b.spec_hash, a.spec_hash, "{}", a.id());
            let record = &a.object.metadata().annotations.as_ref().unwrap()[labels::OWNER];
            assert_eq!(
                record,
                &format!("acme/prod/{}/{}/{}", request.name, a.id().kind, a.id().name)
            );
        }
        assert_eq!(pod_template(&before) != pod_template(&after), rolls);
    }
}

/// The room validation keeps out of the API server's 256 KiB of annotations
/// per object ([`OWN_ANNOTATIONS_RESERVE`]) holds k8sworker's own
/// annotations with the longest names: tenant parts of 253 characters, a
/// 52-character installation (too long for inbound ports, whose objects
/// carry the same annotations), generated files and secrets.
#[test]
fn our_own_annotations_fit_the_room_kept_for_them() {
    use k8sworker_core::owner::{MAX_TENANT_PART, Tenant};
    use k8sworker_core::validate::OWN_ANNOTATIONS_RESERVE;
    let name = "a".repeat(52);
    let data = json!({"name": name, "k8sNamespace": "team-a", "config": [
        {"type": "image", "name": "nginx:1.27"},
        {"type": "file", "path": "/etc/a", "filename": "a.conf", "content": "x"},
        {"type": "file", "path": "/etc/b", "filename": "b.conf", "content": "x", "dataSource": "secret"},
        {"type": "environmentVariable", "name": "A", "value": "x", "asSecret": true},
        {"type": "annotation", "name": "example.com/note", "value": "x"},
    ]});
    let request = parse_and_validate(&data).expect("valid request");
    let cluster = ClusterContext {
        tenant: Some(
            Tenant::new("n".repeat(MAX_TENANT_PART), "c".repeat(MAX_TENANT_PART)).unwrap(),
        ),
        ..mk_cluster()
    };
    let own = |annotations: Option<&std::collections::BTreeMap<String, String>>| -> usize {
        annotations
            .into_iter()
            .flatten()
            .filter(|(key, _)| labels::is_reserved(key))
            .map(|(key, value)| key.len() + value.len())
            .sum()
    };
    let mut largest = 0;
    for component in render(&request, &cluster, &Ancillaries::default()).unwrap() {
        largest = largest.max(own(component.object.metadata().annotations.as_ref()));
        if let Object::StatefulSet(sts) = &component.object {
            let template = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
            largest = largest.max(own(template.and_then(|m| m.annotations.as_ref())));
        }
    }
    assert!(largest > 300, "the owner record is measured: {largest}");
    assert!(
        largest <= OWN_ANNOTATIONS_RESERVE,
        "{largest} bytes of our own annotations exceed the {OWN_ANNOTATIONS_RESERVE} kept"
    );
}
