//! The gateway's loop: claim, execute, report; and its shutdown.
//!
//! ```text
//! run ─▶ check (token, cluster, server version) ─▶ loop:
//!          claim (long-poll, or poll on the Backoff schedule)
//!            └─ workitem ─▶ span workitem.process (parent: the workitem's traceparent)
//!                             task() ── invalid ──────────────────────────▶ fail INVALID
//!                             ask first (a renew): cancelled ─▶ release, no Execute
//!                             (a planner answering NOT_SERVING is waited for)
//!                             Planner.Execute ‖ renew the lease every min(lease/3, 2 s)
//!                             outcome::decide ─▶ (fetchLogs: upload documents)
//!                             complete | fail | release   (retried while the server is away)
//! SIGTERM ─▶ stop claiming; the current workitem finishes within the grace
//!            period, else it is released; then run returns.
//! ```
//!
//! One workitem at a time: the control plane serialises the operations of
//! an installation anyway, and more throughput is more gateways (claims are
//! atomic, so any number can serve one cluster). In REST mode
//! ([`crate::rest`]) the claim is `rest_next` and the report `rest_deliver`;
//! there is no lease to renew, and one gateway serves a cluster.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use k8sworker_client::protocol::{
    Ancillaries, ClaimWorkitem, ClaimedWorkitem, ClusterContext, CompleteWorkitem, FailWorkitem,
    K8sWorkitem, ReleaseWorkitem, RenewWorkitemLease,
};
use k8sworker_client::{Client, Error as ControlPlaneError};
use k8sworker_core::plan::Operation;
use k8sworker_proto::convert;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_client::PlannerClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::backoff::{Backoff, Poll, Schedule};
use crate::config::{ClaimMode, Config, ConfigError, Protocol};
use crate::logs;
use crate::outcome::{self, FailStatus, Outcome, PlannerError};
use crate::rest::{self, RecordWrite};
use crate::workitem::Workitem;

type Planner = PlannerClient<k8sworker_telemetry::GrpcClientChannel>;

/// Why the gateway could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is not valid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The control-plane client could not be built (URL, token, TLS).
    #[error("the control-plane client could not be built")]
    Client(#[from] k8sworker_client::BuildError),
    /// The TLS settings or files cannot be used.
    #[error("TLS for the planner hop")]
    Tls(#[from] k8sworker_tls::TlsArgsError),
    /// The planner's URL is not a valid gRPC endpoint.
    #[error("the planner address `{url}` is not valid")]
    PlannerAddress {
        /// The configured URL.
        url: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
    /// The K8sCluster this gateway serves does not exist in the token's
    /// namespace.
    #[error(
        "the K8sCluster `{cluster}` does not exist in the token's namespace; create it (its name must be this gateway's CLUSTER_NAME)"
    )]
    UnknownCluster {
        /// The configured cluster name.
        cluster: String,
    },
    /// The control plane refused in a way retrying cannot fix (the token,
    /// no worker protocol), or stayed away in `--once` mode.
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
}

/// What the server says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerInfo {
    /// `name version`, when the server has a version endpoint.
    pub version: Option<String>,
    /// Whether the server says its claims can wait (long-poll); `None` when
    /// it does not say.
    pub long_poll: Option<bool>,
    /// Whether the server has the version endpoint the claim protocol
    /// comes with; `None` when asking failed for another reason.
    pub version_endpoint: Option<bool>,
}

/// Something the gateway did, for observers (tests, the load driver).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A workitem was claimed.
    Claimed {
        /// The workitem.
        request_id: String,
        /// Its operation.
        operation: String,
        /// Its installation.
        installation: String,
        /// When the control plane created it, per the server.
        created_at: Option<SystemTime>,
        /// When the claim was answered.
        at: SystemTime,
    },
    /// The outcome was reported (or could not be).
    Reported {
        /// The workitem.
        request_id: String,
        /// Its operation.
        operation: String,
        /// How it ended.
        report: Report,
        /// When the report was answered.
        at: SystemTime,
    },
}

/// How a claimed workitem ended for this gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `completeWorkitem` was accepted.
    Completed,
    /// `failWorkitem` was accepted.
    Failed {
        /// `FAILED` or `INVALID`.
        status: String,
        /// The message reported.
        message: String,
    },
    /// `releaseWorkitem` was accepted: the workitem is queued again.
    Released {
        /// Why it was released.
        reason: String,
    },
    /// The lease was lost or the report could not be delivered; the
    /// workitem returns to the queue when its lease expires.
    Abandoned {
        /// Why.
        reason: String,
    },
    /// The workitem was cancelled before the planner was asked to execute
    /// it: nothing was applied, and the release told the control plane so.
    Cancelled {
        /// What the control plane said.
        reason: String,
    },
}

