//! What the planner's answer means for the workitem and the installation
//! record: a pure function from `(operation, ExecuteResponse | error)` to an
//! [`Outcome`].
//!
//! ```text
//! Ok(response), no error, healthy  → Complete(report)   completeWorkitem + installation record
//! Ok(response) with Ack.error      → Fail(FAILED)       the executor's message, pod problems named
//! Err(INVALID_ARGUMENT)            → Fail(INVALID)      the request is wrong; nothing was written
//! Err(UNAVAILABLE, ABORTED, ...)   → Retry              released, tried again (bounded by attempts)
//! Err(anything else)               → Fail(FAILED)       the planner's message
//! ```
//!
//! The report holds only what the worker knows; the control plane adds what
//! it knows itself (`configSpec`, `installationDate`, `installedBy`) in the
//! same transaction as the completion.

use k8sworker_client::protocol::{
    InstallationReport, InstallationStatus, MAX_PLAN_STEPS, PlanStep,
};
use k8sworker_core::plan::Operation;
use k8sworker_proto::v1 as pb;
use serde_json::{Map, Value, json};
use tonic::Code;

/// How a failed workitem is marked: `FAILED` or `INVALID`.
pub use k8sworker_client::protocol::FailStatus;

/// What to tell the control plane.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `completeWorkitem` with these installation properties.
    Complete(InstallationReport),
    /// `failWorkitem` with this status and message.
    Fail {
        /// `FAILED` or `INVALID`.
        status: FailStatus,
        /// What failed and where.
        message: String,
    },
    /// `releaseWorkitem`: a passing problem; the workitem is tried again.
    Retry {
        /// Why, for the log.
        message: String,
    },
}

/// The steps of the plan the planner answered with, for the operation
/// history (`completeWorkitem`'s and `failWorkitem`'s `steps`): action
/// (`create`, `update`, `delete`, `scale`, `noop`), kind, name and reason.
/// `None` when the answer has no plan (an error before planning). Held to
/// what the control plane accepts (at most [`MAX_PLAN_STEPS`] steps, each
/// string at most [`MAX_PARAM_BYTES`] bytes), so the history never costs
/// the completion.
pub fn plan_steps(response: &pb::ExecuteResponse) -> Option<Vec<PlanStep>> {
    let plan = response.plan.as_ref()?;
    let cut = |text: &str| {
        let mut end = text.len().min(MAX_PARAM_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    Some(
        plan.steps
            .iter()
            .take(MAX_PLAN_STEPS)
            .map(|step| {
                let action = match pb::Action::try_from(step.action) {
                    Ok(pb::Action::Create) => "create",
                    Ok(pb::Action::Update) => "update",
                    Ok(pb::Action::Delete) => "delete",
                    Ok(pb::Action::Scale) => "scale",
                    Ok(pb::Action::Noop) => "noop",
                    Ok(pb::Action::Unspecified) | Err(_) => "unspecified",
                };
                let component = step.component.clone().unwrap_or_default();
                PlanStep {
                    action: action.to_owned(),
                    kind: cut(&component.kind),
                    name: cut(&component.name),
                    reason: cut(&step.reason),
                }
            })
            .collect(),
    )
}

/// The trace id (32 hex digits) of a W3C `traceparent`.
pub fn trace_id(traceparent: &str) -> Option<String> {
    traceparent
        .split('-')
        .nth(1)
        .filter(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && id.bytes().any(|b| b != b'0')
        })
        .map(str::to_owned)
}

/// The planner call's error, as a code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerError {
    /// The gRPC status code.
    pub code: Code,
    /// The planner's message.
    pub message: String,
}

impl From<tonic::Status> for PlannerError {
    fn from(status: tonic::Status) -> Self {
        PlannerError {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Codes that say "not now" rather than "no": the planner or an executor is
/// unreachable, restarting, or gave up re-planning against a busy cluster.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Unknown
    )
}

/// Decides the outcome of one attempt. `attempts` counts this one;
/// transient errors are retried until `max_attempts`.
pub fn decide(
    operation: Operation,
    result: Result<&pb::ExecuteResponse, &PlannerError>,
    attempts: u32,
    max_attempts: u32,
) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(error) => return decide_error(operation, error, attempts, max_attempts),
    };
    if let Some(ack) = &response.ack
        && ack.error.is_some()
    {
        return fail(failure_message(ack));
    }
    match operation {
        Operation::Deploy | Operation::Restart | Operation::Shutdown => {
            applied(operation, response)
        }
        Operation::Verify => Outcome::Complete(verified(response)),
        Operation::Undeploy | Operation::FetchLogs => {
            Outcome::Complete(InstallationReport::default())
        }
    }
}

