//! Diff properties: applying a plan and re-planning gives only `noop`s, and no
//! plan ever updates, scales or deletes an object without our labels.

use std::collections::BTreeMap;

use k8sworker_core::component::{Component, ComponentId, Kind, Object};
use k8sworker_core::diff::{DriftKind, Observed, PlanError, diff, verify};
use k8sworker_core::labels;
use k8sworker_core::owner::{OwnerRecord, Ownership, Tenant, ownership};
use k8sworker_core::plan::{Action, Operation, Plan, Precondition};
use k8sworker_core::render::{Ancillaries, ClusterContext, render};
use k8sworker_core::validate::parse_and_validate;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A toy API server: objects by id, with uids and resource versions.
#[derive(Debug, Clone, Default)]
struct Cluster {
    objects: BTreeMap<ComponentId, Observed>,
    next: u64,
}

impl Cluster {
    fn bump(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }

    fn observed(&self) -> Vec<Observed> {
        self.objects.values().cloned().collect()
    }

    fn put_foreign(&mut self, kind: Kind, name: &str, owner: Option<&str>) {
        self.put(kind, name, owner, None);
    }

    /// An object with `owner`'s labels (when some) and the owner record
    /// `record` (when some).
    fn put(&mut self, kind: Kind, name: &str, owner: Option<&str>, record: Option<String>) {
        let rv = self.bump();
        let id = ComponentId::new(kind, name);
        self.objects.insert(
            id.clone(),
            Observed {
                id,
                uid: format!("uid-{rv}"),
                resource_version: rv,
                spec_hash: Some("foreign".into()),
                owner: owner.map(str::to_owned),
                owner_record: record,
                replicas: (kind == Kind::StatefulSet).then_some(1),
                ready_replicas: None,
                foreign_managers: Vec::new(),
                immutable: Default::default(),
                foreign_fields: Vec::new(),
            },
        );
    }

    /// Applies a plan the way an executor does, checking every precondition first.
    fn apply(&mut self, plan: &Plan) {
        for step in &plan.steps {
            let current = self.objects.get(&step.component);
            match (&step.precondition, current) {
                (Precondition::MustNotExist, None) => {}
                (
                    Precondition::Expected {
                        uid,
                        resource_version,
                    },
                    Some(o),
                ) => {
                    assert_eq!(
                        (uid, resource_version),
                        (&o.uid, &o.resource_version),
                        "stale step"
                    );
                }
                (p, o) => panic!("precondition {p:?} does not hold for {o:?}"),
            }
        }
        for step in &plan.steps {
            let rv = self.bump();
            match step.action {
                Action::Create | Action::Update => {
                    let object = step.object.as_ref().expect("object");
                    let meta = object.metadata();
                    let labels_of = meta.labels.clone().unwrap_or_default();
                    let owner = (labels_of.get(labels::MANAGED_BY).map(String::as_str)
                        == Some(labels::MANAGER))
                    .then(|| labels_of.get(labels::INSTALLATION).cloned())
                    .flatten();
                    let uid = self
                        .objects
                        .get(&step.component)
                        .map_or_else(|| format!("uid-{rv}"), |o| o.uid.clone());
                    let replicas = match object {
                        Object::StatefulSet(sts) => sts.spec.as_ref().and_then(|s| s.replicas),
                        _ => None,
                    };
                    self.objects.insert(
                        step.component.clone(),
                        Observed {
                            id: step.component.clone(),
                            uid,
                            resource_version: rv,
                            spec_hash: meta
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(labels::SPEC_HASH))
                                .cloned(),
                            owner,
                            owner_record: meta
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(labels::OWNER))
                                .cloned(),
                            replicas,
                            ready_replicas: None,
                            foreign_managers: Vec::new(),
                            immutable: k8sworker_core::immutable::fields(object),
                            foreign_fields: Vec::new(),
                        },
                    );
                }
                Action::Delete => {
                    self.objects.remove(&step.component);
                }
                Action::Scale => {
                    let object = self.objects.get_mut(&step.component).unwrap();
                    object.replicas = step.replicas;
                    object.resource_version = rv;
                }
                Action::Noop => {}
            }
        }
    }
}