impl<'a> From<&'a Report> for crate::metrics::Ended<'a> {
    fn from(report: &'a Report) -> Self {
        match report {
            Report::Completed => Self::Completed,
            Report::Failed { status, .. } => Self::Failed(status),
            Report::Released { .. } => Self::Returned("released"),
            Report::Abandoned { .. } => Self::Returned("abandoned"),
            Report::Cancelled { .. } => Self::Returned("cancelled"),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Workitems completed.
    pub completed: u64,
    /// Workitems failed (`FAILED` or `INVALID`).
    pub failed: u64,
    /// Workitems released back to the queue.
    pub released: u64,
    /// Workitems abandoned (lease lost, report undeliverable).
    pub abandoned: u64,
    /// Workitems cancelled before their Execute.
    pub cancelled: u64,
}

impl Summary {
    fn count(&mut self, report: &Report) {
        match report {
            Report::Completed => self.completed += 1,
            Report::Failed { .. } => self.failed += 1,
            Report::Released { .. } => self.released += 1,
            Report::Abandoned { .. } => self.abandoned += 1,
            Report::Cancelled { .. } => self.cancelled += 1,
        }
    }

    /// Every workitem this run claimed and ended.
    pub fn processed(&self) -> u64 {
        self.completed + self.failed + self.released + self.abandoned + self.cancelled
    }
}

/// A gateway for one cluster.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    control_plane: Client,
    planner: Planner,
    channel: Channel,
    tls: Option<k8sworker_tls::Tls>,
    worker_id: String,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// The protocol chosen at start.
    worker: OnceLock<Worker>,
}

/// The worker protocol a running gateway speaks (`--protocol`, resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Worker {
    /// `K8sManager` claims under a lease.
    Claim,
    /// Vantiq's documented resources only ([`crate::rest`]).
    Rest,
}

/// A REST run's state: the workitems it could not mark `PENDING` (left to
/// the next run) and the cluster's context.
#[derive(Debug, Default)]
struct RestQueue {
    skipped: HashSet<String>,
    cluster: Option<ClusterContext>,
}

/// Whether claims wait on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    LongPoll,
    Poll,
}

