//! The `k8sworker.v1.Executor` gRPC service for one namespace.
//!
//! A handler validates (no API call for a foreign or malformed request),
//! then hands the work to the modules that own it: [`observe`](crate::observe),
//! [`precondition`], [`apply`](crate::apply), [`logs`](crate::logs).
//! Apply runs one plan at a time per installation (a lock per installation
//! name) and at most `max_concurrent_applies` overall. Refusals before the
//! first write (wrong namespace, invalid, against the policy, stale, not
//! owned) are gRPC errors;
//! from the all-or-nothing check on ([`dry_run`](crate::dry_run): quota,
//! then a dry run of every write), the stream carries one event per step and
//! ends with the Ack, whose error says whether anything was written; the Ack of a completed plan is cached by plan id so a resent plan
//! writes nothing, and a failed one is not, so its retry is applied again.
//! The writes run in their own task: a caller that hangs up does not stop a
//! plan half-way, and shutdown waits (bounded) for running plans.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8sworker_core::owner::Tenant;
use k8sworker_core::policy::Policy;
use k8sworker_proto::v1::{
    Ack, ApplyEvent, ApplyRequest, FetchLogsRequest, FetchLogsResponse, ObserveRequest,
    ObserveResponse, apply_event,
    executor_server::{Executor, ExecutorServer},
};
use k8sworker_tls::{Authentication, Role, Tls, authorize};
use tokio::{
    net::TcpListener,
    sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, instrument};

use crate::{
    Error,
    ack_cache::{AckCache, Cached},
    apply::{self, Check},
    cache::{Cache, CacheStats},
    calls::ApiCalls,
    client::{KubeClients, RateLimits},
    dry_run,
    logs::{self, LogLimits},
    observe, plan, precondition,
};

/// How long Observe and Apply wait for the cache's first sync before
/// refusing (gRPC UNAVAILABLE): the API server did not answer the lists.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request (a plan) the executor accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How an executor behaves; [`ExecutorConfig::new`] has the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorConfig {
    /// The only namespace this executor reads and writes.
    pub namespace: String,
    /// Client-side limit on Kubernetes API requests.
    pub rate_limits: RateLimits,
    /// Plans applied at the same time (one per installation at most).
    pub max_concurrent_applies: usize,
    /// Acks remembered by plan id.
    pub ack_cache_capacity: usize,
    /// Health wait when the request does not say.
    pub default_health_timeout: Duration,
    /// Upper bound for a requested health wait.
    pub max_health_timeout: Duration,
    /// Caps of FetchLogs.
    pub log_limits: LogLimits,
    /// What a plan may write: the core's policy with this executor's deny
    /// list of service accounts (`--deny-service-account`).
    pub policy: Policy,
    /// The tenants (Vantiq namespace and cluster) whose plans this executor
    /// applies (`--allowed-tenant`); a plan of any other, or without one, is
    /// refused before any API call. Empty (the default) refuses every plan.
    pub allowed_tenants: BTreeSet<Tenant>,
    /// Whether every call must come from the planner's verified
    /// certificate ([`Authentication::Required`], the default) or nobody
    /// is checked (plaintext on loopback).
    pub authentication: Authentication,
    /// Whether every plan's writes are checked by the API server (a
    /// server-side dry run of each, and the ResourceQuota check of its pods)
    /// before the first persisted write, so that a refusal writes nothing
    /// (`--dry-run-wave`, default on). Off only to measure what the check
    /// costs, or as an escape hatch.
    pub dry_run_wave: bool,
}

impl ExecutorConfig {
    /// The defaults for an executor of `namespace`: 20 qps with bursts of
    /// 40, 8 concurrent applies, 1024 remembered acks, a 300 s health wait
    /// (at most 3600 s), 256 KiB per pod log.
    pub fn new(namespace: impl Into<String>) -> Self {
        ExecutorConfig {
            namespace: namespace.into(),
            rate_limits: RateLimits::default(),
            max_concurrent_applies: 8,
            ack_cache_capacity: 1024,
            default_health_timeout: Duration::from_secs(300),
            max_health_timeout: Duration::from_secs(3600),
            log_limits: LogLimits {
                limit_bytes: 256 * 1024,
                tail_lines: 10_000,
                total_bytes: 3 * 1024 * 1024,
            },
            policy: Policy::default(),
            allowed_tenants: BTreeSet::new(),
            authentication: Authentication::Required,
            dry_run_wave: true,
        }
    }
}