fn mk_desired(data: &Value) -> (Vec<Component>, i32) {
    let request = parse_and_validate(data).expect("valid");
    let cluster = ClusterContext {
        cluster_name: "c".into(),
        ingress_default_node: "node".into(),
        tenant: Some(tenant()),
    };
    (
        render(&request, &cluster, &Ancillaries::default()).unwrap(),
        request.replica_count(),
    )
}

fn tenant() -> Tenant {
    Tenant::new("vantiq-ns", "c").unwrap()
}

fn plan(op: Operation, data: &Value, cluster: &Cluster) -> Result<Plan, PlanError> {
    let (desired, replicas) = mk_desired(data);
    diff(
        op,
        &tenant(),
        "app",
        "ns",
        &desired,
        &cluster.observed(),
        replicas,
    )
}

fn arb_request() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec((0..3usize, "[a-z]{1,6}", "[a-z0-9 ]{0,20}"), 0..5),
        proptest::collection::vec(("[A-Z]{1,5}", "[a-z]{0,8}", any::<bool>()), 0..4),
        proptest::collection::btree_set(1..65535i64, 0..3),
        0..4i64,
        proptest::option::of("[a-z]{1,5}"),
    )
        .prop_map(|(files, envs, ports, replicas, label)| {
            let mut config = vec![json!({"type": "image", "name": "nginx", "replicaCount": replicas})];
            let mut seen_files = std::collections::BTreeSet::new();
            for (dir, filename, content) in files {
                if seen_files.insert((dir, filename.clone())) {
                    config.push(json!({"type": "file", "path": format!("/d{dir}"), "filename": filename, "content": content}));
                }
            }
            let mut seen_envs = std::collections::BTreeSet::new();
            for (name, value, secret) in envs {
                if seen_envs.insert(name.clone()) {
                    config.push(json!({"type": "environmentVariable", "name": name, "value": value, "asSecret": secret}));
                }
            }
            for port in ports {
                config.push(json!({"type": "inboundPort", "port": port, "protocol": "TCP"}));
            }
            if let Some(value) = label {
                config.push(json!({"type": "label", "name": "tier", "value": value}));
            }
            json!({"name": "app", "k8sNamespace": "ns", "config": config})
        })
}

/// Objects that exist before: ours (possibly stale), from before owner
/// records, another tenant's or installation's, copies, and unlabelled ones —
/// at names the request may or may not want.
fn arb_cluster() -> impl Strategy<Value = Vec<(usize, usize, u8)>> {
    proptest::collection::vec((0..5usize, 0..6usize, 0..7u8), 0..6)
}

fn record(tenant: &Tenant, installation: &str, kind: Kind, name: &str) -> Option<String> {
    Some(OwnerRecord::new(tenant, installation, ComponentId::new(kind, name)).to_string())
}

const CANDIDATE_NAMES: [&str; 6] = [
    "app",
    "vantiq-app-configmap-0",
    "vantiq-app-configmap-1",
    "vantiq-app-secret-0",
    "vantiq-app-service-0",
    "unrelated",
];