impl Gateway {
    /// Builds the clients; no I/O yet.
    pub fn new(config: Config) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let control_plane = Client::builder(&config.vantiq_url)
            .token(config.access_token.clone())
            .timeout(config.request_timeout)
            .user_agent(concat!("k8sworker-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tenant = config.tenant().map_err(ConfigError::Tenant)?;
        let tls = config.tls.load(&k8sworker_tls::Identity::gateway(tenant))?;
        let endpoint = Endpoint::from_shared(config.planner_url.clone())
            .map_err(|source| GatewayError::PlannerAddress {
                url: config.planner_url.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel =
            k8sworker_tls::channel(endpoint, tls.as_ref(), k8sworker_tls::Identity::Planner);
        let planner = PlannerClient::new(k8sworker_telemetry::grpc_client_channel(channel.clone()))
            .max_decoding_message_size(64 * 1024 * 1024);
        let worker_id = config.worker_id();
        Ok(Gateway {
            config: Arc::new(config),
            control_plane,
            planner,
            channel,
            tls,
            worker_id,
            events: None,
            worker: OnceLock::new(),
        })
    }

    /// Sends an [`Event`] for every claim and report to `events`.
    pub fn with_events(mut self, events: mpsc::UnboundedSender<Event>) -> Self {
        self.events = Some(events);
        self
    }

    /// This gateway's name in leases.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Runs until `shutdown` resolves (daemon) or the queue is empty
    /// (`--once`). Fails only for what retrying cannot fix: a refused token,
    /// a missing cluster, a server without the worker protocol.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Summary, GatewayError> {
        let (stop, stopping) = watch::channel(false);
        let watcher = tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let reload = self
            .tls
            .as_ref()
            .map(|tls| tls.watch(self.config.tls.reload_interval()));
        let result = self.serve(stopping).await;
        watcher.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        result
    }

    async fn serve(&self, mut stopping: watch::Receiver<bool>) -> Result<Summary, GatewayError> {
        let config = &self.config;
        info!(
            version = env!("CARGO_PKG_VERSION"),
            server = %self.control_plane.base(),
            cluster = %config.cluster_name,
            planner = %config.planner_url,
            worker = %self.worker_id,
            mode = if config.once { "once" } else { "daemon" },
            "k8sworker-gateway started"
        );
        let Some(server) = self.check(&mut stopping).await? else {
            return Ok(Summary::default());
        };
        self.check_planner().await;
        let worker = match (config.protocol, server.version_endpoint) {
            (Protocol::Rest, _) | (Protocol::Auto, Some(false)) => Worker::Rest,
            _ => Worker::Claim,
        };
        let _ = self.worker.set(worker);
        info!(protocol = ?worker, "worker protocol chosen");
        let mut waiting = match (config.claim_mode, server.long_poll) {
            _ if worker == Worker::Rest => Waiting::Poll,
            (ClaimMode::Poll, _) | (ClaimMode::Auto, Some(false)) => Waiting::Poll,
            _ => Waiting::LongPoll,
        };
        let mut queue = RestQueue::default();
        if config.once {
            info!("processing the queued workitems, then exiting");
        } else {
            info!(claims = ?waiting, "waiting for workitems");
        }
        let mut backoff = Backoff::new(Schedule {
            interval: config.poll_interval,
            idle_max: config.idle_poll_max,
            ..Schedule::default()
        });
        let mut summary = Summary::default();
        let mut quick_empty = 0u32;
        loop {
            if *stopping.borrow() {
                break;
            }
            let wait = if config.once || waiting == Waiting::Poll {
                Duration::ZERO
            } else {
                config.long_poll_wait
            };
            let asked = Instant::now();
            let params = ClaimWorkitem {
                cluster_name: config.cluster_name.clone(),
                worker_id: Some(self.worker_id.clone()),
                lease_seconds: Some(config.lease.as_secs().max(1) as f64),
                wait_seconds: Some(wait.as_secs_f64()),
            };
            let claim = match worker {
                // A workitem marked PENDING has no lease to expire: the
                // listing is not cut short.
                Worker::Rest => self.rest_next(&mut queue).await,
                Worker::Claim => tokio::select! {
                    claim = self.control_plane.call(&params) => claim.map(|c| c.map(|c| (c, None))),
                    // A claim cut short may have been granted: its lease expires
                    // and the workitem returns to the queue.
                    () = signalled(&mut stopping) => break,
                },
            };
            match claim {
                Ok(Some((claimed, refusal))) => {
                    backoff.record(Poll::Work);
                    quick_empty = 0;
                    let report = self.process(&claimed, refusal, &stopping).await;
                    summary.count(&report);
                    continue;
                }
                Ok(None) if config.once => {
                    if summary.processed() == 0 {
                        info!("no workitem available; exiting");
                    } else {
                        let processed = summary.processed();
                        let noun = if processed == 1 {
                            "workitem"
                        } else {
                            "workitems"
                        };
                        info!(processed, "{processed} {noun} processed; exiting");
                    }
                    break;
                }
                Ok(None) => {
                    backoff.record(Poll::Empty);
                    if waiting == Waiting::LongPoll && config.claim_mode == ClaimMode::Auto {
                        // A server that ignores the wait answers at once, every time.
                        if asked.elapsed() < (wait / 4).min(Duration::from_secs(1)) {
                            quick_empty += 1;
                        } else {
                            quick_empty = 0;
                        }
                        if quick_empty >= 3 {
                            info!("the server answers claims without waiting; polling instead");
                            waiting = Waiting::Poll;
                        }
                    }
                }
                Err(error @ ControlPlaneError::NotImplemented { .. }) => {
                    error!(%error, "cannot claim workitems");
                    return Err(error.into());
                }
                Err(error) if worker == Worker::Rest && rest::refuses_the_worker(&error) => {
                    error!(%error, "the server does not let this token mark workitems PENDING (the documented-REST protocol's writes); check the token's profile (k8sWorker__system) and cluster, or run with --protocol claim against a server that offers the claim protocol");
                    return Err(error.into());
                }
                Err(error) if config.once && !error.is_transient() => {
                    error!(%error, "claim failed");
                    return Err(error.into());
                }
                Err(error) => {
                    backoff.record(Poll::Error);
                    warn!(%error, failures = backoff.errors(), "claim failed; retrying");
                    if config.once && backoff.errors() >= 5 {
                        return Err(error.into());
                    }
                }
            }
            let delay = if waiting == Waiting::LongPoll && backoff.errors() == 0 && quick_empty == 0
            {
                Duration::ZERO
            } else {
                backoff.delay(fastrand::f64())
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = signalled(&mut stopping) => break,
            }
        }
        info!(
            completed = summary.completed,
            failed = summary.failed,
            released = summary.released,
            abandoned = summary.abandoned,
            cancelled = summary.cancelled,
            "k8sworker-gateway stopped"
        );
        Ok(summary)
    }

    /// The connection and version check, retried while the server is
    /// unreachable; `None` when shutdown came first.
    async fn check(
        &self,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<Option<ServerInfo>, GatewayError> {
        let mut backoff = Backoff::new(Schedule::default());
        loop {
            match self.server_info().await {
                Ok(info) => {
                    info!(
                        server_version = info.version.as_deref().unwrap_or("unknown (no /api/v1/version)"),
                        long_poll = ?info.long_poll,
                        "connected to the control plane"
                    );
                    return Ok(Some(info));
                }
                Err(GatewayError::ControlPlane(error)) if error.is_transient() => {
                    backoff.record(Poll::Error);
                    warn!(%error, failures = backoff.errors(), "control plane not reachable yet; retrying");
                    if self.config.once && backoff.errors() >= 5 {
                        return Err(error.into());
                    }
                }
                Err(error) => {
                    error!(%error, "connection check failed");
                    return Err(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay(fastrand::f64())) => {}
                () = signalled(stopping) => return Ok(None),
            }
        }
    }

    /// Checks the token and that the cluster exists, and asks the server
    /// for its version when it has a version endpoint.
    async fn server_info(&self) -> Result<ServerInfo, GatewayError> {
        let cluster = &self.config.cluster_name;
        match self.control_plane.cluster(cluster).await {
            Ok(_) => {}
            Err(ControlPlaneError::NotFound { .. }) => {
                return Err(GatewayError::UnknownCluster {
                    cluster: cluster.clone(),
                });
            }
            Err(error) => return Err(error.into()),
        }
        // A server without the endpoint (or with another answer) says
        // nothing; the claim mode then decides alone.
        let (version, version_endpoint) = match self.control_plane.version().await {
            Ok(version) => (version, Some(true)),
            Err(ControlPlaneError::NotFound { .. }) => (Default::default(), Some(false)),
            Err(_) => (Default::default(), None),
        };
        Ok(ServerInfo {
            version: version.version.map(|v| match version.name {
                Some(name) => format!("{name} {v}"),
                None => v,
            }),
            long_poll: version.long_poll,
            version_endpoint,
        })
    }

    /// Logs whether the planner answers (gRPC health); work is claimed
    /// either way, and an unreachable planner releases workitems until it is back.
    async fn check_planner(&self) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut health = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: "k8sworker.v1.Planner".into(),
        };
        let planner = &self.config.planner_url;
        match tokio::time::timeout(Duration::from_secs(5), health.check(request)).await {
            Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                info!(%planner, "planner serving")
            }
            Ok(Ok(answer)) => {
                warn!(%planner, status = answer.get_ref().status, "planner not serving yet")
            }
            Ok(Err(status)) => {
                warn!(%planner, error = %status.message(), "planner not reachable yet")
            }
            Err(_) => warn!(%planner, "planner did not answer within 5 s"),
        }
    }

    /// Processes one claimed workitem inside its `workitem.process` span.
    async fn process(
        &self,
        claimed: &ClaimedWorkitem,
        refusal: Option<String>,
        stopping: &watch::Receiver<bool>,
    ) -> Report {
        let item = match Workitem::from_claim(claimed) {
            Ok(item) => item,
            Err(error) => {
                error!(%error, "unreadable claim; releasing it");
                let (request_id, lease_id) = (&claimed.workitem.request_id, &claimed.lease_id);
                if !request_id.is_empty() && !lease_id.is_empty() {
                    let release = ReleaseWorkitem {
                        request_id: request_id.clone(),
                        lease_id: lease_id.clone(),
                    };
                    let _ = self.control_plane.call(&release).await;
                }
                return Report::Abandoned {
                    reason: error.to_string(),
                };
            }
        };
        let span = info_span!(
            "workitem.process",
            request_id = %item.request_id,
            operation = %item.operation,
            installation = %item.installation,
            cluster = %item.cluster.cluster_name,
            attempt = item.attempts,
            worker = %self.worker_id,
        );
        if let Some(traceparent) = &item.traceparent {
            k8sworker_telemetry::set_parent(
                &span,
                k8sworker_telemetry::context_from_traceparent(traceparent),
            );
        }
        let _in_flight = crate::metrics::InFlight::start();
        self.process_item(item, refusal, stopping.clone())
            .instrument(span)
            .await
    }

    fn worker(&self) -> Worker {
        self.worker.get().copied().unwrap_or(Worker::Claim)
    }

    /// `refusal`: why the workitem is `INVALID` before anything is asked
    /// (REST mode: secret values, a missing document).
    async fn process_item(
        &self,
        item: Workitem,
        refusal: Option<String>,
        stopping: watch::Receiver<bool>,
    ) -> Report {
        self.emit(Event::Claimed {
            request_id: item.request_id.clone(),
            operation: item.operation.clone(),
            installation: item.installation.clone(),
            created_at: item.created_at,
            at: SystemTime::now(),
        });
        info!("workitem claimed");
        crate::metrics::claimed(&item.operation, item.created_at);
        if let Some(message) = refusal {
            let outcome = Outcome::Fail {
                status: FailStatus::Invalid,
                message,
            };
            return self.report(&item, outcome, &stopping).await;
        }
        let task = match item.task() {
            Ok(mut task) => {
                // The tenant is the gateway's own, never the workitem's.
                task.request.tenant = self
                    .config
                    .tenant()
                    .ok()
                    .map(|tenant| convert::tenant_to_pb(&tenant));
                task
            }
            Err(message) => {
                let outcome = Outcome::Fail {
                    status: FailStatus::Invalid,
                    message,
                };
                return self.report(&item, outcome, &stopping).await;
            }
        };
        let lease = item.lease.unwrap_or(self.config.lease);
        let (lease_tx, mut lease_state) = watch::channel(LeaseState::Held);
        // REST mode has no lease to renew or ask about.
        let _renewer = (self.worker() == Worker::Claim).then(|| {
            AbortOnDrop(tokio::spawn(
                renew(
                    self.control_plane.clone(),
                    item.request_id.clone(),
                    item.lease_id.clone(),
                    self.config.lease,
                    lease,
                    lease_tx,
                )
                .instrument(tracing::Span::current()),
            ))
        });

        // Nothing is applied until the planner's Execute: ask first, so a
        // workitem cancelled since the claim is never started.
        if self.worker() == Worker::Claim
            && let Some(report) = self
                .before_execute(&item, lease, &mut lease_state, &stopping)
                .await
        {
            return report;
        }

        let mut planner = self.planner.clone();
        let execute = tokio::time::timeout(
            self.config.execute_timeout,
            planner.execute(task.request.clone()),
        );
        tokio::pin!(execute);
        let grace = self.config.shutdown_grace;
        let mut signal = stopping.clone();
        let deadline = async move {
            signalled(&mut signal).await;
            info!(
                ?grace,
                "shutting down: the current workitem may finish within the grace period"
            );
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        let started = Instant::now();
        // Renewals are watched until they report a cancellation (or stop).
        let mut watching = true;
        let answer = loop {
            tokio::select! {
                answer = &mut execute => break answer,
                changed = lease_state.changed(), if watching => {
                    let state = *lease_state.borrow_and_update();
                    match (changed, state) {
                        (Ok(()), LeaseState::Lost) => {
                            warn!("the lease was lost while the operation ran; leaving the workitem to its new owner");
                            return self.reported(&item, Report::Abandoned { reason: "lease lost".into() });
                        }
                        (Ok(()), LeaseState::Cancelled | LeaseState::Gone) => {
                            // An apply may be running: it is all or nothing,
                            // so it finishes and its outcome is reported
                            // against the cancelled workitem.
                            warn!("the workitem was cancelled while the planner executes it; the operation finishes and its outcome is reported");
                            watching = false;
                        }
                        (Ok(()), LeaseState::Held) => {}
                        (Err(_), _) => watching = false,
                    }
                }
                _ = &mut deadline => {
                    warn!("grace period over; releasing the workitem");
                    let outcome = Outcome::Retry { message: "the gateway is shutting down".into() };
                    return self.report(&item, outcome, &stopping).await;
                }
            }
        };
        let result: Result<pb::ExecuteResponse, PlannerError> = match answer {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(PlannerError {
                code: tonic::Code::DeadlineExceeded,
                message: format!(
                    "the planner did not answer within {:?}",
                    self.config.execute_timeout
                ),
            }),
        };
        match &result {
            Ok(_) => info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "planner executed"
            ),
            Err(error) => {
                warn!(code = ?error.code, error = %error.message, elapsed_ms = started.elapsed().as_millis() as u64, "planner failed")
            }
        }
        let mut outcome = outcome::decide(
            task.operation,
            result.as_ref(),
            item.attempts,
            self.config.max_attempts,
        );
        if task.operation == Operation::FetchLogs
            && let (Outcome::Complete(_), Ok(response)) = (&outcome, &result)
        {
            let documents = logs::documents(
                &item.cluster.cluster_name,
                &item.installation,
                task.document_group.as_deref(),
                &response.logs,
                SystemTime::now(),
            );
            for document in documents {
                let size = document.content.len();
                match self
                    .control_plane
                    .upload_document(&document.name, document.content, "text/plain")
                    .await
                {
                    Ok(_) => info!(document = %document.name, bytes = size, "log uploaded"),
                    Err(error) => {
                        warn!(%error, document = %document.name, "log upload failed");
                        outcome = if error.is_transient() {
                            Outcome::Retry {
                                message: error.to_string(),
                            }
                        } else {
                            Outcome::Fail {
                                status: FailStatus::Failed,
                                message: format!("uploading {} failed: {error}", document.name),
                            }
                        };
                        break;
                    }
                }
            }
        }
        self.report(&item, outcome, &stopping).await
    }

    /// The last word before Execute: one renew asks whether the workitem is
    /// still ours. Cancelled (the server answers 410, or 404 once the item is
    /// gone) → released without Execute, so nothing is applied; lost → left
    /// to its new owner. While the planner answers `NOT_SERVING` (starting or
    /// draining) the gateway waits, asking again every renew period, so a
    /// cancellation meanwhile still stops the work. `None`: go on and execute.
    async fn before_execute(
        &self,
        item: &Workitem,
        lease: Duration,
        lease_state: &mut watch::Receiver<LeaseState>,
        stopping: &watch::Receiver<bool>,
    ) -> Option<Report> {
        let ask = RenewWorkitemLease {
            request_id: item.request_id.clone(),
            lease_id: item.lease_id.clone(),
            lease_seconds: Some(self.config.lease.as_secs().max(1) as f64),
        };
        let mut stopping = stopping.clone();
        loop {
            let state = match self.control_plane.call(&ask).await {
                Ok(_) => *lease_state.borrow(),
                Err(error) => match LeaseState::after(&error) {
                    Some(state) => state,
                    // The server is away: the renewer keeps trying; go on.
                    None => {
                        warn!(%error, "asking before Execute failed; going on");
                        *lease_state.borrow()
                    }
                },
            };
            match state {
                LeaseState::Held => {}
                LeaseState::Lost => {
                    warn!(
                        "the lease was lost before Execute; leaving the workitem to its new owner"
                    );
                    return Some(self.reported(
                        item,
                        Report::Abandoned {
                            reason: "lease lost".into(),
                        },
                    ));
                }
                LeaseState::Cancelled | LeaseState::Gone => {
                    return Some(self.cancelled(item).await);
                }
            }
            if !self.planner_not_serving().await {
                return None;
            }
            info!("the planner is not serving; waiting before Execute");
            tokio::select! {
                _ = tokio::time::sleep(renew_period(lease)) => {}
                _ = lease_state.changed() => {}
                () = signalled(&mut stopping) => {
                    let outcome = Outcome::Retry { message: "the gateway is shutting down".into() };
                    return Some(self.report(item, outcome, &stopping).await);
                }
            }
        }
    }

    /// Acknowledges a cancellation learned before Execute: the release lets
    /// the control plane drop the workitem (and any `self` quota charge it
    /// held) at once instead of when the lease expires.
    async fn cancelled(&self, item: &Workitem) -> Report {
        info!("the workitem was cancelled before Execute; nothing was applied");
        let release = ReleaseWorkitem {
            request_id: item.request_id.clone(),
            lease_id: item.lease_id.clone(),
        };
        if let Err(error) = self.control_plane.call(&release).await {
            debug!(%error, "acknowledging the cancellation failed; the lease expires instead");
        }
        self.reported(
            item,
            Report::Cancelled {
                reason: "cancelled before Execute".into(),
            },
        )
    }

    /// Whether the planner answers its health check with `NOT_SERVING`.
    /// Unreachable or any other answer is `false`: Execute then says what
    /// is wrong, as before.
    async fn planner_not_serving(&self) -> bool {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut health = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: "k8sworker.v1.Planner".into(),
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), health.check(request)).await,
            Ok(Ok(answer)) if answer.get_ref().status == ServingStatus::NotServing as i32
        )
    }

    /// Delivers the outcome, retrying while the control plane is away
    /// (bounded by the shutdown grace, or five minutes). A failure's message
    /// is cut to what the control plane accepts; a failure report it still
    /// refuses is sent again once in a short form, and a refused completion
    /// becomes a failure, so an outcome is not dropped for its wording.
    async fn report(
        &self,
        item: &Workitem,
        outcome: Outcome,
        stopping: &watch::Receiver<bool>,
    ) -> Report {
        // Retried for five minutes, or for the grace period once shutdown began.
        let mut give_up = Instant::now() + Duration::from_secs(300);
        let mut shutdown_seen = false;
        let mut backoff = Backoff::new(Schedule {
            error_max: Duration::from_secs(5),
            ..Schedule::default()
        });
        let mut outcome = outcome;
        let mut shortened = false;
        loop {
            if !shutdown_seen && *stopping.borrow() {
                shutdown_seen = true;
                give_up = give_up.min(Instant::now() + self.config.shutdown_grace);
            }
            let (request_id, lease_id) = (item.request_id.clone(), item.lease_id.clone());
            let delivered = match &outcome {
                _ if self.worker() == Worker::Rest => self.rest_deliver(item, &outcome).await,
                Outcome::Complete(report) => {
                    let params = CompleteWorkitem {
                        request_id,
                        lease_id,
                        installation: report.clone(),
                    };
                    self.control_plane
                        .call(&params)
                        .await
                        .map(|_| Report::Completed)
                }
                Outcome::Fail { status, message } => {
                    let message = outcome::reportable(message, outcome::MAX_PARAM_BYTES);
                    let params = FailWorkitem {
                        request_id,
                        lease_id,
                        status: *status,
                        message: message.clone(),
                    };
                    self.control_plane
                        .call(&params)
                        .await
                        .map(|_| Report::Failed {
                            status: status.as_str().to_owned(),
                            message: message.clone(),
                        })
                }
                Outcome::Retry { message } => {
                    let params = ReleaseWorkitem {
                        request_id,
                        lease_id,
                    };
                    self.control_plane
                        .call(&params)
                        .await
                        .map(|_| Report::Released {
                            reason: message.clone(),
                        })
                }
            };
            match delivered {
                Ok(report) => {
                    match &report {
                        Report::Completed => info!("workitem completed"),
                        Report::Failed { status, message } => {
                            warn!(%status, %message, "workitem failed")
                        }
                        Report::Released { reason } => {
                            info!(%reason, "workitem released for another attempt")
                        }
                        Report::Abandoned { .. } | Report::Cancelled { .. } => {}
                    }
                    return self.reported(item, report);
                }
                Err(error @ ControlPlaneError::LeaseLost { .. }) => {
                    warn!(%error, "the lease was lost before the outcome was reported");
                    return self.reported(
                        item,
                        Report::Abandoned {
                            reason: error.to_string(),
                        },
                    );
                }
                Err(error) if error.is_transient() && Instant::now() < give_up => {
                    backoff.record(Poll::Error);
                    warn!(%error, failures = backoff.errors(), "reporting failed; retrying");
                    tokio::time::sleep(backoff.delay(fastrand::f64())).await;
                }
                Err(error) => {
                    // A report the server refuses (e.g. a property it does
                    // not accept) still must not leave the workitem hanging.
                    if let (Outcome::Fail { message, .. }, ControlPlaneError::Rejected { .. }) =
                        (&outcome, &error)
                        && !shortened
                    {
                        error!(%error, "the control plane refused the failure report; sending it in a short form");
                        shortened = true;
                        outcome = Outcome::Fail {
                            status: FailStatus::Failed,
                            message: outcome::fallback_message(message),
                        };
                        continue;
                    }
                    if let (
                        Outcome::Complete(_),
                        ControlPlaneError::Rejected { .. } | ControlPlaneError::NotFound { .. },
                    ) = (&outcome, &error)
                    {
                        error!(%error, "the control plane refused the completion; failing the workitem instead");
                        outcome = Outcome::Fail {
                            status: FailStatus::Failed,
                            message: format!(
                                "the operation succeeded but its report was refused: {error}"
                            ),
                        };
                        continue;
                    }
                    error!(%error, "the outcome could not be reported; the lease will expire");
                    return self.reported(
                        item,
                        Report::Abandoned {
                            reason: error.to_string(),
                        },
                    );
                }
            }
        }
    }

    /// REST mode's claim: lists the cluster's `REQUESTED` workitems, marks
    /// the next one ([`rest::next`]) `PENDING` and gathers what the claim
    /// protocol would hand over (the installation record, the cluster, the
    /// mounted documents). A workitem the server refuses to mark is skipped
    /// for the rest of this run. The second value is why the workitem is
    /// `INVALID` before anything is asked of the cluster.
    async fn rest_next(
        &self,
        queue: &mut RestQueue,
    ) -> Result<Option<(ClaimedWorkitem, Option<String>)>, ControlPlaneError> {
        let cluster_name = &self.config.cluster_name;
        loop {
            let (filter, sort) = rest::queued(cluster_name);
            let listing: Vec<K8sWorkitem> = self
                .control_plane
                .select(rest::WORKITEMS, &filter, &sort, rest::PAGE)
                .await?
                .into_iter()
                .filter_map(|item| serde_json::from_value(item).ok())
                .collect();
            let Some(item) = rest::next(&listing, &queue.skipped).cloned() else {
                return Ok(None);
            };
            let pending = serde_json::json!({"status": "PENDING"});
            match self
                .control_plane
                .update(rest::WORKITEMS, &item.request_id, &pending)
                .await
            {
                Ok(_) => {}
                Err(error) if error.is_transient() || rest::refuses_the_worker(&error) => {
                    return Err(error);
                }
                Err(error) => {
                    warn!(%error, request_id = %item.request_id, "the workitem could not be marked PENDING; skipping it");
                    queue.skipped.insert(item.request_id.clone());
                    continue;
                }
            }
            match self.rest_gather(item.clone(), queue).await {
                Ok(found) => return Ok(Some(found)),
                Err(error) => {
                    // Back to the queue, for this run's next listing or the next run.
                    let requested = serde_json::json!({"status": "REQUESTED"});
                    let _ = self
                        .control_plane
                        .update(rest::WORKITEMS, &item.request_id, &requested)
                        .await;
                    return Err(error);
                }
            }
        }
    }

    /// The claim-shaped view of a workitem marked `PENDING` in REST mode.
    async fn rest_gather(
        &self,
        workitem: K8sWorkitem,
        queue: &mut RestQueue,
    ) -> Result<(ClaimedWorkitem, Option<String>), ControlPlaneError> {
        let cluster = match &queue.cluster {
            Some(cluster) => cluster.clone(),
            None => {
                let found = self
                    .control_plane
                    .cluster(&self.config.cluster_name)
                    .await?;
                let cluster = ClusterContext {
                    name: self.config.cluster_name.clone(),
                    ingress_default_node: found
                        .get("ingressDefaultNode")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned),
                };
                queue.cluster = Some(cluster.clone());
                cluster
            }
        };
        let installation = self
            .control_plane
            .find(rest::INSTALLATIONS, &rest::installation_of(&workitem))
            .await?;
        let mut refusal = rest::needs_claim_protocol(&workitem.operation, &workitem.request);
        let mut ancillaries = Ancillaries::default();
        if refusal.is_none() {
            for name in rest::documents(&workitem.request) {
                let content = match self.control_plane.document(&name).await {
                    Ok(_) => self.control_plane.download_document(&name).await,
                    Err(error) => Err(error),
                };
                match content {
                    Ok(content) => {
                        ancillaries
                            .documents
                            .insert(name, Ancillaries::encode_document(&content));
                    }
                    Err(ControlPlaneError::NotFound { .. }) => {
                        refusal = Some(format!(
                            "the document `{name}` a file entry mounts does not exist"
                        ));
                        break;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        let mut workitem = workitem;
        // Listed before it was marked PENDING, which counted this attempt.
        workitem.attempts = workitem.attempts.map(|attempts| attempts + 1);
        let claimed = ClaimedWorkitem {
            workitem,
            // Never sent: REST mode has no lease.
            lease_id: "-".into(),
            lease_seconds: None,
            cluster,
            installation,
            ancillaries,
        };
        Ok((claimed, refusal))
    }

    /// REST mode's report: the installation record as the outcome leaves it
    /// ([`rest::record_after_success`], [`rest::record_after_failure`]),
    /// then the workitem deleted (success), marked `FAILED`/`INVALID` with
    /// the message, or put back to `REQUESTED` (retry).
    async fn rest_deliver(
        &self,
        item: &Workitem,
        outcome: &Outcome,
    ) -> Result<Report, ControlPlaneError> {
        let request_id = &item.request_id;
        let Some(operation) = Operation::parse(&item.operation) else {
            let (status, message) = match outcome {
                Outcome::Fail { status, message } => (*status, message.clone()),
                _ => (
                    FailStatus::Invalid,
                    format!("unknown operation `{}`", item.operation),
                ),
            };
            return self.rest_fail(request_id, status, &message).await;
        };
        let done = rest::Done {
            operation,
            installation: &item.installation,
            cluster: &item.cluster.cluster_name,
            request: &item.request,
            requested_by: item.requested_by.as_deref().unwrap_or_default(),
            recorded: item.record.is_some(),
        };
        let write = match outcome {
            Outcome::Complete(report) => {
                rest::record_after_success(&done, report, SystemTime::now())
            }
            Outcome::Fail { status, message } => {
                rest::record_after_failure(&done, *status, message)
            }
            Outcome::Retry { .. } => RecordWrite::Keep,
        };
        match write {
            RecordWrite::Upsert(record) => {
                self.control_plane
                    .upsert(rest::INSTALLATIONS, &record)
                    .await?;
            }
            RecordWrite::Delete => match self
                .control_plane
                .delete_one(rest::INSTALLATIONS, &item.installation)
                .await
            {
                Ok(()) | Err(ControlPlaneError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            },
            RecordWrite::Keep => {}
        }
        match outcome {
            Outcome::Complete(_) => match self
                .control_plane
                .delete_one(rest::WORKITEMS, request_id)
                .await
            {
                // A retry whose first attempt went through.
                Ok(()) | Err(ControlPlaneError::NotFound { .. }) => Ok(Report::Completed),
                Err(error) => Err(error),
            },
            Outcome::Fail { status, message } => self.rest_fail(request_id, *status, message).await,
            Outcome::Retry { message } => {
                let requested = serde_json::json!({"status": "REQUESTED"});
                self.control_plane
                    .update(rest::WORKITEMS, request_id, &requested)
                    .await
                    .map(|_| Report::Released {
                        reason: message.clone(),
                    })
            }
        }
    }

    async fn rest_fail(
        &self,
        request_id: &str,
        status: FailStatus,
        message: &str,
    ) -> Result<Report, ControlPlaneError> {
        let message = outcome::reportable(message, outcome::MAX_PARAM_BYTES);
        let changes = serde_json::json!({"status": status.as_str(), "message": message});
        self.control_plane
            .update(rest::WORKITEMS, request_id, &changes)
            .await
            .map(|_| Report::Failed {
                status: status.as_str().to_owned(),
                message,
            })
    }

    fn reported(&self, item: &Workitem, report: Report) -> Report {
        crate::metrics::reported(&item.operation, item.created_at, (&report).into());
        self.emit(Event::Reported {
            request_id: item.request_id.clone(),
            operation: item.operation.clone(),
            report: report.clone(),
            at: SystemTime::now(),
        });
        report
    }
}

/// Where the gateway's hold on a workitem stands, as renewals find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    /// The lease holds.
    Held,
    /// The lease is gone (expired and re-claimed, released).
    Lost,
    /// The workitem was cancelled (410 on renew); the lease still holds, so
    /// an operation in flight can report its outcome.
    Cancelled,
    /// The workitem no longer exists (404 on renew): cancelled and dropped.
    Gone,
}

impl LeaseState {
    /// What a renewal's error says about the hold; `None` when it says
    /// nothing (the server is away or refused the call as such).
    fn after(error: &ControlPlaneError) -> Option<LeaseState> {
        match error {
            ControlPlaneError::LeaseLost { .. } => Some(LeaseState::Lost),
            ControlPlaneError::Cancelled { .. } => Some(LeaseState::Cancelled),
            ControlPlaneError::NotFound { .. } => Some(LeaseState::Gone),
            _ => None,
        }
    }
}

/// Longest time between renewals, so a cancellation is learned promptly.
const RENEW_MAX_PERIOD: Duration = Duration::from_secs(2);

/// How often a lease of `granted` is renewed: a third of it, at most
/// [`RENEW_MAX_PERIOD`], at least 500 ms.
fn renew_period(granted: Duration) -> Duration {
    (granted / 3)
        .min(RENEW_MAX_PERIOD)
        .max(Duration::from_millis(500))
}

/// Renews the lease every [`renew_period`] until aborted; publishes a
/// cancellation (and goes on renewing), or a lost or gone workitem (and stops).
async fn renew(
    control_plane: Client,
    request_id: String,
    lease_id: String,
    ask: Duration,
    granted: Duration,
    state: watch::Sender<LeaseState>,
) {
    let period = renew_period(granted);
    let mut next = period;
    let params = RenewWorkitemLease {
        request_id,
        lease_id,
        lease_seconds: Some(ask.as_secs().max(1) as f64),
    };
    loop {
        tokio::time::sleep(next).await;
        match control_plane.call(&params).await {
            Ok(answer) => {
                debug!(expires = %answer.lease_expires_at, "lease renewed");
                next = period;
            }
            Err(error) => match LeaseState::after(&error) {
                // Cancelled: the server still extended the lease; keep it
                // while an operation in flight finishes.
                Some(LeaseState::Cancelled) => {
                    state.send_if_modified(|held| {
                        let changed = *held != LeaseState::Cancelled;
                        *held = LeaseState::Cancelled;
                        changed
                    });
                    next = period;
                }
                Some(found) => {
                    debug!(%error, ?found, "renewal ended the hold");
                    let _ = state.send(found);
                    return;
                }
                None => {
                    warn!(%error, "renewing the lease failed; retrying");
                    next = (period / 3).max(Duration::from_millis(250));
                }
            },
        }
    }
}

/// Resolves once the flag is (or was) set, or its sender is gone. Holds no
/// borrow of the flag afterwards, so the future stays `Send`.
async fn signalled(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessToken;

    #[test]
    fn renewals_are_frequent_enough_to_learn_a_cancellation_promptly() {
        assert_eq!(renew_period(Duration::from_secs(60)), RENEW_MAX_PERIOD);
        assert_eq!(renew_period(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(
            renew_period(Duration::from_millis(600)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn a_410_or_404_on_renewal_is_a_cancellation_not_a_transient_error() {
        let message = String::new;
        assert_eq!(
            LeaseState::after(&ControlPlaneError::Cancelled {
                request_id: "r".into(),
                message: message(),
            }),
            Some(LeaseState::Cancelled)
        );
        assert_eq!(
            LeaseState::after(&ControlPlaneError::NotFound { message: message() }),
            Some(LeaseState::Gone)
        );
        assert_eq!(
            LeaseState::after(&ControlPlaneError::LeaseLost {
                request_id: "r".into(),
                message: message(),
            }),
            Some(LeaseState::Lost)
        );
        assert_eq!(
            LeaseState::after(&ControlPlaneError::Server {
                status: 503,
                message: message(),
            }),
            None
        );
    }

    #[test]
    fn the_gateway_runs_on_any_runtime_thread() {
        fn assert_send<T: Send>(_: &T) {}
        let mut config = Config::new(
            "c1",
            "http://127.0.0.1:9",
            AccessToken::new("t"),
            "http://127.0.0.1:9",
        );
        config.vantiq_namespace = "acme".into();
        config.tls = k8sworker_tls::TlsArgs::plaintext();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let run = Gateway::new(config).unwrap().run(async {});
        assert_send(&run);
    }
}
