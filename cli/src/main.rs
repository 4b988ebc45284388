//! `k8sworker`: the command-line client of the k8sworker control plane, so
//! an operator never needs curl (`docs/cli.md`).
//!
//! ```text
//! main         arguments (clap), the session, exit codes: 0 done, 1 an error
//!              or a workitem that ended FAILED/INVALID (kubectl's habit)
//! credentials  the stored server and token (0600)
//! output       --output table|json|yaml
//! preview      deploy --dry-run: the planner's render, Secret data masked
//! plan         plan: the live plan from the planner (a preview client)
//! ```

mod credentials;
mod output;
mod plan;
mod preview;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use k8sworker_client::{AccessToken, Client};
use serde_json::{Value, json};

use crate::credentials::Credentials;
use crate::output::{Column, Format, field};

const R: &str = "/api/v1/resources";

/// The k8sworker control plane from the command line.
#[derive(Debug, Parser)]
#[command(name = "k8sworker", version, about)]
struct Cli {
    /// The control plane's URL; default: the one logged in to.
    #[arg(long, global = true, env = "K8SWORKER_SERVER")]
    server: Option<String>,
    /// An access token to use instead of the stored session.
    #[arg(long, global = true, env = "K8SWORKER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where the session is stored; default: the user's config directory.
    #[arg(long, global = true, env = "K8SWORKER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// How results are printed.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in and store the session token (0600) for the next commands.
    Login {
        /// The user.
        #[arg(long, short, env = "K8SWORKER_USERNAME")]
        username: String,
        /// Read the password from standard input (else K8SWORKER_PASSWORD,
        /// else a prompt).
        #[arg(long)]
        password_stdin: bool,
    },
    /// K8s clusters.
    #[command(subcommand)]
    Clusters(Clusters),
    /// Deploy (or update) an installation from a JSON file holding the
    /// deploy's `data`: `name`, `k8sNamespace`, `config` (or `configRef`).
    Deploy {
        /// The request file (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The K8s cluster; default: the file's `clusterName`.
        #[arg(long)]
        cluster: Option<String>,
        /// Print the objects the request renders to (Secret data masked);
        /// send nothing.
        #[arg(long)]
        dry_run: bool,
        /// The Ingress default host for --dry-run; default: Vantiq's
        /// `vantiq-<cluster>-node`.
        #[arg(long)]
        ingress_default_node: Option<String>,
        /// Watch the workitem to completion.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "10m", value_parser = humantime_duration)]
        timeout: Duration,
    },
    /// The live plan: what the planner would apply for a request now,
    /// against what the namespace's executor observes; applies nothing.
    /// Needs a preview client's certificate (`docs/tls.md`), not a login.
    Plan {
        /// The request file, as for deploy (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// deploy, undeploy, shutdown or restart.
        #[arg(long, default_value = "deploy")]
        op: String,
        /// Whose objects are ours: `<vantiq-namespace>/<cluster>`.
        #[arg(long, value_parser = k8sworker_core::owner::Tenant::parse)]
        tenant: k8sworker_core::owner::Tenant,
        /// The planner's URL, `https://host:port`.
        #[arg(long, env = "K8SWORKER_PLANNER_URL")]
        planner: String,
        /// The preview client's `tls.crt`, `tls.key` and `ca.crt`.
        #[arg(long, env = "K8SWORKER_TLS_DIR")]
        tls_dir: PathBuf,
        /// The cluster's Ingress default host; default: Vantiq's
        /// `vantiq-<cluster>-node`.
        #[arg(long)]
        ingress_default_node: Option<String>,
    },
    /// Installations.
    #[command(subcommand)]
    Installations(Installations),
    /// Workitems.
    #[command(subcommand)]
    Workitems(Workitems),
    /// Fetch an installation's pod logs (fetchLogs) and print them.
    Logs {
        /// The installation.
        installation: String,
        /// Only this pod.
        #[arg(long)]
        pod: Option<String>,
        /// How long to wait for the worker.
        #[arg(long, default_value = "5m", value_parser = humantime_duration)]
        timeout: Duration,
    },
    /// Verify an installation now: does the cluster still match its record?
    Verify {
        /// The installation.
        installation: String,
        /// Watch the workitem to completion, then print the installation.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "5m", value_parser = humantime_duration)]
        timeout: Duration,
    },
    /// Remove an installation from the cluster and from the control plane.
    Undeploy {
        /// The installation.
        installation: String,
        /// Watch the workitem to completion.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "10m", value_parser = humantime_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum Clusters {
    /// Every K8s cluster of the namespace.
    List,
    /// Create (or update) a K8s cluster.
    Create {
        /// Its name; the worker's CLUSTER_NAME.
        name: String,
        /// The Ingress host of installations whose ports name none.
        #[arg(long)]
        ingress_default_node: Option<String>,
    },
    /// Delete a K8s cluster (refused while it has installations or work).
    Delete {
        /// Its name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum Installations {
    /// One installation, or all.
    Get {
        /// The installation; all when absent.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Workitems {
    /// Follow a workitem until it is done; exit 1 if it ends FAILED or
    /// INVALID.
    Watch {
        /// Its requestId.
        request_id: String,
        /// How long to wait.
        #[arg(long, default_value = "10m", value_parser = humantime_duration)]
        timeout: Duration,
    },
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| error.to_string())
}

const CLUSTER_COLUMNS: &[Column] = &[
    ("NAME", |o| field(o, "name")),
    ("INGRESS DEFAULT NODE", |o| field(o, "ingressDefaultNode")),
    ("OPERATIONS", |o| field(o, "lifecycleOperationCount")),
];

const INSTALLATION_COLUMNS: &[Column] = &[
    ("NAME", |o| field(o, "name")),
    ("CLUSTER", |o| field(o, "clusterName")),
    ("NAMESPACE", |o| field(o, "k8sNamespace")),
    ("STATUS", |o| field(o, "installationStatus")),
    ("REPLICAS", |o| field(o, "replicaCount")),
    ("K8S STATE", |o| field(o, "k8sState")),
];

const WORKITEM_COLUMNS: &[Column] = &[
    ("REQUEST ID", |o| field(o, "requestId")),
    ("OPERATION", |o| field(o, "operation")),
    ("INSTALLATION", |o| field(o, "installationName")),
    ("STATUS", |o| field(o, "status")),
    ("MESSAGE", |o| field(o, "message")),
];

const STEP_COLUMNS: &[Column] = &[
    ("ACTION", |o| field(o, "action")),
    ("KIND", |o| field(o, "kind")),
    ("NAME", |o| field(o, "name")),
    ("REASON", |o| field(o, "reason")),
];

const OBJECT_COLUMNS: &[Column] = &[
    ("KIND", |o| field(o, "kind")),
    ("NAME", |o| {
        o["metadata"]["name"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }),
    ("NAMESPACE", |o| {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }),
];

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `text` to standard output.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    k8sworker_client::tls::install_default_provider();
    let dir = credentials::directory(cli.config_dir.as_deref())?;
    let format = cli.output;
    if let Command::Login {
        username,
        password_stdin,
    } = &cli.command
    {
        let stored = credentials::load(&dir)?;
        let Some(server) = cli.server.clone().or(stored.map(|s| s.server)) else {
            bail!("no server: give --server (or K8SWORKER_SERVER)");
        };
        let password = password(*password_stdin)?;
        let client = Client::builder(&server).build()?;
        let token = client
            .authenticate(username, &password)
            .await
            .with_context(|| format!("logging in to {server} as {username}"))?;
        let path = credentials::store(
            &dir,
            &Credentials {
                server: server.clone(),
                token: token.expose().to_owned(),
            },
        )?;
        eprintln!(
            "logged in to {server} as {username}; session stored in {}",
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Deploy {
        file,
        cluster,
        dry_run: true,
        ingress_default_node,
        ..
    } = &cli.command
    {
        let data = read_request(file)?;
        let cluster = cluster_of(cluster.as_deref(), &data)?;
        let node = ingress_default_node
            .clone()
            .unwrap_or_else(|| preview::default_ingress_node(&cluster));
        let objects = preview::preview(&data, &cluster, &node)?;
        print(&output::render(format, &objects, OBJECT_COLUMNS)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Plan {
        file,
        op,
        tenant,
        planner,
        tls_dir,
        ingress_default_node,
    } = &cli.command
    {
        let data = read_request(file)?;
        let Some(operation) = k8sworker_core::plan::Operation::parse(op) else {
            bail!("--op must be deploy, undeploy, shutdown or restart, got `{op}`");
        };
        let steps = plan::live_plan(plan::LivePlan {
            data: &data,
            operation,
            tenant: tenant.clone(),
            ingress_default_node: ingress_default_node
                .clone()
                .unwrap_or_else(|| preview::default_ingress_node(&tenant.cluster)),
            planner,
            tls_dir,
        })
        .await?;
        print(&output::render(format, &steps, STEP_COLUMNS)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = session(&cli, &dir)?;
    match cli.command {
        Command::Login { .. } | Command::Plan { .. } => unreachable!("handled above"),
        Command::Clusters(Clusters::List) => {
            let clusters = ok(client.get(&format!("{R}/k8sclusters")).await?)?;
            print(&output::render(
                format,
                as_list(&clusters),
                CLUSTER_COLUMNS,
            )?)?;
        }
        Command::Clusters(Clusters::Create {
            name,
            ingress_default_node,
        }) => {
            let mut cluster = json!({"name": name});
            if let Some(node) = ingress_default_node {
                cluster["ingressDefaultNode"] = json!(node);
            }
            client.upsert("k8sclusters", &cluster).await?;
            let created = client.cluster(&name).await?;
            print(&output::render_one(format, &created, CLUSTER_COLUMNS)?)?;
        }
        Command::Clusters(Clusters::Delete { name }) => {
            client.delete_one("k8sclusters", &name).await?;
            eprintln!("k8scluster {name} deleted");
        }
        Command::Deploy {
            file,
            cluster,
            wait,
            timeout,
            ..
        } => {
            let mut data = read_request(&file)?;
            let cluster = cluster_of(cluster.as_deref(), &data)?;
            if let Some(object) = data.as_object_mut() {
                object.remove("clusterName");
            }
            let item = ok(client
                .post(
                    &format!("{R}/k8sclusters/{cluster}/command"),
                    &json!({"op": "deploy", "data": data}),
                )
                .await?)?;
            return requested(&client, format, item, wait, timeout).await;
        }
        Command::Installations(Installations::Get { name: Some(name) }) => {
            let installation = ok(client.get(&format!("{R}/k8sinstallations/{name}")).await?)?;
            print(&output::render_one(
                format,
                &installation,
                INSTALLATION_COLUMNS,
            )?)?;
        }
        Command::Installations(Installations::Get { name: None }) => {
            let installations = ok(client.get(&format!("{R}/k8sinstallations")).await?)?;
            print(&output::render(
                format,
                as_list(&installations),
                INSTALLATION_COLUMNS,
            )?)?;
        }
        Command::Workitems(Workitems::Watch {
            request_id,
            timeout,
        }) => {
            let (code, last) = watch(&client, format, &request_id, timeout).await?;
            finish(format, &last)?;
            return Ok(code);
        }
        Command::Logs {
            installation,
            pod,
            timeout,
        } => return logs(&client, &installation, pod, timeout).await,
        Command::Verify {
            installation,
            wait,
            timeout,
        } => {
            let item = installation_command(&client, &installation, "verify", json!({})).await?;
            let code = requested(&client, format, item, wait, timeout).await?;
            if wait && code == ExitCode::SUCCESS {
                let record = ok(client
                    .get(&format!("{R}/k8sinstallations/{installation}"))
                    .await?)?;
                print(&output::render_one(format, &record, INSTALLATION_COLUMNS)?)?;
            }
            return Ok(code);
        }
        Command::Undeploy {
            installation,
            wait,
            timeout,
        } => {
            let item = installation_command(&client, &installation, "undeploy", json!({})).await?;
            return requested(&client, format, item, wait, timeout).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The client of the session: `--server`/`--token`, else the stored ones.
fn session(cli: &Cli, dir: &std::path::Path) -> anyhow::Result<Client> {
    let stored = credentials::load(dir)?;
    let server = cli
        .server
        .clone()
        .or_else(|| stored.as_ref().map(|s| s.server.clone()))
        .context("no server: log in (k8sworker login --server URL) or give --server")?;
    let token = match (&cli.token, &stored) {
        (Some(token), _) => token.clone(),
        (None, Some(stored)) if stored.server == server => stored.token.clone(),
        _ => bail!("not logged in to {server}: run k8sworker login, or give --token"),
    };
    let token: AccessToken = token.parse().map_err(anyhow::Error::msg)?;
    Ok(Client::builder(&server).token(token).build()?)
}

/// The password: standard input, `K8SWORKER_PASSWORD`, or a prompt.
fn password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if let Ok(password) = std::env::var("K8SWORKER_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: give --password-stdin or K8SWORKER_PASSWORD");
    }
    Ok(rpassword::prompt_password("Password: ")?)
}

/// The deploy request in `file` (`-`: standard input).
fn read_request(file: &std::path::Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let data: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    if !data.is_object() {
        bail!(
            "{} must hold a JSON object (the deploy's data)",
            file.display()
        );
    }
    Ok(data)
}

/// `--cluster`, else the request's `clusterName`.
fn cluster_of(given: Option<&str>, data: &Value) -> anyhow::Result<String> {
    given
        .or_else(|| data.get("clusterName").and_then(Value::as_str))
        .map(str::to_owned)
        .context("no cluster: give --cluster or a clusterName in the file")
}

/// The body of a 2xx answer; a refusal as an error with the server's message.
fn ok(answer: k8sworker_client::Answer) -> anyhow::Result<Value> {
    if answer.is_success() {
        return Ok(answer.body);
    }
    let message = answer.body[0]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.body.to_string());
    let code = answer.body[0]["code"].as_str().unwrap_or_default();
    bail!("{message} ({} {code})", answer.status)
}

fn as_list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

async fn installation_command(
    client: &Client,
    installation: &str,
    op: &str,
    data: Value,
) -> anyhow::Result<Value> {
    ok(client
        .post(
            &format!("{R}/k8sinstallations/{installation}/command"),
            &json!({"op": op, "data": data}),
        )
        .await?)
}

/// Prints the workitem a command answered; with `wait`, watches it.
async fn requested(
    client: &Client,
    format: Format,
    item: Value,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    if !wait {
        print(&output::render_one(format, &item, WORKITEM_COLUMNS)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let request_id = item["requestId"].as_str().unwrap_or_default().to_owned();
    let (code, last) = watch(client, Format::Table, &request_id, timeout).await?;
    finish(format, &last)?;
    Ok(code)
}

/// How a watch ended: the workitem's last state, or its completion.
#[derive(Debug)]
enum Ended {
    /// It is gone: the control plane deletes a workitem that succeeded.
    Completed(String),
    /// It ended `FAILED`, `INVALID` or `CANCELLED` (kept, with its message).
    Failed(Value),
}

fn finish(format: Format, ended: &Ended) -> anyhow::Result<()> {
    match (ended, format) {
        (Ended::Completed(request_id), Format::Table) => {
            print(&format!("workitem {request_id} completed\n"))
        }
        (Ended::Completed(request_id), _) => print(&output::render_one(
            format,
            &json!({"requestId": request_id, "status": "COMPLETED"}),
            WORKITEM_COLUMNS,
        )?),
        (Ended::Failed(item), Format::Table) => {
            eprintln!(
                "workitem {} {}: {}",
                field(item, "requestId"),
                field(item, "status"),
                field(item, "message")
            );
            Ok(())
        }
        (Ended::Failed(item), _) => print(&output::render_one(format, item, WORKITEM_COLUMNS)?),
    }
}

/// Polls the workitem until it is gone (completed) or ends; in table
/// format, prints each status it passes through.
async fn watch(
    client: &Client,
    format: Format,
    request_id: &str,
    timeout: Duration,
) -> anyhow::Result<(ExitCode, Ended)> {
    let deadline = Instant::now() + timeout;
    let mut last_status = String::new();
    loop {
        let answer = client
            .get(&format!("{R}/k8sworkitems/{request_id}"))
            .await?;
        if answer.status == 404 {
            return Ok((ExitCode::SUCCESS, Ended::Completed(request_id.to_owned())));
        }
        let item = ok(answer)?;
        let status = field(&item, "status");
        if status != last_status && format == Format::Table {
            eprintln!(
                "workitem {request_id} ({} of {}): {status}",
                field(&item, "operation"),
                field(&item, "installationName")
            );
        }
        if matches!(status.as_str(), "FAILED" | "INVALID" | "CANCELLED") {
            return Ok((ExitCode::FAILURE, Ended::Failed(item)));
        }
        last_status = status;
        if Instant::now() > deadline {
            bail!("workitem {request_id} is still {last_status} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// fetchLogs into a document group of its own, then prints every document
/// the worker uploaded there.
async fn logs(
    client: &Client,
    installation: &str,
    pod: Option<String>,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let group = format!("k8sworker-cli/{installation}/{millis}");
    let mut data = json!({"documentGroup": group});
    if let Some(pod) = pod {
        data["podName"] = json!(pod);
    }
    let item = installation_command(client, installation, "fetchLogs", data).await?;
    let request_id = item["requestId"].as_str().unwrap_or_default().to_owned();
    let (code, ended) = watch(client, Format::Json, &request_id, timeout).await?;
    if let Ended::Failed(item) = &ended {
        finish(Format::Table, &Ended::Failed(item.clone()))?;
        return Ok(code);
    }
    let prefix = format!("{group}/");
    let mut names: Vec<String> = client
        .documents()
        .await?
        .into_iter()
        .map(|document| document.name)
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("the worker uploaded no logs for {installation}");
    }
    for name in &names {
        let content = client.download_document(name).await?;
        if names.len() > 1 {
            print(&format!("==> {name} <==\n"))?;
        }
        print(&String::from_utf8_lossy(&content))?;
    }
    Ok(ExitCode::SUCCESS)
}
