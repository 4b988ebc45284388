//! The gateway's loop: claim, execute, report; and its shutdown.
//!
//! ```text
//! run ─▶ check (token, cluster, server version) ─▶ loop:
//!          wait for a slot (Limit: at most --concurrency in flight, fewer while saturated)
//!          claim (long-poll, or poll on the Backoff schedule)
//!            └─ workitem ─▶ task, after its installation's previous workitem:
//!                 span workitem.process (parent: the workitem's traceparent)
//!                   task() ── invalid ──────────────────────────▶ fail INVALID
//!                   ask first (a renew): cancelled ─▶ release, no Execute
//!                   (a planner answering NOT_SERVING is waited for)
//!                   Planner.Execute ── passing error ─▶ wait (retry::Budget), again
//!                   outcome::decide ─▶ (fetchLogs: upload documents)
//!                   complete | fail | release   (retried while the server is away)
//!          renew_all: every held lease, one renewWorkitemLeases call per round
//! SIGTERM ─▶ stop claiming; each workitem in flight finishes within the grace
//!            period, else it is released; then run returns.
//! ```
//!
//! Up to `--concurrency` workitems are in flight. Two of one installation
//! never overlap and run in queue order: the claim protocol hands out an
//! installation's next workitem only once the previous one ended, REST mode
//! ([`crate::rest`]) skips installations in flight, and each task waits for
//! its installation's turn besides. In REST mode the claim is `rest_next`
//! and the report `rest_deliver`; there is no lease to renew, and one
//! gateway serves a cluster.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use k8sworker_client::protocol::{
    Ancillaries, ClaimWorkitem, ClaimedWorkitem, ClusterContext, CompleteWorkitem, FailWorkitem,
    HeldLease, K8sWorkitem, MAX_LEASES_PER_RENEWAL, PlanStep, ReleaseWorkitem, RenewWorkitemLease,
    RenewWorkitemLeases, RenewalOutcome,
};
use k8sworker_client::{Client, Error as ControlPlaneError};
use k8sworker_core::plan::Operation;
use k8sworker_proto::convert;
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_client::PlannerClient;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::backoff::{Backoff, Poll, Schedule};
use crate::config::{ClaimMode, Config, ConfigError, Protocol};
use crate::limit::Limit;
use crate::logs;
use crate::outcome::{self, FailStatus, Outcome, PlannerError};
use crate::rest::{self, RecordWrite};
use crate::retry;
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
    /// How many workitems may be in flight now (`--concurrency`, less
    /// while the planner or an executor is saturated).
    limit: Arc<Limit>,
    /// The installations with a workitem in flight.
    inflight: Inflight,
    /// The leases held, renewed together.
    leases: Arc<Leases>,
}

