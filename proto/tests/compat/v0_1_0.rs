//! What release v0.1.0 sent over each hop: realistic messages of every type
//! that crosses one, in both directions, with every config-entry kind, step
//! kind, precondition, outcome, health state, error code and operation.
//!
//! Frozen: the bytes in `golden/v0.1.0/` were encoded from these values, and
//! the current code must decode them back to exactly these values. Every
//! literal ends in `..Default::default()` so that a field added later (which
//! v0.1.0 did not send) leaves these values, and the check, as they are.

#![allow(clippy::needless_update)]

use std::collections::HashMap;

use k8sworker_proto::v1::{
    Ack, Action, Ancillaries, AnnotationEntry, ApplyEvent, ApplyRequest, ClusterContext,
    ComponentRef, ConfigEntry, DesiredComponent, Drift, EnvironmentVariableEntry, Error, ErrorCode,
    ExecuteRequest, ExecuteResponse, ExpectedVersion, FetchLogsRequest, FetchLogsResponse,
    FileEntry, HardAffinityEntry, Health, HealthState, HostAliasEntry, ImageEntry,
    InboundPortEntry, InstallationRequest, LabelEntry, MustNotExist, ObserveRequest,
    ObserveResponse, ObservedComponent, Operation, Outcome, PersistentVolumeRefEntry, Plan,
    PlanRequest, PlanResponse, PodLog, PodProblem, Precondition, ProbeEntry, RenderRequest,
    RenderResponse, ResourceQuantities, Step, StepOutcome, apply_event, config_entry, precondition,
};

use crate::{Samples, samples};

const NAMESPACE: &str = "connectors";
const INSTALLATION: &str = "camelconn";

/// Every message type of the release, each with its samples.
pub fn all() -> Vec<Box<dyn Samples>> {
    vec![
        samples("ExecuteRequest", execute_requests()),
        samples("ExecuteResponse", execute_responses()),
        samples("RenderRequest", vec![render_request()]),
        samples("RenderResponse", vec![render_response()]),
        samples("PlanRequest", vec![plan_request()]),
        samples("PlanResponse", vec![plan_response()]),
        samples("ObserveRequest", vec![observe_request()]),
        samples("ObserveResponse", vec![observe_response()]),
        samples("ApplyRequest", apply_requests()),
        samples("ApplyEvent", apply_events()),
        samples("Error", errors()),
        samples("FetchLogsRequest", fetch_logs_requests()),
        samples("FetchLogsResponse", vec![fetch_logs_response()]),
    ]
}

fn entry(entry: config_entry::Entry) -> ConfigEntry {
    ConfigEntry {
        entry: Some(entry),
        ..Default::default()
    }
}

