//! The `Planner` gRPC service: `Render` and `Plan` convert, call the pure core
//! and convert back; `Execute` validates, then hands the work to
//! [`crate::execute::execute`] with the namespace's executor over gRPC, and
//! maps its outcome and errors to the protocol.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8sworker_core::component::{MASKED, Object};
use k8sworker_core::diff::PlanError;
use k8sworker_core::operation::Work;
use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::Operation;
use k8sworker_core::render::{self, Ancillaries, ClusterContext, RenderError};
use k8sworker_proto::convert::{self, ConvertError};
use k8sworker_proto::v1 as pb;
use k8sworker_tls::{Authentication, Identity, Role, Tls, authorize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

use crate::execute::{self, ExecuteError, Executed};
use crate::grpc_executor::GrpcExecutor;
use k8sworker_proto::v1::planner_server::PlannerServer;
use std::future::Future;
use tokio::net::TcpListener;
use tracing::warn;

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

    /// The address of `namespace`'s executor, if it has one.
    pub fn address(&self, namespace: &str) -> Option<String> {
        self.explicit.get(namespace).cloned().or_else(|| {
            self.template
                .as_ref()
                .map(|t| t.replace("{namespace}", namespace))
        })
    }
}

/// The Planner service.
#[derive(Debug, Clone)]
pub struct PlannerService {
    directory: Arc<ExecutorDirectory>,
    /// The planner's certificate: callers are checked against it and
    /// executors reached with it; `None` is plaintext on loopback, nobody
    /// checked.
    tls: Option<Tls>,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    /// How long the executor may wait for the installation to become healthy.
    pub health_timeout: Duration,
    /// Turns `true` when the shutdown grace has run out: Execute calls still
    /// running then give up.
    cut_off: tokio::sync::watch::Receiver<bool>,
}

impl PlannerService {
    /// A service reaching executors through `directory`, letting each wait
    /// at most `health_timeout` for an installation to become healthy.
    /// With `tls` (the planner's certificate) every call is checked against
    /// the caller's verified certificate and executors are reached over
    /// mutual TLS; without, it is plaintext and nobody is checked (the
    /// caller keeps every address on loopback).
    pub fn new(directory: ExecutorDirectory, health_timeout: Duration, tls: Option<Tls>) -> Self {
        Self {
            directory: Arc::new(directory),
            tls,
            channels: Arc::default(),
            health_timeout,
            cut_off: tokio::sync::watch::channel(false).1,
        }
    }

    /// The same service, whose Execute calls in flight give up with
    /// UNAVAILABLE once `cut_off` turns `true` (what [`serve`] does when its
    /// shutdown grace runs out).
    pub fn with_cut_off(mut self, cut_off: tokio::sync::watch::Receiver<bool>) -> Self {
        self.cut_off = cut_off;
        self
    }

    fn executor(&self, namespace: &str) -> Result<GrpcExecutor, Status> {
        let address = self.directory.address(namespace).ok_or_else(|| {
            Status::failed_precondition(format!(
                "no executor is installed for namespace `{namespace}`: apply deploy/executor to that \
                 namespace (a ServiceAccount, Role and RoleBinding limited to it, and the executor) \
                 and list it in the planner's --executor {namespace}=URL"
            ))
        })?;
        if self.tls.is_none() {
            k8sworker_tls::plaintext_url(&address).map_err(|error| {
                Status::failed_precondition(format!("the executor of `{namespace}`: {error}"))
            })?;
        }
        let mut channels = self
            .channels
            .lock()
            .expect("channel cache is never poisoned");
        // Keyed by namespace too: the identity expected at an address is
        // that namespace's executor.
        let key = format!("{namespace}={address}");
        let channel = match channels.get(&key) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(address.clone())
                    .map_err(|e| Status::internal(format!("executor address `{address}`: {e}")))?
                    .connect_timeout(Duration::from_secs(5));
                let channel = k8sworker_tls::channel(
                    endpoint,
                    self.tls.as_ref(),
                    Identity::executor(namespace),
                );
                channels.insert(key, channel.clone());
                channel
            }
        };
        Ok(GrpcExecutor::new(channel))
    }

    fn authentication(&self) -> Authentication {
        match self.tls {
            Some(_) => Authentication::Required,
            None => Authentication::Off,
        }
    }

    /// Checks the caller of `call` against `allowed` and decides the
    /// tenant: a gateway's is the one its certificate names, and a request
    /// naming another is refused; a preview client's (and anyone's without
    /// TLS) is the one the request names.
    fn caller<T>(
        &self,
        request: &Request<T>,
        call: &str,
        allowed: &[Role],
        requested: Option<pb::Tenant>,
    ) -> Result<Option<Tenant>, Status> {
        let caller = authorize(request, self.authentication(), call, allowed)
            .inspect_err(|status| warn!(call, error = %status.message(), "caller refused"))?;
        let requested = convert::tenant_from_pb(requested).map_err(invalid)?;
        let Some(Identity::Gateway(own)) = caller else {
            return Ok(requested);
        };
        match requested {
            Some(requested) if requested != own => {
                let message = format!(
                    "{call} refused: the request names tenant `{requested}`, but the caller's \
                     certificate is the gateway of `{own}`; a gateway acts only for its own tenant"
                );
                warn!(call, %requested, %own, "tenant refused");
                Err(Status::permission_denied(message))
            }
            _ => Ok(Some(own)),
        }
    }
}

