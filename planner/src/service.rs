//! The `Planner` gRPC service: `Render` and `Plan` convert, call the pure core
//! and convert back; `Execute` drives the namespace's executor
//! (observe → render → diff → apply), re-planning a bounded number of times
//! when the executor finds the plan stale.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::executor_client::ExecutorClient;
use k8sworker_telemetry::GrpcClientInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

use crate::component::{Component, ComponentId, Kind};
use crate::convert::{self, ConvertError};
use crate::diff::{self, Observed, PlanError};
use crate::model::{ConfigEntry, DataSource, InstallationRequest};
use crate::plan::{Operation, Plan};
use crate::render::{self, Ancillaries, ClusterContext, RenderError};
use crate::validate::ValidationError;

/// How many times `Execute` re-observes and re-plans after a stale plan.
pub const MAX_REPLANS: usize = 3;

/// Where each namespace's executor listens.
#[derive(Debug, Clone)]
pub struct ExecutorDirectory {
    /// Explicit addresses by namespace.
    pub explicit: BTreeMap<String, String>,
    /// Address for namespaces not in `explicit`, with `{namespace}` replaced;
    /// `None` means only explicit namespaces have executors.
    pub template: Option<String>,
}

impl ExecutorDirectory {
    /// The conventional in-cluster address of a namespace's executor.
    pub const DEFAULT_TEMPLATE: &'static str = "http://k8sworker-executor.{namespace}.svc:50052";

    pub fn address(&self, namespace: &str) -> Option<String> {
        self.explicit.get(namespace).cloned().or_else(|| {
            self.template
                .as_ref()
                .map(|t| t.replace("{namespace}", namespace))
        })
    }
}

type Executor = ExecutorClient<InterceptedService<Channel, GrpcClientInterceptor>>;

/// The Planner service.
#[derive(Debug, Clone)]
pub struct PlannerService {
    directory: Arc<ExecutorDirectory>,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    /// How long the executor may wait for the installation to become healthy.
    pub health_timeout: Duration,
}

impl PlannerService {
    pub fn new(directory: ExecutorDirectory, health_timeout: Duration) -> Self {
        Self {
            directory: Arc::new(directory),
            channels: Arc::default(),
            health_timeout,
        }
    }

    fn executor(&self, namespace: &str) -> Result<Executor, Status> {
        let address = self.directory.address(namespace).ok_or_else(|| {
            Status::failed_precondition(format!(
                "no executor is installed for namespace `{namespace}`: apply deploy/executor to that \
                 namespace (a ServiceAccount, Role and RoleBinding limited to it, and the executor) \
                 and list it in the planner's --executor {namespace}=URL"
            ))
        })?;
        let mut channels = self
            .channels
            .lock()
            .expect("channel cache is never poisoned");
        let channel = match channels.get(&address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = Endpoint::from_shared(address.clone())
                    .map_err(|e| Status::internal(format!("executor address `{address}`: {e}")))?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy();
                channels.insert(address, channel.clone());
                channel
            }
        };
        Ok(ExecutorClient::with_interceptor(
            channel,
            GrpcClientInterceptor,
        ))
    }
}

