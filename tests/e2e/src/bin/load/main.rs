//! `k8sworker-load`: pickup and end-to-end latency of deploys through the
//! whole system, with polling and with the long-poll.
//!
//! For each claim mode it starts a fresh control plane, planner and gateway
//! (the gateway with its production defaults: 1 s polling, 20 s long-polls)
//! and an executor with its real token in a temporary namespace of the test
//! cluster, then requests `--deploys` deploys of distinct installations one
//! after another, each after a random pause of up to two polling intervals
//! (so requests land anywhere in the polling cycle). Per deploy:
//!
//! - pickup = the gateway's claim − the workitem's creation (server clock);
//! - end-to-end = the gateway's successful completion report − the moment
//!   the REST request was sent (the installation is `RUNNING` from then on).
//!
//! With `--transports plaintext,tls` each mode runs once over plaintext
//! gRPC hops and once over mutual TLS (the default is TLS only), so the
//! cost of TLS shows in one run. With `--dry-run-wave on,off` each runs once
//! with the executor's all-or-nothing check (a dry run of every write before
//! the first, and the ResourceQuota read) and once without, so its cost
//! shows in one run too.
//!
//! Per deploy it also counts the executor's Kubernetes API calls (every
//! observe, the apply and the health wait of the deploy): persisted writes,
//! dry runs and reads.
//!
//! With `--installations N` it runs the scale measurement instead (W1000 is
//! `--installations 1000 --namespaces 100`): N installations of six objects
//! spread over `--namespaces` namespaces, one executor each, deployed at once
//! through the control plane's REST API, then drift, an executor restart
//! and an unchanged redeploy, and a bare kube-rs server-side-apply loop
//! writing the same objects for the ratio (see `scale.rs` and
//! docs/performance.md).
//!
//! With `--burst`, it instead queues all `--deploys` at once before a
//! gateway starts, once per `--concurrency` value (long-poll, TLS), and
//! reports the wall time from the gateway's start until every deploy is
//! completed (`RUNNING`), and objects per second (6 objects per deploy).
//!
//! Needs the test cluster: `tests/cluster/up.sh` (or `KUBECONFIG`).

mod scale;
mod spans;
mod stats;

use stats::{ms, stats};

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8sworker_e2e::stack::{gateway_config, production_gateway_config};
use k8sworker_e2e::{CLUSTER, ControlPlane, RunningGateway, RunningPlanner, sample_deploy};
use k8sworker_gateway::{ClaimMode, Event, Report};
use k8sworker_testsupport::namespace::{create_namespace, delete_namespace};
use k8sworker_testsupport::{ExecutorIdentity, RunningExecutor, TestCluster};
use kube::Api;
use kube::api::DeleteParams;

/// Measure pickup and end-to-end latency of deploys.
#[derive(Debug, Parser)]
#[command(name = "k8sworker-load")]
struct Args {
    /// Deploys per claim mode.
    #[arg(long, default_value_t = 100)]
    deploys: usize,
    /// Claim modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "poll,long-poll")]
    modes: Vec<String>,
    /// Longest random pause before each deploy, in milliseconds. Two polling
    /// intervals (the default) spread the requests evenly over the polling
    /// cycle, which a closed loop would otherwise synchronise with.
    #[arg(long, default_value_t = 2000)]
    max_pause_ms: u64,
    /// Replicas of each installation.
    #[arg(long, default_value_t = 1)]
    replicas: i64,
    /// The gRPC hops (gateway → planner → executor) to measure: `tls`
    /// (mutual TLS, as deployed) and/or `plaintext` (loopback only).
    #[arg(long, value_delimiter = ',', default_value = "tls")]
    transports: Vec<String>,
    /// The executor's all-or-nothing check before the first write of each
    /// plan: `on` (as deployed) and/or `off` (`--dry-run-wave=false`).
    #[arg(long, value_delimiter = ',', default_value = "on")]
    dry_run_wave: Vec<String>,
    /// Run the scale measurement with this many installations (1,000 for
    /// W1000) instead of the latency one.
    #[arg(long)]
    installations: Option<usize>,
    /// Scale run: namespaces (one executor each) the installations are
    /// spread over, round robin.
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Scale run: gateways claiming from the one cluster; also the
    /// concurrency of the bare apply loop it is compared with.
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Scale run: out-of-band changes (a deleted ConfigMap each) whose
    /// detection is timed.
    #[arg(long, default_value_t = 100)]
    drifts: usize,
    /// Scale run: how drift is detected: `verify` (an on-demand verify is
    /// requested after each change) or `push` (nothing is requested; the
    /// system must report it by itself).
    #[arg(long, default_value = "verify")]
    drift_detect: String,
    /// Scale run: the longest wait for each phase, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Scale run: the executors of the first this many namespaces run as
    /// processes of the executor binary (their RSS is then their own).
    #[arg(long, default_value_t = 0)]
    process_executors: usize,
    /// Scale run: the executor binary for `--process-executors`; default
    /// `k8sworker-executor` next to this binary.
    #[arg(long)]
    executor_bin: Option<std::path::PathBuf>,
    /// Queue every deploy at once, then start the gateway, and measure the
    /// wall time until all are completed, instead of latencies.
    #[arg(long)]
    burst: bool,
    /// With `--burst`: the gateway's `--concurrency` values to compare, one
    /// run each (1 is one workitem at a time).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// With `--burst`: the executor's client-side rate limit in requests
    /// per second (bursts of twice as many); the executor's default when
    /// absent. A higher one shows what the gateway's concurrency does when
    /// the executor's limiter is not the bottleneck.
    #[arg(long)]
    executor_qps: Option<f64>,
}

