//! The advisory lock that keeps `rotate-key` and a running server apart.
//!
//! A server holds a *shared* lock on the lock file beside its database
//! (`<database>.lock`, mode 0600, never deleted) for as long as it serves;
//! `rotate-key` takes it *exclusive*. Either one refuses to go on while the
//! other holds it: a rotation under a running server would leave the server
//! with the old keys, so every claim of a resealed value would fail until a
//! restart. Shared, so servers (and `backup`, which needs no lock) are not
//! kept from each other. The lock is the operating system's (`flock` on
//! Unix, through `std::fs::File::try_lock`), released when the holder's
//! file is closed, a crash included.

use std::fs::File;
use std::path::{Path, PathBuf};

/// Who holds the lock, for the message of the one refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A server on the database (shared).
    Server,
    /// `rotate-key` (exclusive).
    RotateKey,
}

/// Why the database lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A running server holds the lock; `rotate-key` must wait for it to stop.
    #[error(
        "a server is running on the database {database} (it holds {lock_file}); stop it before running rotate-key"
    )]
    ServerRunning {
        /// The database.
        database: String,
        /// The lock file.
        lock_file: String,
    },
    /// `rotate-key` holds the lock; the server must wait for it to finish.
    #[error(
        "rotate-key is running on the database {database} (it holds {lock_file}); start the server once it has finished"
    )]
    RotationRunning {
        /// The database.
        database: String,
        /// The lock file.
        lock_file: String,
    },
    /// The lock file could not be opened or locked.
    #[error("the lock file {lock_file} could not be opened or locked")]
    Io {
        /// The lock file.
        lock_file: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock on a database; released when dropped.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

/// The lock file of `database`: its path with `.lock` appended.
pub fn lock_file(database: &Path) -> PathBuf {
    let mut path = database.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

impl DatabaseLock {
    /// Takes the lock of `database` for `holder` (shared for a server,
    /// exclusive for `rotate-key`) without waiting: a lock the other kind
    /// of holder has is [`LockError::ServerRunning`] or
    /// [`LockError::RotationRunning`].
    pub fn acquire(database: &Path, holder: Holder) -> Result<DatabaseLock, LockError> {
        let path = lock_file(database);
        let io = |source| LockError::Io {
            lock_file: path.display().to_string(),
            source,
        };
        let file = crate::keyring::private_file(&path, false).map_err(io)?;
        let taken = match holder {
            Holder::Server => file.try_lock_shared(),
            Holder::RotateKey => file.try_lock(),
        };
        match taken {
            Ok(()) => Ok(DatabaseLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                let database = database.display().to_string();
                let lock_file = path.display().to_string();
                Err(match holder {
                    Holder::Server => LockError::RotationRunning {
                        database,
                        lock_file,
                    },
                    Holder::RotateKey => LockError::ServerRunning {
                        database,
                        lock_file,
                    },
                })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
        }
    }
}
