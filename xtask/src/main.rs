//! `xtask`: the front door behind `scripts/demo.sh`.
//!
//! ```text
//! demo   control plane ─▶ namespace + executor RBAC + token ─▶ executor ─▶ planner
//!        ─▶ K8sCluster + worker token ─▶ gateway ─▶ deploy the sample over REST
//!        ─▶ wait for RUNNING ─▶ print the installation, its objects, its trace
//!        (every gRPC hop mutual TLS, with certificates from `certs`)
//! down   stop the processes `demo` started (recorded in <state>/pids)
//! certs  a CA and the components' certificates, as files and Kubernetes Secrets
//! layers check the architecture: the core does no I/O, no module cycles
//! ```
//!
//! The binaries must be built (the script does it) and `KUBECONFIG` must
//! name an admin of the target cluster: the test cluster's, or your own.
//! Every process listens on 127.0.0.1 only and logs to `<state>/logs/`.
//! Secrets (the admin password, the worker token, the executor's
//! ServiceAccount token) go to processes through the environment or files
//! with mode 0600, never on a command line.

mod certs;
mod layers;

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Run the k8sworker demo")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Start control plane, executor, planner and gateway, and deploy a sample.
    Demo(DemoArgs),
    /// Stop what `demo` started.
    Down {
        #[arg(long, default_value = "target/demo")]
        state: PathBuf,
    },
    /// Create a CA (or reuse the one in --out) and the components'
    /// certificates, as files and as Kubernetes Secrets to apply.
    Certs(certs::CertsArgs),
    /// Check the architecture: `k8sworker-core` depends on no I/O crate, and
    /// no module of any crate imports one that imports it back.
    Layers,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Where logs, the database, pids and credentials go.
    #[arg(long, default_value = "target/demo")]
    state: PathBuf,
    /// Where the built binaries are.
    #[arg(long, default_value = "target/debug")]
    bin: PathBuf,
    /// Kubernetes namespace of the demo executor and installation.
    #[arg(long, default_value = "k8sworker-demo")]
    namespace: String,
    /// The K8sCluster name (the gateway's CLUSTER_NAME).
    #[arg(long, default_value = "demo")]
    cluster: String,
    /// The Vantiq namespace of the demo's admin and worker token (the
    /// gateway's VANTIQ_NAMESPACE); with the cluster, the tenant the
    /// executor allows.
    #[arg(long, default_value = "system")]
    vantiq_namespace: String,
    /// The sample installation's name.
    #[arg(long, default_value = "hello")]
    installation: String,
    /// The sample's image; the default runs on any cluster and does nothing.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    image: String,
    #[arg(long, default_value_t = 18080)]
    controlplane_port: u16,
    #[arg(long, default_value_t = 18051)]
    planner_port: u16,
    #[arg(long, default_value_t = 18052)]
    executor_port: u16,
    /// The planner's plaintext health port.
    #[arg(long, default_value_t = 18061)]
    planner_health_port: u16,
    /// The executor's plaintext health port.
    #[arg(long, default_value_t = 18062)]
    executor_health_port: u16,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Task::Demo(args) => runtime.block_on(demo(args)),
        Task::Down { state } => down(&state),
        Task::Certs(args) => certs::certs(&args).map(drop),
        Task::Layers => layers::check(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("workspace root"),
        ),
    }
}

fn step(message: &str) {
    println!("==> {message}");
}

/// The processes of one demo, recorded as `name pid program` lines.
struct Processes {
    file: PathBuf,
    logs: PathBuf,
}

impl Processes {
    fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let log = self.logs.join(format!("{name}.log"));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            // Plain log files, without terminal colours.
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C of the script leaves it running.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        writeln!(pids, "{name} {} {}", child.id(), program.display())?;
        println!(
            "    {name} started (pid {}, log {})",
            child.id(),
            log.display()
        );
        Ok(child.id())
    }
}

/// Whether `pid` still runs `program` (so a reused pid is never signalled).
fn runs(pid: &str, program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(name))
        .unwrap_or(false)
}