fn mk_cluster(seed: &[(usize, usize, u8)]) -> Cluster {
    let mut cluster = Cluster::default();
    let other_tenant = Tenant::new("someone-else", "c").unwrap();
    for &(kind, name, owner) in seed {
        let (kind, name) = (Kind::ALL[kind], CANDIDATE_NAMES[name]);
        let (owner, record) = match owner {
            0 => (Some("app"), record(&tenant(), "app", kind, name)),
            1 => (Some("app"), None),
            2 => (Some("other"), None),
            3 => (None, None),
            4 => (Some("app"), record(&other_tenant, "app", kind, name)),
            5 => (Some("app"), record(&tenant(), "app", kind, "copied-from")),
            _ => (Some("app"), record(&tenant(), "other", kind, name)),
        };
        cluster.put(kind, name, owner, record);
    }
    cluster
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn applying_a_plan_then_replanning_gives_only_noops(data in arb_request(), seed in arb_cluster(), op in 0..4usize) {
        let op = [Operation::Deploy, Operation::Undeploy, Operation::Shutdown, Operation::Restart][op];
        let mut cluster = mk_cluster(&seed);
        let before = cluster.clone();
        match plan(op, &data, &cluster) {
            Ok(first) => {
                // Never touch what is not ours; adopt only from before owner
                // records, by a deploy's update.
                for step in &first.steps {
                    if step.action != Action::Create {
                        let target = &before.objects[&step.component];
                        match ownership(target, &tenant(), "app") {
                            Ownership::Ours => {}
                            Ownership::Legacy => prop_assert!(
                                op == Operation::Deploy && step.action == Action::Update,
                                "{:?} on {:?}", step.action, target
                            ),
                            other => prop_assert!(false, "{:?} on {:?} ({:?})", step.action, target, other),
                        }
                    }
                }
                let touched: Vec<&ComponentId> = first.steps.iter().filter(|s| s.action.writes()).map(|s| &s.component).collect();
                cluster.apply(&first);
                let second = plan(op, &data, &cluster).expect("re-plan");
                prop_assert!(second.is_noop(), "second plan still writes: {:#?}", second.steps);
                if op == Operation::Deploy {
                    prop_assert!(verify(&tenant(), "app", &mk_desired(&data).0, &cluster.observed(), false).is_empty());
                }
                // Objects no step wrote to are exactly as they were.
                for (id, object) in &before.objects {
                    if !touched.contains(&id) {
                        prop_assert_eq!(cluster.objects.get(id), Some(object));
                    }
                }
            }
            Err(PlanError::NotOwned(unowned)) => {
                for u in unowned {
                    let object = &before.objects[&u.id];
                    prop_assert_ne!(ownership(object, &tenant(), "app"), Ownership::Ours);
                }
            }
            Err(PlanError::NotFound { .. }) => {
                prop_assert!(matches!(op, Operation::Shutdown | Operation::Restart));
                let sts = before.objects.get(&ComponentId::new(Kind::StatefulSet, "app"));
                prop_assert!(sts.is_none());
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn the_plan_id_is_a_function_of_the_plan(data in arb_request(), seed in arb_cluster()) {
        let cluster = mk_cluster(&seed);
        if let (Ok(a), Ok(b)) = (plan(Operation::Deploy, &data, &cluster), plan(Operation::Deploy, &data, &cluster)) {
            prop_assert_eq!(&a.id, &b.id);
            prop_assert_eq!(a, b);
        }
    }
}

fn simple() -> Value {
    json!({"name": "app", "k8sNamespace": "ns", "config": [
        {"type": "image", "name": "nginx", "replicaCount": 2},
        {"type": "file", "path": "/a", "filename": "x", "content": "1"},
        {"type": "inboundPort", "port": 80, "protocol": "TCP"},
    ]})
}

fn actions(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| format!("{} {}", s.action, s.component))
        .collect()
}

#[test]
fn fresh_deploy_creates_in_dependency_order() {
    let plan = plan(Operation::Deploy, &simple(), &Cluster::default()).unwrap();
    assert_eq!(
        actions(&plan),
        [
            "create ConfigMap/vantiq-app-configmap-0",
            "create Service/app",
            "create StatefulSet/app",
            "create Service/vantiq-app-service-0",
            "create Ingress/vantiq-app-ingress-0",
        ]
    );
    assert!(
        plan.steps
            .iter()
            .all(|s| s.precondition == Precondition::MustNotExist)
    );
    assert_eq!(plan.desired_replicas, 2);
}

#[test]
fn a_changed_file_updates_its_configmap_and_the_statefulset() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let mut changed = simple();
    changed["config"][1]["content"] = json!("2");
    let plan = plan(Operation::Deploy, &changed, &cluster).unwrap();
    assert_eq!(
        actions(&plan),
        [
            "update ConfigMap/vantiq-app-configmap-0",
            "noop Service/app",
            "update StatefulSet/app",
            "noop Service/vantiq-app-service-0",
            "noop Ingress/vantiq-app-ingress-0",
        ]
    );
    assert_eq!(plan.writes().count(), 2);
}

/// Issue 12, case 3: a routing label changes the pods' selector, which a
/// StatefulSet never lets an update change. The plan is refused as a whole,
/// before any write (the Services' selectors, which may change, are not
/// switched first), naming the object and field and what to do.
#[test]
fn a_change_of_an_immutable_field_refuses_the_whole_plan() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let mut relabelled = simple();
    relabelled["config"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "label", "name": "app", "value": "app", "controlsRouting": true}));
    let refused = plan(Operation::Deploy, &relabelled, &cluster).unwrap_err();
    let PlanError::Immutable(changes) = &refused else {
        panic!("{refused:?}")
    };
    let named: Vec<String> = changes
        .iter()
        .map(|c| format!("{} {}", c.id, c.field))
        .collect();
    assert_eq!(named, ["StatefulSet/app spec.selector"]);
    let message = refused.to_string();
    assert!(
        message.contains("StatefulSet/app field `spec.selector` would change from"),
        "{message}"
    );
    assert!(
        message.contains("undeploy the installation, then deploy it again"),
        "{message}"
    );
    // Verify reports the same as drift of the StatefulSet.
    let drift = verify(
        &tenant(),
        "app",
        &mk_desired(&relabelled).0,
        &cluster.observed(),
        false,
    );
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].kind, DriftKind::Altered);
    assert!(drift[0].message.contains("spec.selector"), "{drift:?}");
    // The unchanged request still plans nothing.
    let again = plan(Operation::Deploy, &simple(), &cluster).unwrap();
    assert!(again.is_noop(), "{:?}", actions(&again));
}

