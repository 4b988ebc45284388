//! The scale run (`--installations`): W1000 of the performance reference
//! (1,000 installations × 6 objects across 100 namespaces) or a smaller
//! one, deployed through the control plane's REST API, measured, compared
//! with a bare kube-rs server-side-apply loop writing the same objects, and
//! cleaned up.
//!
//! Everything runs in this process: one executor per namespace (its own
//! thread and runtime, its namespace's ServiceAccount token, mutual TLS, as
//! deployed), one planner, `--gateways` gateways, one control plane. Memory
//! and CPU are therefore this process's (`/proc/self`); the executors' share
//! is estimated from the growth of the RSS while they start. With
//! `--process-executors K` the first K namespaces' executors are the
//! executor binary instead, each in a process of its own, for their own RSS;
//! their spans and API calls are not seen here, so the per-deploy phases and
//! call counts are those of the other executors' installations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8sworker_e2e::stack::production_gateway_config;
use k8sworker_e2e::{CLUSTER, ControlPlane, RunningGateway, RunningPlanner, Vantiq, sample_deploy};
use k8sworker_executor::ExecutorConfig;
use k8sworker_gateway::{Event, Report};
use k8sworker_testsupport::namespace::{create_namespace, delete_namespace};
use k8sworker_testsupport::{ExecutorIdentity, RunningExecutor, TestCluster};
use k8sworker_tls::Identity;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::spans::{SpanLog, SpanRecord};
use super::stats::{ms, stats};

/// The label of the objects the executor manages.
const MANAGED: &str = "app.kubernetes.io/managed-by=k8sworker";
/// Concurrent REST requests while submitting the deploys.
const SUBMIT_CONCURRENCY: usize = 16;

/// What the scale run needs from the command line.
struct Scale {
    installations: usize,
    namespaces: usize,
    gateways: usize,
    drifts: usize,
    push_drift: bool,
    timeout: Duration,
    /// The first this many namespaces get an executor process.
    process_executors: usize,
    /// The executor binary they run.
    executor_bin: PathBuf,
}

/// One deploy as submitted.
struct Submitted {
    name: String,
    request_id: String,
    created: SystemTime,
}

/// The scale run's command-line options (see the driver's `--help`).
pub struct Options {
    /// Installations deployed.
    pub installations: usize,
    /// Namespaces they are spread over, one executor each.
    pub namespaces: usize,
    /// Gateways; the calibration loop's concurrency is theirs together
    /// (gateways × each one's `--concurrency`).
    pub gateways: usize,
    /// Out-of-band changes timed.
    pub drifts: usize,
    /// `verify` or `push`.
    pub drift_detect: String,
    /// The longest wait of each phase, in seconds.
    pub timeout_secs: u64,
    /// Namespaces whose executor is a process of its own.
    pub process_executors: usize,
    /// The executor binary for those.
    pub executor_bin: Option<PathBuf>,
}

/// Runs the scale measurement and prints its tables; every namespace it
/// made is deleted, also when it fails.
pub async fn run(args: &Options, log: SpanLog) -> anyhow::Result<()> {
    let installations = args.installations;
    anyhow::ensure!(installations > 0, "--installations must be at least 1");
    anyhow::ensure!(args.namespaces > 0, "--namespaces must be at least 1");
    anyhow::ensure!(args.gateways > 0, "--gateways must be at least 1");
    let push_drift = match args.drift_detect.as_str() {
        "verify" => false,
        "push" => true,
        other => anyhow::bail!("unknown --drift-detect `{other}`: verify or push"),
    };
    let scale = Scale {
        installations,
        namespaces: args.namespaces.min(installations),
        gateways: args.gateways,
        drifts: args.drifts.min(installations),
        push_drift,
        timeout: Duration::from_secs(args.timeout_secs),
        process_executors: args
            .process_executors
            .min(args.namespaces.min(installations)),
        executor_bin: match &args.executor_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary's directory")?
                .join("k8sworker-executor"),
        },
    };
    if scale.process_executors > 0 {
        anyhow::ensure!(
            scale.executor_bin.is_file(),
            "no executor binary at {} (build it, or give --executor-bin)",
            scale.executor_bin.display()
        );
    }
    let cluster = TestCluster::get().await;
    let admin = cluster.admin();
    let made = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcome = AssertUnwindSafe(measure(&scale, &admin, &made, log))
        .catch_unwind()
        .await;
    let namespaces = made.lock().expect("namespaces lock").clone();
    eprintln!("deleting {} namespaces", namespaces.len());
    futures::stream::iter(namespaces)
        .for_each_concurrent(8, |namespace| {
            let admin = admin.clone();
            async move { delete_namespace(&admin, &namespace).await }
        })
        .await;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Creates `count` namespaces named after `hint`, recording each in `made`.
async fn namespaces(
    admin: &kube::Client,
    hint: &str,
    count: usize,
    made: &Mutex<Vec<String>>,
) -> Vec<String> {
    let created: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let admin = admin.clone();
            let hint = format!("{hint}{i}");
            async move {
                let namespace = create_namespace(&admin, &hint).await;
                made.lock()
                    .expect("namespaces lock")
                    .push(namespace.clone());
                namespace
            }
        })
        .buffered(8)
        .collect()
        .await;
    created
}