/// An installation with every kind of config entry, and the variants of
/// the entries that have several sources.
fn installation() -> InstallationRequest {
    use config_entry::Entry;
    InstallationRequest {
        name: INSTALLATION.into(),
        k8s_namespace: NAMESPACE.into(),
        config: vec![
            entry(Entry::Image(ImageEntry {
                name: "registry.example.com/vantiq/camel-connector:1.4.2".into(),
                image_pull_secret: Some("registry-pull".into()),
                service_account: Some("connector-runner".into()),
                replica_count: Some(2),
                pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            })),
            entry(Entry::File(FileEntry {
                path: "/opt/vantiq/config".into(),
                filename: Some("application.yaml".into()),
                data_source: Some("configMap".into()),
                content: Some("camel:\n  routes: /opt/vantiq/routes\n".into()),
                ..Default::default()
            })),
            entry(Entry::File(FileEntry {
                path: "/opt/vantiq/tls".into(),
                filename: Some("truststore.jks".into()),
                data_source: Some("secret".into()),
                name: Some("connector-tls".into()),
                key: Some("truststore".into()),
                ..Default::default()
            })),
            entry(Entry::File(FileEntry {
                path: "/opt/vantiq/routes".into(),
                filename: Some("routes.xml".into()),
                resource_type: Some("documents".into()),
                resource_name: Some("camel/routes.xml".into()),
                treat_as_text: Some(true),
                ..Default::default()
            })),
            entry(Entry::InboundPort(InboundPortEntry {
                host: Some("camel.example.com".into()),
                port: 8080,
                protocol: "TCP".into(),
                port_name: Some("http".into()),
                service_type: Some("NodePort".into()),
                service_name: Some("camelconn-http".into()),
                cluster_ip: Some("10.96.0.42".into()),
                ..Default::default()
            })),
            entry(Entry::EnvironmentVariable(EnvironmentVariableEntry {
                name: "VANTIQ_URL".into(),
                value: Some("https://vantiq.example.com".into()),
                ..Default::default()
            })),
            entry(Entry::EnvironmentVariable(EnvironmentVariableEntry {
                name: "VANTIQ_ACCESS_TOKEN".into(),
                value: Some("@secrets(connectorToken)".into()),
                as_secret: Some(true),
                ..Default::default()
            })),
            entry(Entry::EnvironmentVariable(EnvironmentVariableEntry {
                name: "DB_PASSWORD".into(),
                secret_name: Some("db-credentials".into()),
                key: Some("password".into()),
                ..Default::default()
            })),
            entry(Entry::PersistentVolumeRef(PersistentVolumeRefEntry {
                name: "camel-data".into(),
                path: "/var/lib/camel".into(),
                ..Default::default()
            })),
            entry(Entry::Annotation(AnnotationEntry {
                name: "prometheus.io/scrape".into(),
                value: "true".into(),
                target_resource: Some("pod".into()),
                ..Default::default()
            })),
            entry(Entry::Label(LabelEntry {
                name: "team".into(),
                value: "integrations".into(),
                target_resource: Some("statefulset".into()),
                controls_routing: Some(true),
                ..Default::default()
            })),
            entry(Entry::HostAlias(HostAliasEntry {
                name: "db.internal".into(),
                host_ip: "192.0.2.10".into(),
                ..Default::default()
            })),
            entry(Entry::Probe(ProbeEntry {
                probe_type: "readiness".into(),
                request_type: "http".into(),
                initial_delay_seconds: Some(10),
                period_seconds: Some(5),
                timeout_seconds: Some(2),
                success_threshold: Some(1),
                failure_threshold: Some(3),
                port: Some("http".into()),
                path: Some("/healthz".into()),
                headers: HashMap::from([
                    ("Accept".into(), "application/json".into()),
                    ("X-Probe".into(), "k8sworker".into()),
                ]),
                ..Default::default()
            })),
            entry(Entry::Probe(ProbeEntry {
                probe_type: "liveness".into(),
                request_type: "command".into(),
                commands: vec!["/bin/sh".into(), "-c".into(), "test -f /tmp/alive".into()],
                ..Default::default()
            })),
            entry(Entry::ResourceRequest(ResourceQuantities {
                cpu: Some("500m".into()),
                memory: Some("1Gi".into()),
                nvidia_gpu: Some("1".into()),
                ..Default::default()
            })),
            entry(Entry::ResourceLimit(ResourceQuantities {
                cpu: Some("2".into()),
                memory: Some("2Gi".into()),
                nvidia_gpu: Some("1".into()),
                amd_gpu: Some("0".into()),
                ..Default::default()
            })),
            entry(Entry::HardAffinity(HardAffinityEntry {
                key: "topology.kubernetes.io/zone".into(),
                values: vec!["eu-west-1a".into(), "eu-west-1b".into()],
                ..Default::default()
            })),
        ],
        ..Default::default()
    }
}

fn cluster() -> ClusterContext {
    ClusterContext {
        cluster_name: "prod".into(),
        ingress_default_node: "vantiq-prod-node".into(),
        ..Default::default()
    }
}

fn ancillaries() -> Ancillaries {
    Ancillaries {
        secrets: HashMap::from([("connectorToken".into(), "s3cr3t-t0ken".into())]),
        documents: HashMap::from([(
            "camel/routes.xml".into(),
            b"<routes><route id=\"r1\"/></routes>\n".to_vec(),
        )]),
        ..Default::default()
    }
}