/// `FAILED` with `message`, never empty: the control plane refuses an
/// empty one, and a failure nobody can read is not reported.
fn fail(message: String) -> Outcome {
    Outcome::Fail {
        status: FailStatus::Failed,
        message: if message.trim().is_empty() {
            "the operation failed and no step said why".to_owned()
        } else {
            message
        },
    }
}

/// The longest failure message the control plane accepts, in bytes
/// (`failWorkitem`'s `message`, like every string parameter of the worker
/// protocol).
pub use k8sworker_client::protocol::MAX_PARAM_BYTES;

/// `message` as `failWorkitem` accepts it: non-empty, and cut at a
/// character boundary to at most `limit` bytes, ending in `…` when cut (the
/// start of an API server's refusal names the object and the reason).
pub fn reportable(message: &str, limit: usize) -> String {
    const MARK: &str = "…";
    let message = message.trim();
    if message.is_empty() {
        return "the operation failed and no step said why".to_owned();
    }
    if message.len() <= limit {
        return message.to_owned();
    }
    let mut end = limit.saturating_sub(MARK.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &message[..end])
}

/// The short failure message sent when the control plane refused the full
/// one (a server with a lower limit than [`MAX_PARAM_BYTES`]): what
/// happened, and the start of the original message.
pub fn fallback_message(message: &str) -> String {
    reportable(
        &format!("the operation failed (its full report was refused): {message}"),
        FALLBACK_BYTES,
    )
}

/// Length of [`fallback_message`], in bytes.
const FALLBACK_BYTES: usize = 256;

fn decide_error(
    operation: Operation,
    error: &PlannerError,
    attempts: u32,
    max_attempts: u32,
) -> Outcome {
    match error.code {
        Code::InvalidArgument => Outcome::Fail {
            status: FailStatus::Invalid,
            message: error.message.clone(),
        },
        // Nothing of the installation is left: what undeploy wants.
        Code::NotFound if operation == Operation::Undeploy => {
            Outcome::Complete(InstallationReport::default())
        }
        code if is_transient(code) && attempts < max_attempts => Outcome::Retry {
            message: format!("{code:?}: {}", error.message),
        },
        code if is_transient(code) => fail(format!(
            "gave up after {attempts} attempts; the last failed with {code:?}: {}",
            error.message
        )),
        code if error.message.trim().is_empty() => {
            fail(format!("the planner failed with {code:?} and no message"))
        }
        _ => fail(error.message.clone()),
    }
}

/// The executor's error, with the message of the step that failed (when
/// the error does not already say it) and every unhealthy pod and its
/// reason; never empty.
fn failure_message(ack: &pb::Ack) -> String {
    let mut message = ack
        .error
        .as_ref()
        .map(|e| e.message.trim().to_owned())
        .unwrap_or_default();
    let failed = ack
        .steps
        .iter()
        .filter(|s| s.outcome == pb::Outcome::Failed as i32)
        .map(|s| s.message.trim())
        .find(|m| !m.is_empty() && !message.contains(m));
    if let Some(step) = failed {
        message = if message.is_empty() {
            step.to_owned()
        } else {
            format!("{message}: {step}")
        };
    }
    if message.is_empty() {
        message = format!(
            "plan {} failed and the executor gave no reason",
            ack.plan_id
        );
    }
    let problems = ack
        .health
        .as_ref()
        .map(|h| h.problems.as_slice())
        .unwrap_or_default();
    let unnamed: Vec<String> = problems
        .iter()
        .filter(|p| !message.contains(&p.pod) || !message.contains(&p.reason))
        .map(|p| format!("pod {}: {}: {}", p.pod, p.reason, p.message))
        .collect();
    if !unnamed.is_empty() {
        message = format!("{message} ({})", unnamed.join("; "));
    }
    message
}

fn health_state(health: Option<&pb::Health>) -> pb::HealthState {
    health
        .and_then(|h| pb::HealthState::try_from(h.state).ok())
        .unwrap_or(pb::HealthState::Unspecified)
}