fn executor_config(namespace: &str) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(namespace.to_owned());
    config.default_health_timeout = Duration::from_secs(300);
    config.allowed_tenants = [k8sworker_testsupport::plans::tenant()].into();
    config
}

/// Installation `i`'s name; fixed width, so no name prefixes another.
fn installation(i: usize) -> String {
    format!("w{i:05}")
}

async fn measure(
    scale: &Scale,
    admin: &kube::Client,
    made: &Mutex<Vec<String>>,
    log: SpanLog,
) -> anyhow::Result<()> {
    let mut report = Table::default();
    let api_before = apiserver_requests(admin).await?;

    // ---- the stack --------------------------------------------------------------------------
    let started = Instant::now();
    let namespaces = namespaces(admin, "w", scale.namespaces, made).await;
    let identities: Vec<ExecutorIdentity> = futures::stream::iter(&namespaces)
        .map(|namespace| ExecutorIdentity::create(admin, namespace))
        .buffered(8)
        .collect()
        .await;
    let rss_before_executors = proc_kib("self", "VmRSS");
    let mut executors = Vec::with_capacity(identities.len());
    for (index, identity) in identities.iter().enumerate() {
        executors.push(if index < scale.process_executors {
            Executor::Process(ExecutorProcess::spawn(&scale.executor_bin, identity, None).await?)
        } else {
            Executor::InProcess(
                RunningExecutor::start(
                    identity.config().await,
                    executor_config(&identity.namespace),
                )
                .await,
            )
        });
    }
    let rss_after_executors = proc_kib("self", "VmRSS");
    let control_plane = ControlPlane::start(|config| {
        // On-demand verifies only: the drift phase measures those.
        config.verify_interval = Duration::ZERO;
    })
    .await;
    let endpoints: Vec<(&str, String)> = executors
        .iter()
        .map(|e| (e.namespace(), e.endpoint()))
        .collect();
    let planner = RunningPlanner::start(&endpoints).await;
    let vantiq = control_plane.admin().await;
    vantiq.create_cluster(CLUSTER).await;
    let token = vantiq.worker_token("load").await;
    let config = production_gateway_config(CLUSTER, &control_plane.url(), &token, &planner.url());
    // Workitems in flight in all: the calibration loop runs at the same
    // concurrency.
    let in_flight = scale.gateways * config.concurrency;
    let mut gateways = Vec::with_capacity(scale.gateways);
    for _ in 0..scale.gateways {
        gateways.push(RunningGateway::start(config.clone()));
    }
    eprintln!(
        "stack up in {:.1} s: {} namespaces, {} executors, 1 planner, {} gateways",
        started.elapsed().as_secs_f64(),
        namespaces.len(),
        executors.len(),
        gateways.len()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = proc_kib("self", "VmRSS");
    let idle_processes = process_rss(&executors, "VmRSS");
    log.take();

    // ---- cold deploy ------------------------------------------------------------------------
    let calls_before = executor_calls(&executors);
    let cpu_before = cpu_seconds("self");
    let cluster_cpu_deploy = cluster_cpu();
    let sent = SystemTime::now();
    let sent_at = Instant::now();
    let submitted: Vec<Submitted> = futures::stream::iter(0..scale.installations)
        .map(|i| {
            let vantiq = &vantiq;
            let namespace = &namespaces[i % namespaces.len()];
            async move { submit(vantiq, &installation(i), namespace).await }
        })
        .buffered(SUBMIT_CONCURRENCY)
        .try_collect()
        .await?;
    let submit_time = sent_at.elapsed();
    eprintln!(
        "{} deploys submitted in {:.1} s",
        submitted.len(),
        submit_time.as_secs_f64()
    );
    let ids: BTreeSet<&str> = submitted.iter().map(|s| s.request_id.as_str()).collect();
    let events = wait_reported(&gateways, &ids, scale.timeout, "cold deploy").await?;
    let deploy_cpu = cpu_seconds("self") - cpu_before;
    let cluster_cpu_after = cluster_cpu();
    let calls_after = executor_calls(&executors);
    let spans = log.take();

    // Per deploy: pickup (server clock to claim), plan (planner's execute
    // to the executor's apply), apply (until the last write is
    // acknowledged: the health wait begins), ready (the health wait),
    // reported (the ack back to the gateway's accepted report).
    let by_installation = group(&spans);
    let mut phases: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut last_write = sent;
    let mut last_ready = sent;
    let mut last_reported = sent;
    let mut writes = 0_usize;
    for item in &submitted {
        let claimed = events.claimed.get(item.request_id.as_str()).copied();
        let reported = events.reported.get(item.request_id.as_str()).copied();
        let spans = by_installation
            .get(item.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first = |label: &str| spans.iter().find(|s| &*s.label == label);
        let execute = first("execute");
        let apply = first("apply");
        let health = first("health");
        let steps: Vec<&&SpanRecord> = spans.iter().filter(|s| &*s.label == "step").collect();
        writes += steps.len();
        let written = steps.iter().map(|s| s.closed).max();
        if let Some(written) = written {
            last_write = last_write.max(written);
        }
        if let Some(claimed) = claimed {
            push(&mut phases, "pickup", item.created, claimed);
        }
        if let (Some(execute), Some(apply)) = (execute, apply) {
            push(&mut phases, "plan", execute.opened, apply.opened);
        }
        if let Some(apply) = apply {
            let applied = health.map(|h| h.opened).or(written).unwrap_or(apply.closed);
            push(&mut phases, "apply", apply.opened, applied);
            if let Some(reported) = reported {
                push(&mut phases, "reported", apply.closed, reported);
            }
        }
        if let Some(health) = health {
            push(&mut phases, "ready", health.opened, health.closed);
            last_ready = last_ready.max(health.closed);
        }
        if let Some(reported) = reported {
            push(&mut phases, "end to end", item.created, reported);
            last_reported = last_reported.max(reported);
        }
    }
    let since = |t: SystemTime| t.duration_since(sent).unwrap_or_default();
    let objects = scale.installations * 6;
    let cold = since(last_write);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady_rss = proc_kib("self", "VmRSS");
    let steady_processes = process_rss(&executors, "VmRSS");

    // The objects as written, for the calibration (before drift deletes some).
    let objects_read = managed_objects(admin, &namespaces).await?;

    // ---- drift ------------------------------------------------------------------------------
    let before_drift = executor_calls(&executors);
    let drift = if scale.drifts > 0 {
        Some(drift(scale, admin, &vantiq, &namespaces, &log).await?)
    } else {
        None
    };
    let drift_calls = executor_calls(&executors).delta(&before_drift);

    // Before the restart, which replaces one of them.
    let peak_processes = process_rss(&executors, "VmHWM");

    // ---- restart of one executor, then an unchanged redeploy in its namespace ----------------
    let restart = restart(scale, &mut executors[0], &identities[0], &vantiq, &gateways).await?;
    let peak_rss = proc_kib("self", "VmHWM");

    let mut summaries = Vec::new();
    for gateway in gateways {
        summaries.push(gateway.stop().await);
    }
    drop(planner);
    let executor_count = executors.len();
    for mut executor in executors {
        executor.kill().await;
    }
    let api_after = apiserver_requests(admin).await?;

    // ---- calibration: the same objects, a bare server-side-apply loop ------------------------
    let bare_namespaces = self::namespaces(admin, "bare", scale.namespaces, made).await;
    let calibration = bare_apply(
        admin,
        &objects_read,
        &namespaces,
        &bare_namespaces,
        in_flight,
    )
    .await?;

    // ---- the tables -------------------------------------------------------------------------
    let cluster_deploy = cluster_cpu_after.delta(&cluster_cpu_deploy);
    // Every deploy completed, so every object was written.
    let ratio = (objects as f64 / cold.as_secs_f64()) / calibration.objects_per_second();
    report.row(
        "workload",
        format!(
            "{} installations × 6 objects in {} namespaces; {} gateway(s), 1 planner, {} executors ({} processes, the rest in-process; mutual TLS)",
            scale.installations, scale.namespaces, scale.gateways, executor_count, scale.process_executors
        ),
    );
    report.row(
        "cold deploy, wall (until every write acknowledged)",
        format!(
            "{:.1} s, {objects} objects = {:.1} objects/s ({writes} writes seen in the in-process executors' spans; submitting took {:.1} s)",
            cold.as_secs_f64(),
            objects as f64 / cold.as_secs_f64(),
            submit_time.as_secs_f64()
        ),
    );
    report.row(
        "every StatefulSet ready / every deploy reported",
        format!(
            "{:.1} s / {:.1} s",
            since(last_ready).as_secs_f64(),
            since(last_reported).as_secs_f64()
        ),
    );
    report.row(
        "bare kube-rs SSA loop, same objects, same concurrency",
        format!(
            "{} objects in {:.1} s = {:.1} objects/s (concurrency {})",
            calibration.objects,
            calibration.wall.as_secs_f64(),
            calibration.objects_per_second(),
            in_flight
        ),
    );
    report.row("ratio (ours ÷ bare objects/s)", format!("{ratio:.2}×"));
    for phase in ["pickup", "plan", "apply", "ready", "reported", "end to end"] {
        let Some(values) = phases.get(phase) else {
            continue;
        };
        let s = stats(values.clone());
        report.row(
            &format!("per deploy: {phase}"),
            format!(
                "p50 {}  p99 {}  max {}  (n = {})",
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                values.len()
            ),
        );
    }
    report.row(
        "API server: HTTP 429 / all requests during the run",
        format!(
            "{} / {}",
            api_after.too_many - api_before.too_many,
            api_after.total - api_before.total
        ),
    );
    let calls = calls_after.delta(&calls_before);
    // The installations of the in-process executors, whose calls are counted.
    let per = (0..scale.installations)
        .filter(|i| i % scale.namespaces >= scale.process_executors)
        .count()
        .max(1) as f64;
    report.row(
        "executor API calls per fresh deploy",
        format!(
            "{:.1} writes, {:.1} dry runs, {:.1} reads ({:.1} in all)",
            calls.writes as f64 / per,
            calls.dry_runs as f64 / per,
            calls.reads as f64 / per,
            calls.total as f64 / per
        ),
    );
    let top: Vec<String> = calls
        .by_call
        .iter()
        .map(|(call, n)| format!("{call} {:.1}", *n as f64 / per))
        .collect();
    report.row("  by call, per deploy", top.join(", "));
    report.row(
        "process RSS: before executors / with executors / idle / steady / peak",
        format!(
            "{} / {} / {} / {} / {} MiB",
            mib(rss_before_executors),
            mib(rss_after_executors),
            mib(idle_rss),
            mib(steady_rss),
            mib(peak_rss)
        ),
    );
    if !idle_processes.is_empty() {
        report.row(
            &format!(
                "executor processes ({}, {} installations each): RSS idle / steady / peak, mean (max)",
                idle_processes.len(),
                scale.installations / scale.namespaces
            ),
            format!(
                "{} / {} / {} MiB",
                mean_max(&idle_processes),
                mean_max(&steady_processes),
                mean_max(&peak_processes)
            ),
        );
    }
    report.row(
        "executor RSS, estimated (growth while starting them ÷ count)",
        format!(
            "{:.2} MiB each",
            rss_after_executors.saturating_sub(rss_before_executors) as f64
                / 1024.0
                / executor_count as f64
        ),
    );
    report.row(
        "CPU during the cold deploy (wall as above to the last report)",
        format!(
            "this process {:.1} s ({:.2} cores); {}",
            deploy_cpu,
            deploy_cpu / since(last_reported).as_secs_f64(),
            cluster_deploy
        ),
    );
    if let Some(drift) = &drift {
        let s = stats(drift.latencies.clone());
        report.row(
            &format!(
                "drift → DAMAGED ({} ConfigMaps deleted; {})",
                drift.latencies.len(),
                if scale.push_drift {
                    "pushed"
                } else {
                    "on-demand verify requested at once"
                }
            ),
            format!("p50 {}  p99 {}  max {}", ms(s.p50), ms(s.p99), ms(s.max)),
        );
        // The verifies of the in-process executors' installations.
        let verifies = drifted(scale)
            .iter()
            .filter(|i| *i % scale.namespaces >= scale.process_executors)
            .count()
            .max(1) as f64;
        report.row(
            "executor API calls per verify (of a damaged installation)",
            format!(
                "{:.1} writes, {:.1} reads ({:.1} in all)",
                drift_calls.writes as f64 / verifies,
                drift_calls.reads as f64 / verifies,
                drift_calls.total as f64 / verifies
            ),
        );
    }
    report.row(
        &format!(
            "executor restart ({}) → first Observe answered",
            if scale.process_executors > 0 {
                "a process: killed, started again"
            } else {
                "in-process: its runtime dropped, started again"
            }
        ),
        match restart.calls {
            Some((until_ready, after)) => format!(
                "{} ; {} writes, {} reads until then (the Observe's own included), {} writes in the {} s after",
                ms(restart.ready),
                until_ready.writes,
                until_ready.reads,
                after.writes,
                RESTART_WATCH.as_secs()
            ),
            None => format!(
                "{} (a process: its API calls are not counted here)",
                ms(restart.ready)
            ),
        },
    );
    if let Some(redeploy) = &restart.unchanged_redeploy {
        report.row(
            "unchanged redeploy (after the restart)",
            format!(
                "{} writes, {} dry runs, {} reads ({} in all)",
                redeploy.writes, redeploy.dry_runs, redeploy.reads, redeploy.total
            ),
        );
    }
    report.row(
        "gateways",
        summaries
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    println!("\n{report}");
    println!(
        "where the time goes (spans of the cold deploy, by name):\n{}",
        profile(&spans)
    );
    Ok(())
}

/// Sends one deploy; its workitem.
async fn submit(vantiq: &Vantiq, name: &str, namespace: &str) -> anyhow::Result<Submitted> {
    let (status, item) = vantiq
        .try_command(CLUSTER, "deploy", sample_deploy(name, namespace, 1, "load"))
        .await;
    anyhow::ensure!(status == 200, "deploy {name}: HTTP {status}: {item}");
    let request_id = item["requestId"].as_str().context("requestId")?.to_owned();
    let created = item["createdAt"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .context("createdAt")?;
    Ok(Submitted {
        name: name.to_owned(),
        request_id,
        created,
    })
}

/// When the gateways claimed and completed the workitems.
struct Reported {
    claimed: BTreeMap<String, SystemTime>,
    reported: BTreeMap<String, SystemTime>,
}

/// Waits until every workitem of `ids` is completed; fails on the first
/// other outcome and after `timeout`.
async fn wait_reported(
    gateways: &[RunningGateway],
    ids: &BTreeSet<&str>,
    timeout: Duration,
    phase: &str,
) -> anyhow::Result<Reported> {
    let deadline = Instant::now() + timeout;
    let mut progress = Instant::now();
    loop {
        let mut claimed = BTreeMap::new();
        let mut reported = BTreeMap::new();
        for gateway in gateways {
            for event in gateway.events() {
                match event {
                    Event::Claimed { request_id, at, .. } if ids.contains(request_id.as_str()) => {
                        claimed.entry(request_id).or_insert(at);
                    }
                    Event::Reported {
                        request_id,
                        report,
                        at,
                        ..
                    } if ids.contains(request_id.as_str()) => match report {
                        Report::Completed => {
                            reported.insert(request_id, at);
                        }
                        other => anyhow::bail!("{phase}: workitem {request_id} ended {other:?}"),
                    },
                    _ => {}
                }
            }
        }
        if reported.len() == ids.len() {
            return Ok(Reported { claimed, reported });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{phase}: {} of {} workitems completed within {timeout:?}",
            reported.len(),
            ids.len()
        );
        if progress.elapsed() > Duration::from_secs(10) {
            eprintln!("{phase}: {}/{} completed", reported.len(), ids.len());
            progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn group(spans: &[SpanRecord]) -> BTreeMap<&str, Vec<&SpanRecord>> {
    let mut by: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    for span in spans {
        if let Some(installation) = &span.installation {
            by.entry(installation.as_ref()).or_default().push(span);
        }
    }
    for spans in by.values_mut() {
        spans.sort_by_key(|s| s.opened);
    }
    by
}

fn push(
    phases: &mut BTreeMap<&str, Vec<Duration>>,
    phase: &'static str,
    from: SystemTime,
    to: SystemTime,
) {
    phases
        .entry(phase)
        .or_default()
        .push(to.duration_since(from).unwrap_or_default());
}

/// Span time by label: count, total, p50, p99.
fn profile(spans: &[SpanRecord]) -> String {
    let mut by: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for span in spans {
        by.entry(span.label.as_ref())
            .or_default()
            .push(span.closed.duration_since(span.opened).unwrap_or_default());
    }
    let mut rows: Vec<(&str, Vec<Duration>)> = by.into_iter().collect();
    rows.sort_by_key(|(_, d)| std::cmp::Reverse(d.iter().sum::<Duration>()));
    let mut out = format!(
        "  {:<44} {:>7} {:>11} {:>10} {:>10}\n",
        "span", "count", "total", "p50", "p99"
    );
    for (label, durations) in rows.into_iter().take(25) {
        let total: Duration = durations.iter().sum();
        let count = durations.len();
        let s = stats(durations);
        out.push_str(&format!(
            "  {:<44} {:>7} {:>9.1} s {:>10} {:>10}\n",
            label,
            count,
            total.as_secs_f64(),
            ms(s.p50),
            ms(s.p99)
        ));
    }
    out
}

// ---- drift ---------------------------------------------------------------------------------------

struct Drift {
    latencies: Vec<Duration>,
}

/// Deletes one managed ConfigMap in each of `scale.drifts` installations
/// (spread over the namespaces) and measures until each installation is
/// `DAMAGED`. Without the pushed path an on-demand verify is requested right
/// after each deletion.
async fn drift(
    scale: &Scale,
    admin: &kube::Client,
    vantiq: &Vantiq,
    namespaces: &[String],
    log: &SpanLog,
) -> anyhow::Result<Drift> {
    let chosen = drifted(scale);
    let injected: Vec<(String, Instant, Option<String>)> = futures::stream::iter(&chosen)
        .map(|&i| {
            let name = installation(i);
            let namespace = &namespaces[i % namespaces.len()];
            async move {
                Api::<ConfigMap>::namespaced(admin.clone(), namespace)
                    .delete(
                        &format!("vantiq-{name}-configmap-0"),
                        &DeleteParams::default(),
                    )
                    .await
                    .with_context(|| format!("deleting {name}'s ConfigMap"))?;
                let at = Instant::now();
                let request = if scale.push_drift {
                    None
                } else {
                    let item = vantiq
                        .installation_command(&name, "verify", serde_json::json!({}))
                        .await;
                    Some(item["requestId"].as_str().context("requestId")?.to_owned())
                };
                anyhow::Ok((name, at, request))
            }
        })
        .buffered(SUBMIT_CONCURRENCY)
        .try_collect()
        .await?;
    let deadline = Instant::now() + scale.timeout;
    let mut damaged: BTreeMap<String, Instant> = BTreeMap::new();
    while damaged.len() < injected.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "drift: {} of {} installations DAMAGED within {:?}",
            damaged.len(),
            injected.len(),
            scale.timeout
        );
        let now = Instant::now();
        for record in vantiq.installations().await {
            if record["installationStatus"] == "DAMAGED"
                && let Some(name) = record["name"].as_str()
            {
                damaged.entry(name.to_owned()).or_insert(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log.take();
    let latencies = injected
        .iter()
        .map(|(name, at, _)| damaged[name].duration_since(*at))
        .collect();
    Ok(Drift { latencies })
}

/// The installations whose ConfigMap the drift phase deletes: evenly
/// spaced, starting at the second (the first stays intact for the
/// unchanged redeploy).
fn drifted(scale: &Scale) -> BTreeSet<usize> {
    let step = (scale.installations / scale.drifts.max(1)).max(1);
    (0..scale.installations)
        .step_by(step)
        .take(scale.drifts)
        .map(|i| (i + 1) % scale.installations)
        .collect()
}

// ---- restart -------------------------------------------------------------------------------------

/// How long the restarted executor is watched for writes.
const RESTART_WATCH: Duration = Duration::from_secs(2);

struct Restart {
    ready: Duration,
    /// Calls until ready, and in [`RESTART_WATCH`] after (in-process only).
    calls: Option<(Calls, Calls)>,
    unchanged_redeploy: Option<Calls>,
}

/// Kills `executor`, starts it again on its address, and measures until it
/// answers an Observe of one of its installations; then redeploys one
/// unchanged installation of its namespace.
async fn restart(
    scale: &Scale,
    executor: &mut Executor,
    identity: &ExecutorIdentity,
    vantiq: &Vantiq,
    gateways: &[RunningGateway],
) -> anyhow::Result<Restart> {
    let namespace = executor.namespace().to_owned();
    let killed = executor.restart(scale, identity).await?;
    let mut client = k8sworker_testsupport::pki::executor_client(
        &executor.endpoint(),
        &namespace,
        Some(&Identity::Planner),
    );
    let request = k8sworker_proto::v1::ObserveRequest {
        namespace: namespace.clone(),
        installation: installation(0),
        ..Default::default()
    };
    loop {
        match client.observe(request.clone()).await {
            Ok(_) => break,
            Err(status) if killed.elapsed() < Duration::from_secs(30) => {
                tracing::debug!(%status, "restarted executor not ready yet");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => anyhow::bail!("restarted executor: {status}"),
        }
    }
    let ready = killed.elapsed();
    let until_ready = executor.calls().map(Calls::of);
    tokio::time::sleep(RESTART_WATCH).await;
    let calls = match (until_ready, executor.calls()) {
        (Some(until_ready), Some(now)) => {
            let after = Calls::of(now).delta(&until_ready);
            Some((until_ready, after))
        }
        _ => None,
    };

    // Unchanged: an installation of this namespace the drift phase left alone.
    let drifted = drifted(scale);
    let target = (0..scale.installations)
        .step_by(scale.namespaces)
        .find(|i| !drifted.contains(i));
    let before = executor.calls().map(Calls::of);
    let unchanged_redeploy = match target {
        Some(i) => {
            let item = submit(vantiq, &installation(i), &namespace).await?;
            let ids = BTreeSet::from([item.request_id.as_str()]);
            wait_reported(gateways, &ids, scale.timeout, "unchanged redeploy").await?;
            match (executor.calls(), before) {
                (Some(now), Some(before)) => Some(Calls::of(now).delta(&before)),
                _ => None,
            }
        }
        None => None,
    };
    Ok(Restart {
        ready,
        calls,
        unchanged_redeploy,
    })
}

// ---- executors -----------------------------------------------------------------------------------

/// An executor of the run.
enum Executor {
    /// In this process, on its own runtime.
    InProcess(RunningExecutor),
    /// The executor binary in a process of its own.
    Process(ExecutorProcess),
}

impl Executor {
    fn namespace(&self) -> &str {
        match self {
            Executor::InProcess(e) => &e.namespace,
            Executor::Process(p) => &p.namespace,
        }
    }

    fn endpoint(&self) -> String {
        match self {
            Executor::InProcess(e) => e.endpoint(),
            Executor::Process(p) => format!("https://{}", p.address),
        }
    }

    /// Its Kubernetes API calls, when it runs in this process.
    fn calls(&self) -> Option<&k8sworker_executor::calls::ApiCalls> {
        match self {
            Executor::InProcess(e) => Some(e.calls()),
            Executor::Process(_) => None,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Executor::InProcess(_) => None,
            Executor::Process(p) => p.child.id(),
        }
    }

    async fn kill(&mut self) {
        match self {
            Executor::InProcess(e) => e.kill(),
            Executor::Process(p) => {
                let _ = p.child.kill().await;
            }
        }
    }

    /// Kills it and starts it again on the same address; when it was
    /// killed.
    async fn restart(
        &mut self,
        scale: &Scale,
        identity: &ExecutorIdentity,
    ) -> anyhow::Result<Instant> {
        let kube_config = identity.config().await;
        let (address, in_process) = match self {
            Executor::InProcess(e) => (e.address, true),
            Executor::Process(p) => (p.address, false),
        };
        self.kill().await;
        let killed = Instant::now();
        *self = if in_process {
            Executor::InProcess(
                RunningExecutor::start_at(
                    kube_config,
                    executor_config(&identity.namespace),
                    address,
                )
                .await,
            )
        } else {
            Executor::Process(
                ExecutorProcess::spawn(&scale.executor_bin, identity, Some(address)).await?,
            )
        };
        Ok(killed)
    }
}

/// The executor binary serving one namespace with its ServiceAccount token
/// and certificate, on loopback.
struct ExecutorProcess {
    child: tokio::process::Child,
    namespace: String,
    address: SocketAddr,
}

impl ExecutorProcess {
    /// Starts it (on `address`, else a free port) and waits until it
    /// accepts connections.
    async fn spawn(
        bin: &Path,
        identity: &ExecutorIdentity,
        address: Option<SocketAddr>,
    ) -> anyhow::Result<ExecutorProcess> {
        let address = match address {
            Some(address) => address,
            None => free_port()?,
        };
        let health = free_port()?;
        let tls_dir =
            k8sworker_testsupport::pki::dir(&Identity::executor(identity.namespace.clone()));
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(address.to_string())
            .arg("--health-listen")
            .arg(health.to_string())
            .arg("--tls-dir")
            .arg(&tls_dir)
            .arg("--namespace")
            .arg(&identity.namespace)
            .arg("--allowed-tenant")
            .arg(k8sworker_testsupport::plans::tenant().to_string())
            .arg("--health-timeout")
            .arg("300")
            .env("KUBECONFIG", &identity.kubeconfig)
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the executor of {} does not listen on {address}",
                identity.namespace
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(ExecutorProcess {
            child,
            namespace: identity.namespace.clone(),
            address,
        })
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A `/proc` memory value of every executor process, in KiB.
fn process_rss(executors: &[Executor], key: &str) -> Vec<u64> {
    executors
        .iter()
        .filter_map(Executor::pid)
        .map(|pid| proc_kib(&pid.to_string(), key))
        .collect()
}

fn mean_max(kib: &[u64]) -> String {
    let max = kib.iter().copied().max().unwrap_or(0);
    let mean = kib.iter().sum::<u64>() / kib.len().max(1) as u64;
    format!("{} ({})", mib(mean), mib(max))
}

// ---- calibration ---------------------------------------------------------------------------------

/// One object as the executor wrote it, stripped of what the server owns.
struct Object {
    kind: &'static str,
    name: String,
    body: Value,
}

/// Every managed object of `namespaces`, by installation, in the order
/// the executor writes them (ConfigMap, Secret, Services, StatefulSet,
/// Ingress).
async fn managed_objects(
    admin: &kube::Client,
    namespaces: &[String],
) -> anyhow::Result<BTreeMap<(usize, String), Vec<Object>>> {
    let mut by: BTreeMap<(usize, String), Vec<Object>> = BTreeMap::new();
    let params = ListParams::default().labels(MANAGED);
    for (index, namespace) in namespaces.iter().enumerate() {
        let mut objects: Vec<Object> = Vec::new();
        macro_rules! read {
            ($kind:ty, $name:literal) => {
                for object in Api::<$kind>::namespaced(admin.clone(), namespace)
                    .list(&params)
                    .await
                    .with_context(|| format!("listing {} in {namespace}", $name))?
                {
                    let body = strip(serde_json::to_value(&object)?);
                    let name = body["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    objects.push(Object {
                        kind: $name,
                        name,
                        body,
                    });
                }
            };
        }
        read!(ConfigMap, "ConfigMap");
        read!(Secret, "Secret");
        read!(Service, "Service");
        read!(StatefulSet, "StatefulSet");
        read!(Ingress, "Ingress");
        for object in objects {
            // vantiq-<installation>-…: the installation's name has a fixed width.
            let owner = object
                .name
                .strip_prefix("vantiq-")
                .and_then(|rest| rest.get(..6))
                .unwrap_or_default()
                .to_owned();
            by.entry((index, owner)).or_default().push(object);
        }
    }
    Ok(by)
}

/// Leaves what a client would send: no status, no server-assigned fields.
fn strip(mut body: Value) -> Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("status");
    }
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.retain(|key, _| matches!(key.as_str(), "name" | "labels" | "annotations"));
    }
    // (`body["spec"]` would add a null `spec` to a ConfigMap or Secret.)
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        // A headless Service keeps its `clusterIP: None`; an allocated
        // address or port is the server's.
        if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        spec.remove("healthCheckNodePort");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports {
                if let Some(port) = port.as_object_mut() {
                    port.remove("nodePort");
                }
            }
        }
    }
    body
}

/// One server-side apply as the bare loop's field manager, forced.
async fn apply<K>(
    client: kube::Client,
    namespace: &str,
    name: &str,
    patch: &Patch<&Value>,
) -> kube::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let params = PatchParams::apply("k8sworker-load-bare").force();
    Api::<K>::namespaced(client, namespace)
        .patch(name, &params, patch)
        .await
        .map(drop)
}

struct Calibration {
    objects: usize,
    wall: Duration,
}

impl Calibration {
    fn objects_per_second(&self) -> f64 {
        self.objects as f64 / self.wall.as_secs_f64()
    }
}

/// Applies every installation's objects into the namespace paired with its
/// own, `concurrency` installations at a time, each installation's objects
/// one after another (as one deploy writes them), with the admin's client
/// (kube-rs defaults, no client-side limit).
async fn bare_apply(
    admin: &kube::Client,
    objects: &BTreeMap<(usize, String), Vec<Object>>,
    namespaces: &[String],
    bare: &[String],
    concurrency: usize,
) -> anyhow::Result<Calibration> {
    let pairing: BTreeMap<&str, &str> = namespaces
        .iter()
        .map(String::as_str)
        .zip(bare.iter().map(String::as_str))
        .collect();
    let count: usize = objects.values().map(Vec::len).sum();
    let started = Instant::now();
    futures::stream::iter(objects)
        .map(|((index, _), installation)| {
            let namespace = pairing[namespaces[*index].as_str()];
            async move {
                for object in installation {
                    let mut body = object.body.clone();
                    body["metadata"]["namespace"] = Value::from(namespace);
                    let patch = Patch::Apply(&body);
                    let client = admin.clone();
                    let name = object.name.as_str();
                    let written = match object.kind {
                        "ConfigMap" => apply::<ConfigMap>(client, namespace, name, &patch).await,
                        "Secret" => apply::<Secret>(client, namespace, name, &patch).await,
                        "Service" => apply::<Service>(client, namespace, name, &patch).await,
                        "StatefulSet" => {
                            apply::<StatefulSet>(client, namespace, name, &patch).await
                        }
                        _ => apply::<Ingress>(client, namespace, name, &patch).await,
                    };
                    written.with_context(|| {
                        format!("bare apply of {} {namespace}/{name}", object.kind)
                    })?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Calibration {
        objects: count,
        wall: started.elapsed(),
    })
}

// ---- counters ------------------------------------------------------------------------------------

/// The executors' API calls, summed.
#[derive(Debug, Default, Clone)]
struct Calls {
    writes: u64,
    dry_runs: u64,
    reads: u64,
    total: u64,
    by_call: BTreeMap<String, u64>,
}

impl Calls {
    fn of(calls: &k8sworker_executor::calls::ApiCalls) -> Calls {
        Calls {
            writes: calls.writes(),
            dry_runs: calls.dry_runs(),
            reads: calls.reads(),
            total: calls.total(),
            by_call: calls
                .snapshot()
                .into_iter()
                .map(|(call, n)| (call.to_string(), n))
                .collect(),
        }
    }

    fn add(&mut self, other: &Calls) {
        self.writes += other.writes;
        self.dry_runs += other.dry_runs;
        self.reads += other.reads;
        self.total += other.total;
        for (call, n) in &other.by_call {
            *self.by_call.entry(call.clone()).or_default() += n;
        }
    }

    fn delta(&self, before: &Calls) -> Calls {
        Calls {
            writes: self.writes - before.writes,
            dry_runs: self.dry_runs - before.dry_runs,
            reads: self.reads - before.reads,
            total: self.total - before.total,
            by_call: self
                .by_call
                .iter()
                .map(|(call, n)| {
                    (
                        call.clone(),
                        n - before.by_call.get(call).copied().unwrap_or(0),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

fn executor_calls(executors: &[Executor]) -> Calls {
    let mut sum = Calls::default();
    for calls in executors.iter().filter_map(Executor::calls) {
        sum.add(&Calls::of(calls));
    }
    sum
}

/// `apiserver_request_total`: all, and those answered 429.
struct ApiRequests {
    total: f64,
    too_many: f64,
}

/// Reads the API server's metrics endpoint.
async fn apiserver_requests(admin: &kube::Client) -> anyhow::Result<ApiRequests> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = admin
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    let mut counts = ApiRequests {
        total: 0.0,
        too_many: 0.0,
    };
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let value: f64 = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        counts.total += value;
        if rest.contains("code=\"429\"") {
            counts.too_many += value;
        }
    }
    Ok(counts)
}

/// A `/proc/<pid>/status` value in KiB (0 when unreadable).
fn proc_kib(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// User + system CPU seconds of a process (`/proc/<pid>/stat`, USER_HZ 100).
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of the test cluster's processes (from its `pids` file).
struct ClusterCpu(Vec<(String, f64)>);

fn cluster_cpu() -> ClusterCpu {
    let dir = std::env::var("K8SWORKER_CLUSTER_DIR").unwrap_or_default();
    let pids = std::fs::read_to_string(format!("{dir}/pids")).unwrap_or_default();
    ClusterCpu(
        pids.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next()?;
                let pid = fields.next()?;
                Some((name.to_owned(), cpu_seconds(pid)))
            })
            .collect(),
    )
}

impl ClusterCpu {
    fn delta(&self, before: &ClusterCpu) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter_map(|(name, after)| {
                let (_, before) = before.0.iter().find(|(n, _)| n == name)?;
                Some(format!("{name} {:.1} s", after - before))
            })
            .collect();
        if parts.is_empty() {
            "cluster processes: unknown".to_owned()
        } else {
            format!("cluster: {}", parts.join(", "))
        }
    }
}

/// A two-column table.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, name: &str, value: String) {
        self.0.push((name.to_owned(), value));
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .0
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        writeln!(f, "| {:<width$} | value |", "figure")?;
        writeln!(f, "|{}|---|", "-".repeat(width + 2))?;
        for (name, value) in &self.0 {
            writeln!(f, "| {name:<width$} | {value} |")?;
        }
        Ok(())
    }
}
