//! An executor running in the test process, as it would in its own pod.
//!
//! It gets its own thread and tokio runtime and its own kube client built
//! from the identity's token, and listens on 127.0.0.1:0. [`RunningExecutor::kill`]
//! shuts that runtime down at once: every task of the executor (a plan half
//! applied included) stops at its next await, as if the process were killed.

use std::{net::SocketAddr, thread::JoinHandle, time::Duration};

use k8sworker_core::owner::Tenant;
use k8sworker_executor::{ExecutorConfig, ExecutorService, calls::ApiCalls};
use k8sworker_proto::v1::executor_client::ExecutorClient;
use k8sworker_tls::Identity;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A running in-process executor; dropped means killed.
#[derive(Debug)]
pub struct RunningExecutor {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub address: SocketAddr,
    /// `https` (mutual TLS) or `http` (plaintext).
    scheme: &'static str,
    /// The one namespace it serves.
    pub namespace: String,
    calls: ApiCalls,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningExecutor {
    /// Starts an executor for `config.namespace` calling Kubernetes with
    /// `kube_config`, serving mutual TLS with the namespace's executor
    /// certificate ([`crate::pki`]).
    pub async fn start(kube_config: kube::Config, config: ExecutorConfig) -> Self {
        let tls = crate::pki::tls(&Identity::executor(config.namespace.clone()));
        Self::serving(kube_config, config, Some(tls), None).await
    }

    /// As [`RunningExecutor::start`], listening on `address` (where an
    /// executor of the same namespace listened before it was killed: a
    /// restart that its planner reaches without being told). Binding is
    /// retried for up to 5 s while the old listener's port is released.
    pub async fn start_at(
        kube_config: kube::Config,
        config: ExecutorConfig,
        address: SocketAddr,
    ) -> Self {
        let tls = crate::pki::tls(&Identity::executor(config.namespace.clone()));
        Self::serving(kube_config, config, Some(tls), Some(address)).await
    }

    /// As [`RunningExecutor::start`], but plaintext on loopback and nobody
    /// checked (`--insecure-plaintext`): the load driver's baseline.
    pub async fn start_plaintext(kube_config: kube::Config, mut config: ExecutorConfig) -> Self {
        config.authentication = k8sworker_tls::Authentication::Off;
        Self::serving(kube_config, config, None, None).await
    }

    async fn serving(
        kube_config: kube::Config,
        config: ExecutorConfig,
        tls: Option<k8sworker_tls::Tls>,
        address: Option<SocketAddr>,
    ) -> Self {
        let namespace = config.namespace.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (ready, started) = oneshot::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("executor-{namespace}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("executor runtime");
                runtime.block_on(async move {
                    let client = kube::Client::try_from(kube_config).expect("executor kube client");
                    let executor = ExecutorService::new(config, client);
                    // Started means ready: the cache has listed the
                    // namespace (or the API server refused the lists, which
                    // the executor's calls then report).
                    executor.ready(Duration::from_secs(30)).await;
                    let listener = bind(address).await;
                    let address = listener.local_addr().expect("bound address");
                    let _ = ready.send((address, executor.api_calls()));
                    tokio::select! {
                        served = k8sworker_executor::serve(listener, tls, executor, std::future::pending()) => {
                            served.expect("executor serves");
                        }
                        _ = killed => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("executor thread");
        let (address, calls) = started.await.expect("executor started");
        RunningExecutor {
            address,
            scheme,
            namespace,
            calls,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// Starts the executor for `identity`'s namespace with its token and
    /// test-friendly defaults (a 60 s health wait), allowing the tests'
    /// tenant ([`crate::plans::tenant`]) only.
    pub async fn for_identity(identity: &crate::ExecutorIdentity) -> Self {
        Self::allowing(identity, &[crate::plans::tenant()]).await
    }

    /// As [`RunningExecutor::for_identity`], allowing exactly `tenants`.
    pub async fn allowing(identity: &crate::ExecutorIdentity, tenants: &[Tenant]) -> Self {
        let mut config = ExecutorConfig::new(identity.namespace.clone());
        config.default_health_timeout = Duration::from_secs(60);
        config.allowed_tenants = tenants.iter().cloned().collect();
        Self::start(identity.config().await, config).await
    }

    /// `https://127.0.0.1:<port>` (`http://` for a plaintext one).
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// A gRPC client of this executor, with the planner's certificate.
    pub async fn client(&self) -> ExecutorClient<Channel> {
        self.client_as(Some(&Identity::Planner))
    }

    /// A gRPC client of this executor presenting `caller`'s certificate,
    /// or none.
    pub fn client_as(&self, caller: Option<&Identity>) -> ExecutorClient<Channel> {
        crate::pki::executor_client(&self.endpoint(), &self.namespace, caller)
    }

    /// This executor as the planner reaches it (the planner's certificate).
    pub async fn executor(&self) -> k8sworker_planner::grpc_executor::GrpcExecutor {
        k8sworker_planner::grpc_executor::GrpcExecutor::new(crate::pki::channel(
            &self.endpoint(),
            Some(&Identity::Planner),
            Identity::executor(self.namespace.clone()),
        ))
    }

    /// Every Kubernetes API call this executor made.
    pub fn calls(&self) -> &ApiCalls {
        &self.calls
    }

    /// Stops the executor at once, whatever it is doing.
    pub fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Listens on `address`, or on an ephemeral loopback port without one.
async fn bind(address: Option<SocketAddr>) -> tokio::net::TcpListener {
    let Some(address) = address else {
        return tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("executor listens on loopback");
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(%error, %address, "executor: retrying bind");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("executor cannot listen on {address}: {error}"),
        }
    }
}

impl Drop for RunningExecutor {
    fn drop(&mut self) {
        self.kill();
    }
}
