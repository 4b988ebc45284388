//! `k8sworker-executor serve`: the executor for one namespace.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use k8sworker_core::owner::Tenant;
use k8sworker_executor::{ExecutorConfig, ExecutorService, POD_NAMESPACE_FILE, client::RateLimits};
use k8sworker_tls::{Authentication, Identity, TlsArgs};

#[derive(Debug, Parser)]
#[command(name = "k8sworker-executor", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Executor gRPC API for one namespace.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "K8SWORKER_EXECUTOR_LISTEN",
        default_value = "0.0.0.0:50052"
    )]
    listen: SocketAddr,

    /// Address of the plaintext health port: grpc.health.v1 only, for the
    /// kubelet's probes (which cannot present a client certificate).
    #[arg(
        long,
        env = "K8SWORKER_EXECUTOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    health_listen: SocketAddr,

    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no
    /// authentication: counts and latencies by verb and resource kind, no
    /// object names), e.g. `0.0.0.0:9464`; none by default.
    #[arg(long, env = "K8SWORKER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Mutual TLS: only the planner's certificate may call.
    #[command(flatten)]
    tls: TlsArgs,

    /// The namespace to serve; default: the pod's own namespace.
    #[arg(long, env = "K8SWORKER_EXECUTOR_NAMESPACE")]
    namespace: Option<String>,

    /// Sustained Kubernetes API requests per second (client-side limit).
    #[arg(long, env = "K8SWORKER_EXECUTOR_QPS", default_value_t = 20.0)]
    qps: f64,

    /// Kubernetes API requests allowed in a burst.
    #[arg(long, env = "K8SWORKER_EXECUTOR_BURST", default_value_t = 40)]
    burst: u32,

    /// Plans applied at the same time (always one per installation).
    #[arg(
        long,
        env = "K8SWORKER_EXECUTOR_MAX_CONCURRENT_APPLIES",
        default_value_t = 8
    )]
    max_concurrent_applies: usize,

    /// Acks remembered by plan id, so a resent plan is not applied twice.
    #[arg(long, env = "K8SWORKER_EXECUTOR_ACK_CACHE", default_value_t = 1024)]
    ack_cache: usize,

    /// Health wait when a request does not set one, in seconds.
    #[arg(long, env = "K8SWORKER_EXECUTOR_HEALTH_TIMEOUT", default_value_t = 300)]
    health_timeout: u64,

    /// Default cap on each pod log returned by FetchLogs, in bytes.
    #[arg(long, env = "K8SWORKER_EXECUTOR_LOG_LIMIT_BYTES", default_value_t = 256 * 1024)]
    log_limit_bytes: u64,

    /// A service account no pod of a plan may run as (repeatable; the env
    /// variable takes a comma-separated list). k8sworker's own accounts
    /// (k8sworker-executor, -planner, -gateway) are always denied.
    #[arg(
        long = "deny-service-account",
        env = "K8SWORKER_EXECUTOR_DENY_SERVICE_ACCOUNTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    deny_service_accounts: Vec<String>,

    /// A tenant whose plans this executor applies, `<vantiq-namespace>/<cluster>`
    /// (repeatable; the env variable takes a comma-separated list). A plan
    /// of any other tenant, or of none, is refused with PERMISSION_DENIED
    /// before any API call; with no tenant allowed, every plan is.
    #[arg(
        long = "allowed-tenant",
        env = "K8SWORKER_EXECUTOR_ALLOWED_TENANTS",
        value_name = "VANTIQ_NAMESPACE/CLUSTER",
        value_delimiter = ',',
        value_parser = Tenant::parse
    )]
    allowed_tenants: Vec<Tenant>,

    /// Check every plan's writes with the API server (a server-side dry run
    /// of each, and a ResourceQuota check of the pods) before the first
    /// persisted write, so that a refused plan writes nothing. On by
    /// default; `--dry-run-wave=false` is for measuring what the check
    /// costs, or an escape hatch, and lets a refusal stop a plan half-way.
    #[arg(
        long,
        env = "K8SWORKER_EXECUTOR_DRY_RUN_WAVE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    dry_run_wave: bool,

    /// How long running plans may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "K8SWORKER_EXECUTOR_SHUTDOWN_GRACE", default_value_t = 60)]
    shutdown_grace: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let _telemetry = k8sworker_telemetry::init("k8sworker-executor")?;

    let namespace = match args.namespace {
        Some(namespace) => namespace,
        None => std::fs::read_to_string(POD_NAMESPACE_FILE)
            .map(|ns| ns.trim().to_string())
            .with_context(|| format!("no --namespace given and {POD_NAMESPACE_FILE} unreadable"))?,
    };
    anyhow::ensure!(!namespace.is_empty(), "the namespace must not be empty");
    anyhow::ensure!(args.qps > 0.0, "--qps must be positive");
    if let Some(bad) = args
        .deny_service_accounts
        .iter()
        .find(|name| !k8sworker_core::names::is_dns1123_subdomain(name))
    {
        anyhow::bail!("--deny-service-account {bad:?} is not a service account name");
    }

    let mut config = ExecutorConfig::new(namespace.clone());
    config.rate_limits = RateLimits {
        qps: args.qps,
        burst: args.burst,
    };
    config.max_concurrent_applies = args.max_concurrent_applies.max(1);
    config.ack_cache_capacity = args.ack_cache.max(1);
    config.default_health_timeout = Duration::from_secs(args.health_timeout);
    config.log_limits.limit_bytes = args.log_limit_bytes;
    config.policy = config
        .policy
        .deny_service_accounts(args.deny_service_accounts);
    config.allowed_tenants = args.allowed_tenants.into_iter().collect();
    config.dry_run_wave = args.dry_run_wave;
    if config.allowed_tenants.is_empty() {
        tracing::warn!(
            "no --allowed-tenant: every plan is refused; set the tenants allowed in this namespace"
        );
    }
    let allowed_tenants: Vec<String> = config
        .allowed_tenants
        .iter()
        .map(ToString::to_string)
        .collect();

    // Invalid TLS settings stop the executor before any other I/O.
    let tls = args
        .tls
        .load(&Identity::executor(namespace.clone()))
        .context("TLS")?;
    if tls.is_none() {
        k8sworker_tls::plaintext_listen(args.listen).context("--listen")?;
        k8sworker_tls::plaintext_listen(args.health_listen).context("--health-listen")?;
        config.authentication = Authentication::Off;
        tracing::warn!("--insecure-plaintext: no TLS, every caller accepted (loopback only)");
    }

    let kube_config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = kube::Client::try_from(kube_config).context("building the Kubernetes client")?;
    let denied_service_accounts: Vec<String> = config
        .policy
        .denied_service_accounts()
        .map(str::to_owned)
        .collect();
    let executor = ExecutorService::new(config, client);
    // Ready once the cache has listed the namespace (one paginated list per
    // kind); until then nothing listens, so a readiness probe fails.
    if !executor
        .ready(k8sworker_executor::server::CACHE_SYNC_TIMEOUT)
        .await
    {
        tracing::warn!(
            "the cache of the namespace has not synced yet; serving anyway, calls wait for it"
        );
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let health_listener = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("listening on {}", args.health_listen))?;
    k8sworker_executor::metrics::register();
    k8sworker_telemetry::metrics::spawn(args.metrics_addr, std::future::pending())
        .await
        .context("--metrics-addr")?;
    // The cache's size as a gauge, refreshed every few seconds (a scrape
    // interval is 15 s or more; the count is a sum over the kinds' stores).
    let gauged = executor.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            let objects = gauged.cache_stats().objects;
            k8sworker_executor::metrics::METRICS
                .cache_objects
                .set(i64::try_from(objects).unwrap_or(i64::MAX));
        }
    });
    let _reload = tls
        .as_ref()
        .map(|tls| tls.watch(args.tls.reload_interval()));
    tracing::info!(
        address = %args.listen,
        health = %args.health_listen,
        identity = tls.as_ref().map(|tls| tls.identity().to_string()).unwrap_or_default(),
        %namespace,
        ?denied_service_accounts,
        ?allowed_tenants,
        "executor serving"
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(async move {
        k8sworker_tls::serve_health(health_listener, &["k8sworker.v1.Executor"], async {
            let _ = health_stopped.await;
        })
        .await
    });
    let server = tokio::spawn(k8sworker_executor::serve(
        listener,
        tls,
        executor.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    k8sworker_telemetry::shutdown_signal().await;
    tracing::info!("shutting down: refusing new plans, finishing running ones");
    let _ = stop.send(());
    let _ = stop_health.send(());
    let grace = Duration::from_secs(args.shutdown_grace);
    if !executor.drain(grace).await {
        tracing::warn!(
            grace_seconds = args.shutdown_grace,
            "plans still running at the end of the grace period"
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(joined) => joined.context("server task")?.context("gRPC server")?,
        Err(_) => tracing::warn!("connections still open; exiting"),
    }
    if let Ok(Ok(Err(error))) = tokio::time::timeout(Duration::from_secs(1), health).await {
        tracing::warn!(%error, "health port");
    }
    Ok(())
}
