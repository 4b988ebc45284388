//! Checking a plan before anything is sent to Kubernetes.
//!
//! [`validate`] turns the wire [`Plan`] into [`CheckedStep`]s or refuses it:
//! wrong namespace first (so a foreign plan costs no API call at all), then
//! every step's kind, identity, precondition and object. ([`admit`], called
//! before it, refuses a plan of a tenant the operator does not allow.) The
//! objects a plan writes must carry the installation's ownership labels and
//! the owner record naming the plan's tenant, installation and the object
//! itself, so the executor never creates something it would later refuse to
//! update or delete, nor something another tenant could claim, and
//! must pass the executor's [`Policy`] (the core's: Pod Security Standards
//! baseline, no system service account, no externalIPs, reserved keys, …),
//! so that a compromised planner or network path cannot escalate: every
//! violation of every object is named, and nothing is sent to Kubernetes.
//! Pure: no I/O, unit-tested with tiny `mk_*` builders.

use std::collections::{BTreeSet, HashSet};

use k8sworker_core::component::ComponentId;
use k8sworker_core::labels;
use k8sworker_core::managed::Handover;
use k8sworker_core::owner::{OwnerRecord, Tenant};
use k8sworker_core::policy::{self, Policy};
use k8sworker_proto::v1::{Action, ComponentRef, Plan, Step, precondition};
use serde_json::Value;

use crate::{Error, error::Problem, kinds::Kind};

/// The state a step was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// No precondition (a NOOP may come without one): nothing is read.
    Unchecked,
    /// The object must not exist.
    MustNotExist,
    /// The object must still be this exact version.
    Version {
        /// `metadata.uid` as observed.
        uid: String,
        /// `metadata.resourceVersion` as observed.
        resource_version: String,
    },
}

/// A step that passed validation, ready to be checked against the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedStep {
    /// Position of the step in the plan.
    pub index: u32,
    /// What the step does (never `ACTION_UNSPECIFIED`).
    pub action: Action,
    /// The object's kind, one the executor manages.
    pub kind: Kind,
    /// The object it acts on, in the executor's namespace.
    pub component: ComponentRef,
    /// The state the step was computed from.
    pub expectation: Expectation,
    /// CREATE and UPDATE: the object to apply, namespace set, and for UPDATE
    /// the expected `resourceVersion` in its metadata so that the API server
    /// refuses the write atomically if the object changed.
    pub object: Option<Value>,
    /// SCALE: the replica count.
    pub replicas: Option<i32>,
    /// UPDATE: the object's `managedFields` with other managers' fields
    /// inside subtrees the object no longer has moved to k8sworker
    /// ([`k8sworker_core::managed::handover`]), set by the precondition
    /// check; the write sends it first so that the apply removes those
    /// subtrees whole.
    pub handover: Option<Handover>,
}

/// Validates `plan` for an executor serving `own_namespace` under `policy`.
///
/// # Errors
/// [`Error::WrongNamespace`] for a plan or object of another namespace,
/// [`Error::Invalid`] for the first malformed step, [`Error::Forbidden`]
/// with every policy violation of every object the plan writes.
pub fn validate(
    plan: &Plan,
    own_namespace: &str,
    policy: &Policy,
) -> Result<Vec<CheckedStep>, Error> {
    if plan.namespace != own_namespace {
        return Err(Error::WrongNamespace {
            requested: plan.namespace.clone(),
            own: own_namespace.to_string(),
        });
    }
    if plan.id.is_empty() {
        return Err(Error::invalid("plan has no id"));
    }
    if plan.installation.is_empty() {
        return Err(Error::invalid("plan has no installation name"));
    }
    let tenant = plan_tenant(plan).ok_or_else(|| Error::invalid("plan has no valid tenant"))?;
    if plan.desired_replicas < 0 {
        return Err(Error::invalid(format!(
            "desired_replicas is {}, must be 0 or more",
            plan.desired_replicas
        )));
    }
    let mut written = HashSet::new();
    let mut checked = Vec::with_capacity(plan.steps.len());
    let mut forbidden = Vec::new();
    for (index, step) in plan.steps.iter().enumerate() {
        let step = validate_step(plan, &tenant, index as u32, step)?;
        if let Some(object) = &step.object {
            forbidden.extend(violations(policy, &step, object));
        }
        if step.action != Action::Noop {
            let key = (
                step.kind,
                step.component.namespace.clone(),
                step.component.name.clone(),
            );
            if !written.insert(key) {
                return Err(Error::invalid_component(
                    &step.component,
                    "more than one write step for the same object; \
                     a plan changes each object at most once",
                ));
            }
        }
        checked.push(step);
    }
    if !forbidden.is_empty() {
        return Err(Error::Forbidden(forbidden));
    }
    Ok(checked)
}

