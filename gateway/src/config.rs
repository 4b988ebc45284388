//! The gateway's configuration: one `clap` struct. The three settings the
//! seed's worker takes from its environment keep their names
//! (`CLUSTER_NAME`, `VANTIQ_URL`, `VANTIQ_ACCESS_TOKEN`); everything else has
//! a `K8SWORKER_*` variable; a flag overrides its variable. Invalid values
//! stop the binary before any I/O.

use std::time::Duration;

/// The control-plane access token. Its `Debug` never shows it.
pub use k8sworker_client::AccessToken;

/// How claims wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClaimMode {
    /// Long-poll when the server supports it, else poll.
    Auto,
    /// Each claim waits on the server until work arrives (or the wait ends).
    LongPoll,
    /// Claims return at once; the gateway polls on an adaptive, jittered schedule.
    Poll,
}

/// Which worker protocol the gateway speaks with the server
/// (`docs/worker-protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `claim` when the server answers `GET /api/v1/version`, else `rest`.
    Auto,
    /// The `K8sManager` claim procedures: leases, long-poll, secrets.
    Claim,
    /// Only Vantiq's documented resources (`k8sworkitems`,
    /// `k8sinstallations`, `documents`): no lease, so one gateway per
    /// cluster; no secret values.
    Rest,
}

/// Configuration of `k8sworker-gateway`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "k8sworker-gateway", version, about)]
pub struct Config {
    /// The K8sCluster this gateway serves: its name in the control plane.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: String,

    /// The Vantiq namespace this gateway serves (its access token's
    /// namespace). With `--cluster-name` it is the gateway's tenant: every
    /// object its deploys create records it as owner, and executors admit
    /// only the tenants their operator allows.
    #[arg(long, env = "VANTIQ_NAMESPACE")]
    pub vantiq_namespace: String,

    /// Base URL of the control plane (Vantiq or k8sworker-controlplane),
    /// e.g. `https://vantiq.example.com`.
    #[arg(long, env = "VANTIQ_URL")]
    pub vantiq_url: String,

    /// Access token with the `k8sWorker__system` profile. Prefer the
    /// environment variable: a flag is visible in the process list.
    #[arg(long, env = "VANTIQ_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: AccessToken,

