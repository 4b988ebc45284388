//! Wiring: open the store, bootstrap the first namespace, bind, serve the
//! API and run the maintenance sweep until shutdown.
//!
//! Shutdown: [`Server::shutdown`] (or SIGTERM/SIGINT in the binary) flips one
//! watch; the listener stops accepting, long-polling claims return `null`
//! at once, in-flight requests finish, and the sweep stops.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{self, hash_password};
use crate::config::{Config, ConfigError};
use crate::keyring::{Keyring, KeyringError};
use crate::state::{AppState, Wakeups};
use crate::store::identity::{self, UserRecord};
use crate::store::lock::{DatabaseLock, Holder, LockError};
use crate::store::{Store, StoreError, sealing};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is not valid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error("storage could not be opened")]
    Store(#[from] StoreError),
    /// The key file could not be read or created.
    #[error("the keys of the secrets at rest could not be loaded")]
    Keys(#[from] KeyringError),
    /// First start: the bootstrap namespace or its admin could not be written.
    #[error("the first namespace could not be created")]
    Bootstrap(#[source] StoreError),
    /// The listen address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Serving HTTP failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// `rotate-key` holds the database's lock (or it could not be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A server task panicked.
    #[error("the HTTP server task panicked")]
    Task(#[source] tokio::task::JoinError),
}

/// A running control plane.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<Result<(), std::io::Error>>,
    maintenance: JoinHandle<()>,
    /// The first admin's password when it was generated at this start.
    pub generated_admin_password: Option<String>,
}

impl Server {
    /// Takes the database's lock (shared: refused while `rotate-key`
    /// runs, [`crate::store::lock`]), opens storage, bootstraps on first
    /// start, binds and starts serving; the lock is held until serving and
    /// the sweep have stopped.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        crate::metrics::register();
        let (lock, store, keyring) = {
            let path = config.database.clone();
            let key_file = config.key_file();
            let synchronous = config.sqlite_synchronous;
            tokio::task::spawn_blocking(move || {
                let lock = DatabaseLock::acquire(&path, Holder::Server)?;
                let (store, keyring) = open_sealed(&path, &key_file, synchronous)?;
                Ok::<_, ServerError>((lock, store, keyring))
            })
            .await
            .map_err(ServerError::Task)??
        };
        let generated_admin_password = bootstrap(&store, &config)
            .await
            .map_err(ServerError::Bootstrap)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let logins = Arc::new(crate::state::LoginLimits::new(
            config.auth_attempts_per_minute,
            config.auth_concurrency,
            config.password_hash_iterations,
        ));
        let state = AppState {
            store,
            keyring: Arc::new(keyring),
            config: Arc::new(config),
            wakeups: Arc::new(Wakeups::default()),
            shutdown: shutdown_rx.clone(),
            logins,
            database_lock: Arc::new(lock),
        };
        let maintenance = tokio::spawn(crate::maintenance::run(state.clone()));
        let router = crate::console::mount(crate::api::router(state.clone()), state);
        let mut stop = shutdown_rx;
        let http = tokio::spawn(async move {
            // The client address keys the login rate limit.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await
        });
        tracing::info!(%local_addr, "control plane listening");
        Ok(Server {
            local_addr,
            shutdown,
            http,
            maintenance,
            generated_admin_password,
        })
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops taking requests, releases long-polls, waits for in-flight
    /// requests and the sweep to finish.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        let served = self.http.await.map_err(ServerError::Task)?;
        let _ = self.maintenance.await;
        served.map_err(ServerError::Serve)
    }
}

/// Opens the store and the key file, and seals every stored secret value
/// that is not sealed with the current key. Without a key file a new key is
/// made, and its file (mode 0600) written only once every stored value has
/// been sealed with it: a database holding values under a key it lacks (a
/// restore without its key file) fails with the key's id and leaves no
/// new key file behind.
pub fn open_sealed(
    database: &std::path::Path,
    key_file: &std::path::Path,
    synchronous: crate::config::Synchronous,
) -> Result<(Store, Keyring), ServerError> {
    let loaded = Keyring::load_if_present(key_file)?;
    let created = loaded.is_none();
    let keyring = loaded.unwrap_or_else(Keyring::generate);
    let store = Store::open(database, synchronous)?;
    let resealed = store.run_blocking(|connection| {
        let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = sealing::reseal_all(&tx, &keyring)?;
        if created {
            keyring.write_new(key_file)?;
        }
        tx.commit()?;
        if changed > 0 {
            sealing::compact(connection)?;
        }
        Ok::<_, StoreError>(changed)
    })?;
    if created {
        tracing::info!(
            key_file = %key_file.display(),
            key_id = %keyring.current_id(),
            "key file created; keep a copy apart from the database backups"
        );
    }
    if resealed > 0 {
        tracing::info!(
            rows = resealed,
            key_id = %keyring.current_id(),
            "stored secrets sealed with the current key"
        );
    }
    Ok((store, keyring))
}

/// First start: the bootstrap namespace and its admin. Returns the admin's
/// password when it was generated (to be shown once).
async fn bootstrap(store: &Store, config: &Config) -> Result<Option<String>, StoreError> {
    let (password, generated) = match &config.admin_password {
        Some(password) => (password.clone(), None),
        None => {
            let password = auth::new_token();
            (password.clone(), Some(password))
        }
    };
    let namespace = config.bootstrap_namespace.clone();
    let username = config.admin_username.clone();
    let iterations = config.password_hash_iterations;
    store
        .transaction(move |tx| {
            if identity::is_initialized(tx)? {
                return Ok(None);
            }
            identity::create_namespace(tx, &namespace, &serde_json::json!({}))?;
            identity::create_user(
                tx,
                &UserRecord {
                    username: username.clone(),
                    namespace: namespace.clone(),
                    profile: auth::ADMIN_PROFILE.into(),
                    password_hash: hash_password(&password, iterations),
                },
            )?;
            tracing::info!(%namespace, %username, "first start: namespace and admin created");
            Ok(generated)
        })
        .await
}