fn invalid(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Maps core errors to gRPC codes: bad requests are INVALID_ARGUMENT, a
/// cluster in the way is FAILED_PRECONDITION, a missing installation NOT_FOUND.
pub fn render_status(error: RenderError) -> Status {
    Status::invalid_argument(error.to_string())
}

pub fn plan_status(error: PlanError) -> Status {
    match error {
        PlanError::NotFound { .. } => Status::not_found(error.to_string()),
        PlanError::NoPlan(_) => Status::invalid_argument(error.to_string()),
        PlanError::NotOwned(_) | PlanError::DeleteAllRefused(_) => {
            Status::failed_precondition(error.to_string())
        }
    }
}

struct Inputs {
    request: InstallationRequest,
    cluster: ClusterContext,
    ancillaries: Ancillaries,
}

fn inputs(
    installation: Option<pb::InstallationRequest>,
    cluster: Option<pb::ClusterContext>,
    ancillaries: Option<pb::Ancillaries>,
) -> Result<Inputs, Status> {
    Ok(Inputs {
        request: convert::installation_from_pb(installation).map_err(invalid)?,
        cluster: convert::cluster_from_pb(cluster),
        ancillaries: convert::ancillaries_from_pb(ancillaries),
    })
}

/// Operations that act on an existing installation need only its name and
/// namespace to be valid; the config is used for `replicaCount` alone.
fn check_identity(request: &InstallationRequest) -> Result<(), Status> {
    let mut errors = Vec::new();
    if !crate::names::is_dns1035_label(&request.name) {
        errors.push(ValidationError::request(
            "name",
            format!("`{}` is not a valid installation name", request.name),
        ));
    }
    if !crate::names::is_dns1123_label(&request.k8s_namespace) {
        errors.push(ValidationError::request(
            "k8sNamespace",
            format!("`{}` is not a valid namespace", request.k8s_namespace),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            crate::validate::ValidationErrors::new(errors).to_string(),
        ))
    }
}

/// The existing objects a request refers to.
pub fn references(request: &InstallationRequest) -> Vec<ComponentId> {
    let mut refs = Vec::new();
    for entry in &request.config {
        match entry {
            ConfigEntry::File(file) => {
                if let (Some(name), Some(_)) = (&file.name, &file.key) {
                    let kind = match file.data_source() {
                        Some(DataSource::Secret) => Kind::Secret,
                        _ => Kind::ConfigMap,
                    };
                    refs.push(ComponentId::new(kind, name.clone()));
                }
            }
            ConfigEntry::EnvironmentVariable(env) => {
                if let Some(secret) = &env.secret_name {
                    refs.push(ComponentId::new(Kind::Secret, secret.clone()));
                }
            }
            _ => {}
        }
    }
    refs.sort();
    refs.dedup();
    refs
}

#[tonic::async_trait]
impl pb::planner_server::Planner for PlannerService {
    async fn render(
        &self,
        request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        let request = request.into_inner();
        let inputs = inputs(request.installation, request.cluster, request.ancillaries)?;
        let components = render::render(&inputs.request, &inputs.cluster, &inputs.ancillaries)
            .map_err(render_status)?;
        let namespace = &inputs.request.k8s_namespace;
        Ok(Response::new(pb::RenderResponse {
            components: components
                .iter()
                .map(|c| convert::desired_to_pb(c, namespace))
                .collect(),
        }))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let request = request.into_inner();
        let operation = convert::operation_from_pb(request.operation).map_err(invalid)?;
        let inputs = inputs(request.installation, request.cluster, request.ancillaries)?;
        let observed = request
            .observed
            .into_iter()
            .map(convert::observed_from_pb)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let plan = compute_plan(operation, &inputs, &observed)?;
        Ok(Response::new(pb::PlanResponse {
            plan: Some(convert::plan_to_pb(&plan)),
        }))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let operation = convert::operation_from_pb(request.operation).map_err(invalid)?;
        let inputs = inputs(request.installation, request.cluster, request.ancillaries)?;
        let span = info_span!(
            "execute",
            workitem = %request.workitem_id,
            installation = %inputs.request.name,
            namespace = %inputs.request.k8s_namespace,
            operation = %operation,
        );
        self.execute_inner(operation, inputs, request.pod_name)
            .instrument(span)
            .await
            .map(Response::new)
    }
}

fn compute_plan(
    operation: Operation,
    inputs: &Inputs,
    observed: &[Observed],
) -> Result<Plan, Status> {
    let desired = desired(operation, inputs)?;
    diff::diff(
        operation,
        &inputs.request.name,
        &inputs.request.k8s_namespace,
        &desired,
        observed,
        inputs.request.replica_count(),
    )
    .map_err(plan_status)
}

fn desired(operation: Operation, inputs: &Inputs) -> Result<Vec<Component>, Status> {
    match operation {
        Operation::Deploy | Operation::Verify => {
            render::render(&inputs.request, &inputs.cluster, &inputs.ancillaries)
                .map_err(render_status)
        }
        _ => {
            check_identity(&inputs.request)?;
            Ok(Vec::new())
        }
    }
}

impl PlannerService {
    async fn execute_inner(
        &self,
        operation: Operation,
        inputs: Inputs,
        pod_name: Option<String>,
    ) -> Result<pb::ExecuteResponse, Status> {
        let namespace = inputs.request.k8s_namespace.clone();
        let name = inputs.request.name.clone();
        // Validate (and render) before touching the executor: a bad request
        // changes nothing anywhere.
        let desired = desired(operation, &inputs)?;
        let mut executor = self.executor(&namespace)?;

        if operation == Operation::FetchLogs {
            let logs = executor
                .fetch_logs(pb::FetchLogsRequest {
                    namespace: namespace.clone(),
                    installation: name.clone(),
                    pod_name,
                    limit_bytes: 0,
                })
                .await?
                .into_inner()
                .logs;
            return Ok(pb::ExecuteResponse {
                logs,
                ..Default::default()
            });
        }

        let names: Vec<pb::ComponentRef> = desired
            .iter()
            .map(|c| convert::component_ref(&c.id(), &namespace))
            .collect();
        let wanted_refs = if matches!(operation, Operation::Deploy | Operation::Verify) {
            references(&inputs.request)
        } else {
            Vec::new()
        };
        let refs: Vec<pb::ComponentRef> = wanted_refs
            .iter()
            .map(|id| convert::component_ref(id, &namespace))
            .collect();

        let mut attempt = 0;
        loop {
            attempt += 1;
            let observed = executor
                .observe(pb::ObserveRequest {
                    namespace: namespace.clone(),
                    installation: name.clone(),
                    names: names.clone(),
                    references: refs.clone(),
                })
                .await?
                .into_inner();
            let missing: Vec<String> = wanted_refs
                .iter()
                .filter(|id| {
                    !observed
                        .existing_references
                        .iter()
                        .any(|r| r.kind == id.kind.as_str() && r.name == id.name)
                })
                .map(ToString::to_string)
                .collect();
            let components = observed.components.clone();
            let observed: Vec<Observed> = observed
                .components
                .into_iter()
                .map(convert::observed_from_pb)
                .collect::<Result<_, _>>()
                .map_err(|e| Status::internal(format!("executor answered nonsense: {e}")))?;

            if operation == Operation::Verify {
                let stopped = observed.iter().any(|o| {
                    o.id.kind == Kind::StatefulSet && o.id.name == name && o.replicas == Some(0)
                });
                let mut drift: Vec<pb::Drift> = diff::verify(&name, &desired, &observed, stopped)
                    .iter()
                    .map(|d| convert::drift_to_pb(d, &namespace))
                    .collect();
                drift.extend(missing.iter().map(|m| pb::Drift {
                    component: None,
                    kind: "missing".to_owned(),
                    message: format!("referenced {m} does not exist"),
                }));
                info!(drift = drift.len(), "verified");
                return Ok(pb::ExecuteResponse {
                    drift,
                    components,
                    ..Default::default()
                });
            }
            if !missing.is_empty() && operation == Operation::Deploy {
                return Err(Status::failed_precondition(format!(
                    "the installation refers to objects that do not exist in namespace `{namespace}`: {}; create them first",
                    missing.join(", ")
                )));
            }

            let plan = compute_plan(operation, &inputs, &observed)?;
            info!(plan = %plan.id, steps = plan.steps.len(), writes = plan.writes().count(), attempt, "planned");
            let wire_plan = convert::plan_to_pb(&plan);
            let stream = executor
                .apply(pb::ApplyRequest {
                    plan: Some(wire_plan.clone()),
                    wait_for_health: true,
                    health_timeout_seconds: self.health_timeout.as_secs() as u32,
                })
                .await;
            let mut stream = match stream {
                Ok(stream) => stream.into_inner(),
                Err(status)
                    if status.code() == tonic::Code::FailedPrecondition
                        && attempt <= MAX_REPLANS =>
                {
                    warn!(plan = %plan.id, message = status.message(), "stale plan, re-planning");
                    continue;
                }
                Err(status) => return Err(status),
            };
            let mut ack = None;
            loop {
                match stream.message().await {
                    Ok(Some(pb::ApplyEvent {
                        event: Some(pb::apply_event::Event::Ack(a)),
                    })) => {
                        ack = Some(a);
                        break;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(status)
                        if status.code() == tonic::Code::FailedPrecondition
                            && attempt <= MAX_REPLANS =>
                    {
                        warn!(plan = %plan.id, message = status.message(), "stale plan, re-planning");
                        break;
                    }
                    Err(status) => return Err(status),
                }
            }
            let Some(ack) = ack else {
                if attempt <= MAX_REPLANS {
                    continue;
                }
                return Err(Status::aborted(
                    "the executor ended the apply stream without an Ack",
                ));
            };
            let stale = ack
                .error
                .as_ref()
                .is_some_and(|e| e.code == pb::ErrorCode::StalePlan as i32);
            if stale && attempt <= MAX_REPLANS {
                warn!(plan = %plan.id, "stale plan, re-planning");
                continue;
            }
            let after = executor
                .observe(pb::ObserveRequest {
                    namespace: namespace.clone(),
                    installation: name.clone(),
                    names: Vec::new(),
                    references: Vec::new(),
                })
                .await?
                .into_inner()
                .components;
            return Ok(pb::ExecuteResponse {
                plan: Some(wire_plan),
                ack: Some(ack),
                components: after,
                ..Default::default()
            });
        }
    }
}