/// The Executor service; clones share state.
#[derive(Clone, Debug)]
pub struct ExecutorService {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ExecutorConfig,
    clients: KubeClients,
    cache: Cache,
    acks: AckCache,
    installations: InstallationLocks,
    applies: Arc<Semaphore>,
    closing: AtomicBool,
}

impl ExecutorService {
    /// An executor for `config.namespace`, calling Kubernetes through `client`.
    ///
    /// Starts the watch-fed [`Cache`] of the namespace at once (its
    /// watchers' calls count in [`ExecutorService::api_calls`]); must be
    /// called within a Tokio runtime.
    pub fn new(config: ExecutorConfig, client: kube::Client) -> Self {
        let clients = KubeClients::new(client, config.rate_limits);
        let cache = Cache::start(&clients, &config.namespace);
        ExecutorService {
            shared: Arc::new(Shared {
                cache,
                acks: AckCache::new(config.ack_cache_capacity),
                installations: InstallationLocks::default(),
                applies: Arc::new(Semaphore::new(config.max_concurrent_applies.max(1))),
                closing: AtomicBool::new(false),
                clients,
                config,
            }),
        }
    }

    /// Every Kubernetes API call made since start, by verb and resource.
    pub fn api_calls(&self) -> ApiCalls {
        self.shared.clients.calls().clone()
    }

    /// Waits until the cache has listed every kind once, at most
    /// `timeout`; true when it has. Observe and Apply wait for it too
    /// ([`CACHE_SYNC_TIMEOUT`]); a caller may wait first to report ready.
    /// Once synced, it waits (within the same bound) for every watcher to
    /// have started its watch, so that calls counted from then on are the
    /// operations' own.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if !self.shared.cache.synced(timeout).await {
            return false;
        }
        while !self.shared.cache.watching() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The cache's object count and whether it is synced, for a gauge.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.cache.stats()
    }

    /// Refuses new plans from now on and waits up to `grace` for running
    /// ones; true when none is left running.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.shared.closing.store(true, Ordering::SeqCst);
        let all = self.shared.config.max_concurrent_applies.max(1) as u32;
        tokio::time::timeout(grace, self.shared.applies.acquire_many(all))
            .await
            .is_ok_and(|permits| permits.is_ok())
    }

    /// Refuses a caller that is not the planner (per call, from the
    /// verified peer certificate), before anything else happens.
    fn authorize<T>(&self, request: &Request<T>, call: &str) -> Result<(), Status> {
        authorize(request, self.shared.config.authentication, call, CALLERS)
            .map(drop)
            .inspect_err(|status| tracing::warn!(call, error = %status.message(), "caller refused"))
    }

    /// The tonic service. Plans carry whole objects (a ConfigMap may hold
    /// 1 MiB), so requests may be larger than tonic's 4 MiB default.
    pub fn into_server(self) -> ExecutorServer<Self> {
        ExecutorServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// Serves the executor (and the standard gRPC health and server reflection
/// services) on `listener`
/// until `shutdown` completes: over mutual TLS with `tls`, plaintext
/// without (the caller checked that `listener` is on loopback).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Tls>,
    executor: ExecutorService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ExecutorServer<ExecutorService>>()
        .await;
    let admitted = k8sworker_tls::admit(
        executor.shared.config.authentication,
        "ServerReflection",
        CALLERS,
    );
    let (reflection, reflection_v1alpha) = k8sworker_proto::reflection(
        &["k8sworker.v1.Executor", "grpc.health.v1.Health"],
        &[tonic_health::pb::FILE_DESCRIPTOR_SET],
    )
    .expect("the compiled descriptor sets are complete");
    tonic::transport::Server::builder()
        .layer(k8sworker_telemetry::ServerTraceLayer::grpc())
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection, admitted.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, admitted))
        .add_service(executor.into_server())
        .serve_with_incoming_shutdown(k8sworker_tls::incoming(listener, tls), shutdown)
        .await
}

/// Only the planner may call an executor, whatever the call.
const CALLERS: &[Role] = &[Role::Planner];

#[tonic::async_trait]
impl Executor for ExecutorService {
    async fn observe(
        &self,
        request: Request<ObserveRequest>,
    ) -> Result<Response<ObserveResponse>, Status> {
        self.authorize(&request, "Executor.Observe")?;
        Ok(Response::new(
            self.shared.observe(request.into_inner()).await?,
        ))
    }