    /// The planner's gRPC address. The connection is mutual TLS (the
    /// planner's certificate must name `spiffe://k8sworker/planner`) unless
    /// `--insecure-plaintext`; the scheme does not choose.
    #[arg(
        long,
        env = "K8SWORKER_PLANNER_URL",
        default_value = "https://127.0.0.1:50051"
    )]
    pub planner_url: String,

    /// The gateway's certificate (naming its tenant,
    /// `spiffe://k8sworker/gateway/<VANTIQ_NAMESPACE>/<CLUSTER_NAME>`) for
    /// the planner hop.
    #[command(flatten)]
    pub tls: k8sworker_tls::TlsArgs,

    /// Process the workitems queued now, then exit (the CronJob form).
    #[arg(long)]
    pub once: bool,

    /// The worker protocol: `claim`, `rest` (Vantiq's documented resources
    /// only), or `auto` (`rest` when the server has no version endpoint).
    #[arg(long, env = "K8SWORKER_PROTOCOL", value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,

    /// How claims wait for work.
    #[arg(long, env = "K8SWORKER_CLAIM_MODE", value_enum, default_value_t = ClaimMode::Auto)]
    pub claim_mode: ClaimMode,

    /// Longest server-side wait of one long-poll claim (the server may cap it).
    #[arg(long, env = "K8SWORKER_LONG_POLL_WAIT", value_parser = humantime::parse_duration, default_value = "20s")]
    pub long_poll_wait: Duration,

    /// Wait between claims that found nothing, while recently busy.
    #[arg(long, env = "K8SWORKER_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub poll_interval: Duration,

    /// Longest wait between claims once idle for a minute.
    #[arg(long, env = "K8SWORKER_IDLE_POLL_MAX", value_parser = humantime::parse_duration, default_value = "5s")]
    pub idle_poll_max: Duration,

    /// Lease asked for each claim; renewed every third of it while the
    /// operation runs. A gateway that dies loses its workitem after this long.
    #[arg(long, env = "K8SWORKER_LEASE", value_parser = humantime::parse_duration, default_value = "60s")]
    pub lease: Duration,

    /// On SIGTERM, how long the current operation may still run before it
    /// is released back to the queue.
    #[arg(long, env = "K8SWORKER_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_grace: Duration,

    /// Longest a single planner call may take.
    #[arg(long, env = "K8SWORKER_EXECUTE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    pub execute_timeout: Duration,

    /// Timeout of each control-plane call (a claim adds its wait).
    #[arg(long, env = "K8SWORKER_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub request_timeout: Duration,

    /// Claims of one workitem after which a passing error (planner or
    /// executor unreachable) fails it instead of releasing it again.
    #[arg(long, env = "K8SWORKER_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,

    /// This gateway's name in leases; default `<hostname>-<random>`.
    #[arg(long, env = "K8SWORKER_GATEWAY_ID")]
    pub worker_id: Option<String>,

    /// Most workitems in flight at once (claimed and not yet reported).
    /// Claiming stops while this many are in flight; the two operations of
    /// one installation never overlap and run in queue order.
    #[arg(long, env = "K8SWORKER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// How long a workitem whose planner call keeps failing with a passing
    /// error (planner or executor unreachable, a timeout, overload) is
    /// retried in place, under its lease, before it fails: an outage
    /// shorter than this fails nothing.
    #[arg(long, env = "K8SWORKER_RETRY_FOR", value_parser = humantime::parse_duration, default_value = "5m")]
    pub retry_for: Duration,

    /// Most tries of one claim's planner call under passing errors (the
    /// in-place retries), whichever of this and `--retry-for` ends first.
    #[arg(long, env = "K8SWORKER_RETRIES", default_value_t = 60)]
    pub retries: u32,

    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no
    /// authentication: counts and latencies by operation, no tenant data),
    /// e.g. `0.0.0.0:9464`; none by default.
    #[arg(long, env = "K8SWORKER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--cluster-name` is empty.
    #[error("--cluster-name (CLUSTER_NAME) must not be empty")]
    NoCluster,
    /// A value is still the `<PLACEHOLDER>` of the install files
    /// (`deploy/overlays/worker/provide*.yaml`, `deploy/plainText/`).
    #[error(
        "{flag} is still the placeholder `{placeholder}` of the install files: fill it in deploy/overlays/worker/provide*.yaml (or deploy/plainText/) and apply them again"
    )]
    Placeholder {
        /// The flag and its variable, `--cluster-name (CLUSTER_NAME)`.
        flag: &'static str,
        /// The placeholder found (never a real value, so safe to show).
        placeholder: String,
    },
    /// `--vantiq-namespace` and `--cluster-name` are not a valid tenant.
    #[error("--vantiq-namespace (VANTIQ_NAMESPACE): {0}")]
    Tenant(k8sworker_core::owner::OwnerError),
    /// `--vantiq-url` is not an http(s) URL.
    #[error("--vantiq-url (VANTIQ_URL) must be an http:// or https:// URL, got `{0}`")]
    Url(String),
    /// `--planner-url` is not an http(s) URL.
    #[error("--planner-url (K8SWORKER_PLANNER_URL) must be an http:// or https:// URL, got `{0}`")]
    PlannerUrl(String),
    /// `--insecure-plaintext` with a planner that is not on loopback.
    #[error("--planner-url (K8SWORKER_PLANNER_URL): {0}")]
    Plaintext(k8sworker_tls::TlsError),
    /// The named duration or count is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// `--lease` is shorter than 3 s (it is renewed every third of it).
    #[error("--lease must be at least 3 seconds, got {0:?}")]
    LeaseTooShort(Duration),
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

