//! Real plans for tests: the executor observes, the core renders and diffs,
//! through the same [`GrpcExecutor`] and [`Work`] the planner's `execute`
//! uses. [`plan`] stops before the apply, so that a test can interfere
//! between plan and apply; [`execute`] runs the planner's own loop.

use std::time::Duration;

use k8sworker_core::operation::references;
use k8sworker_core::owner::Tenant;
use k8sworker_core::render::{Ancillaries, ClusterContext};
use k8sworker_core::{model::InstallationRequest, operation::Work, plan::Operation};
use k8sworker_planner::execute::{self, ExecuteError, Executed, Executor as _};
pub use k8sworker_planner::grpc_executor::{Acknowledged as Applied, GrpcExecutor};
use k8sworker_proto::convert;
use k8sworker_proto::v1::{ObserveRequest, ObserveResponse, Plan, executor_client::ExecutorClient};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The tests' tenant: Vantiq namespace `system`, cluster `c1` (the
/// end-to-end stack's gateway is configured with the same pair).
pub fn tenant() -> Tenant {
    Tenant::new("system", "c1").expect("a valid tenant")
}

/// How long an apply in a test may wait for health.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The validated work of `operation` on `request` for the tests' tenant;
/// panics on an invalid request.
pub fn work(request: &Value, operation: Operation) -> Work {
    work_of(&tenant(), request, operation)
}

/// The validated work of `operation` on `request` for `tenant`.
pub fn work_of(tenant: &Tenant, request: &Value, operation: Operation) -> Work {
    Work::new(
        operation,
        installation(request),
        &ClusterContext {
            tenant: Some(tenant.clone()),
            ..ClusterContext::default()
        },
        &Ancillaries::default(),
    )
    .unwrap_or_else(|e| panic!("render: {e}"))
}

/// Observes through the executor, then renders and diffs: the plan the
/// planner would send for `operation`.
pub async fn plan(executor: &mut GrpcExecutor, request: &Value, operation: Operation) -> Plan {
    let work = work(request, operation);
    let observed = observation(executor, &work).await;
    let plan = work
        .plan(&observed.components)
        .unwrap_or_else(|e| panic!("diff: {e}"));
    convert::plan_to_pb(&plan)
}

/// What the executor observes of `work`'s installation, as the planner
/// reads it; panics when the observe fails.
pub async fn observation(executor: &mut GrpcExecutor, work: &Work) -> execute::Observation {
    executor
        .observe(
            work.namespace(),
            work.name(),
            &work.names(),
            &work.references,
        )
        .await
        .unwrap_or_else(|e| panic!("observe: {e}"))
}

/// Observes the installation (with `names` and its references) through
/// the raw protocol, for tests of what the executor answers on the wire.
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

/// Applies `plan` as it is, waiting for health or not; a refusal before any
/// write is the gRPC status.
pub async fn apply(
    executor: &mut GrpcExecutor,
    plan: &Plan,
    wait_for_health: bool,
) -> Result<Applied, tonic::Status> {
    executor
        .clone()
        .wait_for_health(wait_for_health)
        .apply_wire(plan.clone(), HEALTH_TIMEOUT)
        .await
}

/// Carries out `operation` as the planner's `Execute` does, with its bounded
/// re-plan loop.
pub async fn execute(
    executor: &mut GrpcExecutor,
    request: &Value,
    operation: Operation,
) -> Result<Executed<Applied, Vec<k8sworker_proto::v1::PodLog>>, ExecuteError<tonic::Status>> {
    execute_as(&tenant(), executor, request, operation).await
}

/// As [`execute`], for `tenant`.
pub async fn execute_as(
    tenant: &Tenant,
    executor: &mut GrpcExecutor,
    request: &Value,
    operation: Operation,
) -> Result<Executed<Applied, Vec<k8sworker_proto::v1::PodLog>>, ExecuteError<tonic::Status>> {
    execute::execute(
        &work_of(tenant, request, operation),
        executor,
        HEALTH_TIMEOUT,
        None,
    )
    .await
}