/// Objects each sample deploy creates: the StatefulSet, the headless and the
/// port Service, the Ingress, the ConfigMap and the Secret.
const OBJECTS_PER_DEPLOY: usize = 6;

#[derive(Debug)]
struct Sample {
    pickup: Duration,
    end_to_end: Duration,
    /// The executor's persisted writes, dry runs and reads for the deploy.
    writes: u64,
    dry_runs: u64,
    reads: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let args = Args::parse();
    anyhow::ensure!(args.deploys > 0, "--deploys must be at least 1");
    let log = spans::SpanLog::default();
    let recorded = tracing_subscriber::filter::Targets::new()
        .with_target("k8sworker_executor", tracing::Level::INFO)
        .with_target("k8sworker_planner", tracing::Level::INFO)
        .with_target("k8sworker_gateway", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                ),
        )
        .with((args.installations.is_some()).then(|| log.clone().with_filter(recorded)))
        .init();
    if let Some(installations) = args.installations {
        let options = scale::Options {
            installations,
            namespaces: args.namespaces,
            gateways: args.gateways,
            drifts: args.drifts,
            drift_detect: args.drift_detect.clone(),
            timeout_secs: args.timeout_secs,
            process_executors: args.process_executors,
            executor_bin: args.executor_bin.clone(),
        };
        return scale::run(&options, log).await;
    }
    let cluster = TestCluster::get().await;
    let admin = cluster.admin();
    let namespace = create_namespace(&admin, "load").await;
    eprintln!("namespace {namespace}");
    let identity = ExecutorIdentity::create(&admin, &namespace).await;
    if args.burst {
        let outcome = burst(&args, &admin, &namespace, &identity).await;
        delete_namespace(&admin, &namespace).await;
        return outcome;
    }

    let mut results = Vec::new();
    let outcome = async {
        for transport in &args.transports {
            let tls = match transport.as_str() {
                "tls" => true,
                "plaintext" => false,
                other => anyhow::bail!("unknown transport `{other}`: tls or plaintext"),
            };
            for check in &args.dry_run_wave {
                let dry_run_wave = match check.as_str() {
                    "on" => true,
                    "off" => false,
                    other => anyhow::bail!("unknown --dry-run-wave `{other}`: on or off"),
                };
                let mut config = k8sworker_executor::ExecutorConfig::new(namespace.clone());
                config.default_health_timeout = Duration::from_secs(60);
                config.allowed_tenants = [k8sworker_testsupport::plans::tenant()].into();
                config.dry_run_wave = dry_run_wave;
                let executor = if tls {
                    RunningExecutor::start(identity.config().await, config).await
                } else {
                    RunningExecutor::start_plaintext(identity.config().await, config).await
                };
                for mode in &args.modes {
                    let claim_mode = match mode.as_str() {
                        "poll" => ClaimMode::Poll,
                        "long-poll" => ClaimMode::LongPoll,
                        other => anyhow::bail!("unknown mode `{other}`: poll or long-poll"),
                    };
                    let run = Run {
                        mode,
                        claim_mode,
                        tls,
                        label: format!(
                            "{}{}",
                            if tls { "tls" } else { "plain" },
                            if dry_run_wave { "" } else { "-nodry" }
                        ),
                    };
                    let samples = run_mode(&args, &run, &admin, &namespace, &executor).await?;
                    results.push((transport.clone(), check.clone(), mode.clone(), samples));
                }
            }
        }
        Ok(())
    }
    .await;
    delete_namespace(&admin, &namespace).await;
    outcome?;

    println!(
        "{:<9} {:<7} {:<10} {:>7}  {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10} {:>10} {:>10}   {:>6} {:>8} {:>6}",
        "transport",
        "dry-run",
        "mode",
        "deploys",
        "pickup p50",
        "p95",
        "max",
        "mean",
        "e2e p50",
        "p95",
        "p99",
        "max",
        "mean",
        "writes",
        "dry runs",
        "reads"
    );
    for (transport, check, mode, samples) in &results {
        let pickup = stats(samples.iter().map(|s| s.pickup).collect());
        let e2e = stats(samples.iter().map(|s| s.end_to_end).collect());
        let per_deploy = |count: fn(&Sample) -> u64| {
            samples.iter().map(count).sum::<u64>() as f64 / samples.len() as f64
        };
        println!(
            "{:<9} {:<7} {:<10} {:>7}  {:>10} {:>10} {:>10} {:>10}   {:>10} {:>10} {:>10} {:>10} {:>10}   {:>6.1} {:>8.1} {:>6.1}",
            transport,
            check,
            mode,
            samples.len(),
            ms(pickup.p50),
            ms(pickup.p95),
            ms(pickup.max),
            ms(pickup.mean),
            ms(e2e.p50),
            ms(e2e.p95),
            ms(e2e.p99),
            ms(e2e.max),
            ms(e2e.mean),
            per_deploy(|s| s.writes),
            per_deploy(|s| s.dry_runs),
            per_deploy(|s| s.reads),
        );
    }
    Ok(())
}

