//! Durable storage: one SQLite database in WAL mode.
//!
//! All access goes through one connection behind a mutex, run on tokio's
//! blocking pool ([`Store::run`]). One writer is what SQLite allows anyway;
//! serialising reads with it keeps every request's view consistent and makes
//! the worker-protocol transactions (claim, complete) trivially atomic.
//!
//! Durability: a handler answers only after its transaction committed. With
//! `synchronous=FULL` (the default) the commit fsyncs the WAL, so an
//! acknowledged write survives a process kill and a power loss; with
//! `synchronous=NORMAL` in WAL mode it survives a process kill (the WAL write
//! is in the OS page cache before the commit returns) but not a power loss.
//!
//! Schema changes are numbered [`MIGRATIONS`], applied in order inside one
//! transaction each and recorded in `PRAGMA user_version`.
//!
//! Resources are rows with indexed key columns plus a JSON `doc` holding the
//! Vantiq-visible properties; selects read a namespace's rows and apply the
//! `where` clause in Rust ([`crate::query`]).
//!
//! Every function answers a [`StoreError`]: what it found about the data
//! (not found, duplicate, lease lost) or how storage failed. Workitem
//! decisions are [`crate::lifecycle`]'s; the store reads, asks and writes.

pub mod history;
pub mod identity;
pub mod lock;
pub mod resources;
pub mod sealing;
pub mod workitems;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use crate::config::Synchronous;
use crate::keyring::{self, KeyringError};
use crate::lifecycle::TransitionError;