fn down(state: &Path) -> anyhow::Result<()> {
    let file = state.join("pids");
    let Ok(text) = fs::read_to_string(&file) else {
        println!("no demo processes recorded in {}", file.display());
        return Ok(());
    };
    let entries: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            Some((
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
                parts.next()?.to_owned(),
            ))
        })
        .collect();
    // Reverse start order: the gateway first, the control plane last.
    for (name, pid, program) in entries.iter().rev() {
        if !runs(pid, program) {
            continue;
        }
        println!("==> stopping {name} (pid {pid})");
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while runs(pid, program) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if runs(pid, program) {
            println!("    {name} did not stop; killing it");
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    fs::remove_file(&file)?;
    Ok(())
}

async fn wait_until(what: &str, timeout: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready().await {
        if Instant::now() > deadline {
            eprintln!("    {what}: not ready after {timeout:?}; see the logs");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let kubeconfig_env = std::env::var("KUBECONFIG")
        .context("KUBECONFIG must name an admin kubeconfig of the target cluster")?;
    down(&args.state)?;
    let logs = args.state.join("logs");
    fs::create_dir_all(&logs)?;
    let processes = Processes {
        file: args.state.join("pids"),
        logs,
    };
    let bin = |name: &str| args.bin.join(name);
    for name in [
        "k8sworker-controlplane",
        "k8sworker-planner",
        "k8sworker-executor",
        "k8sworker-gateway",
    ] {
        if !bin(name).exists() {
            bail!(
                "{} is not built; run scripts/demo.sh (it builds first)",
                bin(name).display()
            );
        }
    }

    // The control plane, with a password generated on the first run.
    step("starting the control plane");
    let password_file = args.state.join("admin-password");
    let password = match fs::read_to_string(&password_file) {
        Ok(password) => password.trim().to_owned(),
        Err(_) => {
            let password = uuid::Uuid::new_v4().simple().to_string();
            certs::write_secret(&password_file, &password)?;
            password
        }
    };
    let url = format!("http://127.0.0.1:{}", args.controlplane_port);
    processes.spawn(
        "controlplane",
        &bin("k8sworker-controlplane"),
        &[],
        &[
            (
                "K8SWORKER_LISTEN",
                format!("127.0.0.1:{}", args.controlplane_port),
            ),
            (
                "K8SWORKER_DATABASE",
                args.state
                    .join("controlplane.db")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("K8SWORKER_ADMIN_PASSWORD", password.clone()),
        ],
    )?;
    let anonymous = k8sworker_client::Client::builder(&url).build()?;
    wait_until("control plane", Duration::from_secs(30), async || {
        anonymous.health().await.is_ok()
    })
    .await;

    // The executor's namespace, identity and token.
    step(&format!(
        "creating namespace {} with the executor's ServiceAccount, Role and RoleBinding (deploy/rbac)",
        args.namespace
    ));
    let kube_config = kube::Config::infer().await.context("reading KUBECONFIG")?;
    println!("    cluster: {}", kube_config.cluster_url);
    let admin = Client::try_from(kube_config)?;
    let executor_kubeconfig = executor_identity(&admin, &args.namespace, &args.state).await?;

    step("creating a CA and the certificates of planner, executor and gateway (xtask certs)");
    let tenant = k8sworker_core::owner::Tenant::new(&args.vantiq_namespace, &args.cluster)?;
    let pki = certs::certs(&certs::CertsArgs {
        out: args.state.join("certs"),
        executor_namespaces: vec![args.namespace.clone()],
        gateways: vec![tenant.clone()],
        preview: true,
        system_namespace: "k8sworker".into(),
        valid_days: 30,
    })?;
    let tls_dir =
        |identity: &k8sworker_tls::Identity| pki.dir_of(identity).to_string_lossy().into_owned();

    step(
        "starting the executor (its only credentials: the ServiceAccount token and its certificate)",
    );
    processes.spawn(
        "executor",
        &bin("k8sworker-executor"),
        &[
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", args.executor_port),
            "--namespace".into(),
            args.namespace.clone(),
            "--health-listen".into(),
            format!("127.0.0.1:{}", args.executor_health_port),
            "--tls-dir".into(),
            tls_dir(&k8sworker_tls::Identity::executor(args.namespace.clone())),
            "--allowed-tenant".into(),
            format!("{}/{}", args.vantiq_namespace, args.cluster),
        ],
        &[(
            "KUBECONFIG",
            executor_kubeconfig.to_string_lossy().into_owned(),
        )],
    )?;
    wait_until("executor", Duration::from_secs(30), async || {
        port_open(args.executor_port).await
    })
    .await;

    step("starting the planner");
    processes.spawn(
        "planner",
        &bin("k8sworker-planner"),
        &[
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", args.planner_port),
            "--health-listen".into(),
            format!("127.0.0.1:{}", args.planner_health_port),
            "--tls-dir".into(),
            tls_dir(&k8sworker_tls::Identity::Planner),
            "--executor".into(),
            format!(
                "{}=https://127.0.0.1:{}",
                args.namespace, args.executor_port
            ),
            "--executor-template".into(),
            "none".into(),
        ],
        &[],
    )?;
    wait_until("planner", Duration::from_secs(30), async || {
        port_open(args.planner_port).await
    })
    .await;

    step(&format!(
        "creating K8sCluster `{}` and a worker token (profile k8sWorker__system)",
        args.cluster
    ));
    let vantiq = Rest(
        anonymous
            .login("admin", &password)
            .await
            .context("logging in as admin")?,
    );
    let (status, body) = vantiq
        .post(
            "/api/v1/resources/k8sclusters",
            json!({"name": args.cluster}),
        )
        .await?;
    if !(status == 200 || status == 409) {
        bail!("creating the cluster: {status} {body}");
    }
    let token_name = format!(
        "gateway-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let (status, body) = vantiq
        .post(
            "/api/v1/resources/tokens",
            json!({"name": token_name, "profiles": ["k8sWorker__system"]}),
        )
        .await?;
    if status != 200 {
        bail!("creating the worker token: {status} {body}");
    }
    let worker_token = body["accessToken"]
        .as_str()
        .context("accessToken")?
        .to_owned();

    step("starting the gateway");
    processes.spawn(
        "gateway",
        &bin("k8sworker-gateway"),
        &[],
        &[
            ("CLUSTER_NAME", args.cluster.clone()),
            ("VANTIQ_NAMESPACE", args.vantiq_namespace.clone()),
            ("VANTIQ_URL", url.clone()),
            ("VANTIQ_ACCESS_TOKEN", worker_token),
            (
                "K8SWORKER_PLANNER_URL",
                format!("https://127.0.0.1:{}", args.planner_port),
            ),
            (
                "K8SWORKER_TLS_DIR",
                tls_dir(&k8sworker_tls::Identity::gateway(tenant.clone())),
            ),
        ],
    )?;

    step(&format!(
        "deploying installation `{}` through POST /api/v1/resources/k8sclusters/{}/command",
        args.installation, args.cluster
    ));
    let data = json!({
        "name": args.installation,
        "k8sNamespace": args.namespace,
        "config": [
            {"type": "image", "name": args.image, "replicaCount": 2},
            {"type": "file", "path": "/app/conf", "filename": "app.properties", "content": "greeting=hello from k8sworker\n"},
            {"type": "environmentVariable", "name": "MODE", "value": "demo"},
            {"type": "environmentVariable", "name": "API_KEY", "value": "not-a-real-key", "asSecret": true},
            {"type": "inboundPort", "port": 8080, "protocol": "TCP", "portName": "http"},
        ]
    });
    let (status, workitem) = vantiq
        .post(
            &format!("/api/v1/resources/k8sclusters/{}/command", args.cluster),
            json!({"op": "deploy", "data": data}),
        )
        .await?;
    if status != 200 {
        bail!("the deploy was refused: {status} {workitem}");
    }
    let traceparent = workitem["traceparent"].as_str().unwrap_or_default();
    let trace_id = traceparent.split('-').nth(1).unwrap_or_default().to_owned();
    println!(
        "    workitem {} {}",
        workitem["requestId"].as_str().unwrap_or_default(),
        workitem["status"].as_str().unwrap_or_default()
    );

    step("waiting for the workitem to complete and the installation to be RUNNING");
    let request_id = workitem["requestId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let mut last = String::new();
    let record = loop {
        let (item_status, item) = vantiq
            .get(&format!("/api/v1/resources/k8sworkitems/{request_id}"))
            .await?;
        let (status, record) = vantiq
            .get(&format!(
                "/api/v1/resources/k8sinstallations/{}",
                args.installation
            ))
            .await?;
        let workitem_state = match item_status {
            404 => "completed".to_owned(),
            _ => item["status"].as_str().unwrap_or_default().to_owned(),
        };
        let installation_state = if status == 200 {
            record["installationStatus"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        } else {
            "not recorded yet".into()
        };
        let current = format!("workitem {workitem_state}, installation {installation_state}");
        if current != last {
            println!("    {:>5.1} s  {current}", started.elapsed().as_secs_f64());
            last = current;
        }
        match (workitem_state.as_str(), installation_state.as_str()) {
            ("completed", "RUNNING") => break record,
            ("FAILED" | "INVALID", _) => bail!(
                "the deploy failed: {}; logs in {}",
                item["message"],
                args.state.join("logs").display()
            ),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("not RUNNING after 5 minutes: {item} {record}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    step("the installation record");
    println!("{}", serde_json::to_string_pretty(&record)?);

    step(&format!(
        "its Kubernetes objects in namespace {}",
        args.namespace
    ));
    print_objects(&admin, &args.namespace, &args.installation).await?;

    step("its trace");
    print_trace(&trace_id).await;

    println!();
    println!("The system keeps running. Try the k8sworker command line (docs/cli.md):");
    println!(
        "  target/debug/k8sworker login --server {url} --username admin --password-stdin < {}",
        password_file.display()
    );
    let installation = &args.installation;
    for command in [
        format!("installations get {installation}"),
        format!("logs {installation}"),
        format!("verify {installation} --wait"),
        format!("undeploy {installation} --wait"),
    ] {
        println!("  target/debug/k8sworker {command}");
    }
    println!("Logs: {}", args.state.join("logs").display());
    println!("Stop: scripts/demo.sh stop   (kubeconfig: {kubeconfig_env})");
    Ok(())
}

/// Creates the namespace and the executor's RBAC, mints a 24 h token for
/// its ServiceAccount and writes a kubeconfig holding only that token.
async fn executor_identity(
    admin: &Client,
    namespace: &str,
    state: &Path,
) -> anyhow::Result<PathBuf> {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    if namespaces.get_opt(namespace).await?.is_none() {
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        namespaces.create(&PostParams::default(), &object).await?;
    }
    let identity = k8sworker_executor::rbac::identity(namespace)?;
    let apply = PatchParams::apply("k8sworker-demo").force();
    let name = identity.service_account.name_any();
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .patch(&name, &apply, &Patch::Apply(&identity.service_account))
        .await
        .context("applying the executor's ServiceAccount")?;
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), namespace)
        .patch(
            &identity.role.name_any(),
            &apply,
            &Patch::Apply(&identity.role),
        )
        .await
        .context("applying the executor's Role")?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), namespace)
        .patch(
            &identity.role_binding.name_any(),
            &apply,
            &Patch::Apply(&identity.role_binding),
        )
        .await
        .context("applying the executor's RoleBinding")?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(24 * 3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(&name, &PostParams::default(), &request)
        .await
        .context("minting the executor's token (TokenRequest)")?
        .status
        .context("TokenRequest status")?
        .token;

    // The admin kubeconfig's cluster (server and CA) with the token as the
    // only credential.
    let kubeconfig = Kubeconfig::read().context("reading KUBECONFIG")?;
    let context_name = kubeconfig
        .current_context
        .clone()
        .context("the kubeconfig has no current context")?;
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("the current context names no cluster")?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .context("the current context's cluster is not in the kubeconfig")?;
    let mut cluster = serde_json::to_value(cluster)?;
    if let Some(path) = cluster["cluster"]["certificate-authority"].as_str() {
        // Embed a CA file so the kubeconfig works from anywhere.
        let pem = fs::read(path).with_context(|| format!("reading the CA {path}"))?;
        cluster["cluster"]["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&pem));
        cluster["cluster"]
            .as_object_mut()
            .map(|c| c.remove("certificate-authority"));
    }
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "executor", "user": {"token": token}}],
        "contexts": [{"name": "executor", "context": {"cluster": cluster_name, "user": "executor", "namespace": namespace}}],
        "current-context": "executor",
    });
    let path = state.join("executor.kubeconfig");
    certs::write_secret(&path, &serde_saphyr::to_string(&document)?)?;
    println!(
        "    token for {namespace}/{name} written to {} (mode 0600)",
        path.display()
    );
    Ok(fs::canonicalize(path)?)
}

async fn print_objects(admin: &Client, namespace: &str, installation: &str) -> anyhow::Result<()> {
    let selector = k8sworker_core::labels::selector(installation);
    let params = ListParams::default().labels(&selector);
    for sts in Api::<StatefulSet>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await?
    {
        let status = sts.status.clone().unwrap_or_default();
        println!(
            "    StatefulSet {:<32} replicas {}/{} ready",
            sts.name_any(),
            status.ready_replicas.unwrap_or(0),
            sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
        );
    }
    for service in Api::<Service>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await?
    {
        let spec = service.spec.clone().unwrap_or_default();
        println!(
            "    Service     {:<32} {} {}",
            service.name_any(),
            spec.type_.unwrap_or_default(),
            spec.cluster_ip.unwrap_or_default()
        );
    }
    for object in Api::<ConfigMap>::namespaced(admin.clone(), namespace)
        .list_metadata(&params)
        .await?
    {
        println!("    ConfigMap   {}", object.name_any());
    }
    for object in Api::<Secret>::namespaced(admin.clone(), namespace)
        .list_metadata(&params)
        .await?
    {
        println!("    Secret      {}", object.name_any());
    }
    for object in Api::<Ingress>::namespaced(admin.clone(), namespace)
        .list(&params)
        .await?
    {
        let hosts: Vec<String> = object
            .spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .filter_map(|r| r.host.clone())
            .collect();
        println!(
            "    Ingress     {:<32} {}",
            object.name_any(),
            hosts.join(",")
        );
    }
    let pods = ListParams::default().labels(&format!(
        "{}={installation}",
        k8sworker_core::labels::INSTALLATION
    ));
    for pod in Api::<Pod>::namespaced(admin.clone(), namespace)
        .list(&pods)
        .await?
    {
        println!(
            "    Pod         {:<32} {}",
            pod.name_any(),
            pod.status.and_then(|s| s.phase).unwrap_or_default()
        );
    }
    Ok(())
}

async fn print_trace(trace_id: &str) {
    println!("    trace id {trace_id}");
    let Ok(query) = std::env::var("JAEGER_QUERY_URL") else {
        println!(
            "    (no JAEGER_QUERY_URL: set OTEL_EXPORTER_OTLP_ENDPOINT and JAEGER_QUERY_URL to export and find it)"
        );
        return;
    };
    let query = query.trim_end_matches('/').to_owned();
    let Ok(jaeger) = k8sworker_client::Client::builder(&query).build() else {
        println!("    JAEGER_QUERY_URL `{query}` is not an http(s) URL");
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Option<Value> = jaeger
            .get_json(&format!("/api/traces/{trace_id}"))
            .await
            .ok();
        let trace = answer
            .as_ref()
            .and_then(|a| a["data"].as_array())
            .and_then(|traces| traces.first());
        let services: Vec<String> = trace
            .and_then(|t| t["processes"].as_object())
            .map(|processes| {
                let mut names: Vec<String> = processes
                    .values()
                    .filter_map(|p| p["serviceName"].as_str().map(str::to_owned))
                    .collect();
                names.sort();
                names.dedup();
                names
            })
            .unwrap_or_default();
        // Each binary exports in batches; wait until all four have arrived.
        if services.len() >= 4 || Instant::now() > deadline {
            let spans = trace
                .and_then(|t| t["spans"].as_array())
                .map_or(0, Vec::len);
            println!("    {spans} spans from {}", services.join(", "));
            println!("    {query}/trace/{trace_id}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A REST caller with a session token: `(status, body)` answers, so the
/// demo can say what was refused.
struct Rest(k8sworker_client::Client);

impl Rest {
    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let answer = self.0.get(path).await?;
        Ok((answer.status, answer.body))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let answer = self.0.post(path, &body).await?;
        Ok((answer.status, answer.body))
    }
}
