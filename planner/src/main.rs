//! `k8sworker-planner`: render and plan installations from the command line,
//! or serve the Planner gRPC service.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use k8sworker_core::component::{ComponentId, Kind};
use k8sworker_core::diff::Observed;
use k8sworker_core::labels;
use k8sworker_core::operation::Work;
use k8sworker_core::owner::Tenant;
use k8sworker_core::plan::{Operation, Plan, Precondition};
use k8sworker_core::render::{self, Ancillaries, ClusterContext};
use k8sworker_core::validate;
use k8sworker_planner::service::{self, ExecutorDirectory, PlannerService};
use k8sworker_tls::{Identity, Tls, TlsArgs};

/// Render, plan and execute K8s Installations.
#[derive(Debug, Parser)]
#[command(name = "k8sworker-planner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Kubernetes objects a deploy request renders to.
    Render {
        /// The Vantiq deploy `data` (JSON: name, k8sNamespace, config).
        #[arg(long)]
        file: PathBuf,
        /// Ingress host for inbound ports without `host`.
        #[arg(long, default_value = "")]
        ingress_default_node: String,
        /// Render for this tenant, `<vantiq-namespace>/<cluster>`: every
        /// object then carries its owner record. Without it, none does.
        #[arg(long, value_parser = Tenant::parse)]
        tenant: Option<Tenant>,
        #[arg(long, value_enum, default_value_t = RenderOutput::Yaml)]
        output: RenderOutput,
        /// Print Secrets' values as they would be applied (base64 `data`).
        /// Without it, each value is shown as its size only, so output that
        /// ends up in a CI log carries no secret.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Print the plan an operation would apply, given what exists.
    Plan {
        /// The Vantiq deploy `data` (JSON).
        #[arg(long)]
        file: PathBuf,
        /// deploy, undeploy, shutdown, restart or verify.
        #[arg(long)]
        op: String,
        /// What exists: a JSON list of Kubernetes objects (or a `List`), e.g.
        /// `kubectl get sts,svc,cm,secret,ingress -l k8sworker.io/installation=NAME -o json`.
        #[arg(long)]
        observed: Option<PathBuf>,
        #[arg(long, default_value = "")]
        ingress_default_node: String,
        /// Whom to plan for, `<vantiq-namespace>/<cluster>`: only objects
        /// whose owner record names this tenant are its own.
        #[arg(long, value_parser = Tenant::parse)]
        tenant: Tenant,
        #[arg(long, value_enum, default_value_t = PlanOutput::Table)]
        output: PlanOutput,
    },
    /// Serve the Planner gRPC service.
    Serve {
        /// Address to listen on.
        #[arg(
            long,
            env = "K8SWORKER_PLANNER_LISTEN",
            default_value = "127.0.0.1:50051"
        )]
        listen: SocketAddr,
        /// Address of the plaintext health port: grpc.health.v1 only, for
        /// the kubelet's probes (which cannot present a client certificate).
        #[arg(
            long,
            env = "K8SWORKER_PLANNER_HEALTH_LISTEN",
            default_value = "127.0.0.1:8080"
        )]
        health_listen: SocketAddr,
        /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no
        /// authentication: counts and latencies by action and operation, no
        /// tenant data), e.g. `0.0.0.0:9464`; none by default.
        #[arg(long, env = "K8SWORKER_METRICS_ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Mutual TLS: gateways may call everything, preview clients Render
        /// and Plan; executors are reached with the same certificate.
        #[command(flatten)]
        tls: TlsArgs,
        /// An executor address for a namespace, `NAMESPACE=URL`; repeatable.
        #[arg(long = "executor", env = "K8SWORKER_EXECUTORS", value_delimiter = ',')]
        executors: Vec<String>,
        /// Address of executors not listed with --executor, `{namespace}`
        /// replaced; "none" to allow only listed namespaces.
        #[arg(long, env = "K8SWORKER_EXECUTOR_TEMPLATE", default_value = ExecutorDirectory::DEFAULT_TEMPLATE)]
        executor_template: String,
        /// How long an executor waits for an installation to become ready.
        #[arg(long, env = "K8SWORKER_HEALTH_TIMEOUT_SECONDS", default_value_t = 300)]
        health_timeout_seconds: u64,
        /// After SIGTERM, how long in-flight Execute calls may take to
        /// finish before the planner stops anyway, in seconds (keep it below
        /// the pod's terminationGracePeriodSeconds).
        #[arg(long, env = "K8SWORKER_PLANNER_SHUTDOWN_GRACE", default_value_t = 50)]
        shutdown_grace_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RenderOutput {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanOutput {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Render {
            file,
            ingress_default_node,
            tenant,
            output,
            show_secrets,
        } => {
            let Some(request) = read_request(&file)? else {
                return Ok(ExitCode::FAILURE);
            };
            let cluster = ClusterContext {
                cluster_name: String::new(),
                ingress_default_node,
                tenant,
            };
            let components = match render::render(&request, &cluster, &Ancillaries::default()) {
                Ok(components) => components,
                Err(error) => {
                    eprintln!("{error}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let objects: Vec<serde_json::Value> = components
                .iter()
                .map(|c| {
                    if show_secrets {
                        c.object.to_json()
                    } else {
                        c.object.to_preview_json()
                    }
                })
                .collect();
            let mut out = std::io::stdout().lock();
            match output {
                RenderOutput::Json => {
                    serde_json::to_writer_pretty(&mut out, &objects)?;
                    writeln!(out)?;
                }
                RenderOutput::Yaml => {
                    for object in &objects {
                        writeln!(out, "---")?;
                        out.write_all(serde_saphyr::to_string(object)?.as_bytes())?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            file,
            op,
            observed,
            ingress_default_node,
            tenant,
            output,
        } => {
            let Some(operation) = Operation::parse(&op).filter(|op| *op != Operation::FetchLogs)
            else {
                anyhow::bail!(
                    "--op must be deploy, undeploy, shutdown, restart or verify, got `{op}`"
                );
            };
            let Some(request) = read_request(&file)? else {
                return Ok(ExitCode::FAILURE);
            };
            let observed = match observed {
                Some(path) => read_observed(&path)?,
                None => Vec::new(),
            };
            let cluster = ClusterContext {
                cluster_name: String::new(),
                ingress_default_node,
                tenant: Some(tenant),
            };
            let work = match Work::new(operation, request, &cluster, &Ancillaries::default()) {
                Ok(work) => work,
                Err(error) => {
                    eprintln!("{error}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let plan = match work.plan(&observed) {
                Ok(plan) => plan,
                Err(error) => {
                    eprintln!("error: {error}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut out = std::io::stdout().lock();
            match output {
                PlanOutput::Table => print_table(&mut out, &plan)?,
                PlanOutput::Json => {
                    serde_json::to_writer_pretty(&mut out, &plan_json(&plan))?;
                    writeln!(out)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            health_listen,
            metrics_addr,
            tls,
            executors,
            executor_template,
            health_timeout_seconds,
            shutdown_grace_seconds,
        } => {
            let mut explicit = BTreeMap::new();
            for entry in executors.iter().filter(|e| !e.is_empty()) {
                let (namespace, url) = entry
                    .split_once('=')
                    .with_context(|| format!("--executor `{entry}` must be NAMESPACE=URL"))?;
                explicit.insert(namespace.to_owned(), url.to_owned());
            }
            let template = (executor_template != "none").then_some(executor_template);
            let directory = ExecutorDirectory { explicit, template };
            let reload = tls.reload_interval();
            let tls = tls.load(&Identity::Planner).context("TLS")?;
            if tls.is_none() {
                k8sworker_tls::plaintext_listen(listen).context("--listen")?;
                k8sworker_tls::plaintext_listen(health_listen).context("--health-listen")?;
                for (namespace, url) in &directory.explicit {
                    k8sworker_tls::plaintext_url(url)
                        .with_context(|| format!("--executor {namespace}={url}"))?;
                }
                if let Some(template) = &directory.template {
                    k8sworker_tls::plaintext_url(&template.replace("{namespace}", "namespace"))
                        .context("--executor-template")?;
                }
            }
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(
                Listen {
                    grpc: listen,
                    health: health_listen,
                    metrics: metrics_addr,
                },
                tls.map(|tls| (tls, reload)),
                directory,
                Duration::from_secs(health_timeout_seconds),
                Duration::from_secs(shutdown_grace_seconds),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where the planner listens.
struct Listen {
    grpc: SocketAddr,
    health: SocketAddr,
    metrics: Option<SocketAddr>,
}

async fn serve(
    listen: Listen,
    tls: Option<(Tls, Duration)>,
    directory: ExecutorDirectory,
    health_timeout: Duration,
    grace: Duration,
) -> anyhow::Result<()> {
    let _telemetry = k8sworker_telemetry::init("k8sworker-planner")?;
    let listener = tokio::net::TcpListener::bind(listen.grpc)
        .await
        .with_context(|| format!("listening on {}", listen.grpc))?;
    let health_listener = tokio::net::TcpListener::bind(listen.health)
        .await
        .with_context(|| format!("listening on {}", listen.health))?;
    k8sworker_planner::metrics::register();
    k8sworker_telemetry::metrics::spawn(listen.metrics, std::future::pending())
        .await
        .context("--metrics-addr")?;
    let _reload = tls.as_ref().map(|(tls, every)| tls.watch(*every));
    let tls = tls.map(|(tls, _)| tls);
    if tls.is_none() {
        tracing::warn!("--insecure-plaintext: no TLS, every caller accepted (loopback only)");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        address = %listener.local_addr()?,
        health = %health_listener.local_addr()?,
        tls = tls.is_some(),
        "planner serving"
    );
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(async move {
        k8sworker_tls::serve_health(health_listener, &["k8sworker.v1.Planner"], async {
            let _ = health_stopped.await;
        })
        .await
    });
    let stopped = service::serve(
        listener,
        PlannerService::new(directory, health_timeout, tls),
        k8sworker_telemetry::shutdown_signal(),
        grace,
    )
    .await?;
    let _ = stop_health.send(());
    let _ = health.await;
    tracing::info!(?stopped, "planner stopped");
    Ok(())
}

/// Reads and validates a request; prints every error and returns `None` when invalid.
fn read_request(path: &Path) -> anyhow::Result<Option<k8sworker_core::model::InstallationRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let data: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match validate::parse_and_validate(&data) {
        Ok(request) => Ok(Some(request)),
        Err(errors) => {
            eprintln!("{}: {errors}", path.display());
            Ok(None)
        }
    }
}

/// Reads Kubernetes objects (a list or a `List`) as observed components.
fn read_observed(path: &Path) -> anyhow::Result<Vec<Observed>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let items = match &value {
        serde_json::Value::Array(items) => items.clone(),
        serde_json::Value::Object(object) => match object.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            _ => vec![value.clone()],
        },
        _ => anyhow::bail!("{} must hold a list of Kubernetes objects", path.display()),
    };
    items
        .iter()
        .map(|item| {
            let kind = item["kind"]
                .as_str()
                .and_then(Kind::parse)
                .with_context(|| {
                    format!(
                        "observed object of kind {} is not one k8sworker manages",
                        item["kind"]
                    )
                })?;
            let meta = &item["metadata"];
            let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
            let labels_of = &meta["labels"];
            let owner = (labels_of[labels::MANAGED_BY].as_str() == Some(labels::MANAGER))
                .then(|| text(&labels_of[labels::INSTALLATION]))
                .flatten();
            Ok(Observed {
                id: ComponentId::new(kind, text(&meta["name"]).unwrap_or_default()),
                uid: text(&meta["uid"]).unwrap_or_default(),
                resource_version: text(&meta["resourceVersion"]).unwrap_or_default(),
                spec_hash: text(&meta["annotations"][labels::SPEC_HASH]),
                owner,
                owner_record: text(&meta["annotations"][labels::OWNER]),
                replicas: item["spec"]["replicas"].as_i64().map(|r| r as i32),
                ready_replicas: item["status"]["readyReplicas"].as_i64().map(|r| r as i32),
                foreign_managers: Vec::new(),
                immutable: Default::default(),
                foreign_fields: Vec::new(),
            })
        })
        .collect()
}

fn print_table(out: &mut impl std::io::Write, plan: &Plan) -> std::io::Result<()> {
    writeln!(
        out,
        "plan {} ({} of `{}` in namespace `{}`)",
        plan.id, plan.operation, plan.installation, plan.namespace
    )?;
    let rows: Vec<[String; 4]> = plan
        .steps
        .iter()
        .map(|s| {
            [
                s.action.to_string().to_uppercase(),
                s.component.kind.to_string(),
                s.component.name.clone(),
                s.reason.clone(),
            ]
        })
        .collect();
    let header = ["OP", "KIND", "NAME", "REASON"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )?;
    }
    let writes = plan.writes().count();
    writeln!(out, "{} step(s), {writes} write(s)", plan.steps.len())
}

/// The plan for `plan --output json`; a Secret's values are masked, as in
/// every preview.
fn plan_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "id": plan.id,
        "digest": plan.digest,
        "installation": plan.installation,
        "namespace": plan.namespace,
        "operation": plan.operation.as_str(),
        "desiredReplicas": plan.desired_replicas,
        "steps": plan.steps.iter().map(|s| serde_json::json!({
            "action": s.action.as_str(),
            "kind": s.component.kind.as_str(),
            "name": s.component.name,
            "reason": s.reason,
            "precondition": match &s.precondition {
                Precondition::MustNotExist => serde_json::json!({"mustNotExist": true}),
                Precondition::Expected { uid, resource_version } =>
                    serde_json::json!({"uid": uid, "resourceVersion": resource_version}),
            },
            "replicas": s.replicas,
            "object": s.object.as_ref().map(|o| o.to_preview_json()),
        })).collect::<Vec<_>>(),
    })
}