fn component(api_version: &str, kind: &str, name: &str) -> ComponentRef {
    ComponentRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: NAMESPACE.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn configmap() -> ComponentRef {
    component("v1", "ConfigMap", "vantiq-camelconn-configmap-0")
}

fn secret() -> ComponentRef {
    component("v1", "Secret", "vantiq-camelconn-secret")
}

fn headless() -> ComponentRef {
    component("v1", "Service", "vantiq-camelconn-headless")
}

fn statefulset() -> ComponentRef {
    component("apps/v1", "StatefulSet", INSTALLATION)
}

fn ingress() -> ComponentRef {
    component(
        "networking.k8s.io/v1",
        "Ingress",
        "vantiq-camelconn-ingress-0",
    )
}

fn configmap_json() -> Vec<u8> {
    br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"vantiq-camelconn-configmap-0","namespace":"connectors","labels":{"app.kubernetes.io/managed-by":"k8sworker","k8sworker.io/installation":"camelconn"},"annotations":{"k8sworker.io/spec-hash":"5f1c0b6e3d2a4f8e9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"}},"data":{"application.yaml":"camel:\n  routes: /opt/vantiq/routes\n"}}"#.to_vec()
}

fn statefulset_json() -> Vec<u8> {
    br#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"camelconn","namespace":"connectors","labels":{"app.kubernetes.io/managed-by":"k8sworker","k8sworker.io/installation":"camelconn"},"annotations":{"k8sworker.io/spec-hash":"9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"},"resourceVersion":"4711"},"spec":{"replicas":2,"serviceName":"vantiq-camelconn-headless","selector":{"matchLabels":{"k8sworker.io/installation":"camelconn"}},"template":{"metadata":{"labels":{"k8sworker.io/installation":"camelconn"},"annotations":{"k8sworker.io/config-hash":"0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"}},"spec":{"containers":[{"name":"camelconn","image":"registry.example.com/vantiq/camel-connector:1.4.2"}]}}}}"#.to_vec()
}

