//! The control plane's configuration: one `clap` struct, every flag with an
//! environment fallback. Invalid values stop the binary before any I/O.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives a kill
    /// of the process *and* a power loss or kernel crash.
    Full,
    /// fsync the WAL only at checkpoints: an acknowledged write survives a
    /// kill of the process (the WAL is in the OS page cache), but the last
    /// commits may be lost on power loss. Faster.
    Normal,
}

/// Configuration of `k8sworker-controlplane`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "k8sworker-controlplane", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "K8SWORKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// SQLite database file (created, with its WAL beside it, on first start).
    #[arg(
        long,
        env = "K8SWORKER_DATABASE",
        default_value = "k8sworker-controlplane.db"
    )]
    pub database: PathBuf,

    /// File of the keys that encrypt secret values at rest; created on first
    /// start with one random key and mode 0600. Default: the database path
    /// with `.key` appended. Keep a copy apart from the database backups:
    /// without it the stored secrets cannot be read.
    #[arg(long, env = "K8SWORKER_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// SQLite `synchronous` mode; the database always runs in WAL mode.
    #[arg(
        long,
        env = "K8SWORKER_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "full"
    )]
    pub sqlite_synchronous: Synchronous,

    /// Vantiq namespace created on first start.
    #[arg(
        long,
        env = "K8SWORKER_BOOTSTRAP_NAMESPACE",
        default_value = "k8sworker"
    )]
    pub bootstrap_namespace: String,

    /// Admin user created on first start.
    #[arg(long, env = "K8SWORKER_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,

    /// Password of the first admin; when unset a random one is generated and
    /// printed once on standard output.
    #[arg(long, env = "K8SWORKER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Largest request body accepted; larger requests get 413.
    #[arg(long, env = "K8SWORKER_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Lifetime of the access tokens `GET /authenticate` issues.
    #[arg(long, env = "K8SWORKER_ACCESS_TOKEN_TTL", value_parser = humantime::parse_duration, default_value = "24h")]
    pub access_token_ttl: Duration,

    /// PBKDF2-HMAC-SHA256 iterations for new password hashes.
    #[arg(
        long,
        env = "K8SWORKER_PASSWORD_HASH_ITERATIONS",
        default_value_t = 210_000
    )]
    pub password_hash_iterations: u32,

    /// Login attempts (`GET /authenticate` with Basic credentials) each
    /// client address may make per minute, all at once after a quiet
    /// minute; more answer 429 `io.vantiq.authentication.rate.limited`.
    #[arg(long, env = "K8SWORKER_AUTH_ATTEMPTS_PER_MINUTE", default_value_t = 30)]
    pub auth_attempts_per_minute: u32,

    /// Password verifications (PBKDF2) running at once; a login arriving
    /// while all are busy answers 429 `io.vantiq.authentication.busy` at
    /// once instead of queueing on the blocking pool storage also uses.
    /// Default: the number of CPUs.
    #[arg(long, env = "K8SWORKER_AUTH_CONCURRENCY", default_value_t = default_auth_concurrency())]
    pub auth_concurrency: u32,

    /// Documents one namespace may hold; an upload of a new one beyond it
    /// answers 429 `io.vantiq.resources.documents.quota.exceeded`.
    #[arg(long, env = "K8SWORKER_MAX_DOCUMENTS", default_value_t = 10_000)]
    pub max_documents: u64,

    /// Bytes of document content one namespace may hold (default 1 GiB).
    #[arg(long, env = "K8SWORKER_MAX_DOCUMENT_BYTES", default_value_t = 1 << 30)]
    pub max_document_bytes: u64,

    /// Lease a claim gets when the worker does not ask for one.
    #[arg(long, env = "K8SWORKER_DEFAULT_LEASE", value_parser = humantime::parse_duration, default_value = "60s")]
    pub default_lease: Duration,

    /// Longest lease a worker may ask for.
    #[arg(long, env = "K8SWORKER_MAX_LEASE", value_parser = humantime::parse_duration, default_value = "15m")]
    pub max_lease: Duration,

    /// Longest long-poll wait a claim may ask for.
    #[arg(long, env = "K8SWORKER_MAX_CLAIM_WAIT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub max_claim_wait: Duration,

    /// Claims a workitem gets: one claimed this many times without an
    /// outcome (each lease expired or was released: a worker that crashes on
    /// it or cannot report it) is failed for good, with how its last attempt
    /// ended, instead of being claimed again. The gateway's own
    /// `--max-attempts` (also 10) fails it first when its errors are passing.
    #[arg(long, env = "K8SWORKER_MAX_WORKITEM_ATTEMPTS", default_value_t = 10)]
    pub max_workitem_attempts: u32,

    /// A workitem still REQUESTED after this long is flagged `delayed`.
    #[arg(long, env = "K8SWORKER_DELAYED_AFTER", value_parser = humantime::parse_duration, default_value = "5m")]
    pub delayed_after: Duration,

    /// How often each installation gets a `verify` workitem; 0 turns it off.
    #[arg(long, env = "K8SWORKER_VERIFY_INTERVAL", value_parser = humantime::parse_duration, default_value = "1h")]
    pub verify_interval: Duration,

    /// How long the operation history (`k8soperations`) keeps a finished
    /// operation's record; the sweep deletes older ones.
    #[arg(long, env = "K8SWORKER_HISTORY_RETENTION", value_parser = humantime::parse_duration, default_value = "30d")]
    pub history_retention: Duration,

    /// How often expired leases, delayed workitems and due verifies are swept.
    #[arg(long, env = "K8SWORKER_SWEEP_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub sweep_interval: Duration,

    /// The Kubernetes namespace every deploy to the `self` cluster must use.
    #[arg(
        long,
        env = "K8SWORKER_SELF_K8S_NAMESPACE",
        default_value = "k8sworker-self"
    )]
    pub self_k8s_namespace: String,

    /// Serve only Vantiq's documented surface: no `K8sManager` worker
    /// procedures (claim, renew, complete, fail, release) and no
    /// `/api/v1/version`; a worker token may instead update the status of its
    /// cluster's workitems, delete them when done, and upsert and delete its
    /// cluster's installation records (what `vantiq-api.md` §6.2 infers a
    /// Vantiq worker does). For proving a worker needs nothing else.
    #[arg(long, env = "K8SWORKER_VANTIQ_STRICT")]
    pub vantiq_strict: bool,

    /// Serve no `GET /metrics`. The metrics (workitem counts by operation,
    /// no tenant data, docs/metrics.md) need no token: turn them off where
    /// whoever reaches the API should not learn even how busy it is.
    #[arg(long, env = "K8SWORKER_NO_METRICS")]
    pub no_metrics: bool,

    /// How long in-flight requests may run after SIGTERM/SIGINT.
    #[arg(long, env = "K8SWORKER_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_grace: Duration,

    /// The tracing UI's URL of one trace, with `{traceId}` where the trace
    /// id goes (Jaeger: `http://127.0.0.1:16686/trace/{traceId}`); the web
    /// console links each operation to it. Without it, no links.
    #[arg(long, env = "K8SWORKER_TRACE_UI_URL")]
    pub trace_ui_url: Option<String>,

    /// Mark the web console's session cookie `Secure` even when a request
    /// does not say it came over TLS (`X-Forwarded-Proto: https` does).
    #[arg(long, env = "K8SWORKER_CONSOLE_SECURE_COOKIE")]
    pub console_secure_cookie: bool,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands that run instead of the server (`k8sworker-controlplane
/// [flags] <command>`); docs/controlplane.md describes backup, restore and
/// key rotation.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Copy the database into FILE (a new file, mode 0600) with SQLite's
    /// online backup, safe while the server runs. The copy's secrets stay
    /// encrypted: keep the key file too.
    Backup {
        /// The backup file to create.
        file: PathBuf,
    },
    /// Put a new key first in the key file and re-encrypt every stored
    /// secret with it; the old keys stay in the file, retired. Stop the
    /// server first.
    RotateKey,
}