    type ApplyStream = ReceiverStream<Result<ApplyEvent, Status>>;

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<Self::ApplyStream>, Status> {
        self.authorize(&request, "Executor.Apply")?;
        let request = request.into_inner();
        let plan = request.plan.as_ref();
        let span = tracing::info_span!(
            "apply",
            plan.id = plan.map(|p| p.id.as_str()).unwrap_or_default(),
            installation = plan.map(|p| p.installation.as_str()).unwrap_or_default(),
            namespace = plan.map(|p| p.namespace.as_str()).unwrap_or_default(),
            steps = plan.map(|p| p.steps.len()).unwrap_or_default(),
        );
        let stream = self
            .shared
            .clone()
            .start_apply(request)
            .instrument(span.clone())
            .await;
        if let Err(error) = &stream {
            span.in_scope(|| tracing::warn!(%error, code = ?error.code(), "plan refused"));
        }
        Ok(Response::new(stream?))
    }

    async fn fetch_logs(
        &self,
        request: Request<FetchLogsRequest>,
    ) -> Result<Response<FetchLogsResponse>, Status> {
        self.authorize(&request, "Executor.FetchLogs")?;
        Ok(Response::new(
            self.shared.fetch_logs(request.into_inner()).await?,
        ))
    }
}

impl Shared {
    /// Waits for the cache's first sync; a list the API server refuses
    /// (the Role) is that refusal, a sync that does not come in time
    /// [`Error::NotSynced`].
    async fn wait_for_cache(&self) -> Result<(), Error> {
        if self.cache.synced(CACHE_SYNC_TIMEOUT).await {
            return Ok(());
        }
        match self.cache.refused() {
            Some((kind, status)) => Err(Error::kube(
                "list",
                format!("{} in {}", kind.plural(), self.config.namespace),
                kube::Error::Api(Box::new(status)),
            )),
            None => Err(Error::NotSynced {
                seconds: CACHE_SYNC_TIMEOUT.as_secs(),
            }),
        }
    }

    fn check_namespace(&self, namespace: &str) -> Result<(), Error> {
        if namespace == self.config.namespace {
            Ok(())
        } else {
            Err(Error::WrongNamespace {
                requested: namespace.to_string(),
                own: self.config.namespace.clone(),
            })
        }
    }

    #[instrument(skip_all, fields(installation = %request.installation, namespace = %request.namespace))]
    async fn observe(&self, request: ObserveRequest) -> Result<ObserveResponse, Error> {
        self.check_namespace(&request.namespace)?;
        if request.installation.is_empty() {
            return Err(Error::invalid("no installation name"));
        }
        self.wait_for_cache().await?;
        let observed = observe::observe(&self.cache, &self.config.namespace, &request);
        tracing::info!(
            components = observed
                .as_ref()
                .map(|o| o.components.len())
                .unwrap_or_default(),
            "observed from the cache"
        );
        observed
    }

    async fn start_apply(
        self: Arc<Self>,
        request: ApplyRequest,
    ) -> Result<ReceiverStream<Result<ApplyEvent, Status>>, Error> {
        let plan = request
            .plan
            .ok_or_else(|| Error::invalid("apply request without a plan"))?;
        let tenant = plan::admit(&plan, &self.config.namespace, &self.config.allowed_tenants)?;
        let mut steps = plan::validate(&plan, &self.config.namespace, &self.config.policy)?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let installation = self.installations.lock(&plan.installation).await;
        let permit: OwnedSemaphorePermit = self
            .applies
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::ShuttingDown)?;

        match self.acks.get(&plan.id, &plan.digest) {
            Cached::Ack(ack) => {
                tracing::info!("plan applied before, returning its Ack");
                return Ok(replay(ack));
            }
            Cached::OtherDigest(applied) => {
                return Err(Error::PlanIdReused {
                    id: plan.id.clone(),
                    applied,
                });
            }
            Cached::Unknown => {}
        }

        self.wait_for_cache().await?;
        let calls = ApiCalls::default();
        let client = self.clients.for_operation(&calls);
        let check_first = self.config.dry_run_wave;
        if let Err(refusal) = precondition::check_all(
            &client,
            &self.cache,
            &mut steps,
            &tenant,
            &plan.installation,
            !check_first,
        )
        .await
        {
            tracing::info!(calls = %calls.summary(), "preconditions checked");
            return Err(refusal);
        }
        // The all-or-nothing check; an object a CREATE expects absent that
        // exists (the cache had not seen it yet) is a stale plan, refused
        // like any other before the stream begins.
        let check = if check_first {
            match dry_run::check(&client, &self.cache, &steps).await {
                Err(stale @ Error::Stale(_)) => {
                    tracing::info!(calls = %calls.summary(), "an object to create exists");
                    return Err(stale);
                }
                checked => Check::Done(checked),
            }
        } else {
            Check::Skip
        };