/// The installations with a workitem in flight, each with its turn: a
/// second workitem of one installation (which the claim protocol does not
/// hand out while the first is leased, and REST mode does not pick) waits
/// for the first to end, never overlapping it.
#[derive(Debug, Default)]
struct Inflight {
    turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inflight {
    /// The installation's turn, registered as in flight.
    fn enter(&self, installation: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().expect("in-flight lock");
        Arc::clone(turns.entry(installation.to_owned()).or_default())
    }

    /// Ends a workitem's part: the installation is no longer in flight once
    /// no other workitem of it holds or waits for its turn.
    fn leave(&self, installation: &str, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self.turns.lock().expect("in-flight lock");
        drop(turn);
        if turns
            .get(installation)
            .is_some_and(|turn| Arc::strong_count(turn) == 1)
        {
            turns.remove(installation);
        }
    }

    /// The installations in flight now.
    fn busy(&self) -> HashSet<String> {
        self.turns
            .lock()
            .expect("in-flight lock")
            .keys()
            .cloned()
            .collect()
    }
}

/// A workitem task's report; a task that panicked counts as abandoned (its
/// lease expires and the workitem is claimed again).
fn finished(done: Result<Report, JoinError>) -> Report {
    done.unwrap_or_else(|error| {
        error!(%error, "a workitem task ended abnormally; its lease will expire");
        Report::Abandoned {
            reason: error.to_string(),
        }
    })
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
        let limit = Limit::new(config.concurrency);
        Ok(Gateway {
            config: Arc::new(config),
            control_plane,
            planner,
            channel,
            tls,
            worker_id,
            events: None,
            worker: OnceLock::new(),
            limit,
            inflight: Inflight::default(),
            leases: Arc::default(),
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
        let gateway = Arc::new(self);
        let result = gateway.serve(stopping).await;
        watcher.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        result
    }

    async fn serve(
        self: &Arc<Self>,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<Summary, GatewayError> {
        let config = &self.config;
        info!(
            version = env!("CARGO_PKG_VERSION"),
            server = %self.control_plane.base(),
            cluster = %config.cluster_name,
            planner = %config.planner_url,
            worker = %self.worker_id,
            mode = if config.once { "once" } else { "daemon" },
            concurrency = config.concurrency,
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
        // One task renews every lease held (REST mode has none).
        let _renewer = (worker == Worker::Claim).then(|| {
            AbortOnDrop(tokio::spawn(renew_all(
                self.control_plane.clone(),
                Arc::clone(&self.leases),
                config.lease,
            )))
        });
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
        // The workitems in flight, each holding a slot of `self.limit`.
        let mut tasks: JoinSet<Report> = JoinSet::new();
        // What retrying cannot fix; returned once the work in flight ended.
        let mut fatal: Option<ControlPlaneError> = None;
        loop {
            while let Some(done) = tasks.try_join_next() {
                summary.count(&finished(done));
            }
            if *stopping.borrow() {
                break;
            }
            // Back-pressure: no claim while the limit is in flight.
            let slot = tokio::select! {
                slot = self.limit.acquire() => slot,
                () = signalled(&mut stopping) => break,
            };
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
                Worker::Rest => self.rest_next(&mut queue, &self.inflight.busy()).await,
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
                    // Taken before the task starts, so the next REST
                    // listing already skips the installation.
                    let installation = rest::installation_of(&claimed.workitem);
                    let turn = self.inflight.enter(&installation);
                    let gateway = Arc::clone(self);
                    let stopping = stopping.clone();
                    tasks.spawn(async move {
                        let report = {
                            // Two workitems of one installation never overlap.
                            let _turn = Arc::clone(&turn).lock_owned().await;
                            gateway.process(&claimed, refusal, &stopping).await
                        };
                        gateway.inflight.leave(&installation, turn);
                        drop(slot);
                        report
                    });
                    continue;
                }
                Ok(None) if config.once => {
                    drop(slot);
                    // What runs may still be released and queued again.
                    if let Some(done) = tasks.join_next().await {
                        summary.count(&finished(done));
                        continue;
                    }
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
                    fatal = Some(error);
                    break;
                }
                Err(error) if worker == Worker::Rest && rest::refuses_the_worker(&error) => {
                    error!(%error, "the server does not let this token mark workitems PENDING (the documented-REST protocol's writes); check the token's profile (k8sWorker__system) and cluster, or run with --protocol claim against a server that offers the claim protocol");
                    fatal = Some(error);
                    break;
                }
                Err(error) if config.once && !error.is_transient() => {
                    error!(%error, "claim failed");
                    fatal = Some(error);
                    break;
                }
                Err(error) => {
                    backoff.record(Poll::Error);
                    warn!(%error, failures = backoff.errors(), "claim failed; retrying");
                    if config.once && backoff.errors() >= 5 {
                        fatal = Some(error);
                        break;
                    }
                }
            }
            let delay = if waiting == Waiting::LongPoll && backoff.errors() == 0 && quick_empty == 0
            {
                Duration::ZERO
            } else {
                backoff.delay(fastrand::f64())
            };
            drop(slot);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = signalled(&mut stopping) => break,
            }
        }
        // Shutdown: each workitem in flight finishes within the grace
        // period or is released.
        if !tasks.is_empty() {
            info!(
                in_flight = tasks.len(),
                "waiting for the workitems in flight"
            );
        }
        while let Some(done) = tasks.join_next().await {
            summary.count(&finished(done));
        }
        if let Some(error) = fatal {
            return Err(error.into());
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
        let _held = (self.worker() == Worker::Claim).then(|| {
            self.leases
                .hold(&item.request_id, &item.lease_id, lease, lease_tx)
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
        // Renewals are watched until they report a cancellation (or stop).
        let mut watching = true;
        let mut cancelled = false;
        let mut budget =
            retry::Budget::new(Instant::now(), self.config.retry_for, self.config.retries);
        let mut stop_waiting = stopping.clone();
        // Passing errors are tried again in place (`crate::retry`) under
        // the same lease; any other answer goes on to the outcome.
        let result: Result<pb::ExecuteResponse, PlannerError> = loop {
            let started = Instant::now();
            let mut planner = self.planner.clone();
            let execute = tokio::time::timeout(
                self.config.execute_timeout,
                planner.execute(task.request.clone()),
            );
            tokio::pin!(execute);
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
                                cancelled = true;
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
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let error = match result {
                Ok(response) => {
                    info!(elapsed_ms, "planner executed");
                    if let Some(limit) = self.limit.grow() {
                        debug!(limit, "workitems in flight allowed");
                    }
                    break Ok(response);
                }
                Err(error) if outcome::is_transient(error.code) => error,
                Err(error) => {
                    warn!(code = ?error.code, error = %error.message, elapsed_ms, "planner failed");
                    break Err(error);
                }
            };
            // Saturated or away: claim less until calls go through again.
            if let Some(limit) = self.limit.shrink(Instant::now()) {
                warn!(
                    limit,
                    "the planner or an executor is saturated or away; fewer workitems in flight"
                );
            }
            let failure = format!("{:?}: {}", error.code, error.message);
            let Some(delay) = budget.failed(failure, Instant::now()) else {
                let message = budget.gave_up(Instant::now());
                warn!(%message, "passing errors outlasted the retry budget");
                let outcome = Outcome::Fail {
                    status: FailStatus::Failed,
                    message,
                };
                return self.report(&item, outcome, &stopping).await;
            };
            if cancelled {
                // Released: the control plane drops a cancelled workitem.
                let outcome = Outcome::Retry {
                    message: "cancelled while the planner call kept failing".into(),
                };
                return self.report(&item, outcome, &stopping).await;
            }
            warn!(
                code = ?error.code,
                error = %error.message,
                elapsed_ms,
                tries = budget.tries(),
                delay_ms = delay.as_millis() as u64,
                "planner failed with a passing error; trying again"
            );
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    changed = lease_state.changed(), if watching => {
                        let state = *lease_state.borrow_and_update();
                        match (changed, state) {
                            (Ok(()), LeaseState::Lost) => {
                                warn!("the lease was lost between tries; leaving the workitem to its new owner");
                                return self.reported(&item, Report::Abandoned { reason: "lease lost".into() });
                            }
                            // Nothing runs between tries: not started again.
                            (Ok(()), LeaseState::Cancelled | LeaseState::Gone) => {
                                return self.cancelled(&item).await;
                            }
                            (Ok(()), LeaseState::Held) => {}
                            (Err(_), _) => watching = false,
                        }
                    }
                    () = signalled(&mut stop_waiting) => {
                        let outcome = Outcome::Retry { message: "the gateway is shutting down".into() };
                        return self.report(&item, outcome, &stopping).await;
                    }
                }
            }
        };
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
        let steps = result.as_ref().ok().and_then(outcome::plan_steps);
        self.report_with(&item, outcome, steps, &stopping).await
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
        self.report_with(item, outcome, None, stopping).await
    }

    /// [`Self::report`] with the plan's `steps` for the operation history;
    /// the trace id sent with them is the current span's (the workitem's
    /// trace), when telemetry gives it one.
    async fn report_with(
        &self,
        item: &Workitem,
        outcome: Outcome,
        steps: Option<Vec<PlanStep>>,
        stopping: &watch::Receiver<bool>,
    ) -> Report {
        let trace_id = k8sworker_telemetry::current_traceparent()
            .as_deref()
            .and_then(outcome::trace_id);
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
                        steps: steps.clone(),
                        trace_id: trace_id.clone(),
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
                        steps: steps.clone(),
                        trace_id: trace_id.clone(),
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
    ///
    /// `busy`: installations with a workitem in flight, whose queued
    /// workitems wait for it.
    async fn rest_next(
        &self,
        queue: &mut RestQueue,
        busy: &HashSet<String>,
    ) -> Result<Option<(ClaimedWorkitem, Option<String>)>, ControlPlaneError> {
        let cluster_name = &self.config.cluster_name;
        loop {
            let (filter, sort) = rest::queued(cluster_name);
            let listing: Vec<K8sWorkitem> = self
                .control_plane
                .select(rest::WORKITEMS, &filter, &sort, rest::PAGE)
                .await?
                .into_iter()
                .filter_map(|item| serde_json::from_value::<K8sWorkitem>(item).ok())
                .filter(|item| !busy.contains(&rest::installation_of(item)))
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

/// The leases the gateway holds, by workitem: each with the length its
/// claim granted and where its fate is published.
#[derive(Debug, Default)]
struct Leases {
    held: std::sync::Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    lease_id: String,
    granted: Duration,
    state: watch::Sender<LeaseState>,
}

/// A lease held until dropped.
struct Holding {
    leases: Arc<Leases>,
    request_id: String,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.leases
            .held
            .lock()
            .expect("leases lock")
            .remove(&self.request_id);
    }
}

impl Leases {
    /// Renews `lease_id` of `request_id` with the others until the
    /// returned guard is dropped, publishing its fate to `state`.
    fn hold(
        self: &Arc<Self>,
        request_id: &str,
        lease_id: &str,
        granted: Duration,
        state: watch::Sender<LeaseState>,
    ) -> Holding {
        self.held.lock().expect("leases lock").insert(
            request_id.to_owned(),
            Held {
                lease_id: lease_id.to_owned(),
                granted,
                state,
            },
        );
        Holding {
            leases: Arc::clone(self),
            request_id: request_id.to_owned(),
        }
    }

    /// The leases held now, and how often they must be renewed: the
    /// [`renew_period`] of the shortest granted.
    fn snapshot(&self) -> (Vec<HeldLease>, Duration) {
        let held = self.held.lock().expect("leases lock");
        let period = held
            .values()
            .map(|held| renew_period(held.granted))
            .min()
            .unwrap_or(RENEW_MAX_PERIOD);
        let leases = held
            .iter()
            .map(|(request_id, held)| HeldLease {
                request_id: request_id.clone(),
                lease_id: held.lease_id.clone(),
            })
            .collect();
        (leases, period)
    }

    /// Publishes what a renewal found out about one lease. A cancellation
    /// keeps it renewed (an operation in flight must still report); a lost
    /// or gone workitem is no longer renewed.
    fn settle(&self, lease: &HeldLease, found: LeaseState) {
        let mut held = self.held.lock().expect("leases lock");
        let Some(entry) = held.get(&lease.request_id) else {
            return;
        };
        if entry.lease_id != lease.lease_id {
            return;
        }
        match found {
            LeaseState::Held => {}
            LeaseState::Cancelled => {
                entry.state.send_if_modified(|state| {
                    let changed = *state != LeaseState::Cancelled;
                    *state = LeaseState::Cancelled;
                    changed
                });
            }
            LeaseState::Lost | LeaseState::Gone => {
                debug!(request_id = %lease.request_id, ?found, "renewal ended the hold");
                let _ = entry.state.send(found);
                held.remove(&lease.request_id);
            }
        }
    }
}

impl From<RenewalOutcome> for LeaseState {
    fn from(outcome: RenewalOutcome) -> LeaseState {
        match outcome {
            RenewalOutcome::Renewed => LeaseState::Held,
            RenewalOutcome::Cancelled => LeaseState::Cancelled,
            RenewalOutcome::Lost => LeaseState::Lost,
            RenewalOutcome::Gone => LeaseState::Gone,
        }
    }
}

/// Whether the server renews many leases per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batching {
    /// Not known yet: try it.
    Unknown,
    /// `renewWorkitemLeases` works.
    Yes,
    /// The server does not have it (404 unknown procedure): one call per
    /// lease, as the claim protocol has it.
    No,
}

/// Renews every held lease every [`renew_period`] (of the shortest
/// granted) until aborted: one `renewWorkitemLeases` call for all of them
/// (in chunks of [`MAX_LEASES_PER_RENEWAL`]), or one `renewWorkitemLease`
/// per lease against a server without it. A round that fails for a
/// passing reason is tried again after a third of the period.
async fn renew_all(control_plane: Client, leases: Arc<Leases>, ask: Duration) {
    let mut batching = Batching::Unknown;
    let lease_seconds = Some(ask.as_secs().max(1) as f64);
    let mut next = RENEW_MAX_PERIOD;
    loop {
        tokio::time::sleep(next).await;
        let (held, period) = leases.snapshot();
        next = period;
        if held.is_empty() {
            continue;
        }
        let mut failed = false;
        if batching != Batching::No {
            for chunk in held.chunks(MAX_LEASES_PER_RENEWAL) {
                let params = RenewWorkitemLeases {
                    leases: chunk.to_vec(),
                    lease_seconds,
                };
                match control_plane.call(&params).await {
                    Ok(answer) => {
                        batching = Batching::Yes;
                        debug!(leases = answer.leases.len(), "leases renewed");
                        for renewal in answer.leases {
                            let lease = HeldLease {
                                request_id: renewal.request_id,
                                lease_id: renewal.lease_id,
                            };
                            leases.settle(&lease, renewal.outcome.into());
                        }
                    }
                    Err(ControlPlaneError::NotImplemented { .. }) => {
                        info!("the control plane renews one lease per call");
                        batching = Batching::No;
                        break;
                    }
                    Err(error) => {
                        warn!(%error, leases = chunk.len(), "renewing the leases failed; retrying");
                        failed = true;
                    }
                }
            }
        }
        if batching == Batching::No {
            for lease in &held {
                let params = RenewWorkitemLease {
                    request_id: lease.request_id.clone(),
                    lease_id: lease.lease_id.clone(),
                    lease_seconds,
                };
                match control_plane.call(&params).await {
                    Ok(answer) => debug!(expires = %answer.lease_expires_at, "lease renewed"),
                    Err(error) => match LeaseState::after(&error) {
                        Some(found) => leases.settle(lease, found),
                        None => {
                            warn!(%error, request_id = %lease.request_id, "renewing the lease failed; retrying");
                            failed = true;
                        }
                    },
                }
            }
        }
        if failed {
            next = (period / 3).max(Duration::from_millis(250));
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
    fn a_renewal_settles_only_the_lease_it_names() {
        let leases = Arc::new(Leases::default());
        let (a_tx, a) = watch::channel(LeaseState::Held);
        let (b_tx, b) = watch::channel(LeaseState::Held);
        let (c_tx, c) = watch::channel(LeaseState::Held);
        let _a = leases.hold("a", "la", Duration::from_secs(60), a_tx);
        let _b = leases.hold("b", "lb", Duration::from_secs(3), b_tx);
        let held_c = leases.hold("c", "lc", Duration::from_secs(60), c_tx);
        let (held, period) = leases.snapshot();
        assert_eq!(held.len(), 3);
        assert_eq!(
            period,
            Duration::from_secs(1),
            "the shortest lease sets the pace"
        );
        let lease = |id: &str, lease: &str| HeldLease {
            request_id: id.into(),
            lease_id: lease.into(),
        };
        leases.settle(&lease("a", "la"), LeaseState::Cancelled);
        leases.settle(&lease("b", "an-old-lease"), LeaseState::Lost);
        leases.settle(&lease("c", "lc"), LeaseState::Gone);
        assert_eq!(*a.borrow(), LeaseState::Cancelled);
        assert_eq!(
            *b.borrow(),
            LeaseState::Held,
            "another lease of b says nothing"
        );
        assert_eq!(*c.borrow(), LeaseState::Gone);
        let mut renewed: Vec<String> = leases
            .snapshot()
            .0
            .into_iter()
            .map(|lease| lease.request_id)
            .collect();
        renewed.sort();
        assert_eq!(renewed, ["a", "b"], "a gone workitem is not renewed again");
        drop(held_c);
        drop(_b);
        assert_eq!(
            leases.snapshot().0.len(),
            1,
            "a lease is renewed while held"
        );
    }

    /// A control plane of 2 procedures on 127.0.0.1: `renewWorkitemLeases`
    /// answers as `batch` says, `renewWorkitemLease` renews; every call's
    /// procedure name is recorded.
    async fn fake_control_plane(batch: bool) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let calls = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // Headers, then as much body as they announce.
                    let (head_end, length) = loop {
                        let read = stream.read(&mut buffer).await.unwrap();
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..read]);
                        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|line| line.strip_prefix("content-length:"))
                                .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                            break (end + 4, length);
                        }
                    };
                    while request.len() < head_end + length {
                        let read = stream.read(&mut buffer).await.unwrap();
                        request.extend_from_slice(&buffer[..read]);
                    }
                    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let procedure = path.rsplit('/').next().unwrap_or_default().to_owned();
                    calls.lock().unwrap().push(procedure.clone());
                    let body: serde_json::Value =
                        serde_json::from_slice(&request[head_end..]).unwrap_or_default();
                    let (status, answer) = match procedure.as_str() {
                        "K8sManager.renewWorkitemLeases" if batch => {
                            let leases: Vec<serde_json::Value> = body["leases"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|lease| serde_json::json!({
                                    "requestId": lease["requestId"], "leaseId": lease["leaseId"],
                                    "outcome": if lease["requestId"] == "gone" { "gone" } else { "renewed" },
                                }))
                                .collect();
                            ("200 OK", serde_json::json!({"leases": leases}))
                        }
                        "K8sManager.renewWorkitemLease" if body["requestId"] == "gone" => (
                            "404 Not Found",
                            serde_json::json!([{"code": "io.vantiq.resource.not.found", "message": "gone", "params": []}]),
                        ),
                        "K8sManager.renewWorkitemLease" => (
                            "200 OK",
                            serde_json::json!({"requestId": body["requestId"], "leaseId": body["leaseId"], "leaseExpiresAt": "2026-01-01T10:01:00.000Z"}),
                        ),
                        _ => (
                            "404 Not Found",
                            serde_json::json!([{"code": "io.vantiq.procedure.unknown", "message": "Unknown procedure", "params": [procedure]}]),
                        ),
                    };
                    let answer = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        (url, calls)
    }

    async fn renewal_calls(batch: bool) -> (Vec<String>, LeaseState) {
        let (url, calls) = fake_control_plane(batch).await;
        let client = Client::builder(&url)
            .token(AccessToken::new("t"))
            .build()
            .unwrap();
        let leases = Arc::new(Leases::default());
        let mut held = Vec::new();
        let mut gone = None;
        for id in ["a", "b", "gone"] {
            let (tx, rx) = watch::channel(LeaseState::Held);
            held.push(leases.hold(id, "l", Duration::from_millis(600), tx));
            if id == "gone" {
                gone = Some(rx);
            }
        }
        let renewer = AbortOnDrop(tokio::spawn(renew_all(
            client,
            Arc::clone(&leases),
            Duration::from_secs(60),
        )));
        // The first round after 2 s, then one every 500 ms.
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        drop(renewer);
        let calls = calls.lock().unwrap().clone();
        (calls, *gone.unwrap().borrow())
    }

    #[tokio::test]
    async fn every_lease_is_renewed_in_one_call_per_round() {
        let (calls, gone) = renewal_calls(true).await;
        assert!(calls.len() >= 2, "{calls:?}");
        assert!(
            calls
                .iter()
                .all(|call| call == "K8sManager.renewWorkitemLeases"),
            "{calls:?}"
        );
        assert_eq!(gone, LeaseState::Gone);
    }

    #[tokio::test]
    async fn a_control_plane_without_batches_gets_one_renewal_per_lease() {
        let (calls, gone) = renewal_calls(false).await;
        assert_eq!(calls[0], "K8sManager.renewWorkitemLeases", "{calls:?}");
        let rest = &calls[1..];
        assert!(
            rest.iter()
                .all(|call| call == "K8sManager.renewWorkitemLease"),
            "asked once, then never again: {calls:?}"
        );
        // 3 leases in the first round, then the 2 left in the next.
        assert!(rest.len() >= 5, "{calls:?}");
        assert_eq!(gone, LeaseState::Gone);
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