fn must_not_exist() -> Option<Precondition> {
    Some(Precondition {
        kind: Some(precondition::Kind::MustNotExist(MustNotExist {
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn expected(uid: &str, resource_version: &str) -> Option<Precondition> {
    Some(Precondition {
        kind: Some(precondition::Kind::Expected(ExpectedVersion {
            uid: uid.into(),
            resource_version: resource_version.into(),
            ..Default::default()
        })),
        ..Default::default()
    })
}

/// A deploy plan with every step kind and precondition (and a NOOP without
/// one, which the protocol allows).
fn deploy_plan() -> Plan {
    Plan {
        id: "plan-7f3e9a21c4b8".into(),
        digest: "3b2a19f0e8d7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a39281706f5e4d3".into(),
        installation: INSTALLATION.into(),
        namespace: NAMESPACE.into(),
        operation: Operation::Deploy as i32,
        steps: vec![
            Step {
                action: Action::Create as i32,
                component: Some(configmap()),
                precondition: must_not_exist(),
                object_json: configmap_json(),
                reason: "does not exist".into(),
                ..Default::default()
            },
            Step {
                action: Action::Noop as i32,
                component: Some(secret()),
                precondition: expected("6f1d2c3b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", "4702"),
                reason: "unchanged".into(),
                ..Default::default()
            },
            Step {
                action: Action::Noop as i32,
                component: Some(headless()),
                reason: "unchanged".into(),
                ..Default::default()
            },
            Step {
                action: Action::Update as i32,
                component: Some(statefulset()),
                precondition: expected("0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e", "4711"),
                object_json: statefulset_json(),
                reason: "changed".into(),
                ..Default::default()
            },
            Step {
                action: Action::Scale as i32,
                component: Some(statefulset()),
                precondition: expected("0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e", "4711"),
                replicas: Some(2),
                reason: "unchanged, but scaled to 1 instead of 2".into(),
                ..Default::default()
            },
            Step {
                action: Action::Delete as i32,
                component: Some(ingress()),
                precondition: expected("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "4650"),
                reason: "no longer rendered".into(),
                ..Default::default()
            },
        ],
        desired_replicas: 2,
        ..Default::default()
    }
}

fn scale_plan(operation: Operation, replicas: i32) -> Plan {
    Plan {
        id: format!("plan-scale-{replicas}"),
        digest: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
        installation: INSTALLATION.into(),
        namespace: NAMESPACE.into(),
        operation: operation as i32,
        steps: vec![Step {
            action: Action::Scale as i32,
            component: Some(statefulset()),
            precondition: expected("0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e", "4712"),
            replicas: Some(replicas),
            reason: format!("scale to {replicas}"),
            ..Default::default()
        }],
        desired_replicas: replicas,
        ..Default::default()
    }
}

fn undeploy_plan() -> Plan {
    Plan {
        id: "plan-undeploy-c0ffee".into(),
        digest: "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100".into(),
        installation: INSTALLATION.into(),
        namespace: NAMESPACE.into(),
        operation: Operation::Undeploy as i32,
        steps: vec![
            Step {
                action: Action::Delete as i32,
                component: Some(statefulset()),
                precondition: expected("0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e", "4720"),
                reason: "undeploy".into(),
                ..Default::default()
            },
            Step {
                action: Action::Delete as i32,
                component: Some(configmap()),
                precondition: expected("2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f", "4705"),
                reason: "undeploy".into(),
                ..Default::default()
            },
        ],
        desired_replicas: 0,
        ..Default::default()
    }
}

fn health(state: HealthState, desired: i32, ready: i32, problems: Vec<PodProblem>) -> Health {
    Health {
        state: state as i32,
        desired_replicas: desired,
        ready_replicas: ready,
        problems,
        ..Default::default()
    }
}

fn image_pull_backoff() -> PodProblem {
    PodProblem {
        pod: "camelconn-1".into(),
        reason: "ImagePullBackOff".into(),
        message: "container camelconn: Back-off pulling image \"registry.example.com/vantiq/camel-connector:1.4.2\"".into(),
        ..Default::default()
    }
}

fn outcome(
    index: u32,
    component: ComponentRef,
    action: Action,
    outcome: Outcome,
    message: &str,
) -> StepOutcome {
    let written = outcome == Outcome::Applied && action != Action::Delete;
    StepOutcome {
        index,
        component: Some(component),
        action: action as i32,
        outcome: outcome as i32,
        message: message.into(),
        resource_version: if written {
            "4730".into()
        } else {
            String::new()
        },
        uid: if written {
            "0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// The outcomes of the deploy plan when every write succeeds.
fn applied_outcomes() -> Vec<StepOutcome> {
    vec![
        outcome(0, configmap(), Action::Create, Outcome::Applied, "created"),
        outcome(1, secret(), Action::Noop, Outcome::Unchanged, "unchanged"),
        outcome(2, headless(), Action::Noop, Outcome::Unchanged, "unchanged"),
        outcome(
            3,
            statefulset(),
            Action::Update,
            Outcome::Applied,
            "updated",
        ),
        outcome(
            4,
            statefulset(),
            Action::Scale,
            Outcome::Applied,
            "scaled to 2",
        ),
        outcome(5, ingress(), Action::Delete, Outcome::Applied, "deleted"),
    ]
}

/// The outcomes of the deploy plan when the StatefulSet update fails.
fn failed_outcomes() -> Vec<StepOutcome> {
    vec![
        outcome(0, configmap(), Action::Create, Outcome::Applied, "created"),
        outcome(1, secret(), Action::Noop, Outcome::Unchanged, "unchanged"),
        outcome(2, headless(), Action::Noop, Outcome::Unchanged, "unchanged"),
        outcome(
            3,
            statefulset(),
            Action::Update,
            Outcome::Failed,
            "StatefulSet.apps \"camelconn\" is invalid: spec.template.spec.containers[0].image: Required value",
        ),
        outcome(
            4,
            statefulset(),
            Action::Scale,
            Outcome::Skipped,
            "an earlier step failed",
        ),
        outcome(
            5,
            ingress(),
            Action::Delete,
            Outcome::Skipped,
            "an earlier step failed",
        ),
    ]
}

fn error(code: ErrorCode, message: &str, components: Vec<ComponentRef>) -> Error {
    Error {
        code: code as i32,
        message: message.into(),
        components,
        ..Default::default()
    }
}

fn ack_ready() -> Ack {
    Ack {
        plan_id: deploy_plan().id,
        steps: applied_outcomes(),
        health: Some(health(HealthState::Ready, 2, 2, vec![])),
        ..Default::default()
    }
}

fn ack_failed() -> Ack {
    Ack {
        plan_id: deploy_plan().id,
        steps: failed_outcomes(),
        health: Some(health(
            HealthState::Degraded,
            2,
            1,
            vec![image_pull_backoff()],
        )),
        error: Some(error(
            ErrorCode::KubernetesApi,
            "Kubernetes API call to apply StatefulSet connectors/camelconn failed: invalid",
            vec![statefulset()],
        )),
        ..Default::default()
    }
}

fn observed(reference: ComponentRef, uid: &str, resource_version: &str) -> ObservedComponent {
    ObservedComponent {
        r#ref: Some(reference),
        uid: uid.into(),
        resource_version: resource_version.into(),
        spec_hash: "5f1c0b6e3d2a4f8e9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a".into(),
        owner: INSTALLATION.into(),
        ..Default::default()
    }
}

fn observed_components() -> Vec<ObservedComponent> {
    vec![
        observed(configmap(), "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f", "4705"),
        observed(secret(), "6f1d2c3b-0a9e-4d8c-b7a6-5f4e3d2c1b0a", "4702"),
        ObservedComponent {
            replicas: Some(1),
            ready_replicas: Some(1),
            foreign_managers: vec!["kubectl-edit".into(), "kubectl-scale".into()],
            ..observed(
                statefulset(),
                "0b6c7d8e-9f0a-4b1c-8d2e-3f4a5b6c7d8e",
                "4711",
            )
        },
        ObservedComponent {
            spec_hash: String::new(),
            owner: String::new(),
            ..observed(ingress(), "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "4650")
        },
    ]
}

fn execute_request(workitem_id: &str, operation: Operation) -> ExecuteRequest {
    ExecuteRequest {
        workitem_id: workitem_id.into(),
        installation: Some(installation()),
        cluster: Some(cluster()),
        ancillaries: Some(ancillaries()),
        operation: operation as i32,
        ..Default::default()
    }
}

/// Gateway → planner: one workitem of every operation.
fn execute_requests() -> Vec<ExecuteRequest> {
    vec![
        execute_request("wi-0001", Operation::Deploy),
        execute_request("wi-0002", Operation::Undeploy),
        execute_request("wi-0003", Operation::Shutdown),
        execute_request("wi-0004", Operation::Restart),
        execute_request("wi-0005", Operation::Verify),
        ExecuteRequest {
            pod_name: Some("camelconn-0".into()),
            ..execute_request("wi-0006", Operation::FetchLogs)
        },
    ]
}

fn drift(component: Option<ComponentRef>, kind: &str, message: &str) -> Drift {
    Drift {
        component,
        kind: kind.into(),
        message: message.into(),
        ..Default::default()
    }
}

/// Planner → gateway: a deploy that succeeded, one that failed, a verify
/// with every drift kind, and fetched logs.
fn execute_responses() -> Vec<ExecuteResponse> {
    vec![
        ExecuteResponse {
            plan: Some(deploy_plan()),
            ack: Some(ack_ready()),
            components: observed_components(),
            ..Default::default()
        },
        ExecuteResponse {
            plan: Some(deploy_plan()),
            ack: Some(ack_failed()),
            components: observed_components(),
            ..Default::default()
        },
        ExecuteResponse {
            ack: Some(Ack {
                health: Some(health(HealthState::Progressing, 2, 1, vec![])),
                ..Default::default()
            }),
            drift: vec![
                drift(
                    Some(configmap()),
                    "missing",
                    "ConfigMap vantiq-camelconn-configmap-0 is missing",
                ),
                drift(
                    Some(statefulset()),
                    "altered",
                    "StatefulSet camelconn was altered outside k8sworker",
                ),
                drift(
                    Some(ingress()),
                    "unowned",
                    "Ingress vantiq-camelconn-ingress-0 is in the way",
                ),
                drift(
                    Some(statefulset()),
                    "scaled",
                    "StatefulSet camelconn was scaled outside k8sworker",
                ),
                drift(
                    Some(secret()),
                    "extra",
                    "Secret vantiq-camelconn-secret is no longer part of the installation",
                ),
                drift(
                    None,
                    "missing",
                    "referenced Secret db-credentials does not exist",
                ),
            ],
            components: observed_components(),
            ..Default::default()
        },
        ExecuteResponse {
            logs: fetch_logs_response().logs,
            ..Default::default()
        },
    ]
}

fn desired_components() -> Vec<DesiredComponent> {
    vec![
        DesiredComponent {
            r#ref: Some(configmap()),
            object_json: configmap_json(),
            spec_hash: "5f1c0b6e3d2a4f8e9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a".into(),
            ..Default::default()
        },
        DesiredComponent {
            r#ref: Some(statefulset()),
            object_json: statefulset_json(),
            spec_hash: "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b".into(),
            ..Default::default()
        },
    ]
}

fn render_request() -> RenderRequest {
    RenderRequest {
        installation: Some(installation()),
        cluster: Some(cluster()),
        ancillaries: Some(ancillaries()),
        ..Default::default()
    }
}

fn render_response() -> RenderResponse {
    RenderResponse {
        components: desired_components(),
        ..Default::default()
    }
}

fn plan_request() -> PlanRequest {
    PlanRequest {
        installation: Some(installation()),
        cluster: Some(cluster()),
        ancillaries: Some(ancillaries()),
        operation: Operation::Deploy as i32,
        observed: observed_components(),
        ..Default::default()
    }
}

fn plan_response() -> PlanResponse {
    PlanResponse {
        plan: Some(deploy_plan()),
        ..Default::default()
    }
}

/// Planner → executor.
fn observe_request() -> ObserveRequest {
    ObserveRequest {
        namespace: NAMESPACE.into(),
        installation: INSTALLATION.into(),
        names: vec![configmap(), secret(), headless(), statefulset(), ingress()],
        references: vec![
            component("v1", "Secret", "db-credentials"),
            component("v1", "Secret", "connector-tls"),
            component("v1", "PersistentVolumeClaim", "camel-data"),
        ],
        ..Default::default()
    }
}

/// Executor → planner.
fn observe_response() -> ObserveResponse {
    ObserveResponse {
        components: observed_components(),
        existing_references: vec![
            component("v1", "Secret", "connector-tls"),
            component("v1", "PersistentVolumeClaim", "camel-data"),
        ],
        ..Default::default()
    }
}

/// Planner → executor: a deploy waiting for health, the scale plans of
/// shutdown and restart, and an undeploy that does not wait.
fn apply_requests() -> Vec<ApplyRequest> {
    vec![
        ApplyRequest {
            plan: Some(deploy_plan()),
            wait_for_health: true,
            health_timeout_seconds: 300,
            ..Default::default()
        },
        ApplyRequest {
            plan: Some(scale_plan(Operation::Shutdown, 0)),
            wait_for_health: true,
            ..Default::default()
        },
        ApplyRequest {
            plan: Some(scale_plan(Operation::Restart, 2)),
            wait_for_health: true,
            health_timeout_seconds: 600,
            ..Default::default()
        },
        ApplyRequest {
            plan: Some(undeploy_plan()),
            ..Default::default()
        },
    ]
}

fn step_event(outcome: StepOutcome) -> ApplyEvent {
    ApplyEvent {
        event: Some(apply_event::Event::Step(outcome)),
        ..Default::default()
    }
}

fn ack_event(ack: Ack) -> ApplyEvent {
    ApplyEvent {
        event: Some(apply_event::Event::Ack(ack)),
        ..Default::default()
    }
}

/// Executor → planner: the Apply streams of a deploy that succeeded, one
/// whose write failed, and the Acks of shutdown (stopped), restart (timed
/// out while progressing) and undeploy (absent).
fn apply_events() -> Vec<ApplyEvent> {
    let mut events: Vec<ApplyEvent> = applied_outcomes().into_iter().map(step_event).collect();
    events.push(ack_event(ack_ready()));
    events.extend(failed_outcomes().into_iter().map(step_event));
    events.push(ack_event(ack_failed()));
    events.push(ack_event(Ack {
        plan_id: "plan-scale-0".into(),
        steps: vec![outcome(
            0,
            statefulset(),
            Action::Scale,
            Outcome::Applied,
            "scaled to 0",
        )],
        health: Some(health(HealthState::Stopped, 0, 0, vec![])),
        ..Default::default()
    }));
    events.push(ack_event(Ack {
        plan_id: "plan-scale-2".into(),
        steps: vec![outcome(
            0,
            statefulset(),
            Action::Scale,
            Outcome::Applied,
            "scaled to 2",
        )],
        health: Some(health(HealthState::Progressing, 2, 1, vec![])),
        error: Some(error(
            ErrorCode::Timeout,
            "installation \"camelconn\" did not become ready within 600s: 1/2 ready",
            vec![statefulset()],
        )),
        ..Default::default()
    }));
    events.push(ack_event(Ack {
        plan_id: undeploy_plan().id,
        steps: vec![
            outcome(
                0,
                statefulset(),
                Action::Delete,
                Outcome::Applied,
                "deleted",
            ),
            outcome(
                1,
                configmap(),
                Action::Delete,
                Outcome::Unchanged,
                "already gone",
            ),
        ],
        health: Some(health(HealthState::Absent, 0, 0, vec![])),
        ..Default::default()
    }));
    events
}

/// Executor → planner and planner → gateway: the `k8sworker.v1.Error` in a
/// refusal's gRPC status details (and in an Ack), one of every code.
fn errors() -> Vec<Error> {
    vec![
        error(
            ErrorCode::InvalidRequest,
            "invalid request: step 3 has no object name",
            vec![],
        ),
        error(
            ErrorCode::StalePlan,
            "stale plan, nothing written; observe again and re-plan: ConfigMap connectors/vantiq-camelconn-configmap-0 exists",
            vec![configmap()],
        ),
        error(
            ErrorCode::NotOwned,
            "objects exist that k8sworker does not own, nothing written; rename or remove them: Ingress connectors/vantiq-camelconn-ingress-0",
            vec![ingress()],
        ),
        error(
            ErrorCode::WrongNamespace,
            "plan for namespace \"other\" refused: this executor serves namespace \"connectors\" only",
            vec![],
        ),
        error(
            ErrorCode::DeleteAllRefused,
            "the plan would delete every component of camelconn and the operation is deploy",
            vec![configmap(), statefulset()],
        ),
        error(
            ErrorCode::KubernetesApi,
            "Kubernetes API call to patch StatefulSet failed: 500",
            vec![statefulset()],
        ),
        error(
            ErrorCode::Unhealthy,
            "installation \"camelconn\" is unhealthy: pod camelconn-1: ImagePullBackOff",
            vec![statefulset()],
        ),
        error(
            ErrorCode::Timeout,
            "installation \"camelconn\" did not become ready within 300s",
            vec![statefulset()],
        ),
        error(
            ErrorCode::NoExecutor,
            "no executor is configured for namespace \"connectors\"",
            vec![],
        ),
        error(
            ErrorCode::NotFound,
            "installation camelconn does not exist in namespace connectors",
            vec![],
        ),
        error(
            ErrorCode::MissingReference,
            "referenced Secret db-credentials does not exist",
            vec![component("v1", "Secret", "db-credentials")],
        ),
        error(
            ErrorCode::Internal,
            "executor is shutting down; retry against its replacement",
            vec![],
        ),
    ]
}

/// Planner → executor: every pod, and one pod with a cap.
fn fetch_logs_requests() -> Vec<FetchLogsRequest> {
    vec![
        FetchLogsRequest {
            namespace: NAMESPACE.into(),
            installation: INSTALLATION.into(),
            ..Default::default()
        },
        FetchLogsRequest {
            namespace: NAMESPACE.into(),
            installation: INSTALLATION.into(),
            pod_name: Some("camelconn-0".into()),
            limit_bytes: 65_536,
            ..Default::default()
        },
    ]
}

/// Executor → planner.
fn fetch_logs_response() -> FetchLogsResponse {
    FetchLogsResponse {
        logs: vec![
            PodLog {
                pod: "camelconn-0".into(),
                container: "camelconn".into(),
                content: b"2025-01-01T00:00:00Z INFO route r1 started\n".to_vec(),
                truncated: true,
                ..Default::default()
            },
            PodLog {
                pod: "camelconn-1".into(),
                container: "camelconn".into(),
                content: b"k8sworker: log unavailable: container is waiting to start\n".to_vec(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}