/// The policy's verdict on the object a CREATE or UPDATE applies: read
/// losslessly (a field the typed object would drop is itself a violation),
/// then checked.
fn violations(policy: &Policy, step: &CheckedStep, object: &Value) -> Vec<Problem> {
    let found = match policy::decode(step.kind, object) {
        Ok(typed) => policy.check(&typed),
        Err(violation) => vec![violation],
    };
    found
        .into_iter()
        .map(|violation| Problem {
            component: step.component.clone(),
            detail: if violation.field.is_empty() {
                format!("{}; {}", violation.message, violation.control)
            } else {
                format!(
                    "{}: {}; {}",
                    violation.field, violation.message, violation.control
                )
            },
        })
        .collect()
}

/// The plan's tenant, when it names a valid one.
pub fn plan_tenant(plan: &Plan) -> Option<Tenant> {
    let tenant = plan.tenant.as_ref()?;
    Tenant::new(tenant.vantiq_namespace.clone(), tenant.cluster.clone()).ok()
}

/// Admits the plan's tenant: it must be one of `allowed` (the operator's
/// `--allowed-tenant` list; none configured admits no plan at all).
///
/// # Errors
/// [`Error::TenantNotAllowed`], before any API call.
pub fn admit(plan: &Plan, namespace: &str, allowed: &BTreeSet<Tenant>) -> Result<Tenant, Error> {
    match plan_tenant(plan) {
        Some(tenant) if allowed.contains(&tenant) => Ok(tenant),
        other => Err(Error::TenantNotAllowed {
            tenant: other.map_or_else(
                || "no tenant".to_owned(),
                |tenant| format!("tenant {:?}", tenant.to_string()),
            ),
            namespace: namespace.to_owned(),
            allowed: if allowed.is_empty() {
                "no tenant (set --allowed-tenant)".to_owned()
            } else {
                allowed
                    .iter()
                    .map(|t| format!("{:?}", t.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        }),
    }
}

fn validate_step(
    plan: &Plan,
    tenant: &Tenant,
    index: u32,
    step: &Step,
) -> Result<CheckedStep, Error> {
    let Some(component) = step.component.clone() else {
        return Err(Error::invalid(format!("step {index} has no component")));
    };
    let kind = Kind::from_type(&component.api_version, &component.kind)
        .filter(|kind| kind.is_managed())
        .ok_or_else(|| {
            Error::invalid_component(
                &component,
                format!(
                    "kind {} {} is not one the executor manages \
                     (ConfigMap, Secret, Service, StatefulSet, Ingress)",
                    component.api_version, component.kind
                ),
            )
        })?;
    let mut component = component;
    if component.namespace.is_empty() {
        component.namespace = plan.namespace.clone();
    } else if component.namespace != plan.namespace {
        return Err(Error::WrongNamespace {
            requested: component.namespace.clone(),
            own: plan.namespace.clone(),
        });
    }
    if component.name.is_empty() {
        return Err(Error::invalid(format!("step {index} has no object name")));
    }
    let action = Action::try_from(step.action)
        .ok()
        .filter(|action| *action != Action::Unspecified)
        .ok_or_else(|| {
            Error::invalid_component(&component, format!("unknown action {}", step.action))
        })?;
    let expectation = expectation(step);
    match (action, &expectation) {
        (Action::Create, Expectation::MustNotExist)
        | (Action::Update | Action::Delete | Action::Scale, Expectation::Version { .. })
        | (Action::Noop, Expectation::Version { .. } | Expectation::Unchecked) => {}
        (action, expectation) => {
            return Err(Error::invalid_component(
                &component,
                format!(
                    "{} needs {}, the step has {expectation:?}",
                    action.as_str_name(),
                    match action {
                        Action::Create => "a must-not-exist precondition",
                        Action::Noop => "an expected-version precondition or none",
                        _ => "an expected uid and resourceVersion",
                    }
                ),
            ));
        }
    }
    if let Expectation::Version {
        uid,
        resource_version,
    } = &expectation
        && (uid.is_empty() || resource_version.is_empty())
    {
        return Err(Error::invalid_component(
            &component,
            "expected-version precondition without uid or resourceVersion",
        ));
    }

    let object = match action {
        Action::Create | Action::Update => Some(checked_object(
            plan,
            tenant,
            kind,
            &component,
            &step.object_json,
            &expectation,
        )?),
        _ => None,
    };
    let replicas = match action {
        Action::Scale => {
            if kind != Kind::StatefulSet {
                return Err(Error::invalid_component(
                    &component,
                    "only a StatefulSet can be scaled",
                ));
            }
            match step.replicas {
                Some(replicas) if replicas >= 0 => Some(replicas),
                other => {
                    return Err(Error::invalid_component(
                        &component,
                        format!("SCALE needs replicas >= 0, got {other:?}"),
                    ));
                }
            }
        }
        _ => None,
    };
    Ok(CheckedStep {
        index,
        action,
        kind,
        component,
        expectation,
        object,
        replicas,
        handover: None,
    })
}

fn expectation(step: &Step) -> Expectation {
    match step
        .precondition
        .as_ref()
        .and_then(|precondition| precondition.kind.as_ref())
    {
        None => Expectation::Unchecked,
        Some(precondition::Kind::MustNotExist(_)) => Expectation::MustNotExist,
        Some(precondition::Kind::Expected(expected)) => Expectation::Version {
            uid: expected.uid.clone(),
            resource_version: expected.resource_version.clone(),
        },
    }
}

/// Parses and checks the object of a CREATE or UPDATE. The object's content
/// (Secret data included) never appears in an error message.
fn checked_object(
    plan: &Plan,
    tenant: &Tenant,
    kind: Kind,
    component: &ComponentRef,
    json: &[u8],
    expectation: &Expectation,
) -> Result<Value, Error> {
    let mut object: Value = serde_json::from_slice(json).map_err(|error| {
        Error::invalid_component(
            component,
            format!(
                "object is not valid JSON (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;
    let Some(fields) = object.as_object_mut() else {
        return Err(Error::invalid_component(
            component,
            "object is not a JSON object",
        ));
    };
    let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default();
    if field("apiVersion") != component.api_version || field("kind") != component.kind {
        return Err(Error::invalid_component(
            component,
            format!(
                "object is {} {}, the step names {} {}",
                field("apiVersion"),
                field("kind"),
                component.api_version,
                component.kind
            ),
        ));
    }
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(Error::invalid_component(
            component,
            "metadata is not an object",
        ));
    };
    let name = metadata.get("name").and_then(Value::as_str);
    if name != Some(component.name.as_str()) {
        return Err(Error::invalid_component(
            component,
            format!(
                "object is named {name:?}, the step names {:?}",
                component.name
            ),
        ));
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        None | Some("") => {}
        Some(namespace) if namespace == component.namespace => {}
        Some(namespace) => {
            return Err(Error::WrongNamespace {
                requested: namespace.to_string(),
                own: component.namespace.clone(),
            });
        }
    }
    let label = |key: &str| {
        metadata
            .get("labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
    };
    if label(labels::MANAGED_BY) != Some(labels::MANAGER)
        || label(labels::INSTALLATION) != Some(plan.installation.as_str())
    {
        return Err(Error::invalid_component(
            component,
            format!(
                "object must carry the labels {}={} and {}={}",
                labels::MANAGED_BY,
                labels::MANAGER,
                labels::INSTALLATION,
                plan.installation
            ),
        ));
    }
    let record = OwnerRecord::new(
        tenant,
        &plan.installation,
        ComponentId::new(kind, component.name.clone()),
    )
    .to_string();
    let found = metadata
        .get("annotations")
        .and_then(|annotations| annotations.get(labels::OWNER))
        .and_then(Value::as_str);
    if found != Some(record.as_str()) {
        return Err(Error::invalid_component(
            component,
            format!(
                "object must carry the annotation {}={record} (its owner: the plan's tenant and installation, and the object itself)",
                labels::OWNER
            ),
        ));
    }
    metadata.insert(
        "namespace".into(),
        Value::String(component.namespace.clone()),
    );
    for server_owned in ["uid", "creationTimestamp", "managedFields", "generation"] {
        metadata.remove(server_owned);
    }
    match expectation {
        Expectation::Version {
            resource_version, ..
        } => {
            metadata.insert(
                "resourceVersion".into(),
                Value::String(resource_version.clone()),
            );
        }
        _ => {
            metadata.remove("resourceVersion");
        }
    }
    fields.remove("status");
    Ok(object)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8sworker_proto::v1::{ErrorCode, ExpectedVersion, MustNotExist, Precondition};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    pub(crate) fn mk_ref(api_version: &str, kind: &str, name: &str) -> ComponentRef {
        ComponentRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: "ns-a".into(),
            name: name.into(),
        }
    }

    pub(crate) fn mk_config_map(name: &str, installation: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {
                    labels::MANAGED_BY: labels::MANAGER,
                    labels::INSTALLATION: installation,
                },
            },
            "data": {"a.txt": "hello"},
        })
    }

    fn mk_expected(uid: &str, rv: &str) -> Option<Precondition> {
        Some(Precondition {
            kind: Some(precondition::Kind::Expected(ExpectedVersion {
                uid: uid.into(),
                resource_version: rv.into(),
            })),
        })
    }

    fn mk_must_not_exist() -> Option<Precondition> {
        Some(Precondition {
            kind: Some(precondition::Kind::MustNotExist(MustNotExist {})),
        })
    }

    /// The tests' tenant.
    pub(crate) fn mk_tenant() -> Tenant {
        Tenant::new("acme", "c1").unwrap()
    }

    /// A CREATE of `object`; an object with an installation label gets the
    /// owner record of [`mk_tenant`] and that installation, as render writes.
    pub(crate) fn mk_create(object: &Value) -> Step {
        let mut object = object.clone();
        if let (Some(installation), Some(kind)) = (
            object["metadata"]["labels"][labels::INSTALLATION].as_str(),
            object["kind"].as_str().and_then(Kind::parse),
        ) {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let record = OwnerRecord::new(&mk_tenant(), installation, ComponentId::new(kind, name));
            object["metadata"]["annotations"][labels::OWNER] = json!(record.to_string());
        }
        let object = &object;
        let component = mk_ref(
            object["apiVersion"].as_str().unwrap(),
            object["kind"].as_str().unwrap(),
            object["metadata"]["name"].as_str().unwrap(),
        );
        Step {
            action: Action::Create as i32,
            component: Some(component),
            precondition: mk_must_not_exist(),
            object_json: serde_json::to_vec(object).unwrap(),
            replicas: None,
            reason: "missing".into(),
        }
    }

    fn mk_update(object: &Value, uid: &str, rv: &str) -> Step {
        Step {
            action: Action::Update as i32,
            precondition: mk_expected(uid, rv),
            ..mk_create(object)
        }
    }

    fn mk_scale(name: &str, replicas: i32) -> Step {
        Step {
            action: Action::Scale as i32,
            component: Some(mk_ref("apps/v1", "StatefulSet", name)),
            precondition: mk_expected("u1", "7"),
            object_json: Vec::new(),
            replicas: Some(replicas),
            reason: "shutdown".into(),
        }
    }

    pub(crate) fn mk_plan(steps: Vec<Step>) -> Plan {
        Plan {
            id: "plan-1".into(),
            digest: "d1".into(),
            installation: "inst".into(),
            namespace: "ns-a".into(),
            operation: 0,
            steps,
            desired_replicas: 1,
            tenant: Some(k8sworker_proto::v1::Tenant {
                vantiq_namespace: "acme".into(),
                cluster: "c1".into(),
            }),
        }
    }

    fn invalid_message(result: Result<Vec<CheckedStep>, Error>) -> String {
        match result {
            Err(Error::Invalid { message, .. }) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn plan_for_another_namespace_is_refused_first() {
        let mut plan = mk_plan(vec![]);
        plan.namespace = "ns-b".into();
        plan.id = String::new(); // would be invalid too, but the namespace comes first
        assert!(matches!(
            validate(&plan, "ns-a", &Policy::default()),
            Err(Error::WrongNamespace { requested, own }) if requested == "ns-b" && own == "ns-a"
        ));
    }

    #[test]
    fn step_or_object_in_another_namespace_is_refused() {
        let mut step = mk_create(&mk_config_map("c", "inst"));
        step.component.as_mut().unwrap().namespace = "ns-b".into();
        assert!(matches!(
            validate(&mk_plan(vec![step]), "ns-a", &Policy::default()),
            Err(Error::WrongNamespace { .. })
        ));

        let mut object = mk_config_map("c", "inst");
        object["metadata"]["namespace"] = json!("ns-b");
        assert!(matches!(
            validate(
                &mk_plan(vec![mk_create(&object)]),
                "ns-a",
                &Policy::default()
            ),
            Err(Error::WrongNamespace { .. })
        ));
    }

    #[test]
    fn create_gets_namespace_and_loses_server_fields() {
        let mut object = mk_config_map("c", "inst");
        object["metadata"]["resourceVersion"] = json!("99");
        object["metadata"]["uid"] = json!("old");
        let steps = validate(
            &mk_plan(vec![mk_create(&object)]),
            "ns-a",
            &Policy::default(),
        )
        .unwrap();
        let applied = steps[0].object.as_ref().unwrap();
        assert_eq!(applied["metadata"]["namespace"], json!("ns-a"));
        assert_eq!(applied["metadata"].get("resourceVersion"), None);
        assert_eq!(applied["metadata"].get("uid"), None);
        assert_eq!(steps[0].expectation, Expectation::MustNotExist);
    }

    #[test]
    fn update_carries_the_expected_resource_version() {
        let steps = validate(
            &mk_plan(vec![mk_update(&mk_config_map("c", "inst"), "u1", "41")]),
            "ns-a",
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(
            steps[0].object.as_ref().unwrap()["metadata"]["resourceVersion"],
            json!("41")
        );
        assert_eq!(
            steps[0].expectation,
            Expectation::Version {
                uid: "u1".into(),
                resource_version: "41".into()
            }
        );
    }

    #[test]
    fn objects_without_our_labels_are_refused() {
        let mut object = mk_config_map("c", "inst");
        object["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(labels::MANAGED_BY);
        let message = invalid_message(validate(
            &mk_plan(vec![mk_create(&object)]),
            "ns-a",
            &Policy::default(),
        ));
        assert!(message.contains(labels::MANAGED_BY), "{message}");

        let other = mk_config_map("c", "someone-else");
        invalid_message(validate(
            &mk_plan(vec![mk_create(&other)]),
            "ns-a",
            &Policy::default(),
        ));
    }

    #[test]
    fn unmanaged_kinds_are_refused() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let message = invalid_message(validate(
            &mk_plan(vec![mk_create(&pod)]),
            "ns-a",
            &Policy::default(),
        ));
        assert!(
            message.contains("not one the executor manages"),
            "{message}"
        );
        let claim =
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"}});
        invalid_message(validate(
            &mk_plan(vec![mk_create(&claim)]),
            "ns-a",
            &Policy::default(),
        ));
    }

    #[test]
    fn object_must_match_the_step_identity() {
        let mut step = mk_create(&mk_config_map("c", "inst"));
        step.component.as_mut().unwrap().name = "other".into();
        let message = invalid_message(validate(&mk_plan(vec![step]), "ns-a", &Policy::default()));
        assert!(message.contains("named"), "{message}");
    }

    #[test]
    fn preconditions_must_fit_the_action() {
        let mut create = mk_create(&mk_config_map("c", "inst"));
        create.precondition = mk_expected("u", "1");
        invalid_message(validate(&mk_plan(vec![create]), "ns-a", &Policy::default()));

        let mut update = mk_update(&mk_config_map("c", "inst"), "u", "1");
        update.precondition = mk_must_not_exist();
        invalid_message(validate(&mk_plan(vec![update]), "ns-a", &Policy::default()));

        let no_rv = mk_update(&mk_config_map("c", "inst"), "u", "");
        invalid_message(validate(&mk_plan(vec![no_rv]), "ns-a", &Policy::default()));
    }

    #[test]
    fn secret_content_never_appears_in_errors() {
        let object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"password": "hunter2"}});
        let message = invalid_message(validate(
            &mk_plan(vec![mk_create(&object)]),
            "ns-a",
            &Policy::default(),
        ));
        assert!(!message.contains("hunter2"));
        let mut broken = mk_create(&object);
        broken.object_json = br#"{"stringData": {"password": "hunter2""#.to_vec();
        let message = invalid_message(validate(&mk_plan(vec![broken]), "ns-a", &Policy::default()));
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn scale_needs_a_statefulset_and_a_count() {
        let steps = validate(
            &mk_plan(vec![mk_scale("inst", 0)]),
            "ns-a",
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(steps[0].replicas, Some(0));
        assert_eq!(steps[0].object, None);

        let mut negative = mk_scale("inst", -1);
        negative.replicas = Some(-1);
        invalid_message(validate(
            &mk_plan(vec![negative]),
            "ns-a",
            &Policy::default(),
        ));

        let mut not_sts = mk_scale("inst", 1);
        not_sts.component = Some(mk_ref("v1", "Service", "inst"));
        invalid_message(validate(
            &mk_plan(vec![not_sts]),
            "ns-a",
            &Policy::default(),
        ));
    }

    #[test]
    fn one_write_per_object() {
        let object = mk_config_map("c", "inst");
        let twice = mk_plan(vec![
            mk_update(&object, "u", "1"),
            mk_update(&object, "u", "1"),
        ]);
        let message = invalid_message(validate(&twice, "ns-a", &Policy::default()));
        assert!(message.contains("more than one write"), "{message}");
    }

    fn mk_statefulset(name: &str, installation: &str) -> Value {
        let own = json!({labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: installation});
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "labels": own},
            "spec": {
                "serviceName": name,
                "selector": {"matchLabels": {labels::INSTALLATION: installation}},
                "template": {
                    "metadata": {"labels": own},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "containers": [{"name": name, "image": "nginx"}],
                    },
                },
            },
        })
    }

    fn forbidden(result: Result<Vec<CheckedStep>, Error>) -> Vec<Problem> {
        match result {
            Err(Error::Forbidden(problems)) => problems,
            other => panic!("expected Forbidden, got {other:?}"),
        }
    }

    #[test]
    fn every_policy_violation_of_every_object_is_named() {
        let mut statefulset = mk_statefulset("inst", "inst");
        statefulset["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
            json!({"privileged": true});
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "inst", "labels": {labels::MANAGED_BY: labels::MANAGER, labels::INSTALLATION: "inst"}},
            "spec": {"externalIPs": ["203.0.113.7"], "ports": [{"port": 80}]},
        });
        let plan = mk_plan(vec![
            mk_create(&mk_config_map("c", "inst")),
            mk_create(&service),
            mk_update(&statefulset, "u1", "3"),
        ]);
        let problems = forbidden(validate(&plan, "ns-a", &Policy::default()));
        let named: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| {
                (
                    p.component.kind.as_str(),
                    p.detail.split(':').next().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("Service", "spec.externalIPs"),
                ("StatefulSet", "spec.template.spec.hostNetwork"),
                (
                    "StatefulSet",
                    "spec.template.spec.containers[0].securityContext.privileged"
                ),
            ]
        );
        let error = Error::Forbidden(problems);
        assert_eq!(error.code(), ErrorCode::PolicyViolation);
        let message = error.to_string();
        assert!(
            message.contains("StatefulSet ns-a/inst (spec.template.spec.hostNetwork: "),
            "{message}"
        );
        assert!(
            message.contains("Pod Security Standards, baseline: Host Namespaces"),
            "{message}"
        );
        assert_eq!(error.components().len(), 3);
    }

    #[test]
    fn the_operators_deny_list_and_the_systems_accounts() {
        let mut statefulset = mk_statefulset("inst", "inst");
        statefulset["spec"]["template"]["spec"]["serviceAccountName"] = json!("ci-admin");
        let plan = mk_plan(vec![mk_create(&statefulset)]);
        validate(&plan, "ns-a", &Policy::default()).expect("not denied by default");
        let denying = Policy::default().deny_service_accounts(["ci-admin"]);
        let problems = forbidden(validate(&plan, "ns-a", &denying));
        assert!(
            problems[0]
                .detail
                .starts_with("spec.template.spec.serviceAccountName: `ci-admin` is denied"),
            "{problems:?}"
        );

        statefulset["spec"]["template"]["spec"]["serviceAccountName"] = json!("k8sworker-executor");
        let problems = forbidden(validate(
            &mk_plan(vec![mk_create(&statefulset)]),
            "ns-a",
            &Policy::default(),
        ));
        assert!(
            problems[0]
                .detail
                .contains("`k8sworker-executor` is k8sworker's own service account"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_field_the_policy_cannot_see_is_refused() {
        let mut statefulset = mk_statefulset("inst", "inst");
        statefulset["spec"]["template"]["spec"]["hostUsersAndMore"] = json!(true);
        let problems = forbidden(validate(
            &mk_plan(vec![mk_create(&statefulset)]),
            "ns-a",
            &Policy::default(),
        ));
        assert!(
            problems[0]
                .detail
                .starts_with("spec.template.spec.hostUsersAndMore: is not a field"),
            "{problems:?}"
        );
    }

    #[test]
    fn noop_may_come_without_precondition() {
        let noop = Step {
            action: Action::Noop as i32,
            component: Some(mk_ref("v1", "Service", "svc")),
            precondition: None,
            object_json: Vec::new(),
            replicas: None,
            reason: "unchanged".into(),
        };
        let steps = validate(&mk_plan(vec![noop]), "ns-a", &Policy::default()).unwrap();
        assert_eq!(steps[0].expectation, Expectation::Unchecked);
    }

    #[test]
    fn only_an_allowed_tenant_is_admitted() {
        let plan = mk_plan(vec![mk_create(&mk_config_map("c", "inst"))]);
        let allowed: BTreeSet<Tenant> = [mk_tenant()].into();
        assert_eq!(admit(&plan, "ns-a", &allowed).unwrap(), mk_tenant());
        let refused = |plan: &Plan, allowed: &BTreeSet<Tenant>| match admit(plan, "ns-a", allowed) {
            Err(error @ Error::TenantNotAllowed { .. }) => error.to_string(),
            other => panic!("expected TenantNotAllowed, got {other:?}"),
        };
        let message = refused(&plan, &BTreeSet::new());
        assert!(message.contains("allows no tenant"), "{message}");
        let other: BTreeSet<Tenant> = [Tenant::new("other", "c1").unwrap()].into();
        let message = refused(&plan, &other);
        assert!(message.contains("plan of tenant \"acme/c1\""), "{message}");
        let mut none = plan.clone();
        none.tenant = None;
        assert!(refused(&none, &allowed).contains("plan of no tenant"));
        let mut bad = plan;
        bad.tenant = Some(k8sworker_proto::v1::Tenant {
            vantiq_namespace: "acme/c1".into(),
            cluster: String::new(),
        });
        refused(&bad, &allowed);
        let status = tonic::Status::from(Error::TenantNotAllowed {
            tenant: "x".into(),
            namespace: "ns-a".into(),
            allowed: "y".into(),
        });
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn every_written_object_records_the_plans_tenant_and_itself() {
        let good = mk_create(&mk_config_map("c", "inst"));
        validate(&mk_plan(vec![good.clone()]), "ns-a", &Policy::default()).unwrap();
        let with_record = |record: &str| {
            let mut object: Value = serde_json::from_slice(&good.object_json).unwrap();
            object["metadata"]["annotations"][labels::OWNER] = json!(record);
            Step {
                object_json: serde_json::to_vec(&object).unwrap(),
                ..good.clone()
            }
        };
        for record in [
            "other/c1/inst/ConfigMap/c",
            "acme/c1/inst/ConfigMap/elsewhere",
            "acme/c1/inst/Secret/c",
            "acme/c1/other/ConfigMap/c",
            "",
        ] {
            let message = invalid_message(validate(
                &mk_plan(vec![with_record(record)]),
                "ns-a",
                &Policy::default(),
            ));
            assert!(message.contains("acme/c1/inst/ConfigMap/c"), "{message}");
        }
        let mut no_tenant = mk_plan(vec![good]);
        no_tenant.tenant = None;
        assert!(
            invalid_message(validate(&no_tenant, "ns-a", &Policy::default())).contains("tenant")
        );
    }
}