/// One measured configuration.
struct Run<'a> {
    mode: &'a str,
    claim_mode: ClaimMode,
    tls: bool,
    /// Prefix of the installations' names, unique per configuration.
    label: String,
}

async fn run_mode(
    args: &Args,
    run: &Run<'_>,
    admin: &kube::Client,
    namespace: &str,
    executor: &RunningExecutor,
) -> anyhow::Result<Vec<Sample>> {
    let Run {
        mode,
        claim_mode,
        tls,
        ..
    } = *run;
    let control_plane = ControlPlane::start(|_| {}).await;
    let executors = [(namespace, executor.endpoint())];
    let planner = if tls {
        RunningPlanner::start(&executors).await
    } else {
        RunningPlanner::start_with(&executors, None).await
    };
    let vantiq = control_plane.admin().await;
    vantiq.create_cluster(CLUSTER).await;
    let token = vantiq.worker_token("load").await;
    // Production defaults, except the claim mode under test.
    let mut config =
        production_gateway_config(CLUSTER, &control_plane.url(), &token, &planner.url());
    config.claim_mode = claim_mode;
    if !tls {
        config.tls = k8sworker_tls::TlsArgs::plaintext();
    }
    let gateway = RunningGateway::start(config);
    // Let the gateway settle into its steady state first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut samples = Vec::with_capacity(args.deploys);
    for i in 0..args.deploys {
        let pause = fastrand::u64(0..=args.max_pause_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let name = format!("{}-{}-{i}", run.label, mode.replace('-', ""));
        let calls = executor.calls();
        let (writes, dry_runs, reads) = (calls.writes(), calls.dry_runs(), calls.reads());
        let sent = SystemTime::now();
        let item = vantiq
            .command(
                CLUSTER,
                "deploy",
                sample_deploy(&name, namespace, args.replicas, "load"),
            )
            .await;
        let request_id = item["requestId"].as_str().context("requestId")?.to_owned();
        let created = item["createdAt"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .context("createdAt")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let (claimed, completed) = loop {
            let events = gateway.events();
            let claimed = events.iter().find_map(|e| match e {
                Event::Claimed {
                    request_id: id, at, ..
                } if *id == request_id => Some(*at),
                _ => None,
            });
            let reported = events.iter().find_map(|e| match e {
                Event::Reported {
                    request_id: id,
                    at,
                    report,
                    ..
                } if *id == request_id => Some((*at, report.clone())),
                _ => None,
            });
            match (claimed, reported) {
                (Some(claimed), Some((at, Report::Completed))) => break (claimed, at),
                (_, Some((_, report))) => anyhow::bail!("deploy {name} ended {report:?}"),
                _ if Instant::now() > deadline => {
                    anyhow::bail!("deploy {name} did not finish within 120 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        let sample = Sample {
            pickup: claimed.duration_since(created).unwrap_or_default(),
            end_to_end: completed.duration_since(sent).unwrap_or_default(),
            writes: calls.writes() - writes,
            dry_runs: calls.dry_runs() - dry_runs,
            reads: calls.reads() - reads,
        };
        if (i + 1) % 10 == 0 {
            eprintln!(
                "{mode}: {}/{} deploys (last pickup {}, end-to-end {})",
                i + 1,
                args.deploys,
                ms(sample.pickup),
                ms(sample.end_to_end)
            );
        }
        samples.push(sample);
        // The test cluster's one node holds 110 pods: measured installations
        // give theirs back (behind the system's back; only pods matter here).
        Api::<StatefulSet>::namespaced(admin.clone(), namespace)
            .delete(&name, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting StatefulSet {name}"))?;
    }
    let summary = gateway.stop().await;
    anyhow::ensure!(
        summary.completed as usize == args.deploys,
        "{mode}: {summary:?}"
    );
    Ok(samples)
}

/// `--burst`: per `--concurrency`, every deploy queued before the gateway
/// starts; the wall time until all are completed, and objects per second.
async fn burst(
    args: &Args,
    admin: &kube::Client,
    namespace: &str,
    identity: &ExecutorIdentity,
) -> anyhow::Result<()> {
    let mut config = k8sworker_executor::ExecutorConfig::new(namespace.to_owned());
    config.default_health_timeout = Duration::from_secs(60);
    config.allowed_tenants = [k8sworker_testsupport::plans::tenant()].into();
    if let Some(qps) = args.executor_qps {
        anyhow::ensure!(qps > 0.0, "--executor-qps must be positive");
        config.rate_limits.qps = qps;
        config.rate_limits.burst = (2.0 * qps).ceil() as u32;
    }
    let qps = config.rate_limits.qps;
    let executor = RunningExecutor::start(identity.config().await, config).await;
    let mut rows = Vec::new();
    for &concurrency in &args.concurrency {
        anyhow::ensure!(concurrency > 0, "--concurrency values must be at least 1");
        let control_plane = ControlPlane::start(|_| {}).await;
        let planner = RunningPlanner::start(&[(namespace, executor.endpoint())]).await;
        let vantiq = control_plane.admin().await;
        vantiq.create_cluster(CLUSTER).await;
        let token = vantiq.worker_token("load").await;
        let mut names = Vec::with_capacity(args.deploys);
        for i in 0..args.deploys {
            let name = format!("burst{concurrency}-{i}");
            vantiq
                .command(
                    CLUSTER,
                    "deploy",
                    sample_deploy(&name, namespace, args.replicas, "load"),
                )
                .await;
            names.push(name);
        }
        let mut config = gateway_config(CLUSTER, &control_plane.url(), &token, &planner.url());
        let defaults = k8sworker_gateway::Config::new("x", "http://x", token.clone(), "http://x");
        config.long_poll_wait = defaults.long_poll_wait;
        config.lease = defaults.lease;
        config.claim_mode = ClaimMode::LongPoll;
        config.concurrency = concurrency;
        let started = Instant::now();
        let gateway = RunningGateway::start(config);
        let deadline = started + Duration::from_secs(600);
        loop {
            let events = gateway.events();
            let completed = events
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Event::Reported {
                            report: Report::Completed,
                            ..
                        }
                    )
                })
                .count();
            if let Some(Event::Reported { report, .. }) = events.iter().find(
                |e| matches!(e, Event::Reported { report, .. } if *report != Report::Completed),
            ) {
                anyhow::bail!("concurrency {concurrency}: a deploy ended {report:?}");
            }
            if completed == args.deploys {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "concurrency {concurrency}: {completed}/{} deploys after 600 s",
                args.deploys
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall = started.elapsed();
        let most = planner.log.most_at_once();
        gateway.stop().await;
        let objects = args.deploys * OBJECTS_PER_DEPLOY;
        eprintln!(
            "concurrency {concurrency}: {} deploys in {:.1} s",
            args.deploys,
            wall.as_secs_f64()
        );
        rows.push((concurrency, wall, objects, most));
        // The node holds 110 pods: give this run's back before the next.
        let statefulsets = Api::<StatefulSet>::namespaced(admin.clone(), namespace);
        for name in &names {
            statefulsets
                .delete(name, &DeleteParams::background())
                .await
                .with_context(|| format!("deleting StatefulSet {name}"))?;
        }
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(admin.clone(), namespace);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pods.list(&Default::default()).await?.items.is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "pods still there after 120 s");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("executor rate limit: {qps} requests/s");
    println!(
        "{:>11} {:>7} {:>10} {:>9} {:>13} {:>14}",
        "concurrency", "deploys", "wall", "objects", "objects/s", "Executes at once"
    );
    for (concurrency, wall, objects, most) in rows {
        println!(
            "{:>11} {:>7} {:>8.1} s {:>9} {:>13.1} {:>14}",
            concurrency,
            objects / OBJECTS_PER_DEPLOY,
            wall.as_secs_f64(),
            objects,
            objects as f64 / wall.as_secs_f64(),
            most
        );
    }
    Ok(())
}