/// The number of CPUs, at least 1: PBKDF2 is CPU-bound, so more at once
/// only queues.
fn default_auth_concurrency() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named duration or size flag is zero.
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    /// The default lease is longer than the longest one allowed.
    #[error("--default-lease ({default:?}) must not exceed --max-lease ({max:?})")]
    LeaseOrder {
        /// `--default-lease`.
        default: Duration,
        /// `--max-lease`.
        max: Duration,
    },
    /// The bootstrap namespace or the admin's name is empty.
    #[error("--bootstrap-namespace and --admin-username must not be empty")]
    EmptyName,
}

impl Config {
    /// The key file: `--key-file`, else the database path with `.key`
    /// appended.
    pub fn key_file(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.key", self.database.display())))
    }

    /// Checks the relations clap cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("default-lease", self.default_lease),
            ("max-lease", self.max_lease),
            ("sweep-interval", self.sweep_interval),
            ("delayed-after", self.delayed_after),
            ("history-retention", self.history_retention),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Zero("max-body-bytes"));
        }
        for (name, value) in [
            ("password-hash-iterations", self.password_hash_iterations),
            ("auth-attempts-per-minute", self.auth_attempts_per_minute),
            ("auth-concurrency", self.auth_concurrency),
            ("max-workitem-attempts", self.max_workitem_attempts),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.default_lease > self.max_lease {
            return Err(ConfigError::LeaseOrder {
                default: self.default_lease,
                max: self.max_lease,
            });
        }
        if self.bootstrap_namespace.trim().is_empty() || self.admin_username.trim().is_empty() {
            return Err(ConfigError::EmptyName);
        }
        Ok(())
    }

    /// A configuration for tests and benchmarks: every default, the given
    /// database, an ephemeral port on 127.0.0.1, a fixed admin password.
    pub fn for_tests(database: PathBuf) -> Config {
        use clap::Parser;
        let mut config = Config::parse_from(["k8sworker-controlplane"]);
        config.listen = "127.0.0.1:0".parse().expect("literal address");
        config.database = database;
        config.admin_password = Some("admin-password".into());
        config.password_hash_iterations = 1_000;
        config
    }
}