#[test]
fn removing_an_entry_deletes_its_objects_in_reverse_order() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let fewer = json!({"name": "app", "k8sNamespace": "ns", "config": [{"type": "image", "name": "nginx", "replicaCount": 2}]});
    let plan = plan(Operation::Deploy, &fewer, &cluster).unwrap();
    let writes: Vec<String> = plan
        .writes()
        .map(|s| format!("{} {}", s.action, s.component))
        .collect();
    assert_eq!(
        writes,
        [
            "update Service/app",
            "update StatefulSet/app",
            "delete Ingress/vantiq-app-ingress-0",
            "delete Service/vantiq-app-service-0",
            "delete ConfigMap/vantiq-app-configmap-0",
        ]
    );
}

#[test]
fn shutdown_and_restart_only_scale() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let down = plan(Operation::Shutdown, &simple(), &cluster).unwrap();
    assert_eq!(actions(&down), ["scale StatefulSet/app"]);
    assert_eq!(down.steps[0].replicas, Some(0));
    cluster.apply(&down);
    // A stopped installation is not drift; a redeploy brings it back up.
    assert!(
        verify(
            &tenant(),
            "app",
            &mk_desired(&simple()).0,
            &cluster.observed(),
            true
        )
        .is_empty()
    );
    let redeploy = plan(Operation::Deploy, &simple(), &cluster).unwrap();
    assert_eq!(
        redeploy.writes().map(|s| s.action).collect::<Vec<_>>(),
        [Action::Scale]
    );
    let up = plan(Operation::Restart, &simple(), &cluster).unwrap();
    assert_eq!(actions(&up), ["scale StatefulSet/app"]);
    assert_eq!(up.steps[0].replicas, Some(2));
}

#[test]
fn undeploy_deletes_only_ours() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    cluster.put_foreign(Kind::ConfigMap, "referenced-config", None);
    cluster.put_foreign(Kind::Secret, "vantiq-other-secret-0", Some("other"));
    let plan = plan(Operation::Undeploy, &simple(), &cluster).unwrap();
    assert_eq!(
        actions(&plan),
        [
            "delete Ingress/vantiq-app-ingress-0",
            "delete Service/app",
            "delete Service/vantiq-app-service-0",
            "delete StatefulSet/app",
            "delete ConfigMap/vantiq-app-configmap-0",
        ]
    );
    cluster.apply(&plan);
    assert_eq!(cluster.objects.len(), 2);
}

#[test]
fn an_unowned_object_in_the_way_fails_the_plan_naming_it() {
    let mut cluster = Cluster::default();
    cluster.put_foreign(Kind::ConfigMap, "vantiq-app-configmap-0", None);
    let error = plan(Operation::Deploy, &simple(), &cluster).unwrap_err();
    assert!(matches!(&error, PlanError::NotOwned(u) if u.len() == 1));
    assert!(
        error
            .to_string()
            .contains("ConfigMap/vantiq-app-configmap-0 (not created by k8sworker)"),
        "{error}"
    );
    let drift = verify(
        &tenant(),
        "app",
        &mk_desired(&simple()).0,
        &cluster.observed(),
        false,
    );
    assert_eq!(drift[0].kind, DriftKind::Unowned);
}