/// Why a store operation failed: a fact about the stored data (not found,
/// duplicate, lease lost, a value the store refuses), or the storage itself.
/// The store speaks no HTTP; the API maps these to answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No instance of `resource` has `key` = `id` in the namespace.
    #[error("no {resource} instance with {key} {id}")]
    NotFound {
        /// The resource type (`k8sworkitems`, `secrets`, …).
        resource: &'static str,
        /// The identifying property (`name`, `requestId`).
        key: &'static str,
        /// The value looked for.
        id: String,
    },
    /// An instance of `resource` named `id` already exists.
    #[error("{resource} {id} already exists")]
    Duplicate {
        /// The resource type (`k8sclusters`, `users`, …).
        resource: &'static str,
        /// The name that is taken.
        id: String,
    },
    /// The workitem is no longer held under the lease the caller presented.
    #[error("workitem {request_id} is not leased under lease {lease_id}")]
    LeaseLost {
        /// The workitem's `requestId`.
        request_id: String,
        /// The lease presented.
        lease_id: String,
    },
    /// A value the store cannot write as given.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The property or parameter, as the caller named it.
        field: String,
        /// What is wrong, for a person.
        reason: String,
    },
    /// The workitem state machine refused a step the store tried (a bug:
    /// the store reads the status before it acts).
    #[error("the workitem state machine refused a step")]
    Transition(#[source] TransitionError),
    /// A stored value is not one this version understands.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database file could not be opened or configured.
    #[error("opening the database {path}")]
    Open {
        /// The database file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A schema migration failed.
    #[error("migrating the schema to version {version}")]
    Migrate {
        /// The version being migrated to.
        version: usize,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("database access failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON document does not decode.
    #[error("a stored JSON document is corrupt")]
    Json(#[from] serde_json::Error),
    /// The blocking task running the database work failed.
    #[error("the database task panicked or was cancelled")]
    Task(#[from] tokio::task::JoinError),
    /// The work panicked; its transaction was rolled back and the
    /// connection is usable again. The message is the panic's, for the log.
    #[error("the database work panicked: {0}")]
    Panicked(String),
    /// A secret value could not be opened (its key is missing, or it was
    /// changed) or a file could not be made private.
    #[error("a stored secret could not be read")]
    Sealed(#[from] KeyringError),
    /// The database file's permissions could not be narrowed, or the backup
    /// file could not be created.
    #[error("file {path}")]
    File {
        /// The file.
        path: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

impl From<TransitionError> for StoreError {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::LeaseLost {
                request_id,
                lease_id,
            } => StoreError::LeaseLost {
                request_id,
                lease_id,
            },
            TransitionError::Invalid { field, reason } => StoreError::Invalid {
                field: field.to_owned(),
                reason,
            },
            error @ TransitionError::NotAllowed { .. } => StoreError::Transition(error),
        }
    }
}

/// The schema, one migration per entry; never edit a released entry, append.
pub const MIGRATIONS: &[&str] = &[
    // 1: identity, resources, the workitem queue.
    r#"
    CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        limits TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE profiles (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE users (
        username TEXT PRIMARY KEY,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        profile TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT,
        username TEXT NOT NULL,
        profiles TEXT NOT NULL,
        expires_at INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX tokens_by_name ON tokens(namespace, name) WHERE name IS NOT NULL;
    CREATE TABLE k8sclusters (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE k8sinstallations (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        cluster_name TEXT NOT NULL,
        doc TEXT NOT NULL,
        next_verify_at INTEGER,
        PRIMARY KEY (namespace, name)
    );
    CREATE INDEX installations_by_cluster ON k8sinstallations(namespace, cluster_name);
    CREATE INDEX installations_by_verify ON k8sinstallations(next_verify_at);
    CREATE TABLE k8sworkitems (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        cluster_name TEXT NOT NULL,
        installation TEXT NOT NULL,
        operation TEXT NOT NULL,
        status TEXT NOT NULL,
        request TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        lease_id TEXT,
        lease_owner TEXT,
        lease_expires_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        traceparent TEXT,
        delayed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX workitems_claim ON k8sworkitems(namespace, cluster_name, status, seq);
    CREATE INDEX workitems_by_installation ON k8sworkitems(namespace, installation, status);
    CREATE INDEX workitems_by_status ON k8sworkitems(status, lease_expires_at);
    CREATE TABLE documents (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        id TEXT NOT NULL,
        file_type TEXT NOT NULL,
        content BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        modified_at INTEGER NOT NULL,
        modified_by TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE secrets (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        id TEXT NOT NULL,
        value TEXT NOT NULL,
        description TEXT,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        modified_at INTEGER NOT NULL,
        modified_by TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE quota_charges (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        installation TEXT NOT NULL,
        charge TEXT NOT NULL,
        PRIMARY KEY (namespace, installation)
    );
    "#,
    // 2: a worker token serves one K8s cluster.
    r#"
    ALTER TABLE tokens ADD COLUMN k8s_cluster TEXT;
    "#,
    // 3: the operation history (`k8soperations`), one record per workitem.
    r#"
    CREATE TABLE k8soperations (
        id TEXT PRIMARY KEY,
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        cluster_name TEXT NOT NULL,
        installation TEXT NOT NULL,
        k8s_namespace TEXT,
        operation TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        outcome TEXT,
        error TEXT,
        request TEXT NOT NULL,
        steps TEXT,
        trace_id TEXT
    );
    CREATE INDEX operations_by_namespace ON k8soperations(namespace, requested_at);
    CREATE INDEX operations_by_finish ON k8soperations(finished_at);
    "#,
];

/// How [`Store::in_transaction`] ends a transaction whose work succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    RollBack,
}

/// The database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date. The database file and its `-wal` and `-shm` files are readable
    /// and writable by their owner only (mode 0600): a new file is created
    /// so, an existing one narrowed (SQLite gives the WAL files the
    /// database file's mode).
    pub fn open(path: &Path, synchronous: Synchronous) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        make_database_private(path)?;
        let mut connection = Connection::open(path).map_err(open_error)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        let mode = match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        connection
            .pragma_update(None, "synchronous", mode)
            .map_err(open_error)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        migrate(&mut connection)?;
        Ok(Store {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` on the connection on the blocking pool. `work`'s error
    /// type is the caller's, as long as a [`StoreError`] converts into it.
    ///
    /// A panic in `work` fails only this call, as [`StoreError::Panicked`]:
    /// it is caught while the lock is still held (so the lock is never
    /// poisoned), any transaction it left open is rolled back, and the
    /// connection serves the next call. A lock poisoned anyway is recovered
    /// the same way.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut guard = connection.lock().unwrap_or_else(PoisonError::into_inner);
            roll_back_leftover(&guard);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(&mut guard)));
            match outcome {
                Ok(result) => result,
                Err(payload) => {
                    roll_back_leftover(&guard);
                    let message = panic_message(payload.as_ref());
                    tracing::error!(panic = %message, "database work panicked; rolled back");
                    Err(StoreError::Panicked(message).into())
                }
            }
        })
        .await
        .map_err(StoreError::Task)?
    }

    /// Runs `work` on the connection on the calling thread (start-up and
    /// offline commands, before anything serves).
    pub fn run_blocking<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut Connection) -> Result<T, E>,
    {
        let mut guard = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        work(&mut guard)
    }

    /// Runs `work` in one IMMEDIATE transaction, committed when it returns
    /// `Ok` and rolled back when it returns `Err` or panics.
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.in_transaction(work, Ending::Commit).await
    }

    /// Runs `work` in one transaction that is always rolled back, whatever
    /// it answers: a dry run of a write (a deploy checked or previewed,
    /// never submitted) that must leave nothing behind.
    pub async fn rolled_back<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.in_transaction(work, Ending::RollBack).await
    }

    /// Runs `work` in one IMMEDIATE transaction that ends as `ending` says
    /// (a commit only when `work` returns `Ok`).
    async fn in_transaction<T, E, F>(&self, work: F, ending: Ending) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.run(move |connection| {
            let transaction = connection
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            let value = work(&transaction);
            match (ending, &value) {
                (Ending::Commit, Ok(_)) => transaction.commit(),
                _ => transaction.rollback(),
            }
            .map_err(StoreError::from)?;
            value
        })
        .await
    }

    /// Whether storage answers: reads the schema version and the
    /// namespace count through the shared connection. Readiness asks this,
    /// so a store that cannot serve is reported, not hidden.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.run(|connection| {
            let version: i64 =
                connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
            if version != MIGRATIONS.len() as i64 {
                return Err(StoreError::Corrupt(format!(
                    "schema version {version}, expected {}",
                    MIGRATIONS.len()
                )));
            }
            connection.query_row("SELECT count(*) FROM namespaces", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}

/// The files SQLite keeps for the database at `path`: itself, its WAL and
/// its shared-memory index.
pub fn database_files(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| std::path::PathBuf::from(format!("{}{suffix}", path.display()));
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates the database file with mode 0600 when there is none, and
/// narrows the mode of the database files that exist.
fn make_database_private(path: &Path) -> Result<(), StoreError> {
    let file_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::File { path, source }
    };
    match keyring::private_file(path, true) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(file_error(path)(error)),
    }
    for file in database_files(path) {
        if file.exists() {
            keyring::make_private(&file).map_err(file_error(&file))?;
        }
    }
    Ok(())
}

/// Copies the database at `database` into a new file `destination` (mode
/// 0600) with SQLite's online backup API: one read transaction over the
/// whole database, so the copy is consistent while a server keeps writing
/// (WAL mode lets writers go on). Refuses to overwrite an existing file.
/// The copy's secrets stay sealed: restoring it needs the key file too.
pub fn backup(database: &Path, destination: &Path) -> Result<(), StoreError> {
    let open_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| StoreError::Open { path, source }
    };
    if !database.exists() {
        return Err(StoreError::File {
            path: database.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let source = Connection::open_with_flags(
        database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error(database))?;
    source
        .busy_timeout(Duration::from_secs(30))
        .map_err(open_error(database))?;
    keyring::private_file(destination, true).map_err(|source| StoreError::File {
        path: destination.display().to_string(),
        source,
    })?;
    let mut copy = Connection::open(destination).map_err(open_error(destination))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // -1: every page in one step, under one read transaction; a busy
        // source (a checkpoint holding its lock) is tried again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match backup.step(-1)? {
                rusqlite::backup::StepResult::Done => break,
                _ if std::time::Instant::now() > deadline => {
                    return Err(StoreError::Corrupt(
                        "the database stayed busy for 60 s; the backup gave up".into(),
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the backup does not check: {check}"
        )));
    }
    // A self-contained file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

/// Rolls back a transaction a panicking caller left open, so the next
/// caller starts clean. A failed rollback is logged: SQLite then rolls back
/// by itself when the next transaction begins or the connection closes.
fn roll_back_leftover(connection: &Connection) {
    if !connection.is_autocommit()
        && let Err(error) = connection.execute_batch("ROLLBACK")
    {
        tracing::error!(%error, "rolling back a transaction left open by a panic failed");
    }
}

/// The text of a panic payload (`panic!` with a literal or a format).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let current: usize = connection
        .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(|source| StoreError::Migrate { version: 0, source })?
        as usize;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = index + 1;
        let failed = |source| StoreError::Migrate { version, source };
        let transaction = connection.transaction().map_err(failed)?;
        transaction.execute_batch(sql).map_err(failed)?;
        transaction
            .pragma_update(None, "user_version", version as i64)
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("k8sworker-store-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("test.db"), Synchronous::Normal).unwrap();
        (store, dir)
    }

    async fn namespace_count(store: &Store) -> i64 {
        store
            .run(|connection| {
                Ok::<_, StoreError>(connection.query_row(
                    "SELECT count(*) FROM namespaces",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_a_transaction_rolls_it_back_and_storage_stays_usable() {
        let (store, dir) = temp_store();
        let outcome: Result<(), StoreError> = store
            .transaction(|tx| {
                tx.execute(
                    "INSERT INTO namespaces (name, created_at) VALUES ('half', 1)",
                    [],
                )?;
                panic!("a bug after a write");
            })
            .await;
        match outcome {
            Err(StoreError::Panicked(message)) => assert_eq!(message, "a bug after a write"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        // The write before the panic was rolled back, the lock is not
        // poisoned, and the next transaction commits.
        assert_eq!(namespace_count(&store).await, 0);
        store
            .transaction(|tx| {
                tx.execute(
                    "INSERT INTO namespaces (name, created_at) VALUES ('next', 2)",
                    [],
                )?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        assert_eq!(namespace_count(&store).await, 1);
        store.check().await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_panic_outside_a_transaction_leaves_none_open() {
        let (store, dir) = temp_store();
        let outcome: Result<(), StoreError> = store
            .run(|connection| {
                connection.execute_batch("BEGIN")?;
                connection.execute(
                    "INSERT INTO namespaces (name, created_at) VALUES ('open', 1)",
                    [],
                )?;
                panic!("{} left a transaction open", "a caller");
            })
            .await;
        assert!(
            matches!(&outcome, Err(StoreError::Panicked(m)) if m == "a caller left a transaction open"),
            "{outcome:?}"
        );
        assert_eq!(namespace_count(&store).await, 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_check_reports_a_store_that_cannot_serve() {
        let (store, dir) = temp_store();
        store.check().await.unwrap();
        store
            .run(|connection| {
                connection.execute_batch("PRAGMA foreign_keys = OFF; DROP TABLE namespaces;")?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        assert!(store.check().await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
