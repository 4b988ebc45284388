//! The processes of a test, in-process: the control plane (restartable on
//! its port and database), the planner (every Execute recorded, the next
//! one optionally held back) and gateways (stopped gracefully, or killed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8sworker_controlplane::config::Synchronous;
use k8sworker_controlplane::{Config as ControlPlaneConfig, Server};
use k8sworker_gateway::{AccessToken, ClaimMode, Config, Event, Gateway, GatewayError, Summary};
use k8sworker_planner::service::{ExecutorDirectory, PlannerService};
use k8sworker_proto::v1 as pb;
use k8sworker_proto::v1::planner_server::{Planner, PlannerServer};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use k8sworker_testsupport::{ExecutorIdentity, RunningExecutor, pki};
use k8sworker_tls::{Identity, Tls, TlsArgs};

use crate::Vantiq;

/// The first admin's password in every test control plane.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A control plane on 127.0.0.1 with a temporary SQLite database.
#[derive(Debug)]
pub struct ControlPlane {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The configuration it runs with.
    pub config: ControlPlaneConfig,
    server: Option<Server>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts a control plane; `tune` adjusts the test defaults (a 200 ms
    /// maintenance sweep, so expired leases return quickly).
    pub async fn start(tune: impl FnOnce(&mut ControlPlaneConfig)) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = ControlPlaneConfig::for_tests(dir.path().join("controlplane.db"));
        config.sweep_interval = Duration::from_millis(200);
        config.sqlite_synchronous = Synchronous::Normal;
        config.shutdown_grace = Duration::from_secs(5);
        tune(&mut config);
        let server = Server::start(config.clone())
            .await
            .expect("control plane starts");
        let addr = server.local_addr();
        config.listen = addr;
        ControlPlane {
            addr,
            config,
            server: Some(server),
            dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The database file.
    pub fn database(&self) -> std::path::PathBuf {
        self.dir.path().join("controlplane.db")
    }

    /// The bootstrap namespace's admin.
    pub async fn admin(&self) -> Vantiq {
        Vantiq::login(&self.url(), &self.config.admin_username, ADMIN_PASSWORD).await
    }

    /// Stops serving (long-polls return at once, in-flight requests finish).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .shutdown()
                .await
                .expect("control plane stops cleanly");
        }
    }

    /// Starts again on the same port and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut attempts = 0;
        let server = loop {
            match Server::start(self.config.clone()).await {
                Ok(server) => break server,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::warn!(%error, "control plane restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("control plane restart failed: {error}"),
            }
        };
        self.server = Some(server);
    }
}

/// The Execute calls a planner received, by workitem id, and a way to make
/// the next one wait (an operation that takes a while, to interrupt).
#[derive(Debug, Clone, Default)]
pub struct ExecuteLog {
    calls: Arc<Mutex<Vec<String>>>,
    hold_next: Arc<Mutex<Option<Duration>>>,
    hold_each: Arc<Mutex<Option<Duration>>>,
    /// Execute calls running now, and the most at once so far.
    running: Arc<Mutex<(usize, usize)>>,
}

impl ExecuteLog {
    /// Workitem ids of every Execute so far, in arrival order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("log lock").clone()
    }

    /// How many Execute calls each workitem got.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in self.calls() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }

    /// Makes the next Execute wait `delay` before it starts.
    pub fn hold_next(&self, delay: Duration) {
        *self.hold_next.lock().expect("hold lock") = Some(delay);
    }

    /// Makes every Execute from now on wait `delay` before it starts, so
    /// that calls overlap.
    pub fn hold_each(&self, delay: Duration) {
        *self.hold_each.lock().expect("hold lock") = Some(delay);
    }

    /// Waits (up to `timeout`) until `count` Execute calls arrived.
    pub async fn wait_calls(&self, count: usize, timeout: Duration) {
        let log = self.clone();
        k8sworker_testsupport::eventually(&format!("{count} Execute calls"), timeout, move || {
            let arrived = log.calls().len();
            async move { (arrived == count).then_some(()) }
        })
        .await;
    }

    /// The most Execute calls that ran at once so far.
    pub fn most_at_once(&self) -> usize {
        self.running.lock().expect("running lock").1
    }
}

/// Counts an Execute as running until dropped.
struct Running(Arc<Mutex<(usize, usize)>>);

impl Running {
    fn start(running: &Arc<Mutex<(usize, usize)>>) -> Running {
        let mut counts = running.lock().expect("running lock");
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
        Running(Arc::clone(running))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().expect("running lock").0 -= 1;
    }
}

/// The planner service with its Execute calls recorded.
struct RecordingPlanner {
    inner: PlannerService,
    log: ExecuteLog,
}