#[test]
fn only_undeploy_may_delete_everything() {
    // A deploy always keeps its StatefulSet, so the guard is exercised through
    // the diff of a request whose StatefulSet is owned by nobody else but is
    // not desired: an impossible render, built by hand.
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let error = diff(
        Operation::Deploy,
        &tenant(),
        "app",
        "ns",
        &[],
        &cluster.observed(),
        1,
    )
    .unwrap_err();
    assert_eq!(error, PlanError::DeleteAllRefused("app".into()));
    assert!(
        diff(
            Operation::Undeploy,
            &tenant(),
            "app",
            "ns",
            &[],
            &cluster.observed(),
            1
        )
        .is_ok()
    );
}

#[test]
fn verify_names_missing_and_altered_components() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    cluster
        .objects
        .remove(&ComponentId::new(Kind::ConfigMap, "vantiq-app-configmap-0"));
    cluster
        .objects
        .get_mut(&ComponentId::new(Kind::Service, "vantiq-app-service-0"))
        .unwrap()
        .foreign_managers = vec!["kubectl-edit".into()];
    let drift = verify(
        &tenant(),
        "app",
        &mk_desired(&simple()).0,
        &cluster.observed(),
        false,
    );
    let described: Vec<String> = drift.iter().map(|d| d.message.clone()).collect();
    assert_eq!(
        described,
        [
            "ConfigMap/vantiq-app-configmap-0 is missing",
            "Service/vantiq-app-service-0 was altered outside k8sworker"
        ]
    );
}

/// Issue 12, case 1: another manager's fields that k8sworker does not set
/// (`kubectl rollout restart`'s annotation, `kubectl label`) are not drift;
/// another value in a field it sets is, named with the field and manager.
#[test]
fn only_another_managers_change_to_a_field_we_set_is_drift() {
    use k8sworker_core::managed::ForeignField;
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    let sts = ComponentId::new(Kind::StatefulSet, "app");
    let field = |manager: &str, path: &[&str], value: &str| ForeignField {
        manager: manager.into(),
        path: path.iter().map(|e| e.to_string()).collect(),
        value: Some(value.into()),
    };
    let restarted = field(
        "kubectl-rollout",
        &[
            "f:spec",
            "f:template",
            "f:metadata",
            "f:annotations",
            "f:kubectl.kubernetes.io/restartedAt",
        ],
        "\"2026-12-01T00:00:00Z\"",
    );
    let labelled = field(
        "kubectl-label",
        &["f:metadata", "f:labels", "f:team"],
        "\"a\"",
    );
    {
        let observed = cluster.objects.get_mut(&sts).unwrap();
        observed.foreign_managers = vec!["kubectl-label".into(), "kubectl-rollout".into()];
        observed.foreign_fields = vec![restarted.clone(), labelled.clone()];
    }
    let again = plan(Operation::Deploy, &simple(), &cluster).unwrap();
    assert!(again.is_noop(), "{:?}", actions(&again));
    let desired = mk_desired(&simple()).0;
    assert_eq!(
        verify(&tenant(), "app", &desired, &cluster.observed(), false),
        []
    );

    let edited = field(
        "kubectl-edit",
        &[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"app\"}",
            "f:image",
        ],
        "\"nginx:evil\"",
    );
    {
        let observed = cluster.objects.get_mut(&sts).unwrap();
        observed.foreign_managers.push("kubectl-edit".into());
        observed.foreign_fields.push(edited);
    }
    let repair = plan(Operation::Deploy, &simple(), &cluster).unwrap();
    let step = repair.steps.iter().find(|s| s.component == sts).unwrap();
    assert_eq!(step.action, Action::Update);
    assert_eq!(
        step.reason,
        "field `spec.template.spec.containers[name=app].image` changed by kubectl-edit"
    );
    assert_eq!(repair.writes().count(), 1, "{:?}", actions(&repair));
    let drift = verify(&tenant(), "app", &desired, &cluster.observed(), false);
    let described: Vec<&str> = drift.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        described,
        [
            "StatefulSet/app was altered outside k8sworker: field `spec.template.spec.containers[name=app].image` changed by kubectl-edit"
        ]
    );
}

#[test]
fn shutdown_of_a_missing_installation_says_so() {
    let error = plan(Operation::Shutdown, &simple(), &Cluster::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has no StatefulSet in namespace `ns`"),
        "{error}"
    );
}