/// deploy, restart, shutdown: the Ack's health decides the status.
fn applied(operation: Operation, response: &pb::ExecuteResponse) -> Outcome {
    let Some(ack) = &response.ack else {
        return fail("the planner answered without the executor's acknowledgement".into());
    };
    let health = ack.health.clone().unwrap_or_default();
    let (desired, ready) = (health.desired_replicas, health.ready_replicas);
    let (status, state) = match (operation, health_state(Some(&health))) {
        (Operation::Shutdown, pb::HealthState::Stopped) => (
            InstallationStatus::Stopped,
            "Stopped: scaled to 0 replicas".to_owned(),
        ),
        (Operation::Shutdown, _) => {
            return fail(format!(
                "the installation did not stop: {ready} replica(s) still ready"
            ));
        }
        (_, pb::HealthState::Ready) => (
            InstallationStatus::Running,
            format!("Running: {ready}/{desired} replicas ready"),
        ),
        (_, pb::HealthState::Stopped) => (
            InstallationStatus::Stopped,
            "Stopped: 0 replicas requested".to_owned(),
        ),
        (_, state) => {
            let problems: Vec<String> = health
                .problems
                .iter()
                .map(|p| format!("pod {}: {}: {}", p.pod, p.reason, p.message))
                .collect();
            let mut message = format!(
                "the installation is not ready ({}): {ready}/{desired} replicas ready",
                state.as_str_name()
            );
            if !problems.is_empty() {
                message = format!("{message}; {}", problems.join("; "));
            }
            return fail(message);
        }
    };
    let mut report = associated(&response.components);
    report.installation_status = Some(status);
    report.k8s_state = Some(state);
    if operation != Operation::Shutdown {
        let replicas = response
            .plan
            .as_ref()
            .map_or(desired, |plan| plan.desired_replicas);
        report.replica_count = Some(replicas);
    }
    let mut info = installation_info(&response.components);
    if let Some(plan) = &response.plan {
        let count = |outcome: pb::Outcome| {
            ack.steps
                .iter()
                .filter(|s| s.outcome == outcome as i32)
                .count()
        };
        info.insert(
            "lastPlan".into(),
            json!({
                "id": plan.id,
                "digest": plan.digest,
                "operation": operation.as_str(),
                "steps": plan.steps.len(),
                "applied": count(pb::Outcome::Applied),
                "unchanged": count(pb::Outcome::Unchanged),
            }),
        );
    }
    info.insert("desiredReplicas".into(), json!(desired));
    info.insert("readyReplicas".into(), json!(ready));
    if !health.replaced.is_empty() {
        info.insert("replacedPods".into(), replaced_pods(&health.replaced));
    }
    report.k8s_installation_info = Some(info);
    Outcome::Complete(report)
}

/// The pods a deploy replaced because its rollout was stuck on them (each
/// of a previous revision, failing to start), for the installation record.
fn replaced_pods(replaced: &[pb::PodReplacement]) -> Value {
    replaced
        .iter()
        .map(|r| {
            json!({
                "pod": r.pod,
                "reason": r.reason,
                "message": r.message,
                "revision": r.revision,
                "updateRevision": r.update_revision,
            })
        })
        .collect()
}