#[tonic::async_trait]
impl Planner for RecordingPlanner {
    async fn render(
        &self,
        request: Request<pb::RenderRequest>,
    ) -> Result<Response<pb::RenderResponse>, Status> {
        self.inner.render(request).await
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        self.inner.plan(request).await
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        self.log
            .calls
            .lock()
            .expect("log lock")
            .push(request.get_ref().workitem_id.clone());
        let _running = Running::start(&self.log.running);
        let hold = self.log.hold_next.lock().expect("hold lock").take();
        if let Some(delay) = hold {
            tokio::time::sleep(delay).await;
        }
        let each = *self.log.hold_each.lock().expect("hold lock");
        if let Some(delay) = each {
            tokio::time::sleep(delay).await;
        }
        self.inner.execute(request).await
    }
}

/// A planner serving on 127.0.0.1:0 with explicit executors only.
#[derive(Debug)]
pub struct RunningPlanner {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https` (mutual TLS) or `http` (plaintext).
    scheme: &'static str,
    /// Every Execute call it served, in order.
    pub log: ExecuteLog,
    health: tonic_health::server::HealthReporter,
    directory: ExecutorDirectory,
    tls: Option<Tls>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningPlanner {
    /// Serves mutual TLS (the planner's certificate from the tests' CA) with
    /// `executors` as `(namespace, endpoint)`.
    pub async fn start(executors: &[(&str, String)]) -> RunningPlanner {
        Self::start_with(executors, Some(pki::tls(&Identity::Planner))).await
    }

    /// As [`RunningPlanner::start`], with `tls` (plaintext on loopback, nobody
    /// checked, without).
    pub async fn start_with(executors: &[(&str, String)], tls: Option<Tls>) -> RunningPlanner {
        let directory = ExecutorDirectory {
            explicit: executors
                .iter()
                .map(|(ns, url)| ((*ns).to_owned(), url.clone()))
                .collect(),
            template: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("planner listens on loopback");
        let addr = listener.local_addr().expect("bound address");
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PlannerServer<RecordingPlanner>>()
            .await;
        let mut planner = RunningPlanner {
            addr,
            scheme: if tls.is_some() { "https" } else { "http" },
            log: ExecuteLog::default(),
            health,
            directory,
            tls,
            stop: None,
            task: None,
        };
        planner.serve(listener, health_service);
        planner
    }

    fn serve(
        &mut self,
        listener: tokio::net::TcpListener,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
    ) {
        let service = RecordingPlanner {
            inner: PlannerService::new(
                self.directory.clone(),
                Duration::from_secs(60),
                self.tls.clone(),
            ),
            log: self.log.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let tls = self.tls.clone();
        self.task = Some(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(k8sworker_telemetry::ServerTraceLayer::grpc())
                .add_service(health_service)
                .add_service(PlannerServer::new(service))
                .serve_with_incoming_shutdown(k8sworker_tls::incoming(listener, tls), async {
                    let _ = stopped.await;
                })
                .await
                .expect("planner serves");
        }));
        self.stop = Some(stop);
    }

    /// Stops serving at once, as a killed planner: connections are cut and
    /// the port refuses new ones (`UNAVAILABLE` to its callers).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts again on the same port, with the same executors and log.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut attempts = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    tracing::warn!(%error, "planner restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("planner restart failed: {error}"),
            }
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PlannerServer<RecordingPlanner>>()
            .await;
        self.health = health;
        self.serve(listener, health_service);
    }

    /// `https://127.0.0.1:<port>` (`http://` without TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// What the planner's gRPC health check answers: `SERVING` or
    /// `NOT_SERVING` (a planner starting or draining; gateways wait).
    pub async fn set_serving(&self, serving: bool) {
        if serving {
            self.health
                .set_serving::<PlannerServer<RecordingPlanner>>()
                .await;
        } else {
            self.health
                .set_not_serving::<PlannerServer<RecordingPlanner>>()
                .await;
        }
    }
}

impl Drop for RunningPlanner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A gateway configured for tests: 5 s leases, 200 ms polling, 2 s long-polls.
pub fn gateway_config(
    cluster: &str,
    control_plane: &str,
    token: &AccessToken,
    planner: &str,
) -> Config {
    let mut config = Config::new(cluster, control_plane, token.clone(), planner);
    config.vantiq_namespace = k8sworker_testsupport::plans::tenant().vantiq_namespace;
    config.lease = Duration::from_secs(5);
    config.poll_interval = Duration::from_millis(200);
    config.idle_poll_max = Duration::from_millis(500);
    config.long_poll_wait = Duration::from_secs(2);
    config.shutdown_grace = Duration::from_secs(10);
    config.claim_mode = ClaimMode::Auto;
    config
}

