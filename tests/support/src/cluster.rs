//! Finding (or starting) the test cluster.
//!
//! In order: the env file `tests/cluster/up.sh` writes
//! (`$K8SWORKER_CLUSTER_ENV`, else `${K8SWORKER_CLUSTER_DIR:-/tmp/k8sworker-testcluster}/env`)
//! when its API server answers; else `KUBECONFIG`; else `tests/cluster/up.sh`
//! is run once for the whole test process (`K8SWORKER_TEST_NO_START=1`
//! forbids that). Only configuration is cached: every test builds its own
//! clients on its own runtime.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

static CLUSTER: OnceCell<TestCluster> = OnceCell::const_new();

/// A reachable cluster and its environment.
#[derive(Clone)]
pub struct TestCluster {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The variables of the env file (empty when attached via `KUBECONFIG`).
    pub env: BTreeMap<String, String>,
    config: kube::Config,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("server", &self.config.cluster_url)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// The cluster of this test run; panics with the reason when there is none.
    pub async fn get() -> &'static TestCluster {
        CLUSTER
            .get_or_init(|| async {
                match locate().await {
                    Ok(cluster) => cluster,
                    Err(reason) => panic!(
                        "no test cluster: {reason}\n\
                         start one with tests/cluster/up.sh (see tests/cluster/README.md)"
                    ),
                }
            })
            .await
    }

    /// The admin configuration (client certificate in `system:masters`).
    pub fn admin_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// An admin client on the current runtime.
    pub fn admin(&self) -> kube::Client {
        kube::Client::try_from(self.admin_config()).expect("admin client")
    }

    /// A variable of the cluster's env file, else of the process environment.
    pub fn var(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// Jaeger's query API, e.g. `http://127.0.0.1:16686`.
    pub fn jaeger_query_url(&self) -> String {
        self.var("JAEGER_QUERY_URL")
            .unwrap_or_else(|| "http://127.0.0.1:16686".into())
    }

    /// Jaeger's OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub fn otlp_endpoint(&self) -> String {
        self.var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| "http://127.0.0.1:4317".into())
    }

    /// The node kwok runs Pods on.
    pub fn node(&self) -> String {
        self.var("K8SWORKER_TEST_NODE")
            .unwrap_or_else(|| "kwok-node-0".into())
    }
}

/// An image tag suffix the test cluster turns into a container stuck in
/// `ImagePullBackOff` (tests/cluster/README.md, "Failing pods").
pub const PULL_FAIL: &str = "-pullfail";

/// An image tag suffix the test cluster turns into a container in
/// `CrashLoopBackOff`.
pub const CRASH_LOOP: &str = "-crashloop";

/// Panics, saying what to do, unless the cluster's kwok turns [`PULL_FAIL`]
/// and [`CRASH_LOOP`] images into failing containers: a cluster started by
/// an older `up.sh` runs them as healthy pods, and a test relying on the
/// failure would prove nothing. `up.sh` records the stages in the ConfigMap
/// `kube-public/k8sworker-testcluster`.
pub async fn require_failing_images(admin: &kube::Client) {
    let config_maps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(admin.clone(), "kube-public");
    let marker = config_maps
        .get_opt("k8sworker-testcluster")
        .await
        .expect("read kube-public/k8sworker-testcluster");
    let stages = marker
        .and_then(|config_map| config_map.data)
        .and_then(|data| data.get("kwok-failing-images").cloned())
        .unwrap_or_default();
    for (suffix, reason) in [
        (PULL_FAIL, "ImagePullBackOff"),
        (CRASH_LOOP, "CrashLoopBackOff"),
    ] {
        assert!(
            stages
                .split_whitespace()
                .any(|stage| stage == format!("{suffix}={reason}")),
            "the test cluster's kwok does not make `*{suffix}` images fail with {reason} \
             (found stages: {stages:?}): it was started by an older tests/cluster/up.sh; \
             restart it with the current one (tests/cluster/down.sh, then tests/cluster/up.sh)"
        );
    }
}

fn env_file() -> PathBuf {
    if let Ok(path) = std::env::var("K8SWORKER_CLUSTER_ENV") {
        return path.into();
    }
    let dir = std::env::var("K8SWORKER_CLUSTER_DIR")
        .unwrap_or_else(|_| "/tmp/k8sworker-testcluster".into());
    Path::new(&dir).join("env")
}

async fn locate() -> Result<TestCluster, String> {
    let file = env_file();
    if file.exists() {
        match from_env_file(&file).await {
            Ok(cluster) => return Ok(cluster),
            Err(reason) => eprintln!("test cluster at {}: {reason}", file.display()),
        }
    } else if let Ok(kubeconfig) = std::env::var("KUBECONFIG") {
        let cluster = from_kubeconfig(kubeconfig.into(), BTreeMap::new()).await?;
        answers(&cluster).await?;
        return Ok(cluster);
    }
    if std::env::var("K8SWORKER_TEST_NO_START").is_ok_and(|v| v == "1") {
        return Err("not running, and K8SWORKER_TEST_NO_START=1".into());
    }
    let file = start().await?;
    from_env_file(&file).await
}

async fn from_env_file(file: &Path) -> Result<TestCluster, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let env = parse_env(&text);
    let kubeconfig = env
        .get("KUBECONFIG")
        .ok_or_else(|| format!("{} sets no KUBECONFIG", file.display()))?;
    let cluster = from_kubeconfig(kubeconfig.into(), env.clone()).await?;
    answers(&cluster).await?;
    Ok(cluster)
}

async fn from_kubeconfig(
    path: PathBuf,
    env: BTreeMap<String, String>,
) -> Result<TestCluster, String> {
    let kubeconfig =
        Kubeconfig::read_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(TestCluster {
        kubeconfig: path,
        env,
        config,
    })
}

async fn answers(cluster: &TestCluster) -> Result<(), String> {
    let client = cluster.admin();
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!(
            "API server {} failed: {error}",
            cluster.config.cluster_url
        )),
        Err(_) => Err(format!(
            "API server {} does not answer",
            cluster.config.cluster_url
        )),
    }
}

/// Runs `tests/cluster/up.sh`; its last line of output is the env file.
async fn start() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/up.sh");
    eprintln!("starting the test cluster with {}", script.display());
    let output = tokio::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!("{} failed ({})", script.display(), output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .ok_or("up.sh printed no env file")?;
    Ok(PathBuf::from(last.trim()))
}

/// `export KEY=VALUE` lines (quotes optional); anything else is ignored.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = line.strip_prefix("export ").unwrap_or(line);
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.trim().to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_are_read_with_or_without_quotes() {
        let env = parse_env(
            "# comment\nexport KUBECONFIG=/x/admin.kubeconfig\nexport A=\"b c\"\nB='d'\n\ngarbage\n",
        );
        assert_eq!(env["KUBECONFIG"], "/x/admin.kubeconfig");
        assert_eq!(env["A"], "b c");
        assert_eq!(env["B"], "d");
        assert_eq!(env.len(), 3);
    }
}