/// Tenant `b`'s installation `app`, deployed in the same namespace.
fn deployed_by_b() -> Cluster {
    let mut cluster = Cluster::default();
    let (desired, replicas) = mk_desired(&simple());
    let b = Tenant::new("b", "c").unwrap();
    let desired: Vec<Component> = desired
        .into_iter()
        .map(|mut component| {
            let record = OwnerRecord::new(&b, "app", component.id()).to_string();
            component
                .object
                .metadata_mut()
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(labels::OWNER.into(), record);
            component
        })
        .collect();
    let plan = diff(Operation::Deploy, &b, "app", "ns", &desired, &[], replicas).unwrap();
    cluster.apply(&plan);
    cluster
}

#[test]
fn another_tenants_installation_is_never_changed_or_deleted() {
    let cluster = deployed_by_b();
    assert_eq!(cluster.objects.len(), 5);
    for op in [
        Operation::Deploy,
        Operation::Undeploy,
        Operation::Shutdown,
        Operation::Restart,
    ] {
        let error = plan(op, &simple(), &cluster).unwrap_err();
        let PlanError::NotOwned(unowned) = &error else {
            panic!("{op}: {error}");
        };
        let expected = if op == Operation::Deploy || op == Operation::Undeploy {
            5
        } else {
            1
        };
        assert_eq!(unowned.len(), expected, "{op}: {error}");
        assert!(
            error
                .to_string()
                .contains("StatefulSet/app (owned by tenant `b/c`, installation `app`)"),
            "{op}: {error}"
        );
    }
    let drift = verify(
        &tenant(),
        "app",
        &mk_desired(&simple()).0,
        &cluster.observed(),
        false,
    );
    assert!(
        drift.iter().all(|d| d.kind == DriftKind::Unowned),
        "{drift:?}"
    );
}

#[test]
fn a_referenced_object_with_copied_labels_or_record_survives_a_deploy() {
    let web = |extra: Value| {
        let mut config = vec![
            json!({"type": "image", "name": "nginx"}),
            json!({"type": "file", "path": "/gen", "filename": "x", "content": "1"}),
            json!({"type": "file", "path": "/shared", "filename": "y", "name": "web-shared", "key": "y"}),
        ];
        config.extend(extra.as_array().cloned().unwrap_or_default());
        json!({"name": "app", "k8sNamespace": "ns", "config": config})
    };
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &web(json!([])), &cluster).unwrap());
    // Someone creates `web-shared` by copying a generated ConfigMap's labels
    // (and its owner record, which names the generated ConfigMap).
    let generated = cluster.objects[&ComponentId::new(Kind::ConfigMap, "vantiq-app-configmap-0")]
        .owner_record
        .clone();
    assert!(generated.is_some());
    cluster.put(Kind::ConfigMap, "web-shared", Some("app"), generated);
    cluster.put(Kind::Secret, "labels-only", Some("app"), None);
    let before = cluster.clone();
    for data in [
        web(json!([])),
        web(json!([{"type": "label", "name": "tier", "value": "x"}])),
    ] {
        let plan = plan(Operation::Deploy, &data, &before).unwrap();
        for step in &plan.steps {
            assert!(
                step.component.name != "web-shared" && step.component.name != "labels-only",
                "{step:?}"
            );
        }
    }
    // Undeploy deletes what is ours, and leaves the copy alone; labels alone
    // from before owner records stop it, naming them.
    let error = plan(Operation::Undeploy, &web(json!([])), &before).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("Secret/labels-only (this installation's labels from before owner records"),
        "{error}"
    );
    let mut cluster = before.clone();
    cluster
        .objects
        .remove(&ComponentId::new(Kind::Secret, "labels-only"));
    let undeploy = plan(Operation::Undeploy, &web(json!([])), &cluster).unwrap();
    assert!(
        undeploy
            .steps
            .iter()
            .all(|s| s.component.name != "web-shared")
    );
    cluster.apply(&undeploy);
    assert_eq!(
        cluster.objects.keys().collect::<Vec<_>>(),
        [&ComponentId::new(Kind::ConfigMap, "web-shared")]
    );
}