        let health_timeout = request.wait_for_health.then(|| {
            match request.health_timeout_seconds {
                0 => self.config.default_health_timeout,
                seconds => Duration::from_secs(seconds.into()),
            }
            .min(self.config.max_health_timeout)
        });
        let (events, stream) = mpsc::channel(plan.steps.len() + 1);
        let shared = self.clone();
        let applying = crate::metrics::Applying::start();
        let work = async move {
            let ack = apply::execute(
                &client,
                &shared.cache,
                &plan,
                &steps,
                health_timeout,
                check,
                &events,
            )
            .await;
            shared.acks.insert(&plan.id, &plan.digest, ack.clone());
            let error = ack
                .error
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or_default();
            tracing::info!(
                calls = %calls.summary(),
                writes = calls.writes(),
                dry_runs = calls.dry_runs(),
                reads = calls.reads(),
                total_calls = calls.total(),
                error,
                "plan applied"
            );
            let _ = events
                .send(Ok(ApplyEvent {
                    event: Some(apply_event::Event::Ack(ack)),
                }))
                .await;
            drop((permit, installation, applying));
        };
        tokio::spawn(work.in_current_span());
        Ok(ReceiverStream::new(stream))
    }

    #[instrument(skip_all, fields(installation = %request.installation, namespace = %request.namespace))]
    async fn fetch_logs(&self, request: FetchLogsRequest) -> Result<FetchLogsResponse, Error> {
        self.check_namespace(&request.namespace)?;
        if request.installation.is_empty() {
            return Err(Error::invalid("no installation name"));
        }
        let mut limits = self.config.log_limits;
        if request.limit_bytes > 0 {
            limits.limit_bytes = request.limit_bytes.min(limits.total_bytes);
        }
        let calls = ApiCalls::default();
        let client = self.clients.for_operation(&calls);
        let logs = logs::fetch(
            &client,
            &self.config.namespace,
            &request.installation,
            request.pod_name.as_deref(),
            limits,
        )
        .await?;
        tracing::info!(logs = logs.len(), calls = %calls.summary(), "logs fetched");
        Ok(FetchLogsResponse { logs })
    }
}

/// The events of an Ack applied before: its steps, then the Ack itself.
fn replay(ack: Ack) -> ReceiverStream<Result<ApplyEvent, Status>> {
    let (events, stream) = mpsc::channel(ack.steps.len() + 1);
    for step in &ack.steps {
        let _ = events.try_send(Ok(ApplyEvent {
            event: Some(apply_event::Event::Step(step.clone())),
        }));
    }
    let _ = events.try_send(Ok(ApplyEvent {
        event: Some(apply_event::Event::Ack(ack)),
    }));
    ReceiverStream::new(stream)
}

/// One lock per installation name, created on first use and removed when
/// nobody holds or waits for it.
#[derive(Debug, Default)]
struct InstallationLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held while a plan of the installation runs.
#[derive(Debug)]
struct InstallationGuard {
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl InstallationLocks {
    async fn lock(&self, installation: &str) -> InstallationGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(installation.to_string()).or_default().clone()
        };
        InstallationGuard {
            name: installation.to_string(),
            guard: Some(lock.lock_owned().await),
            locks: self.locks.clone(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

impl Drop for InstallationGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.guard.take());
        if locks
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_plan_at_a_time_per_installation() {
        let locks = Arc::new(InstallationLocks::default());
        let first = locks.lock("a").await;
        let other = locks.lock("b").await;
        assert_eq!(locks.len(), 2);

        let waiting = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock("a").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a second plan for `a` waits");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
        assert_eq!(locks.len(), 2, "the lock for `a` stays while held");
        drop(second);
        drop(other);
        assert_eq!(locks.len(), 0, "unused locks are removed");
    }

    #[tokio::test]
    async fn replay_streams_the_steps_then_the_ack() {
        use k8sworker_proto::v1::StepOutcome;
        use tokio_stream::StreamExt as _;
        let ack = Ack {
            plan_id: "p".into(),
            steps: vec![StepOutcome::default(), StepOutcome::default()],
            ..Default::default()
        };
        let events: Vec<_> = replay(ack.clone()).collect().await;
        assert_eq!(events.len(), 3);
        assert!(matches!(
            &events[2],
            Ok(ApplyEvent { event: Some(apply_event::Event::Ack(last)) }) if *last == ack
        ));
    }
}