impl Config {
    /// A configuration with every default, for embedding (tests, benchmarks);
    /// set [`Config::vantiq_namespace`], which has none.
    pub fn new(
        cluster_name: impl Into<String>,
        vantiq_url: impl Into<String>,
        access_token: AccessToken,
        planner_url: impl Into<String>,
    ) -> Config {
        Config {
            cluster_name: cluster_name.into(),
            vantiq_namespace: String::new(),
            vantiq_url: vantiq_url.into(),
            access_token,
            planner_url: planner_url.into(),
            tls: k8sworker_tls::TlsArgs::default(),
            once: false,
            protocol: Protocol::Auto,
            claim_mode: ClaimMode::Auto,
            long_poll_wait: Duration::from_secs(20),
            poll_interval: Duration::from_secs(1),
            idle_poll_max: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            execute_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(30),
            max_attempts: 10,
            worker_id: None,
            concurrency: 16,
            retry_for: Duration::from_secs(300),
            retries: 60,
            metrics_addr: None,
        }
    }

    /// Checks what clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, value) in [
            ("--cluster-name (CLUSTER_NAME)", self.cluster_name.as_str()),
            (
                "--vantiq-namespace (VANTIQ_NAMESPACE)",
                self.vantiq_namespace.as_str(),
            ),
            ("--vantiq-url (VANTIQ_URL)", self.vantiq_url.as_str()),
            (
                "--access-token (VANTIQ_ACCESS_TOKEN)",
                self.access_token.expose(),
            ),
        ] {
            if k8sworker_core::names::is_placeholder(value) {
                return Err(ConfigError::Placeholder {
                    flag,
                    placeholder: value.trim().to_owned(),
                });
            }
        }
        if self.cluster_name.trim().is_empty() {
            return Err(ConfigError::NoCluster);
        }
        self.tenant().map_err(ConfigError::Tenant)?;
        if !is_http_url(&self.vantiq_url) {
            return Err(ConfigError::Url(self.vantiq_url.clone()));
        }
        if !is_http_url(&self.planner_url) {
            return Err(ConfigError::PlannerUrl(self.planner_url.clone()));
        }
        if self.tls.insecure_plaintext {
            k8sworker_tls::plaintext_url(&self.planner_url).map_err(ConfigError::Plaintext)?;
        }
        for (name, value) in [
            ("poll-interval", self.poll_interval),
            ("idle-poll-max", self.idle_poll_max),
            ("execute-timeout", self.execute_timeout),
            ("request-timeout", self.request_timeout),
            ("retry-for", self.retry_for),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("max-attempts", self.max_attempts as usize),
            ("concurrency", self.concurrency),
            ("retries", self.retries as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.lease < Duration::from_secs(3) {
            return Err(ConfigError::LeaseTooShort(self.lease));
        }
        Ok(())
    }

    /// The gateway's tenant: its Vantiq namespace and cluster.
    ///
    /// # Errors
    /// When either is empty or malformed ([`k8sworker_core::owner::Tenant::new`]).
    pub fn tenant(
        &self,
    ) -> Result<k8sworker_core::owner::Tenant, k8sworker_core::owner::OwnerError> {
        k8sworker_core::owner::Tenant::new(self.vantiq_namespace.clone(), self.cluster_name.clone())
    }

    /// The configured worker id, else `<HOSTNAME>-<8 hex>`.
    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".into());
            format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn config() -> Config {
        let mut config = Config::new(
            "c1",
            "http://127.0.0.1:8080",
            AccessToken::new("t0ps3cret"),
            "http://127.0.0.1:50051",
        );
        config.vantiq_namespace = "acme".into();
        config.tls = k8sworker_tls::TlsArgs::plaintext();
        config
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let debug = format!("{:?}", config());
        assert!(!debug.contains("t0ps3cret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    /// The binary's name and the settings without a default.
    const REQUIRED: [&str; 9] = [
        "k8sworker-gateway",
        "--cluster-name",
        "c1",
        "--vantiq-namespace",
        "acme",
        "--vantiq-url",
        "https://vantiq.example.com/",
        "--access-token",
        "abc",
    ];

    #[test]
    fn flags_parse_with_defaults() {
        let args = REQUIRED.into_iter().chain(["--once", "--lease", "90s"]);
        let config = Config::try_parse_from(args).unwrap();
        assert!(config.once);
        assert_eq!(config.protocol, Protocol::Auto);
        assert_eq!(config.lease, Duration::from_secs(90));
        assert_eq!(config.poll_interval, Duration::from_secs(1));
        assert_eq!(config.access_token.expose(), "abc");
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.retry_for, Duration::from_secs(300));
        assert_eq!(config.retries, 60);
        config.validate().unwrap();
    }

    #[test]
    fn the_protocol_is_one_of_rest_claim_auto() {
        for (flag, protocol) in [
            ("rest", Protocol::Rest),
            ("claim", Protocol::Claim),
            ("auto", Protocol::Auto),
        ] {
            let args = REQUIRED.into_iter().chain(["--protocol", flag]);
            assert_eq!(Config::try_parse_from(args).unwrap().protocol, protocol);
        }
        let args = REQUIRED.into_iter().chain(["--protocol", "procedures"]);
        assert!(Config::try_parse_from(args).is_err());
    }

    #[test]
    fn invalid_values_are_refused_before_any_io() {
        let mut bad = config();
        bad.vantiq_url = "vantiq.example.com".into();
        assert!(matches!(bad.validate(), Err(ConfigError::Url(_))));
        let mut bad = config();
        bad.cluster_name = " ".into();
        assert!(matches!(bad.validate(), Err(ConfigError::NoCluster)));
        let mut bad = config();
        bad.vantiq_namespace = String::new();
        assert!(matches!(bad.validate(), Err(ConfigError::Tenant(_))));
        let mut bad = config();
        bad.vantiq_namespace = "a/b".into();
        assert!(matches!(bad.validate(), Err(ConfigError::Tenant(_))));
        let mut bad = config();
        bad.lease = Duration::from_secs(1);
        assert!(matches!(bad.validate(), Err(ConfigError::LeaseTooShort(_))));
        let mut bad = config();
        bad.poll_interval = Duration::ZERO;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Zero("poll-interval"))
        ));
        let mut bad = config();
        bad.concurrency = 0;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Zero("concurrency"))
        ));
        let mut bad = config();
        bad.retry_for = Duration::ZERO;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Zero("retry-for"))
        ));
        let mut bad = config();
        bad.planner_url = "http://k8sworker-planner:50051".into();
        assert!(matches!(bad.validate(), Err(ConfigError::Plaintext(_))));
        assert!("  ".parse::<AccessToken>().is_err());
    }

    /// The install files' values left as they are: each named, before any
    /// I/O; a real value that merely has brackets is not one.
    #[test]
    fn a_placeholder_left_unfilled_is_named() {
        type Unfill = fn(&mut Config);
        let unfilled: [(Unfill, &str, &str); 4] = [
            (
                |c| c.cluster_name = "<CLUSTER_NAME>".into(),
                "--cluster-name (CLUSTER_NAME)",
                "<CLUSTER_NAME>",
            ),
            (
                |c| c.vantiq_namespace = "<VANTIQ_NAMESPACE>".into(),
                "--vantiq-namespace (VANTIQ_NAMESPACE)",
                "<VANTIQ_NAMESPACE>",
            ),
            (
                |c| c.vantiq_url = "<VANTIQ_URL>".into(),
                "--vantiq-url (VANTIQ_URL)",
                "<VANTIQ_URL>",
            ),
            (
                |c| c.access_token = AccessToken::new("<VANTIQ_ACCESS_TOKEN>"),
                "--access-token (VANTIQ_ACCESS_TOKEN)",
                "<VANTIQ_ACCESS_TOKEN>",
            ),
        ];
        for (unfill, expected_flag, expected) in unfilled {
            let mut bad = config();
            unfill(&mut bad);
            match bad.validate() {
                Err(ConfigError::Placeholder { flag, placeholder }) => {
                    assert_eq!((flag, placeholder.as_str()), (expected_flag, expected));
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
        let mut fine = config();
        fine.access_token = AccessToken::new("<abc>");
        assert!(fine.validate().is_ok());
        let placeholder = k8sworker_core::names::is_placeholder;
        assert!(!placeholder("<>") && !placeholder("<Cluster>") && placeholder(" <X_1> "));
    }
}