#[test]
fn objects_from_before_owner_records_are_adopted_at_generated_names_only() {
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    // What the release before owner records left: the two labels, no record.
    for object in cluster.objects.values_mut() {
        object.owner_record = None;
    }
    cluster.put(Kind::ConfigMap, "vantiq-app-configmap-9", Some("app"), None);
    for op in [Operation::Undeploy, Operation::Shutdown] {
        assert!(
            matches!(plan(op, &simple(), &cluster), Err(PlanError::NotOwned(_))),
            "{op}"
        );
    }
    let adopt = plan(Operation::Deploy, &simple(), &cluster).unwrap();
    assert_eq!(
        actions(&adopt),
        [
            "update ConfigMap/vantiq-app-configmap-0",
            "update Service/app",
            "update StatefulSet/app",
            "update Service/vantiq-app-service-0",
            "update Ingress/vantiq-app-ingress-0",
        ]
    );
    assert!(adopt.steps.iter().all(|s| s.reason.starts_with("adopted")));
    cluster.apply(&adopt);
    let ours = ComponentId::new(Kind::StatefulSet, "app");
    assert!(cluster.objects[&ours].owner_record.is_some());
    assert!(
        plan(Operation::Deploy, &simple(), &cluster)
            .unwrap()
            .is_noop()
    );
    // Not at a generated name: neither adopted nor deleted.
    let stray = ComponentId::new(Kind::ConfigMap, "vantiq-app-configmap-9");
    assert_eq!(cluster.objects[&stray].owner_record, None);
    let error = plan(Operation::Undeploy, &simple(), &cluster).unwrap_err();
    assert!(error.to_string().contains(&stray.to_string()), "{error}");
}

/// Issue 14: the Secret of `asSecret` variables was `vantiq-<name>-envsecret`
/// and is now a `vantiq-<name>-secret-<n>`. The next deploy creates the new
/// one and updates the StatefulSet before it deletes the old one, whether the
/// old one carries an owner record or only the labels from before them; an
/// old-style Secret of another installation or tenant is left alone.
#[test]
fn a_deploy_moves_the_former_env_secret_to_its_new_name() {
    let with_var = || {
        let mut data = simple();
        data["config"].as_array_mut().unwrap().push(
            json!({"type": "environmentVariable", "name": "TOKEN", "value": "t", "asSecret": true}),
        );
        data
    };
    for recorded in [true, false] {
        let mut cluster = Cluster::default();
        cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
        let old = "vantiq-app-envsecret";
        let old_record = recorded
            .then(|| record(&tenant(), "app", Kind::Secret, old))
            .flatten();
        cluster.put(Kind::Secret, old, Some("app"), old_record);
        let other_tenant = Tenant::new("someone-else", "c").unwrap();
        cluster.put(
            Kind::Secret,
            "vantiq-web-envsecret",
            Some("web"),
            record(&other_tenant, "web", Kind::Secret, "vantiq-web-envsecret"),
        );
        let moved = plan(Operation::Deploy, &with_var(), &cluster).unwrap();
        let writes: Vec<String> = moved
            .writes()
            .map(|s| format!("{} {}", s.action, s.component))
            .collect();
        assert_eq!(
            writes,
            [
                "create Secret/vantiq-app-secret-0",
                "update StatefulSet/app",
                "delete Secret/vantiq-app-envsecret",
            ],
            "recorded: {recorded}"
        );
        cluster.apply(&moved);
        assert!(
            plan(Operation::Deploy, &with_var(), &cluster)
                .unwrap()
                .is_noop()
        );
        assert!(
            cluster
                .objects
                .contains_key(&ComponentId::new(Kind::Secret, "vantiq-web-envsecret"))
        );
    }
    // Another installation's former Secret is never this one's to delete.
    let mut cluster = Cluster::default();
    cluster.apply(&plan(Operation::Deploy, &simple(), &cluster).unwrap());
    cluster.put(Kind::Secret, "vantiq-app-envsecret", Some("web"), None);
    let plan = plan(Operation::Deploy, &with_var(), &cluster).unwrap();
    assert!(
        plan.writes().all(|s| s.action != Action::Delete),
        "{:?}",
        actions(&plan)
    );
}

#[test]
fn the_plan_carries_its_tenant_and_its_id_depends_on_it() {
    let (desired, replicas) = mk_desired(&simple());
    let a = diff(
        Operation::Deploy,
        &tenant(),
        "app",
        "ns",
        &desired,
        &[],
        replicas,
    )
    .unwrap();
    let other = Tenant::new("b", "c").unwrap();
    let b = diff(
        Operation::Deploy,
        &other,
        "app",
        "ns",
        &desired,
        &[],
        replicas,
    )
    .unwrap();
    assert_eq!(a.tenant, Some(tenant()));
    assert_eq!(b.tenant, Some(other));
    assert_ne!(a.id, b.id);
}