/// As [`gateway_config`], with the production defaults for polling,
/// long-polls, leases and the claim mode: what the load driver measures.
pub fn production_gateway_config(
    cluster: &str,
    control_plane: &str,
    token: &AccessToken,
    planner: &str,
) -> Config {
    let mut config = gateway_config(cluster, control_plane, token, planner);
    let defaults = Config::new(cluster, control_plane, token.clone(), planner);
    config.poll_interval = defaults.poll_interval;
    config.idle_poll_max = defaults.idle_poll_max;
    config.long_poll_wait = defaults.long_poll_wait;
    config.lease = defaults.lease;
    config.claim_mode = defaults.claim_mode;
    config
}

/// A gateway running on the test runtime.
#[derive(Debug)]
pub struct RunningGateway {
    /// The worker id it claims workitems with.
    pub worker_id: String,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<Summary, GatewayError>>>,
}

impl RunningGateway {
    /// Starts a gateway with `config` on the current runtime. Unless the
    /// configuration says otherwise, it presents its tenant's gateway
    /// certificate from the tests' CA.
    pub fn start(mut config: Config) -> RunningGateway {
        if config.tls == TlsArgs::default() {
            let tenant = config.tenant().expect("the gateway's tenant");
            config.tls = TlsArgs::dir(pki::dir(&Identity::gateway(tenant)));
        }
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let gateway = Gateway::new(config)
            .expect("gateway configuration is valid")
            .with_events(sender);
        let worker_id = gateway.worker_id().to_owned();
        let events = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&events);
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                collected.lock().expect("events lock").push(event);
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(async {
            let _ = stopped.await;
        }));
        RunningGateway {
            worker_id,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Everything this gateway did so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events lock").clone()
    }

    /// Request ids this gateway claimed.
    pub fn claimed(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Claimed { request_id, .. } => Some(request_id),
                _ => None,
            })
            .collect()
    }

    /// Request ids this gateway completed.
    pub fn completed(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Reported {
                    request_id,
                    report: k8sworker_gateway::Report::Completed,
                    ..
                } => Some(request_id),
                _ => None,
            })
            .collect()
    }

    /// SIGTERM: finish or release the current workitem, then stop.
    pub async fn stop(mut self) -> Summary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("gateway task does not panic")
            .expect("gateway stops cleanly")
    }

    /// Waits for the gateway to end on its own (`--once`).
    pub async fn finished(mut self) -> Result<Summary, GatewayError> {
        // Keep the shutdown sender: dropping it would ask the gateway to stop.
        let _stop = self.stop.take();
        self.task
            .take()
            .expect("running")
            .await
            .expect("gateway task does not panic")
    }

    /// Kills the gateway: no release, no report, its lease just expires.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The cluster name every single-cluster test uses.
pub const CLUSTER: &str = "c1";

/// One Vantiq namespace's worth of k8sworker for one Kubernetes namespace:
/// the executor with its real token, a control plane, a planner, a K8sCluster
/// and a worker token; gateways are started by the test.
#[derive(Debug)]
pub struct Stack {
    /// The Kubernetes namespace (also the Vantiq namespace's cluster target).
    pub namespace: String,
    /// The control plane.
    pub control_plane: ControlPlane,
    /// The planner, knowing only this namespace's executor.
    pub planner: RunningPlanner,
    /// The namespace's executor, running with its ServiceAccount token.
    pub executor: RunningExecutor,
    /// That executor's identity (ServiceAccount, Role, RoleBinding, token).
    pub identity: ExecutorIdentity,
    /// A REST client logged in as the namespace's admin.
    pub admin: Vantiq,
    /// A `k8sWorker__system` token for gateways.
    pub worker_token: AccessToken,
}

impl Stack {
    /// Everything for `namespace`; `tune` adjusts the control plane.
    pub async fn start(
        admin: &kube::Client,
        namespace: &str,
        tune: impl FnOnce(&mut ControlPlaneConfig),
    ) -> Stack {
        let identity = ExecutorIdentity::create(admin, namespace).await;
        let executor = RunningExecutor::for_identity(&identity).await;
        let control_plane = ControlPlane::start(tune).await;
        let planner = RunningPlanner::start(&[(namespace, executor.endpoint())]).await;
        let vantiq = control_plane.admin().await;
        vantiq.create_cluster(CLUSTER).await;
        let worker_token = vantiq.worker_token("gateway").await;
        Stack {
            namespace: namespace.to_owned(),
            control_plane,
            planner,
            executor,
            identity,
            admin: vantiq,
            worker_token,
        }
    }

    /// The test gateway configuration for this stack.
    pub fn gateway_config(&self) -> Config {
        gateway_config(
            CLUSTER,
            &self.control_plane.url(),
            &self.worker_token,
            &self.planner.url(),
        )
    }

    /// Starts a gateway with the test configuration.
    pub fn gateway(&self) -> RunningGateway {
        RunningGateway::start(self.gateway_config())
    }
}
