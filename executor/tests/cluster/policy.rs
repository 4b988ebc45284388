//! The executor's policy as the second line: plans the planner would never
//! make (a compromised planner, or anyone who reaches the executor's port),
//! each carrying one escalation, are refused before any API call, naming the
//! object and the field; nothing of them exists afterwards. The same plan
//! unchanged is then applied, so each refusal is the escalation's alone.

use k8sworker_core::plan::Operation;
use k8sworker_core::policy::Policy;
use k8sworker_proto::v1::{self, ErrorCode};
use k8sworker_testsupport::{plans, with_temp_ns};
use serde_json::{Value, json};

use crate::support::{Calls, Fixture, error_of};

/// An attack: which object of the plan to change, how, and the field the
/// refusal must name.
struct Escalation {
    name: &'static str,
    kind: &'static str,
    change: fn(&mut Value),
    field: &'static str,
}

const ESCALATIONS: &[Escalation] = &[
    Escalation {
        name: "privileged",
        kind: "StatefulSet",
        change: |sts| {
            sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                json!(true);
        },
        field: "spec.template.spec.containers[0].securityContext.privileged",
    },
    Escalation {
        name: "hostpath",
        kind: "StatefulSet",
        change: |sts| {
            let pod = &mut sts["spec"]["template"]["spec"];
            pod["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "host-root", "hostPath": {"path": "/"}}));
            pod["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "host-root", "mountPath": "/host"}));
        },
        field: "spec.template.spec.volumes[1].hostPath",
    },
    Escalation {
        name: "hostnetwork",
        kind: "StatefulSet",
        change: |sts| sts["spec"]["template"]["spec"]["hostNetwork"] = json!(true),
        field: "spec.template.spec.hostNetwork",
    },
    Escalation {
        name: "hostpid",
        kind: "StatefulSet",
        change: |sts| sts["spec"]["template"]["spec"]["hostPID"] = json!(true),
        field: "spec.template.spec.hostPID",
    },
    Escalation {
        name: "capability",
        kind: "StatefulSet",
        change: |sts| {
            sts["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
                json!({"add": ["SYS_ADMIN"]});
        },
        field: "spec.template.spec.containers[0].securityContext.capabilities.add[0]",
    },
    Escalation {
        name: "hostport",
        kind: "StatefulSet",
        change: |sts| {
            sts["spec"]["template"]["spec"]["containers"][0]["ports"] =
                json!([{"containerPort": 8080, "hostPort": 80}]);
        },
        field: "spec.template.spec.containers[0].ports[0].hostPort",
    },
    Escalation {
        name: "externalips",
        kind: "Service",
        change: |service| service["spec"]["externalIPs"] = json!(["203.0.113.7"]),
        field: "spec.externalIPs",
    },
    Escalation {
        // The token controller fills such a Secret with a token of the
        // account it names; a pod mounting it would hold the executor's.
        name: "token-secret",
        kind: "Secret",
        change: |secret| {
            secret["type"] = json!("kubernetes.io/service-account-token");
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] =
                json!("k8sworker-executor");
            secret.as_object_mut().unwrap().remove("data");
        },
        field: "type",
    },
    Escalation {
        name: "executor-account",
        kind: "StatefulSet",
        change: |sts| {
            let pod = &mut sts["spec"]["template"]["spec"];
            pod["serviceAccountName"] = json!("k8sworker-executor");
            pod.as_object_mut()
                .unwrap()
                .remove("automountServiceAccountToken");
        },
        field: "spec.template.spec.serviceAccountName",
    },
];

/// `plan` with the object of its `kind` step changed by `change`, under a
/// plan id of its own.
fn forged(plan: &v1::Plan, suffix: &str, kind: &str, change: fn(&mut Value)) -> v1::Plan {
    let mut plan = plan.clone();
    plan.id = format!("{}-{suffix}", plan.id);
    let step = plan
        .steps
        .iter_mut()
        .find(|s| s.component.as_ref().unwrap().kind == kind)
        .unwrap_or_else(|| panic!("the plan has a {kind}"));
    let mut object: Value = serde_json::from_slice(&step.object_json).unwrap();
    change(&mut object);
    step.object_json = serde_json::to_vec(&object).unwrap();
    plan
}

/// Applies `plan`, which must be refused by the policy before any API call,
/// naming `kind`/`name` and `field`; returns the refusal's message.
async fn assert_refused(
    f: &mut Fixture,
    plan: &v1::Plan,
    kind: &str,
    name: &str,
    field: &str,
) -> String {
    let before = f.calls();
    let status = f.apply(plan, true).await.expect_err("refused by policy");
    let calls = Calls::between(&before, &f.calls());
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let error = error_of(&status);
    assert_eq!(error.code, ErrorCode::PolicyViolation as i32, "{error:?}");
    assert!(
        error
            .components
            .iter()
            .any(|c| c.kind == kind && c.name == name),
        "{error:?}"
    );
    let named = format!("{kind} {}/{name} ({field}: ", f.namespace);
    assert!(
        error.message.contains(&named),
        "{named:?} not in {}",
        error.message
    );
    assert_eq!(calls.total(), 0, "no API call at all: {calls:?}");
    assert_eq!(calls.writes(), 0, "{calls:?}");
    error.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn every_escalation_is_refused_before_any_api_call() {
    with_temp_ns("exec-policy", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let request = plans::deploy_request(
            "app",
            &ns,
            1,
            &[json!({"type": "environmentVariable", "name": "TOKEN", "value": "x", "asSecret": true})],
        );
        let plan = f.plan(&request, Operation::Deploy).await;

        for escalation in ESCALATIONS {
            let forged = forged(&plan, escalation.name, escalation.kind, escalation.change);
            let name = match escalation.kind {
                "Secret" => "vantiq-app-secret-0",
                _ => "app",
            };
            let message =
                assert_refused(&mut f, &forged, escalation.kind, name, escalation.field).await;
            eprintln!("{:<18} refused: {message}", escalation.name);
            assert!(
                f.owned("app").await.is_empty(),
                "{}: nothing written",
                escalation.name
            );
            assert!(f.statefulset("app").await.is_none(), "{}", escalation.name);
        }

        // All of them at once: every violation named in one refusal.
        let mut all = plan.clone();
        for escalation in ESCALATIONS {
            all = forged(&all, escalation.name, escalation.kind, escalation.change);
        }
        let message = assert_refused(&mut f, &all, "Service", "app", "spec.externalIPs").await;
        for escalation in ESCALATIONS {
            assert!(
                message.contains(escalation.field),
                "{} not in {message}",
                escalation.field
            );
        }
        assert!(f.owned("app").await.is_empty());

        // The plan as the planner made it is applied: each refusal above was
        // its escalation's alone.
        let before = f.calls();
        let applied = f.apply(&plan, true).await.expect("the planner's own plan");
        assert_eq!(applied.ack.error, None);
        assert!(Calls::between(&before, &f.calls()).writes() > 0);
        let statefulset = f.statefulset("app").await.expect("applied");
        let pod = statefulset.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test cluster (tests/cluster/up.sh)"]
async fn the_operators_deny_list_refuses_what_the_planner_allows() {
    with_temp_ns("exec-deny", |admin, ns| async move {
        let mut f = Fixture::new(admin, ns.clone()).await;
        let mut config = k8sworker_executor::ExecutorConfig::new(ns.clone());
        config.default_health_timeout = std::time::Duration::from_secs(60);
        config.policy = Policy::default().deny_service_accounts(["ci-admin"]);
        config.allowed_tenants = [plans::tenant()].into();
        f.restart_executor_with(config).await;

        // A valid request (the planner knows only the system's accounts)...
        let request = json!({"name": "app", "k8sNamespace": ns, "config": [
            {"type": "image", "name": "registry.example.com/k8sworker/app:1.0", "serviceAccount": "ci-admin"},
        ]});
        let plan = f.plan(&request, Operation::Deploy).await;
        // ...that this executor's operator does not allow.
        let message = assert_refused(
            &mut f,
            &plan,
            "StatefulSet",
            "app",
            "spec.template.spec.serviceAccountName",
        )
        .await;
        assert!(message.contains("`ci-admin` is denied by this executor's operator"), "{message}");
        assert!(f.owned("app").await.is_empty());
    })
    .await;
}