/// verify: drift makes the installation `DAMAGED`, naming every difference.
fn verified(response: &pb::ExecuteResponse) -> InstallationReport {
    let mut report = associated(&response.components);
    let statefulset = response
        .components
        .iter()
        .find(|c| c.r#ref.as_ref().is_some_and(|r| r.kind == "StatefulSet"));
    let replicas = statefulset.and_then(|s| s.replicas).unwrap_or_default();
    let ready = statefulset
        .and_then(|s| s.ready_replicas)
        .unwrap_or_default();
    let (status, state) = if !response.drift.is_empty() {
        let drift: Vec<&str> = response.drift.iter().map(|d| d.message.as_str()).collect();
        (
            InstallationStatus::Damaged,
            format!("Damaged: {}", drift.join("; ")),
        )
    } else if statefulset.is_some() && replicas == 0 {
        (
            InstallationStatus::Stopped,
            "Verified: stopped, 0 replicas".to_owned(),
        )
    } else {
        (
            InstallationStatus::Running,
            format!("Verified: {ready}/{replicas} replicas ready"),
        )
    };
    report.installation_status = Some(status);
    report.k8s_state = Some(state);
    let mut info = installation_info(&response.components);
    info.insert("desiredReplicas".into(), json!(replicas));
    info.insert("readyReplicas".into(), json!(ready));
    info.insert(
        "drift".into(),
        Value::Array(
            response
                .drift
                .iter()
                .map(|d| {
                    let component = d.component.clone().unwrap_or_default();
                    json!({"kind": d.kind, "component": format!("{}/{}", component.kind, component.name), "message": d.message})
                })
                .collect(),
        ),
    );
    report.k8s_installation_info = Some(info);
    report
}

/// `k8sAssociated*` lists and the StatefulSet's UID as the identifier. Each
/// list is in name order, numbered names by their number
/// (`vantiq-<name>-secret-2` before `vantiq-<name>-secret-10`).
fn associated(components: &[pb::ObservedComponent]) -> InstallationReport {
    let names = |kind: &str| {
        let mut names: Vec<String> = components
            .iter()
            .filter_map(|c| c.r#ref.as_ref())
            .filter(|r| r.kind == kind)
            .map(|r| r.name.clone())
            .collect();
        names.sort_unstable_by(|a, b| numbered(a).cmp(&numbered(b)));
        names.dedup();
        Some(names)
    };
    InstallationReport {
        k8s_associated_services: names("Service"),
        k8s_associated_ingresses: names("Ingress"),
        k8s_associated_config_maps: names("ConfigMap"),
        k8s_associated_secrets: names("Secret"),
        k8s_installation_identifier: components
            .iter()
            .find(|c| c.r#ref.as_ref().is_some_and(|r| r.kind == "StatefulSet"))
            .map(|statefulset| statefulset.uid.clone()),
        ..InstallationReport::default()
    }
}

/// A name as `(stem, number, name)` for ordering: the number when the name
/// ends in `-<n>`.
fn numbered(name: &str) -> (&str, Option<u64>, &str) {
    match name.rsplit_once('-') {
        Some((stem, number)) if number.parse::<u64>().is_ok() => (stem, number.parse().ok(), name),
        _ => (name, None, name),
    }
}

fn installation_info(components: &[pb::ObservedComponent]) -> Map<String, Value> {
    let mut info = Map::new();
    if let Some(reference) = components
        .iter()
        .filter_map(|c| c.r#ref.as_ref())
        .find(|r| r.kind == "StatefulSet")
    {
        info.insert("k8sNamespace".into(), json!(reference.namespace));
        info.insert("statefulSet".into(), json!(reference.name));
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn component(kind: &str, name: &str) -> pb::ObservedComponent {
        pb::ObservedComponent {
            r#ref: Some(pb::ComponentRef {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: "team-a".into(),
                name: name.into(),
            }),
            uid: format!("uid-{name}"),
            ..Default::default()
        }
    }

    #[test]
    fn the_plans_steps_and_the_trace_id_are_reported_for_the_history() {
        let step = |action: pb::Action, kind: &str, name: &str, reason: &str| pb::Step {
            action: action.into(),
            component: Some(pb::ComponentRef {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: "team-a".into(),
                name: name.into(),
            }),
            reason: reason.into(),
            ..Default::default()
        };
        let response = pb::ExecuteResponse {
            plan: Some(pb::Plan {
                steps: vec![
                    step(
                        pb::Action::Create,
                        "Secret",
                        "vantiq-jdbc-secret-0",
                        "missing",
                    ),
                    step(pb::Action::Update, "StatefulSet", "jdbc", "image changed"),
                    step(pb::Action::Noop, "Service", "jdbc", "as desired"),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let steps = plan_steps(&response).expect("a plan");
        assert_eq!(
            steps,
            vec![
                PlanStep {
                    action: "create".into(),
                    kind: "Secret".into(),
                    name: "vantiq-jdbc-secret-0".into(),
                    reason: "missing".into(),
                },
                PlanStep {
                    action: "update".into(),
                    kind: "StatefulSet".into(),
                    name: "jdbc".into(),
                    reason: "image changed".into(),
                },
                PlanStep {
                    action: "noop".into(),
                    kind: "Service".into(),
                    name: "jdbc".into(),
                    reason: "as desired".into(),
                },
            ]
        );
        assert_eq!(plan_steps(&pb::ExecuteResponse::default()), None);
        let long = pb::ExecuteResponse {
            plan: Some(pb::Plan {
                steps: vec![
                    step(
                        pb::Action::Create,
                        "Secret",
                        "s",
                        &"é".repeat(MAX_PARAM_BYTES)
                    );
                    MAX_PLAN_STEPS + 5
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let held = plan_steps(&long).unwrap();
        assert_eq!(held.len(), MAX_PLAN_STEPS);
        assert!(
            held.iter()
                .all(|s| s.reason.len() <= MAX_PARAM_BYTES && s.reason.len() > MAX_PARAM_BYTES - 2)
        );
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }

    fn components(replicas: i32, ready: i32) -> Vec<pb::ObservedComponent> {
        let mut sts = component("StatefulSet", "jdbc");
        sts.replicas = Some(replicas);
        sts.ready_replicas = Some(ready);
        vec![
            component("ConfigMap", "vantiq-jdbc-configmap-0"),
            component("Secret", "vantiq-jdbc-secret-10"),
            component("Secret", "vantiq-jdbc-secret-2"),
            component("Service", "jdbc"),
            component("Service", "vantiq-jdbc-service-0"),
            component("Ingress", "vantiq-jdbc-ingress-0"),
            sts,
        ]
    }

    fn mk_response(state: pb::HealthState, desired: i32, ready: i32) -> pb::ExecuteResponse {
        pb::ExecuteResponse {
            plan: Some(pb::Plan {
                id: "plan-1".into(),
                digest: "d1".into(),
                desired_replicas: desired,
                steps: vec![pb::Step::default(), pb::Step::default()],
                ..Default::default()
            }),
            ack: Some(pb::Ack {
                plan_id: "plan-1".into(),
                steps: vec![
                    pb::StepOutcome {
                        outcome: pb::Outcome::Applied as i32,
                        ..Default::default()
                    },
                    pb::StepOutcome {
                        outcome: pb::Outcome::Unchanged as i32,
                        ..Default::default()
                    },
                ],
                health: Some(pb::Health {
                    state: state as i32,
                    desired_replicas: desired,
                    ready_replicas: ready,
                    problems: Vec::new(),
                    replaced: Vec::new(),
                }),
                error: None,
            }),
            components: components(desired, ready),
            ..Default::default()
        }
    }

    /// The report as the control plane receives it.
    fn complete(outcome: Outcome) -> Map<String, Value> {
        match outcome {
            Outcome::Complete(report) => report.to_map(),
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    #[test]
    fn a_ready_deploy_is_running_with_its_objects_listed() {
        let response = mk_response(pb::HealthState::Ready, 2, 2);
        let report = complete(decide(Operation::Deploy, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "RUNNING");
        assert_eq!(report["k8sState"], "Running: 2/2 replicas ready");
        assert_eq!(report["replicaCount"], 2);
        assert_eq!(report["k8sInstallationIdentifier"], "uid-jdbc");
        assert_eq!(
            report["k8sAssociatedServices"],
            json!(["jdbc", "vantiq-jdbc-service-0"])
        );
        assert_eq!(
            report["k8sAssociatedIngresses"],
            json!(["vantiq-jdbc-ingress-0"])
        );
        assert_eq!(
            report["k8sAssociatedConfigMaps"],
            json!(["vantiq-jdbc-configmap-0"])
        );
        assert_eq!(
            report["k8sAssociatedSecrets"],
            json!(["vantiq-jdbc-secret-2", "vantiq-jdbc-secret-10"])
        );
        let info = &report["k8sInstallationInfo"];
        assert_eq!(info["k8sNamespace"], "team-a");
        assert_eq!(info["statefulSet"], "jdbc");
        assert_eq!(info["lastPlan"]["applied"], 1);
        assert_eq!(info["lastPlan"]["unchanged"], 1);
    }

    /// Issue 12, case 6: the record says which pods a deploy replaced and why.
    #[test]
    fn a_deploy_that_replaced_stuck_pods_names_them() {
        let mut response = mk_response(pb::HealthState::Ready, 3, 3);
        let report = complete(decide(Operation::Deploy, Ok(&response), 1, 5));
        assert!(
            !report["k8sInstallationInfo"]
                .as_object()
                .unwrap()
                .contains_key("replacedPods")
        );
        let health = response.ack.as_mut().unwrap().health.as_mut().unwrap();
        health.replaced.push(pb::PodReplacement {
            pod: "jdbc-2".into(),
            uid: "u2".into(),
            revision: "jdbc-r2".into(),
            update_revision: "jdbc-r3".into(),
            reason: "ImagePullBackOff".into(),
            message: "container jdbc: Back-off pulling image".into(),
        });
        let report = complete(decide(Operation::Deploy, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "RUNNING");
        assert_eq!(
            report["k8sInstallationInfo"]["replacedPods"],
            json!([{
                "pod": "jdbc-2",
                "reason": "ImagePullBackOff",
                "message": "container jdbc: Back-off pulling image",
                "revision": "jdbc-r2",
                "updateRevision": "jdbc-r3",
            }])
        );
    }

    #[test]
    fn restart_is_running_and_shutdown_is_stopped() {
        let response = mk_response(pb::HealthState::Ready, 3, 3);
        let report = complete(decide(Operation::Restart, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "RUNNING");
        assert_eq!(report["replicaCount"], 3);

        let response = mk_response(pb::HealthState::Stopped, 0, 0);
        let report = complete(decide(Operation::Shutdown, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "STOPPED");
        assert_eq!(report["k8sState"], "Stopped: scaled to 0 replicas");
        assert!(
            !report.contains_key("replicaCount"),
            "shutdown keeps the configured replica count for restart"
        );
    }

    #[test]
    fn an_executor_error_fails_naming_the_pods() {
        let mut response = mk_response(pb::HealthState::Degraded, 1, 0);
        let ack = response.ack.as_mut().unwrap();
        ack.error = Some(pb::Error {
            code: pb::ErrorCode::Unhealthy as i32,
            message: "installation jdbc is unhealthy".into(),
            components: Vec::new(),
        });
        ack.health.as_mut().unwrap().problems.push(pb::PodProblem {
            pod: "jdbc-0".into(),
            reason: "ImagePullBackOff".into(),
            message: "no such image".into(),
        });
        assert_eq!(
            decide(Operation::Deploy, Ok(&response), 1, 5),
            Outcome::Fail {
                status: FailStatus::Failed,
                message:
                    "installation jdbc is unhealthy (pod jdbc-0: ImagePullBackOff: no such image)"
                        .into()
            }
        );
    }

    /// Issue 12, case 10: a failure always reaches the report with the
    /// message of the step that failed, within the control plane's limit.
    #[test]
    fn a_failure_message_is_never_empty_and_names_the_failed_step() {
        let refused = "Kubernetes API call to apply StatefulSet team-a/redis failed: \
                       StatefulSet.apps \"redis\" is invalid: spec: Forbidden: updates to \
                       statefulset spec for fields other than 'replicas' are forbidden";
        let mut response = mk_response(pb::HealthState::Ready, 1, 1);
        let ack = response.ack.as_mut().unwrap();
        ack.steps[1].outcome = pb::Outcome::Failed as i32;
        ack.steps[1].message = refused.into();
        // The error without a message: the step's message is the report.
        ack.error = Some(pb::Error {
            code: pb::ErrorCode::KubernetesApi as i32,
            message: String::new(),
            components: Vec::new(),
        });
        let message =
            |response: &pb::ExecuteResponse| match decide(Operation::Deploy, Ok(response), 1, 5) {
                Outcome::Fail { status, message } => {
                    assert_eq!(status, FailStatus::Failed);
                    message
                }
                other => panic!("{other:?}"),
            };
        assert_eq!(message(&response), refused);
        // The error saying it already: not twice.
        let ack = response.ack.as_mut().unwrap();
        ack.error.as_mut().unwrap().message = refused.into();
        assert_eq!(message(&response), refused);
        // Nobody saying anything: still a message.
        let ack = response.ack.as_mut().unwrap();
        ack.error.as_mut().unwrap().message = " ".into();
        ack.steps[1].message.clear();
        assert_eq!(
            message(&response),
            "plan plan-1 failed and the executor gave no reason"
        );
        // A planner error without a message.
        let Outcome::Fail { message, .. } = decide(
            Operation::Deploy,
            Err(&PlannerError {
                code: Code::Internal,
                message: String::new(),
            }),
            1,
            5,
        ) else {
            panic!("fails")
        };
        assert_eq!(message, "the planner failed with Internal and no message");
    }

    #[test]
    fn a_report_is_cut_to_the_limit_and_never_empty() {
        let long = format!("StatefulSet redis refused: {}", "é".repeat(2000));
        let cut = reportable(&long, MAX_PARAM_BYTES);
        assert!(cut.len() <= MAX_PARAM_BYTES, "{}", cut.len());
        assert!(cut.starts_with("StatefulSet redis refused: é"));
        assert!(cut.ends_with('…'));
        assert_eq!(reportable("short", MAX_PARAM_BYTES), "short");
        assert_eq!(
            reportable("  ", MAX_PARAM_BYTES),
            "the operation failed and no step said why"
        );
        let fallback = fallback_message(&long);
        assert!(fallback.len() <= 256 && !fallback.is_empty(), "{fallback}");
        assert!(fallback.contains("StatefulSet redis refused"), "{fallback}");
    }

    #[test]
    fn a_deploy_that_is_not_ready_fails() {
        let response = mk_response(pb::HealthState::Progressing, 2, 1);
        let Outcome::Fail { status, message } = decide(Operation::Deploy, Ok(&response), 1, 5)
        else {
            panic!("expected a failure")
        };
        assert_eq!(status, FailStatus::Failed);
        assert!(message.contains("1/2 replicas ready"), "{message}");
    }

    #[test]
    fn verify_reports_drift_as_damaged_and_names_it() {
        let mut response = pb::ExecuteResponse {
            components: components(2, 2),
            ..Default::default()
        };
        let report = complete(decide(Operation::Verify, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "RUNNING");

        response.drift.push(pb::Drift {
            component: Some(pb::ComponentRef {
                kind: "ConfigMap".into(),
                name: "vantiq-jdbc-configmap-0".into(),
                ..Default::default()
            }),
            kind: "missing".into(),
            message: "ConfigMap vantiq-jdbc-configmap-0 is missing".into(),
        });
        let report = complete(decide(Operation::Verify, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "DAMAGED");
        assert_eq!(
            report["k8sState"],
            "Damaged: ConfigMap vantiq-jdbc-configmap-0 is missing"
        );
        assert_eq!(
            report["k8sInstallationInfo"]["drift"][0]["component"],
            "ConfigMap/vantiq-jdbc-configmap-0"
        );
    }

    #[test]
    fn verify_of_a_stopped_installation_stays_stopped() {
        let response = pb::ExecuteResponse {
            components: components(0, 0),
            ..Default::default()
        };
        let report = complete(decide(Operation::Verify, Ok(&response), 1, 5));
        assert_eq!(report["installationStatus"], "STOPPED");
    }

    #[test]
    fn undeploy_and_fetch_logs_complete_without_a_report() {
        let response = pb::ExecuteResponse::default();
        assert_eq!(
            decide(Operation::Undeploy, Ok(&response), 1, 5),
            Outcome::Complete(InstallationReport::default())
        );
        assert_eq!(
            decide(Operation::FetchLogs, Ok(&response), 1, 5),
            Outcome::Complete(InstallationReport::default())
        );
        let gone = PlannerError {
            code: Code::NotFound,
            message: "no StatefulSet".into(),
        };
        assert_eq!(
            decide(Operation::Undeploy, Err(&gone), 1, 5),
            Outcome::Complete(InstallationReport::default())
        );
    }

    #[test]
    fn planner_errors_map_to_invalid_failed_or_retry() {
        let error = |code, message: &str| PlannerError {
            code,
            message: message.into(),
        };
        assert_eq!(
            decide(
                Operation::Deploy,
                Err(&error(
                    Code::InvalidArgument,
                    "config[0] (image).name: is required"
                )),
                1,
                5
            ),
            Outcome::Fail {
                status: FailStatus::Invalid,
                message: "config[0] (image).name: is required".into()
            }
        );
        assert_eq!(
            decide(
                Operation::Deploy,
                Err(&error(Code::FailedPrecondition, "no executor is installed")),
                1,
                5
            ),
            Outcome::Fail {
                status: FailStatus::Failed,
                message: "no executor is installed".into()
            }
        );
        assert_eq!(
            decide(
                Operation::Shutdown,
                Err(&error(Code::NotFound, "has no StatefulSet")),
                1,
                5
            ),
            Outcome::Fail {
                status: FailStatus::Failed,
                message: "has no StatefulSet".into()
            }
        );
        assert_eq!(
            decide(
                Operation::Deploy,
                Err(&error(Code::Unavailable, "connection refused")),
                4,
                5
            ),
            Outcome::Retry {
                message: "Unavailable: connection refused".into()
            }
        );
        let Outcome::Fail { status, message } = decide(
            Operation::Deploy,
            Err(&error(Code::Unavailable, "connection refused")),
            5,
            5,
        ) else {
            panic!("the last attempt fails")
        };
        assert_eq!(status, FailStatus::Failed);
        assert!(message.starts_with("gave up after 5 attempts"), "{message}");
    }
}
