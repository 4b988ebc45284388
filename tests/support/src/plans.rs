//! Real plans for tests: the executor observes, the planner's pure core
//! renders and diffs, exactly as the planner service does (minus its
//! re-plan loop, so a test can interfere between plan and apply).

use k8sworker_planner::{
    convert,
    diff::{Observed, diff},
    model::InstallationRequest,
    plan::Operation,
    render::{Ancillaries, ClusterContext, render},
    service::references,
};
use k8sworker_proto::v1::{
    Ack, ApplyEvent, ApplyRequest, ObserveRequest, ObserveResponse, Plan, StepOutcome, apply_event,
    executor_client::ExecutorClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// A Vantiq deploy request: `image` (with `replicas`), a file with content
/// (a generated ConfigMap), an environment variable, plus `extra` entries.
pub fn deploy_request(name: &str, namespace: &str, replicas: i64, extra: &[Value]) -> Value {
    let mut config = vec![
        json!({"type": "image", "name": "registry.example.com/k8sworker/app:1.0", "replicaCount": replicas}),
        json!({"type": "file", "path": "/app/conf", "filename": "app.properties", "content": "greeting=hello\n"}),
        json!({"type": "environmentVariable", "name": "MODE", "value": "test"}),
    ];
    config.extend(extra.iter().cloned());
    json!({"name": name, "k8sNamespace": namespace, "config": config})
}

/// The request as the planner reads it; panics on an invalid request.
pub fn installation(request: &Value) -> InstallationRequest {
    InstallationRequest::from_json(request).unwrap_or_else(|e| panic!("invalid request: {e}"))
}

/// Observes through the executor, then renders and diffs: the plan the
/// planner would send for `operation`.
pub async fn plan(
    executor: &mut ExecutorClient<Channel>,
    request: &Value,
    operation: Operation,
) -> Plan {
    let request = installation(request);
    let namespace = request.k8s_namespace.clone();
    let desired = match operation {
        Operation::Deploy | Operation::Verify => render(
            &request,
            &ClusterContext::default(),
            &Ancillaries::default(),
        )
        .unwrap_or_else(|e| panic!("render: {e}")),
        _ => Vec::new(),
    };
    let observed = observe(
        executor,
        &request,
        desired
            .iter()
            .map(|c| convert::component_ref(&c.id(), &namespace))
            .collect(),
    )
    .await;
    let observed: Vec<Observed> = observed
        .components
        .into_iter()
        .map(convert::observed_from_pb)
        .collect::<Result<_, _>>()
        .expect("observed components convert");
    let plan = diff(
        operation,
        &request.name,
        &namespace,
        &desired,
        &observed,
        request.replica_count(),
    )
    .unwrap_or_else(|e| panic!("diff: {e}"));
    convert::plan_to_pb(&plan)
}

/// Observes the installation (with `names` and its references).
pub async fn observe(
    executor: &mut ExecutorClient<Channel>,
    request: &InstallationRequest,
    names: Vec<k8sworker_proto::v1::ComponentRef>,
) -> ObserveResponse {
    let namespace = &request.k8s_namespace;
    executor
        .observe(ObserveRequest {
            namespace: namespace.clone(),
            installation: request.name.clone(),
            names,
            references: references(request)
                .iter()
                .map(|id| convert::component_ref(id, namespace))
                .collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("observe: {e}"))
        .into_inner()
}

/// The streamed step events and the final Ack of one Apply.
#[derive(Debug, Clone)]
pub struct Applied {
    pub steps: Vec<StepOutcome>,
    pub ack: Ack,
}

/// Applies `plan`; a refusal before any write is the gRPC status.
pub async fn apply(
    executor: &mut ExecutorClient<Channel>,
    plan: &Plan,
    wait_for_health: bool,
) -> Result<Applied, tonic::Status> {
    let mut stream = executor
        .apply(ApplyRequest {
            plan: Some(plan.clone()),
            wait_for_health,
            health_timeout_seconds: 60,
        })
        .await?
        .into_inner();
    let mut steps = Vec::new();
    while let Some(ApplyEvent { event }) = stream.message().await? {
        match event {
            Some(apply_event::Event::Step(step)) => steps.push(step),
            Some(apply_event::Event::Ack(ack)) => return Ok(Applied { steps, ack }),
            None => {}
        }
    }
    Err(tonic::Status::aborted(
        "the apply stream ended without an Ack",
    ))
}