/// Who may ask for renders and plans: gateways, and preview clients (CI
/// pipelines) that never execute.
const RENDER_AND_PLAN_CALLERS: &[Role] = &[Role::Gateway, Role::Preview];
/// Who may execute: gateways only.
const EXECUTE_CALLERS: &[Role] = &[Role::Gateway];

fn invalid(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Maps a render error to a gRPC status: a bad request is INVALID_ARGUMENT.
pub fn render_status(error: RenderError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// Maps a plan error to a gRPC status: objects in the way, a refused
/// delete-all and a change of an immutable field are FAILED_PRECONDITION, a missing installation NOT_FOUND.
pub fn plan_status(error: PlanError) -> Status {
    match error {
        PlanError::NotFound { .. } => Status::not_found(error.to_string()),
        PlanError::NoPlan(_) => Status::invalid_argument(error.to_string()),
        PlanError::NotOwned(_) | PlanError::DeleteAllRefused(_) | PlanError::Immutable(_) => {
            Status::failed_precondition(error.to_string())
        }
    }
}

struct Inputs {
    request: k8sworker_core::model::InstallationRequest,
    cluster: ClusterContext,
    ancillaries: Ancillaries,
}

/// The request's inputs. The tenant is the caller's (the gateway's Vantiq
/// namespace and cluster, from its certificate: [`PlannerService::caller`]);
/// it is what every rendered object records as its owner and what
/// executors admit.
fn inputs(
    installation: Option<pb::InstallationRequest>,
    cluster: Option<pb::ClusterContext>,
    ancillaries: Option<pb::Ancillaries>,
    tenant: Option<Tenant>,
) -> Result<Inputs, Status> {
    Ok(Inputs {
        request: convert::installation_from_pb(installation).map_err(invalid)?,
        cluster: ClusterContext {
            tenant,
            ..convert::cluster_from_pb(cluster)
        },
        ancillaries: convert::ancillaries_from_pb(ancillaries),
    })
}

/// What a live plan renders every secret value from (see
/// [`Inputs::with_secret_stand_ins`]).
pub const SECRET_STAND_IN: &str = "<stand-in: a preview does not compare secret values>";

impl Inputs {
    /// The inputs with every value that ends up in a generated Secret
    /// replaced by [`SECRET_STAND_IN`]: `asSecret` literals, `@secrets`
    /// values, and, when any file is sourced from a Secret, every file's
    /// content and mounted document.
    ///
    /// A live plan compares what the request renders with what the cluster
    /// holds. With the caller's own values, a Secret step (and the
    /// StatefulSet, whose pod template carries the Secrets' hash) would be
    /// NOOP exactly when a guessed value is right: an oracle for another
    /// tenant's secrets. From stand-ins, the answer does not depend on the
    /// caller's values; Secrets and the StatefulSet plan as UPDATEs.
    fn with_secret_stand_ins(mut self) -> Inputs {
        use k8sworker_core::model::{ConfigEntry, DataSource};
        let secret_files = self.request.config.iter().any(|entry| {
            matches!(entry, ConfigEntry::File(file) if file.data_source() == Some(DataSource::Secret))
        });
        for entry in &mut self.request.config {
            match entry {
                ConfigEntry::EnvironmentVariable(var)
                    if var.as_secret == Some(true) && var.value.is_some() =>
                {
                    var.value = Some(SECRET_STAND_IN.to_owned());
                }
                ConfigEntry::File(file) if secret_files && file.content.is_some() => {
                    file.content = Some(SECRET_STAND_IN.to_owned());
                }
                _ => {}
            }
        }
        for value in self.ancillaries.secrets.values_mut() {
            SECRET_STAND_IN.clone_into(value);
        }
        if secret_files {
            for content in self.ancillaries.documents.values_mut() {
                *content = SECRET_STAND_IN.as_bytes().to_vec();
            }
        }
        self
    }

    /// Validates (and for deploy and verify renders) before anything is
    /// observed: a bad request changes nothing anywhere.
    fn work(self, operation: Operation) -> Result<Work, Status> {
        Work::new(operation, self.request, &self.cluster, &self.ancillaries).map_err(render_status)
    }
}

/// An object as a preview shows it: a Secret's values masked
/// ([`Object::to_preview_json`]).
fn preview_bytes(object: &Object) -> Vec<u8> {
    serde_json::to_vec(&object.to_preview_json()).expect("JSON values always serialize")
}

#[tonic::async_trait]
impl pb::planner_server::Planner for PlannerService {
    async fn render(
        &self,
        request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        let tenant = self.caller(
            &request,
            "Planner.Render",
            RENDER_AND_PLAN_CALLERS,
            request.get_ref().tenant.clone(),
        )?;
        let request = request.into_inner();
        let inputs = inputs(
            request.installation,
            request.cluster,
            request.ancillaries,
            tenant,
        )?;
        let components = render::render(&inputs.request, &inputs.cluster, &inputs.ancillaries)
            .map_err(render_status)?;
        let namespace = &inputs.request.k8s_namespace;
        Ok(Response::new(pb::RenderResponse {
            components: components
                .iter()
                .map(|c| {
                    let mut preview = convert::desired_to_pb(c, namespace);
                    preview.object_json = preview_bytes(&c.object);
                    if c.object.hashes_secrets() {
                        MASKED.clone_into(&mut preview.spec_hash);
                    }
                    preview
                })
                .collect(),
        }))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let tenant = self.caller(
            &request,
            "Planner.Plan",
            RENDER_AND_PLAN_CALLERS,
            request.get_ref().tenant.clone(),
        )?;
        let request = request.into_inner();
        let operation = convert::operation_from_pb(request.operation).map_err(invalid)?;
        let inputs = inputs(
            request.installation,
            request.cluster,
            request.ancillaries,
            tenant,
        )?;
        if request.live && !request.observed.is_empty() {
            return Err(Status::invalid_argument(
                "a live plan observes the installation itself: send no `observed` with `live`",
            ));
        }
        let observed = request
            .observed
            .into_iter()
            .map(convert::observed_from_pb)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let inputs = if request.live {
            inputs.with_secret_stand_ins()
        } else {
            inputs
        };
        let work = inputs.work(operation)?;
        let observed = if request.live {
            self.observe_live(&work).await?
        } else {
            observed
        };
        let plan = work.plan(&observed).map_err(plan_status)?;
        let mut preview = convert::plan_to_pb(&plan);
        for (step, planned) in preview.steps.iter_mut().zip(&plan.steps) {
            if let Some(object) = &planned.object {
                step.object_json = preview_bytes(object);
            }
        }
        Ok(Response::new(pb::PlanResponse {
            plan: Some(preview),
        }))
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let tenant = self.caller(
            &request,
            "Planner.Execute",
            EXECUTE_CALLERS,
            request.get_ref().tenant.clone(),
        )?;
        let request = request.into_inner();
        let operation = convert::operation_from_pb(request.operation).map_err(invalid)?;
        let inputs = inputs(
            request.installation,
            request.cluster,
            request.ancillaries,
            tenant,
        )?;
        let span = info_span!(
            "execute",
            workitem = %request.workitem_id,
            installation = %inputs.request.name,
            namespace = %inputs.request.k8s_namespace,
            operation = %operation,
        );
        let _execution = crate::metrics::Execution::start(&operation.to_string());
        let mut cut_off = self.cut_off.clone();
        tokio::select! {
            executed = self.execute_inner(operation, inputs, request.pod_name).instrument(span) => {
                executed.map(Response::new)
            }
            () = cut(&mut cut_off) => Err(Status::unavailable(
                "the planner stopped before this Execute finished (its shutdown grace ran out); \
                 the operation may be partly applied: run it again",
            )),
        }
    }
}

impl PlannerService {
    /// What the namespace's executor observes of `work`'s installation now
    /// (a live plan's input), as [`execute::execute`] observes before it
    /// plans.
    ///
    /// # Errors
    /// No executor for the namespace, the executor's own status, or a deploy
    /// whose references are missing (FAILED_PRECONDITION, as Execute).
    async fn observe_live(
        &self,
        work: &Work,
    ) -> Result<Vec<k8sworker_core::diff::Observed>, Status> {
        let mut executor = self.executor(work.namespace())?;
        execute::observe(work, &mut executor)
            .await
            .map_err(execute_status)
    }

    async fn execute_inner(
        &self,
        operation: Operation,
        inputs: Inputs,
        pod_name: Option<String>,
    ) -> Result<pb::ExecuteResponse, Status> {
        let work = inputs.work(operation)?;
        let namespace = work.namespace().to_owned();
        let mut executor = self.executor(&namespace)?;
        let executed = execute::execute(
            &work,
            &mut executor,
            self.health_timeout,
            pod_name.as_deref(),
        )
        .await
        .map_err(execute_status)?;
        let components = |observed: &[k8sworker_core::diff::Observed]| {
            observed
                .iter()
                .map(|o| convert::observed_to_pb(o, &namespace))
                .collect()
        };
        Ok(match executed {
            Executed::Logs(logs) => pb::ExecuteResponse {
                logs,
                ..Default::default()
            },
            Executed::Verified { verdict, observed } => pb::ExecuteResponse {
                drift: convert::verdict_to_pb(&verdict, &namespace),
                components: components(&observed),
                ..Default::default()
            },
            Executed::Applied { plan, ack, after } => pb::ExecuteResponse {
                plan: Some(convert::plan_to_pb(&plan)),
                ack: Some(ack.ack),
                components: components(&after),
                ..Default::default()
            },
        })
    }
}

/// Maps why an operation was not carried out to a gRPC status: a missing
/// reference or an object in the way is FAILED_PRECONDITION (the user must
/// act); no acknowledged apply in all the attempts is ABORTED (a busy
/// cluster: try again later); the executor's own status passes through.
fn execute_status(error: ExecuteError<Status>) -> Status {
    match error {
        ExecuteError::Executor(status) => status,
        ExecuteError::Plan(error) => plan_status(error),
        error @ ExecuteError::MissingReferences(_) => {
            Status::failed_precondition(error.to_string())
        }
        error @ ExecuteError::Exhausted { .. } => Status::aborted(error.to_string()),
    }
}

/// Completes when `cut_off` turns `true`; never when its sender is gone
/// (a service without [`serve`]'s grace is never cut off).
async fn cut(cut_off: &mut tokio::sync::watch::Receiver<bool>) {
    if cut_off.wait_for(|cut| *cut).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long the answers of cut-off calls may take to reach their callers.
const CUT_OFF_FLUSH: Duration = Duration::from_secs(2);

/// How a [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight call finished within the grace period.
    Drained,
    /// Calls were still running when the grace period ended; they were cut
    /// off (their callers see the connection close).
    GraceExpired,
}

/// Serves `planner` (and the standard gRPC health and server reflection
/// services) on `listener`,
/// over mutual TLS when the planner has a certificate, until `shutdown`
/// completes; then stops accepting, lets in-flight calls
/// (an `Execute` waits for an apply and the installation's health) finish
/// for at most `grace`. Calls still running then answer UNAVAILABLE, so
/// that the gateway retries them, and the server stops.
///
/// # Errors
/// The transport failed while serving.
pub async fn serve(
    listener: TcpListener,
    planner: PlannerService,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<Stopped, tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<PlannerServer<PlannerService>>().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (cut, cut_off) = tokio::sync::watch::channel(false);
    let tls = planner.tls.clone();
    let admitted = k8sworker_tls::admit(
        planner.authentication(),
        "ServerReflection",
        RENDER_AND_PLAN_CALLERS,
    );
    let planner = planner.with_cut_off(cut_off);
    let (reflection, reflection_v1alpha) = k8sworker_proto::reflection(
        &["k8sworker.v1.Planner", "grpc.health.v1.Health"],
        &[tonic_health::pb::FILE_DESCRIPTOR_SET],
    )
    .expect("the compiled descriptor sets are complete");
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(k8sworker_telemetry::ServerTraceLayer::grpc())
            .add_service(health_service)
            .add_service(InterceptedService::new(reflection, admitted.clone()))
            .add_service(InterceptedService::new(reflection_v1alpha, admitted))
            .add_service(PlannerServer::new(planner))
            .serve_with_incoming_shutdown(k8sworker_tls::incoming(listener, tls), async {
                let _ = stopped.await;
            }),
    );
    tokio::select! {
        ended = &mut server => return ended.expect("the server task does not panic").map(|()| Stopped::Drained),
        () = shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(ended) => ended
            .expect("the server task does not panic")
            .map(|()| Stopped::Drained),
        Err(_) => {
            warn!(
                grace_seconds = grace.as_secs_f64(),
                "calls still running at the end of the grace period; stopping anyway"
            );
            // The calls in flight answer UNAVAILABLE (their callers retry),
            // then the connections close.
            let _ = cut.send(true);
            if tokio::time::timeout(CUT_OFF_FLUSH, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
            Ok(Stopped::GraceExpired)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8sworker_core::component::Kind;
    use k8sworker_core::validate::parse_and_validate;
    use serde_json::json;

    use super::*;

    /// The components a request with these secret values renders to, after
    /// the live plan's stand-ins: (kind, name, spec hash).
    fn rendered(api_key: &str, password: &str, file: &str) -> Vec<(Kind, String, String)> {
        let request = parse_and_validate(&json!({"name": "web", "k8sNamespace": "apps", "config": [
            {"type": "image", "name": "nginx:1.27"},
            {"type": "environmentVariable", "name": "API_KEY", "value": api_key, "asSecret": true},
            {"type": "environmentVariable", "name": "DB", "value": "@secrets(db)"},
            {"type": "file", "path": "/etc/tls", "filename": "key.pem", "content": file, "dataSource": "secret"},
            {"type": "file", "path": "/etc/app", "filename": "app.conf", "content": "a=1"},
        ]}))
        .unwrap();
        let mut ancillaries = Ancillaries::default();
        ancillaries.secrets.insert("db".into(), password.into());
        let inputs = Inputs {
            request,
            cluster: ClusterContext {
                cluster_name: "c1".into(),
                ingress_default_node: "node.example".into(),
                tenant: Some(Tenant::new("system", "c1").unwrap()),
            },
            ancillaries,
        }
        .with_secret_stand_ins();
        render::render(&inputs.request, &inputs.cluster, &inputs.ancillaries)
            .unwrap()
            .into_iter()
            .map(|c| (c.object.kind(), c.object.name().to_owned(), c.spec_hash))
            .collect()
    }

    /// A live plan answers the same whatever secret values the caller
    /// guesses, so it cannot tell a right guess from a wrong one.
    #[test]
    fn a_live_plan_renders_the_same_whatever_secret_values_are_guessed() {
        let one = rendered("guess-1", "hunter2", "KEY-1");
        let other = rendered("guess-2", "correct horse", "KEY-2");
        assert_eq!(one, other);
        assert!(
            one.iter().any(|(kind, ..)| *kind == Kind::Secret),
            "{one:?}"
        );
        assert!(
            one.iter().any(|(kind, ..)| *kind == Kind::StatefulSet),
            "{one:?}"
        );
    }
}
